//! Integration tests of shelf-embed against the real all-MiniLM-L6-v2 model
//! (fetched by scripts/fetch-model.sh; `.ci/run` does that first).

mod errors;
mod multilingual;
mod reference;
mod worker;

use shelf_embed::{EmbedConfig, ModelLocator, Quantization, SentenceEncoder};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The model directory: `SHELF_MODEL_DIR` or the cache. Panics with the fetch hint if absent.
pub fn model_dir() -> PathBuf {
    let locator = ModelLocator {
        explicit: std::env::var_os("SHELF_MODEL_DIR").map(PathBuf::from),
        hub_id: None,
        ..ModelLocator::default()
    };
    locator.resolve().unwrap_or_else(|e| panic!("{e}"))
}

/// One encoder with the weights as trained (f32), shared by the tests of this binary; the
/// other settings are checked against it and against the reference vectors.
pub fn encoder() -> &'static SentenceEncoder {
    static ENCODER: OnceLock<SentenceEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        let config = EmbedConfig {
            quantization: Quantization::None,
            ..EmbedConfig::default()
        };
        SentenceEncoder::load(&model_dir(), config).unwrap()
    })
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}
