//! shelf-store: the durable state of shelf in RocksDB — items, item vectors, tombstones,
//! profiles, item stats, co-visitations, trending lists, impressions, dead letters and
//! consumer offsets — and the profile, item-stat and behaviour math. Every change goes through a [`StoreBatch`], written atomically with
//! the source offset it reflects (exactly-once effect).

mod batch;
mod behaviour;
mod codec;
mod keys;
mod profile;
mod stats;
mod upkeep;

pub use batch::StoreBatch;
pub use behaviour::{covisit_pairs, BehaviourConfig, Pair, TopList, TRENDING_OVERALL};
pub use codec::{text_hash, StoredVector};
pub use keys::KEY_VERSION;
pub use profile::{DecayConfig, ItemFacts, KindCounts, KindWeights, Profile, RecentItem};
pub use stats::{Counter, ItemStats, ItemWindow};
pub use upkeep::DumpError;

/// One re-rank candidate as stored: see [`Store::candidates`].
#[derive(Clone, Debug)]
pub struct Candidate {
    pub item: Item,
    pub stats: Option<ItemStats>,
}

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};
use serde::{Deserialize, Serialize};
use shelf_types::Item;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const ITEMS: &str = "items";
const ITEM_VECTORS: &str = "item_vectors";
const TOMBSTONES: &str = "tombstones";
const PROFILES: &str = "profiles";
const ITEM_STATS: &str = "item_stats";
const ITEM_WINDOWS: &str = "item_windows";
const IMPRESSIONS: &str = "impressions";
const USER_REQUESTS: &str = "user_requests";
const OFFSETS: &str = "offsets";
const DEAD_LETTERS: &str = "dead_letters";
const COVISITS: &str = "covisits";
/// Deletions per write batch when expiring impressions.
const EXPIRY_BATCH: usize = 10_000;
const TRENDING: &str = "trending";
const COLUMN_FAMILIES: [&str; 12] = [
    ITEMS,
    ITEM_VECTORS,
    TOMBSTONES,
    PROFILES,
    ITEM_STATS,
    ITEM_WINDOWS,
    IMPRESSIONS,
    USER_REQUESTS,
    OFFSETS,
    DEAD_LETTERS,
    COVISITS,
    TRENDING,
];

/// The name `consumer`'s offset in `partition` is stored under: the consumer's own name for
/// partition 0 (the embedded log's only one), `consumer/p{partition}` for the others.
pub fn partition_consumer(consumer: &str, partition: u32) -> std::borrow::Cow<'_, str> {
    if partition == 0 {
        std::borrow::Cow::Borrowed(consumer)
    } else {
        std::borrow::Cow::Owned(format!("{consumer}/p{partition}"))
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("RocksDB at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("no store at {0} (run `shelf process` first)")]
    Missing(PathBuf),
    #[error("RocksDB: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("stored {what} cannot be decoded: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

/// How writes reach the disk.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// fsync the write-ahead log on every batch (survives power loss, not only a crash).
    pub sync: bool,
    /// Memory all column families' memtables may hold together before RocksDB flushes
    /// them (without it each of the 12 families could hold two 64 MiB memtables).
    pub memtable_budget_bytes: usize,
    /// One block cache shared by every column family (RocksDB's default gives each its own).
    pub block_cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            sync: true,
            memtable_budget_bytes: 128 << 20,
            block_cache_bytes: 64 << 20,
        }
    }
}

/// A record that could not be applied, kept with the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub consumer: String,
    /// Partition of the source (0 for the embedded log; letters written before partitions
    /// were recorded read as 0).
    #[serde(default)]
    pub partition: u32,
    pub offset: u64,
    pub reason: String,
    /// The record as received (lossy UTF-8).
    pub payload: String,
}

/// One search response, kept so that clicks carrying its request id become training data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Impression {
    pub request_id: String,
    pub user_id: Option<String>,
    pub ts_ms: i64,
    pub query: Option<String>,
    /// Shown items in order, each with the feature values it was ranked with.
    pub items: Vec<ImpressionItem>,
    /// The A/B test arm that served the response, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<ArmTag>,
}

/// Which experiment, and which of its arms, served a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmTag {
    /// The experiment's id (`{placement}-{start in unix ms}`).
    pub experiment: String,
    pub arm: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImpressionItem {
    pub item_id: String,
    pub position: u32,
    pub features: Vec<f32>,
    /// Set when a click carrying the impression's request id arrives (the training label).
    #[serde(default)]
    pub clicked: bool,
    /// Set when an add-to-cart carrying the impression's request id arrives.
    #[serde(default)]
    pub carted: bool,
    /// Set when a purchase carrying the impression's request id arrives.
    #[serde(default)]
    pub purchased: bool,
}

