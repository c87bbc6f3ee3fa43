//! Sentence embeddings with a BERT-family model on candle: tokenisation without fixed
//! padding, length-grouped batches, mean pooling, L2 normalisation, on a dedicated thread.

mod bert;
mod config;
mod cpu_bert;
mod error;
mod locate;
mod sentence_config;
mod worker;

pub use bert::SentenceEncoder;
pub use config::{DevicePreference, EmbedConfig, Padding, Quantization};
pub use error::EmbedError;
pub use locate::{
    default_cache_dir, hub_id_of, ModelLocator, DEFAULT_HUB_ID, DEFAULT_MODEL_NAME, FETCH_COMMAND,
    KNOWN_MODELS,
};
pub use sentence_config::Prompts;
pub use shelf_types::TextRole;
pub use worker::Embedder;
