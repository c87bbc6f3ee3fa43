//! Snapshots: the graph as its flat buffers (shelf's graph: `graph.bin`) or the live
//! vectors (hnsw_rs: `vectors.bin`, rebuilt on restore), the catalog (slots, ids,
//! attributes) and a manifest with the format version, the backend, the stream position
//! and a checksum per file. Written into a temporary sibling directory, fsynced, then
//! renamed into place.

use crate::backend::{Backend, Graph};
use crate::catalog::{Catalog, Slot};
use crate::graph::{ShelfGraph, GRAPH_FILE};
use crate::{HnswIndex, IndexConfig, SnapshotError};
use serde::{Deserialize, Serialize};
use shelf_types::{ItemAttributes, ItemId};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Version of the snapshot layout this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 3;
const MANIFEST: &str = "manifest.json";
const CATALOG: &str = "catalog.bin";
const VECTORS: &str = "vectors.bin";
/// Format 3 added brand, tags and attribute pairs; an older snapshot is refused (and the
/// index rebuilt from the store) since its items would miss filters on those fields.
const CATALOG_MAGIC: &[u8; 8] = b"SHELFCA3";
const VECTORS_MAGIC: &[u8; 8] = b"SHELFVEC";

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub format_version: u32,
    /// The graph backend that wrote it (`shelf` or `hnsw_rs`).
    pub backend: Backend,
    pub dim: usize,
    /// Position in the update stream that the snapshot reflects (given by the caller).
    pub position: u64,
    pub live: usize,
    pub graph_points: usize,
    files: Vec<FileSum>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct FileSum {
    name: String,
    bytes: u64,
    fnv64: String,
}

