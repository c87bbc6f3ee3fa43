//! Criterion benches of shelf-index on a seeded clustered fixture (384-d, like MiniLM), for
//! both graph backends: single upserts into a 20k index, and searches unfiltered and at
//! 1%/10%/50% selectivity; and the inner-product kernels the graph could use.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hnsw_rs::prelude::{DistDot, Distance};
use shelf_index::synthetic::{Clustered, Rng};
use shelf_index::{Backend, HnswIndex, IndexConfig};
use shelf_types::{ItemAttributes, ItemId, SearchFilter};

const DIM: usize = 384;
const N: usize = 20_000;

/// Items in each fixture: N under `cargo bench`; a small index when `cargo test` runs the
/// benches once each as a smoke test (four 20k builds, two of them hnsw_rs's, took 89 s of
/// CI on 2 cores).
fn items() -> usize {
    if std::env::args().any(|arg| arg == "--bench") {
        N
    } else {
        1_000
    }
}

const BACKENDS: [Backend; 2] = [Backend::Shelf, Backend::HnswRs];

fn fixture(backend: Backend) -> (HnswIndex, Vec<Vec<f32>>) {
    let n = items();
    let mut data = Clustered::new(DIM, 200, 0.8, 1);
    let base = data.take(n);
    let queries = data.take(200);
    let ids: Vec<ItemId> = (0..n).map(|i| ItemId::from(format!("item-{i}"))).collect();
    let mut rng = Rng::new(2);
    let prices: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
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
        HnswIndex::build(
            IndexConfig {
                backend,
                ..IndexConfig::new(DIM)
            },
            items,
        )
        .expect("build"),
        queries,
    )
}

fn search(c: &mut Criterion) {
    for backend in BACKENDS {
        search_backend(c, backend);
    }
}

fn search_backend(c: &mut Criterion, backend: Backend) {
    let (index, queries) = fixture(backend);
    let mut group = c.benchmark_group(format!("search_k10_{backend}"));
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
    for backend in BACKENDS {
        upsert_backend(c, backend);
    }
}

fn upsert_backend(c: &mut Criterion, backend: Backend) {
    let (index, _) = fixture(backend);
    let mut data = Clustered::new(DIM, 200, 0.8, 3);
    let mut next = 0usize;
    let n = items();
    c.bench_function(&format!("upsert_into_20k_{backend}"), |b| {
        b.iter(|| {
            let (vector, _) = data.sample();
            // Replace existing items: the common case of a catalog update.
            let id = ItemId::from(format!("item-{}", next % n));
            next += 1;
            index
                .upsert(&id, &vector, ItemAttributes::default())
                .expect("upsert")
        })
    });
}

/// The inner-product candidates on 384-d vectors: SimSIMD (what the graph uses), anndists'
/// `DistDot` (hnsw_rs's), and the portable Rust loop (baseline instruction set). `hot` cycles
/// through 8 rows (L1-resident: the kernel's own speed); `cold` through 8192 rows (12 MiB:
/// memory-bound, as in a graph walk).
fn dot_384(c: &mut Criterion) {
    let mut data = Clustered::new(DIM, 4, 0.8, 9);
    type Kernel = fn(&[f32], &[f32]) -> f32;
    let kernels: [(&str, Kernel); 4] = [
        ("simsimd", shelf_index::dot),
        ("pulp", dot_pulp),
        ("anndists_distdot", |a, b| 1.0 - DistDot.eval(a, b)),
        ("portable_loop", shelf_index::dot_portable),
    ];
    for (name, rows) in [("hot", data.take(8)), ("cold", data.take(8192))] {
        let mut group = c.benchmark_group(format!("dot_384_{name}"));
        for (kernel, f) in kernels {
            let mut i = 0;
            group.bench_function(kernel, |b| {
                b.iter(|| {
                    i = (i + 1) % (rows.len() - 1);
                    f(&rows[i], &rows[i + 1])
                })
            });
        }
        group.finish();
    }
}

/// Inner product with pulp (safe SIMD, runtime dispatch to AVX2+FMA on x86, NEON on ARM,
/// scalar elsewhere): four independent f32 accumulators of the widest vector available.
#[inline]
fn dot_pulp(a: &[f32], b: &[f32]) -> f32 {
    struct Dot<'a>(&'a [f32], &'a [f32]);
    impl pulp::WithSimd for Dot<'_> {
        type Output = f32;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, simd: S) -> f32 {
            let (a, a_tail) = S::as_simd_f32s(self.0);
            let (b, b_tail) = S::as_simd_f32s(self.1);
            let zero = simd.splat_f32s(0.0);
            let mut acc = [zero; 4];
            let (a4, a_rest) = a.as_chunks::<4>();
            let (b4, b_rest) = b.as_chunks::<4>();
            for (x, y) in a4.iter().zip(b4) {
                for lane in 0..4 {
                    acc[lane] = simd.mul_add_f32s(x[lane], y[lane], acc[lane]);
                }
            }
            for (x, y) in a_rest.iter().zip(b_rest) {
                acc[0] = simd.mul_add_f32s(*x, *y, acc[0]);
            }
            let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
            let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
            simd.reduce_sum_f32s(sum) + tail
        }
    }
    pulp::Arch::new().dispatch(Dot(a, b))
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = dot_384, search, upsert
}
criterion_main!(benches);
