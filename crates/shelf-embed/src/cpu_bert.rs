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

/// Outputs per panel of the linear layers' weight layout (two AVX-512 registers of f32).
const PANEL: usize = 32;

/// Tokens per thread's share of a large batch's panel product: 96 rows of 1,536 inputs
/// (590 KiB) and a panel of them (192 KiB) fit in a 1 MiB L2 cache together.
const ROW_BLOCK: usize = 96;

/// Tokens whose sums a panel product keeps in registers at once: 12 × 2 AVX-512 registers
/// of the 32, or 3 × 4 AVX2 registers of the 16.
fn panel_tile_tokens() -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return 12;
    }
    3
}

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

/// The encoder's weights, laid out for this forward pass.
pub(crate) struct CpuBert {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
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

struct Linear {
    inputs: usize,
    outputs: usize,
    weights: Weights,
    bias: Vec<f32>,
}

enum Weights {
    /// In panels of `PANEL` outputs, each `inputs × PANEL` contiguous, row-major (the last
    /// panel padded with zeros).
    ///
    /// A product of a few tokens reads every weight once, so its speed is how fast the
    /// weights stream in. Transposed (`inputs × outputs`), as gemm took them, a product walks
    /// 64 columns at a time down all the rows, a new 4 KiB page every 256 bytes; in a virtual
    /// machine each TLB miss is a two-level page walk. A panel is one contiguous run that the
    /// prefetchers follow. Measured on a 2-core AMD EPYC (AVX-512), release: one short query
    /// 7.3 → 2.9 ms; four titles 1.4x gemm's sentences/s; 32 titles or descriptions on par.
    Dense(Vec<f32>),
    /// The same panels with each weight a half float (IEEE binary16), widened to f32 as it
    /// is read; sums stay f32. Half the bytes to stream per product.
    Half(Vec<f16>),
    /// Row `o` holds output `o`'s `inputs / 32` blocks.
    Q8(Vec<BlockQ8_0>),
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

/// Named tensors of a checkpoint, looked up with or without the `bert.` style prefix and
/// under either layer-norm naming (`weight`/`bias` or `gamma`/`beta`).
struct Checkpoint {
    tensors: HashMap<String, Tensor>,
    prefix: String,
}

impl Checkpoint {
    fn new(tensors: HashMap<String, Tensor>, model_type: Option<&str>) -> Self {
        let prefix = match model_type {
            Some(t) if !tensors.contains_key("embeddings.word_embeddings.weight") => {
                format!("{t}.")
            }
            _ => String::new(),
        };
        Self { tensors, prefix }
    }

    fn get(&self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>, String> {
        let found = names.iter().find_map(|name| {
            let full = format!("{}{name}", self.prefix);
            self.tensors.get(&full).map(|t| (full, t))
        });
        let Some((name, tensor)) = found else {
            return Err(format!("tensor {}{} not found", self.prefix, names[0]));
        };
        if tensor.dims() != shape {
            return Err(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                tensor.dims()
            ));
        }
        tensor
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| format!("tensor {name}: {e}"))
    }

    fn layer_norm(&self, path: &str, size: usize) -> Result<LayerNorm, String> {
        Ok(LayerNorm {
            weight: self.get(
                &[&format!("{path}.weight"), &format!("{path}.gamma")],
                &[size],
            )?,
            bias: self.get(&[&format!("{path}.bias"), &format!("{path}.beta")], &[size])?,
        })
    }

    /// A linear layer's weight (`outputs × inputs`, as stored) and bias.
    fn linear_parts(
        &self,
        path: &str,
        inputs: usize,
        outputs: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), String> {
        Ok((
            self.get(&[&format!("{path}.weight")], &[outputs, inputs])?,
            self.get(&[&format!("{path}.bias")], &[outputs])?,
        ))
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
                let word = table_row(&self.word, hidden, id as usize, "token id")?;
                let pos = table_row(&self.position, hidden, position, "position")?;
                let kind = table_row(&self.token_type, hidden, kind as usize, "token type")?;
                let row = out.next().expect("x holds one row per token");
                for (((o, w), p), k) in row.iter_mut().zip(word).zip(pos).zip(kind) {
                    *o = w + p + k;
                }
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

/// Row `id` of an embedding table, or an error naming what was out of range.
fn table_row<'a>(
    table: &'a [f32],
    width: usize,
    id: usize,
    what: &str,
) -> Result<&'a [f32], EmbedError> {
    table.get(id * width..(id + 1) * width).ok_or_else(|| {
        EmbedError::TokenizerMismatch(format!(
            "{what} {id} is outside the model's table of {} rows",
            table.len() / width
        ))
    })
}

/// `weight` (`outputs × inputs`, as stored) in panels of `PANEL` outputs (see
/// `Weights::Dense`).
fn to_panels(weight: &[f32], inputs: usize) -> Vec<f32> {
    let outputs = weight.len() / inputs;
    let mut panels = vec![0.0; inputs * outputs.div_ceil(PANEL) * PANEL];
    for (o, row) in weight.chunks_exact(inputs).enumerate() {
        let panel = &mut panels[(o / PANEL) * inputs * PANEL..];
        for (i, &w) in row.iter().enumerate() {
            panel[i * PANEL + o % PANEL] = w;
        }
    }
    panels
}

impl Linear {
    fn new(
        inputs: usize,
        outputs: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        q: Quantization,
    ) -> Self {
        let weights = match q {
            Quantization::Q8 if inputs.is_multiple_of(BlockQ8_0::BLCK_SIZE) => {
                let mut blocks = vec![BlockQ8_0::zeros(); outputs * inputs / BlockQ8_0::BLCK_SIZE];
                BlockQ8_0::from_float(&weight, &mut blocks);
                Weights::Q8(blocks)
            }
            Quantization::F16 => {
                let panels = to_panels(&weight, inputs);
                Weights::Half(panels.into_iter().map(f16::from_f32).collect())
            }
            // Q8 needs whole blocks along the input; other layers stay f32.
            _ => Weights::Dense(to_panels(&weight, inputs)),
        };
        Self {
            inputs,
            outputs,
            weights,
            bias,
        }
    }

