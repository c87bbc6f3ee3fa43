//! Embeddings and token ids match sentence-transformers' reference output.

use crate::{cosine, encoder, model_dir};
use serde::Deserialize;
use shelf_embed::{DevicePreference, EmbedConfig, Padding, Quantization, SentenceEncoder};

#[derive(Deserialize)]
struct Reference {
    dim: usize,
    max_seq_length: usize,
    items: Vec<RefItem>,
}

#[derive(Deserialize)]
struct RefItem {
    text: String,
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/minilm_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn token_ids_match_sentence_transformers() {
    let reference = reference();
    assert_eq!(encoder().max_tokens(), reference.max_seq_length);
    for item in &reference.items {
        assert_eq!(
            encoder().token_ids(&item.text).unwrap(),
            item.input_ids,
            "{}",
            item.text
        );
    }
}

#[test]
fn embeddings_match_sentence_transformers() {
    let reference = reference();
    let texts: Vec<&str> = reference.items.iter().map(|i| i.text.as_str()).collect();
    let vectors = encoder().embed(&texts).unwrap();
    let mut lowest = f32::MAX;
    for (item, vector) in reference.items.iter().zip(&vectors) {
        assert_eq!(vector.len(), reference.dim);
        let cos = cosine(vector, &item.embedding);
        assert!(cos >= 0.9999, "cosine {cos} for {:?}", item.text);
        lowest = lowest.min(cos);
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    eprintln!(
        "f32: lowest cosine to sentence-transformers {lowest:.7} over {} texts",
        texts.len()
    );
}

/// With the linear layers' weights stored as `quantization`: each reference text's cosine to
/// sentence-transformers' vector, and the lowest cosine to the f32 path's own vectors.
fn cosines_with(quantization: Quantization) -> (Vec<(String, f32)>, f32) {
    let reference = reference();
    let config = EmbedConfig {
        quantization,
        device: DevicePreference::Cpu,
        ..EmbedConfig::default()
    };
    let encoder_q = SentenceEncoder::load(&model_dir(), config).unwrap();
    let texts: Vec<&str> = reference.items.iter().map(|i| i.text.as_str()).collect();
    let vectors = encoder_q.embed(&texts).unwrap();
    let f32_vectors = encoder().embed(&texts).unwrap();
    let to_f32 = vectors
        .iter()
        .zip(&f32_vectors)
        .map(|(a, b)| cosine(a, b))
        .fold(f32::MAX, f32::min);
    let cosines = reference
        .items
        .iter()
        .zip(&vectors)
        .map(|(item, v)| (item.text.clone(), cosine(v, &item.embedding)))
        .collect();
    (cosines, to_f32)
}

#[test]
fn q8_embeddings_stay_within_0_995_of_sentence_transformers() {
    let (cosines, to_f32) = cosines_with(Quantization::Q8);
    for (text, cos) in &cosines {
        assert!(*cos >= 0.995, "q8 cosine {cos} for {text:?}");
    }
    // Quantised, yet not the same as the f32 path: the option must really change the weights.
    assert!(to_f32 < 0.99999, "q8 vectors equal the f32 ones ({to_f32})");
    let lowest = cosines.iter().map(|c| c.1).fold(f32::MAX, f32::min);
    eprintln!(
        "q8: lowest cosine to sentence-transformers {lowest:.5} over {} texts",
        cosines.len()
    );
}

/// What `auto` resolves to on the CPU: f16 where the CPU widens half floats in its vector
/// registers, else f32.
#[test]
fn auto_holds_half_floats_where_the_cpu_widens_them() {
    let config = EmbedConfig {
        device: DevicePreference::Cpu,
        ..EmbedConfig::default()
    };
    assert_eq!(config.quantization, Quantization::Auto);
    let encoder_auto = SentenceEncoder::load(&model_dir(), config).unwrap();
    assert_eq!(encoder_auto.quantization(), auto_resolves_to());
}

/// f16 on x86-64 with AVX-512, or with AVX2, FMA and F16C; f32 elsewhere.
fn auto_resolves_to() -> Quantization {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") || (has!("avx2") && has!("fma") && has!("f16c")) {
            return Quantization::F16;
        }
    }
    Quantization::None
}

#[test]
fn f16_weights_stay_within_0_9999_of_sentence_transformers() {
    let (cosines, to_f32) = cosines_with(Quantization::F16);
    for (text, cos) in &cosines {
        assert!(*cos >= 0.9999, "f16 cosine {cos} for {text:?}");
    }
    // Rounded weights give slightly different vectors: the option must really change them
    // (where the CPU widens half floats; elsewhere the loader keeps f32).
    if auto_resolves_to() == Quantization::F16 {
        assert!(to_f32 < 1.0, "f16 vectors equal the f32 ones");
    }
    let lowest = cosines.iter().map(|c| c.1).fold(f32::MAX, f32::min);
    eprintln!(
        "f16: lowest cosine to sentence-transformers {lowest:.7} (to the f32 path {to_f32:.7}) \
         over {} texts",
        cosines.len()
    );
}

#[test]
fn padding_does_not_change_embeddings() {
    let alone = encoder().embed(&["red leather sofa"]).unwrap().remove(0);
    let long = "a very long description of a sofa ".repeat(20);
    let batch = encoder()
        .embed(&[
            "x",
            long.as_str(),
            "red leather sofa",
            "the sofa is red and made of leather",
        ])
        .unwrap();
    let max_diff = alone
        .iter()
        .zip(&batch[2])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(max_diff < 1e-5, "max diff {max_diff}");

    let fixed = SentenceEncoder::load(
        &crate::model_dir(),
        EmbedConfig {
            padding: Padding::Fixed(128),
            ..EmbedConfig::default()
        },
    )
    .unwrap();
    let padded = fixed.embed(&["red leather sofa"]).unwrap().remove(0);
    assert!(cosine(&alone, &padded) > 0.99999);
}

#[test]
fn long_texts_are_truncated_at_max_tokens() {
    let long = "wireless headphones with long battery life and deep bass ".repeat(60);
    let ids = encoder().token_ids(&long).unwrap();
    assert_eq!(ids.len(), 256);
    assert_eq!(
        ids.last(),
        Some(&102),
        "truncated sequence still ends with [SEP]"
    );
    let short = SentenceEncoder::load(
        &crate::model_dir(),
        EmbedConfig {
            max_tokens: Some(16),
            ..EmbedConfig::default()
        },
    )
    .unwrap();
    assert_eq!(short.token_ids(&long).unwrap().len(), 16);
    let v = encoder().embed(&[long.as_str()]).unwrap();
    assert_eq!(v[0].len(), 384);
}

#[test]
fn batches_return_vectors_in_input_order() {
    let texts = [
        "blue jeans",
        "a garden hose of thirty meters with a brass nozzle",
        "tea",
        "desk lamp",
    ];
    let together = encoder().embed(&texts).unwrap();
    for (text, vector) in texts.iter().zip(&together) {
        let alone = encoder().embed(&[*text]).unwrap().remove(0);
        assert!(cosine(&alone, vector) > 0.99999, "{text}");
    }
}
