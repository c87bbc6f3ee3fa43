//! shelf-index against brute force on a seeded clustered set of 20k 384-d vectors:
//! recall after interleaved upserts and deletes, after a rebuild, after snapshot/restore,
//! and under filters of 1%, 10% and 50% selectivity.

use shelf_index::synthetic::{exact_top_k, Clustered, Rng};
use shelf_index::{normalized, HnswIndex, IndexConfig, IndexError, SnapshotError};
use shelf_types::{ItemAttributes, ItemId, SearchFilter};
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

const DIM: usize = 384;
const N: usize = 20_000;
const K: usize = 10;

/// The exact state the index should reflect: id -> (unit vector, attributes).
struct Truth {
    items: BTreeMap<String, (Vec<f32>, ItemAttributes)>,
}

impl Truth {
    /// Exact top-k ids of every query under `filter`.
    fn top_k(&self, queries: &[Vec<f32>], filter: &SearchFilter) -> Vec<Vec<String>> {
        let ids: Vec<&String> = self.items.keys().collect();
        let rows: Vec<Vec<f32>> = self.items.values().map(|(v, _)| v.clone()).collect();
        let pass: Vec<bool> = self
            .items
            .values()
            .map(|(_, a)| filter.matches(a))
            .collect();
        queries
            .iter()
            .map(|q| {
                exact_top_k(&rows, q, K, |i| pass[i])
                    .into_iter()
                    .map(|i| ids[i].clone())
                    .collect()
            })
            .collect()
    }
}

fn attributes(rng: &mut Rng) -> ItemAttributes {
    // 100 leaf categories under 10 departments: exact category = 1%, department = 10%;
    // in_stock false for half the items = 50%.
    let dept = rng.below(10);
    let leaf = rng.below(10);
    ItemAttributes {
        category: Some(format!("Dept{dept}/Leaf{leaf}")),
        price: Some((rng.uniform() * 1000.0).floor()),
        in_stock: Some(rng.below(2) == 0),
    }
}

fn fixture() -> (HnswIndex, Truth, Vec<Vec<f32>>) {
    let mut data = Clustered::new(DIM, 200, 0.8, 11);
    let mut rng = Rng::new(12);
    let mut truth = Truth {
        items: BTreeMap::new(),
    };
    for i in 0..N {
        let (v, _) = data.sample();
        truth
            .items
            .insert(format!("item-{i}"), (v, attributes(&mut rng)));
    }
    let ids: Vec<ItemId> = truth
        .items
        .keys()
        .map(|k| ItemId::from(k.as_str()))
        .collect();
    let items = ids
        .iter()
        .zip(truth.items.values())
        .map(|(id, (v, a))| (id, &v[..], a.clone()));
    let index = HnswIndex::build(IndexConfig::new(DIM), items).unwrap();
    let queries = data.take(200);
    (index, truth, queries)
}

fn recall(index: &HnswIndex, truth: &Truth, queries: &[Vec<f32>], filter: &SearchFilter) -> f64 {
    let mut found = 0;
    let mut expected = 0;
    for (q, exact) in queries.iter().zip(truth.top_k(queries, filter)) {
        let exact: HashSet<String> = exact.into_iter().collect();
        let hits = index.search(q, K, None, filter).unwrap();
        assert_eq!(
            hits.len(),
            exact.len(),
            "fewer than k results while enough items match"
        );
        for h in &hits {
            assert!(
                truth.items.contains_key(h.id.as_str()),
                "returned deleted id {}",
                h.id
            );
            assert!(
                filter.matches(&truth.items[h.id.as_str()].1),
                "returned {} outside the filter",
                h.id
            );
        }
        found += hits
            .iter()
            .filter(|h| exact.contains(h.id.as_str()))
            .count();
        expected += exact.len();
    }
    found as f64 / expected as f64
}

/// Replaces a third of the items with new vectors and deletes a tenth, interleaved.
fn churn(index: &HnswIndex, truth: &mut Truth, seed: u64) -> Vec<String> {
    let mut data = Clustered::new(DIM, 200, 0.8, 11);
    let mut shifted = Clustered::new(DIM, 200, 0.8, seed);
    let _ = data.sample();
    let mut rng = Rng::new(seed);
    let mut deleted = Vec::new();
    for step in 0..(N / 3) {
        let i = rng.below(N);
        let id = format!("item-{i}");
        if step % 3 == 0 {
            if truth.items.remove(&id).is_some() {
                assert!(index.delete(&ItemId::from(id.as_str())));
                deleted.push(id);
            }
        } else {
            let (v, _) = shifted.sample();
            let attrs = attributes(&mut rng);
            index
                .upsert(&ItemId::from(id.as_str()), &v, attrs.clone())
                .unwrap();
            truth
                .items
                .insert(id.clone(), (normalized(&v, DIM).unwrap(), attrs));
            deleted.retain(|d| d != &id);
        }
    }
    deleted
}

