//! shelf-index: a real-time HNSW vector index with upserts, deletes (marked nodes whose slots
//! are reused, background rebuilds as a backstop), filters inside the graph walk with an
//! exact scan for selective ones, and snapshots. The graph is shelf's own (`graph/`), with
//! hnsw_rs selectable as a second backend (`IndexConfig::backend`).
//!
//! Vectors are normalised on the way in and compared by inner product, so scores are cosine
//! similarities. See `index/README.md` for the design and the measurements behind defaults.

mod backend;
mod catalog;
mod config;
mod error;
mod graph;
mod hnsw_index;
mod hnsw_rs_graph;
mod snapshot;
pub mod synthetic;
pub mod vecfile;
mod vector;

pub use backend::Backend;
pub use config::IndexConfig;
pub use error::{IndexError, SnapshotError};
pub use graph::{dot, dot_portable};
pub use hnsw_index::{HnswIndex, IndexStats};
pub use snapshot::{SnapshotInfo, SNAPSHOT_FORMAT_VERSION};
pub use vector::{normalized, similarity};
