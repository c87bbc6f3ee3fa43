//! Training of the learned models: a time-ordered train/validation split, a pointwise
//! objective (weighted binary cross-entropy, stopped on the position-matched validation AUC)
//! or LambdaRank (pairs within a response weighted by their NDCG change, stopped on the
//! validation clicks NDCG@10); the linear model and the MLP with candle and AdamW, the trees
//! by `boost`.

use crate::learned::{
    input_names, inputs, LearnedModel, Params, TrainingReport, INPUT_COUNT, SCHEMA_VERSION,
};
use crate::metrics::{auc, clicks_ndcg_at, log_loss, position_matched_auc};
use crate::PriorRanker;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use shelf_types::{Features, Ranker, SplitMix};

pub use crate::boost::TreeSettings;

/// One shown item: its features, where it was shown, whether it was clicked, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub features: Features,
    pub position: u32,
    pub clicked: bool,
    pub ts_ms: i64,
    /// The search response that showed it (examples of one request share it).
    pub request: u64,
}

/// Which model to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    Logistic,
    /// One hidden layer of this many ReLU units.
    Mlp {
        hidden: usize,
    },
    /// Gradient-boosted regression trees; an epoch is one tree.
    Trees(TreeSettings),
}

impl ModelKind {
    /// The name models of this kind are saved under.
    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::Logistic => "logistic",
            ModelKind::Mlp { .. } => "mlp",
            ModelKind::Trees(_) => "trees",
        }
    }
}

/// What training minimises, and what picks the epoch whose parameters are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Binary cross-entropy per shown item, clicks weighted up to balance the classes: a
    /// calibrated click probability. The epoch kept is the one with the best
    /// position-matched validation AUC.
    #[default]
    Pointwise,
    /// LambdaRank: within each response, a logistic loss on the score difference of every
    /// (clicked, not clicked) pair, weighted by how much the response's NDCG would change if
    /// the two swapped places in the current order; only the order within a response is
    /// learned. The epoch kept is the one with the best validation clicks NDCG@10. Position
    /// bias is handled as in the pointwise objective: the logged position is an input
    /// (its pair difference explains clicks on higher slots), fixed at serving.
    LambdaRank,
}

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub kind: ModelKind,
    pub objective: Objective,
    /// Most epochs (passes over the training examples; for trees, rounds of one tree).
    pub max_epochs: usize,
    pub batch_size: usize,
    /// AdamW's learning rate; for trees, the shrinkage of each tree's leaf values.
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Epochs without a better validation score (AUC or NDCG@10, per objective) before
    /// stopping.
    pub patience: usize,
    /// Newest share of examples (by time) held out for validation.
    pub validation_share: f64,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self::for_model(ModelKind::Logistic)
    }
}

