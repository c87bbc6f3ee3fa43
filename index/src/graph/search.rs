//! Searching the graph: greedy descent through the upper layers, then a best-first search
//! of layer 0 that collects only accepted nodes; for selective filters the ACORN-1
//! expansion (Patel et al., SIGMOD 2024): neighbours that fail the filter are walked
//! through to their own neighbours without scoring, so only matching nodes cost a distance.

use super::distance::distance;
use super::visited::{with_scratch, Near, Scratch};
use super::{GraphFilter, Reading, ShelfGraph};
use std::cmp::Reverse;
use std::sync::atomic::Ordering;

impl ShelfGraph {
    /// The `k` best accepted slots for `query` with a candidate list of `ef`, best first,
    /// as (cosine similarity, slot).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&GraphFilter<'_>>,
    ) -> Vec<(f32, u32)> {
        let Some((entry, top)) = self.entry() else {
            return Vec::new();
        };
        let reading = self.reading();
        let ef = ef.max(k);
        with_scratch(|s| {
            let start = Near {
                distance: distance(query, self.row(&reading, entry)),
                slot: entry,
            };
            let mut cur = start;
            for layer in (1..=top).rev() {
                cur = self.greedy(&reading, query, cur, layer, s);
            }
            let not_deleted =
                |slot: u32| self.state[slot as usize].load(Ordering::Relaxed) == super::LIVE;
            match filter {
                None => {
                    let exhaustive = self.free.len() > 0;
                    self.search_layer(&reading, query, &[cur], ef, 0, not_deleted, exhaustive, s);
                }
                Some(f) if f.two_hop => {
                    self.search_two_hop(&reading, query, cur, ef, f.matches, s);
                }
                Some(f) => {
                    let accept = |slot: u32| not_deleted(slot) && (f.matches)(slot);
                    self.search_layer(&reading, query, &[cur], ef, 0, accept, true, s);
                }
            }
            let mut found: Vec<Near> = s.results.drain().collect();
            found.sort_unstable();
            found.truncate(k);
            found
                .into_iter()
                .map(|n| (1.0 - n.distance, n.slot))
                .collect()
        })
    }

    /// Exact similarities of `query` to `slots` (the exact scan of a selective filter).
    pub fn score(&self, query: &[f32], slots: &[u32]) -> Vec<(f32, u32)> {
        let reading = self.reading();
        slots
            .iter()
            .filter(|s| !self.is_deleted(**s))
            .map(|s| (1.0 - distance(query, self.row(&reading, *s)), *s))
            .collect()
    }

    /// Moves to the closest neighbour on `layer` until none is closer.
    pub(super) fn greedy(
        &self,
        reading: &Reading<'_>,
        query: &[f32],
        mut cur: Near,
        layer: usize,
        s: &mut Scratch,
    ) -> Near {
        loop {
            let mut moved = false;
            self.links.read(cur.slot as usize, layer, &mut s.neighbours);
            for &n in &s.neighbours {
                let d = distance(query, self.row(reading, n));
                if d < cur.distance {
                    cur = Near {
                        distance: d,
                        slot: n,
                    };
                    moved = true;
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// Best-first search of `layer` from `entries`; the best `ef` nodes that `accept` lets
    /// through end up in `s.results`. `exhaustive` keeps expanding while fewer than `ef`
    /// nodes were accepted (deleted or filtered nodes about), as hnswlib does.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn search_layer(
        &self,
        reading: &Reading<'_>,
        query: &[f32],
        entries: &[Near],
        ef: usize,
        layer: usize,
        accept: impl Fn(u32) -> bool,
        exhaustive: bool,
        s: &mut Scratch,
    ) {
        s.visited.reset(self.capacity());
        s.candidates.clear();
        s.results.clear();
        for e in entries {
            s.visited.insert(e.slot);
            s.candidates.push(Reverse(*e));
            if accept(e.slot) {
                s.results.push(*e);
            }
        }
        let mut bound = s.results.peek().map_or(f32::INFINITY, |n| n.distance);
        while let Some(Reverse(c)) = s.candidates.pop() {
            if c.distance > bound && (s.results.len() >= ef || !exhaustive) {
                break;
            }
            self.links.read(c.slot as usize, layer, &mut s.neighbours);
            // Mark and prefetch every unseen neighbour first, then score them: the loads
            // of all their vectors are in flight together instead of one after another.
            s.expand.clear();
            for &n in &s.neighbours {
                if s.visited.insert(n) {
                    self.vectors.prefetch(n as usize);
                    s.expand.push(n);
                }
            }
            bound = self.score_expansion(reading, query, ef, bound, &accept, s);
        }
    }

    /// Scores the nodes in `s.expand`: each closer than `bound` (or while fewer than `ef`
    /// were accepted) is queued, and collected when `accept` lets it; returns the new bound.
    fn score_expansion(
        &self,
        reading: &Reading<'_>,
        query: &[f32],
        ef: usize,
        mut bound: f32,
        accept: &impl Fn(u32) -> bool,
        s: &mut Scratch,
    ) -> f32 {
        for &n in &s.expand {
            let d = distance(query, self.row(reading, n));
            if s.results.len() < ef || d < bound {
                let near = Near {
                    distance: d,
                    slot: n,
                };
                s.candidates.push(Reverse(near));
                if accept(n) {
                    s.results.push(near);
                    if s.results.len() > ef {
                        s.results.pop();
                    }
                }
                if let Some(worst) = s.results.peek() {
                    bound = worst.distance;
                }
            }
        }
        bound
    }

    /// Layer-0 search for a selective filter: only matching nodes are scored, queued and
    /// collected; a neighbour that fails the filter is walked through to its neighbours.
    fn search_two_hop(
        &self,
        reading: &Reading<'_>,
        query: &[f32],
        start: Near,
        ef: usize,
        matches: &(dyn Fn(u32) -> bool + Sync),
        s: &mut Scratch,
    ) {
        // Matching nodes gathered per expansion: a layer-0 list's worth.
        let cap = self.links.m0;
        let accept = |slot: u32| {
            matches(slot) && self.state[slot as usize].load(Ordering::Relaxed) == super::LIVE
        };
        s.visited.reset(self.capacity());
        s.candidates.clear();
        s.results.clear();
        s.visited.insert(start.slot);
        s.candidates.push(Reverse(start));
        if accept(start.slot) {
            s.results.push(start);
        }
        let mut bound = s.results.peek().map_or(f32::INFINITY, |n| n.distance);
        while let Some(Reverse(c)) = s.candidates.pop() {
            if c.distance > bound && s.results.len() >= ef {
                break;
            }
            self.links.read(c.slot as usize, 0, &mut s.neighbours);
            s.expand.clear();
            for &n in &s.neighbours {
                if matches(n) && s.visited.insert(n) {
                    s.expand.push(n);
                }
            }
            for i in 0..s.neighbours.len() {
                if s.expand.len() >= cap {
                    break;
                }
                let n = s.neighbours[i];
                // A non-matching neighbour is walked through once: marking it visited keeps
                // later expansions from reading its list again (it is never scored).
                if matches(n) || !s.visited.insert(n) {
                    continue;
                }
                self.links.read(n as usize, 0, &mut s.hop);
                for &h in &s.hop {
                    if matches(h) && s.visited.insert(h) {
                        s.expand.push(h);
                        if s.expand.len() >= cap {
                            break;
                        }
                    }
                }
            }
            bound = self.score_expansion(reading, query, ef, bound, &accept, s);
        }
    }
}
