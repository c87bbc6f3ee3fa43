//! multilingual-e5-small (`scripts/fetch-model.sh multilingual-e5-small`): shelf's forward
//! pass against the reference vectors of an independent f64/f32 pass over the same checkpoint,
//! the XLM-R tokenizer's lengths, and the model's prompts.

use crate::cosine;
use serde::Deserialize;
use shelf_embed::{
    DevicePreference, EmbedConfig, ModelLocator, Quantization, SentenceEncoder, TextRole,
};
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Deserialize)]
struct Reference {
    items: Vec<RefItem>,
}

#[derive(Deserialize)]
struct RefItem {
    /// With the prompt (`query: ` or `passage: `) in front.
    text: String,
    tokens: usize,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/me5_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `SHELF_ME5_MODEL_DIR`, else the cache's multilingual-e5-small. Panics with the fetch
/// command when it is missing (`make model` fetches it).
fn model_dir() -> PathBuf {
    let locator = ModelLocator {
        explicit: std::env::var_os("SHELF_ME5_MODEL_DIR").map(PathBuf::from),
        name: "multilingual-e5-small".into(),
        hub_id: None,
        ..ModelLocator::default()
    };
    locator.resolve().unwrap_or_else(|e| {
        panic!("{e}\n(run scripts/fetch-model.sh multilingual-e5-small, or make model)")
    })
}

fn load(quantization: Quantization) -> SentenceEncoder {
    let config = EmbedConfig {
        quantization,
        device: DevicePreference::Cpu,
        ..EmbedConfig::default()
    };
    SentenceEncoder::load(&model_dir(), config).unwrap()
}

fn f32_encoder() -> &'static SentenceEncoder {
    static ENCODER: OnceLock<SentenceEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| load(Quantization::None))
}

/// The lowest cosine to the reference over every text, asserting each is at least `min`.
fn check_against_reference(encoder: &SentenceEncoder, min: f32) -> f32 {
    let reference = reference();
    let texts: Vec<&str> = reference.items.iter().map(|i| i.text.as_str()).collect();
    let vectors = encoder.embed(&texts).unwrap();
    let mut lowest = f32::MAX;
    for (item, vector) in reference.items.iter().zip(&vectors) {
        assert_eq!(vector.len(), 384);
        let cos = cosine(vector, &item.embedding);
        assert!(cos >= min, "cosine {cos} < {min} for {:?}", item.text);
        lowest = lowest.min(cos);
    }
    lowest
}

#[test]
fn e5_token_counts_match_the_reference() {
    let encoder = f32_encoder();
    assert_eq!(encoder.max_tokens(), 512);
    for item in reference().items {
        let ids = encoder.token_ids(&item.text).unwrap();
        assert_eq!(ids.len(), item.tokens, "{:?}", item.text);
        assert_eq!((ids[0], *ids.last().unwrap()), (0, 2), "<s> … </s>");
    }
}

#[test]
fn e5_f32_reproduces_the_reference_vectors() {
    let lowest = check_against_reference(f32_encoder(), 0.9999);
    eprintln!("multilingual-e5-small f32: lowest cosine to the reference {lowest:.7}");
}

#[test]
fn e5_half_float_weights_stay_close_to_the_reference() {
    let encoder = load(Quantization::F16);
    if encoder.quantization() != Quantization::F16 {
        eprintln!("skipped: this CPU cannot widen half floats (f16 falls back to f32)");
        return;
    }
    let lowest = check_against_reference(&encoder, 0.999);
    eprintln!("multilingual-e5-small f16: lowest cosine to the reference {lowest:.7}");
}

#[test]
fn e5_prompts_come_from_the_model_directory() {
    let encoder = f32_encoder();
    assert_eq!(encoder.prompts().query, "query: ");
    assert_eq!(encoder.prompts().document, "passage: ");
    let as_query = encoder.embed_as(TextRole::Query, &["grey sofa"]).unwrap();
    let spelled_out = encoder.embed(&["query: grey sofa"]).unwrap();
    assert_eq!(as_query, spelled_out);
    let as_document = encoder
        .embed_as(TextRole::Document, &["grey sofa"])
        .unwrap();
    assert_ne!(as_query, as_document);
    // An empty text stays an error: the prompt does not make it a text.
    assert!(encoder.embed_as(TextRole::Query, &["  "]).is_err());
}

#[test]
fn e5_chinese_query_finds_the_english_description_of_the_same_product() {
    let encoder = f32_encoder();
    let queries = ["灰色沙发", "无线降噪耳机", "女士跑鞋", "不锈钢电饭煲"];
    let documents = [
        "Three-seat fabric sofa in light grey with oak legs",
        "Over-ear Bluetooth headphones with active noise cancellation",
        "Lightweight mesh running shoe, women's sizes 5-11",
        "5 litre rice cooker with a stainless steel inner pot",
    ];
    let q = encoder.embed_as(TextRole::Query, &queries).unwrap();
    let d = encoder.embed_as(TextRole::Document, &documents).unwrap();
    for (i, query) in q.iter().enumerate() {
        let best = (0..d.len())
            .max_by(|&a, &b| cosine(query, &d[a]).total_cmp(&cosine(query, &d[b])))
            .unwrap();
        assert_eq!(best, i, "{} matched {:?}", queries[i], documents[best]);
    }
}
