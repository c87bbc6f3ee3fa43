//! The model directory (`DATA/models`): every trained model as `{version}.json`, the live
//! one also as `live.json` (replaced atomically on promotion), and the training run that
//! produces and promotes them.

use anyhow::Context;
use shelf_rank::{
    auc, position_matched_auc, train, Example, LearnedModel, PriorRanker, TrainConfig,
};
use shelf_store::Store;
use shelf_types::Ranker;
use std::path::{Path, PathBuf};

pub const LIVE: &str = "live.json";

/// The models directory of a data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

/// The live model, if one was promoted.
pub fn load_live(data_dir: &Path) -> anyhow::Result<Option<LearnedModel>> {
    read_model(&dir(data_dir).join(LIVE))
}

/// The model saved at `path`, or `None` when there is no such file.
fn read_model(path: &Path) -> anyhow::Result<Option<LearnedModel>> {
    match std::fs::read_to_string(path) {
        Ok(text) => LearnedModel::from_json(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The saved model `version` (`{version}.json`), or `None` when there is no such file.
pub fn load(data_dir: &Path, version: &str) -> anyhow::Result<Option<LearnedModel>> {
    let valid = !version.is_empty()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid || version == "live" {
        return Ok(None);
    }
    read_model(&dir(data_dir).join(format!("{version}.json")))
}

/// Makes `model` the live one (`live.json`, replaced atomically); the caller swaps it into
/// the retriever.
pub fn promote(data_dir: &Path, model: &LearnedModel) -> anyhow::Result<()> {
    let dir = dir(data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomically(&dir.join(LIVE), &model.to_json())
}

/// Returns ranking to the hand-set prior: removes `live.json` (the saved models stay).
pub fn demote_to_prior(data_dir: &Path) -> anyhow::Result<()> {
    let path = dir(data_dir).join(LIVE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {}", path.display())),
    }
}

/// Every saved model (not `live.json`), oldest version first.
pub fn list(data_dir: &Path) -> anyhow::Result<Vec<LearnedModel>> {
    let dir = dir(data_dir);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let is_model = path.extension().is_some_and(|e| e == "json")
            && path.file_name().is_some_and(|n| n != LIVE);
        if is_model {
            if let Ok(model) = LearnedModel::from_json(&std::fs::read_to_string(&path)?) {
                out.push(model);
            }
        }
    }
    out.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(out)
}

/// Training examples from the logged impressions: one per shown item, labelled by whether
/// a click with the impression's request id came back.
pub fn examples(store: &Store) -> anyhow::Result<Vec<Example>> {
    let mut out = Vec::new();
    let mut request = 0u64;
    store.for_each_impression(|impression| {
        request += 1;
        for shown in impression.items {
            let Some(features) = shelf_types::features_from_logged(&shown.features) else {
                continue; // logged under an unknown feature schema
            };
            out.push(Example {
                features,
                position: shown.position,
                clicked: shown.clicked,
                ts_ms: impression.ts_ms,
                request,
            });
        }
    })?;
    Ok(out)
}

/// The number of shown items the logged impressions hold (what [`examples`] would
/// return), counted without keeping them: the background trainer's cheap check for new
/// data.
pub fn count_examples(store: &Store) -> anyhow::Result<usize> {
    let mut count = 0;
    store.for_each_impression(|impression| count += impression.items.len())?;
    Ok(count)
}

/// Models kept in `DATA/models` besides the live one; older ones are deleted after each
/// training run.
pub const MODELS_KEPT: usize = 20;

/// Deletes all but the newest `keep` saved models (by the training time in their version,
/// `{kind}-{unix ms}`), never the live one nor one an A/B test in progress serves. Returns
/// how many were deleted.
pub fn prune(data_dir: &Path, keep: usize) -> anyhow::Result<usize> {
    let dir = dir(data_dir);
    let live = load_live(data_dir).ok().flatten().map(|m| m.version);
    let in_tests = crate::experiments::models_in_running_tests(data_dir)?;
    let mut saved: Vec<(u128, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "json") || stem == "live" {
            continue;
        }
        if live.as_deref() == Some(stem) || in_tests.iter().any(|m| m == stem) {
            continue;
        }
        let Some(ms) = stem.rsplit('-').next().and_then(|t| t.parse().ok()) else {
            continue; // not a model file shelf wrote
        };
        saved.push((ms, path));
    }
    saved.sort();
    let excess = saved.len().saturating_sub(keep);
    for (_, path) in &saved[..excess] {
        std::fs::remove_file(path).with_context(|| format!("deleting {}", path.display()))?;
    }
    Ok(excess)
}

/// What a training run did.
#[derive(Debug, serde::Serialize)]
pub struct TrainOutcome {
    pub model: LearnedModel,
    /// The model that was live before (the prior model if none), and its plain and
    /// position-matched AUC on the new model's validation examples.
    pub incumbent: String,
    pub incumbent_validation_auc: f64,
    pub incumbent_position_matched_auc: f64,
    pub promoted: bool,
    pub path: PathBuf,
}

/// Trains a model on the store's impressions, saves it, and promotes it to `live.json`
/// when its position-matched validation AUC is not below the live model's on the same
/// validation examples.
pub fn train_and_promote(
    data_dir: &Path,
    store: &Store,
    config: &TrainConfig,
    min_examples: usize,
) -> anyhow::Result<TrainOutcome> {
    let examples = examples(store)?;
    anyhow::ensure!(
        examples.len() >= min_examples,
        "{} logged impressions of items; at least {min_examples} are needed (serve traffic first)",
        examples.len()
    );
    let kind = config.kind.name();
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let version = format!("{kind}-{now_ms}");
    let model = train(&examples, config, &version)?;

    // The incumbent, judged on the same (newest) validation examples.
    let mut sorted: Vec<&Example> = examples.iter().collect();
    sorted.sort_by_key(|e| e.ts_ms);
    let split = ((sorted.len() as f64) * (1.0 - config.validation_share)).round() as usize;
    let validation = &sorted[split..];
    let labels: Vec<bool> = validation.iter().map(|e| e.clicked).collect();
    let live = load_live(data_dir)?;
    let incumbent: Box<dyn Ranker> = match live {
        Some(model) => Box::new(model),
        None => Box::new(PriorRanker::default()),
    };
    let scores: Vec<f32> = validation
        .iter()
        .map(|e| incumbent.score(&e.features))
        .collect();
    let incumbent_auc = auc(&scores, &labels).unwrap_or(0.5);
    let positions: Vec<u32> = validation.iter().map(|e| e.position).collect();
    let incumbent_matched_auc = position_matched_auc(&scores, &labels, &positions).unwrap_or(0.5);
    // Plain AUC on logged clicks favours the incumbent, whose order the shoppers saw; the
    // position-matched AUC compares the two fairly.
    let promoted = model.report.validation_position_matched_auc >= incumbent_matched_auc;

    let dir = dir(data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{version}.json"));
    write_atomically(&path, &model.to_json())?;
    if promoted {
        promote(data_dir, &model)?;
    }
    prune(data_dir, MODELS_KEPT)?;
    Ok(TrainOutcome {
        incumbent: incumbent.name().to_string(),
        incumbent_validation_auc: incumbent_auc,
        incumbent_position_matched_auc: incumbent_matched_auc,
        model,
        promoted,
        path,
    })
}

pub(crate) fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut file =
            std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_models_and_the_live_one() {
        let data = tempfile::tempdir().unwrap();
        let dir = dir(data.path());
        std::fs::create_dir_all(&dir).unwrap();
        for ms in 1..=6u64 {
            std::fs::write(dir.join(format!("logistic-{ms}.json")), "{}").unwrap();
        }
        std::fs::write(dir.join("notes.json"), "{}").unwrap();
        assert_eq!(prune(data.path(), 3).unwrap(), 3);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "logistic-4.json",
                "logistic-5.json",
                "logistic-6.json",
                "notes.json"
            ]
        );
    }
}