    /// `out = x·Wᵀ + bias`, or `out += x·Wᵀ + bias` with `accumulate` (the residual already
    /// in `out`). `x` is `rows × inputs`, `out` is `rows × outputs`.
    fn forward(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
        accumulate: bool,
        product: &mut Vec<f32>,
    ) {
        let (n, k) = (self.outputs, self.inputs);
        let out = &mut out[..rows * n];
        let start_with_bias = |out: &mut [f32]| {
            rows_par(out, n, |rows| {
                for row in rows.chunks_exact_mut(n) {
                    if accumulate {
                        row.iter_mut().zip(&self.bias).for_each(|(o, b)| *o += b);
                    } else {
                        row.copy_from_slice(&self.bias);
                    }
                }
            })
        };
        let parallel = rows >= PARALLEL_MIN_TOKENS;
        match &self.weights {
            Weights::Dense(panels) => {
                start_with_bias(out);
                panel_product(&x[..rows * k], k, panels, out, n, parallel, product);
            }
            Weights::Half(panels) => {
                start_with_bias(out);
                panel_product(&x[..rows * k], k, panels, out, n, parallel, product);
            }
            Weights::Q8(blocks) => {
                product.resize(rows * n, 0.0);
                k_quants::matmul((rows, k, n), &x[..rows * k], blocks, product)
                    .expect("shapes are checked at load");
                let product = &product[..rows * n];
                out.par_chunks_mut(n)
                    .zip(product.par_chunks(n))
                    .with_min_len(64)
                    .for_each(|(o, p)| {
                        for ((o, p), b) in o.iter_mut().zip(p).zip(&self.bias) {
                            *o = if accumulate { *o + p + b } else { p + b };
                        }
                    });
            }
        }
    }
}

/// One matrix product `dst (m × n) [+]= lhs (m × k) · rhs (k × n)`, with each operand given
/// as (slice, row stride, column stride) and `dst` row-major with its own row stride.
#[derive(Clone, Copy)]
struct Product {
    m: usize,
    n: usize,
    k: usize,
}

impl Product {
    /// The furthest element (plus one) a `rows × cols` view with these strides touches.
    fn extent(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
        (rows - 1) * row_stride + (cols - 1) * col_stride + 1
    }

