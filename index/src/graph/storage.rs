//! Flat storage of one graph: vectors in one 64-byte-aligned buffer (stride = dimension),
//! layer-0 links in fixed slots of `1 + 2M` words (count, then neighbours) side by side, and
//! upper-layer links in a compact side table allocated only for the few nodes that have them.
//!
//! Links are atomics, so a search reads them without a lock while an insert rewrites them
//! under the node's lock; on x86 an atomic load is a plain load. Vectors are plain floats
//! written through a raw pointer under the protocol documented on [`Vectors`].

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::OnceLock;

/// Alignment of the vector buffer: one cache line, the widest SIMD load.
const ALIGN: usize = 64;
/// `capacity` vectors of `dim` floats in one aligned allocation, zeroed at start.
///
/// Reads and writes go through raw pointers so that writing one row never creates a
/// reference that covers another. The graph keeps this protocol:
/// - a row is written before the node is published (before any link to it is stored with
///   `Release`, before the node becomes the entry point, or before it enters the graph's
///   `linking` list, under its mutex); readers find nodes only through `Acquire` loads of
///   links or of the entry point, or in `linking`, so they see the finished row;
/// - a published row is overwritten only when a deleted slot is reused, and only while the
///   graph's `reuse` lock is held exclusively, which waits for every search and insert
///   (they hold it shared for as long as they read rows).
pub(super) struct Vectors {
    ptr: NonNull<f32>,
    dim: usize,
    capacity: usize,
}

// SAFETY: `Vectors` owns its allocation; concurrent access follows the protocol above, which
// never lets a write overlap a read or another write of the same row.
#[allow(unsafe_code)]
unsafe impl Send for Vectors {}
// SAFETY: see `Send`; shared references only read rows or write rows nobody else can see.
#[allow(unsafe_code)]
unsafe impl Sync for Vectors {}

impl Vectors {
    pub fn new(dim: usize, capacity: usize) -> Self {
        let ptr = match Self::layout(dim, capacity) {
            None => NonNull::dangling(),
            Some(layout) => {
                // SAFETY: the layout has a non-zero size (checked by `layout`).
                #[allow(unsafe_code)]
                let raw = unsafe { alloc::alloc_zeroed(layout) };
                match NonNull::new(raw.cast::<f32>()) {
                    Some(ptr) => ptr,
                    None => alloc::handle_alloc_error(layout),
                }
            }
        };
        Self { ptr, dim, capacity }
    }

    fn layout(dim: usize, capacity: usize) -> Option<Layout> {
        let floats = dim
            .checked_mul(capacity)
            .expect("vector buffer size overflows");
        if floats == 0 {
            return None;
        }
        Some(
            Layout::from_size_align(floats * std::mem::size_of::<f32>(), ALIGN)
                .expect("vector buffer layout"),
        )
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn bytes(&self) -> usize {
        self.dim * self.capacity * std::mem::size_of::<f32>()
    }

    /// The row of `slot`.
    ///
    /// # Safety
    /// `slot < capacity`, and no write to this row may run while the returned slice lives
    /// (the protocol on [`Vectors`]).
    #[inline]
    #[allow(unsafe_code)]
    pub unsafe fn row(&self, slot: usize) -> &[f32] {
        debug_assert!(slot < self.capacity);
        // SAFETY: in bounds by the caller's contract; the allocation is initialised (zeroed).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(slot * self.dim), self.dim) }
    }

    /// Asks the CPU to start loading the row of `slot` (no effect on other targets).
    #[inline]
    pub fn prefetch(&self, slot: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let row = self.ptr.as_ptr().wrapping_add(slot * self.dim).cast::<i8>();
            // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is a hint that
            // never faults nor reads into the program, whatever the address. The first two
            // lines are asked for; the hardware prefetcher follows the rest of the row.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(row);
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
            }
        }
    }

    /// Writes the row of `slot`.
    ///
    /// # Safety
    /// `slot < capacity`, `vector.len() == dim`, and no other thread may read or write this
    /// row meanwhile (the protocol on [`Vectors`]).
    #[inline]
    #[allow(unsafe_code)]
    pub unsafe fn write(&self, slot: usize, vector: &[f32]) {
        assert!(slot < self.capacity && vector.len() == self.dim);
        // SAFETY: in bounds (asserted); exclusive access to the row by the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(
                vector.as_ptr(),
                self.ptr.as_ptr().add(slot * self.dim),
                self.dim,
            );
        }
    }

    /// The first `rows` rows as one slice, for snapshots and copies.
    ///
    /// # Safety
    /// `rows <= capacity` and no row below `rows` may be written while the slice lives.
    #[allow(unsafe_code)]
    pub unsafe fn rows(&self, rows: usize) -> &[f32] {
        assert!(rows <= self.capacity);
        // SAFETY: in bounds (asserted); no concurrent writes by the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), rows * self.dim) }
    }

    /// The whole buffer, writable: only while the graph is owned exclusively (building a
    /// copy or loading a snapshot).
    #[allow(unsafe_code)]
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: `&mut self` proves exclusive access; the allocation holds this many floats.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.dim * self.capacity) }
    }
}

