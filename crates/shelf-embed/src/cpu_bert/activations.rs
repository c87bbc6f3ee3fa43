//! The element-wise kernels: layer norm, GELU (erf and tanh forms), softmax, and the sums
//! and `exp` they are built from, compiled per instruction set and picked at run time.

use super::*;

// The vector kernels below are compiled once per instruction set and picked at run time
// (multiversion), so the loops vectorise with AVX-512 or AVX2+FMA where the CPU has them
// while the binary still runs on any x86-64. Everything they call is `inline(always)`, so it
// is compiled into each version.

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn layer_norm(rows: &mut [f32], width: usize, weight: &[f32], bias: &[f32], eps: f32) {
    let n = width as f32;
    for row in rows.chunks_exact_mut(width) {
        let mean = sum(row) / n;
        let var = sum_sq_dev(row, mean) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((x, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *x = (*x - mean) * inv * w + b;
        }
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn gelu_erf_all(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = gelu_erf(*v));
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn gelu_tanh_all(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = gelu_tanh(*v));
}

pub(super) fn activate(x: &mut [f32], activation: HiddenAct) {
    rows_par(x, 256, |chunk| match activation {
        HiddenAct::Gelu => gelu_erf_all(chunk),
        HiddenAct::GeluApproximate => gelu_tanh_all(chunk),
        HiddenAct::Relu => chunk.iter_mut().for_each(|v| *v = v.max(0.0)),
    });
}

/// Sixteen running sums, so the compiler can keep them in vector registers.
#[inline(always)]
pub(super) fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[inline(always)]
pub(super) fn sum_sq_dev(xs: &[f32], mean: f32) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += (x - mean) * (x - mean);
        }
    }
    lanes.iter().sum::<f32>()
        + chunks
            .remainder()
            .iter()
            .map(|x| (x - mean) * (x - mean))
            .sum::<f32>()
}

#[inline(always)]
pub(super) fn max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l = l.max(*x);
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// Softmax of every `width`-long row of attention scores, in place.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn softmax_rows(rows: &mut [f32], width: usize) {
    for row in rows.chunks_exact_mut(width) {
        let top = max(row);
        row.iter_mut().for_each(|x| *x = exp(*x - top));
        let scale = 1.0 / sum(row);
        row.iter_mut().for_each(|x| *x *= scale);
    }
}

/// e^x for x in f32's range, within 2 ulp: x = n·ln2 + r, e^r by Cephes' polynomial, 2^n
/// through the exponent bits. Branch-free and free of float-to-int conversions (Rust's
/// saturating `as i32` does not vectorise): adding 1.5·2²³ rounds x·log2(e) to the nearest
/// integer n and leaves n in the low bits of the sum's mantissa.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = p * r * r + r + 1.0;
    // The sum's bits are ROUND's plus n; n + 127 is 2^n's biased exponent (1..=254 here).
    let biased = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    e_r * f32::from_bits(biased << 23)
}

/// GELU with the exact (erf) normal CDF: x·Φ(x). Φ comes from erfc by Abramowitz and
/// Stegun 7.1.26 (absolute error ≤ 1.5e-7), taken on |x| so that the tail does not cancel.
#[inline(always)]
pub(super) fn gelu_erf(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    let erfc = poly * exp(-z * z);
    // Φ(x) = 1 - erfc(z)/2 for x ≥ 0, erfc(z)/2 below.
    let phi = if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    };
    x * phi
}

/// GELU's tanh approximation (`gelu_new` in transformers).
#[inline(always)]
pub(super) fn gelu_tanh(x: f32) -> f32 {
    let inner = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    // tanh(u) = 1 - 2/(e^{2u} + 1)
    let tanh = 1.0 - 2.0 / (exp(2.0 * inner) + 1.0);
    0.5 * x * (1.0 + tanh)
}
