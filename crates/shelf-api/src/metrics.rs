//! Prometheus metrics: counters and latency histograms, rendered as text on `/metrics`.

use shelf_node::metrics::{Histogram, NodeMetrics, Reading};
use shelf_node::supervisor::{JobState, JobStatus};
use shelf_node::Node;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Every metric the server keeps itself (gauges read from the index and store are added at
/// render time by the caller).
#[derive(Debug, Default)]
pub struct Metrics {
    /// HTTP requests by (route, status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// HTTP latency by route.
    http_latency: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
    /// Search stages.
    pub search_embed: Histogram,
    pub search_lexical: Histogram,
    pub search_ann: Histogram,
    pub search_rerank: Histogram,
    pub search_total: Histogram,
    /// Events appended to the stream through the API.
    pub events_appended: AtomicU64,
    /// Searches refused because too many were in flight.
    pub searches_rejected: AtomicU64,
    /// Searches with a query that returned nothing, and the queries.
    pub zero_results: ZeroResults,
    /// Recommendations served by (placement, whether the list was empty).
    recommendations: Mutex<BTreeMap<(&'static str, bool), u64>>,
}

/// The queries that found nothing since the server started, with how often each was
/// asked: the first report a merchandiser asks for (missing products, missing synonyms).
/// Queries are counted lowercased and trimmed; at most [`ZeroResults::MAX_QUERIES`]
/// distinct ones are kept (later new ones count in the total only).
#[derive(Debug, Default)]
pub struct ZeroResults {
    total: AtomicU64,
    queries: Mutex<std::collections::HashMap<String, u64>>,
}

impl ZeroResults {
    pub const MAX_QUERIES: usize = 10_000;

    pub fn record(&self, query: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let query = query.trim().to_lowercase();
        let mut queries = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = queries.get_mut(&query) {
            *n += 1;
        } else if queries.len() < Self::MAX_QUERIES {
            queries.insert(query, 1);
        }
    }

    /// Zero-result searches so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The `limit` most frequent zero-result queries, most frequent first, and how many
    /// distinct ones are kept.
    pub fn top(&self, limit: usize) -> (Vec<(String, u64)>, usize) {
        let queries = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        let mut top: Vec<(String, u64)> = queries.iter().map(|(q, n)| (q.clone(), *n)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(limit);
        (top, queries.len())
    }
}

impl Metrics {
    /// Counts a recommendation served for `placement`.
    pub fn recommended(&self, placement: &'static str, empty: bool) {
        *self
            .recommendations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((placement, empty))
            .or_default() += 1;
    }

    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route.to_string(), status))
            .or_default() += 1;
        let histogram = std::sync::Arc::clone(
            self.http_latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(route.to_string())
                .or_default(),
        );
        histogram.observe(elapsed);
    }

    /// The text exposition of everything above, the node's own metrics, its jobs' states
    /// and its readings. It reads RocksDB and /proc: call it off the async runtime.
    pub fn render(&self, node: &Node) -> String {
        let node_metrics: &NodeMetrics = &node.metrics;
        let mut out = String::new();
        header(
            &mut out,
            "shelf_http_requests_total",
            "HTTP requests by route and status.",
            "counter",
        );
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "shelf_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        header(
            &mut out,
            "shelf_recommendations_total",
            "Recommendations served (POST /v1/recommend, and /v1/search without a query as \
             for_user) by placement, and whether the list was empty.",
            "counter",
        );
        for ((placement, empty), n) in self
            .recommendations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "shelf_recommendations_total{{placement=\"{placement}\",empty=\"{empty}\"}} {n}"
            );
        }
        header(
            &mut out,
            "shelf_http_request_duration_seconds",
            "HTTP request latency by route.",
            "histogram",
        );
        for (route, h) in self
            .http_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            h.render(
                &mut out,
                "shelf_http_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        header(
            &mut out,
            "shelf_search_stage_duration_seconds",
            "Search latency per stage (embed, lexical, ann, rerank, total).",
            "histogram",
        );
        for (stage, h) in [
            ("embed", &self.search_embed),
            ("lexical", &self.search_lexical),
            ("ann", &self.search_ann),
            ("rerank", &self.search_rerank),
            ("total", &self.search_total),
        ] {
            h.render(
                &mut out,
                "shelf_search_stage_duration_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        header(
            &mut out,
            "shelf_item_freshness_seconds",
            "Time from an item's append through the API to its being searchable (vector index updated, lexical index committed).",
            "histogram",
        );
        node_metrics
            .item_freshness
            .render(&mut out, "shelf_item_freshness_seconds", "");
        for (name, help, value) in [
            (
                "shelf_items_appended_total",
                "Item records appended to the stream through the API (and the demo).",
                &node_metrics.items_appended,
            ),
            (
                "shelf_events_appended_total",
                "Events appended to the log through the API.",
                &self.events_appended,
            ),
            (
                "shelf_searches_rejected_total",
                "Searches refused with 429 because too many were in flight.",
                &self.searches_rejected,
            ),
            (
                "shelf_search_zero_results_total",
                "Searches with a query that returned no item (see GET /v1/analytics/zero-results).",
                &self.zero_results.total,
            ),
        ] {
            header(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let jobs = node.jobs.statuses();
        for (name, help, kind, value) in [
            (
                "shelf_job_failures_total",
                "Failures of each background job (failed batches, retried, and failed or panicked runs, restarted).",
                "counter",
                (|s: &JobStatus| s.failures as f64) as fn(&JobStatus) -> f64,
            ),
            (
                "shelf_job_restarts_total",
                "Times each background job was restarted by its supervisor.",
                "counter",
                |s| s.restarts as f64,
            ),
            (
                "shelf_job_up",
                "1 while the job is running (or starting), 0 while it is down.",
                "gauge",
                |s| f64::from(u8::from(!matches!(s.state, JobState::Down { .. }))),
            ),
        ] {
            header(&mut out, name, help, kind);
            for (job, status) in &jobs {
                let _ = writeln!(out, "{name}{{job=\"{job}\"}} {}", value(status));
            }
        }
        for reading in node.readings().into_iter().chain(process_gauges()) {
            header(&mut out, reading.name, reading.help, reading.kind.as_str());
            let _ = writeln!(out, "{} {}", reading.name, reading.value);
        }
        out
    }
}

/// The process's resident memory and open file descriptors (Linux: read from /proc; none
/// elsewhere), named as Prometheus client libraries name them.
fn process_gauges() -> Vec<Reading> {
    let mut out = Vec::new();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        if let Some(kib) = rss_kib {
            out.push(Reading::gauge(
                "process_resident_memory_bytes",
                "Resident memory of the shelf process in bytes.",
                kib * 1024.0,
            ));
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push(Reading::gauge(
            "process_open_fds",
            "Open file descriptors of the shelf process.",
            fds.count() as f64,
        ));
    }
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}
