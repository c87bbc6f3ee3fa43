//! shelf-index: a real-time HNSW vector index on hnsw_rs with upserts, deletes (tombstones and
//! background rebuilds), filtered search with an exact fallback, and snapshots.
//!
//! Vectors are normalised on the way in and compared by inner product, so scores are cosine
//! similarities. See `index/README.md` for the design and the measurements behind defaults.

mod catalog;
mod config;
mod error;
mod graph;
mod hnsw_index;
mod snapshot;
pub mod synthetic;
pub mod vecfile;
mod vector;

pub use config::IndexConfig;
pub use error::{IndexError, SnapshotError};
pub use hnsw_index::{HnswIndex, IndexStats};
pub use snapshot::{SnapshotInfo, SNAPSHOT_FORMAT_VERSION};
pub use vector::{normalized, similarity};
