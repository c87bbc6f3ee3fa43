//! Errors of model loading and embedding.

use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong loading a model or embedding text.
#[derive(Debug, Error)]
pub enum EmbedError {
    /// No model directory was found. Caller's (or operator's) fault: fetch the model.
    #[error(
        "no embedding model found; tried:\n{}\nfetch the default model with: {fetch_command}",
        tried.iter().map(|t| format!("  - {t}")).collect::<Vec<_>>().join("\n")
    )]
    ModelNotFound {
        tried: Vec<String>,
        fetch_command: &'static str,
    },

    /// The model directory lacks a required file. Operator's fault.
    #[error("model file {path} is missing")]
    MissingFile { path: PathBuf },

    /// A model file could not be read. Operator's fault (permissions, disk).
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// config.json is not valid JSON or lacks fields a BERT config needs.
    #[error("invalid model config {path}: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },

    /// config.json describes a model family this embedder does not run.
    #[error("model in {path} is `{model_type}`, but shelf-embed runs BERT-family models (model_type \"bert\")")]
    NotBert { path: PathBuf, model_type: String },

    /// tokenizer.json could not be loaded or configured.
    #[error("invalid tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },

    /// model.safetensors could not be parsed or does not match config.json.
    #[error("invalid model weights {path}: {reason}")]
    Weights { path: PathBuf, reason: String },

    /// Downloading from the Hugging Face hub failed (feature `hub`).
    #[error("cannot download {model_id} from the Hugging Face hub: {reason}")]
    Download { model_id: String, reason: String },

    /// An embedding configuration value is out of range. Caller's fault.
    #[error("invalid embedding configuration: {0}")]
    InvalidConfigValue(String),

    /// The requested device is not available. Operator's fault.
    #[error("device {requested} is not available: {reason}")]
    Device { requested: String, reason: String },

    /// An input text is empty or whitespace only. Caller's fault.
    #[error("text #{index} is empty")]
    EmptyText { index: usize },

    /// An input text exceeds the byte limit. Caller's fault.
    #[error("text #{index} is {bytes} bytes, more than the limit of {max_bytes} bytes")]
    TextTooLong {
        index: usize,
        bytes: usize,
        max_bytes: usize,
    },

    /// Tokenising an input failed. Internal.
    #[error("cannot tokenize text #{index}: {reason}")]
    Tokenize { index: usize, reason: String },

    /// A token the tokenizer produced has no row in the model's tables: tokenizer.json and
    /// model.safetensors come from different models. Operator's fault.
    #[error("the tokenizer does not match the model: {0}")]
    TokenizerMismatch(String),

    /// The forward pass failed. Internal.
    #[error("model inference failed: {0}")]
    Inference(#[from] candle_core::Error),

    /// The embedding thread has stopped (it panicked or was shut down). Internal.
    #[error("the embedding worker thread is not running")]
    WorkerGone,
}

impl EmbedError {
    /// Whether the error is the caller's fault (bad input), as opposed to the model's or ours.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            EmbedError::EmptyText { .. } | EmbedError::TextTooLong { .. }
        )
    }
}
