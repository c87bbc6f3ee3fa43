//! Prometheus metrics (`prometheus-client`): the HTTP layer's counters and latency
//! histograms, the node's own, and the values read at scrape time, in the text format.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use shelf_node::experiments::{self, ArmReport, Report};
use shelf_node::metrics::{latency_histogram, MetricKind, Reading};
use shelf_node::supervisor::{JobState, JobStatus};
use shelf_node::Node;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The `Content-Type` of what [`Metrics::render`] writes (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels<const N: usize> = [(&'static str, String); N];
type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// Every metric the HTTP layer keeps itself, registered once; the node's metrics and the
/// gauges read from the index, the store and the jobs are added at render time.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by (route, status).
    requests: Family<Labels<2>, Counter>,
    /// HTTP latency by route.
    http_latency: HistogramFamily<1>,
    /// Search stages.
    pub search_embed: Histogram,
    pub search_lexical: Histogram,
    pub search_ann: Histogram,
    pub search_rerank: Histogram,
    pub search_total: Histogram,
    /// Events appended to the stream through the API.
    pub events_appended: Counter,
    /// Searches refused because too many were in flight.
    pub searches_rejected: Counter,
    /// Searches with a query that returned nothing, and the queries.
    pub zero_results: ZeroResults,
    /// Recommendations served by (placement, whether the list was empty).
    recommendations: Family<Labels<2>, Counter>,
    /// The running A/B tests' reports, read from the impression log at most every
    /// [`EXPERIMENT_REPORT_TTL`] (a scan of the test's impressions).
    experiment_reports: Mutex<Option<(Instant, Vec<Report>)>>,
}

/// How long a scrape reuses the A/B tests' reports.
pub const EXPERIMENT_REPORT_TTL: Duration = Duration::from_secs(30);

/// The queries that found nothing since the server started, with how often each was
/// asked: the first report a merchandiser asks for (missing products, missing synonyms).
/// Queries are counted lowercased and trimmed; at most [`ZeroResults::MAX_QUERIES`]
/// distinct ones are kept (later new ones count in the total only).
#[derive(Debug, Default)]
pub struct ZeroResults {
    total: Counter,
    queries: Mutex<std::collections::HashMap<String, u64>>,
}

impl ZeroResults {
    pub const MAX_QUERIES: usize = 10_000;

    pub fn record(&self, query: &str) {
        self.total.inc();
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
        self.total.get()
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

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels<2>, Counter>::default();
        registry.register(
            "shelf_http_requests",
            "HTTP requests by route and status.",
            requests.clone(),
        );
        let recommendations = Family::<Labels<2>, Counter>::default();
        registry.register(
            "shelf_recommendations",
            "Recommendations served (POST /v1/recommend, and /v1/search without a query as \
             for_user) by placement, and whether the list was empty.",
            recommendations.clone(),
        );
        let http_latency: HistogramFamily<1> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "shelf_http_request_duration_seconds",
            "HTTP request latency by route.",
            http_latency.clone(),
        );
        let stages: HistogramFamily<1> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "shelf_search_stage_duration_seconds",
            "Search latency per stage (embed, lexical, ann, rerank, total).",
            stages.clone(),
        );
        let stage = |name: &str| stages.get_or_create_owned(&[("stage", name.to_string())]);
        let events_appended = Counter::default();
        registry.register(
            "shelf_events_appended",
            "Events appended to the log through the API.",
            events_appended.clone(),
        );
        let searches_rejected = Counter::default();
        registry.register(
            "shelf_searches_rejected",
            "Searches refused with 429 because too many were in flight.",
            searches_rejected.clone(),
        );
        let zero_results = ZeroResults::default();
        registry.register(
            "shelf_search_zero_results",
            "Searches with a query that returned no item (see GET /v1/analytics/zero-results).",
            zero_results.total.clone(),
        );
        Self {
            search_embed: stage("embed"),
            search_lexical: stage("lexical"),
            search_ann: stage("ann"),
            search_rerank: stage("rerank"),
            search_total: stage("total"),
            registry,
            requests,
            http_latency,
            events_appended,
            searches_rejected,
            zero_results,
            recommendations,
            experiment_reports: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts a recommendation served for `placement`.
    pub fn recommended(&self, placement: &'static str, empty: bool) {
        self.recommendations
            .get_or_create(&[
                ("placement", placement.to_string()),
                ("empty", empty.to_string()),
            ])
            .inc();
    }

    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&[("route", route.to_string()), ("status", status.to_string())])
            .inc();
        self.http_latency
            .get_or_create(&[("route", route.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition of everything above, the node's own metrics, its jobs' states
    /// and its readings. It reads RocksDB and /proc: call it off the async runtime.
    pub fn render(&self, node: &Node) -> String {
        let mut scraped = Registry::default();
        node.metrics.register(&mut scraped);
        scraped.register_collector(Box::new(Scraped {
            jobs: node.jobs.statuses(),
            readings: node
                .readings()
                .into_iter()
                .chain(process_gauges())
                .collect(),
            experiments: self.experiment_reports(node),
        }));
        let mut out = String::new();
        for registry in [&self.registry, &scraped] {
            prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
                .expect("writing to a String cannot fail");
        }
        out
    }
}

impl Metrics {
    /// The running A/B tests' reports, recomputed when older than [`EXPERIMENT_REPORT_TTL`]
    /// (a test that cannot be read is logged and left out).
    fn experiment_reports(&self, node: &Node) -> Vec<Report> {
        let mut cached = self
            .experiment_reports
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((at, reports)) = cached.as_ref() {
            if at.elapsed() < EXPERIMENT_REPORT_TTL {
                return reports.clone();
            }
        }
        let reports: Vec<Report> = node
            .experiments
            .list()
            .iter()
            .filter(|e| e.stopped_ms.is_none())
            .filter_map(|e| match experiments::report(&node.store, e) {
                Ok(report) => Some(report),
                Err(error) => {
                    tracing::error!(experiment = %e.id, %error, "reading an A/B test's report failed");
                    None
                }
            })
            .collect();
        *cached = Some((Instant::now(), reports.clone()));
        reports
    }
}

/// Values read once per scrape: the jobs' states, the node's and the process's readings,
/// and the running A/B tests' reports.
#[derive(Debug)]
struct Scraped {
    jobs: std::collections::BTreeMap<&'static str, JobStatus>,
    readings: Vec<Reading>,
    experiments: Vec<Report>,
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type JobValue = fn(&JobStatus) -> f64;
        let job_metrics: [(&str, &str, MetricType, JobValue); 3] = [
            (
                "shelf_job_failures",
                "Failures of each background job (failed batches, retried, and failed or \
                 panicked runs, restarted).",
                MetricType::Counter,
                |s| s.failures as f64,
            ),
            (
                "shelf_job_restarts",
                "Times each background job was restarted by its supervisor.",
                MetricType::Counter,
                |s| s.restarts as f64,
            ),
            (
                "shelf_job_up",
                "1 while the job is running (or starting), 0 while it is down.",
                MetricType::Gauge,
                |s| f64::from(u8::from(!matches!(s.state, JobState::Down { .. }))),
            ),
        ];
        for (name, help, kind, value) in job_metrics {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (job, status) in &self.jobs {
                let labels = [("job", *job)];
                let metric = family.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(value(status)).encode(metric)?,
                    _ => ConstGauge::new(value(status)).encode(metric)?,
                }
            }
        }
        type ArmValue = fn(&ArmReport) -> f64;
        let arm_metrics: [(&str, &str, ArmValue); 4] = [
            (
                "shelf_experiment_responses",
                "Responses each running A/B test's arm served with items (from the impression \
                 log, refreshed every 30 s).",
                |a| a.responses as f64,
            ),
            (
                "shelf_experiment_clicks_per_response",
                "Clicks per response of each running A/B test's arm.",
                |a| a.clicks_per_response.value,
            ),
            (
                "shelf_experiment_carts_per_response",
                "Add-to-carts per response of each running A/B test's arm.",
                |a| a.carts_per_response.value,
            ),
            (
                "shelf_experiment_purchases_per_response",
                "Purchases per response of each running A/B test's arm.",
                |a| a.purchases_per_response.value,
            ),
        ];
        if !self.experiments.is_empty() {
            for (name, help, value) in arm_metrics {
                let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for report in &self.experiments {
                    for arm in &report.arms {
                        let labels = [
                            ("experiment", report.experiment.id.as_str()),
                            ("arm", arm.name.as_str()),
                        ];
                        ConstGauge::new(value(arm)).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        for reading in &self.readings {
            match reading.kind {
                MetricKind::Counter => {
                    // The encoder appends `_total` to counters' names.
                    let name = reading.name.strip_suffix("_total").unwrap_or(reading.name);
                    let counter = ConstCounter::new(reading.value);
                    let metric = encoder.encode_descriptor(
                        name,
                        reading.help,
                        None,
                        counter.metric_type(),
                    )?;
                    counter.encode(metric)?;
                }
                MetricKind::Gauge => {
                    let gauge = ConstGauge::new(reading.value);
                    let metric = encoder.encode_descriptor(
                        reading.name,
                        reading.help,
                        None,
                        gauge.metric_type(),
                    )?;
                    gauge.encode(metric)?;
                }
            }
        }
        Ok(())
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
