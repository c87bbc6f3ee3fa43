//! The checkpoint as this forward pass holds it: tensors looked up by name, embedding rows
//! (see `table`), and each linear layer's weights laid out once in panels of `PANEL` outputs.

use super::*;

pub(super) struct Linear {
    pub(super) inputs: usize,
    pub(super) outputs: usize,
    pub(super) weights: Weights,
    pub(super) bias: Vec<f32>,
}

pub(super) enum Weights {
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

/// Named tensors of a checkpoint, looked up with or without the `bert.` style prefix and
/// under either layer-norm naming (`weight`/`bias` or `gamma`/`beta`).
pub(super) struct Checkpoint {
    pub(super) tensors: HashMap<String, Tensor>,
    pub(super) prefix: String,
}

impl Checkpoint {
    pub(super) fn new(tensors: HashMap<String, Tensor>, model_type: Option<&str>) -> Self {
        let prefix = match model_type {
            Some(t) if !tensors.contains_key("embeddings.word_embeddings.weight") => {
                format!("{t}.")
            }
            _ => String::new(),
        };
        Self { tensors, prefix }
    }

    pub(super) fn get(&self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>, String> {
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

    pub(super) fn layer_norm(&self, path: &str, size: usize) -> Result<LayerNorm, String> {
        Ok(LayerNorm {
            weight: self.get(
                &[&format!("{path}.weight"), &format!("{path}.gamma")],
                &[size],
            )?,
            bias: self.get(&[&format!("{path}.bias"), &format!("{path}.beta")], &[size])?,
        })
    }

    /// A linear layer's weight (`outputs × inputs`, as stored) and bias.
    pub(super) fn linear_parts(
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

/// Adds row `id` of an embedding table to `out`, or an error naming what was out of range.
pub(super) fn add_table_row(
    table: &Table,
    out: &mut [f32],
    id: usize,
    what: &str,
) -> Result<(), EmbedError> {
    let rows = table.rows(out.len());
    if id >= rows {
        return Err(EmbedError::TokenizerMismatch(format!(
            "{what} {id} is outside the model's table of {rows} rows"
        )));
    }
    table.add_row(id, out);
    Ok(())
}

/// `weight` (`outputs × inputs`, as stored) in panels of `PANEL` outputs (see
/// `Weights::Dense`).
pub(super) fn to_panels(weight: &[f32], inputs: usize) -> Vec<f32> {
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
    pub(super) fn new(
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
    pub(super) fn forward(
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
