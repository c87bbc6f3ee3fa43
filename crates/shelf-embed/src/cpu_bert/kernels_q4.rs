//! Lossless 4-bit weights: a checkpoint dequantized from GGML's Q4_0 (multilingual-e5-small's
//! is) holds, in every block of 32 inputs, only the values `(q - 8) · d` for 4-bit `q` and one
//! half-float `d`. Such weights are found at load, held as those 4 bits and one scale, and
//! rebuilt in registers by the panel kernels bit for bit as the f32 checkpoint holds them.
//!
//! A product of a few tokens streams every weight once, so its speed is the weights' bytes:
//! 0.625 bytes per weight here against 2 (half floats) or 4 (f32). The 12 layers of
//! multilingual-e5-small take 13 MB instead of 42 MB (f16), inside a 32 MB L3 cache.

use super::*;

/// Inputs per block: one scale per output for every 32 inputs, as in Q4_0.
pub(super) const Q4_BLOCK: usize = 32;

/// Whether this CPU runs the 4-bit panel kernel (x86-64 with AVX2 and FMA). Elsewhere the
/// loader keeps such weights as f32 or half floats.
pub(crate) fn packs_4bit() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            return true;
        }
    }
    false
}

/// `q4_tile_avx2::<T>` over every token of `x`, 3 at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn q4_tiles_avx2(
    x: &[f32],
    k: usize,
    panel: &[Q4Block],
    out: &mut [f32],
    stride: usize,
    columns: usize,
) {
    for_each_tile(x, k, out, stride, 3, |size, x, out| match size {
        1 => q4_tile_avx2::<1>(x, panel, out, stride, columns),
        2 => q4_tile_avx2::<2>(x, panel, out, stride, columns),
        _ => q4_tile_avx2::<3>(x, panel, out, stride, columns),
    });
}

/// 32 inputs of one panel (`PANEL` outputs): each output's scale, then per input the 32
/// outputs' 4-bit values, byte `j` holding output `j` (low nibble) and `j + 16` (high).
/// A panel of `k` inputs is `k / 32` consecutive blocks (640 bytes each).
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct Q4Block {
    scales: [f32; PANEL],
    nibbles: [[u8; PANEL / 2]; Q4_BLOCK],
}

/// The exact 4-bit form of 32 values: `(d, q)` with `values[i] == (q[i] - 8) as f32 * d` for
/// every `i`, `q[i] < 16` and `d` a half float; None when there is none.
pub(super) fn exact_q4(values: &[f32]) -> Option<(f32, [u8; Q4_BLOCK])> {
    debug_assert_eq!(values.len(), Q4_BLOCK);
    let largest = values.iter().copied().max_by(|a, b| a.abs().total_cmp(&b.abs()))?;
    if largest == 0.0 {
        return Some((0.0, [8; Q4_BLOCK]));
    }
    // The largest value is `(q - 8) · d` for one of these steps (GGML's quantiser gives it
    // -8); f16 rounding of the quotient recovers `d` exactly.
    const STEPS: [f32; 15] = [
        -8.0, 7.0, -7.0, 6.0, -6.0, 5.0, -5.0, 4.0, -4.0, 3.0, -3.0, 2.0, -2.0, 1.0, -1.0,
    ];
    'steps: for step in STEPS {
        let d = f16::from_f32(largest / step).to_f32();
        if d == 0.0 || !d.is_finite() {
            continue;
        }
        let mut q = [0u8; Q4_BLOCK];
        for (q, &v) in q.iter_mut().zip(values) {
            let level = (v / d).round();
            if !(-8.0..=7.0).contains(&level) || level * d != v {
                continue 'steps;
            }
            *q = (level + 8.0) as u8;
        }
        return Some((d, q));
    }
    None
}

/// `weight` (`outputs × inputs`, as stored) as 4-bit panels, when every block is exact (see
/// `exact_q4`) and `inputs` a multiple of 32; None otherwise. Output `o`'s scales are
/// multiplied by `row_scale(o)` (1 keeps the weights exact).
pub(super) fn to_q4_panels(
    weight: &[f32],
    inputs: usize,
    row_scale: impl Fn(usize) -> f32,
) -> Option<Vec<Q4Block>> {
    if inputs == 0 || !inputs.is_multiple_of(Q4_BLOCK) {
        return None;
    }
    let outputs = weight.len() / inputs;
    let per_panel = inputs / Q4_BLOCK;
    let zero = Q4Block {
        scales: [0.0; PANEL],
        nibbles: [[0x88; PANEL / 2]; Q4_BLOCK],
    };
    let mut panels = vec![zero; outputs.div_ceil(PANEL) * per_panel];
    for (o, row) in weight.chunks_exact(inputs).enumerate() {
        let (lane, shift) = (o % PANEL % (PANEL / 2), 4 * (o % PANEL / (PANEL / 2)));
        for (b, values) in row.chunks_exact(Q4_BLOCK).enumerate() {
            let (d, q) = exact_q4(values)?;
            let block = &mut panels[(o / PANEL) * per_panel + b];
            block.scales[o % PANEL] = d * row_scale(o);
            for (input, &q) in block.nibbles.iter_mut().zip(&q) {
                input[lane] = (input[lane] & !(0x0F << shift)) | (q << shift);
            }
        }
    }
    Some(panels)
}

