//! A bounded cache of query embeddings (queries repeat heavily in shops).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Query text -> embedding, at most `capacity` entries; the oldest inserted is evicted.
#[derive(Debug)]
pub struct QueryCache {
    capacity: usize,
    entries: Mutex<Entries>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, Arc<Vec<f32>>>,
    order: VecDeque<String>,
}

impl QueryCache {
    /// A cache of `capacity` entries (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, query: &str) -> Option<Arc<Vec<f32>>> {
        let found = self.lock().map.get(query).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, query: &str, vector: Arc<Vec<f32>>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        if entries.map.insert(query.to_string(), vector).is_none() {
            entries.order.push_back(query.to_string());
        }
        while entries.map.len() > self.capacity {
            match entries.order.pop_front() {
                Some(oldest) => entries.map.remove(&oldest),
                None => break,
            };
        }
    }

    /// Hits and misses so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map inconsistent with itself in
        // a way that matters for a cache.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_beyond_capacity_and_counts_hits() {
        let cache = QueryCache::new(2);
        for q in ["a", "b", "c"] {
            cache.insert(q, Arc::new(vec![1.0]));
        }
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
        assert_eq!(cache.counts(), (2, 1));
        let off = QueryCache::new(0);
        off.insert("a", Arc::new(vec![1.0]));
        assert!(off.get("a").is_none());
    }
}