    /// Runs the product with gemm on the calling thread (attention's products are small;
    /// the heads run in parallel instead).
    #[allow(unsafe_code)]
    fn run(
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
fn panel_product<W: PanelWeight>(
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
trait PanelWeight: Copy + Send + Sync {
    /// One panel times every token of `x`: adds the first `columns` of each token's `PANEL`
    /// sums to its row of `out` (row stride `stride`).
    fn tiles(x: &[f32], k: usize, panel: &[Self], out: &mut [f32], stride: usize, columns: usize);
}

impl PanelWeight for f32 {
    fn tiles(x: &[f32], k: usize, panel: &[f32], out: &mut [f32], stride: usize, columns: usize) {
        panel_tiles(x, k, panel, out, stride, columns);
    }
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
fn half_tiles_avx512(
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
fn half_tile_avx512<const T: usize>(
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

/// `half_tile_avx2::<T>` over every token of `x`, 3 at a time (12 of the 16 registers hold
/// sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn half_tiles_avx2(
    x: &[f32],
    k: usize,
    panel: &[f16],
    out: &mut [f32],
    stride: usize,
    columns: usize,
) {
    for_each_tile(x, k, out, stride, 3, |size, x, out| match size {
        1 => half_tile_avx2::<1>(x, panel, out, stride, columns),
        2 => half_tile_avx2::<2>(x, panel, out, stride, columns),
        _ => half_tile_avx2::<3>(x, panel, out, stride, columns),
    });
}

/// `half_tile_avx512` with AVX2: four registers of 8 sums per token.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(unsafe_code)]
fn half_tile_avx2<const T: usize>(
    x: &[f32],
    panel: &[f16],
    out: &mut [f32],
    n: usize,
    columns: usize,
) {
    use std::arch::x86_64::*;
    let k = panel.len() / PANEL;
    assert!(x.len() >= T * k, "x holds T rows of k inputs");
    let mut sums = [[_mm256_setzero_ps(); 4]; T];
    for (i, w) in panel.chunks_exact(PANEL).enumerate() {
        // SAFETY: `w` is 32 half floats (64 bytes); unaligned loads of 8 each.
        let w = unsafe {
            let w = w.as_ptr().cast::<__m128i>();
            [0, 1, 2, 3].map(|j| _mm256_cvtph_ps(_mm_loadu_si128(w.add(j))))
        };
        for (t, sum) in sums.iter_mut().enumerate() {
            // SAFETY: as in `half_tile_avx512`.
            let b = _mm256_set1_ps(unsafe { *x.get_unchecked(t * k + i) });
            for (s, w) in sum.iter_mut().zip(w) {
                *s = _mm256_fmadd_ps(w, b, *s);
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

/// One panel times every token of `x`, `panel_tile_tokens()` at a time: adds the first
/// `columns` of each token's `PANEL` sums to its row of `out` (row stride `stride`).
fn panel_tiles(x: &[f32], k: usize, panel: &[f32], out: &mut [f32], stride: usize, columns: usize) {
    for_each_tile(x, k, out, stride, panel_tile_tokens(), |size, x, out| {
        with_tile_size!(size, panel_tile(x, panel, out, stride, columns))
    });
}

/// Walks the tokens of `x` (rows of `k` inputs) in tiles of at most `most`, calling
/// `tile(size, the tile's rows of x, out from the tile's first row)`.
fn for_each_tile(
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

/// One panel times `T` tokens' rows of `x`: `T × PANEL` sums held in registers while the
/// panel streams past once; the first `columns` of each are added to `out`'s rows.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
#[allow(unsafe_code)]
fn panel_tile<const T: usize>(x: &[f32], panel: &[f32], out: &mut [f32], n: usize, columns: usize) {
    let k = panel.len() / PANEL;
    assert!(x.len() >= T * k, "x holds T rows of k inputs");
    // Fused multiply-adds where the CPU has them; without, `mul_add` would be a libm call.
    let fused = selected_target!().supports_feature_str("fma");
    let mut sums = [[0.0f32; PANEL]; T];
    for (i, w) in panel.chunks_exact(PANEL).enumerate() {
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

// The vector kernels below are compiled once per instruction set and picked at run time
// (multiversion), so the loops vectorise with AVX-512 or AVX2+FMA where the CPU has them
// while the binary still runs on any x86-64. Everything they call is `inline(always)`, so it
// is compiled into each version.

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn layer_norm(rows: &mut [f32], width: usize, weight: &[f32], bias: &[f32], eps: f32) {
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
fn gelu_erf_all(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = gelu_erf(*v));
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn gelu_tanh_all(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = gelu_tanh(*v));
}

fn activate(x: &mut [f32], activation: HiddenAct) {
    rows_par(x, 256, |chunk| match activation {
        HiddenAct::Gelu => gelu_erf_all(chunk),
        HiddenAct::GeluApproximate => gelu_tanh_all(chunk),
        HiddenAct::Relu => chunk.iter_mut().for_each(|v| *v = v.max(0.0)),
    });
}

/// Sixteen running sums, so the compiler can keep them in vector registers.
#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
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
fn sum_sq_dev(xs: &[f32], mean: f32) -> f32 {
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
fn max(xs: &[f32]) -> f32 {
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
fn softmax_rows(rows: &mut [f32], width: usize) {
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
fn exp(x: f32) -> f32 {
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
fn gelu_erf(x: f32) -> f32 {
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
fn gelu_tanh(x: f32) -> f32 {
    let inner = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    // tanh(u) = 1 - 2/(e^{2u} + 1)
    let tanh = 1.0 - 2.0 / (exp(2.0 * inner) + 1.0);
    0.5 * x * (1.0 + tanh)
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
        // Outputs not a multiple of PANEL (a partial last panel); token counts on both sides
        // of every tile size and of the parallel thresholds (by panels, by row blocks).
        let (inputs, outputs) = (48, 70);
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

    #[test]
    #[should_panic(expected = "lhs too small")]
    fn a_product_past_its_operand_panics_instead_of_reading_out_of_bounds() {
        let mut dst = vec![0.0f32; 4];
        Product { m: 2, n: 2, k: 3 }.run(&mut dst, 2, (&[1.0; 5], 3, 1), (&[1.0; 6], 2, 1), false);
    }
}
