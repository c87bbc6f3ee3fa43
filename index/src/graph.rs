//! One HNSW graph generation: the hnsw_rs graph plus how many points it holds.

use crate::catalog::Slot;
use crate::IndexConfig;
use hnsw_rs::prelude::{DistDot, Hnsw, Neighbour};
use std::sync::atomic::{AtomicUsize, Ordering};

/// hnsw_rs's cap on layers; the level of a point is drawn so that 16 is never reached
/// in practice for catalogs of up to billions of points.
const MAX_LAYERS: usize = 16;

/// An HNSW graph over unit vectors (inner-product distance), keyed by catalog slot.
pub struct Graph {
    hnsw: Hnsw<'static, f32, DistDot>,
    points: AtomicUsize,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("points", &self.points())
            .finish()
    }
}

impl Graph {
    /// An empty graph sized for about `capacity` points.
    pub fn new(config: &IndexConfig, capacity: usize) -> Self {
        let hnsw = Hnsw::new(
            config.m,
            capacity.max(1),
            MAX_LAYERS,
            config.ef_construction,
            DistDot,
        );
        Self {
            hnsw,
            points: AtomicUsize::new(0),
        }
    }

    /// Wraps a graph loaded from a snapshot.
    pub fn from_loaded(hnsw: Hnsw<'static, f32, DistDot>) -> Self {
        let points = hnsw.get_nb_point();
        Self {
            hnsw,
            points: AtomicUsize::new(points),
        }
    }

    /// Number of points, live or tombstoned.
    pub fn points(&self) -> usize {
        self.points.load(Ordering::Acquire)
    }

    /// Inserts one point (safe alongside concurrent searches).
    pub fn insert(&self, vector: &[f32], slot: Slot) {
        self.hnsw.insert_slice((vector, slot));
        self.points.fetch_add(1, Ordering::AcqRel);
    }

    /// Inserts many points on all cores (rayon).
    pub fn insert_parallel(&self, points: &[(&[f32], Slot)]) {
        self.hnsw.parallel_insert_slice(&points.to_vec());
        self.points.fetch_add(points.len(), Ordering::AcqRel);
    }

    /// The `k` nearest points with a candidate list of `ef`.
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<Neighbour> {
        self.hnsw.search(query, k, ef.max(k))
    }

    pub fn hnsw(&self) -> &Hnsw<'static, f32, DistDot> {
        &self.hnsw
    }
}
