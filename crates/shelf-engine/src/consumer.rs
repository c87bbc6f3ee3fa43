//! The consumer loop: read a batch from the source at the job's committed offset, apply it
//! (the job commits state and offset in one write), repeat.

use crate::EngineError;
use shelf_store::Store;
use shelf_stream::{Record, Source};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// A job that applies batches of records and commits its offset with its state.
pub trait Job {
    /// The consumer name its offset is stored under.
    fn name(&self) -> &'static str;

    /// Applies `records` (consecutive, from the committed offset) atomically.
    fn apply(&mut self, records: Vec<Record>)
        -> impl Future<Output = Result<Applied, EngineError>>;
}

/// What one batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub records: usize,
    pub dead_letters: usize,
}

/// What a catch-up run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub records: u64,
    pub dead_letters: u64,
    pub batches: u64,
    /// The committed next offsets summed over the source's partitions (with one partition,
    /// the offset itself). It only grows, so equal positions mean equal state.
    pub offset: u64,
    /// Batches that failed (machinery errors: store, index, embedder) and were retried
    /// from the committed offsets ([`follow`] only).
    pub failures: u64,
}

/// How long [`follow`] waits before retrying after `failures` failed batches in a row:
/// 100 ms, doubling, at most 30 s.
pub fn retry_delay(failures: u32) -> Duration {
    const JOBS: shelf_types::Backoff = shelf_types::Backoff {
        start: Duration::from_millis(100),
        max: Duration::from_secs(30),
    };
    JOBS.delay(failures)
}

/// The committed next offset of each of `source`'s partitions, after seeking the source
/// to them.
fn seek_committed<J: Job, S: Source>(
    job: &J,
    source: &mut S,
    store: &Store,
) -> Result<BTreeMap<u32, u64>, EngineError> {
    let mut offsets = BTreeMap::new();
    for partition in source.partitions() {
        let offset = store.partition_offset(job.name(), partition)?;
        source.seek(partition, offset)?;
        offsets.insert(partition, offset);
    }
    Ok(offsets)
}

/// The end offsets of `source`'s partitions, summed (comparable with [`Progress::offset`]).
pub fn source_end<S: Source>(source: &mut S) -> Result<u64, EngineError> {
    let mut end = 0;
    for partition in source.partitions() {
        end += source.end_offset(partition)?;
    }
    Ok(end)
}

/// Applies `records` partition by partition (each partition's records are consecutive and
/// committed with the job's state in one write); updates `offsets` and `progress`.
async fn apply_by_partition<J: Job>(
    job: &mut J,
    records: Vec<Record>,
    offsets: &mut BTreeMap<u32, u64>,
    progress: &mut Progress,
) -> Result<(), EngineError> {
    let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    for record in records {
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record);
    }
    for (partition, records) in by_partition {
        let next = records.last().map_or(0, |r| r.offset + 1);
        let applied = job.apply(records).await?;
        progress.records += applied.records as u64;
        progress.dead_letters += applied.dead_letters as u64;
        progress.batches += 1;
        offsets.insert(partition, next);
    }
    progress.offset = offsets.values().sum();
    Ok(())
}

/// Applies everything in `source` after the job's committed offsets, in batches of
/// `batch_size`, then returns. Killing the process at any point loses nothing: the next
/// run resumes from the last committed batch.
pub async fn catch_up<J: Job, S: Source>(
    job: &mut J,
    source: &mut S,
    store: &Store,
    batch_size: usize,
    mut on_batch: impl FnMut(&Progress, u64),
) -> Result<Progress, EngineError> {
    let mut offsets = seek_committed(job, source, store)?;
    let mut progress = Progress {
        offset: offsets.values().sum(),
        ..Default::default()
    };
    loop {
        let end = source_end(source)?;
        if progress.offset >= end {
            return Ok(progress);
        }
        let records = source.poll(batch_size, CATCH_UP_WAIT)?;
        if records.is_empty() {
            return Ok(progress);
        }
        apply_by_partition(job, records, &mut offsets, &mut progress).await?;
        on_batch(&progress, end);
    }
}

/// How long catch-up waits for a record it knows exists (a remote source delivers it
/// from another thread).
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// How long a following job sleeps when the source is idle and nobody wakes it (records
/// appended by another process are found within this delay).
pub const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Applies `source` batch by batch, forever: after the last record it waits for `wake`
/// (notified by in-process appenders) or [`IDLE_WAIT`], until `stop` turns true. A batch
/// that fails (a machinery error: nothing of it was committed past the failing partition)
/// is logged, counted in [`Progress::failures`] and retried from the committed offsets
/// after [`retry_delay`]: a transient failure loses nothing and stops nothing. After
/// each committed batch, `after_batch` runs with the progress and `Ok(end)`, the source's
/// end offset (summed over partitions like [`Progress::offset`]); it runs between batches,
/// so it sees the job's state exactly at the committed offsets. After a failed batch it
/// runs with `Err(error)` before the wait (so a supervisor can show the job as failing).
pub async fn follow<J: Job, S: Source>(
    job: &mut J,
    source: &mut S,
    store: &Store,
    batch_size: usize,
    wake: &tokio::sync::Notify,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut after_batch: impl FnMut(&J, &Progress, Result<u64, &EngineError>),
) -> Result<Progress, EngineError> {
    let mut offsets = seek_committed(job, source, store)?;
    let mut progress = Progress {
        offset: offsets.values().sum(),
        ..Default::default()
    };
    let mut failures_in_a_row = 0u32;
    loop {
        if *stop.borrow() {
            return Ok(progress);
        }
        let records = source.poll(batch_size, Duration::ZERO)?;
        if records.is_empty() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(IDLE_WAIT) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        if let Err(error) = apply_by_partition(job, records, &mut offsets, &mut progress).await {
            failures_in_a_row += 1;
            progress.failures += 1;
            let wait = retry_delay(failures_in_a_row);
            tracing::error!(
                job = job.name(),
                %error,
                retry_in_ms = wait.as_millis() as u64,
                "batch failed; retrying from the committed offsets"
            );
            after_batch(job, &progress, Err(&error));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
            offsets = seek_committed(job, source, store)?;
            progress.offset = offsets.values().sum();
            continue;
        }
        failures_in_a_row = 0;
        let end = source_end(source)?;
        after_batch(job, &progress, Ok(end));
    }
}
