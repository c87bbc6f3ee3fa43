//! The impression pipeline: searches queue impressions, a writer appends them to the event
//! stream, and expiry deletes old ones.

use super::*;

/// The longest an event append waits for the impressions queued before it.
const IMPRESSION_WAIT: Duration = Duration::from_secs(1);

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
                        let appended =
                            self.append_events(buffer.iter().map(impression_record).collect()).await;
                        self.impressions_pending.fetch_sub(buffer.len(), Ordering::AcqRel);
                        self.settle_impressions(buffer.len());
                        appended?;
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
            self.settle_impressions(n);
        }
    }

    /// Counts `n` impressions as settled (appended, failed or dropped) and wakes the event
    /// appends waiting for them.
    fn settle_impressions(&self, n: usize) {
        self.impressions_settled
            .fetch_add(n as u64, Ordering::AcqRel);
        self.impressions_settled_wake.notify_waiters();
    }

    /// Appends shoppers' events after every impression queued before the call: a click
    /// posted right after its search finds the response's impression already in the stream
    /// (the event job labels an impression only once it has applied it). It waits at most
    /// [`IMPRESSION_WAIT`] (the writer appends within milliseconds; a stalled stream is the
    /// append's own error to report).
    pub async fn append_events_after_impressions(
        &self,
        payloads: Vec<Vec<u8>>,
    ) -> anyhow::Result<Range<u64>> {
        let target = self.impressions_queued.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + IMPRESSION_WAIT;
        loop {
            let woken = self.impressions_settled_wake.notified();
            if self.impressions_settled.load(Ordering::Acquire) >= target {
                break;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                tracing::warn!(
                    "impressions not appended within {IMPRESSION_WAIT:?}; appending events anyway"
                );
                break;
            }
        }
        self.append_events(payloads).await
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
        // Counted before it is sent, so a reader of `queued` covers every impression sent
        // before its read.
        self.impressions_queued.fetch_add(1, Ordering::AcqRel);
        if self.impressions.try_send(impression).is_err() {
            self.impressions_pending.fetch_sub(1, Ordering::AcqRel);
            self.settle_impressions(1);
            tracing::warn!("impression queue full; an impression was dropped");
        }
    }
}
