//! Prometheus metrics: counters and latency histograms, rendered as text on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of latency buckets, in seconds.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn observe_ms(&self, ms: f64) {
        self.observe(Duration::from_secs_f64(ms.max(0.0) / 1e3));
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

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
    pub search_ann: Histogram,
    pub search_rerank: Histogram,
    pub search_total: Histogram,
    /// Time from an item's append (through the API) to its vector being searchable.
    pub item_freshness: Histogram,
    /// Records appended to the log through the API.
    pub items_appended: AtomicU64,
    pub events_appended: AtomicU64,
    /// Searches refused because too many were in flight.
    pub searches_rejected: AtomicU64,
}

impl Metrics {
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

    /// The text exposition of everything above plus `gauges` (name, help, value).
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
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
            "Search latency per stage (embed, ann, rerank, total).",
            "histogram",
        );
        for (stage, h) in [
            ("embed", &self.search_embed),
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
            "Time from an item's append through the API to its vector being searchable.",
            "histogram",
        );
        self.item_freshness
            .render(&mut out, "shelf_item_freshness_seconds", "");
        for (name, help, value) in [
            (
                "shelf_items_appended_total",
                "Item records appended to the log through the API.",
                &self.items_appended,
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
        ] {
            header(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        for (name, help, value) in gauges {
            header(&mut out, name, help, "gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(15));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1\n"));
        assert!(out.contains("x_bucket{le=\"0.02\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"30\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count 3\n"));
    }
}
