//! Online A/B tests of rankers: one experiment per placement, kept in
//! `DATA/experiments.json`, traffic split by a stable hash, and per-arm reports read from
//! the impression log with 95% confidence intervals.

use crate::models;
use serde::{Deserialize, Serialize};
use shelf_rank::PriorRanker;
use shelf_store::{ArmTag, Store};
use shelf_types::Ranker;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The experiments file in the data directory.
pub const FILE: &str = "experiments.json";

/// The placements a ranker orders: the query search (`search`) and the recommendation
/// placements that re-rank their candidates (recently viewed and trending keep their
/// lists' own order, so a ranker cannot change them).
pub const PLACEMENTS: [&str; 4] = ["search", "for_user", "similar_items", "bought_together"];

/// At most this many arms per experiment.
pub const MAX_ARMS: usize = 8;

/// One arm as asked for: its name, the ranker that serves it, and its share of traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmSpec {
    pub name: String,
    /// `live` (the model live when the test starts, resolved then), `prior` (the hand-set
    /// ranker), or a saved model's version.
    pub model: String,
    /// Share of the placement's traffic, in (0, 1]; the shares sum to at most 1, and the
    /// rest of the traffic is served by the live ranker outside the test.
    pub share: f64,
}

/// An experiment as stored: running until `stopped_ms` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// `{placement}-{started_ms}`: what impressions record.
    pub id: String,
    pub placement: String,
    /// The arms, with `live` resolved to the model it was; the first is the control.
    pub arms: Vec<ArmSpec>,
    pub started_ms: i64,
    #[serde(default)]
    pub stopped_ms: Option<i64>,
}

