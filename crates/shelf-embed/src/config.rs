//! Embedding settings: truncation, padding, batch size, input limits and device.

use crate::EmbedError;
use std::str::FromStr;

/// How token sequences of one batch are padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Pad each batch to its longest sequence (what sentence-transformers does).
    /// Batches are grouped by length, so little is padded.
    BatchLongest,
    /// Pad every sequence to this many tokens (the packaged tokenizer.json asks for 128;
    /// results are the same, only slower).
    Fixed(usize),
}

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DevicePreference {
    /// The first CUDA GPU when the `cuda` feature is built and a GPU is present, else CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The CUDA GPU with this ordinal (needs the `cuda` feature).
    Cuda(usize),
}

impl FromStr for DevicePreference {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device `{other}`; use auto, cpu, cuda or cuda:N")),
        }
    }
}

/// How the weights of the encoder's linear layers are held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quantization {
    /// `F16` on a CPU that widens half floats in its vector registers (x86-64 with AVX2, FMA
    /// and F16C, or AVX-512), else `None`; `None` on CUDA.
    #[default]
    Auto,
    /// 32-bit floats, as stored: the reference vectors are reproduced to cosine 0.9999.
    None,
    /// Weights stored as 16-bit floats, widened to 32 bits as they are read; every sum and
    /// activation stays 32-bit. Half the weight bytes to stream per product; the reference
    /// vectors are still reproduced to cosine 0.9999. CPU only.
    F16,
    /// 8-bit integers in blocks of 32 with one scale each (GGML's Q8_0); activations are
    /// quantised the same way on the fly. Faster matrix products, slightly different vectors.
    /// CPU only.
    Q8,
}

impl Quantization {
    /// The name `FromStr` reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::None => "none",
            Self::F16 => "f16",
            Self::Q8 => "q8",
        }
    }
}

impl FromStr for Quantization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "none" | "off" | "f32" => Ok(Self::None),
            "f16" => Ok(Self::F16),
            "q8" => Ok(Self::Q8),
            other => Err(format!(
                "unknown quantization `{other}`; use auto, none, f16 or q8"
            )),
        }
    }
}

/// Settings of a [`crate::SentenceEncoder`].
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedConfig {
    /// Truncate token sequences (special tokens included) to this length. `None` takes
    /// `max_seq_length` from the model's sentence_bert_config.json, else 256, capped at the
    /// model's `max_position_embeddings`. The packaged tokenizer.json's own truncation (128)
    /// is always replaced by this.
    pub max_tokens: Option<usize>,
    /// Padding of batched sequences. The tokenizer.json's own padding is always removed.
    pub padding: Padding,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Longest accepted text in bytes; longer ones are rejected, not silently cut.
    pub max_text_bytes: usize,
    /// Where to run the model.
    pub device: DevicePreference,
    /// Precision of the linear layers' weights (CPU only).
    pub quantization: Quantization,
    /// How long the [`crate::Embedder`] worker may hold a pass open for more requests, once
    /// requests have started to queue behind each other: it waits until `batch_size` texts
    /// are queued or this much time has passed. Zero (the default) never waits; at low load
    /// it never waits either, so a lone query pays nothing.
    pub batch_wait: std::time::Duration,
    /// Prompt in front of queries; `None` takes the model directory's
    /// (config_sentence_transformers.json), else none.
    pub query_prompt: Option<String>,
    /// Prompt in front of item texts; `None` takes the model directory's, else none.
    pub document_prompt: Option<String>,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            max_tokens: None,
            padding: Padding::BatchLongest,
            batch_size: 32,
            max_text_bytes: 256 * 1024,
            device: DevicePreference::Auto,
            quantization: Quantization::Auto,
            batch_wait: std::time::Duration::ZERO,
            query_prompt: None,
            document_prompt: None,
        }
    }
}

impl EmbedConfig {
    /// Checks ranges; called when an encoder is built.
    pub fn validate(&self) -> Result<(), EmbedError> {
        let bad = |m: String| Err(EmbedError::InvalidConfigValue(m));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if let Some(n) = self.max_tokens {
            if n < 3 {
                return bad(format!("max_tokens must be at least 3 (got {n})"));
            }
        }
        if let Padding::Fixed(n) = self.padding {
            if n == 0 {
                return bad("fixed padding length must be at least 1".into());
            }
        }
        if self.batch_wait > std::time::Duration::from_secs(1) {
            return bad(format!(
                "batch_wait must be at most 1 s (got {:?})",
                self.batch_wait
            ));
        }
        if self.max_text_bytes == 0 {
            return bad("max_text_bytes must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("auto".parse(), Ok(DevicePreference::Auto));
        assert_eq!("cpu".parse(), Ok(DevicePreference::Cpu));
        assert_eq!("cuda".parse(), Ok(DevicePreference::Cuda(0)));
        assert_eq!("cuda:2".parse(), Ok(DevicePreference::Cuda(2)));
        assert!("tpu".parse::<DevicePreference>().is_err());
    }

    #[test]
    fn rejects_out_of_range_values() {
        let cfg = EmbedConfig {
            batch_size: 0,
            ..Default::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = EmbedConfig {
            max_tokens: Some(1),
            ..Default::default()
        };
        assert!(cfg.validate().is_err());
        assert!(EmbedConfig::default().validate().is_ok());
    }
}