impl PanelWeight for Q4Block {
    fn panel_len(k: usize) -> usize {
        k / Q4_BLOCK
    }

    /// Up to one tile of tokens (a short query's product is mostly this), the kernel
    /// rebuilds each weight in registers as it streams past; more tokens would rebuild it
    /// once per tile, so the panel is rebuilt once into an f32 panel (in the core's L2: 192
    /// KiB at 1,536 inputs) that the f32 kernel then reads for every tile.
    #[allow(unsafe_code)]
    fn tiles(x: &[f32], k: usize, panel: &[Self], out: &mut [f32], stride: usize, columns: usize) {
        thread_local! {
            static WIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        #[cfg(target_arch = "x86_64")]
        if packs_4bit() {
            if x.len() / k <= Q4_DIRECT_TOKENS {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                unsafe { q4_tiles_avx2(x, k, panel, out, stride, columns) };
            } else {
                WIDE.with_borrow_mut(|wide| {
                    wide.resize(k * PANEL, 0.0);
                    // SAFETY: as above.
                    unsafe { widen_q4_panel_avx2(panel, wide) };
                    panel_tiles(x, k, wide, out, stride, columns);
                });
            }
            return;
        }
        // Elsewhere (the loader does not pack for such CPUs): widen, then the f32 kernel.
        panel_tiles(x, k, &widen_q4_panel(panel), out, stride, columns);
    }
}

/// Tokens up to which a 4-bit panel is multiplied as it is (one AVX2 tile).
const Q4_DIRECT_TOKENS: usize = 3;

/// The 32 weights of input `j` of `block`, rebuilt exactly (see `q4_tile_avx2`) in four
/// registers of 8 outputs each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
#[inline]
fn q4_weights_avx2(
    bytes: &[u8; PANEL / 2],
    d: &[std::arch::x86_64::__m256; 4],
    offset: &[std::arch::x86_64::__m256; 4],
) -> [std::arch::x86_64::__m256; 4] {
    use std::arch::x86_64::*;
    let nibble = _mm_set1_epi8(0x0F);
    // SAFETY: `bytes` is 16 bytes; an unaligned load.
    let bytes = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
    let q_low = _mm_and_si128(bytes, nibble);
    let q_high = _mm_and_si128(_mm_srli_epi16(bytes, 4), nibble);
    // Outputs 0-7, 8-15 (the low nibbles), 16-23, 24-31 (the high ones).
    let q = [q_low, _mm_srli_si128(q_low, 8), q_high, _mm_srli_si128(q_high, 8)];
    let mut w = [_mm256_setzero_ps(); 4];
    for (((w, q), d), offset) in w.iter_mut().zip(q).zip(d).zip(offset) {
        *w = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q)), *d, *offset);
    }
    w
}

/// A block's scales and their offsets (`-8 · d`), in four registers of 8 outputs each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
#[inline]
fn q4_scales_avx2(
    block: &Q4Block,
) -> ([std::arch::x86_64::__m256; 4], [std::arch::x86_64::__m256; 4]) {
    use std::arch::x86_64::*;
    let minus_eight = _mm256_set1_ps(-8.0);
    let mut d = [_mm256_setzero_ps(); 4];
    let mut offset = [_mm256_setzero_ps(); 4];
    for (j, (d, offset)) in d.iter_mut().zip(&mut offset).enumerate() {
        // SAFETY: `scales` holds 32 floats; unaligned loads of 8 each.
        *d = unsafe { _mm256_loadu_ps(block.scales.as_ptr().add(8 * j)) };
        *offset = _mm256_mul_ps(*d, minus_eight);
    }
    (d, offset)
}

/// `widen_q4_panel` with AVX2 into `wide` (`inputs × PANEL`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
fn widen_q4_panel_avx2(panel: &[Q4Block], wide: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(wide.len() >= panel.len() * Q4_BLOCK * PANEL, "wide holds the panel");
    let mut rows = wide.chunks_exact_mut(PANEL);
    for block in panel {
        let (d, offset) = q4_scales_avx2(block);
        for bytes in &block.nibbles {
            let w = q4_weights_avx2(bytes, &d, &offset);
            let row = rows.next().expect("asserted above");
            for (j, w) in w.iter().enumerate() {
                // SAFETY: `row` holds 32 floats; unaligned stores of 8 each.
                unsafe { _mm256_storeu_ps(row.as_mut_ptr().add(8 * j), *w) };
            }
        }
    }
}

/// One 4-bit panel as the f32 panel it stands for (`inputs × PANEL`, row-major).
pub(super) fn widen_q4_panel(panel: &[Q4Block]) -> Vec<f32> {
    let mut wide = Vec::with_capacity(panel.len() * Q4_BLOCK * PANEL);
    for block in panel {
        for input in &block.nibbles {
            for o in 0..PANEL {
                let q = (input[o % (PANEL / 2)] >> (4 * (o / (PANEL / 2)))) & 0x0F;
                wide.push((q as f32 - 8.0) * block.scales[o]);
            }
        }
    }
    wide
}

