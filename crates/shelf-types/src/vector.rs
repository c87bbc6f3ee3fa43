//! Vector arithmetic shared by every crate: the SIMD inner product (SimSIMD, chosen at run
//! time) and scaling to unit length.
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

/// The Euclidean norm, summed in f64 (exact enough for any f32 vector's length).
pub fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
}

/// `v` scaled to unit length, or `None` when it has none to scale (all zeros, or a
/// component that is not finite).
pub fn unit_vector(v: &[f32]) -> Option<Vec<f32>> {
    let norm = norm(v);
    (norm > 0.0 && norm.is_finite())
        .then(|| v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_vectors() {
        let v = unit_vector(&[3.0, 4.0]).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
        assert_eq!(unit_vector(&[0.0, 0.0]), None);
        assert_eq!(unit_vector(&[f32::NAN, 1.0]), None);
        assert_eq!(unit_vector(&[f32::INFINITY, 1.0]), None);
    }

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
