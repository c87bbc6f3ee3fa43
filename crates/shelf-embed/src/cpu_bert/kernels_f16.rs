//! The half-float panel kernels: each input's 32 weights widened with `vcvtph2ps` into
//! registers and summed in f32 (AVX-512, or AVX2 with FMA and F16C).

use super::*;

/// Whether this CPU widens half floats in its vector registers, so that `Quantization::F16`
/// panels are read at full speed (elsewhere each panel would be widened in memory first,
/// slower than f32: the loader then keeps f32).
pub(crate) fn widens_half_floats() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") || (has!("avx2") && has!("fma") && has!("f16c")) {
            return true;
        }
    }
    false
}

impl PanelWeight for f16 {
    #[allow(unsafe_code)]
    fn tiles(x: &[f32], k: usize, panel: &[f16], out: &mut [f32], stride: usize, columns: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked just above).
                unsafe { half_tiles_avx512(x, k, panel, out, stride, columns) };
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
                unsafe { half_tiles_avx2(x, k, panel, out, stride, columns) };
                return;
            }
        }
        // Elsewhere: widen the panel once, then the f32 kernel.
        let wide: Vec<f32> = panel.iter().map(|w| w.to_f32()).collect();
        panel_tiles(x, k, &wide, out, stride, columns);
    }
}

/// `half_tile_avx512::<T>` over every token of `x`, 12 at a time (24 of the 32 registers
/// hold sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) fn half_tiles_avx512(
    x: &[f32],
    k: usize,
    panel: &[f16],
    out: &mut [f32],
    stride: usize,
    columns: usize,
) {
    for_each_tile(x, k, out, stride, 12, |size, x, out| {
        with_tile_size!(size, half_tile_avx512(x, panel, out, stride, columns))
    });
}

/// One half-float panel times `T` tokens' rows of `x` with AVX-512: each step widens one
/// input's 32 weights (a cache line) into two registers and adds them, times each token's
/// input, to that token's two registers of sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
pub(super) fn half_tile_avx512<const T: usize>(
    x: &[f32],
    panel: &[f16],
    out: &mut [f32],
    n: usize,
    columns: usize,
) {
    use std::arch::x86_64::*;
    let k = panel.len() / PANEL;
    assert!(x.len() >= T * k, "x holds T rows of k inputs");
    let mut low = [_mm512_setzero_ps(); T];
    let mut high = [_mm512_setzero_ps(); T];
    for (i, w) in panel.chunks_exact(PANEL).enumerate() {
        // SAFETY: `w` is 32 half floats (64 bytes); unaligned loads of 16 each.
        let (w_low, w_high) = unsafe {
            let w = w.as_ptr().cast::<__m256i>();
            (
                _mm512_cvtph_ps(_mm256_loadu_si256(w)),
                _mm512_cvtph_ps(_mm256_loadu_si256(w.add(1))),
            )
        };
        for t in 0..T {
            // SAFETY: t < T and i < k, and x holds T rows of k (asserted above); see
            // `panel_tile` for why the index is unchecked.
            let b = _mm512_set1_ps(unsafe { *x.get_unchecked(t * k + i) });
            low[t] = _mm512_fmadd_ps(w_low, b, low[t]);
            high[t] = _mm512_fmadd_ps(w_high, b, high[t]);
        }
    }
    for t in 0..T {
        let mut sum = [0.0f32; PANEL];
        // SAFETY: `sum` holds 32 floats; unaligned stores of 16 each.
        unsafe {
            _mm512_storeu_ps(sum.as_mut_ptr(), low[t]);
            _mm512_storeu_ps(sum.as_mut_ptr().add(16), high[t]);
        }
        let row = &mut out[t * n..t * n + columns];
        row.iter_mut().zip(&sum).for_each(|(o, s)| *o += s);
    }
}

/// `half_tile_avx2` over every token of `x`, 6 at a time, each tile in two passes of half
/// a panel: 12 of the 16 registers hold sums, and each input's widened weights serve 6
/// tokens where whole-panel tiles of 3 served 3 (half the conversions, broadcasts and
/// loads per multiply-add). The second pass reads the panel from the core's L2 cache.
/// Measured against 3-token whole-panel tiles (release, 2-core AMD EPYC with AVX2): one
/// query 22-27% faster, 32 titles 35-50% (see docs/performance.md). Parts of 8 outputs
/// with tiles of 14 tokens (a long query in one tile) were slower than both.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn half_tiles_avx2(
    x: &[f32],
    k: usize,
    panel: &[f16],
    out: &mut [f32],
    stride: usize,
    columns: usize,
) {
    for_each_half_tile(
        x,
        k,
        out,
        stride,
        columns,
        |size, half, x, out, columns| match size {
            1 => half_tile_avx2::<1>(x, panel, out, stride, columns, half),
            2 => half_tile_avx2::<2>(x, panel, out, stride, columns, half),
            3 => half_tile_avx2::<3>(x, panel, out, stride, columns, half),
            4 => half_tile_avx2::<4>(x, panel, out, stride, columns, half),
            5 => half_tile_avx2::<5>(x, panel, out, stride, columns, half),
            _ => half_tile_avx2::<6>(x, panel, out, stride, columns, half),
        },
    );
}

/// Half `half` of a half-float panel (outputs `16 · half` to `16 · half + 15`) times `T`
/// tokens' rows of `x` with AVX2: each step widens one input's 16 weights into two
/// registers and adds them, times each token's input, to that token's two registers of
/// sums; the first `columns` of each token's 16 sums are added to `out`'s rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(unsafe_code)]
pub(super) fn half_tile_avx2<const T: usize>(
    x: &[f32],
    panel: &[f16],
    out: &mut [f32],
    n: usize,
    columns: usize,
    half: usize,
) {
    use std::arch::x86_64::*;
    let k = panel.len() / PANEL;
    assert!(x.len() >= T * k, "x holds T rows of k inputs");
    assert!(half < 2 && columns <= HALF, "half a panel");
    let mut sums = [[_mm256_setzero_ps(); 2]; T];
    for (i, w) in panel.chunks_exact(PANEL).enumerate() {
        let w = &w[half * HALF..(half + 1) * HALF];
        // SAFETY: `w` holds 16 half floats (32 bytes); unaligned loads of 8 each.
        let w = unsafe {
            let w = w.as_ptr().cast::<__m128i>();
            [
                _mm256_cvtph_ps(_mm_loadu_si128(w)),
                _mm256_cvtph_ps(_mm_loadu_si128(w.add(1))),
            ]
        };
        for (t, sum) in sums.iter_mut().enumerate() {
            // SAFETY: t < T and i < k, and x holds T rows of k (asserted above); see
            // `panel_tile` for why the index is unchecked.
            let b = _mm256_set1_ps(unsafe { *x.get_unchecked(t * k + i) });
            for (s, w) in sum.iter_mut().zip(w) {
                *s = _mm256_fmadd_ps(w, b, *s);
            }
        }
    }
    for (t, sum) in sums.iter().enumerate() {
        let mut flat = [0.0f32; HALF];
        for (j, s) in sum.iter().enumerate() {
            // SAFETY: `flat` holds 16 floats; unaligned stores of 8 each.
            unsafe { _mm256_storeu_ps(flat.as_mut_ptr().add(8 * j), *s) };
        }
        let row = &mut out[t * n..t * n + columns];
        row.iter_mut().zip(&flat).for_each(|(o, s)| *o += s);
    }
}
