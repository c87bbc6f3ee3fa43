//! Learned CTR models (logistic regression, a one-hidden-layer MLP, gradient-boosted trees):
//! their inputs, scoring, explanations, and the file format they are saved in.

use serde::{Deserialize, Serialize};
use shelf_types::{Contribution, Features, Ranker, FEATURE_COUNT, FEATURE_NAMES};

/// Version of the model inputs below. Versions 1 (without `covisit` and `trending`) and 2
/// (without `lexical_score`) still load: their weights are carried over by input name, the
/// new inputs get weight 0.
pub const SCHEMA_VERSION: u32 = 3;

/// Number of model inputs: the ranking features, then the position.
pub const INPUT_COUNT: usize = FEATURE_COUNT + 1;

/// The model inputs: [`FEATURE_NAMES`] then `position` (`1 / (1 + shown position)`, 0-based).
///
/// Position bias: clicks depend on where an item was shown, so training sees the position
/// as an input and learns its effect separately from the item's; at serving every candidate
/// gets the same position (the first slot), which removes it from the ranking.
pub fn input_names() -> Vec<&'static str> {
    let mut names = FEATURE_NAMES.to_vec();
    names.push("position");
    names
}

/// The model inputs of a candidate shown at `position` (0-based).
pub fn inputs(features: &Features, position: u32) -> [f32; INPUT_COUNT] {
    let mut x = [0.0; INPUT_COUNT];
    x[..FEATURE_COUNT].copy_from_slice(features);
    x[FEATURE_COUNT] = 1.0 / (1.0 + position as f32);
    x
}

/// The position every candidate gets at serving.
pub const SERVING_POSITION: u32 = 0;

/// The parameters of a learned model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Params {
    /// `logit = weights · x + bias`.
    Logistic { weights: Vec<f32>, bias: f32 },
    /// `logit = w2 · relu(w1 x + b1) + b2`, `w1` as `hidden` rows of `INPUT_COUNT`.
    Mlp {
        w1: Vec<Vec<f32>>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: f32,
    },
    /// `logit = base + prior_scale * prior(x) + Σ tree(x)`.
    Trees(crate::Forest),
}

impl Params {
    /// The kind of model (`logistic`, `mlp`, `trees`).
    pub fn kind(&self) -> &'static str {
        match self {
            Params::Logistic { .. } => "logistic",
            Params::Mlp { .. } => "mlp",
            Params::Trees(_) => "trees",
        }
    }

    /// The model's logit of a click.
    pub fn logit(&self, x: &[f32; INPUT_COUNT]) -> f32 {
        match self {
            Params::Logistic { weights, bias } => {
                weights.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + bias
            }
            Params::Mlp { w1, b1, w2, b2 } => {
                let mut out = *b2;
                for ((row, b), w) in w1.iter().zip(b1).zip(w2) {
                    let h = row.iter().zip(x).map(|(a, v)| a * v).sum::<f32>() + b;
                    out += w * h.max(0.0);
                }
                out
            }
            Params::Trees(forest) => forest.logit(x),
        }
    }

    fn check(&self) -> Result<(), String> {
        let ok = match self {
            Params::Logistic { weights, .. } => weights.len() == INPUT_COUNT,
            Params::Mlp { w1, b1, w2, .. } => {
                !w1.is_empty()
                    && w1.iter().all(|r| r.len() == INPUT_COUNT)
                    && b1.len() == w1.len()
                    && w2.len() == w1.len()
            }
            Params::Trees(forest) => return forest.check(),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("parameter shapes do not fit {INPUT_COUNT} inputs"))
        }
    }
}

