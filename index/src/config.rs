//! Tunables of the vector index, with defaults chosen by measurement (see index/README.md).

use crate::Backend;
use serde::{Deserialize, Serialize};

/// How the index builds, searches and maintains its graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexConfig {
    /// Dimension every vector must have.
    pub dim: usize,
    /// Which graph implementation holds the vectors (`shelf`, the default, or `hnsw_rs`).
    #[serde(default)]
    pub backend: Backend,
    /// Graph degree (HNSW `M`): neighbours kept per point on the upper layers.
    pub m: usize,
    /// Candidate list size while inserting (HNSW `ef_construction`).
    pub ef_construction: usize,
    /// Candidate list size while searching, when the caller gives none.
    pub ef_search: usize,
    /// Room for this many points in an empty graph.
    pub initial_capacity: usize,
    /// A graph that is built, restored or full gets room for `points x capacity_growth`
    /// (at least 1024 more); growing copies the buffers while searches go on.
    pub capacity_growth: f64,
    /// Rebuild in the background once this share of graph points is tombstoned.
    pub rebuild_tombstone_ratio: f64,
    /// ... and at least this many points are tombstoned (avoids churn on tiny indexes).
    pub rebuild_min_tombstones: usize,
    /// A filtered search whose candidate set is at most this large is answered by an
    /// exact scan of that set instead of a graph walk.
    pub exact_search_threshold: usize,
    /// A filtered graph walk whose filter passes less than this share of items scores only
    /// matching nodes, reaching them through non-matching neighbours (two hops, ACORN-1);
    /// above it, it scores every neighbour and collects the matches.
    #[serde(default = "default_two_hop_below")]
    pub two_hop_below: f64,
}

fn default_two_hop_below() -> f64 {
    0.3
}

impl IndexConfig {
    /// Defaults for vectors of `dim` dimensions.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            backend: Backend::default(),
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            initial_capacity: 10_000,
            capacity_growth: 1.25,
            rebuild_tombstone_ratio: 0.2,
            rebuild_min_tombstones: 256,
            exact_search_threshold: 8_192,
            two_hop_below: default_two_hop_below(),
        }
    }

    /// Capacity to allocate for a graph that must hold `points` points.
    pub fn capacity_for(&self, points: usize) -> usize {
        let grown = (points as f64 * self.capacity_growth).ceil() as usize;
        grown.max(points + 1024).max(self.initial_capacity)
    }

    /// Rejects settings that cannot work (hnsw_rs aborts the process on some of them).
    pub fn validate(&self) -> Result<(), crate::IndexError> {
        let bad = |field: &'static str, reason: &'static str| {
            Err(crate::IndexError::InvalidConfig { field, reason })
        };
        if self.dim == 0 {
            return bad("dim", "must be at least 1");
        }
        if !(2..=256).contains(&self.m) {
            return bad("m", "must be in 2..=256");
        }
        if self.ef_construction < self.m {
            return bad("ef_construction", "must be at least m");
        }
        if self.ef_search == 0 {
            return bad("ef_search", "must be at least 1");
        }
        if self.capacity_growth.is_nan() || self.capacity_growth < 1.0 {
            return bad("capacity_growth", "must be at least 1.0");
        }
        if !(0.0..=1.0).contains(&self.two_hop_below) {
            return bad("two_hop_below", "must be in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.rebuild_tombstone_ratio)
            || self.rebuild_tombstone_ratio == 0.0
        {
            return bad("rebuild_tombstone_ratio", "must be in (0, 1]");
        }
        Ok(())
    }
}
