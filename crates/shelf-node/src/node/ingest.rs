//! The item, event and stats jobs over their streams, appends through the node, and item
//! freshness.

use super::*;

impl Node {
    pub(super) fn is_embedded(&self) -> bool {
        matches!(self.transport, Transport::Embedded { .. })
    }

    pub(super) fn source(&self, topic: &str) -> anyhow::Result<Box<dyn Source>> {
        self.transport.source(&self.config.data_dir, topic)
    }

    /// The item topic the item job reads.
    pub(super) fn item_topic(&self) -> &str {
        match &self.transport {
            Transport::Embedded { .. } => "shelf-items",
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { topics, .. } => &topics.item_topic,
        }
    }

    /// The item job's committed offsets summed over its partitions (the index snapshot's
    /// position).
    pub(super) fn item_position(&self) -> anyhow::Result<u64> {
        let source = self.source(self.item_topic())?;
        let mut position = 0;
        for partition in source.partitions() {
            position += self.store.partition_offset(ITEM_JOB, partition)?;
        }
        Ok(position)
    }

    /// The item job (on its own thread): applies the item topic to the store and the
    /// indexes; commits the lexical index after every batch (that is what makes an item
    /// findable by its words) and snapshots the vector index every `snapshot_interval`
    /// while items change, each only when it holds every committed change.
    pub(super) async fn run_item_job(
        self: &Arc<Self>,
        index: &HnswIndex,
        lexical: &Arc<LexicalIndex>,
    ) -> anyhow::Result<()> {
        let store = Arc::clone(&self.store);
        let embedder = self.item_embedder.clone();
        let job = if self.item_topic() == ITEM_VECTORS_TOPIC {
            ItemJob::with_upstream_vectors(store, embedder, Some(index.clone()))?
        } else {
            ItemJob::new(store, embedder, Some(index.clone()))?
        };
        let mut job = job.with_lexical(Arc::clone(lexical));
        // A failed commit rolls the lexical index back to its last commit; what came after
        // is applied again from the log (or the store), and a restart replays it too.
        // Until a repair succeeds, each later batch repairs instead of committing (a commit
        // would claim a position whose changes were rolled back).
        let lexical_behind = std::cell::Cell::new(false);
        let commit_lexical = |position: u64| {
            let result = if lexical_behind.get() {
                Err(anyhow::anyhow!("behind since a failed commit"))
            } else {
                lexical.commit(position).map_err(anyhow::Error::from)
            };
            if let Err(e) = result {
                tracing::error!(error = %e, position, "lexical index commit failed; repairing");
                let repaired = self.repair_lexical(lexical, position);
                if let Err(e) = &repaired {
                    tracing::error!(error = %e, "lexical index repair failed; retried after the next batch");
                }
                lexical_behind.set(repaired.is_err());
            }
        };
        let mut source = self.source(self.item_topic())?;
        let mut last_snapshot = Instant::now();
        let interval = self.config.snapshot_interval;
        self.jobs.running(ITEM_JOB);
        let progress = follow(
            &mut job,
            &mut source,
            &self.store,
            self.config.batch_size,
            &self.item_wake,
            self.stop.subscribe(),
            |job: &ItemJob<_, _>, progress: &Progress, outcome| {
                self.observe_batch(ITEM_JOB, &outcome);
                if outcome.is_err() {
                    return;
                }
                if job.index_in_step() {
                    commit_lexical(progress.offset);
                }
                self.observe_freshness(progress.offset);
                if last_snapshot.elapsed() >= interval
                    && progress.offset > self.snapshot_position.load(Ordering::Acquire)
                    && job.index_in_step()
                {
                    self.snapshot(index, progress.offset);
                    last_snapshot = Instant::now();
                }
                self.maybe_panic(ITEM_JOB);
            },
        )
        .await?;
        if job.index_in_step() {
            commit_lexical(self.item_position()?);
        }
        if job.index_in_step()
            && (progress.offset > self.snapshot_position.load(Ordering::Acquire)
                || !self.snapshot_dir().exists())
        {
            self.snapshot(index, self.item_position()?);
        }
        Ok(())
    }

    /// The event job (on its own thread): applies the event topic to profiles, item
    /// statistics, co-visitation and trending lists, and impression labels.
    pub(super) async fn run_event_job(self: &Arc<Self>) -> anyhow::Result<()> {
        let job = EventJob::new(Arc::clone(&self.store), self.config.decay.clone(), self.dim)
            .with_behaviour(self.config.behaviour.clone());
        self.follow_topic(
            job,
            "shelf-events",
            &self.event_wake,
            self.config.event_batch_size,
        )
        .await
    }

    /// Applies `shelf-item-stats` (windowed item activity from Arroyo; Fluvio only).
    pub(super) async fn run_stats_job(self: &Arc<Self>) -> anyhow::Result<()> {
        let job = StatsJob::new(Arc::clone(&self.store));
        self.follow_topic(
            job,
            "shelf-item-stats",
            &Notify::new(),
            self.config.event_batch_size,
        )
        .await
    }

