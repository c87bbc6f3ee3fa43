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
            max_query_bytes: 2048,
            max_concurrent_searches: 64,
        }
    }
}

/// API keys by scope: when no set has a key, the API is open.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    /// Keys allowed to search and recommend only: what a storefront's backend presents.
    pub search: HashSet<String>,
    /// Keys allowed to search and to read items, profiles and models.
    pub read: HashSet<String>,
    /// Keys allowed everything (writes include reads and searches).
    pub write: HashSet<String>,
}

/// What a request is allowed to do; each scope includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// `POST /v1/search`.
    Search,
    /// Every `GET` under `/v1`: items, a user's profile, the models.
    Read,
    /// Every other `/v1` method: items, events, deletions.
    Write,
}

impl Scope {
    /// The scope a `/v1` request needs: search for `/v1/search`, read for other `GET`s, write
    /// for everything else.
    pub fn needed_for(method: &axum::http::Method, path: &str) -> Scope {
        if path == "/v1/search" || path == "/v1/recommend" {
            Scope::Search
        } else if method == axum::http::Method::GET {
            Scope::Read
        } else {
            Scope::Write
        }
    }
}

impl ApiKeys {
    pub fn is_open(&self) -> bool {
        self.search.is_empty() && self.read.is_empty() && self.write.is_empty()
    }

    /// The widest scope a presented key has, if any. Every configured key is compared, each
    /// in constant time, so the answer's timing tells nothing about how close a guess came.
    pub fn scope_of(&self, key: &str) -> Option<Scope> {
        use subtle::ConstantTimeEq;
        let any = |set: &HashSet<String>| {
            bool::from(set.iter().fold(subtle::Choice::from(0), |found, k| {
                found | k.as_bytes().ct_eq(key.as_bytes())
            }))
        };
        let (write, read, search) = (any(&self.write), any(&self.read), any(&self.search));
        if write {
            Some(Scope::Write)
        } else if read {
            Some(Scope::Read)
        } else if search {
            Some(Scope::Search)
        } else {
            None
        }
    }

    /// A key of scope `scope` or wider, if one is configured (for the demo's own client).
    pub fn any_key_for(&self, scope: Scope) -> Option<&str> {
        let sets = [
            (Scope::Write, &self.write),
            (Scope::Read, &self.read),
            (Scope::Search, &self.search),
        ];
        sets.into_iter()
            .filter(|(s, _)| *s >= scope)
            .find_map(|(_, set)| set.iter().next().map(String::as_str))
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
