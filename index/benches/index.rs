//! Criterion benches of shelf-index on a seeded clustered fixture (384-d, like MiniLM):
//! single upserts into a 20k index, and searches unfiltered and at 1%/10%/50% selectivity.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use shelf_index::synthetic::{Clustered, Rng};
use shelf_index::{HnswIndex, IndexConfig};
use shelf_types::{ItemAttributes, ItemId, SearchFilter};

const DIM: usize = 384;
const N: usize = 20_000;

fn fixture() -> (HnswIndex, Vec<Vec<f32>>) {
    let mut data = Clustered::new(DIM, 200, 0.8, 1);
    let base = data.take(N);
    let queries = data.take(200);
    let ids: Vec<ItemId> = (0..N).map(|i| ItemId::from(format!("item-{i}"))).collect();
    let mut rng = Rng::new(2);
    let prices: Vec<f64> = (0..N).map(|_| rng.uniform()).collect();
    let items = ids.iter().zip(&base).zip(&prices).map(|((id, v), p)| {
        (
            id,
            &v[..],
            ItemAttributes {
                price: Some(*p),
                ..Default::default()
            },
        )
    });
    (
        HnswIndex::build(IndexConfig::new(DIM), items).expect("build"),
        queries,
    )
}

fn search(c: &mut Criterion) {
    let (index, queries) = fixture();
    let mut group = c.benchmark_group("search_k10");
    for selectivity in [None, Some(0.01), Some(0.1), Some(0.5)] {
        let filter = SearchFilter {
            price_max: selectivity,
            ..Default::default()
        };
        let name = selectivity.map_or("unfiltered".to_string(), |s| format!("selectivity_{s}"));
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                index
                    .search(&queries[i], 10, None, &filter)
                    .expect("search")
            })
        });
    }
    group.finish();
}

fn upsert(c: &mut Criterion) {
    let (index, _) = fixture();
    let mut data = Clustered::new(DIM, 200, 0.8, 3);
    let mut next = 0usize;
    c.bench_function("upsert_into_20k", |b| {
        b.iter(|| {
            let (vector, _) = data.sample();
            // Replace existing items: the common case of a catalog update.
            let id = ItemId::from(format!("item-{}", next % N));
            next += 1;
            index
                .upsert(&id, &vector, ItemAttributes::default())
                .expect("upsert")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = search, upsert
}
criterion_main!(benches);
