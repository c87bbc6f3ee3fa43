//! The HTTP layer's state: the node it serves, request limits, API keys and metrics.

use crate::metrics::Metrics;
use shelf_node::{Node, NodeConfig};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Request limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body in bytes (413 above).
    pub max_body_bytes: usize,
    /// Most records in one `POST /v1/items` or `/v1/events` (413 above).
    pub max_batch: usize,
    /// Longest query in bytes (422 above).
    pub max_query_bytes: usize,
    /// Searches running at once; more are refused with 429.
    pub max_concurrent_searches: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            max_batch: 10_000,
            max_query_bytes: 1024,
            max_concurrent_searches: 64,
        }
    }
}

/// API keys: when neither set has a key, the API is open.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    /// Keys allowed to search and read profiles.
    pub read: HashSet<String>,
    /// Keys allowed everything (writes include reads).
    pub write: HashSet<String>,
}

/// What a request is allowed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
}

impl ApiKeys {
    pub fn is_open(&self) -> bool {
        self.read.is_empty() && self.write.is_empty()
    }

    /// The scope a presented key has, if any. Every configured key is compared, each in
    /// constant time, so the answer's timing tells nothing about how close a guess came.
    pub fn scope_of(&self, key: &str) -> Option<Scope> {
        use subtle::ConstantTimeEq;
        let any = |set: &HashSet<String>| {
            set.iter().fold(subtle::Choice::from(0), |found, k| {
                found | k.as_bytes().ct_eq(key.as_bytes())
            })
        };
        let (write, read) = (any(&self.write), any(&self.read));
        if bool::from(write) {
            Some(Scope::Write)
        } else if bool::from(read) {
            Some(Scope::Read)
        } else {
            None
        }
    }
}

/// Everything the server is configured with.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub node: NodeConfig,
    pub limits: Limits,
    pub api_keys: ApiKeys,
}

/// The state every handler shares.
#[derive(Debug)]
pub struct App {
    pub node: Arc<Node>,
    pub limits: Limits,
    pub api_keys: ApiKeys,
    pub metrics: Metrics,
    /// Searches in flight (at most `limits.max_concurrent_searches`; more get 429).
    pub search_slots: Semaphore,
}

impl App {
    /// The HTTP state over `node`.
    pub fn new(node: Arc<Node>, limits: Limits, api_keys: ApiKeys) -> Arc<Self> {
        let slots = limits.max_concurrent_searches;
        Arc::new(Self {
            node,
            limits,
            api_keys,
            metrics: Metrics::default(),
            search_slots: Semaphore::new(slots),
        })
    }
}
