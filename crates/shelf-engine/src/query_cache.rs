//! A bounded cache of query embeddings (queries repeat heavily in shops), on quick_cache:
//! S3-FIFO eviction, so a query shoppers keep sending survives a stream of one-off queries,
//! and lookups from many requests at once do not queue on one lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Query text -> embedding, at most `capacity` entries.
#[derive(Debug)]
pub struct QueryCache {
    /// `None` when the cache is off (capacity 0).
    entries: Option<quick_cache::sync::Cache<String, Arc<Vec<f32>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl QueryCache {
    /// A cache of `capacity` entries (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, query: &str) -> Option<Arc<Vec<f32>>> {
        let found = self.entries.as_ref().and_then(|e| e.get(query));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, query: &str, vector: Arc<Vec<f32>>) {
        if let Some(entries) = &self.entries {
            entries.insert(query.to_string(), vector);
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries it may hold (quick_cache rounds each shard's share of the capacity up).
    pub fn capacity(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.capacity() as usize)
    }

    /// Hits and misses so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_counts_hits_and_keeps_a_popular_query_through_a_scan() {
        let cache = QueryCache::new(100);
        cache.insert("sofa", Arc::new(vec![1.0]));
        for i in 0..2_000 {
            // The popular query is asked between one-off ones.
            assert!(
                cache.get("sofa").is_some(),
                "evicted after {i} one-off queries"
            );
            cache.insert(&format!("one-off {i}"), Arc::new(vec![0.0]));
            assert!(cache.len() <= cache.capacity(), "{} entries", cache.len());
        }
        assert!(
            (100..110).contains(&cache.capacity()),
            "{}",
            cache.capacity()
        );
        assert_eq!(cache.get("sofa").as_deref(), Some(&vec![1.0]));
        assert!(cache.get("never asked").is_none());
        assert_eq!(cache.counts(), (2_001, 1));
    }

    #[test]
    fn capacity_zero_is_off() {
        let off = QueryCache::new(0);
        off.insert("a", Arc::new(vec![1.0]));
        assert!(off.get("a").is_none());
        assert!(off.is_empty());
        assert_eq!(off.counts(), (0, 1));
    }
}