impl Drop for Vectors {
    fn drop(&mut self) {
        if let Some(layout) = Self::layout(self.dim, self.capacity) {
            // SAFETY: allocated in `new` with this same layout.
            #[allow(unsafe_code)]
            unsafe {
                alloc::dealloc(self.ptr.as_ptr().cast(), layout)
            };
        }
    }
}

/// The neighbour lists of every node on every layer.
pub(super) struct Links {
    /// Neighbours kept per node on the upper layers (HNSW `M`).
    pub m: usize,
    /// ... and on layer 0 (`2M`).
    pub m0: usize,
    /// `capacity x (1 + m0)` words: count, then neighbours.
    level0: Box<[AtomicU32]>,
    /// Per node, `level x (1 + m)` words for layers 1..=level, allocated on first use.
    upper: Box<[OnceLock<Box<[AtomicU32]>>]>,
    /// The highest layer of each node.
    levels: Box<[AtomicU8]>,
}

impl Links {
    pub fn new(m: usize, capacity: usize) -> Self {
        let m0 = 2 * m;
        Self {
            m,
            m0,
            level0: (0..capacity * (1 + m0))
                .map(|_| AtomicU32::new(0))
                .collect(),
            upper: (0..capacity).map(|_| OnceLock::new()).collect(),
            levels: (0..capacity).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    pub fn bytes(&self) -> usize {
        let upper: usize = self
            .upper
            .iter()
            .filter_map(|u| u.get())
            .map(|u| u.len() * 4)
            .sum();
        self.level0.len() * 4
            + self.upper.len() * std::mem::size_of::<OnceLock<Box<[AtomicU32]>>>()
            + upper
            + self.levels.len()
    }

    /// Most neighbours a node keeps on `layer`.
    #[inline]
    pub fn max_degree(&self, layer: usize) -> usize {
        if layer == 0 {
            self.m0
        } else {
            self.m
        }
    }

    pub fn level(&self, slot: usize) -> usize {
        usize::from(self.levels[slot].load(Ordering::Acquire))
    }

    /// Sets the level of a node nobody can reach yet and allocates its upper layers (kept
    /// if already there: a reused slot keeps the level it was drawn with).
    pub fn init_level(&self, slot: usize, level: usize) {
        self.levels[slot].store(level as u8, Ordering::Release);
        if level > 0 {
            let m = self.m;
            self.upper[slot]
                .get_or_init(|| (0..level * (1 + m)).map(|_| AtomicU32::new(0)).collect());
        }
    }

    /// The count word followed by the neighbour words of `slot` on `layer`.
    #[inline]
    pub fn list(&self, slot: usize, layer: usize) -> &[AtomicU32] {
        if layer == 0 {
            let stride = 1 + self.m0;
            &self.level0[slot * stride..(slot + 1) * stride]
        } else {
            let stride = 1 + self.m;
            let upper = self.upper[slot].get().expect("node has upper layers");
            &upper[(layer - 1) * stride..layer * stride]
        }
    }

    /// Copies the neighbours of `slot` on `layer` into `out` (cleared first).
    #[inline]
    pub fn read(&self, slot: usize, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        let list = self.list(slot, layer);
        let count = (list[0].load(Ordering::Acquire) as usize).min(list.len() - 1);
        out.extend(list[1..=count].iter().map(|n| n.load(Ordering::Acquire)));
    }

    /// Replaces the neighbours of `slot` on `layer`; the caller holds the node's lock.
    pub fn write(&self, slot: usize, layer: usize, neighbours: &[u32]) {
        let list = self.list(slot, layer);
        assert!(neighbours.len() < list.len(), "too many neighbours");
        for (word, n) in list[1..].iter().zip(neighbours) {
            word.store(*n, Ordering::Release);
        }
        list[0].store(neighbours.len() as u32, Ordering::Release);
    }

    /// Raw words for snapshots: layer 0 of the first `rows` nodes.
    pub fn level0_words(&self, rows: usize) -> impl Iterator<Item = u32> + '_ {
        self.level0[..rows * (1 + self.m0)]
            .iter()
            .map(|w| w.load(Ordering::Acquire))
    }

    /// Raw words for snapshots: the upper layers of `slot` (empty when it has none).
    pub fn upper_words(&self, slot: usize) -> impl Iterator<Item = u32> + '_ {
        self.upper[slot]
            .get()
            .into_iter()
            .flat_map(|u| u.iter().map(|w| w.load(Ordering::Acquire)))
    }

    /// Loads one node's layer-0 words and upper words (snapshot restore, exclusive access).
    pub fn load_node(&self, slot: usize, level: usize, level0: &[u32], upper: &[u32]) {
        self.init_level(slot, level);
        let stride = 1 + self.m0;
        for (word, v) in self.level0[slot * stride..(slot + 1) * stride]
            .iter()
            .zip(level0)
        {
            word.store(*v, Ordering::Relaxed);
        }
        if let Some(words) = self.upper[slot].get() {
            for (word, v) in words.iter().zip(upper) {
                word.store(*v, Ordering::Relaxed);
            }
        }
    }
}