/// One 4-bit panel times `T` tokens' rows of `x` with AVX2 and FMA: each input's 32 weights
/// are rebuilt from 16 bytes as `q · d - 8 · d` in one fused step per 8 (exactly
/// `(q - 8) · d`: `8 · d` is exact and the fused step rounds once), then summed like the
/// half-float kernel's, 3 tokens at a time (12 of the 16 registers hold sums).
///
/// AVX-512 CPUs run this kernel too: a 16-wide variant (12 tokens at a time, like the f32
/// and half-float kernels') is left for a machine that can test it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
fn q4_tile_avx2<const T: usize>(
    x: &[f32],
    panel: &[Q4Block],
    out: &mut [f32],
    n: usize,
    columns: usize,
) {
    use std::arch::x86_64::*;
    let k = panel.len() * Q4_BLOCK;
    assert!(x.len() >= T * k, "x holds T rows of k inputs");
    let mut sums = [[_mm256_setzero_ps(); 4]; T];
    for (b, block) in panel.iter().enumerate() {
        let (d, offset) = q4_scales_avx2(block);
        for (j, bytes) in block.nibbles.iter().enumerate() {
            let w = q4_weights_avx2(bytes, &d, &offset);
            let i = b * Q4_BLOCK + j;
            for (t, sum) in sums.iter_mut().enumerate() {
                // SAFETY: t < T and i < k, and x holds T rows of k (asserted above); see
                // `panel_tile` for why the index is unchecked.
                let a = _mm256_set1_ps(unsafe { *x.get_unchecked(t * k + i) });
                for (s, w) in sum.iter_mut().zip(w) {
                    *s = _mm256_fmadd_ps(w, a, *s);
                }
            }
        }
    }
    for (t, sum) in sums.iter().enumerate() {
        let mut wide = [0.0f32; PANEL];
        for (j, s) in sum.iter().enumerate() {
            // SAFETY: `wide` holds 32 floats; unaligned stores of 8 each.
            unsafe { _mm256_storeu_ps(wide.as_mut_ptr().add(8 * j), *s) };
        }
        let row = &mut out[t * n..t * n + columns];
        row.iter_mut().zip(&wide).for_each(|(o, s)| *o += s);
    }
}

/// An embedding table: f32 rows, or (when every block is exact, see `exact_q4`) 4-bit rows
/// rebuilt as they are read. multilingual-e5-small's 250,037 rows take 60 MB instead of 384.
pub(super) enum Table {
    Dense(Vec<f32>),
    /// Per row, `width / 32` blocks of a scale and 32 values, element `j` of a block in byte
    /// `j % 16`'s low (`j < 16`) or high nibble.
    Q4 {
        width: usize,
        blocks: Vec<(f32, [u8; Q4_BLOCK / 2])>,
    },
}

impl Table {
    /// The table of `values` (`rows × width`), packed when every block is exact.
    pub(super) fn new(values: Vec<f32>, width: usize) -> Self {
        if width == 0 || !width.is_multiple_of(Q4_BLOCK) {
            return Self::Dense(values);
        }
        let mut blocks = Vec::with_capacity(values.len() / Q4_BLOCK);
        for chunk in values.chunks_exact(Q4_BLOCK) {
            let Some((d, q)) = exact_q4(chunk) else {
                return Self::Dense(values);
            };
            let mut packed = [0u8; Q4_BLOCK / 2];
            for (j, byte) in packed.iter_mut().enumerate() {
                *byte = q[j] | (q[j + Q4_BLOCK / 2] << 4);
            }
            blocks.push((d, packed));
        }
        Self::Q4 { width, blocks }
    }

    /// Rows in the table.
    pub(super) fn rows(&self, width: usize) -> usize {
        match self {
            Self::Dense(values) => values.len() / width,
            Self::Q4 { blocks, .. } => blocks.len() * Q4_BLOCK / width,
        }
    }

    /// Adds row `row` to `out` (the caller checks `row < rows`).
    pub(super) fn add_row(&self, row: usize, out: &mut [f32]) {
        match self {
            Self::Dense(values) => {
                let width = out.len();
                let src = &values[row * width..(row + 1) * width];
                out.iter_mut().zip(src).for_each(|(o, v)| *o += v);
            }
            Self::Q4 { width, blocks } => {
                let per_row = width / Q4_BLOCK;
                for ((d, packed), out) in blocks[row * per_row..(row + 1) * per_row]
                    .iter()
                    .zip(out.chunks_exact_mut(Q4_BLOCK))
                {
                    for (j, o) in out.iter_mut().enumerate() {
                        let q = (packed[j % 16] >> (4 * (j / 16))) & 0x0F;
                        *o += (q as f32 - 8.0) * d;
                    }
                }
            }
        }
    }

    /// Bytes the table holds.
    pub(super) fn bytes(&self) -> usize {
        match self {
            Self::Dense(values) => values.len() * 4,
            Self::Q4 { blocks, .. } => blocks.len() * std::mem::size_of::<(f32, [u8; 16])>(),
        }
    }
}
