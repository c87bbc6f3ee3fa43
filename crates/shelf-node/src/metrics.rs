//! Metrics the node keeps itself (item freshness, appends) and the values it reads at scrape
//! time, for the HTTP layer's Prometheus registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What a value read at scrape time is: a level that goes up and down, or a count that only
/// grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    Counter,
}

/// One value the node reports at scrape time (counters are named `..._total`).
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub value: f64,
}

impl Reading {
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            kind: MetricKind::Gauge,
            value,
        }
    }

    pub fn counter(name: &'static str, help: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            kind: MetricKind::Counter,
            value,
        }
    }
}

/// Upper bounds of the latency buckets, in seconds (0.5 ms to 30 s): one set for every
/// latency shelf exports, so dashboards can compare them.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// A latency histogram (seconds) with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// What the node counts (the HTTP layer adds its own; gauges are read at scrape time).
/// The handles are shared: [`NodeMetrics::register`] adds them to a registry.
#[derive(Debug)]
pub struct NodeMetrics {
    /// Time from an item's append (through the API) to its vector being searchable.
    pub item_freshness: Histogram,
    /// Item records appended to the stream by this node.
    pub items_appended: Counter,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self {
            item_freshness: latency_histogram(),
            items_appended: Counter::default(),
        }
    }
}

impl NodeMetrics {
    /// Adds the node's metrics to `registry` (the handles are shared, not copied).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "shelf_item_freshness_seconds",
            "Time from an item's append through the API to its being searchable (vector \
             index updated, lexical index committed).",
            self.item_freshness.clone(),
        );
        registry.register(
            "shelf_items_appended",
            "Item records appended to the stream through the API (and the demo).",
            self.items_appended.clone(),
        );
    }
}
