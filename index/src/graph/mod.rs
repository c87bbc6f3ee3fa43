//! shelf's own HNSW graph (Malkov & Yashunin), built the way the fastest HNSW libraries are:
//! flat storage with dense `u32` slots, pooled generation-stamped visited sets, a SIMD inner
//! product, the paper's neighbour-selection heuristic, deletes that mark a node and reuse its
//! slot, filters applied inside the walk, and snapshots that write the buffers as they are.
//!
//! Concurrency: searches take no lock but the shared side of `reuse` (one atomic add) for
//! the whole walk and read links as atomics; inserts take the same shared side and lock
//! each node whose list they change; overwriting a reused slot's vector takes `reuse`
//! exclusively for the copy. Inserts may run in parallel (the bulk build does).

mod distance;
mod insert;
mod persist;
mod search;
mod select;
mod storage;
mod visited;

pub use distance::{dot, dot_portable};
pub(crate) use persist::GRAPH_FILE;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use storage::{Links, Vectors};

/// Slot states.
const LIVE: u8 = 0;
const DELETED: u8 = 1;
const HOLE: u8 = 2;

/// Highest layer a node can be drawn on (links store it in a byte).
const MAX_LEVEL: usize = 15;
/// Packed entry point meaning "the graph is empty".
const NO_ENTRY: u64 = u64::MAX;

/// A filter evaluated inside the walk: which slots may be returned, and whether to use the
/// two-hop expansion (selective filters) instead of walking every neighbour.
pub(crate) struct GraphFilter<'a> {
    pub matches: &'a (dyn Fn(u32) -> bool + Sync),
    pub two_hop: bool,
}

/// An HNSW graph over unit vectors, keyed by dense slots `0..points()`.
pub(crate) struct ShelfGraph {
    dim: usize,
    ef_construction: usize,
    level_mult: f64,
    seed: u64,
    vectors: Vectors,
    links: Links,
    /// One lock per node, held while its neighbour lists change.
    locks: Box<[Mutex<()>]>,
    /// `LIVE`, `DELETED` (still linked: traversed, never returned) or `HOLE` (a free
    /// slot with no links, left by a rebuild).
    state: Box<[AtomicU8]>,
    /// Slots in state `DELETED`.
    tombstones: AtomicUsize,
    /// Slots handed out so far.
    len: AtomicUsize,
    /// `level << 32 | slot` of the entry point, or `NO_ENTRY`.
    entry: AtomicU64,
    entry_lock: Mutex<()>,
    /// Slots whose `link` is running: an insert weighs the ones linking alongside it as
    /// layer-0 candidates, since it cannot find them in the graph (see `ShelfGraph::link`).
    linking: Mutex<Vec<u32>>,
    /// Deleted slots waiting to be reused.
    free: FreeSlots,
    /// Shared by searches and inserts while they read vectors; exclusive while a reused
    /// slot's vector is overwritten.
    reuse: RwLock<()>,
    /// Off while a rebuild copies this graph: new items then get new slots.
    reuse_enabled: AtomicBool,
}

impl std::fmt::Debug for ShelfGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShelfGraph")
            .field("dim", &self.dim)
            .field("points", &self.points())
            .field("capacity", &self.capacity())
            .field("free", &self.free_slots())
            .finish()
    }
}

/// Deleted slots waiting for reuse, with a count readable without the lock.
#[derive(Debug, Default)]
pub(super) struct FreeSlots {
    list: Mutex<Vec<u32>>,
    count: AtomicUsize,
}

impl FreeSlots {
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn push(&self, slot: u32) {
        let mut list = self.list.lock();
        list.push(slot);
        self.count.store(list.len(), Ordering::Release);
    }

    /// Takes the most recently freed slot that `usable` accepts.
    pub fn pop_where(&self, usable: impl Fn(u32) -> bool) -> Option<u32> {
        let mut list = self.list.lock();
        let i = list.iter().rposition(|s| usable(*s))?;
        let slot = list.swap_remove(i);
        self.count.store(list.len(), Ordering::Release);
        Some(slot)
    }

