//! `HnswIndex`: the real-time index. Writers are serialised among themselves; searches take
//! no lock across a graph walk or a vector scan, only short read locks to map results.

use crate::catalog::{Catalog, Slot, Upserted};
use crate::graph::Graph;
use crate::vector::{normalized, similarity};
use crate::{IndexConfig, IndexError};
use parking_lot::{Mutex, RwLock};
use shelf_types::{ItemAttributes, ItemId, ScoredItem, SearchFilter, VectorIndex};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Counters and sizes, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Items that searches can return.
    pub live: usize,
    /// Points in the current graph, live and tombstoned.
    pub graph_points: usize,
    /// Graph points whose item was deleted or re-embedded since the graph was built.
    pub tombstones: usize,
    /// Completed graph rebuilds.
    pub rebuilds: u64,
    /// Searches answered by walking the graph.
    pub graph_searches: u64,
    /// Searches answered by an exact scan of a selective filter's candidates.
    pub exact_searches: u64,
    /// Graph searches that found fewer than k matches and finished with an exact scan.
    pub exact_fallbacks: u64,
}

#[derive(Debug, Default)]
struct Counters {
    rebuilds: AtomicU64,
    graph_searches: AtomicU64,
    exact_searches: AtomicU64,
    exact_fallbacks: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: IndexConfig,
    pub(crate) catalog: RwLock<Catalog>,
    pub(crate) graph: RwLock<Arc<Graph>>,
    /// Serialises upserts, deletes, the end of a rebuild and snapshots.
    pub(crate) writer: Mutex<()>,
    rebuilding: AtomicBool,
    rebuild_thread: Mutex<Option<JoinHandle<()>>>,
    counters: Counters,
}

/// A real-time HNSW index with upserts, deletes (tombstones plus background rebuild),
/// filtered search and snapshots. Cloning is cheap and shares the index.
#[derive(Clone, Debug)]
pub struct HnswIndex {
    pub(crate) inner: Arc<Inner>,
}

impl HnswIndex {
    /// An empty index.
    pub fn new(config: IndexConfig) -> Result<Self, IndexError> {
        config.validate()?;
        let graph = Graph::new(&config, config.initial_capacity);
        Ok(Self::from_parts(config, Catalog::default(), graph))
    }

