//! The graph seam: one enum over the two graph backends, so the index above it (catalog,
//! filters, rebuilds, snapshots) is written once. `shelf` is shelf's own graph (the
//! default); `hnsw_rs` keeps hnsw_rs 0.3.5 selectable.

use crate::catalog::Slot;
use crate::graph::{GraphFilter, ShelfGraph};
use crate::hnsw_rs_graph::HnswRsGraph;
use crate::IndexConfig;
use serde::{Deserialize, Serialize};

/// Which HNSW implementation holds the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// shelf's own graph: flat buffers, slot reuse, filters inside the walk.
    #[default]
    Shelf,
    /// hnsw_rs 0.3.5: no slot reuse (deletes wait for a rebuild), hnsw_rs's filtered search.
    HnswRs,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Shelf => "shelf",
            Self::HnswRs => "hnsw_rs",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "shelf" => Ok(Self::Shelf),
            "hnsw_rs" | "hnsw-rs" => Ok(Self::HnswRs),
            other => Err(format!(
                "unknown index backend `{other}`; expected `shelf` or `hnsw_rs`"
            )),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One graph generation of either backend.
#[derive(Debug)]
pub(crate) enum Graph {
    Shelf(ShelfGraph),
    HnswRs(HnswRsGraph),
}

impl Graph {
    /// An empty graph with room for `capacity` points.
    pub fn new(config: &IndexConfig, capacity: usize) -> Self {
        match config.backend {
            Backend::Shelf => Self::Shelf(ShelfGraph::new(
                config.dim,
                config.m,
                config.ef_construction,
                capacity,
            )),
            Backend::HnswRs => {
                Self::HnswRs(HnswRsGraph::new(config.m, config.ef_construction, capacity))
            }
        }
    }

    /// Builds a graph on all cores from `rows` (slot, unit vector); slots below `slots`
    /// that `rows` does not name are free.
    pub fn build<V: AsRef<[f32]>>(
        config: &IndexConfig,
        capacity: usize,
        slots: usize,
        rows: impl IntoIterator<Item = (Slot, V)>,
    ) -> Self {
        match config.backend {
            Backend::Shelf => Self::Shelf(ShelfGraph::build(
                config.dim,
                config.m,
                config.ef_construction,
                capacity,
                slots,
                rows,
            )),
            Backend::HnswRs => Self::HnswRs(HnswRsGraph::build(
                config.m,
                config.ef_construction,
                capacity,
                slots,
                rows,
            )),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Shelf(_) => Backend::Shelf,
            Self::HnswRs(_) => Backend::HnswRs,
        }
    }

    /// Slots handed out: live, deleted or free.
    pub fn points(&self) -> usize {
        match self {
            Self::Shelf(g) => g.points(),
            Self::HnswRs(g) => g.points(),
        }
    }

    /// Deleted points still in the graph (shelf's are reused by later inserts).
    pub fn tombstones(&self) -> usize {
        match self {
            Self::Shelf(g) => g.tombstones(),
            Self::HnswRs(g) => g.tombstones(),
        }
    }

    pub fn memory_bytes(&self, dim: usize) -> usize {
        match self {
            Self::Shelf(g) => g.memory_bytes(),
            Self::HnswRs(g) => g.memory_bytes(dim),
        }
    }

    /// Inserts a unit vector; `None` when the graph is full and must grow first.
    pub fn insert(&self, vector: &[f32]) -> Option<Slot> {
        match self {
            Self::Shelf(g) => g.insert(vector),
            Self::HnswRs(g) => Some(g.insert(vector)),
        }
    }

    /// Whether `slot` can be filled by `insert_at` without growing.
    pub fn has_room_for(&self, slot: Slot) -> bool {
        match self {
            Self::Shelf(g) => (slot as usize) < g.capacity(),
            Self::HnswRs(_) => true,
        }
    }

    /// Puts a unit vector at `slot` (a rebuild catching up with writes).
    pub fn insert_at(&self, slot: Slot, vector: &[f32]) {
        match self {
            Self::Shelf(g) => g.insert_at(slot, vector),
            Self::HnswRs(g) => g.insert_at(slot, vector),
        }
    }

    pub fn delete(&self, slot: Slot) {
        match self {
            Self::Shelf(g) => g.delete(slot),
            Self::HnswRs(g) => g.delete(slot),
        }
    }

    /// Whether `slot` holds a live point of this graph.
    pub fn is_live(&self, slot: Slot) -> bool {
        (slot as usize) < self.points()
            && match self {
                Self::Shelf(g) => !g.is_deleted(slot),
                Self::HnswRs(g) => !g.is_deleted(slot),
            }
    }

    /// Stops (or resumes) reusing deleted slots: a rebuild copying this graph needs every
    /// new point under a new slot.
    pub fn set_reuse(&self, enabled: bool) {
        if let Self::Shelf(g) = self {
            g.set_reuse(enabled);
        }
    }

    /// A copy of the vector of a live `slot`.
    pub fn vector(&self, slot: Slot) -> Option<Vec<f32>> {
        if !self.is_live(slot) {
            return None;
        }
        match self {
            Self::Shelf(g) => Some(g.vector(slot)),
            Self::HnswRs(g) => g.vector(slot).map(|v| v.to_vec()),
        }
    }

    /// The `k` best live points passing `filter`, best first, as (similarity, slot).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&GraphFilter<'_>>,
    ) -> Vec<(f32, Slot)> {
        match self {
            Self::Shelf(g) => g.search(query, k, ef, filter),
            Self::HnswRs(g) => g.search(query, k, ef, filter.map(|f| f.matches)),
        }
    }

    /// Exact similarities of `query` to the live `slots`.
    pub fn score(&self, query: &[f32], slots: &[Slot]) -> Vec<(f32, Slot)> {
        match self {
            Self::Shelf(g) => g.score(query, slots),
            Self::HnswRs(g) => slots
                .iter()
                .filter_map(|s| g.vector(*s).map(|v| (crate::graph::dot(query, &v), *s)))
                .collect(),
        }
    }

    /// The same graph with room for `capacity` points (shelf's graph has a fixed capacity;
    /// hnsw_rs grows by itself). `None` when no copy is needed.
    pub fn grown(&self, capacity: usize) -> Option<Self> {
        match self {
            Self::Shelf(g) => Some(Self::Shelf(g.grown(capacity))),
            Self::HnswRs(_) => None,
        }
    }
}
