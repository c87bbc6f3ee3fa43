//! `shelf bench soak`: a long mixed load, sampling the server's memory, files and lag.

use super::*;

#[derive(Debug, Args)]
pub struct SoakBenchArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (write scope: the soak sends events and items).
    #[arg(long, env = "SHELF_API_KEY")]
    pub api_key: Option<String>,
    /// Seconds to run.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// Searches per second (half with a demo user).
    #[arg(long, default_value_t = 20.0)]
    pub search_rate: f64,
    /// Events per second (sent in batches of 10).
    #[arg(long, default_value_t = 200.0)]
    pub event_rate: f64,
    /// Item updates per second (demo items with a new price).
    #[arg(long, default_value_t = 2.0)]
    pub item_rate: f64,
    /// Seconds between samples of the server's metrics.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
    /// The demo catalog size and seed the server runs with (`--demo-items`, `--demo-seed`).
    #[arg(long, default_value_t = 20_000)]
    pub demo_items: usize,
    #[arg(long, default_value_t = 42)]
    pub demo_seed: u64,
}

/// The server's gauges and counters the soak samples, by name (from `/metrics`).
pub(super) async fn sample_metrics(api: &HttpTransport) -> anyhow::Result<BTreeMap<String, f64>> {
    const NAMES: [&str; 7] = [
        "process_resident_memory_bytes",
        "process_open_fds",
        "shelf_log_bytes",
        "shelf_ingest_lag_items",
        "shelf_ingest_lag_events",
        "shelf_index_items",
        "shelf_dead_letters_events_total",
    ];
    let text = api.get_text("/metrics").await?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            NAMES
                .contains(&name)
                .then(|| Some((name.to_string(), value.trim().parse::<f64>().ok()?)))?
        })
        .collect())
}

/// Sends one request every `1 / rate` seconds until `deadline` (each built by `make`);
/// returns (sent, failed).
pub(super) async fn at_rate(
    api: Arc<HttpTransport>,
    rate: f64,
    deadline: Instant,
    mut make: impl FnMut() -> (&'static str, serde_json::Value) + Send + 'static,
) -> (u64, u64) {
    let (mut sent, mut failed) = (0, 0);
    if rate <= 0.0 {
        return (0, 0);
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < deadline {
        tick.tick().await;
        let (path, body) = make();
        sent += 1;
        match api.call(Method::POST, path, Some(body)).await {
            Ok((status, _)) if status.is_success() => {}
            _ => failed += 1,
        }
    }
    (sent, failed)
}

pub(super) async fn soak(args: SoakBenchArgs) -> anyhow::Result<()> {
    let api = Arc::new(HttpTransport::new(&args.url, args.api_key.clone()));
    let (status, body) = api.call(Method::GET, "/ready", None).await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "{} is not ready: {status} {body}",
        args.url
    );
    let shop = Arc::new(Shop::generate(args.demo_items, args.demo_seed));
    let users = Arc::new(users::users(500, 42 ^ 0x5eed));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let search_args = SearchBenchArgs {
        url: args.url.clone(),
        api_key: None,
        concurrency: Vec::new(),
        rate: 0.0,
        seconds: 0,
        personalized_share: 0.5,
        k: 10,
        queries: None,
        mode: "hybrid".into(),
        facets: false,
        placement: Vec::new(),
    };
    let searches = {
        let (users, mut rng) = (Arc::clone(&users), SmallRng::seed_from_u64(1));
        tokio::spawn(at_rate(
            Arc::clone(&api),
            args.search_rate,
            deadline,
            move || {
                (
                    "/v1/search",
                    search_body(&mut rng, &users, &search_args, &Queries::Demo),
                )
            },
        ))
    };
    let events = {
        let (shop, users, mut rng) = (
            Arc::clone(&shop),
            Arc::clone(&users),
            SmallRng::seed_from_u64(2),
        );
        tokio::spawn(at_rate(
            Arc::clone(&api),
            args.event_rate / 10.0,
            deadline,
            move || {
                let now = time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("formats");
                let batch: Vec<serde_json::Value> = (0..10)
                    .map(|_| {
                        let item = &shop.products[rng.random_range(0..shop.products.len())].item;
                        let kind = ["view", "view", "click", "add_to_cart"][rng.random_range(0..4)];
                        serde_json::json!({"user_id": users[rng.random_range(0..users.len())].id,
                                       "kind": kind, "item_id": item.id, "ts": now})
                    })
                    .collect();
                ("/v1/events", serde_json::json!(batch))
            },
        ))
    };
    let items = {
        let (shop, mut rng) = (Arc::clone(&shop), SmallRng::seed_from_u64(3));
        tokio::spawn(at_rate(
            Arc::clone(&api),
            args.item_rate,
            deadline,
            move || {
                let mut item = shop.products[rng.random_range(0..shop.products.len())]
                    .item
                    .clone();
                item.price = item
                    .price
                    .map(|p| (p * rng.random_range(0.9..1.1) * 100.0).round() / 100.0);
                (
                    "/v1/items",
                    serde_json::json!([shelf_types::ItemRecord::Upsert(item)]),
                )
            },
        ))
    };
    let started = Instant::now();
    let mut samples: Vec<BTreeMap<String, f64>> = Vec::new();
    while Instant::now() < deadline {
        let mut sample = sample_metrics(&api).await?;
        sample.insert("seconds".into(), started.elapsed().as_secs_f64().round());
        println!(
            "{}",
            serde_json::json!({"bench": "soak_sample", "metrics": sample})
        );
        samples.push(sample);
        tokio::time::sleep(
            Duration::from_secs(args.sample_secs).min(deadline - Instant::now().min(deadline)),
        )
        .await;
    }
    let (searched, search_errors) = searches.await?;
    let (event_batches, event_errors) = events.await?;
    let (updates, update_errors) = items.await?;
    let last = sample_metrics(&api).await?;
    let first = samples.first().cloned().unwrap_or_default();
    let of = |s: &BTreeMap<String, f64>, k: &str| s.get(k).copied().unwrap_or(f64::NAN);
    let max = |k: &str| {
        samples
            .iter()
            .map(|s| of(s, k))
            .fold(of(&last, k), f64::max)
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": "soak", "seconds": round(started.elapsed().as_secs_f64()),
            "searches": searched, "search_errors": search_errors,
            "events": event_batches * 10, "event_errors": event_errors,
            "item_updates": updates, "item_errors": update_errors,
            "rss_mib_first": round(of(&first, "process_resident_memory_bytes") / 1048576.0),
            "rss_mib_last": round(of(&last, "process_resident_memory_bytes") / 1048576.0),
            "rss_mib_max": round(max("process_resident_memory_bytes") / 1048576.0),
            "open_fds_first": of(&first, "process_open_fds"), "open_fds_last": of(&last, "process_open_fds"),
            "open_fds_max": max("process_open_fds"),
            "log_mib_last": round(of(&last, "shelf_log_bytes") / 1048576.0),
            "lag_events_last": of(&last, "shelf_ingest_lag_events"),
        })
    );
    Ok(())
}