impl HnswIndex {
    /// Writes a snapshot reflecting stream `position` to `dir`, replacing any previous one.
    /// Searches go on meanwhile; writes wait until it is done.
    pub fn snapshot(&self, dir: &Path, position: u64) -> Result<SnapshotInfo, SnapshotError> {
        let _writer = self.inner.writer.lock();
        let tmp = sibling(dir, "tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(SnapshotError::io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(SnapshotError::io(&tmp))?;

        let graph = std::sync::Arc::clone(&self.inner.graph.read());
        let catalog = self.inner.catalog.read();
        let dim = self.inner.config.dim;
        write_catalog(&tmp.join(CATALOG), &catalog, dim)?;
        let graph_file = match &*graph {
            Graph::Shelf(g) => {
                let path = tmp.join(GRAPH_FILE);
                let file = File::create(&path).map_err(SnapshotError::io(&path))?;
                g.write_to(file).map_err(SnapshotError::io(&path))?;
                GRAPH_FILE
            }
            Graph::HnswRs(_) => {
                write_vectors(&tmp.join(VECTORS), &catalog, &graph, dim)?;
                VECTORS
            }
        };
        let mut files = Vec::new();
        for name in [CATALOG, graph_file] {
            let path = tmp.join(name);
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(SnapshotError::io(&path))?;
            let (bytes, fnv64) = checksum(&path)?;
            files.push(FileSum {
                name: name.to_string(),
                bytes,
                fnv64,
            });
        }
        let info = SnapshotInfo {
            format_version: SNAPSHOT_FORMAT_VERSION,
            backend: graph.backend(),
            dim,
            position,
            live: catalog.len(),
            graph_points: graph.points(),
            files,
        };
        drop(catalog);
        let manifest = tmp.join(MANIFEST);
        let json = serde_json::to_vec_pretty(&info).expect("manifest serialises");
        write_synced(&manifest, &json)?;
        sync_dir(&tmp)?;

        // Swap in: the old snapshot stays readable under `.old` until the new one is in place.
        let old = sibling(dir, "old");
        if dir.exists() {
            if old.exists() {
                fs::remove_dir_all(&old).map_err(SnapshotError::io(&old))?;
            }
            fs::rename(dir, &old).map_err(SnapshotError::io(dir))?;
        }
        fs::rename(&tmp, dir).map_err(SnapshotError::io(dir))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        if old.exists() {
            fs::remove_dir_all(&old).map_err(SnapshotError::io(&old))?;
        }
        Ok(info)
    }

    /// Restores an index from the snapshot in `dir` (or the `.old` one a crash mid-swap left).
    /// Every file is checked against the manifest before anything is loaded. A snapshot of
    /// shelf's graph loads its buffers as they are; one written by (or restored into) the
    /// other backend is rebuilt from the vectors it holds.
    pub fn restore(dir: &Path, config: IndexConfig) -> Result<(Self, SnapshotInfo), SnapshotError> {
        config.validate()?;
        let dir = if dir.join(MANIFEST).exists() {
            dir.to_path_buf()
        } else {
            sibling(dir, "old")
        };
        let manifest = dir.join(MANIFEST);
        if !manifest.exists() {
            return Err(SnapshotError::Missing(dir));
        }
        let raw = fs::read(&manifest).map_err(SnapshotError::io(&manifest))?;
        let version: VersionOnly = serde_json::from_slice(&raw)
            .map_err(|e| SnapshotError::corrupt(&manifest, e.to_string()))?;
        if version.format_version != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::WrongVersion {
                path: manifest,
                found: version.format_version,
                expected: SNAPSHOT_FORMAT_VERSION,
            });
        }
        let info: SnapshotInfo = serde_json::from_slice(&raw)
            .map_err(|e| SnapshotError::corrupt(&manifest, e.to_string()))?;
        if info.dim != config.dim {
            return Err(SnapshotError::WrongDimension {
                path: manifest,
                found: info.dim,
                expected: config.dim,
            });
        }
        for file in &info.files {
            let path = dir.join(&file.name);
            if !path.exists() {
                return Err(SnapshotError::corrupt(
                    &path,
                    "file listed in the manifest is missing",
                ));
            }
            let (bytes, fnv64) = checksum(&path)?;
            if bytes != file.bytes {
                return Err(SnapshotError::corrupt(
                    &path,
                    format!(
                        "{bytes} bytes, the manifest says {} (truncated?)",
                        file.bytes
                    ),
                ));
            }
            if fnv64 != file.fnv64 {
                return Err(SnapshotError::corrupt(
                    &path,
                    "checksum does not match the manifest",
                ));
            }
        }
        let catalog = read_catalog(&dir.join(CATALOG), config.dim)?;
        let capacity = config.capacity_for(info.graph_points);
        let graph = match info.backend {
            Backend::Shelf => {
                let path = dir.join(GRAPH_FILE);
                let file = File::open(&path).map_err(SnapshotError::io(&path))?;
                let shelf = ShelfGraph::read_from(
                    BufReader::with_capacity(1 << 20, file),
                    config.dim,
                    capacity,
                )
                .map_err(|reason| SnapshotError::corrupt(&path, reason))?;
                if let Some(slot) = catalog.slots().find(|s| shelf.is_deleted(*s)) {
                    return Err(SnapshotError::corrupt(
                        &path,
                        format!("the catalog's slot {slot} is not a live node of the graph"),
                    ));
                }
                if shelf.points() - shelf.free_slots() != catalog.len() {
                    return Err(SnapshotError::corrupt(
                        &path,
                        format!(
                            "{} live nodes, the catalog has {} items",
                            shelf.points() - shelf.free_slots(),
                            catalog.len()
                        ),
                    ));
                }
                match config.backend {
                    Backend::Shelf => Graph::Shelf(shelf),
                    Backend::HnswRs => Graph::build(
                        &config,
                        capacity,
                        shelf.points(),
                        catalog.slots().map(|s| (s, shelf.vector(s))),
                    ),
                }
            }
            Backend::HnswRs => {
                let path = dir.join(VECTORS);
                let rows = read_vectors(&path, config.dim)?;
                if rows.len() != catalog.len() || rows.iter().any(|(s, _)| !catalog.is_live(*s)) {
                    return Err(SnapshotError::corrupt(
                        &path,
                        "its slots differ from the catalog's",
                    ));
                }
                Graph::build(&config, capacity, info.graph_points, rows)
            }
        };
        if graph.points() != info.graph_points {
            return Err(SnapshotError::corrupt(
                dir.join(MANIFEST),
                format!(
                    "graph has {} points, the manifest says {}",
                    graph.points(),
                    info.graph_points
                ),
            ));
        }
        Ok((Self::from_parts(config, catalog, graph), info))
    }
}

/// The field every manifest version has, read first so that a future layout is reported
/// as a version mismatch rather than as damage.
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u32,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    dir.with_file_name(format!("{name}.{suffix}"))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let mut file = File::create(path).map_err(SnapshotError::io(path))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(SnapshotError::io(path))
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SnapshotError::io(dir))
}

/// Size and FNV-1a 64 of a file.
fn checksum(path: &Path) -> Result<(u64, String), SnapshotError> {
    let mut reader =
        BufReader::with_capacity(1 << 20, File::open(path).map_err(SnapshotError::io(path))?);
    let mut hash = shelf_types::hash::Fnv1a::default();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(SnapshotError::io(path))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, format!("{:016x}", hash.finish())))
}

