//! The f32 panel kernels: a matrix product through panels of 32 outputs, tiles of tokens
//! whose sums stay in registers, and the general product (gemm) that attention uses.

use super::*;

/// Outputs per panel of the linear layers' weight layout (two AVX-512 registers of f32).
pub(super) const PANEL: usize = 32;

/// Tokens per thread's share of a large batch's panel product: 96 rows of 1,536 inputs
/// (590 KiB) and a panel of them (192 KiB) fit in a 1 MiB L2 cache together.
pub(super) const ROW_BLOCK: usize = 96;

/// Tokens whose sums a panel product keeps in registers at once: 12 × 2 AVX-512 registers
/// of the 32, or 3 × 4 AVX2 registers of the 16.
pub(super) fn panel_tile_tokens() -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return 12;
    }
    3
}

/// One matrix product `dst (m × n) [+]= lhs (m × k) · rhs (k × n)`, with each operand given
/// as (slice, row stride, column stride) and `dst` row-major with its own row stride.
#[derive(Clone, Copy)]
pub(super) struct Product {
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
}

impl Product {
    /// The furthest element (plus one) a `rows × cols` view with these strides touches.
    fn extent(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
        (rows - 1) * row_stride + (cols - 1) * col_stride + 1
    }

    /// Runs the product with gemm on the calling thread (attention's products are small;
    /// the heads run in parallel instead).
    #[allow(unsafe_code)]
    pub(super) fn run(
        self,
        dst: &mut [f32],
        dst_row_stride: usize,
        lhs: (&[f32], usize, usize),
        rhs: (&[f32], usize, usize),
        accumulate: bool,
    ) {
        let Self { m, n, k } = self;
        if m == 0 || n == 0 || k == 0 {
            return;
        }
        assert!(
            Self::extent(m, n, dst_row_stride, 1) <= dst.len(),
            "dst too small"
        );
        assert!(
            Self::extent(m, k, lhs.1, lhs.2) <= lhs.0.len(),
            "lhs too small"
        );
        assert!(
            Self::extent(k, n, rhs.1, rhs.2) <= rhs.0.len(),
            "rhs too small"
        );
        // SAFETY: the assertions above keep every element gemm reads or writes inside its slice;
        // `dst` is borrowed mutably and the operands shared, so they cannot overlap; the
        // strides are positive and fit in isize because the slices exist.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                dst_row_stride as isize,
                accumulate,
                lhs.0.as_ptr(),
                lhs.2 as isize,
                lhs.1 as isize,
                rhs.0.as_ptr(),
                rhs.2 as isize,
                rhs.1 as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

/// `out (tokens × n) += x (tokens × k) · W`, with `W` in panels (see `Weights::Dense`).
///
/// On one thread, each panel in turn meets every token. With `parallel`, a batch of up to
/// two `ROW_BLOCK`s splits by panels: rayon's threads take whole panels, each summing into
/// its own part of `scratch` (`panels × tokens × PANEL`), then added to `out`, so each
/// weight is read once. A larger batch splits by blocks of `ROW_BLOCK` tokens, each block a
/// one-thread product into its own rows of `out`: a block's inputs stay in the core's L2
/// cache while every panel streams past, instead of every panel meeting the whole batch.
pub(super) fn panel_product<W: PanelWeight>(
    x: &[f32],
    k: usize,
    panels: &[W],
    out: &mut [f32],
    n: usize,
    parallel: bool,
    scratch: &mut Vec<f32>,
) {
    let tokens = x.len() / k;
    if !parallel {
        for (p, panel) in panels.chunks_exact(k * PANEL).enumerate() {
            let columns = PANEL.min(n - p * PANEL);
            W::tiles(x, k, panel, &mut out[p * PANEL..], n, columns);
        }
        return;
    }
    if tokens >= 2 * ROW_BLOCK {
        out.par_chunks_mut(ROW_BLOCK * n)
            .zip(x.par_chunks(ROW_BLOCK * k))
            .for_each(|(out, x)| panel_product(x, k, panels, out, n, false, &mut Vec::new()));
        return;
    }
    scratch.clear();
    scratch.resize(panels.len() / k * tokens, 0.0);
    scratch
        .par_chunks_mut(tokens * PANEL)
        .zip(panels.par_chunks_exact(k * PANEL))
        .for_each(|(sums, panel)| W::tiles(x, k, panel, sums, PANEL, PANEL));
    for (t, row) in out.chunks_exact_mut(n).enumerate() {
        for (p, part) in row.chunks_mut(PANEL).enumerate() {
            let sums = &scratch[(p * tokens + t) * PANEL..];
            part.iter_mut().zip(sums).for_each(|(o, s)| *o += s);
        }
    }
}

/// A weight type the panel products read.
pub(super) trait PanelWeight: Copy + Send + Sync {
    /// One panel times every token of `x`: adds the first `columns` of each token's `PANEL`
    /// sums to its row of `out` (row stride `stride`).
    fn tiles(x: &[f32], k: usize, panel: &[Self], out: &mut [f32], stride: usize, columns: usize);
}

impl PanelWeight for f32 {
    fn tiles(x: &[f32], k: usize, panel: &[f32], out: &mut [f32], stride: usize, columns: usize) {
        panel_tiles(x, k, panel, out, stride, columns);
    }
}

/// One panel times every token of `x`, `panel_tile_tokens()` at a time: adds the first
/// `columns` of each token's `PANEL` sums to its row of `out` (row stride `stride`). With
/// AVX2 but not AVX-512, in two halves of 16 outputs, 6 tokens at a time (as the
/// half-float kernel does: twice the tokens per loaded weight). Measured with f32 weights
/// (`--quantize none`, release, AVX2): 32 titles 137 -> 85-90 ms; one query unchanged (its
/// 42 MB of f32 panels stream from memory either way).
pub(super) fn panel_tiles(
    x: &[f32],
    k: usize,
    panel: &[f32],
    out: &mut [f32],
    stride: usize,
    columns: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if panel_tile_tokens() < 6
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        for_each_half_tile(x, k, out, stride, columns, |size, half, x, out, columns| {
            let first = half * HALF;
            match size {
                1 => part_tile::<1, HALF>(x, panel, out, stride, columns, first),
                2 => part_tile::<2, HALF>(x, panel, out, stride, columns, first),
                3 => part_tile::<3, HALF>(x, panel, out, stride, columns, first),
                4 => part_tile::<4, HALF>(x, panel, out, stride, columns, first),
                5 => part_tile::<5, HALF>(x, panel, out, stride, columns, first),
                _ => part_tile::<6, HALF>(x, panel, out, stride, columns, first),
            }
        });
        return;
    }
    for_each_tile(x, k, out, stride, panel_tile_tokens(), |size, x, out| {
        with_tile_size!(size, panel_tile(x, panel, out, stride, columns))
    });
}

/// Walks the tokens of `x` (rows of `k` inputs) in tiles of at most `most`, calling
/// `tile(size, the tile's rows of x, out from the tile's first row)`.
pub(super) fn for_each_tile(
    x: &[f32],
    k: usize,
    out: &mut [f32],
    stride: usize,
    most: usize,
    mut tile: impl FnMut(usize, &[f32], &mut [f32]),
) {
    let tokens = x.len() / k;
    let mut t = 0;
    while t < tokens {
        let size = most.min(tokens - t);
        tile(size, &x[t * k..(t + size) * k], &mut out[t * stride..]);
        t += size;
    }
}

/// Outputs per pass of the half-panel tiles (AVX2: two registers of sums per token).
pub(super) const HALF: usize = PANEL / 2;

/// `for_each_tile` in tiles of 6 tokens, each in two passes of half a panel, calling
/// `tile(size, half, the tile's rows of x, out from the half's first output, the half's
/// columns)`; a half past a partial last panel's `columns` is skipped.
pub(super) fn for_each_half_tile(
    x: &[f32],
    k: usize,
    out: &mut [f32],
    stride: usize,
    columns: usize,
    mut tile: impl FnMut(usize, usize, &[f32], &mut [f32], usize),
) {
    for_each_tile(x, k, out, stride, 6, |size, x, out| {
        for half in 0..2 {
            let columns = columns.saturating_sub(half * HALF).min(HALF);
            if columns == 0 {
                break;
            }
            tile(size, half, x, &mut out[half * HALF..], columns);
        }
    });
}

/// One panel times `T` tokens' rows of `x`: `T × PANEL` sums held in registers while the
/// panel streams past once; the first `columns` of each are added to `out`'s rows.
pub(super) fn panel_tile<const T: usize>(
    x: &[f32],
    panel: &[f32],
    out: &mut [f32],
    n: usize,
    columns: usize,
) {
    part_tile::<T, PANEL>(x, panel, out, n, columns, 0);
}

/// Outputs `first..first + W` of a panel times `T` tokens' rows of `x`: `T × W` sums held in
/// registers while the panel streams past once; the first `columns` of each are added to
/// `out`'s rows (`out` starting at output `first`).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
#[allow(unsafe_code)]
pub(super) fn part_tile<const T: usize, const W: usize>(
    x: &[f32],
    panel: &[f32],
    out: &mut [f32],
    n: usize,
    columns: usize,
    first: usize,
) {
    let k = panel.len() / PANEL;
    assert!(x.len() >= T * k, "x holds T rows of k inputs");
    assert!(first + W <= PANEL && columns <= W, "a part of a panel");
    // Fused multiply-adds where the CPU has them; without, `mul_add` would be a libm call.
    let fused = selected_target!().supports_feature_str("fma");
    let mut sums = [[0.0f32; W]; T];
    for (i, w) in panel.chunks_exact(PANEL).enumerate() {
        let w = &w[first..first + W];
        for (t, sum) in sums.iter_mut().enumerate() {
            // SAFETY: t < T and i < k, and x holds T rows of k (asserted above). A checked
            // index would give the loop a panicking exit, and LLVM then writes `sums` back to
            // the stack on every step instead of keeping it in registers.
            let b = unsafe { *x.get_unchecked(t * k + i) };
            for (s, w) in sum.iter_mut().zip(w) {
                *s = if fused { w.mul_add(b, *s) } else { *s + w * b };
            }
        }
    }
    for (t, sum) in sums.iter().enumerate() {
        let row = &mut out[t * n..t * n + columns];
        row.iter_mut().zip(sum).for_each(|(o, s)| *o += s);
    }
}
