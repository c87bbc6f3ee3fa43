//! Training of gradient-boosted trees: inputs cut into quantile bins once, one tree per
//! round grown depth-first on histograms of gradients (the smaller child's histogram built,
//! the larger one's by subtraction), Newton leaf values with L2 shrinkage, and the number of
//! trees chosen on the validation split. Gradients are LambdaMART's for the LambdaRank
//! objective and weighted logistic loss's for the pointwise one.

use crate::forest::{Forest, Tree};
use crate::learned::{inputs, INPUT_COUNT};
use crate::train::{Example, Objective, Response, TrainConfig};
use crate::PriorRanker;

/// Most bins per input (a bin index fits a byte).
const MAX_BINS: usize = 64;
/// L2 penalty on leaf values (XGBoost's `lambda`).
const L2: f64 = 1.0;
/// Fewest training rows in a leaf.
const MIN_LEAF_ROWS: usize = 20;
/// Least summed hessian in a leaf (XGBoost's `min_child_weight`, scaled to these losses).
const MIN_LEAF_HESSIAN: f64 = 1e-3;
/// Newton steps that fit the prior's scale before boosting from it.
const PRIOR_FIT_STEPS: usize = 20;

/// Tree settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeSettings {
    /// Most splits from the root to a leaf.
    pub depth: usize,
    /// Boost from the hand-set prior's score, its scale (and for click probabilities an
    /// offset) fitted to the loss first, so the trees learn corrections to it; otherwise
    /// from a constant.
    pub from_prior: bool,
}

/// What boosting produced: the forest cut to its best round, and the rounds it ran.
pub(crate) struct Boosted {
    pub forest: Forest,
    pub rounds_run: usize,
    pub best_round: usize,
}

/// Boosts trees on `train_set` (logged positions as inputs), choosing the number of trees by
/// `select` (higher is better) over the scores of `serving_validation`.
pub(crate) fn fit(
    train_set: &[&Example],
    serving_validation: &[[f32; INPUT_COUNT]],
    settings: TreeSettings,
    config: &TrainConfig,
    positive_weight: f64,
    responses: &[Response],
    select: impl Fn(&[f32]) -> f64,
) -> Boosted {
    let lambdarank = config.objective == Objective::LambdaRank;
    // LambdaRank learns only from responses with a pair; the pointwise loss from every row.
    let rows: Vec<u32> = if lambdarank {
        responses
            .iter()
            .flat_map(|r| r.rows.iter().copied())
            .collect()
    } else {
        (0..train_set.len() as u32).collect()
    };
    let x: Vec<[f32; INPUT_COUNT]> = train_set
        .iter()
        .map(|e| inputs(&e.features, e.position))
        .collect();
    let bins = Bins::new(&x, &rows);
    let prior = PriorRanker::default();
    let mut forest = Forest {
        base: 0.0,
        prior_scale: 0.0,
        prior_weights: prior.weights().to_vec(),
        trees: Vec::new(),
    };
    let clicked: Vec<bool> = train_set.iter().map(|e| e.clicked).collect();
    let mut gradients = vec![0.0f32; x.len()];
    let mut hessians = vec![0.0f32; x.len()];
    let gradients_at = |scores: &[f32], gradients: &mut [f32], hessians: &mut [f32]| {
        if lambdarank {
            lambda_gradients(responses, scores, gradients, hessians);
        } else {
            logistic_gradients(
                &rows,
                &clicked,
                scores,
                positive_weight,
                gradients,
                hessians,
            );
        }
    };
    if settings.from_prior {
        let (scale, base) = fit_prior(&x, &rows, prior.weights(), lambdarank, gradients_at);
        forest.prior_scale = scale;
        forest.base = base;
    }
    let mut scores: Vec<f32> = x
        .iter()
        .map(|x| forest.base + forest.prior_score(x))
        .collect();
    let mut validation_scores: Vec<f32> = serving_validation
        .iter()
        .map(|x| forest.base + forest.prior_score(x))
        .collect();
    let mut order = rows.clone();
    // No tree at all (the scaled prior, or a constant) is a candidate too.
    let mut best = (select(&validation_scores), 0usize);
    let mut rounds_run = 0;
    for round in 1..=config.max_epochs {
        rounds_run = round;
        gradients_at(&scores, &mut gradients, &mut hessians);
        let mut grower = Grower {
            bins: &bins,
            gradients: &gradients,
            hessians: &hessians,
            shrinkage: config.learning_rate,
            depth: settings.depth,
            tree: Tree::default(),
        };
        let histogram = grower.histogram(&order);
        grower.grow(&mut order, histogram, 0, &mut scores);
        let tree = grower.tree;
        for (score, x) in validation_scores.iter_mut().zip(serving_validation) {
            *score += tree.output(x);
        }
        forest.trees.push(tree);
        let selection = select(&validation_scores);
        if selection > best.0 {
            best = (selection, round);
        }
        if round - best.1 >= config.patience {
            break;
        }
    }
    forest.trees.truncate(best.1);
    Boosted {
        forest,
        rounds_run,
        best_round: best.1,
    }
}

