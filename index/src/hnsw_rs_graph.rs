//! The second backend: hnsw_rs 0.3.5's graph behind the same seam. It cannot delete or
//! reuse points, so a deleted slot stays a tombstone until the background rebuild, and it
//! keeps the live vectors a second time (hnsw_rs has no lookup of a point by data id).

use crate::catalog::Slot;
use hnsw_rs::prelude::{DistDot, Hnsw};
use parking_lot::RwLock;
use std::sync::Arc;

/// hnsw_rs's cap on layers; 16 is never reached in practice for billions of points.
const MAX_LAYERS: usize = 16;

/// An hnsw_rs graph over unit vectors (inner-product distance), keyed by slot.
pub(crate) struct HnswRsGraph {
    hnsw: Hnsw<'static, f32, DistDot>,
    /// The vector of each slot handed out; `None` once deleted.
    vectors: RwLock<Vec<Option<Arc<[f32]>>>>,
}

impl std::fmt::Debug for HnswRsGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswRsGraph")
            .field("points", &self.points())
            .finish()
    }
}

impl HnswRsGraph {
    pub fn new(m: usize, ef_construction: usize, capacity: usize) -> Self {
        Self {
            hnsw: Hnsw::new(m, capacity.max(1), MAX_LAYERS, ef_construction, DistDot),
            vectors: RwLock::new(Vec::new()),
        }
    }

    /// Builds from `rows` on all cores (rayon); slots below `slots` not named stay empty.
    pub fn build<V: AsRef<[f32]>>(
        m: usize,
        ef_construction: usize,
        capacity: usize,
        slots: usize,
        rows: impl IntoIterator<Item = (u32, V)>,
    ) -> Self {
        let graph = Self::new(m, ef_construction, capacity.max(slots));
        let mut vectors: Vec<Option<Arc<[f32]>>> = vec![None; slots];
        for (slot, v) in rows {
            vectors[slot as usize] = Some(Arc::from(v.as_ref()));
        }
        let points: Vec<(&[f32], usize)> = vectors
            .iter()
            .enumerate()
            .filter_map(|(s, v)| v.as_deref().map(|v| (v, s)))
            .collect();
        graph.hnsw.parallel_insert_slice(&points);
        drop(points);
        *graph.vectors.write() = vectors;
        graph
    }

    pub fn points(&self) -> usize {
        self.vectors.read().len()
    }

    /// Deleted points still in the hnsw_rs graph (slots a rebuild left empty are not).
    pub fn tombstones(&self) -> usize {
        let live = self.vectors.read().iter().filter(|v| v.is_some()).count();
        self.hnsw.get_nb_point().saturating_sub(live)
    }

    pub fn memory_bytes(&self, dim: usize) -> usize {
        // hnsw_rs has no size report: its point vectors plus its neighbour lists estimated
        // at 2M links of 8 bytes on layer 0, plus our second copy of the live vectors.
        let points = self.hnsw.get_nb_point();
        let live = self.vectors.read().iter().filter(|v| v.is_some()).count();
        points * (dim * 4 + 2 * self.hnsw.get_max_nb_connection() as usize * 8) + live * dim * 4
    }

    pub fn insert(&self, vector: &[f32]) -> Slot {
        let slot = {
            let mut vectors = self.vectors.write();
            vectors.push(Some(Arc::from(vector)));
            vectors.len() - 1
        };
        self.hnsw.insert_slice((vector, slot));
        slot as Slot
    }

    pub fn insert_at(&self, slot: Slot, vector: &[f32]) {
        {
            let mut vectors = self.vectors.write();
            let at = slot as usize;
            if vectors.len() <= at {
                vectors.resize(at + 1, None);
            }
            vectors[at] = Some(Arc::from(vector));
        }
        self.hnsw.insert_slice((vector, slot as usize));
    }

    pub fn delete(&self, slot: Slot) {
        if let Some(v) = self.vectors.write().get_mut(slot as usize) {
            *v = None;
        }
    }

    pub fn is_deleted(&self, slot: Slot) -> bool {
        self.vectors
            .read()
            .get(slot as usize)
            .is_none_or(|v| v.is_none())
    }

    pub fn vector(&self, slot: Slot) -> Option<Arc<[f32]>> {
        self.vectors.read().get(slot as usize).cloned().flatten()
    }

    /// The `k` best live slots passing `matches`, as (similarity, slot).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        matches: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Vec<(f32, Slot)> {
        let vectors = self.vectors.read();
        let live = |id: &usize| vectors.get(*id).is_some_and(|v| v.is_some());
        let filter = |id: &usize| live(id) && matches.is_none_or(|m| m(*id as u32));
        self.hnsw
            .search_filter(query, k, ef.max(k), Some(&filter))
            .into_iter()
            .map(|n| (1.0 - n.distance, n.d_id as Slot))
            .collect()
    }
}
