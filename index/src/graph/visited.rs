//! Per-thread search scratch: a visited set stamped with a generation counter (cleared by
//! bumping the counter, not by writing memory) and the two heaps of a layer search, pooled
//! so that a search allocates nothing once the thread has searched a graph of this size.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A node with its distance to the query; ordered by distance, then slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Near {
    pub distance: f32,
    pub slot: u32,
}

impl Eq for Near {}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.slot.cmp(&other.slot))
    }
}

/// Which nodes this search has seen.
#[derive(Debug, Default)]
pub(super) struct Visited {
    marks: Vec<u16>,
    generation: u16,
}

impl Visited {
    /// Forgets every node, sized for slots below `capacity`.
    pub fn reset(&mut self, capacity: usize) {
        if self.marks.len() < capacity {
            self.marks.resize(capacity, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.fill(0);
            self.generation = 1;
        }
    }

    /// Marks `slot`; false when it was already marked.
    #[inline]
    pub fn insert(&mut self, slot: u32) -> bool {
        let mark = &mut self.marks[slot as usize];
        if *mark == self.generation {
            false
        } else {
            *mark = self.generation;
            true
        }
    }
}

/// Everything one layer search needs.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    pub visited: Visited,
    /// Nodes still to expand, closest first.
    pub candidates: BinaryHeap<Reverse<Near>>,
    /// The best accepted nodes so far, farthest on top.
    pub results: BinaryHeap<Near>,
    /// Neighbour ids read from a link list.
    pub neighbours: Vec<u32>,
    /// Second-hop neighbour ids (filtered search).
    pub hop: Vec<u32>,
    /// Nodes to score in the current expansion.
    pub expand: Vec<u32>,
}

thread_local! {
    static POOL: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a pooled scratch of this thread (nested calls get their own).
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut scratch = POOL
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_default();
    let out = f(&mut scratch);
    POOL.with(|pool| pool.borrow_mut().push(scratch));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_forget_without_clearing() {
        let mut v = Visited::default();
        v.reset(4);
        assert!(v.insert(2) && !v.insert(2));
        v.reset(4);
        assert!(v.insert(2));
        for _ in 0..70_000 {
            v.reset(8);
        }
        assert!(v.insert(7) && !v.insert(7));
    }
}
