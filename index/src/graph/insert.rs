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
        // SAFETY: `slot` was just handed out and no link, entry point or `linking` names it
        // yet, so no other thread reads or writes its row (the protocol on `Vectors`).
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
        let Some((mut entry, mut top)) = self.entry() else {
            let _guard = self.entry_lock.lock();
            if self.entry().is_none() {
                self.set_entry(slot, level);
                return;
            }
            drop(_guard);
            return self.link(slot);
        };
        // An insert drawn above the top level links only up to the top it read, then
        // becomes the entry point, the sole node of its higher layers. Two such inserts at
        // once both read the old top: one becomes the entry point and the other's layers
        // above the old top stay unlinked for good, since nothing there searches for it
        // again. So an insert that would raise the top holds `entry_lock` from here until
        // it is the entry point, and one that waited reads the top again: it may no longer
        // raise it, and then links every layer from the new entry point. Such inserts are
        // a handful per build (about one per layer); the others never take the lock.
        let mut raising = None;
        if level > top {
            let guard = self.entry_lock.lock();
            (entry, top) = self
                .entry()
                .expect("the entry point is never taken away once set");
            if level > top {
                raising = Some(guard);
            }
        }
        if entry == slot {
            return;
        }
        // Inserts running side by side cannot find each other in the graph: a node becomes
        // reachable only when `connect` links its neighbours back to it, at the end of its
        // `link`. Two close nodes linked at once both choose the same neighbours without
        // ever linking each other, and those neighbours, pruning, keep the closer of the two
        // and drop the other as covered by it, its only inbound links (the first inserts of
        // a parallel build all see just the first node; tight clusters do the same later).
        // So each insert stays in `linking` for its whole `link` and weighs the nodes there
        // when it registered as layer-0 candidates. Of two overlapping inserts the later
        // one then always sees the earlier: in this snapshot while the earlier one links,
        // in the graph once it is done, as it leaves `linking` only after its last
        // `connect`. A node chosen from the snapshot may receive this node's link before it
        // publishes its own list; `publish` merges it.
        let linking = Linking::enter(self, slot);
        let reading = self.reading();
        let query = self.row(&reading, slot);
        // The neighbours to link on each layer, found top-down (each layer's search starts
        // from the best node of the layer above)...
        let chosen: Vec<(usize, Vec<Near>)> = with_scratch(|s| {
            let mut cur = Near {
                distance: distance(query, self.row(&reading, entry)),
                slot: entry,
            };
            for layer in (level + 1..=top).rev() {
                cur = self.greedy(&reading, query, cur, layer, s);
            }
            let mut chosen = Vec::new();
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
                if layer == 0 {
                    for &n in &linking.alongside {
                        if found.iter().all(|f| f.slot != n) {
                            found.push(Near {
                                distance: distance(query, self.row(&reading, n)),
                                slot: n,
                            });
                        }
                    }
                }
                found.sort_unstable();
                if found.is_empty() {
                    continue;
                }
                chosen.push((layer, self.select(&reading, &found, self.links.m)));
                cur = found[0];
            }
            chosen
        });
        // ...and published bottom-up. Other inserts reach this node on a layer only through
        // the links made here, so by then its lists on every layer below are written: a
        // concurrent insert never descends into an empty list and links to this node alone.
        for (layer, near) in chosen.iter().rev() {
            self.publish(&reading, slot, *layer, near);
            for c in near {
                self.connect(&reading, c.slot, slot, c.distance, *layer);
            }
        }
        if let Some(_guard) = raising {
            self.set_entry(slot, level);
        }
    }

    /// Writes `slot`'s own list on `layer`: `chosen` plus the links other inserts added
    /// meanwhile (a reused slot is reachable through old links before its new lists are
    /// written, and an insert that registered in `linking` after this one may have chosen
    /// it on layer 0), re-selected when they do not fit. Overwriting those would leave their
    /// nodes with one inbound link fewer, often their only one.
    fn publish(&self, reading: &super::Reading<'_>, slot: u32, layer: usize, chosen: &[Near]) {
        let _node = self.locks[slot as usize].lock();
        let mut arrived = Vec::new();
        self.links.read(slot as usize, layer, &mut arrived);
        arrived.retain(|a| chosen.iter().all(|c| c.slot != *a));
        let mut candidates = chosen.to_vec();
        if !arrived.is_empty() {
            let v = self.row(reading, slot);
            candidates.extend(arrived.iter().map(|&a| Near {
                distance: distance(v, self.row(reading, a)),
                slot: a,
            }));
            candidates.sort_unstable();
        }
        let degree = self.links.max_degree(layer);
        let kept = if candidates.len() > degree {
            self.select(reading, &candidates, degree)
        } else {
            candidates
        };
        let ids: Vec<u32> = kept.iter().map(|k| k.slot).collect();
        self.links.write(slot as usize, layer, &ids);
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

/// A slot's registration in `ShelfGraph::linking` for the length of its `link`.
struct Linking<'a> {
    graph: &'a ShelfGraph,
    slot: u32,
    /// The slots that were linking when this one registered.
    alongside: Vec<u32>,
}

