//! shelf-stream: where records come from and go to. A [`Source`] yields records with
//! offsets that a consumer stores next to its state (exactly-once effect); a [`Sink`]
//! appends. Implementations: the embedded durable [`Log`], a [`JsonlSource`] for bulk
//! import, and Fluvio topics (feature `fluvio`).

#[cfg(feature = "fluvio")]
mod fluvio;
mod jsonl;
mod log;

#[cfg(feature = "fluvio")]
pub use fluvio::{offset_span, FluvioCluster, FluvioSink, FluvioSource};
pub use jsonl::JsonlSource;
pub use log::{repair, FsyncPolicy, Log, LogOptions, LogReader, Repaired, Retention};

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// One record of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: u32,
    /// Position in the partition; the next record has `offset + 1`.
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// Errors of sources and sinks.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("log {path} is damaged at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("log {0} is open for writing by another process")]
    Locked(PathBuf),
    #[error(
        "offset {offset} is no longer in log {path} (retention removed records before {first})"
    )]
    OffsetGone {
        path: PathBuf,
        offset: u64,
        first: u64,
    },
    #[error("record of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("partition {0} does not exist")]
    NoPartition(u32),
    /// A remote stream (Fluvio) failed; the message says where and why.
    #[error("{0}")]
    Remote(String),
}

impl StreamError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// A stream that is read from a position.
pub trait Source: Send {
    /// The partitions this source reads.
    fn partitions(&self) -> Vec<u32>;

    /// Continues reading `partition` at `offset` (the consumer's committed next offset).
    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), StreamError>;

    /// Up to `max` next records, waiting at most `wait` for the first one.
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, StreamError>;

    /// The offset the next appended record of `partition` will get (end of the stream now).
    fn end_offset(&mut self, partition: u32) -> Result<u64, StreamError>;
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn partitions(&self) -> Vec<u32> {
        (**self).partitions()
    }

    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), StreamError> {
        (**self).seek(partition, offset)
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, StreamError> {
        (**self).poll(max, wait)
    }

    fn end_offset(&mut self, partition: u32) -> Result<u64, StreamError> {
        (**self).end_offset(partition)
    }
}

/// A stream that records are appended to.
pub trait Sink: Send {
    /// Appends `payloads` durably (as the sink's policy defines) and returns their offsets.
    fn append(&mut self, payloads: &[Vec<u8>]) -> Result<Range<u64>, StreamError>;
}

/// Sleep between looks at a source that has nothing new.
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(2);