#[test]
fn recall_holds_through_updates_rebuild_and_snapshot() {
    let (index, mut truth, queries) = fixture();
    let all = SearchFilter::default();
    let r = recall(&index, &truth, &queries, &all);
    assert!(r >= 0.95, "recall@10 after build {r}");

    let deleted = churn(&index, &mut truth, 99);
    index.wait_for_rebuild();
    let r = recall(&index, &truth, &queries, &all);
    assert!(
        r >= 0.95,
        "recall@10 after interleaved upserts and deletes {r}"
    );
    let stats = index.stats();
    assert_eq!(stats.live, truth.items.len());
    assert!(
        stats.rebuilds >= 1,
        "tombstones passed 20% but no rebuild ran: {stats:?}"
    );

    // Deleted ids never come back, even when queried with their own (old) neighbourhood.
    for q in queries.iter().take(50) {
        for hit in index.search(q, 100, Some(200), &all).unwrap() {
            assert!(!deleted.contains(&hit.id.as_str().to_string()));
        }
    }

    index.rebuild();
    assert_eq!(index.stats().tombstones, 0);
    let r = recall(&index, &truth, &queries, &all);
    assert!(r >= 0.95, "recall@10 after an explicit rebuild {r}");

    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("index");
    let info = index.snapshot(&snap, 4242).unwrap();
    assert_eq!(info.position, 4242);
    let (restored, info) = HnswIndex::restore(&snap, IndexConfig::new(DIM)).unwrap();
    assert_eq!(info.live, truth.items.len());
    assert_eq!(restored.len(), truth.items.len());
    let r = recall(&restored, &truth, &queries, &all);
    assert!(r >= 0.95, "recall@10 after snapshot/restore {r}");
    // The restored index keeps accepting writes without reusing slots.
    let (id, (v, a)) = truth
        .items
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    restored
        .upsert(
            &ItemId::from(id.as_str()),
            &v.iter().map(|x| -x).collect::<Vec<_>>(),
            a,
        )
        .unwrap();
    assert_eq!(restored.len(), truth.items.len());
}

#[test]
fn filtered_recall_and_speed_at_1_10_50_percent() {
    let (index, truth, queries) = fixture();
    let unfiltered_qps = qps(&index, &queries, &SearchFilter::default());
    let filters = [
        (
            "1% exact category",
            SearchFilter {
                category: Some("Dept3/Leaf7".into()),
                ..Default::default()
            },
        ),
        (
            "10% category prefix",
            SearchFilter {
                category_prefix: Some("Dept3".into()),
                ..Default::default()
            },
        ),
        (
            "50% in stock",
            SearchFilter {
                in_stock: Some(false),
                ..Default::default()
            },
        ),
        (
            "10% price range",
            SearchFilter {
                price_min: Some(100.0),
                price_max: Some(199.0),
                ..Default::default()
            },
        ),
    ];
    for (name, filter) in filters {
        let r = recall(&index, &truth, &queries, &filter);
        assert!(r >= 0.95, "{name}: filtered recall@10 {r}");
        let filtered_qps = qps(&index, &queries, &filter);
        eprintln!("{name}: recall {r:.3}, {filtered_qps:.0} QPS vs {unfiltered_qps:.0} unfiltered");
        assert!(
            filtered_qps >= 0.5 * unfiltered_qps,
            "{name}: {filtered_qps:.0} QPS is below half of unfiltered {unfiltered_qps:.0}"
        );
    }
}

fn qps(index: &HnswIndex, queries: &[Vec<f32>], filter: &SearchFilter) -> f64 {
    let started = Instant::now();
    let rounds = 3;
    for _ in 0..rounds {
        for q in queries {
            std::hint::black_box(index.search(q, K, None, filter).unwrap());
        }
    }
    (rounds * queries.len()) as f64 / started.elapsed().as_secs_f64()
}

#[test]
fn fewer_than_k_only_when_fewer_match() {
    let (index, truth, queries) = fixture();
    let rare = SearchFilter {
        category: Some("Dept3/Leaf7".into()),
        price_min: Some(990.0),
        price_max: Some(999.0),
        ..Default::default()
    };
    let matching = truth
        .items
        .values()
        .filter(|(_, a)| rare.matches(a))
        .count();
    assert!(matching > 0 && matching < K);
    assert_eq!(
        index.search(&queries[0], K, None, &rare).unwrap().len(),
        matching
    );
    let none = SearchFilter {
        category: Some("Nowhere".into()),
        ..Default::default()
    };
    assert!(index
        .search(&queries[0], K, None, &none)
        .unwrap()
        .is_empty());
}