fn write_catalog(path: &Path, catalog: &Catalog, dim: usize) -> Result<(), SnapshotError> {
    let file = File::create(path).map_err(SnapshotError::io(path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut put = |bytes: &[u8]| w.write_all(bytes);
    let result = (|| {
        put(CATALOG_MAGIC)?;
        put(&(dim as u32).to_le_bytes())?;
        put(&(catalog.len() as u64).to_le_bytes())?;
        for (slot, entry) in catalog.entries() {
            put(&slot.to_le_bytes())?;
            put_str(&mut put, entry.id.as_str())?;
            let a = &entry.attrs;
            let flags = u8::from(a.category.is_some())
                | u8::from(a.price.is_some()) << 1
                | u8::from(a.in_stock.is_some()) << 2
                | u8::from(a.in_stock == Some(true)) << 3
                | u8::from(a.brand.is_some()) << 4;
            put(&[flags])?;
            if let Some(category) = &a.category {
                put_str(&mut put, category)?;
            }
            if let Some(price) = a.price {
                put(&price.to_le_bytes())?;
            }
            if let Some(brand) = &a.brand {
                put_str(&mut put, brand)?;
            }
            for list in [&a.tags, &a.attributes] {
                put(&(list.len() as u32).to_le_bytes())?;
                for value in list {
                    put_str(&mut put, value)?;
                }
            }
        }
        Ok(())
    })();
    result
        .and_then(|_| w.flush())
        .map_err(SnapshotError::io(path))
}

fn write_vectors(
    path: &Path,
    catalog: &Catalog,
    graph: &Graph,
    dim: usize,
) -> Result<(), SnapshotError> {
    let file = File::create(path).map_err(SnapshotError::io(path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let result = (|| {
        w.write_all(VECTORS_MAGIC)?;
        w.write_all(&(dim as u32).to_le_bytes())?;
        w.write_all(&(catalog.len() as u64).to_le_bytes())?;
        for slot in catalog.slots() {
            let vector = graph
                .vector(slot)
                .ok_or_else(|| std::io::Error::other(format!("slot {slot} has no vector")))?;
            w.write_all(&slot.to_le_bytes())?;
            w.write_all(bytemuck::cast_slice(&vector))?;
        }
        w.flush()
    })();
    result.map_err(SnapshotError::io(path))
}

fn read_vectors(path: &Path, dim: usize) -> Result<Vec<(Slot, Vec<f32>)>, SnapshotError> {
    let bytes = fs::read(path).map_err(SnapshotError::io(path))?;
    let mut r = Cursor {
        bytes: &bytes,
        at: 0,
        path,
    };
    if r.take(8)? != VECTORS_MAGIC {
        return Err(SnapshotError::corrupt(path, "not a shelf vectors file"));
    }
    if r.u32()? as usize != dim {
        return Err(SnapshotError::corrupt(
            path,
            format!("vectors are not {dim}-d"),
        ));
    }
    let count = r.u64()?;
    let mut rows = Vec::new();
    for _ in 0..count {
        let slot = r.u32()?;
        let vector: Vec<f32> = r
            .take(dim * 4)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        rows.push((slot, vector));
    }
    if r.at != bytes.len() {
        return Err(SnapshotError::corrupt(
            path,
            "trailing bytes after the last vector",
        ));
    }
    Ok(rows)
}

fn put_str(put: &mut impl FnMut(&[u8]) -> std::io::Result<()>, s: &str) -> std::io::Result<()> {
    put(&(s.len() as u32).to_le_bytes())?;
    put(s.as_bytes())
}

fn read_catalog(path: &Path, dim: usize) -> Result<Catalog, SnapshotError> {
    let bytes = fs::read(path).map_err(SnapshotError::io(path))?;
    let mut r = Cursor {
        bytes: &bytes,
        at: 0,
        path,
    };
    if r.take(8)? != CATALOG_MAGIC {
        return Err(SnapshotError::corrupt(path, "not a shelf catalog file"));
    }
    let file_dim = r.u32()? as usize;
    if file_dim != dim {
        return Err(SnapshotError::corrupt(
            path,
            format!("vectors have {file_dim} dimensions, expected {dim}"),
        ));
    }
    let count = r.u64()?;
    let mut catalog = Catalog::default();
    for _ in 0..count {
        let slot: Slot = r.u32()?;
        let id = ItemId::from(r.string()?);
        let flags = r.take(1)?[0];
        let category = if flags & 1 != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let price = if flags & 2 != 0 {
            Some(f64::from_le_bytes(r.array()?))
        } else {
            None
        };
        let in_stock = (flags & 4 != 0).then_some(flags & 8 != 0);
        let brand = if flags & 16 != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let len = r.u32()? as usize;
            for _ in 0..len {
                list.push(r.string()?);
            }
        }
        let [tags, attributes] = lists;
        let attrs = ItemAttributes {
            category,
            price,
            in_stock,
            brand,
            tags,
            attributes,
        };
        if catalog.is_live(slot) || catalog.slot_of(&id).is_some() {
            return Err(SnapshotError::corrupt(
                path,
                "a slot or an id appears twice",
            ));
        }
        catalog.insert(&id, slot, attrs);
    }
    if r.at != bytes.len() {
        return Err(SnapshotError::corrupt(
            path,
            "trailing bytes after the last entry",
        ));
    }
    Ok(catalog)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let end =
            end.ok_or_else(|| SnapshotError::corrupt(self.path, "ends in the middle of an entry"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        self.array().map(u64::from_le_bytes)
    }

    fn string(&mut self) -> Result<String, SnapshotError> {
        let len = self.u32()? as usize;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| SnapshotError::corrupt(self.path, "string is not UTF-8"))
    }
}
