//! Flags that choose and configure the embedding model, shared by every subcommand that embeds.

use anyhow::Context;
use clap::Args;
use shelf_embed::{DevicePreference, EmbedConfig, Embedder, ModelLocator, Padding, Quantization};
use std::path::PathBuf;

/// Where the model is and how it runs.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model directory with config.json, tokenizer.json and model.safetensors. When set, it is
    /// the only place looked at.
    #[arg(long, env = "SHELF_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

    /// shelf's model cache, searched when --model-dir is not set
    /// [default: $XDG_CACHE_HOME/shelf/models or ~/.cache/shelf/models].
    #[arg(long, env = "SHELF_MODEL_CACHE")]
    pub model_cache: Option<PathBuf>,

    /// Model name: its directory inside the cache. `scripts/fetch-model.sh NAME` installs
    /// all-MiniLM-L6-v2 (English) or multilingual-e5-small (~100 languages).
    #[arg(long, env = "SHELF_MODEL_NAME", default_value = shelf_embed::DEFAULT_MODEL_NAME)]
    pub model_name: String,

    /// Hugging Face model id, downloaded when nothing local is found (needs a build with
    /// the `hub` feature and internet access) [default: the id of a known --model-name].
    #[arg(long, env = "SHELF_MODEL_ID")]
    pub model_id: Option<String>,

    /// Prompt put in front of every search text before it is embedded
    /// [default: the model directory's config_sentence_transformers.json `prompts.query`,
    /// else none; multilingual-e5: `query: `].
    #[arg(long, env = "SHELF_QUERY_PROMPT")]
    pub query_prompt: Option<String>,

    /// Prompt put in front of every item text before it is embedded [default: the model
    /// directory's `prompts.document` or `prompts.passage`, else none; multilingual-e5:
    /// `passage: `].
    #[arg(long, env = "SHELF_DOCUMENT_PROMPT")]
    pub document_prompt: Option<String>,

    /// Device: auto (CUDA GPU 0 when built with `cuda` and present, else CPU), cpu, cuda, cuda:N.
    #[arg(long, env = "SHELF_DEVICE", default_value = "auto")]
    pub device: DevicePreference,

    /// Truncate texts to this many tokens, special tokens included
    /// [default: the model's sentence_bert_config.json max_seq_length, else 256].
    #[arg(long, env = "SHELF_MAX_TOKENS")]
    pub max_tokens: Option<usize>,

    /// On CUDA, pad each batch to its longest text (`longest`), or every text to N tokens
    /// (`fixed:N`). The CPU forward pass never pads; the vectors are the same either way.
    #[arg(long, env = "SHELF_PADDING", default_value = "longest", value_parser = parse_padding)]
    pub padding: Padding,

    /// Weights of the linear layers: `none` (32-bit floats, as trained), `f16` (16-bit floats,
    /// widened as they are read; sums stay 32-bit; cosine to the f32 vectors ≥ 0.9999), `q8`
    /// (8-bit blocks, GGML's Q8_0; cosine ≥ 0.995), or `auto`: f16 on a CPU with AVX2, FMA
    /// and F16C or with AVX-512, none elsewhere and on CUDA. f16 and q8 run on the CPU only.
    /// The model id stays the same, so vectors of every setting can share an index.
    #[arg(long, env = "SHELF_QUANTIZE", default_value = "auto")]
    pub quantize: Quantization,

    /// Longest accepted text in bytes; longer texts are rejected with an error.
    #[arg(long, env = "SHELF_MAX_TEXT_BYTES", default_value_t = 256 * 1024)]
    pub max_text_bytes: usize,
}

impl ModelArgs {
    /// Finds the model and starts its worker thread.
    pub fn start(&self, batch_size: usize) -> anyhow::Result<Embedder> {
        self.start_waiting(batch_size, std::time::Duration::ZERO)
    }

    /// [`ModelArgs::start`] with a bounded wait for more requests once they queue up
    /// (`EmbedConfig::batch_wait`).
    pub fn start_waiting(
        &self,
        batch_size: usize,
        batch_wait: std::time::Duration,
    ) -> anyhow::Result<Embedder> {
        let mut locator = ModelLocator {
            explicit: self.model_dir.clone(),
            name: self.model_name.clone(),
            hub_id: self
                .model_id
                .clone()
                .or_else(|| shelf_embed::hub_id_of(&self.model_name).map(str::to_owned)),
            ..ModelLocator::default()
        };
        if let Some(cache) = &self.model_cache {
            locator.cache_dir = cache.clone();
        }
        let dir = locator.resolve()?;
        let config = EmbedConfig {
            max_tokens: self.max_tokens,
            padding: self.padding,
            batch_size,
            max_text_bytes: self.max_text_bytes,
            device: self.device,
            quantization: self.quantize,
            batch_wait,
            query_prompt: self.query_prompt.clone(),
            document_prompt: self.document_prompt.clone(),
        };
        Embedder::spawn(dir.clone(), config)
            .with_context(|| format!("loading the model from {}", dir.display()))
    }
}

fn parse_padding(s: &str) -> Result<Padding, String> {
    match s {
        "longest" => Ok(Padding::BatchLongest),
        _ => s
            .strip_prefix("fixed:")
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .map(Padding::Fixed)
            .ok_or_else(|| format!("unknown padding `{s}`; use longest or fixed:N")),
    }
}
