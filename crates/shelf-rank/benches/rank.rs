//! Serving cost of each ranker: scoring one request's candidates (all at once, as the
//! re-rank does for every search, and one by one), and explaining one candidate (as
//! `explain: true` does per result).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shelf_rank::{
    input_names, Forest, LearnedModel, Params, PriorRanker, TrainingReport, Tree, INPUT_COUNT,
    SCHEMA_VERSION,
};
use shelf_types::{Features, Ranker, SplitMix, FEATURE_COUNT};
use std::hint::black_box;

/// Candidates the re-rank scores per request (stage 1's default depth).
const CANDIDATES: usize = 200;

fn features(rng: &mut SplitMix) -> Features {
    let mut f = [0.0f32; FEATURE_COUNT];
    for x in f.iter_mut() {
        *x = rng.unit() as f32;
    }
    f
}

/// A full binary tree of `depth` with random splits.
fn tree(depth: usize, rng: &mut SplitMix) -> Tree {
    let nodes = (1 << (depth + 1)) - 1;
    let inner = (1 << depth) - 1;
    let mut t = Tree::default();
    for node in 0..nodes {
        let is_inner = node < inner;
        t.input.push(rng.below(INPUT_COUNT) as u16);
        t.threshold.push(rng.unit() as f32);
        t.left.push(if is_inner { 2 * node as u32 + 1 } else { 0 });
        t.right.push(if is_inner { 2 * node as u32 + 2 } else { 0 });
        t.value.push((rng.unit() - 0.5) as f32 * 0.1);
    }
    t
}

fn model(params: Params) -> LearnedModel {
    LearnedModel {
        schema_version: SCHEMA_VERSION,
        inputs: input_names().iter().map(|s| s.to_string()).collect(),
        version: params.kind().into(),
        params,
        report: TrainingReport::default(),
    }
}

fn rankers() -> Vec<(String, Box<dyn Ranker>)> {
    let mut rng = SplitMix(1);
    let mut weights = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.unit() as f32 - 0.5).collect() };
    let logistic = Params::Logistic {
        weights: weights(INPUT_COUNT),
        bias: -1.0,
    };
    let mlp = Params::Mlp {
        w1: (0..16).map(|_| weights(INPUT_COUNT)).collect(),
        b1: weights(16),
        w2: weights(16),
        b2: 0.1,
    };
    let mut rng = SplitMix(2);
    let mut out: Vec<(String, Box<dyn Ranker>)> = vec![
        ("prior".into(), Box::new(PriorRanker::default())),
        ("logistic".into(), Box::new(model(logistic))),
        ("mlp-16".into(), Box::new(model(mlp))),
    ];
    for (trees, depth) in [(100, 3), (300, 6)] {
        let forest = Forest {
            base: -2.0,
            prior_scale: 0.5,
            prior_weights: PriorRanker::default().weights().to_vec(),
            trees: (0..trees).map(|_| tree(depth, &mut rng)).collect(),
        };
        out.push((
            format!("trees-{trees}x{depth}"),
            Box::new(model(Params::Trees(forest))),
        ));
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut rng = SplitMix(3);
    let candidates: Vec<Features> = (0..CANDIDATES).map(|_| features(&mut rng)).collect();
    let rankers = rankers();
    // What the re-rank calls: every candidate of a request at once.
    let mut all = c.benchmark_group("score_all_200_candidates");
    all.throughput(Throughput::Elements(CANDIDATES as u64));
    for (name, ranker) in &rankers {
        all.bench_with_input(BenchmarkId::from_parameter(name), ranker, |b, r| {
            b.iter(|| r.score_all(black_box(&candidates)))
        });
    }
    all.finish();
    let mut one = c.benchmark_group("score_200_candidates_one_by_one");
    one.throughput(Throughput::Elements(CANDIDATES as u64));
    for (name, ranker) in &rankers {
        one.bench_with_input(BenchmarkId::from_parameter(name), ranker, |b, r| {
            b.iter(|| {
                candidates
                    .iter()
                    .map(|f| r.score(black_box(f)))
                    .sum::<f32>()
            })
        });
    }
    one.finish();
    let mut explain = c.benchmark_group("explain_one_candidate");
    for (name, ranker) in &rankers {
        explain.bench_with_input(BenchmarkId::from_parameter(name), ranker, |b, r| {
            b.iter(|| r.explain(black_box(&candidates[0])).len())
        });
    }
    explain.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
