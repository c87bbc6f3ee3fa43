/*
[dependencies]
candle-core = "0.11"
candle-nn = "0.11"
candle-transformers = "0.11"
gemm = { version = "0.19", features = ["x86-v4"] }
serde_json = "1"
tokenizers = { version = "0.23", default-features = false, features = ["fancy-regex"] }
*/

//! Arroyo UDF `embed`: the sentence embedding of a text with the BERT model mounted at
//! `$SHELF_UDF_MODEL_DIR` (default `/models/all-MiniLM-L6-v2`; config.json, tokenizer.json,
//! model.safetensors), computed as shelf computes it: truncation to 256 tokens, mean pooling
//! over the tokens, L2 normalisation, with the model's document prompt in front of the text
//! (config_sentence_transformers.json `prompts.document` or `prompts.passage`: multilingual-e5's
//! `passage: `; none for MiniLM). The model is loaded once per worker process.
//!
//! Arroyo UDFs cannot return a list of floats, so the result is JSON text:
//! `{"model_id":"all-MiniLM-L6-v2","dimension":384,"vector":[...]}` (the model id is the
//! model directory's name, as in shelf, which checks it before using the vector). An empty
//! text gives NULL. A model that cannot be loaded stops the pipeline with the reason.
//!
//! `gemm` is listed only for its `x86-v4` feature: candle's matrix products then use AVX-512
//! kernels on CPUs that have them (the same build of candle as shelf's).

use arroyo_udf_plugin::udf;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Tokens kept per text, special tokens included (sentence-transformers' setting).
const MAX_TOKENS: usize = 256;

struct Encoder {
    model_id: String,
    dim: usize,
    document_prompt: String,
    tokenizer: Tokenizer,
    model: BertModel,
}

fn model_dir() -> PathBuf {
    std::env::var_os("SHELF_UDF_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/models/all-MiniLM-L6-v2"))
}

fn load(dir: &Path) -> Result<Encoder, String> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let config: Config =
        serde_json::from_slice(&read("config.json")?).map_err(|e| format!("config.json: {e}"))?;
    let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
        .map_err(|e| format!("tokenizer.json: {e}"))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: MAX_TOKENS,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| format!("tokenizer.json: {e}"))?;
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .map_err(|e| format!("model.safetensors: {e}"))?;
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let model = BertModel::load(vb, &config).map_err(|e| format!("model.safetensors: {e}"))?;
    let model_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(Encoder {
        model_id,
        dim: config.hidden_size,
        document_prompt: document_prompt(dir)?,
        tokenizer,
        model,
    })
}

/// The prompt shelf puts in front of item texts for this model (see shelf-embed's
/// `Prompts::read`): none when the directory has no config_sentence_transformers.json.
fn document_prompt(dir: &Path) -> Result<String, String> {
    let path = dir.join("config_sentence_transformers.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(String::new());
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let prompts = value.get("prompts");
    for key in ["document", "passage"] {
        if let Some(p) = prompts.and_then(|p| p.get(key)) {
            return p
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{}: prompts.{key} must be a string", path.display()));
        }
    }
    Ok(String::new())
}

fn encoder() -> &'static Encoder {
    static ENCODER: OnceLock<Result<Encoder, String>> = OnceLock::new();
    let dir = model_dir();
    match ENCODER.get_or_init(|| load(&dir)) {
        Ok(encoder) => encoder,
        Err(e) => panic!(
            "embed UDF: cannot load the model from {}: {e}",
            dir.display()
        ),
    }
}

impl Encoder {
    fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        let prompted = format!("{}{text}", self.document_prompt);
        let encoding = self
            .tokenizer
            .encode(prompted, true)
            .map_err(|e| e.to_string())?;
        let n = encoding.get_ids().len();
        let device = Device::Cpu;
        let run = || -> candle_core::Result<Vec<f32>> {
            let ids = Tensor::from_vec(encoding.get_ids().to_vec(), (1, n), &device)?;
            let types = Tensor::from_vec(encoding.get_type_ids().to_vec(), (1, n), &device)?;
            let mask = Tensor::ones((1, n), DType::U32, &device)?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (1, n, dim)
            let mean = (hidden.sum(1)? / n as f64)?; // (1, dim)
            let norm = mean
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12f32, f32::MAX)?;
            mean.broadcast_div(&norm)?.squeeze(0)?.to_vec1::<f32>()
        };
        run().map_err(|e| e.to_string())
    }
}

#[udf]
fn embed(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        return None;
    }
    let encoder = encoder();
    let vector = encoder
        .embed(text)
        .unwrap_or_else(|e| panic!("embed UDF: the model failed on a text: {e}"));
    Some(
        serde_json::json!({
            "model_id": encoder.model_id,
            "dimension": encoder.dim,
            "vector": vector,
        })
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::embed;
    use std::path::PathBuf;

    /// The model `make model` fetches (scripts/fetch-model.sh), unless SHELF_UDF_MODEL_DIR
    /// is set.
    fn use_cached_model() {
        if std::env::var_os("SHELF_UDF_MODEL_DIR").is_some() {
            return;
        }
        let cache = std::env::var_os("SHELF_MODEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache")
                    })
                    .join("shelf")
                    .join("models")
            });
        let dir = cache.join("all-MiniLM-L6-v2");
        assert!(
            dir.join("model.safetensors").exists(),
            "no model in {}: run scripts/fetch-model.sh",
            dir.display()
        );
        std::env::set_var("SHELF_UDF_MODEL_DIR", dir);
    }

    /// sentence-transformers' reference vectors, which shelf-embed's tests hold the engine
    /// to as well, in the JSON shape shelf's item job reads from `shelf-item-vectors`.
    #[test]
    fn embeddings_match_the_reference_vectors() {
        use_cached_model();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../tests/fixtures/minilm_reference.json"
        );
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let dim = reference["dim"].as_u64().unwrap();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        for item in reference["items"].as_array().unwrap() {
            let text = item["text"].as_str().unwrap();
            let expected: Vec<f32> = serde_json::from_value(item["embedding"].clone()).unwrap();
            let out: serde_json::Value =
                serde_json::from_str(&embed(text).expect("a vector for a non-empty text")).unwrap();
            assert_eq!(out["model_id"], "all-MiniLM-L6-v2");
            assert_eq!(out["dimension"].as_u64(), Some(dim));
            let vector: Vec<f32> = serde_json::from_value(out["vector"].clone()).unwrap();
            assert_eq!(vector.len() as u64, dim);
            let dot: f32 = vector.iter().zip(&expected).map(|(a, b)| a * b).sum();
            let cosine = dot / (norm(&vector) * norm(&expected));
            assert!(cosine >= 0.9999, "cosine {cosine} for {text:?}");
            assert!((norm(&vector) - 1.0).abs() < 1e-5);
        }
        assert_eq!(embed("   "), None);
    }
}
