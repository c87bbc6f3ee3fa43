//! The threaded worker: async and blocking calls, concurrent requests, failures in isolation.

use crate::{cosine, encoder, model_dir};
use shelf_embed::{EmbedConfig, EmbedError, Embedder};
use shelf_types::TextEmbedder;

#[test]
fn concurrent_requests_get_their_own_vectors_in_order() {
    let embedder = Embedder::spawn(model_dir(), EmbedConfig::default()).unwrap();
    assert_eq!(TextEmbedder::dim(&embedder), 384);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let requests: Vec<Vec<String>> = (0..16)
        .map(|i| {
            (0..(i % 5 + 1))
                .map(|j| format!("product {i} variant {j} in colour {}", i * j))
                .collect()
        })
        .collect();
    let results = rt.block_on(async {
        let handles: Vec<_> = requests
            .iter()
            .cloned()
            .map(|texts| {
                let e = embedder.clone();
                tokio::spawn(async move { e.embed(texts).await })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    });
    for (texts, result) in requests.iter().zip(results) {
        let vectors = result.unwrap();
        let expected = encoder().embed(texts).unwrap();
        assert_eq!(vectors.len(), texts.len());
        for (v, e) in vectors.iter().zip(&expected) {
            assert!(cosine(v.as_slice(), e) > 0.99999);
        }
    }
}

#[test]
fn a_bad_request_fails_alone() {
    let embedder = Embedder::spawn(model_dir(), EmbedConfig::default()).unwrap();
    let err = embedder
        .embed_blocking(vec!["fine".into(), String::new()])
        .unwrap_err();
    assert!(matches!(err, EmbedError::EmptyText { index: 1 }));
    assert_eq!(
        embedder.embed_blocking(vec!["fine".into()]).unwrap().len(),
        1
    );
    assert!(embedder.embed_blocking(Vec::new()).unwrap().is_empty());
}

#[test]
fn load_failures_come_back_from_spawn() {
    let dir = tempfile::tempdir().unwrap();
    let err = Embedder::spawn(dir.path().to_path_buf(), EmbedConfig::default()).unwrap_err();
    assert!(matches!(err, EmbedError::MissingFile { .. }));
}