impl TrainConfig {
    /// The default settings of a model kind: trees take more, smaller steps (up to 500
    /// trees with a shrinkage of 0.1, stopped after 50 without a better validation score).
    pub fn for_model(kind: ModelKind) -> Self {
        let trees = matches!(kind, ModelKind::Trees(_));
        Self {
            kind,
            objective: Objective::Pointwise,
            max_epochs: if trees { 500 } else { 60 },
            batch_size: 256,
            learning_rate: if trees { 0.1 } else { 0.02 },
            weight_decay: 1e-4,
            patience: if trees { 50 } else { 15 },
            validation_share: 0.2,
            seed: 7,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    #[error("invalid training settings: {0}")]
    Config(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Trains a model on `examples` (any order; they are sorted by time). `version` names it.
pub fn train(
    examples: &[Example],
    config: &TrainConfig,
    version: &str,
) -> Result<LearnedModel, TrainError> {
    if config.batch_size == 0
        || config.max_epochs == 0
        || !(0.0..1.0).contains(&config.validation_share)
        || !(config.learning_rate > 0.0 && config.learning_rate.is_finite())
        || matches!(config.kind, ModelKind::Trees(t) if t.depth == 0)
    {
        return Err(TrainError::Config(
            "batch_size, max_epochs, learning_rate and a tree's depth must be positive, validation_share in [0, 1)".into(),
        ));
    }
    let mut sorted: Vec<&Example> = examples.iter().collect();
    sorted.sort_by_key(|e| e.ts_ms);
    let split = ((sorted.len() as f64) * (1.0 - config.validation_share)).round() as usize;
    let (train_set, validation) = sorted.split_at(split);
    let clicks = |set: &[&Example]| set.iter().filter(|e| e.clicked).count();
    let (train_clicks, validation_clicks) = (clicks(train_set), clicks(validation));
    if train_clicks == 0 || train_clicks == train_set.len() {
        return Err(TrainError::NotEnoughData(format!(
            "the training part has {train_clicks} clicks in {} examples; both classes are needed",
            train_set.len()
        )));
    }
    if validation_clicks == 0 || validation_clicks == validation.len() {
        return Err(TrainError::NotEnoughData(format!(
            "the validation part has {validation_clicks} clicks in {} examples; both classes are needed",
            validation.len()
        )));
    }
    // Clicks are rare: weigh them by negatives per positive in the loss, then shift the
    // learned bias back by ln(weight) so probabilities stay calibrated.
    let positive_weight = (train_set.len() - train_clicks) as f64 / train_clicks as f64;

    let validation_inputs: Vec<[f32; INPUT_COUNT]> = validation
        .iter()
        .map(|e| inputs(&e.features, e.position))
        .collect();
    let validation_labels: Vec<bool> = validation.iter().map(|e| e.clicked).collect();
    let validation_positions: Vec<u32> = validation.iter().map(|e| e.position).collect();
    let matched_auc = |scores: &[f32]| {
        position_matched_auc(scores, &validation_labels, &validation_positions).unwrap_or(0.5)
    };
    // Ranking quality is judged as searches see it: at the serving position. (The logged
    // position explains much of the clicks but ranks nothing.)
    let serving_inputs: Vec<[f32; INPUT_COUNT]> = validation
        .iter()
        .map(|e| inputs(&e.features, crate::learned::SERVING_POSITION))
        .collect();

    let lambdarank = config.objective == Objective::LambdaRank;
    let groups: Vec<u64> = validation.iter().map(|e| e.request).collect();
    let clicks_ndcg =
        |scores: &[f32]| clicks_ndcg_at(10, scores, &validation_labels, &groups).unwrap_or(0.0);
    // Responses with both a click and an item not clicked: the only ones with pairs.
    let responses = if lambdarank {
        responses_with_pairs(train_set)
    } else {
        Vec::new()
    };
    if lambdarank && responses.is_empty() {
        return Err(TrainError::NotEnoughData(
            "no training response has both a clicked item and one not clicked".into(),
        ));
    }
    // What picks the epoch kept, from the validation scores at the serving position.
    // Pointwise: the position-matched AUC; plain AUC on logged clicks rewards ranking like
    // the ranker that was live when they were logged (see `position_matched_auc`).
    // LambdaRank: what it optimises, the order of the top 10 of each response.
    let select = |scores: &[f32]| {
        if lambdarank {
            clicks_ndcg(scores)
        } else {
            matched_auc(scores)
        }
    };
    let mut rng = SplitMix(config.seed);
    let fitted = match config.kind {
        ModelKind::Trees(settings) => {
            let boosted = crate::boost::fit(
                train_set,
                &serving_inputs,
                settings,
                config,
                positive_weight,
                &responses,
                select,
            );
            let mut forest = boosted.forest;
            if !lambdarank {
                // Clicks were weighted to balance the classes: shift back to calibrated
                // probabilities.
                forest.base -= positive_weight.ln() as f32;
            }
            Fitted {
                params: Params::Trees(forest),
                epochs_run: boosted.rounds_run,
                best_epoch: boosted.best_round,
            }
        }
        ModelKind::Logistic | ModelKind::Mlp { .. } => fit_net(
            train_set,
            config,
            positive_weight,
            &responses,
            &serving_inputs,
            select,
            &mut rng,
        )?,
    };
    let Fitted {
        params,
        epochs_run,
        best_epoch,
    } = fitted;
    let probabilities: Vec<f32> = validation_inputs
        .iter()
        .map(|x| crate::learned::sigmoid(params.logit(x)))
        .collect();
    let logged_scores: Vec<f32> = validation_inputs.iter().map(|x| params.logit(x)).collect();
    let validation_auc_logged_positions = auc(&logged_scores, &validation_labels).unwrap_or(0.5);
    let prior = PriorRanker::default();
    let prior_scores: Vec<f32> = validation
        .iter()
        .map(|e| prior.score(&e.features))
        .collect();
    let serving_scores: Vec<f32> = serving_inputs.iter().map(|x| params.logit(x)).collect();
    let validation_auc = auc(&serving_scores, &validation_labels).unwrap_or(0.5);
    let report = TrainingReport {
        objective: config.objective,
        train_examples: train_set.len(),
        train_clicks,
        validation_examples: validation.len(),
        validation_clicks,
        epochs_run,
        best_epoch,
        validation_auc,
        validation_auc_logged_positions,
        validation_log_loss: log_loss(&probabilities, &validation_labels),
        prior_validation_auc: auc(&prior_scores, &validation_labels).unwrap_or(0.5),
        validation_position_matched_auc: matched_auc(&serving_scores),
        prior_validation_position_matched_auc: matched_auc(&prior_scores),
        validation_clicks_ndcg_at_10: clicks_ndcg(&serving_scores),
        prior_validation_clicks_ndcg_at_10: clicks_ndcg(&prior_scores),
        importance: permutation_importance(
            &params,
            &validation_inputs,
            &validation_labels,
            validation_auc_logged_positions,
            &mut rng,
        ),
        positive_weight,
    };
    Ok(LearnedModel {
        schema_version: SCHEMA_VERSION,
        inputs: input_names().iter().map(|s| s.to_string()).collect(),
        version: version.to_string(),
        params,
        report,
    })
}

/// A fitted model: its parameters, the epochs run, and the epoch kept.
struct Fitted {
    params: Params,
    epochs_run: usize,
    best_epoch: usize,
}

/// Trains the logistic model or the MLP with AdamW, keeping the epoch `select` scores best
/// on the validation scores at the serving position.
fn fit_net(
    train_set: &[&Example],
    config: &TrainConfig,
    positive_weight: f64,
    responses: &[Response],
    serving_inputs: &[[f32; INPUT_COUNT]],
    select: impl Fn(&[f32]) -> f64,
    rng: &mut SplitMix,
) -> Result<Fitted, TrainError> {
    // The logistic model learns from differences within a response: each feature minus its
    // mean over the response. Scores then differ from raw-feature scores by a constant per
    // response, so searches rank the same; between-response differences (some searches
    // get more clicks than others) no longer pull on the weights.
    let centre = matches!(config.kind, ModelKind::Logistic);
    let mut sums: std::collections::HashMap<u64, (Features, f32)> = Default::default();
    for e in train_set {
        let entry = sums
            .entry(e.request)
            .or_insert(([0.0; shelf_types::FEATURE_COUNT], 0.0));
        for (acc, x) in entry.0.iter_mut().zip(&e.features) {
            *acc += x;
        }
        entry.1 += 1.0;
    }
    let centred = |e: &Example| -> Features {
        let mut f = e.features;
        if centre {
            if let Some((sum, n)) = sums.get(&e.request) {
                for (x, s) in f.iter_mut().zip(sum) {
                    *x -= s / n;
                }
            }
        }
        f
    };
    let device = Device::Cpu;
    let to_tensors = |set: &[&Example]| -> Result<(Tensor, Tensor), TrainError> {
        let x: Vec<f32> = set
            .iter()
            .flat_map(|e| inputs(&centred(e), e.position))
            .collect();
        let y: Vec<f32> = set.iter().map(|e| f32::from(u8::from(e.clicked))).collect();
        Ok((
            Tensor::from_vec(x, (set.len(), INPUT_COUNT), &device)?,
            Tensor::from_vec(y, (set.len(), 1), &device)?,
        ))
    };
    let (train_x, train_y) = to_tensors(train_set)?;
    let net = Net::new(config.kind, rng, &device)?;
    let mut optimizer = AdamW::new(
        net.vars(),
        ParamsAdamW {
            lr: config.learning_rate,
            weight_decay: config.weight_decay,
            ..Default::default()
        },
    )?;
    let lambdarank = config.objective == Objective::LambdaRank;
    // The pairwise loss has no use for a bias (it cancels within a pair); the logistic
    // model's is set by `recalibrate` below, the MLP's stays uncalibrated.
    let bias_shift = if lambdarank {
        0.0
    } else {
        positive_weight.ln() as f32
    };
    let mut best: Option<(f64, usize, Params)> = None;
    let mut order: Vec<u32> = (0..train_set.len() as u32).collect();
    let mut response_order: Vec<usize> = (0..responses.len()).collect();
    let mut epochs_run = 0;
    for epoch in 1..=config.max_epochs {
        epochs_run = epoch;
        if lambdarank {
            rng.shuffle(&mut response_order);
            let mut batch: Vec<&Response> = Vec::new();
            let mut rows = 0;
            for (i, &r) in response_order.iter().enumerate() {
                batch.push(&responses[r]);
                rows += responses[r].rows.len();
                if rows >= config.batch_size || i + 1 == response_order.len() {
                    let loss = lambdarank_loss(&net, &train_x, &batch)?;
                    optimizer.backward_step(&loss)?;
                    batch.clear();
                    rows = 0;
                }
            }
        } else {
            rng.shuffle(&mut order);
            for batch in order.chunks(config.batch_size) {
                let index = Tensor::from_slice(batch, batch.len(), &device)?;
                let x = train_x.index_select(&index, 0)?;
                let y = train_y.index_select(&index, 0)?;
                let loss = weighted_bce(&net.logits(&x)?, &y, positive_weight)?;
                optimizer.backward_step(&loss)?;
            }
        }
        let params = net.params(bias_shift)?;
        let scores: Vec<f32> = serving_inputs.iter().map(|x| params.logit(x)).collect();
        let selection = select(&scores);
        match &best {
            Some((best_score, _, _)) if selection <= *best_score => {}
            _ => best = Some((selection, epoch, params)),
        }
        if best
            .as_ref()
            .is_some_and(|(_, e, _)| epoch - e >= config.patience)
        {
            break;
        }
    }
    let (_, best_epoch, mut params) = best.expect("at least one epoch ran");
    if centre {
        recalibrate(&mut params, train_set);
    }
    Ok(Fitted {
        params,
        epochs_run,
        best_epoch,
    })
}

/// Sets the logistic model's bias so that its mean probability on the raw (uncentred)
/// training examples equals their click rate (bisection on the bias).
fn recalibrate(params: &mut Params, examples: &[&Example]) {
    let Params::Logistic { bias, .. } = params else {
        return;
    };
    *bias = 0.0;
    let rate = examples.iter().filter(|e| e.clicked).count() as f64 / examples.len() as f64;
    let logits: Vec<f32> = examples
        .iter()
        .map(|e| params.logit(&inputs(&e.features, e.position)))
        .collect();
    let (mut low, mut high) = (-30.0f32, 30.0f32);
    for _ in 0..50 {
        let mid = 0.5 * (low + high);
        let mean = logits
            .iter()
            .map(|z| f64::from(crate::learned::sigmoid(z + mid)))
            .sum::<f64>()
            / logits.len() as f64;
        if mean < rate {
            low = mid;
        } else {
            high = mid;
        }
    }
    if let Params::Logistic { bias, .. } = params {
        *bias = 0.5 * (low + high);
    }
}

/// The rows of one training response, and which of them were clicked.
pub(crate) struct Response {
    pub(crate) rows: Vec<u32>,
    pub(crate) clicked: Vec<bool>,
}

impl Response {
    /// Every (clicked i, not clicked j) pair of the response, as indexes into it, with the
    /// change in the response's NDCG (full depth, gains 1 and 0) if i and j swapped places
    /// in the order of `scores` (the response's scores, in its order).
    pub(crate) fn pairs(&self, scores: &[f32]) -> Vec<(usize, usize, f64)> {
        let discount = |rank: usize| 1.0 / (rank as f64 + 2.0).log2();
        let n = self.rows.len();
        let mut by_score: Vec<usize> = (0..n).collect();
        by_score.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut rank = vec![0usize; n];
        for (position, &i) in by_score.iter().enumerate() {
            rank[i] = position;
        }
        let clicks = self.clicked.iter().filter(|&&c| c).count();
        let ideal: f64 = (0..clicks).map(discount).sum();
        let mut pairs = Vec::new();
        for i in (0..n).filter(|&i| self.clicked[i]) {
            for j in (0..n).filter(|&j| !self.clicked[j]) {
                pairs.push((i, j, (discount(rank[i]) - discount(rank[j])).abs() / ideal));
            }
        }
        pairs
    }
}

/// The training responses (by request) that hold both a clicked item and one not clicked.
fn responses_with_pairs(train_set: &[&Example]) -> Vec<Response> {
    let mut by_request: std::collections::BTreeMap<u64, Response> = Default::default();
    for (row, e) in train_set.iter().enumerate() {
        let response = by_request.entry(e.request).or_insert(Response {
            rows: Vec::new(),
            clicked: Vec::new(),
        });
        response.rows.push(row as u32);
        response.clicked.push(e.clicked);
    }
    by_request
        .into_values()
        .filter(|r| r.clicked.iter().any(|&c| c) && r.clicked.iter().any(|&c| !c))
        .collect()
}

/// LambdaRank's loss over a batch of responses: for every (clicked i, not clicked j) pair of
/// a response, `|ΔNDCG_ij| * softplus(-(s_i - s_j))`, where `ΔNDCG_ij` is the change in the
/// response's NDCG (full depth, gains 1 and 0) if i and j swapped places in the order of the
/// current scores; summed per response, averaged over responses.
fn lambdarank_loss(net: &Net, train_x: &Tensor, batch: &[&Response]) -> Result<Tensor, TrainError> {
    let device = train_x.device();
    let rows: Vec<u32> = batch.iter().flat_map(|r| r.rows.iter().copied()).collect();
    let index = Tensor::from_slice(&rows, rows.len(), device)?;
    let logits = net
        .logits(&train_x.index_select(&index, 0)?)?
        .flatten_all()?;
    let scores: Vec<f32> = logits.to_vec1()?;
    let (mut first, mut second, mut weights) = (Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0usize;
    for response in batch {
        let n = response.rows.len();
        for (i, j, delta) in response.pairs(&scores[offset..offset + n]) {
            first.push((offset + i) as u32);
            second.push((offset + j) as u32);
            weights.push(delta as f32);
        }
        offset += n;
    }
    let pairs = first.len();
    let pick = |at: Vec<u32>| -> candle_core::Result<Tensor> {
        logits.index_select(&Tensor::from_vec(at, pairs, device)?, 0)
    };
    let margin = (pick(first)? - pick(second)?)?;
    // softplus(-m) = relu(-m) + ln(1 + e^-|m|), stable for either sign.
    let loss = (margin.neg()?.relu()? + margin.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    let weights = Tensor::from_vec(weights, pairs, device)?;
    Ok(((loss * weights)?.sum_all()? / batch.len() as f64)?)
}

/// Mean of `w(y) * (softplus(z) - y z)` with `w = positive_weight` for clicks, 1 otherwise:
/// binary cross-entropy on logits, computed stably.
fn weighted_bce(logits: &Tensor, y: &Tensor, positive_weight: f64) -> candle_core::Result<Tensor> {
    let softplus = (logits.relu()? + logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    let per_example = (softplus - (y * logits)?)?;
    let weights = y.affine(positive_weight - 1.0, 1.0)?;
    (per_example * weights)?.mean_all()
}

/// AUC lost when one input column is shuffled, per input.
fn permutation_importance(
    params: &Params,
    x: &[[f32; INPUT_COUNT]],
    labels: &[bool],
    base_auc: f64,
    rng: &mut SplitMix,
) -> Vec<(String, f64)> {
    let names = input_names();
    (0..INPUT_COUNT)
        .map(|i| {
            let mut column: Vec<f32> = x.iter().map(|r| r[i]).collect();
            rng.shuffle(&mut column);
            let scores: Vec<f32> = x
                .iter()
                .zip(&column)
                .map(|(row, v)| {
                    let mut row = *row;
                    row[i] = *v;
                    params.logit(&row)
                })
                .collect();
            let drop = base_auc - auc(&scores, labels).unwrap_or(0.5);
            (names[i].to_string(), (drop * 1e4).round() / 1e4)
        })
        .collect()
}

/// The trainable network.
struct Net {
    kind: ModelKind,
    vars: Vec<Var>,
}

impl Net {
    fn new(kind: ModelKind, rng: &mut SplitMix, device: &Device) -> candle_core::Result<Self> {
        let mut uniform = |rows: usize, cols: usize, scale: f64| -> candle_core::Result<Var> {
            let data: Vec<f32> = (0..rows * cols)
                .map(|_| ((rng.unit() * 2.0 - 1.0) * scale) as f32)
                .collect();
            Var::from_tensor(&Tensor::from_vec(data, (rows, cols), device)?)
        };
        let vars = match kind {
            ModelKind::Logistic => {
                // Start from the hand-set prior: with little data the model stays near it and
                // moves where the clicks say so.
                let mut start = PriorRanker::default().weights().to_vec();
                start.resize(INPUT_COUNT, 0.0);
                vec![
                    Var::from_tensor(&Tensor::from_vec(start, (INPUT_COUNT, 1), device)?)?,
                    Var::zeros((1, 1), DType::F32, device)?,
                ]
            }
            ModelKind::Trees(_) => {
                return Err(candle_core::Error::Msg(
                    "trees are not trained as a network".into(),
                ))
            }
            ModelKind::Mlp { hidden } => {
                let scale1 = (6.0 / (INPUT_COUNT + hidden) as f64).sqrt();
                let scale2 = (6.0 / (hidden + 1) as f64).sqrt();
                vec![
                    uniform(INPUT_COUNT, hidden, scale1)?,
                    Var::zeros((1, hidden), DType::F32, device)?,
                    uniform(hidden, 1, scale2)?,
                    Var::zeros((1, 1), DType::F32, device)?,
                ]
            }
        };
        Ok(Self { kind, vars })
    }

    fn vars(&self) -> Vec<Var> {
        self.vars.clone()
    }

    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let v = &self.vars;
        match self.kind {
            ModelKind::Logistic => x.matmul(v[0].as_tensor())?.broadcast_add(v[1].as_tensor()),
            ModelKind::Trees(_) | ModelKind::Mlp { .. } => x
                .matmul(v[0].as_tensor())?
                .broadcast_add(v[1].as_tensor())?
                .relu()?
                .matmul(v[2].as_tensor())?
                .broadcast_add(v[3].as_tensor()),
        }
    }

    /// The current parameters as plain vectors, the output bias shifted by `-bias_shift`.
    fn params(&self, bias_shift: f32) -> candle_core::Result<Params> {
        let v = &self.vars;
        Ok(match self.kind {
            ModelKind::Logistic => Params::Logistic {
                weights: v[0].as_tensor().flatten_all()?.to_vec1()?,
                bias: v[1].as_tensor().flatten_all()?.to_vec1::<f32>()?[0] - bias_shift,
            },
            ModelKind::Trees(_) | ModelKind::Mlp { .. } => Params::Mlp {
                // Stored as rows per hidden unit.
                w1: v[0].as_tensor().t()?.to_vec2()?,
                b1: v[1].as_tensor().flatten_all()?.to_vec1()?,
                w2: v[2].as_tensor().flatten_all()?.to_vec1()?,
                b2: v[3].as_tensor().flatten_all()?.to_vec1::<f32>()?[0] - bias_shift,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clicks drawn from a known logistic rule over three features plus position bias.
    fn rule_data(n: usize, seed: u64) -> (Vec<Example>, Vec<f32>) {
        let mut rng = SplitMix(seed);
        let mut rule_scores = Vec::new();
        let examples = (0..n)
            .map(|i| {
                let mut features = [0.0f32; shelf_types::FEATURE_COUNT];
                for f in features.iter_mut() {
                    *f = rng.unit() as f32;
                }
                let position = (rng.next_u64() % 10) as u32;
                // True rule: query_cosine strongly up, ctr_prior up, freshness down, position.
                let ranking = -3.0 + 3.0 * features[0] + 1.5 * features[3] - 1.0 * features[6];
                let z = ranking + 1.0 / (1.0 + position as f32);
                // What the model can be judged on at serving: the rule without position.
                rule_scores.push(ranking);
                let p = 1.0 / (1.0 + (-z as f64).exp());
                Example {
                    features,
                    position,
                    clicked: rng.unit() < p,
                    ts_ms: i as i64,
                    request: i as u64 / 10,
                }
            })
            .collect();
        (examples, rule_scores)
    }

    #[test]
    fn logistic_regression_recovers_a_known_rule() {
        let (examples, rule) = rule_data(20_000, 1);
        let model = train(&examples, &TrainConfig::default(), "logistic-test").unwrap();
        let Params::Logistic { weights, .. } = &model.params else {
            panic!()
        };
        // Signs and order of the rule's weights.
        assert!(weights[0] > weights[3] && weights[3] > 0.5, "{weights:?}");
        assert!(weights[6] < -0.4, "{weights:?}");
        for i in [1, 2, 4, 5, 7, 8] {
            assert!(
                weights[i].abs() < 0.35,
                "feature {i} should be ~0: {weights:?}"
            );
        }
        // AUC close to the rule's own on the validation part.
        let split = 16_000;
        let labels: Vec<bool> = examples[split..].iter().map(|e| e.clicked).collect();
        let rule_auc = auc(&rule[split..], &labels).unwrap();
        let r = &model.report;
        assert!(
            r.validation_auc > rule_auc - 0.01,
            "{} vs rule {rule_auc}",
            r.validation_auc
        );
        assert!(r.validation_auc > r.prior_validation_auc - 0.05);
        assert_eq!(r.train_examples + r.validation_examples, 20_000);
        // The importance ranks query_cosine first.
        let top = r
            .importance
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert_eq!(top.0, "query_cosine");
        // Calibration: mean predicted probability near the click rate.
        let mean_p: f32 = examples
            .iter()
            .map(|e| model.probability(&e.features, e.position))
            .sum::<f32>()
            / 20_000.0;
        let rate = examples.iter().filter(|e| e.clicked).count() as f32 / 20_000.0;
        assert!(
            (mean_p - rate).abs() < 0.03,
            "mean p {mean_p} vs rate {rate}"
        );
    }

    #[test]
    fn the_mlp_learns_the_rule_too() {
        let (examples, rule) = rule_data(20_000, 2);
        let config = TrainConfig {
            kind: ModelKind::Mlp { hidden: 16 },
            learning_rate: 0.01,
            ..TrainConfig::default()
        };
        let model = train(&examples, &config, "mlp-test").unwrap();
        let labels: Vec<bool> = examples[16_000..].iter().map(|e| e.clicked).collect();
        let rule_auc = auc(&rule[16_000..], &labels).unwrap();
        assert!(
            model.report.validation_auc > rule_auc - 0.015,
            "{} vs {rule_auc}",
            model.report.validation_auc
        );
    }

    /// Responses of 10 candidates with exactly one click each, the clicked one drawn by a
    /// softmax over a known rule plus a per-response shift that only moves every score of
    /// the response (which a pointwise model has to explain and a pairwise one ignores).
    fn one_click_responses(responses: usize, seed: u64) -> Vec<Example> {
        let mut rng = SplitMix(seed);
        let mut examples = Vec::new();
        for r in 0..responses {
            let mut rows: Vec<(Features, f64)> = (0..10)
                .map(|_| {
                    let mut f = [0.0f32; shelf_types::FEATURE_COUNT];
                    for x in f.iter_mut() {
                        *x = rng.unit() as f32;
                    }
                    let rule = 4.0 * f64::from(f[1]) - 3.0 * f64::from(f[5]);
                    (f, rule.exp())
                })
                .collect();
            let total: f64 = rows.iter().map(|(_, w)| w).sum();
            let mut draw = rng.unit() * total;
            let clicked = rows
                .iter()
                .position(|(_, w)| {
                    draw -= w;
                    draw <= 0.0
                })
                .unwrap_or(9);
            let shift = rng.unit() as f32;
            for (i, (f, _)) in rows.iter_mut().enumerate() {
                f[4] = shift;
                examples.push(Example {
                    features: *f,
                    position: crate::learned::SERVING_POSITION,
                    clicked: i == clicked,
                    ts_ms: r as i64,
                    request: r as u64,
                });
            }
        }
        examples
    }

    /// The NDCG@10 of `one_click_responses`' own rule on their validation part (the
    /// newest 20% of 3,000 responses).
    fn one_click_rule_ndcg(examples: &[Example]) -> f64 {
        let validation = &examples[2400 * 10..];
        let rule: Vec<f32> = validation
            .iter()
            .map(|e| 4.0 * e.features[1] - 3.0 * e.features[5])
            .collect();
        let labels: Vec<bool> = validation.iter().map(|e| e.clicked).collect();
        let groups: Vec<u64> = validation.iter().map(|e| e.request).collect();
        clicks_ndcg_at(10, &rule, &labels, &groups).unwrap()
    }

    #[test]
    fn lambdarank_learns_the_order_within_responses() {
        let examples = one_click_responses(3000, 4);
        for kind in [ModelKind::Logistic, ModelKind::Mlp { hidden: 8 }] {
            let config = TrainConfig {
                kind,
                objective: Objective::LambdaRank,
                learning_rate: 0.01,
                ..TrainConfig::default()
            };
            let model = train(&examples, &config, "lambdarank-test").unwrap();
            let r = &model.report;
            let rule_ndcg = one_click_rule_ndcg(&examples);
            assert!(
                r.validation_clicks_ndcg_at_10 > rule_ndcg - 0.02
                    && r.validation_clicks_ndcg_at_10 > r.prior_validation_clicks_ndcg_at_10,
                "{kind:?}: {} against the rule's {rule_ndcg} (prior {})",
                r.validation_clicks_ndcg_at_10,
                r.prior_validation_clicks_ndcg_at_10
            );
            if let Params::Logistic { weights, .. } = &model.params {
                // The direction of the rule: profile_cosine up, price_fit down, about 4:3.
                let ratio = weights[1] / -weights[5];
                assert!(
                    weights[1] > 0.5 && (0.9..2.0).contains(&ratio),
                    "{weights:?}"
                );
            }
            // Ranking stays in the saved model: scores order candidates as training did.
            let saved = LearnedModel::from_json(&model.to_json()).unwrap();
            assert_eq!(saved.params, model.params);
        }
    }

    #[test]
    fn boosted_trees_learn_what_a_linear_model_cannot() {
        // Clicks follow an exclusive or: likely when exactly one of profile_cosine and
        // price_fit is above 0.5, rare otherwise. No weighted sum ranks that.
        let mut rng = SplitMix(5);
        let rule = |f: &Features| {
            if (f[1] > 0.5) != (f[5] > 0.5) {
                0.5
            } else {
                -2.5
            }
        };
        let examples: Vec<Example> = (0..20_000)
            .map(|i| {
                let mut features = [0.0f32; shelf_types::FEATURE_COUNT];
                for f in features.iter_mut() {
                    *f = rng.unit() as f32;
                }
                let p = 1.0 / (1.0 + (-rule(&features) as f64).exp());
                Example {
                    features,
                    position: crate::learned::SERVING_POSITION,
                    clicked: rng.unit() < p,
                    ts_ms: i,
                    request: i as u64 / 10,
                }
            })
            .collect();
        let validation = &examples[16_000..];
        let labels: Vec<bool> = validation.iter().map(|e| e.clicked).collect();
        let rule_scores: Vec<f32> = validation.iter().map(|e| rule(&e.features)).collect();
        let rule_auc = auc(&rule_scores, &labels).unwrap();
        let linear = train(&examples, &TrainConfig::default(), "logistic-test").unwrap();
        // From a constant, and from the prior (whose weights know nothing of this rule: its
        // fitted scale must not saturate the loss, or every tree would be a single leaf).
        for from_prior in [false, true] {
            let trees = ModelKind::Trees(TreeSettings {
                depth: 3,
                from_prior,
            });
            let forest = train(&examples, &TrainConfig::for_model(trees), "trees-test").unwrap();
            let r = &forest.report;
            assert!(
                r.validation_auc > rule_auc - 0.01
                    && r.validation_auc > linear.report.validation_auc + 0.1,
                "from the prior {from_prior}: trees {} against the rule's {rule_auc} and the linear model's {}",
                r.validation_auc,
                linear.report.validation_auc
            );
            assert!(r.best_epoch >= 1 && r.best_epoch <= r.epochs_run);
            let Params::Trees(f) = &forest.params else {
                panic!("not trees")
            };
            assert_eq!(f.trees.len(), r.best_epoch);
            assert!(
                f.trees.iter().all(|t| t.value.len() > 1),
                "a tree did not split"
            );
            assert!(
                f.base.abs() < 10.0 && f.prior_scale < 10.0,
                "{} {}",
                f.base,
                f.prior_scale
            );
            // Calibrated: the mean probability near the click rate.
            let mean_p = examples
                .iter()
                .map(|e| forest.probability(&e.features, e.position))
                .sum::<f32>()
                / examples.len() as f32;
            let rate = examples.iter().filter(|e| e.clicked).count() as f32 / examples.len() as f32;
            assert!(
                (mean_p - rate).abs() < 0.03,
                "from the prior {from_prior}: mean p {mean_p} vs rate {rate}"
            );
            // Saved and read back, it scores the same; its explanation sums to the score.
            let saved = LearnedModel::from_json(&forest.to_json()).unwrap();
            assert_eq!(saved.params, forest.params);
            let features = validation[0].features;
            let sum: f32 = saved
                .explain(&features)
                .iter()
                .map(|c| c.contribution)
                .sum();
            assert!((sum - saved.score(&features)).abs() < 1e-3);
        }
    }

    #[test]
    fn lambdamart_learns_the_order_within_responses() {
        let examples = one_click_responses(3000, 4);
        let rule_ndcg = one_click_rule_ndcg(&examples);
        for from_prior in [false, true] {
            let config = TrainConfig {
                objective: Objective::LambdaRank,
                ..TrainConfig::for_model(ModelKind::Trees(TreeSettings {
                    depth: 4,
                    from_prior,
                }))
            };
            let model = train(&examples, &config, "lambdamart-test").unwrap();
            let r = &model.report;
            // From a constant the trees reach the rule; from the prior, whose weights are
            // far from the rule here, they correct most of it.
            let reach = if from_prior { 0.05 } else { 0.02 };
            assert!(
                r.validation_clicks_ndcg_at_10 > rule_ndcg - reach
                    && r.validation_clicks_ndcg_at_10 > r.prior_validation_clicks_ndcg_at_10 + 0.15,
                "from the prior {from_prior}: {} against the rule's {rule_ndcg} (prior {})",
                r.validation_clicks_ndcg_at_10,
                r.prior_validation_clicks_ndcg_at_10
            );
        }
    }

    #[test]
    fn lambdarank_weighs_a_pair_by_its_ndcg_change() {
        // Two candidates, the clicked one scored below the other: swapping them moves NDCG
        // from 1/log2(3) to 1, so the pair weighs 1 - 1/log2(3).
        let mut rng = SplitMix(1);
        let net = Net::new(ModelKind::Logistic, &mut rng, &Device::Cpu).unwrap();
        let mut low = [0.0f32; INPUT_COUNT];
        let mut high = [0.0f32; INPUT_COUNT];
        low[0] = 0.1;
        high[0] = 0.9;
        let x = Tensor::from_vec([low, high].concat(), (2, INPUT_COUNT), &Device::Cpu).unwrap();
        let response = Response {
            rows: vec![0, 1],
            clicked: vec![true, false],
        };
        let loss: f32 = lambdarank_loss(&net, &x, &[&response])
            .unwrap()
            .to_scalar()
            .unwrap();
        let w0 = PriorRanker::default().weights()[0];
        let margin = w0 * (0.1 - 0.9);
        let expected = (1.0 - 1.0 / 3f32.log2()) * (1.0 + (-margin).exp()).ln();
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    }

    #[test]
    fn one_class_data_is_refused() {
        let (mut examples, _) = rule_data(1000, 3);
        for e in &mut examples {
            e.clicked = false;
        }
        assert!(matches!(
            train(&examples, &TrainConfig::default(), "x"),
            Err(TrainError::NotEnoughData(_))
        ));
    }
}