/// Why an experiment could not be started, stopped or promoted.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("{0}")]
    Invalid(String),
    #[error("no saved model `{0}` (see GET /v1/models); arms name `live`, `prior` or a version")]
    UnknownModel(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The experiments of a node: all of them as stored, and the running ones with their
/// arms' rankers loaded.
pub struct Experiments {
    data_dir: PathBuf,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    all: Vec<Experiment>,
    /// Running experiments by placement, with one ranker per arm.
    running: BTreeMap<String, (Experiment, Vec<Arc<dyn Ranker>>)>,
}

impl std::fmt::Debug for Experiments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Experiments")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// The stored experiments (none when the file does not exist).
fn read_all(data_dir: &Path) -> anyhow::Result<Vec<Experiment>> {
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// The models the running experiments serve (model pruning keeps them).
pub fn models_in_running_tests(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    Ok(read_all(data_dir)?
        .into_iter()
        .filter(|e| e.stopped_ms.is_none())
        .flat_map(|e| e.arms.into_iter().map(|a| a.model))
        .collect())
}

/// The ranker an arm's (resolved) model names.
fn ranker_of(data_dir: &Path, model: &str) -> Result<Arc<dyn Ranker>, ExperimentError> {
    if model == "prior" {
        return Ok(Arc::new(PriorRanker::default()));
    }
    match models::load(data_dir, model)? {
        Some(model) => Ok(Arc::new(model)),
        None => Err(ExperimentError::UnknownModel(model.to_string())),
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Experiments {
    /// Reads the stored experiments and loads the running ones' rankers. A running test
    /// whose model file is gone is logged and not served (its traffic goes to the live
    /// ranker) rather than keeping the node from starting.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let all = read_all(data_dir)?;
        let mut running = BTreeMap::new();
        for experiment in all.iter().filter(|e| e.stopped_ms.is_none()) {
            let rankers: Result<Vec<_>, _> = experiment
                .arms
                .iter()
                .map(|arm| ranker_of(data_dir, &arm.model))
                .collect();
            match rankers {
                Ok(rankers) => {
                    running.insert(experiment.placement.clone(), (experiment.clone(), rankers));
                }
                Err(e) => tracing::error!(experiment = %experiment.id, error = %e,
                    "an A/B test's model cannot be loaded; the test is not served"),
            }
        }
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            state: RwLock::new(State { all, running }),
        })
    }

    fn save(&self, all: &[Experiment]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let text = serde_json::to_string_pretty(all).expect("experiments serialise");
        models::write_atomically(&self.data_dir.join(FILE), &text)
    }

    /// Every experiment, running and stopped, newest first.
    pub fn list(&self) -> Vec<Experiment> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.all.iter().rev().cloned().collect()
    }

    /// The experiment `id`.
    pub fn get(&self, id: &str) -> Option<Experiment> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.all.iter().find(|e| e.id == id).cloned()
    }

    /// The running experiment on `placement`.
    pub fn running(&self, placement: &str) -> Option<Experiment> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.running.get(placement).map(|(e, _)| e.clone())
    }

    /// Starts an experiment on `placement`; `live` is the name of the ranker live now
    /// (what an arm's `live` model resolves to). Nothing is stored when it is refused.
    pub fn start(
        &self,
        placement: &str,
        arms: Vec<ArmSpec>,
        live: &str,
    ) -> Result<Experiment, ExperimentError> {
        if !PLACEMENTS.contains(&placement) {
            return Err(ExperimentError::Invalid(format!(
                "placement `{placement}` cannot be tested: a ranker orders only {}",
                PLACEMENTS.join(", ")
            )));
        }
        validate_arms(&arms)?;
        let mut arms = arms;
        for arm in &mut arms {
            if arm.model == "live" {
                arm.model = live.to_string();
            }
        }
        let rankers = arms
            .iter()
            .map(|arm| ranker_of(&self.data_dir, &arm.model))
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some((running, _)) = state.running.get(placement) {
            return Err(ExperimentError::Conflict(format!(
                "experiment {} already runs on `{placement}`; stop it first",
                running.id
            )));
        }
        // Ids are unique even for two starts within a millisecond.
        let mut started_ms = now_ms();
        while state
            .all
            .iter()
            .any(|e| e.id == format!("{placement}-{started_ms}"))
        {
            started_ms += 1;
        }
        let experiment = Experiment {
            id: format!("{placement}-{started_ms}"),
            placement: placement.to_string(),
            arms,
            started_ms,
            stopped_ms: None,
        };
        let mut all = state.all.clone();
        all.push(experiment.clone());
        self.save(&all)?;
        state.all = all;
        state
            .running
            .insert(placement.to_string(), (experiment.clone(), rankers));
        Ok(experiment)
    }

    /// Stops the experiment running on `placement` (its report stays readable).
    pub fn stop(&self, placement: &str) -> Result<Experiment, ExperimentError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let Some((running, _)) = state.running.get(placement) else {
            return Err(ExperimentError::NotFound(format!(
                "no experiment runs on `{placement}`"
            )));
        };
        let id = running.id.clone();
        let mut all = state.all.clone();
        let stopped = all
            .iter_mut()
            .find(|e| e.id == id)
            .expect("a running experiment is stored");
        stopped.stopped_ms = Some(now_ms());
        let stopped = stopped.clone();
        self.save(&all)?;
        state.all = all;
        state.running.remove(placement);
        Ok(stopped)
    }

    /// The arm that serves a request on `placement`, and its ranker; `None` when no test
    /// runs there or the request falls in the traffic outside it. A user stays in one arm
    /// for the whole test (a hash of the test and the user id); anonymous requests are
    /// assigned at random, each on its own.
    pub fn assign(
        &self,
        placement: &str,
        user_id: Option<&str>,
    ) -> Option<(ArmTag, Arc<dyn Ranker>)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let (experiment, rankers) = state.running.get(placement)?;
        let draw = match user_id {
            Some(user) => unit_hash(&experiment.id, user),
            None => rand::random::<f64>(),
        };
        let arm = arm_at(&experiment.arms, draw)?;
        Some((
            ArmTag {
                experiment: experiment.id.clone(),
                arm: experiment.arms[arm].name.clone(),
            },
            Arc::clone(&rankers[arm]),
        ))
    }
}

/// Checks the arms as asked for: 2 to [`MAX_ARMS`], names unique and well formed, shares
/// in (0, 1] summing to at most 1.
fn validate_arms(arms: &[ArmSpec]) -> Result<(), ExperimentError> {
    let invalid = |m: String| Err(ExperimentError::Invalid(m));
    if arms.len() < 2 || arms.len() > MAX_ARMS {
        return invalid(format!(
            "an experiment has 2 to {MAX_ARMS} arms (the first is the control); got {}",
            arms.len()
        ));
    }
    for (i, arm) in arms.iter().enumerate() {
        if let Err(e) = shelf_types::check_id("arms[].name", &arm.name) {
            return invalid(e.to_string());
        }
        if arms[..i].iter().any(|a| a.name == arm.name) {
            return invalid(format!("arm name `{}` appears twice", arm.name));
        }
        if !(arm.share > 0.0 && arm.share <= 1.0) {
            return invalid(format!(
                "arm `{}`: share {} is not in (0, 1]",
                arm.name, arm.share
            ));
        }
    }
    let total: f64 = arms.iter().map(|a| a.share).sum();
    if total > 1.0 + 1e-9 {
        return invalid(format!(
            "the arms' shares sum to {total}; they must sum to at most 1"
        ));
    }
    Ok(())
}

