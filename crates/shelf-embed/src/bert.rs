//! The BERT sentence encoder: loading config, tokenizer and weights, and the batched
//! forward pass with mean pooling and L2 normalisation: shelf's own on the CPU
//! ([`crate::cpu_bert`]), candle's on CUDA.

use crate::config::{DevicePreference, EmbedConfig, Padding, Quantization};
use crate::cpu_bert::CpuBert;
use crate::locate::check_model_dir;
use crate::sentence_config::{check_mean_pooling, Prompts};
use crate::EmbedError;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use shelf_types::TextRole;
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Truncation length used when neither the caller nor the model directory says otherwise
/// (sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2).
const DEFAULT_MAX_TOKENS: usize = 256;

/// A loaded BERT model with its tokenizer. Synchronous and compute-bound: run it on a
/// dedicated thread ([`crate::Embedder`] does), never on an async runtime's workers.
pub struct SentenceEncoder {
    model: Model,
    tokenizer: Tokenizer,
    device: Device,
    config: EmbedConfig,
    max_tokens: usize,
    dim: usize,
    pad_id: u32,
    model_id: String,
    prompts: Prompts,
}

/// The forward pass in use: shelf's ragged one on the CPU, candle's padded one elsewhere.
enum Model {
    Cpu(CpuBert),
    Candle(BertModel),
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("model_id", &self.model_id)
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl SentenceEncoder {
    /// Loads config.json, tokenizer.json and model.safetensors from `dir`.
    pub fn load(dir: &Path, config: EmbedConfig) -> Result<Self, EmbedError> {
        config.validate()?;
        check_model_dir(dir)?;
        check_mean_pooling(dir)?;
        let mut prompts = Prompts::read(dir)?;
        if let Some(p) = &config.query_prompt {
            prompts.query.clone_from(p);
        }
        if let Some(p) = &config.document_prompt {
            prompts.document.clone_from(p);
        }
        let bert_config = read_bert_config(&dir.join("config.json"))?;
        let max_tokens = resolve_max_tokens(dir, &config, &bert_config)?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"), max_tokens)?;
        let device = select_device(config.device)?;

        let weights_path = dir.join("model.safetensors");
        let weights_err = |reason: String| EmbedError::Weights {
            path: weights_path.clone(),
            reason,
        };
        let tensors = candle_core::safetensors::load(&weights_path, &device)
            .map_err(|e| weights_err(e.to_string()))?;
        let half_floats = device.is_cpu() && crate::cpu_bert::widens_half_floats();
        let quantization = match config.quantization {
            Quantization::Auto if half_floats => Quantization::F16,
            Quantization::Auto => Quantization::None,
            Quantization::F16 if device.is_cpu() && !half_floats => {
                tracing::warn!(
                    "this CPU cannot widen half floats in its vector registers (needs AVX2, FMA \
                     and F16C, or AVX-512); the weights stay f32"
                );
                Quantization::None
            }
            chosen => chosen,
        };
        let model = if device.is_cpu() {
            Model::Cpu(CpuBert::load(tensors, &bert_config, quantization).map_err(weights_err)?)
        } else if quantization != Quantization::None {
            return Err(EmbedError::InvalidConfigValue(format!(
                "quantization {} runs on the CPU only; use --device cpu, or auto or none",
                quantization.name()
            )));
        } else {
            let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
            Model::Candle(
                BertModel::load(vb, &bert_config).map_err(|e| weights_err(e.to_string()))?,
            )
        };

        let model_id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        tracing::info!(
            model = %model_id, dir = %dir.display(), dim = bert_config.hidden_size,
            max_tokens, device = ?device, quantization = quantization.name(),
            query_prompt = %prompts.query, document_prompt = %prompts.document,
            "loaded sentence encoder"
        );
        Ok(Self {
            model,
            tokenizer,
            device,
            config: EmbedConfig {
                quantization,
                ..config
            },
            max_tokens,
            dim: bert_config.hidden_size,
            pad_id: u32::try_from(bert_config.pad_token_id).unwrap_or(0),
            model_id,
            prompts,
        })
    }

    /// Output dimension (384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Token sequences are truncated to this length, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Name of the model (its directory name).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The prompts put in front of queries and documents ([`SentenceEncoder::embed_as`]).
    pub fn prompts(&self) -> &Prompts {
        &self.prompts
    }

    /// [`SentenceEncoder::embed`] with the model's prompt for `role` in front of each text.
    /// Emptiness and length are checked on the texts as given.
    pub fn embed_as<S: AsRef<str>>(
        &self,
        role: TextRole,
        texts: &[S],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.validate_texts(texts)?;
        let prompt = self.prompts.for_role(role);
        if prompt.is_empty() {
            return self.embed_checked(texts);
        }
        let prompted: Vec<String> = texts
            .iter()
            .map(|t| format!("{prompt}{}", t.as_ref()))
            .collect();
        self.embed_checked(&prompted)
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// How the linear layers' weights are held (`Auto` resolved at load).
    pub fn quantization(&self) -> Quantization {
        self.config.quantization
    }

    /// Token ids of `text` as the model sees them (special tokens, truncation applied).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenize {
                index: 0,
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Checks inputs without running the model: every text non-empty and within the byte limit.
    pub fn validate_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<(), EmbedError> {
        for (index, text) in texts.iter().enumerate() {
            let text = text.as_ref();
            if text.len() > self.config.max_text_bytes {
                return Err(EmbedError::TextTooLong {
                    index,
                    bytes: text.len(),
                    max_bytes: self.config.max_text_bytes,
                });
            }
            if text.trim().is_empty() {
                return Err(EmbedError::EmptyText { index });
            }
        }
        Ok(())
    }

    /// Embeds `texts`, returning one L2-normalised vector per text in input order.
    ///
    /// Texts are sorted by token length and cut into batches of `batch_size`. On the CPU
    /// nothing is padded; on CUDA each batch pads to its own longest sequence.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.validate_texts(texts)?;
        self.embed_checked(texts)
    }

    /// Tokenises, sorts by length, runs the model batch by batch (texts already checked).
    pub(crate) fn embed_checked<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut seqs = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let enc =
                self.tokenizer
                    .encode(text.as_ref(), true)
                    .map_err(|e| EmbedError::Tokenize {
                        index,
                        reason: e.to_string(),
                    })?;
            seqs.push((enc.get_ids().to_vec(), enc.get_type_ids().to_vec()));
        }
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].0.len());

        let mut out = vec![Vec::new(); seqs.len()];
        for chunk in order.chunks(self.config.batch_size) {
            let batch: Vec<_> = chunk.iter().map(|&i| &seqs[i]).collect();
            let vectors = match &self.model {
                Model::Cpu(model) => model.embed(&batch)?,
                Model::Candle(model) => self.forward_padded(model, &batch)?,
            };
            for (&i, vector) in chunk.iter().zip(vectors) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    /// One forward pass of candle's BERT over a batch of (ids, type ids), padded here, pooled
    /// and normalised.
    fn forward_padded(
        &self,
        model: &BertModel,
        batch: &[&(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let longest = batch.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let len = match self.config.padding {
            Padding::BatchLongest => longest,
            Padding::Fixed(n) => n.max(longest),
        };
        let n = batch.len();
        let mut ids = vec![self.pad_id; n * len];
        let mut type_ids = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (row, (seq_ids, seq_types)) in batch.iter().enumerate() {
            let start = row * len;
            ids[start..start + seq_ids.len()].copy_from_slice(seq_ids);
            type_ids[start..start + seq_types.len()].copy_from_slice(seq_types);
            mask[start..start + seq_ids.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let type_ids = Tensor::from_vec(type_ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;

        let hidden = model.forward(&ids, &type_ids, Some(&mask))?; // (n, len, dim)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (n, dim)
        let counts = mask.sum(1)?; // (n, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}

fn read_bert_config(path: &Path) -> Result<BertConfig, EmbedError> {
    let invalid = |reason: String| EmbedError::InvalidConfig {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let model_type = value.get("model_type").and_then(|v| v.as_str());
    let bert_arch = value
        .get("architectures")
        .and_then(|a| a.as_array())
        .is_some_and(|a| {
            a.iter()
                .any(|x| x.as_str().is_some_and(|s| s.starts_with("Bert")))
        });
    match model_type {
        Some("bert") => {}
        None if bert_arch => {}
        other => {
            return Err(EmbedError::NotBert {
                path: path.to_path_buf(),
                model_type: other.unwrap_or("(none)").to_owned(),
            })
        }
    }
    let config: BertConfig = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    if config.hidden_size == 0 || config.num_attention_heads == 0 {
        return Err(invalid(
            "hidden_size and num_attention_heads must be positive".into(),
        ));
    }
    Ok(config)
}

/// The truncation length: explicit, else sentence_bert_config.json, else 256; never more
/// than the model's position embeddings.
fn resolve_max_tokens(
    dir: &Path,
    config: &EmbedConfig,
    bert: &BertConfig,
) -> Result<usize, EmbedError> {
    let limit = bert.max_position_embeddings;
    if let Some(n) = config.max_tokens {
        if n > limit {
            return Err(EmbedError::InvalidConfigValue(format!(
                "max_tokens {n} exceeds the model's max_position_embeddings {limit}"
            )));
        }
        return Ok(n);
    }
    let st_config: PathBuf = dir.join("sentence_bert_config.json");
    let from_file = std::fs::read_to_string(&st_config)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("max_seq_length").and_then(|n| n.as_u64()))
        .and_then(|n| usize::try_from(n).ok());
    Ok(from_file.unwrap_or(DEFAULT_MAX_TOKENS).clamp(3, limit))
}

/// Loads tokenizer.json and replaces its padding and truncation with ours.
fn load_tokenizer(path: &Path, max_tokens: usize) -> Result<Tokenizer, EmbedError> {
    let err = |reason: String| EmbedError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| err(e.to_string()))?;
    Ok(tokenizer)
}

fn select_device(pref: DevicePreference) -> Result<Device, EmbedError> {
    let unavailable = |requested: String, e: candle_core::Error| EmbedError::Device {
        requested,
        reason: if cfg!(feature = "cuda") {
            e.to_string()
        } else {
            format!("{e} (shelf was built without the `cuda` feature)")
        },
    };
    match pref {
        DevicePreference::Cpu => Ok(Device::Cpu),
        // `auto` never fails: without a usable GPU it runs on the CPU and says why, once.
        DevicePreference::Auto if !cfg!(feature = "cuda") => {
            tracing::info!(
                "device auto: running on the CPU (shelf was built without the `cuda` feature)"
            );
            Ok(Device::Cpu)
        }
        DevicePreference::Auto => match Device::new_cuda(0) {
            Ok(device) => Ok(device),
            Err(e) => {
                tracing::warn!(error = %e, "device auto: no usable CUDA GPU; running on the CPU");
                Ok(Device::Cpu)
            }
        },
        DevicePreference::Cuda(ordinal) => {
            Device::new_cuda(ordinal).map_err(|e| unavailable(format!("cuda:{ordinal}"), e))
        }
    }
}
