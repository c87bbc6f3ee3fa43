//! Inserting: a node is linked on each of its layers to the neighbours the heuristic picks
//! from an `ef_construction` search, and each of those links back, re-selecting its own list
//! when full. A deleted slot is reused by overwriting its vector (the only exclusive step),
//! repairing the lists of its old neighbours, then linking it as a new node.

use super::distance::distance;
use super::visited::{with_scratch, Near};
use super::{ShelfGraph, MAX_LEVEL};
use std::sync::atomic::Ordering;

impl ShelfGraph {
    /// Inserts a unit vector into a deleted slot (when reuse is on) or a new one; `None`
    /// when the graph is full (the caller grows it).
    pub fn insert(&self, vector: &[f32]) -> Option<u32> {
        assert_eq!(vector.len(), self.dim);
        if self.reuse_enabled.load(Ordering::Acquire) {
            if let Some(slot) = self.pop_free() {
                self.overwrite(slot, vector);
                return Some(slot);
            }
        }
        let slot = self
            .len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |len| {
                (len < self.capacity()).then_some(len + 1)
            })
            .ok()? as u32;
        self.fill(slot, vector);
        Some(slot)
    }

    /// Puts `vector` at `slot` (a rebuild copying writes made meanwhile): a slot beyond the
    /// current ones is filled, a deleted one overwritten. `slot` must be below capacity.
    pub fn insert_at(&self, slot: u32, vector: &[f32]) {
        let at = slot as usize;
        assert!(at < self.capacity(), "slot {slot} beyond capacity");
        let len = self.points();
        if at >= len {
            for hole in len..at {
                self.links.init_level(hole, self.draw_level(hole as u32));
                self.state[hole].store(super::HOLE, Ordering::Release);
                self.free.push(hole as u32);
            }
            self.len.store(at + 1, Ordering::Release);
            self.fill(slot, vector);
        } else {
            if self.free.remove(slot) {
                self.overwrite(slot, vector);
            } else {
                // A live slot: mark it deleted first so the overwrite repairs around it.
                self.delete(slot);
                self.free.remove(slot);
                self.overwrite(slot, vector);
            }
        }
    }

    fn pop_free(&self) -> Option<u32> {
        let entry = self.entry().map(|(slot, _)| slot);
        // The entry point's slot is never reused: searches start from its links.
        self.free.pop_where(|s| Some(s) != entry)
    }

    /// Writes and links a slot nobody can reach yet.
    fn fill(&self, slot: u32, vector: &[f32]) {
        // SAFETY: `slot` was just handed out and no link or entry point names it yet, so no
        // other thread reads or writes its row (the protocol on `Vectors`).
        #[allow(unsafe_code)]
        unsafe {
            self.vectors.write(slot as usize, vector)
        };
        self.links.init_level(slot as usize, self.draw_level(slot));
        self.link(slot);
    }

    /// Reuses a deleted slot for `vector`.
    fn overwrite(&self, slot: u32, vector: &[f32]) {
        let at = slot as usize;
        let level = self.links.level(at);
        let mut old: Vec<Vec<u32>> = vec![Vec::new(); level + 1];
        {
            let _exclusive = self.reuse.write();
            let _node = self.locks[at].lock();
            for (layer, list) in old.iter_mut().enumerate() {
                self.links.read(at, layer, list);
                self.links.write(at, layer, &[]);
            }
            // SAFETY: `reuse` is held exclusively, so no search or insert is reading rows.
            #[allow(unsafe_code)]
            unsafe {
                self.vectors.write(at, vector)
            };
        }
        self.repair(slot, &old);
        self.link(slot);
        self.revive(slot);
    }

    /// The old neighbours of a reused slot drop their link to it and choose again among
    /// their remaining neighbours and the slot's old neighbours.
    fn repair(&self, slot: u32, old: &[Vec<u32>]) {
        let reading = self.reading();
        let mut current = Vec::new();
        for (layer, neighbours) in old.iter().enumerate() {
            for &n in neighbours {
                if n == slot || self.links.level(n as usize) < layer {
                    continue;
                }
                let _node = self.locks[n as usize].lock();
                self.links.read(n as usize, layer, &mut current);
                if !current.contains(&slot) {
                    continue;
                }
                let vn = self.row(&reading, n);
                let mut candidates: Vec<Near> = current
                    .iter()
                    .chain(neighbours)
                    .copied()
                    .filter(|c| *c != slot && *c != n)
                    .map(|c| Near {
                        distance: distance(vn, self.row(&reading, c)),
                        slot: c,
                    })
                    .collect();
                candidates.sort_unstable();
                candidates.dedup_by_key(|c| c.slot);
                let kept = self.select(&reading, &candidates, self.links.max_degree(layer));
                let ids: Vec<u32> = kept.iter().map(|k| k.slot).collect();
                self.links.write(n as usize, layer, &ids);
            }
        }
    }

    /// Links `slot` (its row and level already set) into every layer up to its level.
    pub(super) fn link(&self, slot: u32) {
        let level = self.links.level(slot as usize);
        debug_assert!(level <= MAX_LEVEL);
        let Some((entry, top)) = self.entry() else {
            let _guard = self.entry_lock.lock();
            if self.entry().is_none() {
                self.set_entry(slot, level);
                return;
            }
            drop(_guard);
            return self.link(slot);
        };
        if entry == slot {
            return;
        }
        let reading = self.reading();
        let query = self.row(&reading, slot);
        with_scratch(|s| {
            let mut cur = Near {
                distance: distance(query, self.row(&reading, entry)),
                slot: entry,
            };
            for layer in (level + 1..=top).rev() {
                cur = self.greedy(&reading, query, cur, layer, s);
            }
            for layer in (0..=level.min(top)).rev() {
                let not_self = |n: u32| n != slot;
                self.search_layer(
                    &reading,
                    query,
                    &[cur],
                    self.ef_construction,
                    layer,
                    not_self,
                    false,
                    s,
                );
                let mut found: Vec<Near> = s.results.drain().collect();
                found.sort_unstable();
                if found.is_empty() {
                    continue;
                }
                let chosen = self.select(&reading, &found, self.links.m);
                let ids: Vec<u32> = chosen.iter().map(|c| c.slot).collect();
                {
                    let _node = self.locks[slot as usize].lock();
                    self.links.write(slot as usize, layer, &ids);
                }
                for c in &chosen {
                    self.connect(&reading, c.slot, slot, c.distance, layer);
                }
                cur = found[0];
            }
        });
        if level > top {
            let _guard = self.entry_lock.lock();
            if self.entry().is_none_or(|(_, top)| level > top) {
                self.set_entry(slot, level);
            }
        }
    }

    /// Adds `new` to the list of `node` on `layer`, re-selecting when the list is full.
    fn connect(&self, reading: &super::Reading<'_>, node: u32, new: u32, d: f32, layer: usize) {
        let _node = self.locks[node as usize].lock();
        let mut list = Vec::with_capacity(self.links.m0 + 1);
        self.links.read(node as usize, layer, &mut list);
        if list.contains(&new) {
            return;
        }
        if list.len() < self.links.max_degree(layer) {
            list.push(new);
            self.links.write(node as usize, layer, &list);
            return;
        }
        let vn = self.row(reading, node);
        let mut candidates: Vec<Near> = list
            .iter()
            .map(|&c| Near {
                distance: distance(vn, self.row(reading, c)),
                slot: c,
            })
            .collect();
        candidates.push(Near {
            distance: d,
            slot: new,
        });
        candidates.sort_unstable();
        let kept = self.select(reading, &candidates, self.links.max_degree(layer));
        let ids: Vec<u32> = kept.iter().map(|k| k.slot).collect();
        self.links.write(node as usize, layer, &ids);
    }
}