#[test]
fn bad_vectors_are_rejected_and_leave_the_index_unchanged() {
    let index = HnswIndex::new(IndexConfig::new(4)).unwrap();
    let id = ItemId::from("a");
    index
        .upsert(&id, &[1.0, 0.0, 0.0, 0.0], ItemAttributes::default())
        .unwrap();
    let err = index
        .upsert(&id, &[1.0, 0.0, 0.0], ItemAttributes::default())
        .unwrap_err();
    assert!(matches!(
        err,
        IndexError::DimensionMismatch {
            expected: 4,
            received: 3
        }
    ));
    assert_eq!(
        err.to_string(),
        "vector has 3 dimensions, the index expects 4"
    );
    let err = index.upsert(
        &ItemId::from("b"),
        &[1.0, f32::INFINITY, 0.0, 0.0],
        ItemAttributes::default(),
    );
    assert!(matches!(
        err,
        Err(IndexError::NonFinite { position: 1, .. })
    ));
    assert!(index
        .search(
            &[f32::NAN, 0.0, 0.0, 0.0],
            1,
            None,
            &SearchFilter::default()
        )
        .is_err());
    assert!(index
        .search(&[1.0, 0.0], 1, None, &SearchFilter::default())
        .is_err());
    assert_eq!(index.len(), 1);
    let hits = index
        .search(&[1.0, 0.0, 0.0, 0.0], 5, None, &SearchFilter::default())
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, id);
    assert!((hits[0].score - 1.0).abs() < 1e-5);
}

#[test]
fn damaged_snapshots_are_reported() {
    let index = HnswIndex::new(IndexConfig::new(8)).unwrap();
    let mut data = Clustered::new(8, 4, 0.5, 3);
    for i in 0..500 {
        index
            .upsert(
                &ItemId::from(format!("i{i}")),
                &data.sample().0,
                ItemAttributes::default(),
            )
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    assert!(matches!(
        HnswIndex::restore(&snap, IndexConfig::new(8)),
        Err(SnapshotError::Missing(_))
    ));
    index.snapshot(&snap, 1).unwrap();
    assert!(matches!(
        HnswIndex::restore(&snap, IndexConfig::new(16)),
        Err(SnapshotError::WrongDimension {
            found: 8,
            expected: 16,
            ..
        })
    ));

    // Truncated graph file.
    let graph = snap.join("graph.hnsw.graph");
    let bytes = std::fs::read(&graph).unwrap();
    std::fs::write(&graph, &bytes[..bytes.len() / 2]).unwrap();
    let err = HnswIndex::restore(&snap, IndexConfig::new(8)).unwrap_err();
    assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");

    // Wrong format version.
    index.snapshot(&snap, 2).unwrap();
    let manifest = snap.join("manifest.json");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 99");
    std::fs::write(&manifest, text).unwrap();
    assert!(matches!(
        HnswIndex::restore(&snap, IndexConfig::new(8)),
        Err(SnapshotError::WrongVersion { found: 99, .. })
    ));

    // A good snapshot after a bad one restores; position round-trips.
    let info = index.snapshot(&snap, 3).unwrap();
    let (restored, restored_info) = HnswIndex::restore(&snap, IndexConfig::new(8)).unwrap();
    assert_eq!(restored_info, info);
    assert_eq!(restored.len(), 500);
}

#[test]
fn searches_run_while_writes_and_a_rebuild_happen() {
    let mut config = IndexConfig::new(32);
    config.rebuild_min_tombstones = 50;
    let index = HnswIndex::new(config).unwrap();
    let mut data = Clustered::new(32, 10, 0.5, 5);
    let mut vectors: Vec<Vec<f32>> = data.take(2000);
    for (i, v) in vectors.iter().enumerate() {
        index
            .upsert(&ItemId::from(format!("i{i}")), v, ItemAttributes::default())
            .unwrap();
    }
    let queries = data.take(20);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut searches = 0;
            for _ in 0..50 {
                for q in &queries {
                    let hits = index.search(q, 10, None, &SearchFilter::default()).unwrap();
                    assert_eq!(hits.len(), 10);
                    searches += 1;
                }
            }
            searches
        });
        let mut writes = Clustered::new(32, 10, 0.5, 6);
        for (i, slot) in vectors.iter_mut().enumerate().take(1500) {
            let v = writes.sample().0;
            index
                .upsert(
                    &ItemId::from(format!("i{i}")),
                    &v,
                    ItemAttributes::default(),
                )
                .unwrap();
            *slot = v;
        }
        assert_eq!(reader.join().unwrap(), 1000);
    });
    index.wait_for_rebuild();
    let stats = index.stats();
    assert_eq!(stats.live, 2000);
    assert!(stats.rebuilds >= 1, "{stats:?}");
    // Writes during the rebuild were carried into the new graph: every item is found by
    // its own vector.
    for (i, v) in vectors.iter().enumerate() {
        let hits = index.search(v, 1, None, &SearchFilter::default()).unwrap();
        assert_eq!(hits[0].id.as_str(), format!("i{i}"), "item {i} lost");
    }
}
