//! Log upkeep: periodic fsync, retention, and the final sync.

use super::*;

impl Node {
    /// With `--fsync Nms`, fsyncs the embedded logs every N ms, so an accepted record is on
    /// disk within N ms even when nothing is appended after it (the log itself syncs only
    /// on appends).
    pub(super) async fn run_log_syncer(self: Arc<Self>) -> anyhow::Result<()> {
        let Transport::Embedded { items, .. } = &self.transport else {
            return Ok(());
        };
        let Some(every) = items.lock().sync_interval() else {
            return Ok(());
        };
        let mut stop = self.stopping();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return Ok(()),
            }
            let node = Arc::clone(&self);
            tokio::task::spawn_blocking(move || node.sync_logs())
                .await
                .context("the log syncer panicked")??;
        }
    }

    /// Applies the log retention every 5 minutes (embedded log only).
    pub(super) async fn run_log_retention(self: Arc<Self>) -> anyhow::Result<()> {
        if !self.is_embedded() {
            return Ok(());
        }
        let mut stop = self.stopping();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LOG_RETENTION_EVERY) => {}
                _ = stop.changed() => return Ok(()),
            }
            let node = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || node.apply_log_retention()).await? {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(segments = deleted, "old log segments deleted"),
                Err(e) => tracing::error!(error = %e, "applying the log retention failed"),
            }
        }
    }

    /// Deletes the embedded logs' segments that `log_retention` lets go, of records already
    /// applied: by the event job for events; by the item job and the last index snapshot
    /// for items (a restart replays the item log from the snapshot's position). Returns
    /// the number of segments deleted.
    pub fn apply_log_retention(&self) -> anyhow::Result<usize> {
        let Transport::Embedded { items, events } = &self.transport else {
            return Ok(0);
        };
        let retention = &self.config.log_retention;
        // A restart replays the item log from the vector snapshot's position and from the
        // lexical index's last commit: neither may be deleted.
        let mut items_applied = self
            .store
            .offset(ITEM_JOB)?
            .min(self.snapshot_position.load(Ordering::Acquire));
        match self.retriever() {
            Some(r) => {
                if let Some(lexical) = r.lexical() {
                    items_applied = items_applied.min(lexical.position().unwrap_or(0));
                }
            }
            // Still loading: the lexical index may be replaying the item log.
            None => items_applied = 0,
        }
        let events_applied = self.store.offset(EVENT_JOB)?;
        let (_, from_items) = items.lock().apply_retention(items_applied, retention)?;
        let (_, from_events) = events.lock().apply_retention(events_applied, retention)?;
        Ok(from_items + from_events)
    }

    /// Whether either embedded log holds appended records not yet fsynced.
    pub fn logs_unsynced(&self) -> bool {
        match &self.transport {
            Transport::Embedded { items, events } => {
                items.lock().has_unsynced() || events.lock().has_unsynced()
            }
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { .. } => false,
        }
    }

    /// Flushes the logs to disk.
    pub fn sync_logs(&self) -> anyhow::Result<()> {
        if let Transport::Embedded { items, events } = &self.transport {
            items.lock().sync()?;
            events.lock().sync()?;
        }
        Ok(())
    }
}
