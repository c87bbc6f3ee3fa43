//! Snapshot of one graph as its flat buffers (`graph.bin`, little-endian): a header, the
//! free slots, each slot's level and state (live, deleted, hole), the vectors as one block, the layer-0
//! link slots as one block, then the upper layers of the nodes that have them. Loading reads
//! the blocks straight into the buffers: nothing is re-inserted.

use super::storage::Links;
use super::ShelfGraph;
use std::io::{self, BufWriter, Read, Write};
use std::sync::atomic::Ordering;

/// File name of the graph inside a snapshot directory.
pub(crate) const GRAPH_FILE: &str = "graph.bin";
const MAGIC: &[u8; 8] = b"SHELFHNS";
const VERSION: u32 = 1;

#[cfg(not(target_endian = "little"))]
compile_error!("graph snapshots store raw little-endian buffers");

impl ShelfGraph {
    /// Writes the graph. The caller keeps writers out meanwhile.
    pub fn write_to(&self, out: impl Write) -> io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, out);
        let points = self.points();
        let free = self.free.to_vec();
        w.write_all(MAGIC)?;
        for v in [
            VERSION,
            self.dim as u32,
            self.links.m as u32,
            self.ef_construction as u32,
        ] {
            w.write_all(&v.to_le_bytes())?;
        }
        for v in [
            points as u64,
            self.entry.load(Ordering::Acquire),
            free.len() as u64,
        ] {
            w.write_all(&v.to_le_bytes())?;
        }
        w.write_all(bytemuck::cast_slice(&free))?;
        let levels: Vec<u8> = (0..points).map(|s| self.links.level(s) as u8).collect();
        w.write_all(&levels)?;
        let states: Vec<u8> = (0..points)
            .map(|s| self.state[s].load(Ordering::Acquire))
            .collect();
        w.write_all(&states)?;
        {
            let _reading = self.reading();
            // SAFETY: the caller keeps writers out and `_reading` excludes slot reuse, so no
            // row below `points` changes while the slice lives.
            #[allow(unsafe_code)]
            let rows = unsafe { self.vectors.rows(points) };
            w.write_all(bytemuck::cast_slice(rows))?;
        }
        let mut words = Vec::with_capacity(1 << 16);
        for word in self.links.level0_words(points) {
            words.push(word);
            if words.len() == words.capacity() {
                w.write_all(bytemuck::cast_slice(&words))?;
                words.clear();
            }
        }
        for slot in 0..points {
            words.extend(self.links.upper_words(slot));
            if words.len() >= 1 << 15 {
                w.write_all(bytemuck::cast_slice(&words))?;
                words.clear();
            }
        }
        w.write_all(bytemuck::cast_slice(&words))?;
        w.flush()
    }

    /// Reads a graph written by [`ShelfGraph::write_to`], with room for `capacity` nodes
    /// (at least the slots it holds). Errors name what is wrong; the caller adds the path.
    pub fn read_from(mut input: impl Read, dim: usize, capacity: usize) -> Result<Self, String> {
        let mut magic = [0u8; 8];
        read(&mut input, &mut magic)?;
        if &magic != MAGIC {
            return Err("not a shelf graph file".into());
        }
        let mut header = [0u32; 4];
        read(&mut input, bytemuck::cast_slice_mut(&mut header))?;
        let [version, file_dim, m, ef_construction] = header;
        if version != VERSION {
            return Err(format!(
                "graph format version {version}, this build reads {VERSION}"
            ));
        }
        if file_dim as usize != dim {
            return Err(format!("graph holds {file_dim}-d vectors, expected {dim}"));
        }
        if !(2..=256).contains(&m) {
            return Err(format!("graph degree {m} is out of range"));
        }
        let mut counts = [0u64; 3];
        read(&mut input, bytemuck::cast_slice_mut(&mut counts))?;
        let [points, entry, free_count] = counts;
        let points = usize::try_from(points).map_err(|_| "slot count overflows")?;
        if points > u32::MAX as usize || free_count as usize > points {
            return Err(format!(
                "implausible counts: {points} slots, {free_count} free"
            ));
        }
        let mut graph = Self::new(
            dim,
            m as usize,
            ef_construction as usize,
            capacity.max(points),
        );
        let mut free = vec![0u32; free_count as usize];
        read(&mut input, bytemuck::cast_slice_mut(&mut free))?;
        if free.iter().any(|s| *s as usize >= points) {
            return Err("a free slot lies beyond the graph".into());
        }
        let mut levels = vec![0u8; points];
        read(&mut input, &mut levels)?;
        if levels.iter().any(|l| usize::from(*l) > super::MAX_LEVEL) {
            return Err("a node's level is out of range".into());
        }
        let mut states = vec![0u8; points];
        read(&mut input, &mut states)?;
        if states.iter().any(|s| *s > super::HOLE) {
            return Err("a slot's state is out of range".into());
        }
        let free_states = free
            .iter()
            .filter(|s| states[**s as usize] != super::LIVE)
            .count();
        let not_live = states.iter().filter(|s| **s != super::LIVE).count();
        if free_states != free.len() || not_live != free.len() {
            return Err("the free slots and the deleted slots differ".into());
        }
        read(
            &mut input,
            bytemuck::cast_slice_mut(&mut graph.vectors.as_mut_slice()[..points * dim]),
        )?;
        let stride0 = 1 + 2 * m as usize;
        let mut level0 = vec![0u32; points * stride0];
        read(&mut input, bytemuck::cast_slice_mut(&mut level0))?;
        let upper_len: usize = levels
            .iter()
            .map(|l| usize::from(*l) * (1 + m as usize))
            .sum();
        let mut upper = vec![0u32; upper_len];
        read(&mut input, bytemuck::cast_slice_mut(&mut upper))?;
        let mut rest = [0u8; 1];
        if input.read(&mut rest).map_err(|e| e.to_string())? != 0 {
            return Err("trailing bytes after the graph".into());
        }
        check_links(&graph.links, &level0, &upper, &levels, points)?;
        let mut at = 0;
        for slot in 0..points {
            let level = usize::from(levels[slot]);
            let words = level * (1 + m as usize);
            graph.links.load_node(
                slot,
                level,
                &level0[slot * stride0..(slot + 1) * stride0],
                &upper[at..at + words],
            );
            at += words;
            graph.state[slot].store(states[slot], Ordering::Relaxed);
        }
        if entry != u64::MAX {
            let (slot, level) = (entry as u32 as usize, (entry >> 32) as usize);
            if slot >= points || level != usize::from(levels[slot]) {
                return Err("the entry point is not a node of the graph".into());
            }
        } else if points > free.len() {
            return Err("nodes but no entry point".into());
        }
        graph.entry.store(entry, Ordering::Release);
        graph.len.store(points, Ordering::Release);
        let tombstones = states.iter().filter(|s| **s == super::DELETED).count();
        graph.tombstones.store(tombstones, Ordering::Release);
        graph.free.replace(free);
        Ok(graph)
    }
}

