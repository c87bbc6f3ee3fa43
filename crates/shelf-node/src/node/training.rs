//! Training on a schedule and swapping in newly promoted models.

use super::*;

impl Node {
    /// Retrains on the logged impressions every `interval` when enough new ones arrived;
    /// promotion (and the swap, by the watcher) happens only when the new model's validation
    /// AUC is not below the live one's.
    pub(super) async fn run_trainer(self: Arc<Self>, interval: Duration) -> anyhow::Result<()> {
        let mut stop = self.stop.subscribe();
        let mut trained_on = 0usize;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return Ok(()),
            }
            let node = Arc::clone(&self);
            let min_new = self.config.train_min_new_examples;
            let result = tokio::task::spawn_blocking(
                move || -> anyhow::Result<Option<(usize, crate::models::TrainOutcome)>> {
                    let examples = crate::models::count_examples(&node.store)?;
                    if examples < trained_on + min_new {
                        return Ok(None);
                    }
                    let config = shelf_rank::TrainConfig {
                        objective: node.config.train_objective,
                        ..shelf_rank::TrainConfig::for_model(node.config.train_model)
                    };
                    let outcome = crate::models::train_and_promote(
                        &node.config.data_dir,
                        &node.store,
                        &config,
                        min_new,
                    )?;
                    Ok(Some((examples, outcome)))
                },
            )
            .await?;
            match result {
                Ok(None) => {}
                Ok(Some((examples, outcome))) => {
                    trained_on = examples;
                    tracing::info!(
                        version = %outcome.model.version,
                        matched_auc = outcome.model.report.validation_position_matched_auc,
                        incumbent_matched_auc = outcome.incumbent_position_matched_auc,
                        promoted = outcome.promoted,
                        "ranker retrained"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "retraining failed"),
            }
        }
    }

    /// Swaps in `live.json` whenever it changes (promoted by `shelf train`), without
    /// stopping searches: each search uses the ranker it started with.
    pub(super) async fn run_model_watcher(self: Arc<Self>) -> anyhow::Result<()> {
        let path = crate::models::dir(&self.config.data_dir).join(crate::models::LIVE);
        let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen = modified(&path);
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(MODEL_POLL) => {}
                _ = stop.changed() => return Ok(()),
            }
            let now = modified(&path);
            if now == seen {
                continue;
            }
            seen = now;
            let data_dir = self.config.data_dir.clone();
            let loaded = tokio::task::spawn_blocking(move || crate::models::load_live(&data_dir))
                .await
                .context("loading the live model panicked")?;
            match loaded {
                Ok(Some(model)) => {
                    tracing::info!(version = %model.version, auc = model.report.validation_auc, "live model swapped in");
                    *self.live_report.lock().expect("not poisoned") = Some(model.report.clone());
                    if let Some(r) = self.retriever() {
                        r.set_ranker(Arc::new(model));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the new live model is unusable; keeping the current one")
                }
            }
        }
    }
}

impl Node {
    /// Makes the saved model `version` (or `prior`, the hand-set ranker) the live ranker,
    /// now and after a restart.
    pub fn promote(&self, version: &str) -> Result<(), ExperimentError> {
        let data_dir = &self.config.data_dir;
        let (ranker, report): (Arc<dyn Ranker>, _) = if version == "prior" {
            crate::models::demote_to_prior(data_dir)?;
            (Arc::new(shelf_rank::PriorRanker::default()), None)
        } else {
            let model = crate::models::load(data_dir, version)?
                .ok_or_else(|| ExperimentError::UnknownModel(version.to_string()))?;
            crate::models::promote(data_dir, &model)?;
            let report = model.report.clone();
            (Arc::new(model), Some(report))
        };
        *self.live_report.lock().unwrap_or_else(|e| e.into_inner()) = report;
        if let Some(r) = self.retriever() {
            r.set_ranker(ranker);
        }
        tracing::info!(version, "promoted to live");
        Ok(())
    }

    /// Ends experiment `id` by making its arm `arm`'s model live (and stopping the test if
    /// it still runs). With `require_win`, only an arm whose gain in clicks per response
    /// over the control is significant (its 95% interval above zero) is promoted. Returns
    /// the report the decision was made on.
    pub fn promote_arm(
        &self,
        id: &str,
        arm: &str,
        require_win: bool,
    ) -> Result<experiments::Report, ExperimentError> {
        let experiment = self
            .experiments
            .get(id)
            .ok_or_else(|| ExperimentError::NotFound(format!("no experiment `{id}`")))?;
        let Some(index) = experiment.arms.iter().position(|a| a.name == arm) else {
            return Err(ExperimentError::Invalid(format!(
                "experiment {id} has no arm `{arm}`"
            )));
        };
        let report = experiments::report(&self.store, &experiment)?;
        if require_win && report.winner.as_deref() != Some(arm) {
            let why = match &report.arms[index].clicks_per_response_lift {
                None => "it is the control, which the other arms are compared with".to_string(),
                Some(lift) => format!(
                    "its clicks per response differ from the control's by {:+.4} (95% \
                     interval {:+.4} to {:+.4}, {} responses against {})",
                    lift.value,
                    lift.low,
                    lift.high,
                    report.arms[index].responses,
                    report.arms[0].responses
                ),
            };
            return Err(ExperimentError::Conflict(format!(
                "arm `{arm}` has not won online: {why}; promote with require_win false to \
                 override"
            )));
        }
        if experiment.stopped_ms.is_none() {
            self.experiments.stop(&experiment.placement)?;
        }
        self.promote(&experiment.arms[index].model)?;
        Ok(report)
    }
}