    /// Runs `job` over `topic` in batches of at most `batch_size` until the node stops,
    /// recording its batches on the board under the job's name.
    pub(super) async fn follow_topic<J: Job>(
        self: &Arc<Self>,
        mut job: J,
        topic: &str,
        wake: &Notify,
        batch_size: usize,
    ) -> anyhow::Result<()> {
        let name = job.name();
        let mut source = self.source(topic)?;
        self.jobs.running(name);
        follow(
            &mut job,
            &mut source,
            &self.store,
            batch_size,
            wake,
            self.stop.subscribe(),
            |_, _, outcome| {
                self.observe_batch(name, &outcome);
                if outcome.is_ok() {
                    self.maybe_panic(name);
                }
            },
        )
        .await?;
        Ok(())
    }

    /// Appends item records durably; returns their offsets.
    pub async fn append_items(&self, payloads: Vec<Vec<u8>>) -> anyhow::Result<Range<u64>> {
        let n = payloads.len() as u64;
        let started = Instant::now();
        let range = match &self.transport {
            Transport::Embedded { items, .. } => items.append(payloads).await?,
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { items, .. } => streams::produce(items, payloads, "id").await?,
        };
        if self.is_embedded() {
            let mut pending = self.pending_items.lock().expect("not poisoned");
            // Bounded: freshness is sampled, never a memory leak when the job lags.
            if pending.len() < 100_000 {
                pending.push_back((range.end - 1, started));
            }
        }
        self.metrics.items_appended.inc_by(n);
        self.item_wake.notify_one();
        Ok(range)
    }

    /// Appends events durably; returns their offsets.
    pub async fn append_events(&self, payloads: Vec<Vec<u8>>) -> anyhow::Result<Range<u64>> {
        let range = match &self.transport {
            Transport::Embedded { events, .. } => events.append(payloads).await?,
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { events, .. } => {
                streams::produce(events, payloads, "user_id").await?
            }
        };
        self.event_wake.notify_one();
        Ok(range)
    }

    pub(super) fn observe_freshness(&self, applied_up_to: u64) {
        let mut pending = self.pending_items.lock().expect("not poisoned");
        while let Some(&(offset, appended)) = pending.front() {
            if offset >= applied_up_to {
                break;
            }
            self.metrics
                .item_freshness
                .observe(appended.elapsed().as_secs_f64());
            pending.pop_front();
        }
    }

    /// Waits (at most `timeout`) until the event job has applied everything appended to
    /// the event stream so far (the embedded log, or every partition of `shelf-events` this
    /// node applies), impressions still queued included. Returns whether it has.
    pub async fn drain_events(&self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        // Queued impressions are appended within milliseconds; wait for them first.
        while self.impressions_pending.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The end of every partition of the event stream this node applies, now: whatever
        // was sent before lies below it.
        let ends: Vec<(Option<u32>, u64)> = match &self.transport {
            Transport::Embedded { events, .. } => vec![(None, events.next_offset())],
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { topics, .. } => {
                let topics = topics.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(Option<u32>, u64)>> {
                    let count = topics.cluster.partition_count("shelf-events")?.unwrap_or(0);
                    let partitions: Vec<u32> = if topics.partitions.is_empty() {
                        (0..count).collect()
                    } else {
                        topics.partitions.clone()
                    };
                    partitions
                        .into_iter()
                        .map(|p| Ok((Some(p), topics.cluster.end_offset("shelf-events", p)?)))
                        .collect()
                })
                .await??
            }
        };
        for (partition, end) in ends {
            loop {
                let store = Arc::clone(&self.store);
                let applied = tokio::task::spawn_blocking(move || match partition {
                    None => store.offset(EVENT_JOB),
                    Some(p) => store.partition_offset(EVENT_JOB, p),
                })
                .await??;
                if applied >= end {
                    break;
                }
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                self.event_wake.notify_one();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(true)
    }

    /// Item records in the embedded item log not yet applied (embedded, stored, and
    /// searchable in both indexes); `None` on Fluvio, whose lag is read from the cluster.
    pub fn pending_items(&self) -> Option<u64> {
        match &self.transport {
            Transport::Embedded { items, .. } => {
                let mut applied = self.store.offset(ITEM_JOB).unwrap_or(0);
                if let Some(lexical) = self.retriever().and_then(|r| r.lexical()) {
                    applied = applied.min(lexical.position().unwrap_or(0));
                }
                Some(items.next_offset().saturating_sub(applied))
            }
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { .. } => None,
        }
    }

    /// Item records ever appended to the embedded item log (its next offset; 0 on Fluvio).
    pub fn items_appended_ever(&self) -> u64 {
        match &self.transport {
            Transport::Embedded { items, .. } => items.next_offset(),
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { .. } => 0,
        }
    }
}