/// Every count within its slot and every neighbour an existing node, so that a damaged file
/// that passed its checksum still cannot make a search index out of bounds.
fn check_links(
    links: &Links,
    level0: &[u32],
    upper: &[u32],
    levels: &[u8],
    points: usize,
) -> Result<(), String> {
    let check = |list: &[u32], max: usize| -> Result<(), String> {
        let count = list[0] as usize;
        if count > max || list[1..=count].iter().any(|n| *n as usize >= points) {
            return Err("a neighbour list is out of range".into());
        }
        Ok(())
    };
    for list in level0.chunks_exact(1 + links.m0) {
        check(list, links.m0)?;
    }
    let stride = 1 + links.m;
    let mut at = 0;
    for level in levels {
        for layer in 1..=usize::from(*level) {
            let list = &upper[at..at + stride];
            check(list, links.m)?;
            let count = list[0] as usize;
            if list[1..=count]
                .iter()
                .any(|n| usize::from(levels[*n as usize]) < layer)
            {
                return Err("an upper-layer link names a node below that layer".into());
            }
            at += stride;
        }
    }
    Ok(())
}

fn read(input: &mut impl Read, buf: &mut [u8]) -> Result<(), String> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => "ends early (truncated?)".to_string(),
        _ => e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::Clustered;

    fn graph() -> ShelfGraph {
        let rows = Clustered::new(16, 8, 0.6, 1).take(600);
        let graph = ShelfGraph::build(
            16,
            8,
            40,
            700,
            600,
            rows.iter().enumerate().map(|(i, r)| (i as u32, &r[..])),
        );
        for slot in (0..600).step_by(7) {
            graph.delete(slot);
        }
        graph
    }

    #[test]
    fn a_graph_reads_back_exactly_without_relinking() {
        let graph = graph();
        let mut bytes = Vec::new();
        graph.write_to(&mut bytes).unwrap();
        let back = ShelfGraph::read_from(&bytes[..], 16, 0).unwrap();
        assert_eq!(back.points(), graph.points());
        assert_eq!(back.tombstones(), graph.tombstones());
        assert_eq!(back.free.to_vec(), graph.free.to_vec());
        assert_eq!(
            back.entry.load(Ordering::Relaxed),
            graph.entry.load(Ordering::Relaxed)
        );
        let words = |g: &ShelfGraph| -> Vec<u32> {
            let mut all: Vec<u32> = g.links.level0_words(g.points()).collect();
            for slot in 0..g.points() {
                all.extend(g.links.upper_words(slot));
            }
            all
        };
        assert_eq!(words(&back), words(&graph));
        for slot in 0..600u32 {
            assert_eq!(back.vector(slot), graph.vector(slot));
            assert_eq!(back.is_deleted(slot), graph.is_deleted(slot));
        }
        let q = graph.vector(3);
        assert_eq!(
            back.search(&q, 10, 32, None),
            graph.search(&q, 10, 32, None)
        );
        // Written again, the bytes are the same.
        let mut again = Vec::new();
        back.write_to(&mut again).unwrap();
        assert_eq!(again, bytes);
    }

    #[test]
    fn damage_is_reported_not_loaded() {
        let mut bytes = Vec::new();
        graph().write_to(&mut bytes).unwrap();
        let err = |b: &[u8], dim: usize| ShelfGraph::read_from(b, dim, 0).unwrap_err();
        assert!(err(&bytes[..bytes.len() - 3], 16).contains("truncated"));
        assert!(err(&bytes, 8).contains("16-d"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(err(&longer, 16).contains("trailing"));
        // A neighbour id beyond the graph, in the first layer-0 list: header (48 bytes),
        // free slots, levels, states, vectors, then the lists.
        let free = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
        let level0_at = 48 + 4 * free + 600 + 600 + 600 * 16 * 4;
        let count = u32::from_le_bytes(bytes[level0_at..level0_at + 4].try_into().unwrap());
        assert!(
            (1..=16).contains(&count),
            "layer-0 list of slot 0 at {level0_at}"
        );
        let mut bad = bytes.clone();
        bad[level0_at + 4..level0_at + 8].copy_from_slice(&9999u32.to_le_bytes());
        assert!(err(&bad, 16).contains("out of range"));
    }
}
