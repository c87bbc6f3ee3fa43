//! The embed UDF gives sentence-transformers' reference vectors (tests/fixtures/
//! minilm_reference.json, which shelf-embed's tests hold the engine to as well), in the
//! JSON shape shelf's item job reads from `shelf.item_vectors`.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Reference {
    dim: usize,
    items: Vec<RefItem>,
}

#[derive(Deserialize)]
struct RefItem {
    text: String,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct Output {
    model_id: String,
    dimension: usize,
    vector: Vec<f32>,
}

/// The model `make model` fetches (scripts/fetch-model.sh), unless SHELF_UDF_MODEL_DIR is set.
fn use_cached_model() {
    if std::env::var_os("SHELF_UDF_MODEL_DIR").is_some() {
        return;
    }
    let cache = std::env::var_os("SHELF_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
            base.join("shelf").join("models")
        });
    let dir = cache.join("all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "no model in {}: run scripts/fetch-model.sh",
        dir.display()
    );
    std::env::set_var("SHELF_UDF_MODEL_DIR", dir);
}

#[test]
fn embeddings_match_the_reference_vectors() {
    use_cached_model();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../tests/fixtures/minilm_reference.json");
    let reference: Reference = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for item in &reference.items {
        let json = udf_embed::embed(&item.text).expect("a vector for a non-empty text");
        let out: Output = serde_json::from_str(&json).unwrap();
        assert_eq!(out.model_id, "all-MiniLM-L6-v2");
        assert_eq!(out.dimension, reference.dim);
        assert_eq!(out.vector.len(), reference.dim);
        let dot: f32 = out.vector.iter().zip(&item.embedding).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cosine = dot / (norm(&out.vector) * norm(&item.embedding));
        assert!(cosine >= 0.9999, "cosine {cosine} for {:?}", item.text);
        assert!((norm(&out.vector) - 1.0).abs() < 1e-5);
    }
    assert_eq!(udf_embed::embed("   "), None);
}

#[test]
fn every_udf_header_lists_what_its_test_crate_depends_on() {
    // Arroyo builds each UDF from its header alone: a dependency missing there would pass
    // here and fail in Arroyo.
    let udfs = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for name in ["item_text", "event_weight", "embed"] {
        let source = std::fs::read_to_string(format!("{udfs}/{name}.rs")).unwrap();
        let header = source
            .strip_prefix("/*\n[dependencies]\n")
            .and_then(|rest| rest.split_once("*/"))
            .unwrap_or_else(|| panic!("{name}.rs does not start with a [dependencies] header"))
            .0;
        let header_deps: Vec<&str> = header
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .collect();
        let manifest =
            std::fs::read_to_string(format!("{udfs}/crates/{name}/Cargo.toml")).unwrap();
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap()
            .split("\n[")
            .next()
            .unwrap();
        let crate_deps: Vec<&str> = deps
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().trim_end_matches(".workspace")))
            .filter(|k| !k.starts_with('#') && *k != "arroyo-udf-plugin")
            .collect();
        assert_eq!(header_deps, crate_deps, "{name}.rs header vs its crate");
        assert!(source.contains("#[udf]"), "{name}.rs has no #[udf]");
    }
}
