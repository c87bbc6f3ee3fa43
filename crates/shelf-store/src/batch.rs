//! [`StoreBatch`]: the changes a consumer applies atomically with the offset they reflect.

use super::*;

/// Changes to apply atomically, together with the consumer offset they reflect.
pub struct StoreBatch<'a> {
    pub(crate) store: &'a Store,
    pub(crate) batch: WriteBatch,
}

impl std::fmt::Debug for StoreBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBatch")
            .field("len", &self.batch.len())
            .finish()
    }
}

impl StoreBatch<'_> {
    pub(crate) fn put(&mut self, cf: &str, key: Vec<u8>, value: Vec<u8>) {
        self.batch.put_cf(self.store.cf(cf), key, value);
    }

    pub fn len(&self) -> usize {
        self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Stores an item and its vector; clears a tombstone of the same id.
    pub fn put_item(&mut self, item: &Item, vector: &StoredVector) {
        let key = keys::id_key(item.id.as_str());
        self.put(ITEMS, key.clone(), codec::encode(item));
        self.put(ITEM_VECTORS, key.clone(), codec::encode_vector(vector));
        self.batch.delete_cf(self.store.cf(TOMBSTONES), key);
    }

    /// Deletes an item and its vector and records a tombstone at `offset`.
    pub fn delete_item(&mut self, id: &str, offset: u64) {
        let key = keys::id_key(id);
        self.batch.delete_cf(self.store.cf(ITEMS), &key);
        self.batch.delete_cf(self.store.cf(ITEM_VECTORS), &key);
        self.put(TOMBSTONES, key, codec::encode(&offset));
    }

    pub fn put_profile(&mut self, profile: &Profile) {
        self.put(
            PROFILES,
            keys::id_key(&profile.user_id),
            codec::encode(profile),
        );
    }

    pub fn put_item_stats(&mut self, stats: &ItemStats) {
        self.put(
            ITEM_STATS,
            keys::id_key(&stats.item_id),
            codec::encode(stats),
        );
    }

    pub fn put_covisits(&mut self, item_id: &str, list: &TopList) {
        self.put(
            COVISITS,
            keys::id_key(item_id),
            codec::encode_top_list(list),
        );
    }

    pub fn put_trending(&mut self, scope: &str, list: &TopList) {
        self.put(TRENDING, keys::id_key(scope), codec::encode_top_list(list));
    }

    pub fn put_item_window(&mut self, window: &ItemWindow) {
        self.put(
            ITEM_WINDOWS,
            keys::id_key(&window.item_id),
            codec::encode(window),
        );
    }

    /// Logs a search response, indexed by user so that deleting the user deletes it.
    pub fn put_impression(&mut self, impression: &Impression) {
        self.put(
            IMPRESSIONS,
            keys::id_key(&impression.request_id),
            codec::encode(impression),
        );
        if let Some(user) = &impression.user_id {
            self.put(
                USER_REQUESTS,
                keys::pair_key(user, &impression.request_id),
                Vec::new(),
            );
        }
    }

    /// Records that `consumer` has applied everything before `next_offset`.
    pub fn put_offset(&mut self, consumer: &str, next_offset: u64) {
        self.put(OFFSETS, keys::id_key(consumer), codec::encode(&next_offset));
    }

    /// Records that `consumer` has applied everything of `partition` before `next_offset`.
    pub fn put_partition_offset(&mut self, consumer: &str, partition: u32, next_offset: u64) {
        self.put_offset(&partition_consumer(consumer, partition), next_offset);
    }

    /// Keeps a record that could not be applied; `total` is the consumer's new count.
    pub fn put_dead_letter(&mut self, letter: &DeadLetter, total: u64) {
        self.put(
            DEAD_LETTERS,
            keys::dead_letter_key(&letter.consumer, letter.partition, letter.offset),
            codec::encode(letter),
        );
        self.put(
            OFFSETS,
            keys::id_key(&format!("dead-letters:{}", letter.consumer)),
            codec::encode(&total),
        );
    }
}