/// A raw key and value read from RocksDB.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The RocksDB store.
pub struct Store {
    db: DB,
    write_options: WriteOptions,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Bounded memory: one memtable budget and one block cache for all families.
        db_options.set_db_write_buffer_size(options.memtable_budget_bytes);
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_bytes);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // Point reads (a search reads each candidate's item and stats) skip the files that
        // cannot hold the key: a full bloom filter of 10 bits per key (~1% false positives),
        // and a hash index inside each data block instead of its binary search.
        table.set_bloom_filter(10.0, false);
        table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
        let cfs = COLUMN_FAMILIES.iter().map(|name| {
            let mut cf = Options::default();
            cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            cf.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(*name, cf)
        });
        let db =
            DB::open_cf_descriptors(&db_options, path, cfs).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync);
        Ok(Self {
            db,
            write_options,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing store for reading only; works while another process writes it
    /// (it sees the state as of opening).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        if !path.join("CURRENT").exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        // A store written by an older build lacks the newer column families: open those
        // that exist (reads of the others find nothing).
        let existing =
            DB::list_cf(&Options::default(), path).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let present = COLUMN_FAMILIES
            .iter()
            .filter(|cf| existing.iter().any(|e| e == *cf));
        let db = DB::open_cf_for_read_only(&Options::default(), path, present, false).map_err(
            |source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            },
        )?;
        Ok(Self {
            db,
            write_options: WriteOptions::default(),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    fn get_raw(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // Absent only in a read-only view of a store from an older build.
        let Some(handle) = self.db.cf_handle(cf) else {
            return Ok(None);
        };
        Ok(self.db.get_cf(handle, key)?)
    }

    /// A new batch of changes; nothing is visible until [`Store::commit`].
    pub fn batch(&self) -> StoreBatch<'_> {
        StoreBatch {
            store: self,
            batch: WriteBatch::default(),
        }
    }

    /// Writes a batch atomically.
    pub fn commit(&self, batch: StoreBatch<'_>) -> Result<(), StoreError> {
        self.db.write_opt(batch.batch, &self.write_options)?;
        Ok(())
    }

    pub fn item(&self, id: &str) -> Result<Option<Item>, StoreError> {
        self.get_raw(ITEMS, &keys::id_key(id))?
            .map(|v| codec::decode(&v, "item"))
            .transpose()
    }

    pub fn vector(&self, id: &str) -> Result<Option<StoredVector>, StoreError> {
        self.get_raw(ITEM_VECTORS, &keys::id_key(id))?
            .map(|v| codec::decode_vector(&v))
            .transpose()
    }

    /// What the re-ranker reads of each candidate (the item and its stats; the vector comes
    /// from the index), for all of them at once: one batched multi-get per column family
    /// instead of two point reads per candidate. `None` where the item is missing (deleted
    /// since the index answered).
    pub fn candidates(&self, ids: &[&str]) -> Result<Vec<Option<Candidate>>, StoreError> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| keys::id_key(id)).collect();
        // Values are decoded straight from RocksDB's pinned blocks, without a copy each.
        let read = |cf: &str| {
            let handle = self.db.cf_handle(cf);
            handle.map(|h| self.db.batched_multi_get_cf(h, &keys, false))
        };
        let items = read(ITEMS);
        let stats = read(ITEM_STATS);
        let Some(items) = items else {
            return Ok(ids.iter().map(|_| None).collect());
        };
        let mut stats = stats.map(Vec::into_iter);
        items
            .into_iter()
            .map(|item| {
                let stats = stats.as_mut().and_then(Iterator::next).transpose()?;
                let Some(item) = item? else {
                    return Ok(None);
                };
                Ok(Some(Candidate {
                    item: codec::decode(&item, "item")?,
                    stats: stats
                        .flatten()
                        .map(|s| codec::decode(&s, "item stats"))
                        .transpose()?,
                }))
            })
            .collect()
    }

    /// The item-log offset at which `id` was deleted, if it was and has not come back.
    pub fn tombstone(&self, id: &str) -> Result<Option<u64>, StoreError> {
        self.get_raw(TOMBSTONES, &keys::id_key(id))?
            .map(|v| codec::decode(&v, "tombstone"))
            .transpose()
    }

    pub fn profile(&self, user_id: &str) -> Result<Option<Profile>, StoreError> {
        self.get_raw(PROFILES, &keys::id_key(user_id))?
            .map(|v| codec::decode(&v, "profile"))
            .transpose()
    }

    pub fn item_stats(&self, id: &str) -> Result<Option<ItemStats>, StoreError> {
        self.get_raw(ITEM_STATS, &keys::id_key(id))?
            .map(|v| codec::decode(&v, "item stats"))
            .transpose()
    }

    /// The items most co-visited with `id`, strongest first.
    pub fn covisits(&self, id: &str) -> Result<Option<TopList>, StoreError> {
        self.get_raw(COVISITS, &keys::id_key(id))?
            .map(|v| codec::decode_top_list(&v, "co-visits"))
            .transpose()
    }

    /// The trending items of `scope` (a category path, or [`TRENDING_OVERALL`]).
    pub fn trending(&self, scope: &str) -> Result<Option<TopList>, StoreError> {
        self.get_raw(TRENDING, &keys::id_key(scope))?
            .map(|v| codec::decode_top_list(&v, "trending list"))
            .transpose()
    }

    /// The newest activity window of an item (from `shelf-item-stats`).
    pub fn item_window(&self, id: &str) -> Result<Option<ItemWindow>, StoreError> {
        self.get_raw(ITEM_WINDOWS, &keys::id_key(id))?
            .map(|v| codec::decode(&v, "item window"))
            .transpose()
    }

    pub fn impression(&self, request_id: &str) -> Result<Option<Impression>, StoreError> {
        self.get_raw(IMPRESSIONS, &keys::id_key(request_id))?
            .map(|v| codec::decode(&v, "impression"))
            .transpose()
    }

    /// The next offset `consumer` has to read (0 when it never committed).
    pub fn offset(&self, consumer: &str) -> Result<u64, StoreError> {
        Ok(self
            .get_raw(OFFSETS, &keys::id_key(consumer))?
            .map(|v| codec::decode(&v, "offset"))
            .transpose()?
            .unwrap_or(0))
    }

    /// The next offset `consumer` has to read in `partition` (0 when it never committed).
    pub fn partition_offset(&self, consumer: &str, partition: u32) -> Result<u64, StoreError> {
        self.offset(&partition_consumer(consumer, partition))
    }

    /// How many dead letters `consumer` has written.
    pub fn dead_letter_count(&self, consumer: &str) -> Result<u64, StoreError> {
        let key = keys::id_key(&format!("dead-letters:{consumer}"));
        Ok(self
            .get_raw(OFFSETS, &key)?
            .map(|v| codec::decode(&v, "count"))
            .transpose()?
            .unwrap_or(0))
    }

    /// Dead letters of `consumer` in offset order.
    pub fn dead_letters(&self, consumer: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.scan_prefix(DEAD_LETTERS, &keys::prefix_key(consumer))?
            .into_iter()
            .map(|(_, v)| codec::decode(&v, "dead letter"))
            .collect()
    }

    fn scan_prefix(&self, cf: &str, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        for entry in self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = entry?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    /// Calls `f` with every item that has a vector, in key order (to build the index).
    pub fn for_each_item_vector(
        &self,
        mut f: impl FnMut(Item, StoredVector),
    ) -> Result<(), StoreError> {
        for entry in self
            .db
            .iterator_cf(self.cf(ITEM_VECTORS), IteratorMode::Start)
        {
            let (k, v) = entry?;
            let Some(id) = keys::decode_id(&k) else {
                continue;
            };
            if let Some(item) = self.item(id)? {
                f(item, codec::decode_vector(&v)?);
            }
        }
        Ok(())
    }

    /// Calls `f` with every impression, oldest first (request ids sort by time).
    pub fn for_each_impression(&self, f: impl FnMut(Impression)) -> Result<(), StoreError> {
        self.for_each_impression_from("", f)
    }

    /// Calls `f` with every impression whose request id sorts at or after `start` (request
    /// ids begin with their time, so a time's floor starts the scan there), oldest first.
    pub fn for_each_impression_from(
        &self,
        start: &str,
        mut f: impl FnMut(Impression),
    ) -> Result<(), StoreError> {
        let start = keys::id_key(start);
        let mode = IteratorMode::From(&start, rocksdb::Direction::Forward);
        for entry in self.db.iterator_cf(self.cf(IMPRESSIONS), mode) {
            let (_, v) = entry?;
            f(codec::decode(&v, "impression")?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_read_in_order_with_missing_ones_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let item = |id: &str| -> Item {
            serde_json::from_value(serde_json::json!({ "id": id, "title": format!("title {id}") }))
                .unwrap()
        };
        let vector = |x: f32| StoredVector {
            model_id: "m".into(),
            text_hash: 1,
            vector: vec![x, 1.0 - x],
        };
        let mut batch = store.batch();
        batch.put_item(&item("a"), &vector(0.25));
        batch.put_item(&item("b"), &vector(0.5));
        batch.put_item(&item("c"), &vector(0.75));
        batch.put_item_stats(&ItemStats {
            item_id: "b".into(),
            last_ts_ms: 5,
            impressions: 10.0,
            views: 3.0,
            clicks: 2.0,
            carts: 0.0,
            purchases: 1.0,
        });
        batch.delete_item("c", 9);
        store.commit(batch).unwrap();

        let rows = store.candidates(&["b", "missing", "a", "c"]).unwrap();
        assert_eq!(rows.len(), 4);
        let b = rows[0].as_ref().unwrap();
        assert_eq!(b.item, item("b"));
        assert_eq!(b.stats.as_ref().unwrap().clicks, 2.0);
        assert!(rows[1].is_none(), "never stored");
        let a = rows[2].as_ref().unwrap();
        assert_eq!(a.item, item("a"));
        assert!(a.stats.is_none());
        assert!(rows[3].is_none(), "deleted");
        // The same as the point reads it replaces.
        assert_eq!(Some(b.item.clone()), store.item("b").unwrap());
        assert_eq!(b.stats, store.item_stats("b").unwrap());
        assert!(store.candidates(&[]).unwrap().is_empty());
    }

    #[test]
    fn expiry_removes_old_impressions_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions {
                sync: false,
                ..Default::default()
            },
        )
        .unwrap();
        let n = 2 * EXPIRY_BATCH + 7;
        let mut batch = store.batch();
        for i in 0..n + 10 {
            batch.put_impression(&Impression {
                request_id: format!("{i:012x}-0"),
                user_id: Some(format!("u{}", i % 3)),
                ts_ms: i as i64,
                query: None,
                items: Vec::new(),
                arm: None,
            });
        }
        store.commit(batch).unwrap();
        let cutoff = format!("{n:012x}-");
        assert_eq!(store.expire_impressions(&cutoff).unwrap(), n);
        let mut left = 0;
        store.for_each_impression(|_| left += 1).unwrap();
        assert_eq!(left, 10);
        assert!(store
            .impression(&format!("{:012x}-0", n - 1))
            .unwrap()
            .is_none());
        assert!(store.impression(&format!("{n:012x}-0")).unwrap().is_some());
    }

    #[test]
    fn pruning_keeps_the_newest_dead_letters_of_each_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let mut batch = store.batch();
        let mut total = 0;
        for (partition, n) in [(0u32, 10u64), (1, 3)] {
            for offset in 0..n {
                total += 1;
                let letter = DeadLetter {
                    consumer: "events".into(),
                    partition,
                    offset,
                    reason: "bad".into(),
                    payload: "{}".into(),
                };
                batch.put_dead_letter(&letter, total);
            }
        }
        // Another consumer whose name extends this one's must not be touched.
        let other = DeadLetter {
            consumer: "events2".into(),
            partition: 0,
            offset: 0,
            reason: "bad".into(),
            payload: "{}".into(),
        };
        batch.put_dead_letter(&other, 1);
        store.commit(batch).unwrap();
        assert_eq!(store.prune_dead_letters("events", 5).unwrap(), 5);
        let left: Vec<(u32, u64)> = store
            .dead_letters("events")
            .unwrap()
            .iter()
            .map(|l| (l.partition, l.offset))
            .collect();
        assert_eq!(
            left,
            vec![
                (0, 5),
                (0, 6),
                (0, 7),
                (0, 8),
                (0, 9),
                (1, 0),
                (1, 1),
                (1, 2)
            ]
        );
        assert_eq!(
            store.dead_letter_count("events").unwrap(),
            13,
            "the count is of all ever"
        );
        assert_eq!(store.dead_letters("events2").unwrap().len(), 1);
    }

    #[test]
    fn dead_letters_of_partitions_sharing_an_offset_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let mut batch = store.batch();
        for (total, partition) in (1..).zip([0u32, 1, 2]) {
            let letter = DeadLetter {
                consumer: "events".into(),
                partition,
                offset: 7,
                reason: format!("bad record in partition {partition}"),
                payload: "{}".into(),
            };
            batch.put_dead_letter(&letter, total);
        }
        store.commit(batch).unwrap();
        let letters = store.dead_letters("events").unwrap();
        assert_eq!(
            letters
                .iter()
                .map(|l| (l.partition, l.offset))
                .collect::<Vec<_>>(),
            vec![(0, 7), (1, 7), (2, 7)]
        );
        assert_eq!(store.dead_letter_count("events").unwrap(), 3);
    }
}