/// The scale of the prior's score (and, for click probabilities, an offset) that minimises
/// the loss, by Newton steps on the two of them together. The prior's weights were set by
/// hand for ranking, not as logits, so its raw score saturates the logistic loss. Pointwise
/// starts from scale 0 (every probability 0.5 with the balanced click weight); LambdaRank,
/// which has no offset and whose pair order a scale of 0 would tie, from 1. Each step moves
/// scores by at most 1 for a typical candidate, so a saturated loss cannot throw it far.
fn fit_prior(
    x: &[[f32; INPUT_COUNT]],
    rows: &[u32],
    weights: &[f32],
    lambdarank: bool,
    gradients_at: impl Fn(&[f32], &mut [f32], &mut [f32]),
) -> (f32, f32) {
    let prior: Vec<f64> = x
        .iter()
        .map(|x| weights.iter().zip(x).map(|(w, v)| f64::from(w * v)).sum())
        .collect();
    let n = rows.len().max(1) as f64;
    let mean = rows.iter().map(|&r| prior[r as usize]).sum::<f64>() / n;
    let spread = (rows
        .iter()
        .map(|&r| (prior[r as usize] - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
        .max(1e-6);
    let (mut scale, mut base) = (if lambdarank { 1.0f64 } else { 0.0 }, 0.0f64);
    let mut scores = vec![0.0f32; x.len()];
    let mut gradients = vec![0.0f32; x.len()];
    let mut hessians = vec![0.0f32; x.len()];
    for _ in 0..PRIOR_FIT_STEPS {
        for &r in rows {
            scores[r as usize] = (base + scale * prior[r as usize]) as f32;
        }
        gradients_at(&scores, &mut gradients, &mut hessians);
        // Gradient and hessian of the loss in (scale, base).
        let (mut gs, mut gb, mut hss, mut hsb, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &r in rows {
            let (g, h, p) = (
                f64::from(gradients[r as usize]),
                f64::from(hessians[r as usize]),
                prior[r as usize],
            );
            gs += g * p;
            gb += g;
            hss += h * p * p;
            hsb += h * p;
            hbb += h;
        }
        let (step_scale, step_base) = if lambdarank {
            (-gs / (hss + 1e-9), 0.0)
        } else {
            let det = hss * hbb - hsb * hsb;
            if det.abs() < 1e-12 {
                break;
            }
            (-(hbb * gs - hsb * gb) / det, -(hss * gb - hsb * gs) / det)
        };
        let step_scale = step_scale.clamp(-1.0 / spread, 1.0 / spread);
        let step_base = step_base.clamp(-1.0, 1.0);
        scale = (scale + step_scale).max(0.0);
        base += step_base;
    }
    (scale as f32, base as f32)
}

/// Weighted logistic loss: clicks weigh `positive_weight`, so the classes balance.
fn logistic_gradients(
    rows: &[u32],
    clicked: &[bool],
    scores: &[f32],
    positive_weight: f64,
    gradients: &mut [f32],
    hessians: &mut [f32],
) {
    for &r in rows {
        let r = r as usize;
        let p = 1.0 / (1.0 + (-f64::from(scores[r])).exp());
        let (y, w) = if clicked[r] {
            (1.0, positive_weight)
        } else {
            (0.0, 1.0)
        };
        gradients[r] = (w * (p - y)) as f32;
        hessians[r] = (w * p * (1.0 - p)).max(1e-6) as f32;
    }
}

/// LambdaMART's gradients: for every (clicked i, not clicked j) pair of a response, with
/// `ρ = 1 / (1 + e^(s_i - s_j))` and `Δ` the NDCG change of swapping them in the current
/// order, i is pushed up by `Δ ρ` and j down by as much; the hessians are `Δ ρ (1 - ρ)`.
fn lambda_gradients(
    responses: &[Response],
    scores: &[f32],
    gradients: &mut [f32],
    hessians: &mut [f32],
) {
    for response in responses {
        let s: Vec<f32> = response.rows.iter().map(|&r| scores[r as usize]).collect();
        let n = s.len();
        let (mut g, mut h) = (vec![0.0f64; n], vec![0.0f64; n]);
        for (i, j, delta) in response.pairs(&s) {
            let rho = 1.0 / (1.0 + f64::from(s[i] - s[j]).exp());
            g[i] -= delta * rho;
            g[j] += delta * rho;
            let curvature = delta * rho * (1.0 - rho);
            h[i] += curvature;
            h[j] += curvature;
        }
        for (k, &r) in response.rows.iter().enumerate() {
            gradients[r as usize] = g[k] as f32;
            hessians[r as usize] = h[k].max(1e-9) as f32;
        }
    }
}

/// Every input cut at quantiles of its training values, and each row's bin per input.
struct Bins {
    /// Per input, ascending: bin `b` holds the values `<= cuts[b]` (and above the cut
    /// before); the last bin the values above every cut.
    cuts: Vec<Vec<f32>>,
    /// Row-major: `codes[row * INPUT_COUNT + input]`.
    codes: Vec<u8>,
}

impl Bins {
    fn new(x: &[[f32; INPUT_COUNT]], rows: &[u32]) -> Self {
        // Quantiles from an even sample of at most 100k rows.
        let step = rows.len().div_ceil(100_000).max(1);
        let cuts: Vec<Vec<f32>> = (0..INPUT_COUNT)
            .map(|input| {
                let mut values: Vec<f32> = rows
                    .iter()
                    .step_by(step)
                    .map(|&r| x[r as usize][input])
                    .filter(|v| v.is_finite())
                    .collect();
                values.sort_by(f32::total_cmp);
                values.dedup();
                let mut cuts: Vec<f32> = if values.len() <= MAX_BINS {
                    values.clone()
                } else {
                    (1..MAX_BINS)
                        .map(|q| values[q * values.len() / MAX_BINS])
                        .collect()
                };
                cuts.dedup();
                // The largest value needs no cut: above every cut is the last bin.
                if cuts.last().is_some() && cuts.last() == values.last() {
                    cuts.pop();
                }
                cuts
            })
            .collect();
        let mut codes = vec![0u8; x.len() * INPUT_COUNT];
        for (row, values) in x.iter().enumerate() {
            for (input, v) in values.iter().enumerate() {
                codes[row * INPUT_COUNT + input] = cuts[input].partition_point(|c| c < v) as u8;
            }
        }
        Self { cuts, codes }
    }

    fn code(&self, row: u32, input: usize) -> usize {
        self.codes[row as usize * INPUT_COUNT + input] as usize
    }
}

/// Per input and bin: summed gradient, summed hessian, rows.
#[derive(Clone)]
struct Histogram(Vec<(f64, f64, u32)>);

impl Histogram {
    fn totals(&self) -> (f64, f64, usize) {
        // Every row falls in one bin of input 0.
        self.0[..MAX_BINS]
            .iter()
            .fold((0.0, 0.0, 0), |(g, h, n), b| {
                (g + b.0, h + b.1, n + b.2 as usize)
            })
    }

    fn minus(&self, other: &Histogram) -> Histogram {
        Histogram(
            self.0
                .iter()
                .zip(&other.0)
                .map(|(a, b)| (a.0 - b.0, a.1 - b.1, a.2 - b.2))
                .collect(),
        )
    }
}

/// Grows one tree.
struct Grower<'a> {
    bins: &'a Bins,
    gradients: &'a [f32],
    hessians: &'a [f32],
    shrinkage: f64,
    depth: usize,
    tree: Tree,
}

impl Grower<'_> {
    fn histogram(&self, rows: &[u32]) -> Histogram {
        let mut histogram = vec![(0.0f64, 0.0f64, 0u32); INPUT_COUNT * MAX_BINS];
        for &r in rows {
            let (g, h) = (
                f64::from(self.gradients[r as usize]),
                f64::from(self.hessians[r as usize]),
            );
            let codes = &self.bins.codes[r as usize * INPUT_COUNT..][..INPUT_COUNT];
            for (input, &code) in codes.iter().enumerate() {
                let bin = &mut histogram[input * MAX_BINS + code as usize];
                bin.0 += g;
                bin.1 += h;
                bin.2 += 1;
            }
        }
        Histogram(histogram)
    }

    /// Grows the subtree over `rows` (reordered in place, left rows first), adds each leaf's
    /// value to its rows' `scores`, and returns the subtree's root.
    fn grow(
        &mut self,
        rows: &mut [u32],
        histogram: Histogram,
        depth: usize,
        scores: &mut [f32],
    ) -> u32 {
        let (g, h, n) = histogram.totals();
        let value = (-g / (h + L2) * self.shrinkage) as f32;
        let node = self.tree.value.len();
        self.tree.value.push(value);
        self.tree.input.push(0);
        self.tree.threshold.push(0.0);
        self.tree.left.push(0);
        self.tree.right.push(0);
        let split = if depth < self.depth && n >= 2 * MIN_LEAF_ROWS {
            self.best_split(&histogram, g, h, n)
        } else {
            None
        };
        let Some((input, bin)) = split else {
            for &r in rows.iter() {
                scores[r as usize] += value;
            }
            return node as u32;
        };
        // Partition: rows whose code is at most `bin` go left.
        let mut boundary = 0;
        for i in 0..rows.len() {
            if self.bins.code(rows[i], input) <= bin {
                rows.swap(i, boundary);
                boundary += 1;
            }
        }
        let (left_rows, right_rows) = rows.split_at_mut(boundary);
        let (left_histogram, right_histogram) = if left_rows.len() <= right_rows.len() {
            let small = self.histogram(left_rows);
            let large = histogram.minus(&small);
            (small, large)
        } else {
            let small = self.histogram(right_rows);
            let large = histogram.minus(&small);
            (large, small)
        };
        drop(histogram);
        let left = self.grow(left_rows, left_histogram, depth + 1, scores);
        let right = self.grow(right_rows, right_histogram, depth + 1, scores);
        self.tree.input[node] = input as u16;
        self.tree.threshold[node] = self.bins.cuts[input][bin];
        self.tree.left[node] = left;
        self.tree.right[node] = right;
        node as u32
    }

    /// The (input, bin) split with the largest loss reduction that leaves both sides enough
    /// rows and hessian; `None` when no split reduces the loss.
    fn best_split(
        &self,
        histogram: &Histogram,
        g: f64,
        h: f64,
        n: usize,
    ) -> Option<(usize, usize)> {
        let parent = g * g / (h + L2);
        let mut best: Option<(f64, usize, usize)> = None;
        for input in 0..INPUT_COUNT {
            // Splits after each bin but the last (which holds the values above every cut).
            let bins = &histogram.0[input * MAX_BINS..][..self.bins.cuts[input].len()];
            let (mut gl, mut hl, mut nl) = (0.0, 0.0, 0usize);
            for (bin, &(bin_g, bin_h, bin_n)) in bins.iter().enumerate() {
                gl += bin_g;
                hl += bin_h;
                nl += bin_n as usize;
                let (gr, hr, nr) = (g - gl, h - hl, n - nl);
                if nl < MIN_LEAF_ROWS || hl < MIN_LEAF_HESSIAN {
                    continue;
                }
                if nr < MIN_LEAF_ROWS || hr < MIN_LEAF_HESSIAN {
                    break;
                }
                let gain = gl * gl / (hl + L2) + gr * gr / (hr + L2) - parent;
                if gain > best.map_or(1e-12, |b| b.0) {
                    best = Some((gain, input, bin));
                }
            }
        }
        best.map(|(_, input, bin)| (input, bin))
    }
}
