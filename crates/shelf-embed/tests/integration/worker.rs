//! The threaded worker: async and blocking calls, concurrent requests, failures in isolation.

use crate::{cosine, encoder, model_dir};
use shelf_embed::{EmbedConfig, EmbedError, Embedder};
use shelf_types::TextEmbedder;
use std::time::{Duration, Instant};

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

/// Runs the load pattern of `batch_wait_holds_a_pass_open_only_under_load` and returns how
/// many passes two requests sent 100 ms apart took, plus how long an idle request took.
fn passes_for_two_spaced_requests(wait: Duration) -> (u64, Duration) {
    let config = EmbedConfig {
        batch_wait: wait,
        batch_size: 8,
        ..EmbedConfig::default()
    };
    let embedder = Embedder::spawn(model_dir(), config).unwrap();
    let e = &embedder;
    let started = Instant::now();
    e.embed_blocking(vec!["a lone query".into()]).unwrap();
    let idle = started.elapsed();
    // Load: a long job keeps the worker busy while two requests queue behind it, so the pass
    // after it coalesces them.
    let long: Vec<String> = (0..64)
        .map(|i| format!("long text {i} ").repeat(40))
        .collect();
    std::thread::scope(|s| {
        s.spawn(move || e.embed_blocking(long).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        s.spawn(|| e.embed_blocking(vec!["queued one".into()]).unwrap());
        s.spawn(|| e.embed_blocking(vec!["queued two".into()]).unwrap());
    });
    let before = e.passes();
    std::thread::scope(|s| {
        s.spawn(|| e.embed_blocking(vec!["first".into()]).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        s.spawn(|| e.embed_blocking(vec!["second".into()]).unwrap());
    });
    (e.passes() - before, idle)
}

#[test]
fn batch_wait_holds_a_pass_open_only_under_load() {
    let wait = Duration::from_millis(900);
    let (passes, idle) = passes_for_two_spaced_requests(wait);
    assert_eq!(
        passes, 1,
        "under load, the second request joins the first one's pass"
    );
    assert!(idle < wait, "an idle worker does not wait: {idle:?}");
    let (passes, _) = passes_for_two_spaced_requests(Duration::ZERO);
    assert_eq!(
        passes, 2,
        "without a wait, each request has a pass of its own"
    );
}