impl<'a> Linking<'a> {
    fn enter(graph: &'a ShelfGraph, slot: u32) -> Self {
        let mut linking = graph.linking.lock();
        let alongside = linking.iter().copied().filter(|s| *s != slot).collect();
        linking.push(slot);
        Self {
            graph,
            slot,
            alongside,
        }
    }
}

impl Drop for Linking<'_> {
    fn drop(&mut self) {
        let mut linking = self.graph.linking.lock();
        if let Some(i) = linking.iter().position(|s| *s == self.slot) {
            linking.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ShelfGraph, MAX_LEVEL};
    use crate::synthetic::Clustered;
    use rayon::prelude::*;
    use std::sync::atomic::Ordering;

    /// Live nodes that no walk of layer 0 from the entry point reaches.
    fn unreachable(graph: &ShelfGraph) -> Vec<u32> {
        let points = graph.points();
        let mut seen = vec![false; points];
        let Some((entry, _)) = graph.entry() else {
            return Vec::new();
        };
        let mut stack = vec![entry];
        seen[entry as usize] = true;
        let mut list = Vec::new();
        while let Some(n) = stack.pop() {
            graph.links.read(n as usize, 0, &mut list);
            for &m in &list {
                if !std::mem::replace(&mut seen[m as usize], true) {
                    stack.push(m);
                }
            }
        }
        (0..points as u32)
            .filter(|&s| {
                !seen[s as usize]
                    && graph.state[s as usize].load(Ordering::Acquire) == super::super::LIVE
            })
            .collect()
    }

    /// Nodes left without a single link on one of their upper layers although other nodes
    /// share that layer, as (slot, layer): no search ever reaches them there. (A node can
    /// also become unreachable on an upper layer when pruning drops its in-links, as in any
    /// HNSW; that is not this.)
    fn unlinked_above_layer0(graph: &ShelfGraph) -> Vec<(u32, usize)> {
        let points = graph.points() as u32;
        let mut list = Vec::new();
        let mut missing = Vec::new();
        for layer in 1..=MAX_LEVEL {
            let on_layer: Vec<u32> = (0..points)
                .filter(|&s| graph.links.level(s as usize) >= layer)
                .collect();
            if on_layer.len() < 2 {
                continue;
            }
            for &s in &on_layer {
                graph.links.read(s as usize, layer, &mut list);
                if list.is_empty() {
                    missing.push((s, layer));
                }
            }
        }
        missing
    }

    /// Inserts drawn above the top level that run at the same time must each be linked on
    /// all of their layers, not only the one that becomes the entry point. A high level
    /// multiplier (half the nodes on layer 1, a quarter on layer 2, ...) makes the top rise
    /// often while several inserts are under way; each build draws its levels with its own
    /// seed.
    #[test]
    fn parallel_inserts_raising_the_top_level_link_every_layer() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(8)
            .build()
            .unwrap();
        let mut lost = Vec::new();
        for seed in 0..40u64 {
            let rows = Clustered::new(32, 12, 0.15, seed).take(200);
            let mut graph = ShelfGraph::new(32, 8, 64, rows.len());
            graph.level_mult = 1.0 / 2f64.ln();
            graph.seed ^= seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            pool.install(|| {
                rows.par_iter().for_each(|r| {
                    graph.insert(r).expect("the graph has room for every row");
                })
            });
            let missing = unlinked_above_layer0(&graph);
            if !missing.is_empty() {
                lost.push((seed, missing));
            }
        }
        assert!(
            lost.is_empty(),
            "(slot, layer) never linked on an upper layer after parallel inserts, by seed: {lost:?}"
        );
    }

    /// Builds run their inserts in parallel; a node linked while a neighbour is still being
    /// linked must keep its links. Tight clusters of near-duplicates (as a shop's variants
    /// of one product embed) and more threads than cores make the interleavings many.
    #[test]
    fn parallel_builds_leave_no_node_unreachable() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(8)
            .build()
            .unwrap();
        let mut lost = Vec::new();
        for seed in 0..40 {
            let rows = Clustered::new(32, 12, 0.15, seed).take(300);
            let graph = pool.install(|| {
                ShelfGraph::build(
                    32,
                    8,
                    64,
                    rows.len(),
                    rows.len(),
                    rows.iter().enumerate().map(|(i, r)| (i as u32, &r[..])),
                )
            });
            let missing = unreachable(&graph);
            if !missing.is_empty() {
                lost.push((seed, missing));
            }
        }
        assert!(
            lost.is_empty(),
            "unreachable after a parallel build: {lost:?}"
        );
    }
}