/// What training saw and reached.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingReport {
    /// What the model was trained to minimise (models saved before objectives existed are
    /// pointwise).
    #[serde(default)]
    pub objective: crate::Objective,
    pub train_examples: usize,
    pub train_clicks: usize,
    pub validation_examples: usize,
    pub validation_clicks: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    /// Validation AUC of this model's ranking: every example scored at the serving
    /// position, as searches are.
    pub validation_auc: f64,
    /// Validation AUC with the logged positions as inputs (position bias included).
    #[serde(default)]
    pub validation_auc_logged_positions: f64,
    /// Validation log-loss, at the logged positions.
    pub validation_log_loss: f64,
    /// Validation AUC of the hand-set prior model on the same examples.
    pub prior_validation_auc: f64,
    /// Validation AUC over pairs shown at the same position only (at the serving
    /// position), of this model and of the prior. Unlike the plain AUC it does not reward
    /// ranking like the ranker that was live when the clicks were logged; early stopping
    /// and promotion use it.
    #[serde(default)]
    pub validation_position_matched_auc: f64,
    #[serde(default)]
    pub prior_validation_position_matched_auc: f64,
    /// Mean NDCG@10 of the clicks when each validation response is re-ordered by this
    /// model (at the serving position), and by the prior. The logged order came from the
    /// ranker live at the time, which favours it: clicks follow positions.
    #[serde(default)]
    pub validation_clicks_ndcg_at_10: f64,
    #[serde(default)]
    pub prior_validation_clicks_ndcg_at_10: f64,
    /// Drop of validation AUC (logged positions) when one input is shuffled (permutation
    /// importance), by input.
    pub importance: Vec<(String, f64)>,
    /// Weight of clicks in the loss (negatives per positive in the training set).
    pub positive_weight: f64,
}

/// A trained model with its schema and training report, as saved on disk (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearnedModel {
    pub schema_version: u32,
    pub inputs: Vec<String>,
    /// A name unique per training run (`{kind}-{unix ms}`).
    pub version: String,
    pub params: Params,
    pub report: TrainingReport,
}

impl LearnedModel {
    /// Reads a saved model, refusing an unknown schema or malformed parameters; a
    /// schema-1 model is carried over to this schema.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let mut model: LearnedModel =
            serde_json::from_str(text).map_err(|e| format!("not a shelf model: {e}"))?;
        if model.schema_version < SCHEMA_VERSION {
            model = model.upgrade()?;
        }
        if model.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "model schema {} but this build reads schema {SCHEMA_VERSION}",
                model.schema_version
            ));
        }
        if model.inputs != input_names() {
            return Err(format!(
                "model inputs {:?} differ from {:?}",
                model.inputs,
                input_names()
            ));
        }
        model.params.check()?;
        Ok(model)
    }

    /// A model of an older schema as one of this schema that scores every candidate the
    /// same: each weight moves to its input's new place, the inputs it did not have get
    /// weight 0.
    fn upgrade(mut self) -> Result<Self, String> {
        let names = input_names();
        let from: Vec<Option<usize>> = names
            .iter()
            .map(|name| self.inputs.iter().position(|old| old == name))
            .collect();
        let known = from.iter().flatten().count();
        if known != self.inputs.len() {
            return Err(format!(
                "schema-{} model inputs {:?} are not a subset of {names:?}",
                self.schema_version, self.inputs
            ));
        }
        let remap = |old: &[f32]| -> Vec<f32> {
            from.iter()
                .map(|i| i.and_then(|i| old.get(i).copied()).unwrap_or(0.0))
                .collect()
        };
        // Where each old input went, for the trees' split inputs.
        let to: Vec<usize> = self
            .inputs
            .iter()
            .map(|old| {
                names
                    .iter()
                    .position(|name| name == old)
                    .unwrap_or(usize::MAX)
            })
            .collect();
        self.params = match self.params {
            Params::Trees(forest) => Params::Trees(forest.renumbered(&to)?),
            Params::Logistic { weights, bias } => Params::Logistic {
                weights: remap(&weights),
                bias,
            },
            Params::Mlp { w1, b1, w2, b2 } => Params::Mlp {
                w1: w1.iter().map(|row| remap(row)).collect(),
                b1,
                w2,
                b2,
            },
        };
        self.inputs = names.iter().map(|s| s.to_string()).collect();
        self.schema_version = SCHEMA_VERSION;
        Ok(self)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model always serialises")
    }

    /// Click probability of a candidate shown at `position`.
    pub fn probability(&self, features: &Features, position: u32) -> f32 {
        sigmoid(self.params.logit(&inputs(features, position)))
    }
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl Ranker for LearnedModel {
    fn name(&self) -> &str {
        &self.version
    }

    /// The logit of a click at the serving position.
    fn score(&self, features: &Features) -> f32 {
        self.params.logit(&inputs(features, SERVING_POSITION))
    }

    fn score_all(&self, features: &[Features]) -> Vec<f32> {
        match &self.params {
            Params::Trees(forest) => forest.logits(
                &features
                    .iter()
                    .map(|f| inputs(f, SERVING_POSITION))
                    .collect::<Vec<_>>(),
            ),
            _ => features.iter().map(|f| self.score(f)).collect(),
        }
    }

    /// Logistic: `w_i x_i` per input plus `bias`. MLP: exact Shapley values of the inputs
    /// against an all-zero baseline (all 2^13 coalitions), plus `bias` = the logit of the
    /// baseline. Trees: the prior's `w_i x_i` plus each split's change of value along the
    /// candidate's path (Saabas), `bias` the base plus the roots' values. In every case the
    /// contributions sum to the score.
    fn explain(&self, features: &Features) -> Vec<Contribution> {
        let x = inputs(features, SERVING_POSITION);
        let (contributions, base) = match &self.params {
            Params::Logistic { weights, bias } => {
                let mut terms = [0.0; INPUT_COUNT];
                for (t, (w, v)) in terms.iter_mut().zip(weights.iter().zip(&x)) {
                    *t = w * v;
                }
                (terms, *bias)
            }
            Params::Mlp { w1, b1, w2, b2 } => (
                mlp_shapley(w1, b1, w2, *b2, &x),
                self.params.logit(&[0.0; INPUT_COUNT]),
            ),
            Params::Trees(forest) => forest.attribute(&x),
        };
        let names = input_names();
        let mut out: Vec<Contribution> = contributions
            .into_iter()
            .enumerate()
            .map(|(i, contribution)| Contribution {
                feature: names[i],
                value: x[i],
                contribution,
            })
            .collect();
        out.push(Contribution {
            feature: "bias",
            value: 1.0,
            contribution: base,
        });
        out
    }
}

