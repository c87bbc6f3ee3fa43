//! Upkeep of the store: erasing a user, expiring impressions, pruning dead letters, size
//! estimates, and the sorted dump that crash tests compare.

use super::*;

/// Errors while dumping.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the dump: {0}")]
    Io(#[from] std::io::Error),
}

impl Store {
    /// Deletes the oldest dead letters of `consumer`, keeping the newest `keep` of each
    /// partition (by offset). The total count (`dead_letter_count`) is not changed: it
    /// counts every record ever set aside. Returns how many were deleted.
    pub fn prune_dead_letters(&self, consumer: &str, keep: usize) -> Result<usize, StoreError> {
        let mut by_partition: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        let prefix = keys::prefix_key(consumer);
        for entry in self.db.prefix_iterator_cf(self.cf(DEAD_LETTERS), &prefix) {
            let (key, _) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            // The key is the consumer's prefix, the partition and the offset (big-endian).
            let Some(partition) = key
                .get(prefix.len()..prefix.len() + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
            else {
                continue;
            };
            by_partition
                .entry(partition)
                .or_default()
                .push(key.to_vec());
        }
        let mut batch = self.batch();
        let mut deleted = 0;
        for keys in by_partition.into_values() {
            // Keys of one partition arrive sorted by offset: the oldest first.
            let excess = keys.len().saturating_sub(keep);
            for key in &keys[..excess] {
                batch.batch.delete_cf(self.cf(DEAD_LETTERS), key);
                deleted += 1;
                batch = self.commit_if_full(batch)?;
            }
        }
        self.commit(batch)?;
        Ok(deleted)
    }

    /// Number of keys in a column family (estimate from RocksDB properties).
    pub fn estimate_count(&self, cf: &str) -> u64 {
        self.db
            .property_int_value_cf(self.cf(cf), "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Removes everything held about `user_id`: the profile, impressions of their requests
    /// and the request index. Returns how many records were deleted.
    pub fn delete_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let mut batch = self.batch();
        let mut removed = 0;
        if self.profile(user_id)?.is_some() {
            removed += 1;
        }
        batch
            .batch
            .delete_cf(self.cf(PROFILES), keys::id_key(user_id));
        for (key, _) in self.scan_prefix(USER_REQUESTS, &keys::prefix_key(user_id))? {
            if let Some(request_id) = keys::decode_second(&key) {
                batch
                    .batch
                    .delete_cf(self.cf(IMPRESSIONS), keys::id_key(request_id));
                removed += 1;
            }
            batch.batch.delete_cf(self.cf(USER_REQUESTS), &key);
        }
        self.commit(batch)?;
        Ok(removed)
    }

    /// Deletes impressions whose request id sorts before `cutoff` (request ids start with
    /// their time, so this is "older than"), with their per-user index entries. Returns how
    /// many impressions were deleted.
    pub fn expire_impressions(&self, cutoff: &str) -> Result<usize, StoreError> {
        let mut batch = self.batch();
        let mut removed = 0;
        for entry in self
            .db
            .iterator_cf(self.cf(IMPRESSIONS), IteratorMode::Start)
        {
            let (key, _) = entry?;
            match keys::decode_id(&key) {
                Some(request_id) if request_id < cutoff => {
                    batch.batch.delete_cf(self.cf(IMPRESSIONS), &key);
                    removed += 1;
                }
                _ => break,
            }
            batch = self.commit_if_full(batch)?;
        }
        for entry in self
            .db
            .iterator_cf(self.cf(USER_REQUESTS), IteratorMode::Start)
        {
            let (key, _) = entry?;
            if keys::decode_second(&key).is_some_and(|request_id| request_id < cutoff) {
                batch.batch.delete_cf(self.cf(USER_REQUESTS), &key);
            }
            batch = self.commit_if_full(batch)?;
        }
        self.commit(batch)?;
        Ok(removed)
    }

    /// Writes `batch` and returns an empty one once it holds [`EXPIRY_BATCH`] changes, so
    /// expiring a large backlog never builds one unbounded write (each deletion stands on
    /// its own: a crash in between leaves only fewer records expired).
    pub(crate) fn commit_if_full<'s>(
        &'s self,
        batch: StoreBatch<'s>,
    ) -> Result<StoreBatch<'s>, StoreError> {
        if batch.len() < EXPIRY_BATCH {
            return Ok(batch);
        }
        self.commit(batch)?;
        Ok(self.batch())
    }

    /// Writes every item (with its vector), profile, item stat, co-visit list, trending list
    /// and offset as JSON lines sorted by column family and key. Floats print in shortest
    /// round-trip form, so two dumps are equal exactly when the states are bit-for-bit equal.
    pub fn dump(&self, out: &mut impl Write) -> Result<(), DumpError> {
        for entry in self.db.iterator_cf(self.cf(ITEMS), IteratorMode::Start) {
            let (k, v) = entry.map_err(StoreError::from)?;
            let id = keys::decode_id(&k).unwrap_or_default();
            let item: Item = codec::decode(&v, "item")?;
            let vector = self.vector(id)?;
            let line = serde_json::json!({
                "type": "item",
                "id": id,
                "item": item,
                "model_id": vector.as_ref().map(|v| v.model_id.clone()),
                "vector": vector.map(|v| v.vector),
            });
            writeln!(out, "{line}")?;
        }
        for (cf, kind) in [
            (TOMBSTONES, "tombstone"),
            (PROFILES, "profile"),
            (ITEM_STATS, "item_stats"),
            (COVISITS, "covisits"),
            (TRENDING, "trending"),
            (OFFSETS, "offset"),
        ] {
            let Some(handle) = self.db.cf_handle(cf) else {
                continue;
            };
            for entry in self.db.iterator_cf(handle, IteratorMode::Start) {
                let (k, v) = entry.map_err(StoreError::from)?;
                let id = keys::decode_id(&k).unwrap_or_default();
                let value = match cf {
                    PROFILES => serde_json::to_value(codec::decode::<Profile>(&v, "profile")?),
                    ITEM_STATS => {
                        serde_json::to_value(codec::decode::<ItemStats>(&v, "item stats")?)
                    }
                    COVISITS | TRENDING => {
                        serde_json::to_value(codec::decode_top_list(&v, "top list")?)
                    }
                    _ => serde_json::to_value(codec::decode::<u64>(&v, kind)?),
                }
                .expect("JSON value");
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({ "type": kind, "id": id, "value": value })
                )?;
            }
        }
        Ok(())
    }
}
