//! The inner-product kernel of the graph: SimSIMD's runtime-dispatched SIMD dot product.
//!
//! Measured on this project's 2-core Xeon (AVX-512) with 384-d vectors (`cargo bench -p
//! shelf-index --bench index -- dot_384`, figures in index/README.md): SimSIMD, pulp
//! (AVX2+FMA) and anndists' `DistDot` (simdeez, what hnsw_rs uses) were within noise of each
//! other, SimSIMD fastest on vectors coming from memory (the graph walk's case); the
//! baseline-target loop was slowest. SimSIMD detects the CPU's widest instruction set at run
//! time and falls back to a serial loop.

use simsimd::SpatialSimilarity;

/// Inner product of two equally long vectors.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match f32::dot(a, b) {
        Some(d) => d as f32,
        None => dot_portable(a, b),
    }
}

/// Distance used inside the graph: `1 - a.b`, so smaller is closer and equal to cosine
/// distance for unit vectors.
#[inline]
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    1.0 - dot(a, b)
}

/// The portable loop (a bench candidate, and the fallback for unequal lengths, which
/// SimSIMD refuses): sixteen independent accumulators, vectorised by the compiler for the
/// build target's baseline instruction set.
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            acc[lane] += x[lane] * y[lane];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_with_a_plain_sum() {
        for len in [1, 7, 8, 15, 384, 385] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0)
                .collect();
            let b: Vec<f32> = (0..len)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 10.0)
                .collect();
            let exact: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((f64::from(dot(&a, &b)) - exact).abs() < 1e-4, "simd {len}");
            assert!(
                (f64::from(dot_portable(&a, &b)) - exact).abs() < 1e-4,
                "portable {len}"
            );
        }
    }
}