/// Exact Shapley values of `x`'s inputs for the network's logit, absent inputs set to 0.
/// The 2^n coalitions are visited in Gray-code order, so each differs from the one before by
/// a single input: the hidden pre-activations move by that input's column times its value
/// instead of being recomputed (in f64, so 2^n updates do not drift).
fn mlp_shapley(
    w1: &[Vec<f32>],
    b1: &[f32],
    w2: &[f32],
    b2: f32,
    x: &[f32; INPUT_COUNT],
) -> [f32; INPUT_COUNT] {
    let n = INPUT_COUNT;
    let coalitions = 1usize << n;
    let output = |pre: &[f64]| {
        pre.iter().zip(w2).fold(f64::from(b2), |sum, (p, w)| {
            sum + f64::from(*w) * p.max(0.0)
        })
    };
    let mut pre: Vec<f64> = b1.iter().map(|b| f64::from(*b)).collect();
    let mut values = vec![0.0f64; coalitions];
    values[0] = output(&pre);
    let mut mask = 0usize;
    for step in 1..coalitions {
        // Gray code: step k flips the bit of k's lowest set bit.
        let i = step.trailing_zeros() as usize;
        let sign = if mask & (1 << i) == 0 { 1.0 } else { -1.0 };
        mask ^= 1 << i;
        let delta = sign * f64::from(x[i]);
        for (p, row) in pre.iter_mut().zip(w1) {
            *p += delta * f64::from(row[i]);
        }
        values[mask] = output(&pre);
    }
    shapley_from_values(&values)
}

