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
