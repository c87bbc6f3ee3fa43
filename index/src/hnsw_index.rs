//! `HnswIndex`: the real-time index over a graph backend. Writers are serialised among
//! themselves; searches take no writer lock, only short read locks (and, for a filtered
//! graph walk, the catalog's read lock for the walk's duration).

use crate::backend::Graph;
use crate::catalog::{Catalog, Slot};
use crate::graph::GraphFilter;
use crate::vector::normalized;
use crate::{IndexConfig, IndexError};
use parking_lot::{Mutex, RwLock};
use shelf_types::{ItemAttributes, ItemId, ScoredItem, SearchFilter, VectorIndex};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Extra hits asked of the graph: a write in flight can leave up to two of its slots live in
/// the graph but not (yet, or any more) in the catalog, which the mapping to ids drops.
const IN_FLIGHT: usize = 2;

/// Counters and sizes, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Items that searches can return.
    pub live: usize,
    /// Points in the current graph: live, deleted and free slots.
    pub graph_points: usize,
    /// Deleted points still in the graph (shelf's graph reuses them for later inserts).
    pub tombstones: usize,
    /// Bytes held by the graph (vectors, links, per-node state).
    pub memory_bytes: usize,
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

/// A real-time HNSW index with upserts, deletes (marked nodes, reused slots, background
/// rebuild as a backstop), filtered search and snapshots. Cloning is cheap and shares it.
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

    /// Builds an index from many items at once on all cores (startup from the store). A
    /// repeated id keeps its last vector and attributes.
    pub fn build<'a>(
        config: IndexConfig,
        items: impl IntoIterator<Item = (&'a ItemId, &'a [f32], ItemAttributes)>,
    ) -> Result<Self, IndexError> {
        config.validate()?;
        let dim = config.dim;
        let mut catalog = Catalog::default();
        let mut vectors: Vec<f32> = Vec::new();
        for (id, vector, attrs) in items {
            let slot = (vectors.len() / dim) as Slot;
            vectors.extend_from_slice(&normalized(vector, dim)?);
            catalog.insert(id, slot, attrs);
        }
        let slots = vectors.len() / dim;
        let graph = Graph::build(
            &config,
            config.capacity_for(catalog.len()).max(slots),
            slots,
            catalog
                .slots()
                .map(|s| (s, &vectors[s as usize * dim..(s as usize + 1) * dim])),
        );
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
        let vector = normalized(vector, self.inner.config.dim)?;
        {
            let _writer = self.inner.writer.lock();
            let graph = self.graph();
            let current = self.inner.catalog.read().slot_of(id);
            if let Some(slot) = current {
                if graph.vector(slot).as_deref() == Some(&vector[..]) {
                    self.inner.catalog.write().set_attributes(slot, attrs);
                    return Ok(());
                }
            }
            let slot = self.insert_into_graph(&vector);
            let replaced = self.inner.catalog.write().insert(id, slot, attrs);
            if let Some(old) = replaced {
                self.graph().delete(old);
            }
        }
        self.maybe_rebuild();
        Ok(())
    }

    /// Inserts into the current graph, growing it first when it is full. The caller holds
    /// the writer lock.
    fn insert_into_graph(&self, vector: &[f32]) -> Slot {
        loop {
            let graph = self.graph();
            if let Some(slot) = graph.insert(vector) {
                return slot;
            }
            let target = self.inner.config.capacity_for(graph.points() + 1);
            if let Some(grown) = graph.grown(target) {
                *self.inner.graph.write() = Arc::new(grown);
            }
        }
    }

    fn graph(&self) -> Arc<Graph> {
        Arc::clone(&self.inner.graph.read())
    }

    /// Removes `id`; its graph node is marked deleted. Returns whether it was present.
    pub fn delete(&self, id: &ItemId) -> bool {
        let removed = {
            let _writer = self.inner.writer.lock();
            let slot = self.inner.catalog.write().remove(id);
            if let Some(slot) = slot {
                self.graph().delete(slot);
            }
            slot.is_some()
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

    /// The unit vectors of `ids` as the index holds them (the re-ranker's similarities),
    /// `None` where an id is not live.
    pub fn vectors(&self, ids: &[&ItemId]) -> Vec<Option<Vec<f32>>> {
        let graph = self.graph();
        // Read-locked while copying, as in `search`: a slot cannot be reused meanwhile.
        let catalog = self.inner.catalog.read();
        ids.iter()
            .map(|id| graph.vector(catalog.slot_of(id)?))
            .collect()
    }

    /// The mean of at most `sample` live unit vectors, taken evenly over the slots (all of
    /// them in an index that small); `None` when the index is empty.
    pub fn mean_vector(&self, sample: usize) -> Option<Vec<f32>> {
        let graph = self.graph();
        let catalog = self.inner.catalog.read();
        let live = catalog.len();
        if live == 0 || sample == 0 {
            return None;
        }
        let step = live.div_ceil(sample);
        let mut sum = vec![0.0f64; self.inner.config.dim];
        let mut n = 0usize;
        for slot in catalog.slots().step_by(step) {
            if let Some(v) = graph.vector(slot) {
                for (s, x) in sum.iter_mut().zip(v.iter()) {
                    *s += f64::from(*x);
                }
                n += 1;
            }
        }
        (n > 0).then(|| sum.into_iter().map(|s| (s / n as f64) as f32).collect())
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
        let graph = self.graph();
        let c = &self.inner.counters;
        IndexStats {
            live,
            graph_points: graph.points(),
            tombstones: graph.tombstones(),
            memory_bytes: graph.memory_bytes(self.inner.config.dim),
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
        let graph = self.graph();

        // The catalog stays read-locked for the whole search: a slot it names cannot be
        // freed and reused by another item between the walk and the mapping to ids.
        let catalog = self.inner.catalog.read();
        let plan = catalog.plan(filter, threshold);
        if catalog.len() == 0 || plan.candidates == 0 {
            return Ok(Vec::new());
        }
        if filter.is_empty() {
            counters.graph_searches.fetch_add(1, Ordering::Relaxed);
            let hits = graph.search(&query, k + IN_FLIGHT, ef, None);
            let hits = resolve(&catalog, hits, k);
            if hits.len() < k.min(catalog.len()) {
                // The walk ran out of reachable live nodes (it can, among many deleted
                // ones or while slots are being reused): finish exactly.
                counters.exact_fallbacks.fetch_add(1, Ordering::Relaxed);
                let slots: Vec<Slot> = catalog.slots().collect();
                return Ok(exact(&catalog, &graph, &query, k, &slots));
            }
            return Ok(hits);
        }
        if plan.candidates <= threshold {
            counters.exact_searches.fetch_add(1, Ordering::Relaxed);
            let slots = catalog.candidates(&plan.source, filter);
            return Ok(exact(&catalog, &graph, &query, k, &slots));
        }
        counters.graph_searches.fetch_add(1, Ordering::Relaxed);
        let matcher = catalog.matcher(filter);
        let matches = |slot: Slot| matcher.matches(slot);
        let graph_filter = GraphFilter {
            matches: &matches,
            two_hop: catalog.sample_pass_rate(&matcher) < self.inner.config.two_hop_below,
        };
        let hits = graph.search(&query, k + IN_FLIGHT, ef, Some(&graph_filter));
        let hits = resolve(&catalog, hits, k);
        if hits.len() < k {
            // The walk ran out of reachable matches: finish exactly over the candidates.
            counters.exact_fallbacks.fetch_add(1, Ordering::Relaxed);
            let slots = catalog.candidates(&plan.source, filter);
            return Ok(exact(&catalog, &graph, &query, k, &slots));
        }
        Ok(hits)
    }

    fn tombstones_due(&self) -> bool {
        let graph = self.graph();
        let (tombstones, points) = (graph.tombstones(), graph.points());
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

    /// Builds a fresh graph of the live items under their current slots, catches up with
    /// the writes made meanwhile (new items get new slots while it runs), then swaps it in.
    fn rebuild_graph(&self) {
        let config = &self.inner.config;
        let (old, slots, live): (Arc<Graph>, usize, Vec<Slot>) = {
            // Under the writer lock, so no write is half done when slots stop being reused.
            let _writer = self.inner.writer.lock();
            let old = self.graph();
            old.set_reuse(false);
            let live = self.inner.catalog.read().slots().collect();
            let slots = old.points();
            (old, slots, live)
        };
        let rows = live.iter().filter_map(|s| old.vector(*s).map(|v| (*s, v)));
        let mut fresh = Graph::build(
            config,
            config.capacity_for(live.len()).max(slots),
            slots,
            rows,
        );
        drop(live);
        // Catch up without blocking writers until few changes are left, then under the lock.
        while self.reconcile(&mut fresh) >= 64 {}
        let _writer = self.inner.writer.lock();
        self.reconcile(&mut fresh);
        *self.inner.graph.write() = Arc::new(fresh);
        self.inner.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes `fresh` hold exactly the catalog's live slots, with the current graph's
    /// vectors; returns how many slots changed.
    fn reconcile(&self, fresh: &mut Graph) -> usize {
        let current = self.graph();
        let points = current.points();
        let mut changed = 0;
        for slot in 0..points as Slot {
            let wanted = self.inner.catalog.read().is_live(slot);
            let present = fresh.is_live(slot);
            if wanted && !present {
                let Some(vector) = current.vector(slot) else {
                    continue;
                };
                if !fresh.has_room_for(slot) {
                    let target = self.inner.config.capacity_for(points);
                    if let Some(grown) = fresh.grown(target) {
                        *fresh = grown;
                    }
                }
                fresh.insert_at(slot, &vector);
                changed += 1;
            } else if !wanted && present {
                fresh.delete(slot);
                changed += 1;
            }
        }
        changed
    }
}

/// Maps graph hits to the live items of `catalog`.
fn resolve(catalog: &Catalog, hits: Vec<(f32, Slot)>, k: usize) -> Vec<ScoredItem> {
    hits.into_iter()
        .filter_map(|(score, slot)| {
            catalog.get(slot).map(|e| ScoredItem {
                id: e.id.clone(),
                score,
            })
        })
        .take(k)
        .collect()
}

/// The exact top `k` of `slots`.
fn exact(
    catalog: &Catalog,
    graph: &Graph,
    query: &[f32],
    k: usize,
    slots: &[Slot],
) -> Vec<ScoredItem> {
    let mut scored = graph.score(query, slots);
    let by_score = |a: &(f32, Slot), b: &(f32, Slot)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, by_score);
        scored.truncate(k);
    }
    scored.sort_unstable_by(by_score);
    resolve(catalog, scored, k)
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

    fn vectors(&self, ids: &[&ItemId]) -> Vec<Option<Vec<f32>>> {
        HnswIndex::vectors(self, ids)
    }

    fn mean_vector(&self) -> Option<Vec<f32>> {
        HnswIndex::mean_vector(self, MEAN_SAMPLE)
    }
}

/// Live vectors averaged by [`HnswIndex::mean_vector`] through the trait.
const MEAN_SAMPLE: usize = 4096;
