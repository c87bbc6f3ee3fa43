//! Neighbour selection: the HNSW paper's heuristic (algorithm 4, without extending or
//! keeping pruned candidates, as hnswlib): a candidate is kept only when it is closer to
//! the base node than to every neighbour kept before it, which spreads links across
//! directions instead of packing them into one cluster.

use super::distance::distance;
use super::visited::Near;
use super::{Reading, ShelfGraph};

impl ShelfGraph {
    /// At most `m` of `candidates` (sorted closest first by distance to the base node).
    pub(super) fn select(&self, reading: &Reading<'_>, candidates: &[Near], m: usize) -> Vec<Near> {
        let mut kept: Vec<Near> = Vec::with_capacity(m);
        for c in candidates {
            if kept.len() >= m {
                break;
            }
            let vc = self.row(reading, c.slot);
            let diverse = kept
                .iter()
                .all(|k| distance(vc, self.row(reading, k.slot)) >= c.distance);
            if diverse {
                kept.push(*c);
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heuristic_drops_a_candidate_shadowed_by_a_kept_one() {
        // Base at slot 0; slot 1 and 2 lie in the same direction (2 behind 1), slot 3 the
        // other way: 2 is closer to 1 than to the base, so it is dropped; 3 is kept.
        let rows: [[f32; 2]; 4] = [[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.8, -0.6]];
        let graph = ShelfGraph::build(
            2,
            4,
            8,
            4,
            4,
            rows.iter().enumerate().map(|(i, r)| (i as u32, &r[..])),
        );
        let reading = graph.reading();
        let base = graph.row(&reading, 0);
        let mut candidates: Vec<Near> = (1..4)
            .map(|s| Near {
                distance: distance(base, graph.row(&reading, s)),
                slot: s,
            })
            .collect();
        candidates.sort();
        let kept: Vec<u32> = graph
            .select(&reading, &candidates, 3)
            .iter()
            .map(|n| n.slot)
            .collect();
        assert_eq!(kept.len(), 2);
        assert!(
            kept.contains(&1) && kept.contains(&3) && !kept.contains(&2),
            "{kept:?}"
        );
    }
}