    /// Takes `slot` out; false when it was not free.
    pub fn remove(&self, slot: u32) -> bool {
        let mut list = self.list.lock();
        let Some(i) = list.iter().position(|s| *s == slot) else {
            return false;
        };
        list.swap_remove(i);
        self.count.store(list.len(), Ordering::Release);
        true
    }

    pub fn replace(&self, slots: Vec<u32>) {
        let mut list = self.list.lock();
        *list = slots;
        self.count.store(list.len(), Ordering::Release);
    }

    pub fn to_vec(&self) -> Vec<u32> {
        self.list.lock().clone()
    }
}

/// Proof that the caller holds `reuse` (shared or exclusive): rows can be read.
pub(super) struct Reading<'a> {
    _guard: RwLockReadGuard<'a, ()>,
}

impl ShelfGraph {
    /// An empty graph with room for `capacity` nodes.
    pub fn new(dim: usize, m: usize, ef_construction: usize, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            dim,
            ef_construction,
            level_mult: 1.0 / (m as f64).ln(),
            seed: 0x5348_454c_465f_4857,
            vectors: Vectors::new(dim, capacity),
            links: Links::new(m, capacity),
            locks: (0..capacity).map(|_| Mutex::new(())).collect(),
            state: (0..capacity).map(|_| AtomicU8::new(LIVE)).collect(),
            tombstones: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
            linking: Mutex::new(Vec::new()),
            free: FreeSlots::default(),
            reuse: RwLock::new(()),
            reuse_enabled: AtomicBool::new(true),
        }
    }

    /// Builds a graph from `rows` (slot, unit vector) on all cores. Slots below `slots`
    /// that `rows` does not name become free slots; `capacity` must be at least `slots`.
    pub fn build<V: AsRef<[f32]>>(
        dim: usize,
        m: usize,
        ef_construction: usize,
        capacity: usize,
        slots: usize,
        rows: impl IntoIterator<Item = (u32, V)>,
    ) -> Self {
        let mut graph = Self::new(dim, m, ef_construction, capacity.max(slots));
        let mut filled = vec![false; slots];
        {
            let buffer = graph.vectors.as_mut_slice();
            for (slot, vector) in rows {
                let at = slot as usize;
                assert!(
                    at < slots,
                    "slot {slot} beyond the {slots} slots of the build"
                );
                buffer[at * dim..(at + 1) * dim].copy_from_slice(vector.as_ref());
                filled[at] = true;
            }
        }
        graph.len.store(slots, Ordering::Release);
        let mut free = Vec::new();
        for (slot, is_filled) in filled.iter().enumerate() {
            graph.links.init_level(slot, graph.draw_level(slot as u32));
            if !is_filled {
                graph.state[slot].store(HOLE, Ordering::Relaxed);
                free.push(slot as u32);
            }
        }
        // Reuse the lowest slots first.
        free.reverse();
        graph.free.replace(free);
        let live: Vec<u32> = (0..slots as u32).filter(|s| filled[*s as usize]).collect();
        if let Some((first, rest)) = live.split_first() {
            graph.link(*first);
            rest.par_iter().for_each(|slot| graph.link(*slot));
        }
        graph
    }

    pub fn capacity(&self) -> usize {
        self.vectors.capacity()
    }

    /// Slots handed out: live, deleted or free.
    pub fn points(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Deleted slots not yet reused (tombstones).
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Bytes held by vectors, links and per-node state.
    pub fn memory_bytes(&self) -> usize {
        let capacity = self.capacity();
        self.vectors.bytes()
            + self.links.bytes()
            + capacity * (std::mem::size_of::<Mutex<()>>() + std::mem::size_of::<AtomicBool>())
            + self.free.len() * 4
    }

    pub(super) fn reading(&self) -> Reading<'_> {
        Reading {
            _guard: self.reuse.read(),
        }
    }

    /// The vector of `slot`, readable while `_reading` lives.
    #[inline]
    pub(super) fn row<'a>(&'a self, _reading: &'a Reading<'_>, slot: u32) -> &'a [f32] {
        let slot = slot as usize;
        assert!(slot < self.vectors.capacity());
        // SAFETY: `Reading` holds `reuse` shared, so no reused row is being overwritten; rows
        // of unpublished slots are never reachable from a published link, the entry point or
        // `linking`, and every caller got `slot` from one of those (the protocol on `Vectors`).
        #[allow(unsafe_code)]
        unsafe {
            self.vectors.row(slot)
        }
    }

    /// A copy of the vector of `slot` (rebuilds and snapshots of other backends).
    pub fn vector(&self, slot: u32) -> Vec<f32> {
        let reading = self.reading();
        self.row(&reading, slot).to_vec()
    }

    pub fn is_deleted(&self, slot: u32) -> bool {
        self.state
            .get(slot as usize)
            .is_none_or(|d| d.load(Ordering::Acquire) != LIVE)
    }

    /// Deleted nodes still linked into the graph (free slots left unlinked by a rebuild
    /// are not counted).
    pub fn tombstones(&self) -> usize {
        self.tombstones.load(Ordering::Acquire)
    }

    /// Marks `slot` deleted: still traversed, never returned, reused by a later insert.
    pub fn delete(&self, slot: u32) {
        let at = slot as usize;
        if at < self.points()
            && self.state[at]
                .compare_exchange(LIVE, DELETED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.tombstones.fetch_add(1, Ordering::AcqRel);
            self.free.push(slot);
        }
    }

    /// Marks a slot live again after reuse.
    fn revive(&self, slot: u32) {
        if self.state[slot as usize].swap(LIVE, Ordering::AcqRel) == DELETED {
            self.tombstones.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Lets inserts reuse deleted slots (on by default; off while a rebuild copies us).
    pub fn set_reuse(&self, enabled: bool) {
        self.reuse_enabled.store(enabled, Ordering::Release);
    }

    /// The level a slot is drawn on: a seeded hash of the slot, so builds are repeatable
    /// and a reused slot keeps its level (the layer distribution stays intact).
    fn draw_level(&self, slot: u32) -> usize {
        let mut z = self.seed ^ u64::from(slot).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let uniform = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-uniform.ln() * self.level_mult) as usize).min(MAX_LEVEL)
    }

    fn entry(&self) -> Option<(u32, usize)> {
        let packed = self.entry.load(Ordering::Acquire);
        (packed != NO_ENTRY).then_some((packed as u32, (packed >> 32) as usize))
    }

    fn set_entry(&self, slot: u32, level: usize) {
        self.entry
            .store((level as u64) << 32 | u64::from(slot), Ordering::Release);
    }

    /// The same graph with room for `capacity` nodes. The caller keeps writers out meanwhile
    /// (searches may go on).
    pub fn grown(&self, capacity: usize) -> Self {
        let points = self.points();
        let mut bigger = Self::new(
            self.dim,
            self.links.m,
            self.ef_construction,
            capacity.max(points),
        );
        {
            // SAFETY: the caller keeps writers out, and only writers change published rows.
            #[allow(unsafe_code)]
            let rows = unsafe { self.vectors.rows(points) };
            bigger.vectors.as_mut_slice()[..rows.len()].copy_from_slice(rows);
        }
        let mut level0 = Vec::new();
        let mut upper = Vec::new();
        let stride = 1 + self.links.m0;
        let all_level0: Vec<u32> = self.links.level0_words(points).collect();
        for slot in 0..points {
            level0.clear();
            level0.extend_from_slice(&all_level0[slot * stride..(slot + 1) * stride]);
            upper.clear();
            upper.extend(self.links.upper_words(slot));
            bigger
                .links
                .load_node(slot, self.links.level(slot), &level0, &upper);
            bigger.state[slot].store(self.state[slot].load(Ordering::Acquire), Ordering::Relaxed);
        }
        bigger.len.store(points, Ordering::Release);
        bigger
            .tombstones
            .store(self.tombstones(), Ordering::Release);
        bigger
            .entry
            .store(self.entry.load(Ordering::Acquire), Ordering::Release);
        bigger.free.replace(self.free.to_vec());
        bigger.reuse_enabled.store(
            self.reuse_enabled.load(Ordering::Acquire),
            Ordering::Release,
        );
        bigger
    }
}