/// A stable draw in [0, 1) for `unit` in experiment `id` (FNV-1a, then splitmix's mixer so
/// that close ids spread).
fn unit_hash(id: &str, unit: &str) -> f64 {
    let mut hash = shelf_types::hash::Fnv1a::default();
    hash.update(id.as_bytes());
    hash.update(&[0]);
    hash.update(unit.as_bytes());
    let mixed = shelf_types::splitmix_mix(hash.finish());
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

/// The arm whose cumulative share covers `draw`, if any.
fn arm_at(arms: &[ArmSpec], draw: f64) -> Option<usize> {
    let mut upper = 0.0;
    for (i, arm) in arms.iter().enumerate() {
        upper += arm.share;
        if draw < upper {
            return Some(i);
        }
    }
    None
}

/// A mean (or rate) with its 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_964;

/// One unit of assignment in an arm (a user, or an anonymous response): its responses and
/// what came of them.
#[derive(Clone, Copy, Debug, Default)]
struct Unit {
    responses: f64,
    /// Clicks, carts, purchases, and responses with at least one click.
    counts: [f64; 4],
}

/// A ratio of sums over units (`Σy / Σx`: clicks per response) with its delta-method
/// variance. Users, not responses, are assigned to arms, and one user's responses are
/// correlated: the variance comes from the spread of the units' residuals `y - r·x`, which
/// for one response per unit is the plain variance of the mean.
#[derive(Clone, Copy, Debug, Default)]
struct Ratio {
    value: f64,
    variance: f64,
}

impl Ratio {
    /// `units` as `(x, y)` pairs.
    fn of(units: &[(f64, f64)]) -> Self {
        let n = units.len() as f64;
        let (sx, sy) = units
            .iter()
            .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
        if sx == 0.0 {
            return Self::default();
        }
        let value = sy / sx;
        if n < 2.0 {
            return Self {
                value,
                variance: 0.0,
            };
        }
        let residuals: f64 = units.iter().map(|(x, y)| (y - value * x).powi(2)).sum();
        let mean_x = sx / n;
        Self {
            value,
            variance: residuals / (n - 1.0) / (n * mean_x * mean_x),
        }
    }

    /// The ratio with its 95% interval, within `[0, max]`.
    fn estimate(&self, max: f64) -> Estimate {
        let half = Z95 * self.variance.sqrt();
        Estimate {
            value: self.value,
            low: (self.value - half).max(0.0),
            high: (self.value + half).min(max),
        }
    }

    /// This ratio minus `control`'s (independent arms), with its 95% interval.
    fn difference(&self, control: &Ratio) -> Estimate {
        let diff = self.value - control.value;
        let half = Z95 * (self.variance + control.variance).sqrt();
        Estimate {
            value: diff,
            low: diff - half,
            high: diff + half,
        }
    }
}

/// What one arm served and what shoppers did with it.
#[derive(Clone, Debug, Serialize)]
pub struct ArmReport {
    pub name: String,
    pub model: String,
    pub share: f64,
    /// Responses served (searches or recommendation lists) that showed at least one item.
    pub responses: u64,
    /// Units of assignment that received them: users, and each anonymous response.
    pub units: u64,
    pub clicks: u64,
    pub carts: u64,
    pub purchases: u64,
    pub clicks_per_response: Estimate,
    pub carts_per_response: Estimate,
    pub purchases_per_response: Estimate,
    /// The share of responses with at least one click.
    pub click_through_rate: Estimate,
    /// Against the control (the first arm): the difference in clicks per response, and in
    /// purchases per response; absent for the control itself. Every interval is 95%, from
    /// the delta method over the units of assignment.
    pub clicks_per_response_lift: Option<Estimate>,
    pub purchases_per_response_lift: Option<Estimate>,
}

/// An experiment with its arms' outcomes so far.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub experiment: Experiment,
    pub arms: Vec<ArmReport>,
    /// The arm whose clicks-per-response interval against the control lies wholly above
    /// zero (the best such), if any: a detected win.
    pub winner: Option<String>,
}

