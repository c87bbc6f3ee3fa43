//! BERT forward pass on the CPU over ragged batches: no padding, one matrix product per linear
//! layer with its bias and residual folded in, and vectorised GELU, softmax and layer norm.
//!
//! candle's generic BERT (still used on CUDA) pads every sequence to the batch's longest, adds
//! bias, mask and residual as separate passes over freshly allocated tensors, runs GELU through
//! scalar `erf` and multiplies batch by batch. On a few cores those passes cost as much as the
//! products themselves. Here the sequences of a batch lie end to end in one `tokens × hidden`
//! matrix: every per-token step runs over that matrix once, and attention runs per sequence and
//! head over that sequence's own length, so padding is neither stored nor computed.

use crate::{EmbedError, Quantization};
use candle_core::quantized::k_quants::{self, BlockQ8_0, GgmlType};
use candle_core::{DType, Tensor};
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use half::f16;
use multiversion::{multiversion, target::selected_target};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// Per-element work below which a pass runs on the calling thread alone.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Tokens in a batch below which the matrix products and the attention run on the calling
/// thread alone. A short query (~6 tokens) gains ~5% from a second thread at the price of
/// waking it for every product, and in the server that core is busy with other requests.
const PARALLEL_MIN_TOKENS: usize = 16;

/// `f::<SIZE>(args)` for a tile size known only at run time (1 to 12; anything larger as 12).
macro_rules! with_tile_size {
    ($size:expr, $f:ident($($arg:expr),*)) => {
        match $size {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*),
            11 => $f::<11>($($arg),*),
            _ => $f::<12>($($arg),*),
        }
    };
}

mod activations;
mod kernels_f16;
mod kernels_f32;
mod layout;
mod table;

use activations::*;

pub(crate) use kernels_f16::widens_half_floats;
use kernels_f32::*;
use layout::*;
use table::*;

/// The encoder's weights, laid out for this forward pass.
pub(crate) struct CpuBert {
    word: Table,
    position: Table,
    token_type: Table,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    activation: HiddenAct,
    eps: f32,
    scratch: Mutex<Scratch>,
}

struct Layer {
    /// Query, key and value in one product (`hidden → 3 × hidden`); the query part is
    /// pre-scaled by 1/√head_dim, so attention scores need no scaling pass.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    up: Linear,
    down: Linear,
    output_norm: LayerNorm,
}

/// Buffers reused from one batch to the next, so that a forward pass does not fault in fresh
/// pages for every intermediate matrix.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    by_head: Vec<f32>,
    context: Vec<f32>,
    inner: Vec<f32>,
    product: Vec<f32>,
}

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl std::fmt::Debug for CpuBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBert")
            .field("layers", &self.layers.len())
            .field("hidden", &self.hidden)
            .field("heads", &self.heads)
            .finish_non_exhaustive()
    }
}

