//! The impression pipeline: searches queue impressions, a writer appends them to the event
//! stream, and expiry deletes old ones.

use super::*;

impl Node {
    /// Appends queued impressions to the event stream in batches.
    pub(super) async fn run_impression_writer(self: Arc<Self>) -> anyhow::Result<()> {
        let Some(mut rx) = self.impressions_rx.lock().expect("not poisoned").take() else {
            return Ok(());
        };
        let mut stop = self.stop.subscribe();
        let mut buffer = Vec::new();
        loop {
            tokio::select! {
                n = rx.recv_many(&mut buffer, 4096) => {
                    if n == 0 {
                        return Ok(());
                    }
                }
                _ = stop.changed() => {
                    // Drain what is queued, then stop.
                    while let Ok(impression) = rx.try_recv() {
                        buffer.push(impression);
                    }
                    if !buffer.is_empty() {
                        self.append_events(buffer.iter().map(impression_record).collect()).await?;
                        self.impressions_pending.fetch_sub(buffer.len(), Ordering::AcqRel);
                    }
                    return Ok(());
                }
            }
            let payloads: Vec<Vec<u8>> = buffer.drain(..).map(|i| impression_record(&i)).collect();
            let n = payloads.len();
            if let Err(e) = self.append_events(payloads).await {
                tracing::error!(error = %e, "appending impressions failed; they are lost");
            }
            self.impressions_pending.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Deletes impressions older than the retention and dead letters beyond the newest
    /// [`DEAD_LETTERS_KEPT`] of each job's partition, hourly.
    pub(super) async fn run_impression_expiry(self: Arc<Self>) -> anyhow::Result<()> {
        let mut stop = self.stop.subscribe();
        loop {
            let retention = self.config.impression_retention;
            let now_ms =
                (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
            let cutoff = shelf_engine::request_id_floor(now_ms - retention.as_millis() as i64);
            let store = Arc::clone(&self.store);
            match tokio::task::spawn_blocking(move || store.expire_impressions(&cutoff)).await? {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "old impressions deleted"),
                Err(e) => tracing::error!(error = %e, "expiring impressions failed"),
            }
            for job in [ITEM_JOB, EVENT_JOB, STATS_JOB] {
                let store = Arc::clone(&self.store);
                let pruned = tokio::task::spawn_blocking(move || {
                    store.prune_dead_letters(job, DEAD_LETTERS_KEPT)
                })
                .await?;
                match pruned {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(job, deleted = n, "old dead letters deleted"),
                    Err(e) => tracing::error!(job, error = %e, "pruning dead letters failed"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// Queues an impression for the event stream; when the queue is full it is dropped
    /// and counted.
    pub fn log_impression(&self, impression: Impression) {
        self.impressions_pending.fetch_add(1, Ordering::AcqRel);
        if self.impressions.try_send(impression).is_err() {
            self.impressions_pending.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("impression queue full; an impression was dropped");
        }
    }
}