/// Shapley values from the value of every coalition (`values[mask]`, bit i set when input i
/// is present): phi_i = sum over S without i of |S|! (n - |S| - 1)! / n! (v(S + i) - v(S)).
fn shapley_from_values(values: &[f64]) -> [f32; INPUT_COUNT] {
    let n = INPUT_COUNT;
    let factorial = |k: usize| (1..=k).map(|v| v as f64).product::<f64>();
    let weights: Vec<f64> = (0..n)
        .map(|s| factorial(s) * factorial(n - s - 1) / factorial(n))
        .collect();
    let mut phi = [0.0; INPUT_COUNT];
    for (i, p) in phi.iter_mut().enumerate() {
        let mut total = 0.0f64;
        for mask in 0..values.len() {
            if mask & (1 << i) == 0 {
                let s = mask.count_ones() as usize;
                total += weights[s] * (values[mask | (1 << i)] - values[mask]);
            }
        }
        *p = total as f32;
    }
    phi
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shapley values by the definition: every coalition's logit computed afresh.
    fn shapley_by_definition(params: &Params, x: &[f32; INPUT_COUNT]) -> [f32; INPUT_COUNT] {
        let values: Vec<f64> = (0..1usize << INPUT_COUNT)
            .map(|mask| {
                let mut v = [0.0; INPUT_COUNT];
                for i in 0..INPUT_COUNT {
                    if mask & (1 << i) != 0 {
                        v[i] = x[i];
                    }
                }
                f64::from(params.logit(&v))
            })
            .collect();
        shapley_from_values(&values)
    }

    #[test]
    fn mlp_shapley_values_equal_the_definition() {
        let params = mlp();
        let Params::Mlp { w1, b1, w2, b2 } = &params else {
            unreachable!()
        };
        for x in [
            [
                0.8, 0.5, 0.3, 0.06, 0.2, 0.9, 0.5, 0.5, 0.25, 0.4, 0.7, 0.6, 0.0,
            ],
            [
                1.0, 0.0, 0.9, 0.1, 0.0, 0.3, 0.8, 0.2, 0.6, 0.05, 0.2, 0.9, 1.0,
            ],
        ] {
            let fast = mlp_shapley(w1, b1, w2, *b2, &x);
            let reference = shapley_by_definition(&params, &x);
            for (f, r) in fast.iter().zip(&reference) {
                assert!((f - r).abs() < 1e-5, "{fast:?} vs {reference:?}");
            }
            // Some inputs matter, so the comparison is not between two zeros.
            assert!(reference.iter().any(|r| r.abs() > 0.01), "{reference:?}");
        }
    }

    fn mlp() -> Params {
        Params::Mlp {
            w1: vec![
                (0..INPUT_COUNT).map(|i| 0.1 * i as f32 - 0.3).collect(),
                (0..INPUT_COUNT).map(|i| 0.5 - 0.05 * i as f32).collect(),
            ],
            b1: vec![0.1, -0.2],
            w2: vec![1.5, -0.7],
            b2: 0.05,
        }
    }

    #[test]
    fn explanations_sum_to_the_score() {
        let features = [0.8, 0.5, 0.3, 0.06, 0.2, 0.9, 0.5, 0.5, 0.25, 0.4, 0.7, 0.6];
        for params in [
            Params::Logistic {
                weights: (0..INPUT_COUNT).map(|i| i as f32 * 0.1 - 0.2).collect(),
                bias: -2.0,
            },
            mlp(),
        ] {
            let model = LearnedModel {
                schema_version: SCHEMA_VERSION,
                inputs: input_names().iter().map(|s| s.to_string()).collect(),
                version: "t".into(),
                params,
                report: TrainingReport::default(),
            };
            let sum: f32 = model
                .explain(&features)
                .iter()
                .map(|c| c.contribution)
                .sum();
            assert!(
                (sum - model.score(&features)).abs() < 1e-4,
                "{sum} vs {}",
                model.score(&features)
            );
        }
    }

    #[test]
    fn a_saved_model_round_trips_and_bad_ones_are_refused() {
        let model = LearnedModel {
            schema_version: SCHEMA_VERSION,
            inputs: input_names().iter().map(|s| s.to_string()).collect(),
            version: "mlp-1".into(),
            params: mlp(),
            report: TrainingReport::default(),
        };
        let again = LearnedModel::from_json(&model.to_json()).unwrap();
        assert_eq!(again, model);
        let mut old = model.clone();
        old.schema_version = 7;
        assert!(LearnedModel::from_json(&old.to_json())
            .unwrap_err()
            .contains("schema"));
        let mut bad = model;
        bad.params = Params::Logistic {
            weights: vec![1.0],
            bias: 0.0,
        };
        assert!(LearnedModel::from_json(&bad.to_json()).is_err());
    }

    #[test]
    fn a_schema_1_model_loads_and_scores_as_before() {
        // Saved by the schema-1 build: nine features then position.
        let v1_inputs: Vec<String> = shelf_types::FEATURE_NAMES[..shelf_types::FEATURE_COUNT_V1]
            .iter()
            .chain(&["position"])
            .map(|s| s.to_string())
            .collect();
        let v1_weights: Vec<f32> = (0..v1_inputs.len()).map(|i| 0.1 * i as f32 - 0.3).collect();
        let v1_row: Vec<f32> = (0..v1_inputs.len()).map(|i| 0.05 * i as f32).collect();
        for params in [
            Params::Logistic {
                weights: v1_weights.clone(),
                bias: -1.0,
            },
            Params::Mlp {
                w1: vec![v1_row.clone(), v1_weights.clone()],
                b1: vec![0.1, 0.2],
                w2: vec![1.0, -0.5],
                b2: 0.3,
            },
            // Splits on the old position (input 9, now covisit's place) and on input 2.
            Params::Trees(crate::Forest {
                base: 0.2,
                prior_scale: 0.0,
                prior_weights: Vec::new(),
                trees: vec![crate::Tree {
                    input: vec![9, 0, 2, 0, 0],
                    threshold: vec![0.95, 0.0, 0.4, 0.0, 0.0],
                    left: vec![1, 0, 3, 0, 0],
                    right: vec![2, 0, 4, 0, 0],
                    value: vec![0.0, -1.0, 0.5, 0.3, 0.7],
                }],
            }),
        ] {
            let json = serde_json::json!({
                "schema_version": 1, "inputs": v1_inputs, "version": "logistic-1",
                "params": params, "report": TrainingReport::default(),
            });
            let model = LearnedModel::from_json(&json.to_string()).unwrap();
            assert_eq!(model.schema_version, SCHEMA_VERSION);
            assert_eq!(model.inputs, input_names());
            let v1_features = [0.8f32, 0.5, 0.3, 0.06, 0.2, 0.9, 0.5, 0.5, 0.25];
            let mut x = [0.0f32; INPUT_COUNT];
            x[..9].copy_from_slice(&v1_features);
            x[FEATURE_COUNT] = 1.0; // the serving position
                                    // The same logit as the schema-1 model on the old inputs, whatever the new
                                    // features are.
            let old_logit = match &params {
                Params::Logistic { weights, bias } => {
                    let old_x: Vec<f32> = v1_features.iter().copied().chain([1.0]).collect();
                    weights.iter().zip(&old_x).map(|(w, v)| w * v).sum::<f32>() + bias
                }
                Params::Trees(forest) => {
                    let mut old_x = [0.0f32; INPUT_COUNT];
                    old_x[..9].copy_from_slice(&v1_features);
                    old_x[9] = 1.0;
                    forest.logit(&old_x)
                }
                Params::Mlp { w1, b1, w2, b2 } => {
                    let old_x: Vec<f32> = v1_features.iter().copied().chain([1.0]).collect();
                    let mut out = *b2;
                    for ((row, b), w) in w1.iter().zip(b1).zip(w2) {
                        let h = row.iter().zip(&old_x).map(|(a, v)| a * v).sum::<f32>() + b;
                        out += w * h.max(0.0);
                    }
                    out
                }
            };
            x[9] = 0.9;
            x[10] = 0.4;
            assert!((model.params.logit(&x) - old_logit).abs() < 1e-5);
        }
    }
}
