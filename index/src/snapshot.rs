//! Snapshots: the graph (hnsw_rs dump), the catalog (ids, slots, attributes, vectors) and a
//! manifest with the format version, the stream position and a checksum per file. Written
//! into a temporary sibling directory, fsynced, then renamed into place.

use crate::catalog::{Catalog, Entry, Slot};
use crate::graph::Graph;
use crate::{HnswIndex, IndexConfig, SnapshotError};
use hnsw_rs::prelude::{AnnT, DistDot, HnswIo};
use serde::{Deserialize, Serialize};
use shelf_types::{ItemAttributes, ItemId};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Version of the snapshot layout this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const CATALOG: &str = "catalog.bin";
const GRAPH_BASENAME: &str = "graph";
const CATALOG_MAGIC: &[u8; 8] = b"SHELFCAT";

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub format_version: u32,
    pub dim: usize,
    /// Position in the update stream that the snapshot reflects (given by the caller).
    pub position: u64,
    pub live: usize,
    pub graph_points: usize,
    pub next_slot: Slot,
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

        let graph = Arc::clone(&self.inner.graph.read());
        let catalog = self.inner.catalog.read();
        write_catalog(&tmp.join(CATALOG), &catalog, self.inner.config.dim)?;
        graph
            .hnsw()
            .file_dump(&tmp, GRAPH_BASENAME)
            .map_err(|e| SnapshotError::Io {
                path: tmp.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;

        let mut files = Vec::new();
        for name in [
            CATALOG.to_string(),
            format!("{GRAPH_BASENAME}.hnsw.graph"),
            format!("{GRAPH_BASENAME}.hnsw.data"),
        ] {
            let path = tmp.join(&name);
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(SnapshotError::io(&path))?;
            let (bytes, fnv64) = checksum(&path)?;
            files.push(FileSum { name, bytes, fnv64 });
        }
        let info = SnapshotInfo {
            format_version: SNAPSHOT_FORMAT_VERSION,
            dim: self.inner.config.dim,
            position,
            live: catalog.len(),
            graph_points: graph.points(),
            next_slot: catalog.next_slot(),
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
    /// Every file is checked against the manifest before anything is loaded.
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
        let info: SnapshotInfo = serde_json::from_slice(&raw)
            .map_err(|e| SnapshotError::corrupt(&manifest, e.to_string()))?;
        if info.format_version != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::WrongVersion {
                path: manifest,
                found: info.format_version,
                expected: SNAPSHOT_FORMAT_VERSION,
            });
        }
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
        let mut catalog = read_catalog(&dir.join(CATALOG), config.dim)?;
        catalog.reserve_slots_below(info.next_slot);
        let graph = load_graph(&dir)?;
        if graph.points() != info.graph_points {
            return Err(SnapshotError::corrupt(
                dir.join(format!("{GRAPH_BASENAME}.hnsw.graph")),
                format!(
                    "{} points, the manifest says {}",
                    graph.points(),
                    info.graph_points
                ),
            ));
        }
        Ok((Self::from_parts(config, catalog, graph), info))
    }
}

fn load_graph(dir: &Path) -> Result<Graph, SnapshotError> {
    // hnsw_rs ties a loaded graph's lifetime to its loader and asserts on malformed input.
    // The loader holds two paths and no vector data (mmap is off), so it is leaked to give
    // the graph a 'static lifetime; restores happen once per process start.
    let loaded = std::panic::catch_unwind(|| {
        let loader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, GRAPH_BASENAME)));
        loader.load_hnsw::<f32, DistDot>()
    });
    let path = dir.join(format!("{GRAPH_BASENAME}.hnsw.graph"));
    match loaded {
        Ok(Ok(hnsw)) => Ok(Graph::from_loaded(hnsw)),
        Ok(Err(e)) => Err(SnapshotError::corrupt(path, e.to_string())),
        Err(_) => Err(SnapshotError::corrupt(
            path,
            "hnsw_rs rejected the graph file",
        )),
    }
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
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(SnapshotError::io(path))?;
        if n == 0 {
            break;
        }
        for b in &buf[..n] {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        bytes += n as u64;
    }
    Ok((bytes, format!("{hash:016x}")))
}

fn write_catalog(path: &Path, catalog: &Catalog, dim: usize) -> Result<(), SnapshotError> {
    let file = File::create(path).map_err(SnapshotError::io(path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut put = |bytes: &[u8]| w.write_all(bytes);
    let result = (|| {
        put(CATALOG_MAGIC)?;
        put(&(dim as u32).to_le_bytes())?;
        put(&(catalog.len() as u64).to_le_bytes())?;
        for (slot, entry) in catalog.entries_from(0) {
            put(&(slot as u64).to_le_bytes())?;
            put_str(&mut put, entry.id.as_str())?;
            let a = &entry.attrs;
            let flags = u8::from(a.category.is_some())
                | u8::from(a.price.is_some()) << 1
                | u8::from(a.in_stock.is_some()) << 2
                | u8::from(a.in_stock == Some(true)) << 3;
            put(&[flags])?;
            if let Some(category) = &a.category {
                put_str(&mut put, category)?;
            }
            if let Some(price) = a.price {
                put(&price.to_le_bytes())?;
            }
            for v in entry.vector.iter() {
                put(&v.to_le_bytes())?;
            }
        }
        Ok(())
    })();
    result
        .and_then(|_| w.flush())
        .map_err(SnapshotError::io(path))
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
        let slot = r.u64()? as Slot;
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
        let vector: Vec<f32> = (0..dim)
            .map(|_| r.array().map(f32::from_le_bytes))
            .collect::<Result<_, _>>()?;
        let attrs = ItemAttributes {
            category,
            price,
            in_stock,
        };
        catalog.insert_at(
            slot,
            Entry {
                id,
                vector: Arc::from(vector),
                attrs,
            },
        );
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
