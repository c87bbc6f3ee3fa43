//! The data directory shared by every stateful subcommand: `log/items`, `log/events` (the
//! embedded durable log) and `store` (RocksDB).

use anyhow::Context;
use clap::Args;
use shelf_store::{Store, StoreOptions};
use shelf_stream::{FsyncPolicy, Log, LogOptions, LogReader};
use std::path::{Path, PathBuf};

/// The two topics of the embedded log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Topic {
    Items,
    Events,
}

impl Topic {
    pub fn name(self) -> &'static str {
        match self {
            Topic::Items => "items",
            Topic::Events => "events",
        }
    }

    /// The Fluvio topic of this stream.
    pub fn fluvio_topic(self) -> &'static str {
        match self {
            Topic::Items => "shelf-items",
            Topic::Events => "shelf-events",
        }
    }

    /// The record field that keys a record to its partition (one item's or one user's
    /// records stay in order).
    pub fn key_field(self) -> &'static str {
        match self {
            Topic::Items => "id",
            Topic::Events => "user_id",
        }
    }
}

/// `--data-dir` and the durability flags.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Directory holding the log and the store (created if missing).
    #[arg(long, env = "SHELF_DATA_DIR", default_value = ".shelf")]
    pub data_dir: PathBuf,

    /// When appended log records are fsynced: `always` (before acknowledging), `never`
    /// (left to the OS; survives a process crash, not power loss), or an interval like `100ms`.
    #[arg(long, env = "SHELF_FSYNC", default_value = "always", value_parser = parse_fsync)]
    pub fsync: FsyncPolicy,

    /// Size at which the embedded log starts a new segment file (retention deletes whole
    /// segments).
    #[arg(long, env = "SHELF_LOG_SEGMENT_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    pub log_segment_bytes: u64,
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse()
}

impl DataArgs {
    pub fn log_dir(&self, topic: Topic) -> PathBuf {
        self.data_dir.join("log").join(topic.name())
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// The log of `topic`, for appending.
    pub fn open_log(&self, topic: Topic) -> anyhow::Result<Log> {
        let options = LogOptions {
            fsync: self.fsync,
            segment_bytes: self.log_segment_bytes,
            ..Default::default()
        };
        let dir = self.log_dir(topic);
        Log::open(&dir, options)
            .with_context(|| format!("opening the {} log at {}", topic.name(), dir.display()))
    }

    /// A reader of `topic`; the log is created empty when it does not exist yet.
    pub fn open_reader(&self, topic: Topic) -> anyhow::Result<LogReader> {
        let dir = self.log_dir(topic);
        if !dir.exists() {
            drop(self.open_log(topic)?);
        }
        Ok(LogReader::open(
            &dir,
            LogOptions::default().max_record_bytes,
        )?)
    }

    /// The store, for writing (one process at a time).
    pub fn open_store(&self) -> anyhow::Result<Store> {
        let dir = self.store_dir();
        Store::open(&dir, StoreOptions::default()).with_context(|| open_hint(&dir))
    }

    /// The store, for reading while another process may be writing it.
    pub fn open_store_read_only(&self) -> anyhow::Result<Store> {
        Ok(Store::open_read_only(&self.store_dir())?)
    }
}

fn open_hint(dir: &Path) -> String {
    format!(
        "opening the store at {} (is another shelf process using this data dir?)",
        dir.display()
    )
}
