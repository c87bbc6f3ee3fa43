//! The consumer loop: read a batch from the source at the job's committed offset, apply it
//! (the job commits state and offset in one write), repeat.

use crate::EngineError;
use shelf_store::Store;
use shelf_stream::{Record, Source};
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
    /// The committed next offset at the end.
    pub offset: u64,
}

/// Applies everything in `source` after the job's committed offset, in batches of
/// `batch_size`, then returns. Killing the process at any point loses nothing: the next
/// run resumes from the last committed batch.
pub async fn catch_up<J: Job, S: Source>(
    job: &mut J,
    source: &mut S,
    store: &Store,
    batch_size: usize,
    mut on_batch: impl FnMut(&Progress, u64),
) -> Result<Progress, EngineError> {
    let mut progress = Progress {
        offset: store.offset(job.name())?,
        ..Default::default()
    };
    source.seek(0, progress.offset)?;
    loop {
        let end = source.end_offset(0)?;
        if progress.offset >= end {
            return Ok(progress);
        }
        let records = source.poll(batch_size, Duration::ZERO)?;
        let Some(last) = records.last() else {
            return Ok(progress);
        };
        let next = last.offset + 1;
        let applied = job.apply(records).await?;
        progress.records += applied.records as u64;
        progress.dead_letters += applied.dead_letters as u64;
        progress.batches += 1;
        progress.offset = next;
        on_batch(&progress, end);
    }
}

/// How long a following job sleeps when the source is idle and nobody wakes it (records
/// appended by another process are found within this delay).
pub const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Applies `source` batch by batch, forever: after the last record it waits for `wake`
/// (notified by in-process appenders) or [`IDLE_WAIT`], until `stop` turns true. After
/// each committed batch, `after_batch` runs with the progress and the source's end offset;
/// it runs between batches, so it sees the job's state exactly at the committed offset.
pub async fn follow<J: Job, S: Source>(
    job: &mut J,
    source: &mut S,
    store: &Store,
    batch_size: usize,
    wake: &tokio::sync::Notify,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut after_batch: impl FnMut(&J, &Progress, u64),
) -> Result<Progress, EngineError> {
    let mut progress = Progress {
        offset: store.offset(job.name())?,
        ..Default::default()
    };
    source.seek(0, progress.offset)?;
    loop {
        if *stop.borrow() {
            return Ok(progress);
        }
        let records = source.poll(batch_size, Duration::ZERO)?;
        let Some(last) = records.last() else {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(IDLE_WAIT) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        let next = last.offset + 1;
        let applied = job.apply(records).await?;
        progress.records += applied.records as u64;
        progress.dead_letters += applied.dead_letters as u64;
        progress.batches += 1;
        progress.offset = next;
        let end = source.end_offset(0)?;
        after_batch(job, &progress, end);
    }
}
