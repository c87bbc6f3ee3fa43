//! Embedding tables, held packed when they are exactly 4-bit: a checkpoint dequantized from
//! GGML's Q4_0 (multilingual-e5-small's is) holds, in every block of 32 values, only
//! `(q - 8) · d` for 4-bit `q` and one half-float `d`. Such a table is found at load, kept as
//! those 4 bits and one scale per block, and each row rebuilt bit for bit as it is read.
//! multilingual-e5-small's 250,037 × 384 word table takes 60 MB instead of 384 MB.

use super::*;

/// Values per block: one scale for every 32, as in Q4_0.
pub(super) const Q4_BLOCK: usize = 32;

/// The exact 4-bit form of 32 values: `(d, q)` with `values[i]` bit for bit
/// `(q[i] - 8) as f32 * d` for every `i`, `q[i] < 16` and `d` a half float; None when there
/// is none.
pub(super) fn exact_q4(values: &[f32]) -> Option<(f32, [u8; Q4_BLOCK])> {
    debug_assert_eq!(values.len(), Q4_BLOCK);
    let largest = values
        .iter()
        .copied()
        .max_by(|a, b| a.abs().total_cmp(&b.abs()))?;
    if largest == 0.0 {
        // Zeros are `0 · d`, signed like `d`: all of one sign, or not 4-bit.
        let d = values[0];
        let same = values.iter().all(|v| v.to_bits() == d.to_bits());
        return same.then_some((d, [8; Q4_BLOCK]));
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
            // Bit for bit: a zero keeps its sign.
            if !(-8.0..=7.0).contains(&level) || (level * d).to_bits() != v.to_bits() {
                continue 'steps;
            }
            *q = (level + 8.0) as u8;
        }
        return Some((d, q));
    }
    None
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
