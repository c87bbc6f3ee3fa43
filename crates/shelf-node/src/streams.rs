//! Where a node's jobs read records and its API writes them: the embedded durable log or
//! Fluvio topics.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where the jobs read records and the API writes them.
#[derive(Debug)]
pub enum Streams {
    /// The embedded durable log in the data directory.
    Embedded {
        items: shelf_stream::Log,
        events: shelf_stream::Log,
    },
    /// Fluvio topics (`shelf serve --source fluvio`).
    #[cfg(feature = "fluvio")]
    Fluvio(FluvioTopics),
}

/// The Fluvio side of a node.
#[cfg(feature = "fluvio")]
#[derive(Clone, Debug)]
pub struct FluvioTopics {
    pub cluster: shelf_stream::FluvioCluster,
    /// The item topic consumed: `shelf-items` (embedded here) or `shelf-item-vectors`
    /// (vectors from the Arroyo item pipeline). The API always writes to `shelf-items`.
    pub item_topic: String,
    /// Partitions this node consumes (empty: all).
    pub partitions: Vec<u32>,
}

/// The item topic that carries vectors computed by the Arroyo item pipeline.
pub const ITEM_VECTORS_TOPIC: &str = "shelf-item-vectors";

/// One embedded log shared by its appenders, with its next offset readable without the
/// lock (an append holds the lock across its fsync).
#[derive(Debug)]
pub(crate) struct SharedLog {
    log: Arc<Mutex<shelf_stream::Log>>,
    next_offset: Arc<AtomicU64>,
}

impl SharedLog {
    fn new(log: shelf_stream::Log) -> Self {
        let next_offset = Arc::new(AtomicU64::new(log.next_offset()));
        Self {
            log: Arc::new(Mutex::new(log)),
            next_offset,
        }
    }

    /// The offset the next appended record will get.
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, shelf_stream::Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `payloads` durably (per the log's fsync policy) off the async runtime.
    pub(crate) async fn append(&self, payloads: Vec<Vec<u8>>) -> anyhow::Result<Range<u64>> {
        use shelf_stream::Sink;
        let (log, next) = (Arc::clone(&self.log), Arc::clone(&self.next_offset));
        tokio::task::spawn_blocking(move || {
            let mut log = log
                .lock()
                .map_err(|_| anyhow::anyhow!("log lock poisoned"))?;
            let range = log.append(&payloads)?;
            next.store(range.end, Ordering::Release);
            Ok(range)
        })
        .await?
    }
}

/// The open streams of a running node.
pub(crate) enum Transport {
    Embedded {
        items: SharedLog,
        events: SharedLog,
    },
    #[cfg(feature = "fluvio")]
    Fluvio {
        topics: FluvioTopics,
        items: shelf_stream::FluvioSink,
        events: shelf_stream::FluvioSink,
    },
}

impl Transport {
    pub(crate) fn open(streams: Streams) -> anyhow::Result<Self> {
        Ok(match streams {
            Streams::Embedded { items, events } => Transport::Embedded {
                items: SharedLog::new(items),
                events: SharedLog::new(events),
            },
            #[cfg(feature = "fluvio")]
            Streams::Fluvio(topics) => Transport::Fluvio {
                items: topics.cluster.sink("shelf-items")?,
                events: topics.cluster.sink("shelf-events")?,
                topics,
            },
        })
    }

    /// The source a job reads `topic` from (`data_dir/log/<name>` on the embedded log).
    pub(crate) fn source(
        &self,
        data_dir: &Path,
        topic: &str,
    ) -> anyhow::Result<Box<dyn shelf_stream::Source>> {
        match self {
            Transport::Embedded { .. } => Ok(Box::new(shelf_stream::LogReader::open(
                &log_dir(data_dir, topic),
                max_record_bytes(),
            )?)),
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { topics, .. } => {
                Ok(Box::new(topics.cluster.source(topic, &topics.partitions)?))
            }
        }
    }
}

/// The embedded log directory of `topic` (`shelf-items` → `DATA/log/items`).
pub(crate) fn log_dir(data_dir: &Path, topic: &str) -> std::path::PathBuf {
    data_dir
        .join("log")
        .join(topic.trim_start_matches("shelf-"))
}

/// Largest log record the readers accept (the log's own default).
pub(crate) fn max_record_bytes() -> usize {
    shelf_stream::LogOptions::default().max_record_bytes
}

/// The partitioning key of each JSON record: the string value of its `field` (`id` for
/// items, `user_id` for events), so that the records of one item or one user stay in one
/// partition, in order; `None` where the field is missing (any partition).
pub fn record_keys(payloads: &[Vec<u8>], field: &str) -> Vec<Option<Vec<u8>>> {
    payloads
        .iter()
        .map(|p| {
            serde_json::from_slice::<serde_json::Value>(p)
                .ok()
                .and_then(|v| v.get(field)?.as_str().map(|k| k.as_bytes().to_vec()))
        })
        .collect()
}

/// Produces `payloads` to Fluvio, each keyed by its `key_field` (records of one item, or
/// one user, stay in one partition and in order).
#[cfg(feature = "fluvio")]
pub(crate) async fn produce(
    sink: &shelf_stream::FluvioSink,
    payloads: Vec<Vec<u8>>,
    key_field: &'static str,
) -> anyhow::Result<Range<u64>> {
    let sink = sink.clone();
    tokio::task::spawn_blocking(move || {
        let keys = record_keys(&payloads, key_field);
        let placed = sink.produce(&keys, &payloads)?;
        Ok(shelf_stream::offset_span(&placed))
    })
    .await?
}