impl CpuBert {
    /// Builds the encoder from a checkpoint's tensors (loaded on the CPU).
    pub(crate) fn load(
        tensors: HashMap<String, Tensor>,
        config: &BertConfig,
        quantization: Quantization,
    ) -> Result<Self, String> {
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        let intermediate = config.intermediate_size;
        if !hidden.is_multiple_of(heads) {
            return Err(format!(
                "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
            ));
        }
        let head_dim = hidden / heads;
        let ckpt = Checkpoint::new(tensors, config.model_type.as_deref());
        let word = ckpt.get(
            &["embeddings.word_embeddings.weight"],
            &[config.vocab_size, hidden],
        )?;
        let position = ckpt.get(
            &["embeddings.position_embeddings.weight"],
            &[config.max_position_embeddings, hidden],
        )?;
        let token_type = ckpt.get(
            &["embeddings.token_type_embeddings.weight"],
            &[config.type_vocab_size, hidden],
        )?;
        let (word, position, token_type) = (
            Table::new(word, hidden),
            Table::new(position, hidden),
            Table::new(token_type, hidden),
        );
        let embed_norm = ckpt.layer_norm("embeddings.LayerNorm", hidden)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let (mut wq, mut bq) =
                ckpt.linear_parts(&format!("{p}.attention.self.query"), hidden, hidden)?;
            let scale = 1.0 / (head_dim as f32).sqrt();
            wq.iter_mut().chain(bq.iter_mut()).for_each(|w| *w *= scale);
            let (wk, bk) = ckpt.linear_parts(&format!("{p}.attention.self.key"), hidden, hidden)?;
            let (wv, bv) =
                ckpt.linear_parts(&format!("{p}.attention.self.value"), hidden, hidden)?;
            let qkv = Linear::new(
                hidden,
                3 * hidden,
                [wq, wk, wv].concat(),
                [bq, bk, bv].concat(),
                quantization,
            );
            let (w, b) =
                ckpt.linear_parts(&format!("{p}.attention.output.dense"), hidden, hidden)?;
            let attention_out = Linear::new(hidden, hidden, w, b, quantization);
            let attention_norm =
                ckpt.layer_norm(&format!("{p}.attention.output.LayerNorm"), hidden)?;
            let (w, b) =
                ckpt.linear_parts(&format!("{p}.intermediate.dense"), hidden, intermediate)?;
            let up = Linear::new(hidden, intermediate, w, b, quantization);
            let (w, b) = ckpt.linear_parts(&format!("{p}.output.dense"), intermediate, hidden)?;
            let down = Linear::new(intermediate, hidden, w, b, quantization);
            let output_norm = ckpt.layer_norm(&format!("{p}.output.LayerNorm"), hidden)?;
            layers.push(Layer {
                qkv,
                attention_out,
                attention_norm,
                up,
                down,
                output_norm,
            });
        }
        if let Table::Q4 { .. } = word {
            tracing::info!(
                mb = word.bytes() as f64 / 1e6,
                "the word embeddings are exact 4-bit blocks: held packed (lossless)"
            );
        }
        Ok(Self {
            word,
            position,
            token_type,
            embed_norm,
            layers,
            hidden,
            heads,
            intermediate,
            activation: config.hidden_act,
            eps: config.layer_norm_eps as f32,
            scratch: Mutex::new(Scratch::default()),
        })
    }

    /// Mean-pooled, L2-normalised sentence vectors of the given (token ids, type ids).
    pub(crate) fn embed(
        &self,
        batch: &[&(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let hidden = self.hidden;
        if batch.iter().all(|(ids, _)| ids.is_empty()) {
            return Ok(vec![vec![0.0; hidden]; batch.len()]);
        }
        let mut spans = Vec::with_capacity(batch.len());
        let mut tokens = 0;
        for (ids, _) in batch {
            spans.push((tokens, ids.len()));
            tokens += ids.len();
        }
        let mut guard = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *guard;
        s.x.resize(tokens * hidden, 0.0);
        s.qkv.resize(tokens * 3 * hidden, 0.0);
        s.by_head.resize(tokens * hidden, 0.0);
        s.context.resize(tokens * hidden, 0.0);
        s.inner.resize(tokens * self.intermediate, 0.0);

        self.embeddings(batch, &mut s.x)?;
        for layer in &self.layers {
            layer
                .qkv
                .forward(&s.x, tokens, &mut s.qkv, false, &mut s.product);
            self.attention(&s.qkv, &spans, &mut s.by_head);
            self.merge_heads(&s.by_head, tokens, &mut s.context);
            layer
                .attention_out
                .forward(&s.context, tokens, &mut s.x, true, &mut s.product);
            layer_norm_rows(&mut s.x, hidden, &layer.attention_norm, self.eps);
            layer
                .up
                .forward(&s.x, tokens, &mut s.inner, false, &mut s.product);
            activate(&mut s.inner, self.activation);
            layer
                .down
                .forward(&s.inner, tokens, &mut s.x, true, &mut s.product);
            layer_norm_rows(&mut s.x, hidden, &layer.output_norm, self.eps);
        }
        Ok(spans
            .iter()
            .map(|&(start, len)| {
                mean_normalised(&s.x[start * hidden..(start + len) * hidden], hidden)
            })
            .collect())
    }

    /// Word, position and token-type embeddings summed, then layer-normed, one row per token.
    fn embeddings(&self, batch: &[&(Vec<u32>, Vec<u32>)], x: &mut [f32]) -> Result<(), EmbedError> {
        let hidden = self.hidden;
        let mut out = x.chunks_exact_mut(hidden);
        for (ids, types) in batch {
            for (position, (&id, &kind)) in ids.iter().zip(types.iter()).enumerate() {
                // word + position + type, summed in that order (-0 + w is w, bit for bit).
                let row = out.next().expect("x holds one row per token");
                row.fill(-0.0);
                add_table_row(&self.word, row, id as usize, "token id")?;
                add_table_row(&self.position, row, position, "position")?;
                add_table_row(&self.token_type, row, kind as usize, "token type")?;
            }
        }
        layer_norm_rows(x, hidden, &self.embed_norm, self.eps);
        Ok(())
    }

    /// Scaled dot-product attention of every sequence and head; writes each head's context
    /// vectors head-major (`heads × tokens × head_dim`).
    fn attention(&self, qkv: &[f32], spans: &[(usize, usize)], by_head: &mut [f32]) {
        let hidden = self.hidden;
        let head_dim = hidden / self.heads;
        let tokens: usize = spans.iter().map(|&(_, len)| len).sum();
        let stride = 3 * hidden;
        let per_head = |scores: &mut Vec<f32>, (head, out): (usize, &mut [f32])| {
            for &(start, len) in spans.iter().filter(|&&(_, len)| len > 0) {
                scores.resize(len * len, 0.0);
                let base = start * stride + head * head_dim;
                let q = &qkv[base..];
                let k = &qkv[base + hidden..];
                let v = &qkv[base + 2 * hidden..];
                // scores = Q·Kᵀ: Q is len × head_dim with row stride 3·hidden; Kᵀ reads K
                // with its strides swapped.
                let product = Product {
                    m: len,
                    n: len,
                    k: head_dim,
                };
                product.run(scores, len, (q, stride, 1), (k, 1, stride), false);
                softmax_rows(scores, len);
                let product = Product {
                    m: len,
                    n: head_dim,
                    k: len,
                };
                let out = &mut out[start * head_dim..(start + len) * head_dim];
                product.run(out, head_dim, (scores, len, 1), (v, stride, 1), false);
            }
        };
        if tokens >= PARALLEL_MIN_TOKENS {
            by_head
                .par_chunks_mut(tokens * head_dim)
                .enumerate()
                .for_each_init(Vec::new, per_head);
        } else {
            let mut scores = Vec::new();
            by_head
                .chunks_mut(tokens * head_dim)
                .enumerate()
                .for_each(|head| per_head(&mut scores, head));
        }
    }

    /// `heads × tokens × head_dim` back to `tokens × hidden`.
    fn merge_heads(&self, by_head: &[f32], tokens: usize, context: &mut [f32]) {
        let head_dim = self.hidden / self.heads;
        let per_head = tokens * head_dim;
        let merge = |(t, row): (usize, &mut [f32])| {
            for (head, dst) in row.chunks_exact_mut(head_dim).enumerate() {
                let src = head * per_head + t * head_dim;
                dst.copy_from_slice(&by_head[src..src + head_dim]);
            }
        };
        // A parallel iterator called from outside rayon's pool always hands its work to the
        // pool and waits, even when it does not split: small batches copy here.
        if tokens * self.hidden < PARALLEL_MIN_ELEMENTS {
            context.chunks_mut(self.hidden).enumerate().for_each(merge);
        } else {
            context
                .par_chunks_mut(self.hidden)
                .with_min_len(64)
                .enumerate()
                .for_each(merge);
        }
    }
}

/// Runs `f` on chunks of whole `width`-long rows of `data`, in parallel when there is enough
/// work.
fn rows_par(data: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    if data.len() < PARALLEL_MIN_ELEMENTS {
        f(data);
    } else {
        let rows_per_task = (PARALLEL_MIN_ELEMENTS / 4 / width).max(1);
        data.par_chunks_mut(rows_per_task * width).for_each(f);
    }
}

fn layer_norm_rows(x: &mut [f32], width: usize, norm: &LayerNorm, eps: f32) {
    rows_par(x, width, |rows| {
        layer_norm(rows, width, &norm.weight, &norm.bias, eps)
    });
}

/// Mean of `rows` (`len × width`), scaled to unit length.
fn mean_normalised(rows: &[f32], width: usize) -> Vec<f32> {
    let count = (rows.len() / width).max(1) as f32;
    let mut mean = vec![0.0f32; width];
    for row in rows.chunks_exact(width) {
        mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    mean.iter_mut().for_each(|m| *m /= norm);
    mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_the_standard_library() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        // Φ(x) by a slow but precise series of erf, in f64.
        fn erf(x: f64) -> f64 {
            let mut sum = 0.0;
            let mut term = x;
            for n in 0..200 {
                sum += term / (2 * n + 1) as f64;
                term *= -x * x / (n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        let mut x = -6.0f32;
        while x < 6.0 {
            let exact = 0.5 * x as f64 * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2));
            let err = (gelu_erf(x) as f64 - exact).abs();
            assert!(
                err < 5e-7 * (1.0 + x.abs() as f64),
                "gelu({x}) off by {err}"
            );
            x += 0.01;
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_keep_order() {
        let mut row = vec![1.0, 3.0, -2.0, 0.5, 80.0, -80.0];
        softmax_rows(&mut row, 6);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[4] > 0.999 && row[5] >= 0.0);
        assert!(row[1] > row[0] && row[0] > row[3] && row[3] > row[2]);
    }

    #[test]
    fn products_match_a_naive_loop_for_every_stride_used() {
        let (m, n, k) = (7, 5, 3);
        let lhs: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let rhs_t: Vec<f32> = (0..n * k).map(|i| (i as f32).sin()).collect(); // n × k
        let mut expected = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                expected[i * n + j] = (0..k).map(|l| lhs[i * k + l] * rhs_t[j * k + l]).sum();
            }
        }
        // rhs read transposed through its strides (as attention reads K), overwriting dst.
        let mut dst = vec![9.0f32; m * n];
        Product { m, n, k }.run(&mut dst, n, (&lhs, k, 1), (&rhs_t, 1, k), false);
        for (a, b) in dst.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Accumulating onto what is there, as the linear layers add bias and residual.
        let mut dst = vec![1.0f32; m * n];
        Product { m, n, k }.run(&mut dst, n, (&lhs, k, 1), (&rhs_t, 1, k), true);
        for (a, b) in dst.iter().zip(&expected) {
            assert!((a - (b + 1.0)).abs() < 1e-5, "{a} vs {}", b + 1.0);
        }
    }

    /// `x · Wᵀ + bias (+ residual)` by a naive loop, `weight` as stored (`outputs × inputs`).
    fn naive_linear(x: &[f32], weight: &[f32], bias: &[f32], residual: &[f32]) -> Vec<f32> {
        let (inputs, outputs) = (weight.len() / bias.len(), bias.len());
        let rows = x.len() / inputs;
        let mut out = residual.to_vec();
        for r in 0..rows {
            for o in 0..outputs {
                let dot: f64 = (0..inputs)
                    .map(|i| x[r * inputs + i] as f64 * weight[o * inputs + i] as f64)
                    .sum();
                out[r * outputs + o] += (dot + bias[o] as f64) as f32;
            }
        }
        out
    }

    #[test]
    fn linear_layers_match_a_naive_loop_at_every_batch_shape() {
        // Outputs not a multiple of PANEL (a partial last panel): 70 leaves 6 outputs (the
        // AVX2 kernel's second half empty), 90 leaves 26 (both halves partly used). Token
        // counts on both sides of every tile size and of the parallel thresholds (by panels,
        // by row blocks).
        for outputs in [70, 90] {
            linear_layers_match_a_naive_loop(outputs);
        }
    }

    fn linear_layers_match_a_naive_loop(outputs: usize) {
        let inputs = 48;
        let weight: Vec<f32> = (0..outputs * inputs)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let bias: Vec<f32> = (0..outputs).map(|o| o as f32 * 0.01 - 0.3).collect();
        // Half floats are checked against the loop over the same weights rounded to f16.
        let rounded: Vec<f32> = weight.iter().map(|&w| f16::from_f32(w).to_f32()).collect();
        assert_ne!(rounded, weight, "the test's weights must lose bits in f16");
        for (quantization, weight) in [(Quantization::None, &weight), (Quantization::F16, &rounded)]
        {
            let linear = Linear::new(inputs, outputs, weight.clone(), bias.clone(), quantization);
            let mut scratch = Vec::new();
            for rows in [
                1, 2, 3, 4, 11, 12, 13, 15, 16, 17, 25, 100, 191, 192, 200, 255, 256, 300,
            ] {
                let x: Vec<f32> = (0..rows * inputs)
                    .map(|i| (i as f32 * 0.37).sin())
                    .collect();
                let residual: Vec<f32> = (0..rows * outputs).map(|i| (i % 5) as f32).collect();
                for accumulate in [false, true] {
                    let mut out = if accumulate {
                        residual.clone()
                    } else {
                        vec![f32::NAN; rows * outputs]
                    };
                    linear.forward(&x, rows, &mut out, accumulate, &mut scratch);
                    let zeros = vec![0.0; rows * outputs];
                    let expected = naive_linear(
                        &x,
                        weight,
                        &bias,
                        if accumulate { &residual } else { &zeros },
                    );
                    for (i, (a, b)) in out.iter().zip(&expected).enumerate() {
                        assert!(
                            (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                            "{quantization:?}, rows {rows}, accumulate {accumulate}, \
                             element {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// `outputs × inputs` weights that are exactly 4-bit blocks: `(q - 8) · d`, with `d` a
    /// half float per block and `q` drawn from the index.
    fn exact_4bit_weights(outputs: usize, inputs: usize) -> Vec<f32> {
        (0..outputs * inputs)
            .map(|i| {
                let block = i / 32;
                let d = f16::from_f32(0.001 + (block % 13) as f32 * 0.0037).to_f32();
                let q = ((i * 7 + block * 3) % 16) as f32;
                (q - 8.0) * d
            })
            .collect()
    }

    #[test]
    fn exact_4bit_blocks_are_recovered_and_anything_else_refused() {
        let weights = exact_4bit_weights(1, 32 * 13);
        for block in weights.chunks_exact(32) {
            let (d, q) = exact_q4(block).expect("an exact block");
            for (&v, &q) in block.iter().zip(&q) {
                assert_eq!((q as f32 - 8.0) * d, v);
            }
        }
        // A block whose largest value is +7 steps (not GGML's -8) is found too.
        let d = f16::from_f32(0.0123).to_f32();
        let block: Vec<f32> = (0..32).map(|i| ((i % 15) as f32 - 7.0) * d).collect();
        assert!(block.contains(&(7.0 * d)));
        assert!(exact_q4(&block).is_some());
        assert_eq!(exact_q4(&[0.0; 32]), Some((0.0, [8; 32])));
        // Zeros keep their sign: `0 · d` is -0 for a negative `d`.
        let d = f16::from_f32(-0.02).to_f32();
        let signed: Vec<f32> = (0..32).map(|i| ((i % 16) as f32 - 8.0) * d).collect();
        let (found, q) = exact_q4(&signed).expect("an exact block");
        for (&v, &q) in signed.iter().zip(&q) {
            assert_eq!(((q as f32 - 8.0) * found).to_bits(), v.to_bits());
        }
        let mut mixed = [0.0f32; 32];
        mixed[3] = -0.0;
        assert_eq!(exact_q4(&mixed), None);
        // One value a step of f32 off, or a scale that is no half float: not 4-bit.
        let mut off = weights[..32].to_vec();
        off[5] = f32::from_bits(off[5].to_bits() + 1);
        assert_eq!(exact_q4(&off), None);
        let scaled: Vec<f32> = block.iter().map(|v| v * 1.000_001).collect();
        assert_eq!(exact_q4(&scaled), None);
    }

    #[test]
    fn exact_4bit_embedding_tables_are_packed_and_read_back_exactly() {
        let width = 64;
        let values = exact_4bit_weights(5, width);
        let table = Table::new(values.clone(), width);
        assert!(matches!(table, Table::Q4 { .. }));
        assert_eq!(table.rows(width), 5);
        assert!(table.bytes() * 6 < values.len() * 4);
        for row in 0..5 {
            let mut out = vec![0.0f32; width];
            add_table_row(&table, &mut out, row, "token id").unwrap();
            assert_eq!(out, values[row * width..(row + 1) * width]);
        }
        let mut out = vec![0.0f32; width];
        let err = add_table_row(&table, &mut out, 5, "token id").unwrap_err();
        assert!(err.to_string().contains("token id 5"), "{err}");
        // One value off: kept as f32.
        let mut off = values;
        off[70] += 1e-3;
        assert!(matches!(Table::new(off, width), Table::Dense(_)));
    }

    #[test]
    #[should_panic(expected = "lhs too small")]
    fn a_product_past_its_operand_panics_instead_of_reading_out_of_bounds() {
        let mut dst = vec![0.0f32; 4];
        Product { m: 2, n: 2, k: 3 }.run(&mut dst, 2, (&[1.0; 5], 3, 1), (&[1.0; 6], 2, 1), false);
    }
}