    pub(crate) fn from_parts(config: IndexConfig, catalog: Catalog, graph: Graph) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                catalog: RwLock::new(catalog),
                graph: RwLock::new(Arc::new(graph)),
                writer: Mutex::new(()),
                rebuilding: AtomicBool::new(false),
                rebuild_thread: Mutex::new(None),
                counters: Counters::default(),
            }),
        }
    }

    /// Builds an index from many items at once on all cores (startup from the store).
    pub fn build<'a>(
        config: IndexConfig,
        items: impl IntoIterator<Item = (&'a ItemId, &'a [f32], ItemAttributes)>,
    ) -> Result<Self, IndexError> {
        config.validate()?;
        let mut catalog = Catalog::default();
        for (id, vector, attrs) in items {
            let vector = normalized(vector, config.dim)?;
            catalog.upsert(id, Arc::from(vector), attrs);
        }
        let capacity = grown_capacity(&config, catalog.len());
        let graph = Graph::new(&config, capacity);
        let points: Vec<(&[f32], Slot)> = catalog
            .entries_from(0)
            .map(|(s, e)| (&e.vector[..], s))
            .collect();
        graph.insert_parallel(&points);
        drop(points);
        Ok(Self::from_parts(config, catalog, graph))
    }

    pub fn config(&self) -> &IndexConfig {
        &self.inner.config
    }

    /// Inserts or replaces `id`. The vector is normalised; a wrong dimension, a NaN/inf or
    /// an all-zero vector is rejected and leaves the index unchanged.
    pub fn upsert(
        &self,
        id: &ItemId,
        vector: &[f32],
        attrs: ItemAttributes,
    ) -> Result<(), IndexError> {
        let vector: Arc<[f32]> = Arc::from(normalized(vector, self.inner.config.dim)?);
        {
            let _writer = self.inner.writer.lock();
            let outcome = self
                .inner
                .catalog
                .write()
                .upsert(id, Arc::clone(&vector), attrs);
            if let Upserted::NewSlot(slot) = outcome {
                let graph = Arc::clone(&self.inner.graph.read());
                graph.insert(&vector, slot);
            }
        }
        self.maybe_rebuild();
        Ok(())
    }

    /// Removes `id`; its graph point becomes a tombstone. Returns whether it was present.
    pub fn delete(&self, id: &ItemId) -> bool {
        let removed = {
            let _writer = self.inner.writer.lock();
            self.inner.catalog.write().remove(id)
        };
        if removed {
            self.maybe_rebuild();
        }
        removed
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: &ItemId) -> bool {
        self.inner.catalog.read().slot_of(id).is_some()
    }

    /// Number of live items.
    pub fn len(&self) -> usize {
        self.inner.catalog.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> IndexStats {
        let live = self.len();
        let graph_points = self.inner.graph.read().points();
        let c = &self.inner.counters;
        IndexStats {
            live,
            graph_points,
            tombstones: graph_points.saturating_sub(live),
            rebuilds: c.rebuilds.load(Ordering::Relaxed),
            graph_searches: c.graph_searches.load(Ordering::Relaxed),
            exact_searches: c.exact_searches.load(Ordering::Relaxed),
            exact_fallbacks: c.exact_fallbacks.load(Ordering::Relaxed),
        }
    }

    /// The `k` live items most similar to `query` that pass `filter`, best first, with
    /// their cosine similarity. Fewer than `k` only when fewer than `k` items match.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredItem>, IndexError> {
        if k == 0 {
            return Err(IndexError::ZeroK);
        }
        filter.validate()?;
        let query = normalized(query, self.inner.config.dim)?;
        let ef = ef.unwrap_or(self.inner.config.ef_search).max(1);
        let threshold = self.inner.config.exact_search_threshold;
        let counters = &self.inner.counters;

        let (plan, live) = {
            let catalog = self.inner.catalog.read();
            (catalog.plan(filter, threshold), catalog.len())
        };
        if live == 0 || plan.candidates == 0 {
            return Ok(Vec::new());
        }
        if plan.candidates <= threshold && !filter.is_empty() {
            counters.exact_searches.fetch_add(1, Ordering::Relaxed);
            return Ok(self.exact(&query, k, &plan.source, filter));
        }

        counters.graph_searches.fetch_add(1, Ordering::Relaxed);
        let graph = Arc::clone(&self.inner.graph.read());
        let points = graph.points().max(1);
        // Oversample for the share of points that are tombstones or fail the filter.
        let pass_rate = (plan.selectivity * live as f64 / points as f64).clamp(1e-6, 1.0);
        let mut fetch = ((k as f64 / pass_rate) * 1.2).ceil() as usize + 2;
        loop {
            fetch = fetch.min(points);
            let neighbours = graph.search(&query, fetch, ef);
            let exhausted = neighbours.len() < fetch || fetch >= points;
            let hits = {
                let catalog = self.inner.catalog.read();
                let mut hits = Vec::with_capacity(k);
                for n in &neighbours {
                    if let Some(entry) = catalog.get(n.d_id) {
                        if filter.matches(&entry.attrs) {
                            hits.push(ScoredItem {
                                id: entry.id.clone(),
                                score: 1.0 - n.distance,
                            });
                            if hits.len() == k {
                                break;
                            }
                        }
                    }
                }
                hits
            };
            if hits.len() == k || (exhausted && filter.is_empty()) {
                return Ok(hits);
            }
            if exhausted || fetch >= 4 * threshold.max(k) {
                // The graph cannot supply k matches cheaply: scan the candidates exactly.
                counters.exact_fallbacks.fetch_add(1, Ordering::Relaxed);
                return Ok(self.exact(&query, k, &plan.source, filter));
            }
            fetch *= 2;
        }
    }

    fn exact(
        &self,
        query: &[f32],
        k: usize,
        source: &crate::catalog::CandidateSource,
        filter: &SearchFilter,
    ) -> Vec<ScoredItem> {
        let candidates = self.inner.catalog.read().candidates(source, filter);
        let mut scored: Vec<(f32, Slot)> = candidates
            .iter()
            .map(|(slot, vector)| (similarity(query, vector), *slot))
            .collect();
        drop(candidates);
        let by_score = |a: &(f32, Slot), b: &(f32, Slot)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if scored.len() > k {
            scored.select_nth_unstable_by(k - 1, by_score);
            scored.truncate(k);
        }
        scored.sort_unstable_by(by_score);
        let catalog = self.inner.catalog.read();
        scored
            .into_iter()
            .filter_map(|(score, slot)| {
                catalog.get(slot).map(|e| ScoredItem {
                    id: e.id.clone(),
                    score,
                })
            })
            .collect()
    }

    fn tombstones_due(&self) -> bool {
        let stats_live = self.inner.catalog.read().len();
        let points = self.inner.graph.read().points();
        let tombstones = points.saturating_sub(stats_live);
        let cfg = &self.inner.config;
        tombstones >= cfg.rebuild_min_tombstones
            && tombstones as f64 >= cfg.rebuild_tombstone_ratio * points as f64
    }

    /// Starts a background rebuild when tombstones have passed the configured share.
    fn maybe_rebuild(&self) {
        if self.inner.rebuilding.load(Ordering::Acquire) || !self.tombstones_due() {
            return;
        }
        if self.inner.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let index = self.clone();
        let handle = std::thread::Builder::new()
            .name("shelf-index-rebuild".into())
            .spawn(move || {
                index.rebuild_graph();
                index.inner.rebuilding.store(false, Ordering::Release);
            })
            .expect("spawn the index rebuild thread");
        if let Some(previous) = self.inner.rebuild_thread.lock().replace(handle) {
            let _ = previous.join();
        }
    }

    /// Blocks until a background rebuild in progress (if any) has swapped its graph in.
    pub fn wait_for_rebuild(&self) {
        let handle = self.inner.rebuild_thread.lock().take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Rebuilds the graph from the live items now, on the calling thread. Searches and
    /// writes continue meanwhile; writes are blocked only while the last few are copied.
    pub fn rebuild(&self) {
        self.wait_for_rebuild();
        self.rebuild_graph();
    }

    fn rebuild_graph(&self) {
        let config = &self.inner.config;
        let (mut caught_up, live) = {
            let catalog = self.inner.catalog.read();
            let live: Vec<(Arc<[f32]>, Slot)> = catalog
                .entries_from(0)
                .map(|(s, e)| (Arc::clone(&e.vector), s))
                .collect();
            (catalog.next_slot(), live)
        };
        let graph = Graph::new(config, grown_capacity(config, live.len()));
        let points: Vec<(&[f32], Slot)> = live.iter().map(|(v, s)| (&v[..], *s)).collect();
        graph.insert_parallel(&points);
        drop(points);
        drop(live);
        // Copy what was written meanwhile, without blocking writers, until little is left.
        loop {
            let copied = self.copy_new_slots(&graph, &mut caught_up);
            if copied < 64 {
                break;
            }
        }
        let _writer = self.inner.writer.lock();
        self.copy_new_slots(&graph, &mut caught_up);
        *self.inner.graph.write() = Arc::new(graph);
        self.inner.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
    }

    /// Inserts live items with slots from `from` into `graph`; returns how many.
    fn copy_new_slots(&self, graph: &Graph, from: &mut Slot) -> usize {
        let fresh: Vec<(Arc<[f32]>, Slot)> = {
            let catalog = self.inner.catalog.read();
            let fresh = catalog
                .entries_from(*from)
                .map(|(s, e)| (Arc::clone(&e.vector), s))
                .collect();
            *from = catalog.next_slot();
            fresh
        };
        for (vector, slot) in &fresh {
            graph.insert(vector, *slot);
        }
        fresh.len()
    }
}

fn grown_capacity(config: &IndexConfig, live: usize) -> usize {
    let grown = (live as f64 * config.capacity_growth).ceil() as usize;
    grown.max(config.initial_capacity)
}

impl VectorIndex for HnswIndex {
    type Error = IndexError;

    fn dim(&self) -> usize {
        self.inner.config.dim
    }

    fn len(&self) -> usize {
        HnswIndex::len(self)
    }

    fn upsert(&self, id: &ItemId, vector: &[f32], attrs: ItemAttributes) -> Result<(), IndexError> {
        HnswIndex::upsert(self, id, vector, attrs)
    }

    fn delete(&self, id: &ItemId) -> Result<bool, IndexError> {
        Ok(HnswIndex::delete(self, id))
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredItem>, IndexError> {
        HnswIndex::search(self, query, k, ef, filter)
    }
}
