//! Errors of the vector index and of its snapshots.

use std::path::PathBuf;

/// A rejected index operation. The index is unchanged when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("vector has {received} dimensions, the index expects {expected}")]
    DimensionMismatch { expected: usize, received: usize },
    #[error("vector component {position} is {value}; only finite values are accepted")]
    NonFinite { position: usize, value: f32 },
    #[error("vector has zero length and no direction; cosine similarity is undefined")]
    ZeroVector,
    #[error("k must be at least 1")]
    ZeroK,
    #[error("invalid filter: {0}")]
    InvalidFilter(#[from] shelf_types::RecordError),
    #[error("invalid index setting `{field}`: {reason}")]
    InvalidConfig {
        field: &'static str,
        reason: &'static str,
    },
}

/// Why a snapshot could not be written or restored. On restore, the caller can rebuild
/// the index from the stored vectors instead.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no index snapshot at {0}")]
    Missing(PathBuf),
    #[error("index snapshot at {path} has format version {found}; this build reads {expected}")]
    WrongVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "index snapshot at {path} is for {found}-d vectors; the index is configured for {expected}"
    )]
    WrongDimension {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error("index snapshot file {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("index snapshot I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] IndexError),
}

impl SnapshotError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