/// Reads the impressions `experiment` served (they are kept for the impression retention)
/// and the clicks, carts and purchases that came back with their request ids.
pub fn report(store: &Store, experiment: &Experiment) -> anyhow::Result<Report> {
    let mut units: Vec<std::collections::HashMap<String, Unit>> =
        vec![std::collections::HashMap::new(); experiment.arms.len()];
    let start = format!("{:012x}-", experiment.started_ms.max(0) as u64);
    let end = experiment
        .stopped_ms
        .map(|ms| format!("{:012x}-", ms.max(0) as u64 + 1));
    store.for_each_impression_from(&start, |impression| {
        if end
            .as_deref()
            .is_some_and(|end| impression.request_id.as_str() >= end)
        {
            return;
        }
        let Some(tag) = impression
            .arm
            .as_ref()
            .filter(|t| t.experiment == experiment.id)
        else {
            return;
        };
        let Some(arm) = experiment.arms.iter().position(|a| a.name == tag.arm) else {
            return;
        };
        let tally = |f: fn(&shelf_store::ImpressionItem) -> bool| {
            impression.items.iter().filter(|i| f(i)).count() as f64
        };
        let clicks = tally(|i| i.clicked);
        let key = impression
            .user_id
            .clone()
            .unwrap_or_else(|| impression.request_id.clone());
        let unit = units[arm].entry(key).or_default();
        unit.responses += 1.0;
        let counts = [
            clicks,
            tally(|i| i.carted),
            tally(|i| i.purchased),
            f64::from(u8::from(clicks > 0.0)),
        ];
        for (total, count) in unit.counts.iter_mut().zip(counts) {
            *total += count;
        }
    })?;
    // Per arm: clicks, carts, purchases and clicked responses, each per response.
    let ratios: Vec<[Ratio; 4]> = units
        .iter()
        .map(|units| {
            std::array::from_fn(|k| {
                let pairs: Vec<(f64, f64)> =
                    units.values().map(|u| (u.responses, u.counts[k])).collect();
                Ratio::of(&pairs)
            })
        })
        .collect();
    let arms: Vec<ArmReport> = experiment
        .arms
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let sum = |k: usize| units[i].values().map(|u| u.counts[k]).sum::<f64>() as u64;
            let [clicks, carts, purchases, clicked] = ratios[i];
            let control = &ratios[0];
            ArmReport {
                name: spec.name.clone(),
                model: spec.model.clone(),
                share: spec.share,
                responses: units[i].values().map(|u| u.responses).sum::<f64>() as u64,
                units: units[i].len() as u64,
                clicks: sum(0),
                carts: sum(1),
                purchases: sum(2),
                clicks_per_response: clicks.estimate(f64::INFINITY),
                carts_per_response: carts.estimate(f64::INFINITY),
                purchases_per_response: purchases.estimate(f64::INFINITY),
                click_through_rate: clicked.estimate(1.0),
                clicks_per_response_lift: (i > 0).then(|| clicks.difference(&control[0])),
                purchases_per_response_lift: (i > 0).then(|| purchases.difference(&control[2])),
            }
        })
        .collect();
    let winner = arms
        .iter()
        .filter(|a| a.clicks_per_response_lift.is_some_and(|l| l.low > 0.0))
        .max_by(|a, b| {
            let lift = |r: &ArmReport| r.clicks_per_response_lift.map_or(0.0, |l| l.value);
            lift(a).total_cmp(&lift(b))
        })
        .map(|a| a.name.clone());
    Ok(Report {
        experiment: experiment.clone(),
        arms,
        winner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(name: &str, model: &str, share: f64) -> ArmSpec {
        ArmSpec {
            name: name.into(),
            model: model.into(),
            share,
        }
    }

    #[test]
    fn bad_arms_are_refused_with_nothing_stored() {
        let data = tempfile::tempdir().unwrap();
        let experiments = Experiments::open(data.path()).unwrap();
        let refuse = |placement: &str, arms: Vec<ArmSpec>| {
            experiments.start(placement, arms, "prior").unwrap_err()
        };
        let two = || vec![arm("a", "prior", 0.5), arm("b", "prior", 0.5)];
        assert!(matches!(
            refuse("trending", two()),
            ExperimentError::Invalid(_)
        ));
        assert!(matches!(
            refuse("search", vec![arm("a", "prior", 0.6), arm("b", "prior", 0.5)]),
            ExperimentError::Invalid(m) if m.contains("at most 1")
        ));
        assert!(matches!(
            refuse("search", vec![arm("a", "prior", 0.5)]),
            ExperimentError::Invalid(_)
        ));
        assert!(matches!(
            refuse(
                "search",
                vec![arm("a", "prior", 0.5), arm("a", "prior", 0.5)]
            ),
            ExperimentError::Invalid(_)
        ));
        assert!(matches!(
            refuse(
                "search",
                vec![arm("a", "prior", 0.0), arm("b", "prior", 0.5)]
            ),
            ExperimentError::Invalid(_)
        ));
        assert!(matches!(
            refuse("search", vec![arm("a", "prior", 0.5), arm("b", "mlp-1", 0.5)]),
            ExperimentError::UnknownModel(m) if m == "mlp-1"
        ));
        assert!(!data.path().join(FILE).exists());
        experiments.start("search", two(), "prior").unwrap();
        assert!(matches!(
            refuse("search", two()),
            ExperimentError::Conflict(_)
        ));
    }

    #[test]
    fn a_restart_keeps_the_running_test_and_users_keep_their_arm() {
        let data = tempfile::tempdir().unwrap();
        let experiments = Experiments::open(data.path()).unwrap();
        let started = experiments
            .start(
                "search",
                vec![arm("control", "live", 0.3), arm("treatment", "prior", 0.3)],
                "prior",
            )
            .unwrap();
        assert_eq!(started.arms[0].model, "prior", "live resolved at the start");
        let arms = |e: &Experiments| -> Vec<Option<String>> {
            (0..2000)
                .map(|u| {
                    e.assign("search", Some(&format!("u{u}")))
                        .map(|(t, _)| t.arm)
                })
                .collect()
        };
        let before = arms(&experiments);
        let reopened = Experiments::open(data.path()).unwrap();
        assert_eq!(reopened.running("search"), Some(started.clone()));
        assert_eq!(arms(&reopened), before);
        // Shares hold: 30% each, 40% outside the test.
        let share = |name: Option<&str>| {
            before.iter().filter(|a| a.as_deref() == name).count() as f64 / 2000.0
        };
        for (name, expected) in [
            (Some("control"), 0.3),
            (Some("treatment"), 0.3),
            (None, 0.4),
        ] {
            assert!(
                (share(name) - expected).abs() < 0.04,
                "{name:?}: {}",
                share(name)
            );
        }
        assert!(reopened.assign("for_user", Some("u1")).is_none());
        let stopped = reopened.stop("search").unwrap();
        assert!(stopped.stopped_ms.is_some());
        assert!(reopened.assign("search", Some("u1")).is_none());
        assert!(Experiments::open(data.path())
            .unwrap()
            .running("search")
            .is_none());
        assert!(matches!(
            reopened.stop("search"),
            Err(ExperimentError::NotFound(_))
        ));
    }

    #[test]
    fn intervals_cover_known_values_and_widen_for_correlated_users() {
        // One response per unit: the plain mean and its standard error.
        let independent: Vec<(f64, f64)> = (0..1000).map(|i| (1.0, f64::from(i % 2))).collect();
        let r = Ratio::of(&independent);
        assert!((r.value - 0.5).abs() < 1e-12);
        // sample variance 0.25025..., over 1000
        assert!((r.variance - 0.250_250_25 / 1000.0).abs() < 1e-9, "{r:?}");
        let quarter: Vec<(f64, f64)> = (0..1000)
            .map(|i| (1.0, f64::from(u8::from(i % 4 == 0))))
            .collect();
        let d = r.difference(&Ratio::of(&quarter));
        assert!((d.value - 0.25).abs() < 1e-12);
        // 1.96 * sqrt(0.25025/1000 + 0.18769/1000) ~= 0.041
        assert!((d.high - d.value - 0.041).abs() < 2e-3, "{d:?}");
        // The same 1000 responses from 10 users, each of whom always or never clicks: the
        // rate is the same, its interval much wider.
        let clustered: Vec<(f64, f64)> = (0..10)
            .map(|u| (100.0, if u % 2 == 0 { 100.0 } else { 0.0 }))
            .collect();
        let c = Ratio::of(&clustered);
        assert!((c.value - 0.5).abs() < 1e-12);
        assert!(c.variance > 10.0 * r.variance, "{c:?} against {r:?}");
        let e = c.estimate(1.0);
        assert!(e.low >= 0.0 && e.high <= 1.0);
    }
}
