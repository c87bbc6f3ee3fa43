//! `shelf bench search`: a load generator against a running server, closed loops then an
//! open loop at a fixed rate.

use super::*;

#[derive(Debug, Args)]
pub struct SearchBenchArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (search scope is enough).
    #[arg(long, env = "SHELF_API_KEY")]
    pub api_key: Option<String>,
    /// Concurrent clients of the closed-loop runs.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub concurrency: Vec<usize>,
    /// Requests per second of the open-loop run (0 skips it).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds per run.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Share of requests that carry a demo user id (personalised).
    #[arg(long, default_value_t = 0.5)]
    pub personalized_share: f64,
    /// Results per search.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Queries to send, one per line, in order (shared by all clients, starting over at
    /// the end), instead of generated demo-shop queries: with distinct lines and fewer
    /// requests than lines, no response comes from the query cache.
    #[arg(long)]
    pub queries: Option<std::path::PathBuf>,
    /// Retrieval mode of every search: `hybrid`, `semantic` or `lexical`.
    #[arg(long, default_value = "hybrid")]
    pub mode: String,
    /// Ask every search for facet counts (category, brand, price in 5 buckets, in stock).
    #[arg(long)]
    pub facets: bool,
    /// Load `/v1/recommend` instead of `/v1/search`, with these placements taken in turn:
    /// `for_user` (a demo user), `similar_items` (an item), `bought_together` (1 to 3
    /// items), `recently_viewed` (a demo user), `trending` (a random top-level demo
    /// category, or none). Their items are drawn from the shop's trending list (up to 200, read
    /// once at the start), as product pages and carts lean to what sells: items with
    /// co-visits, whose lists take the whole path. Comma-separated; not with `--mode`,
    /// `--facets` or `--queries`, which are the search's.
    #[arg(long, value_delimiter = ',', value_enum, conflicts_with_all = ["mode", "facets", "queries"])]
    pub placement: Vec<BenchPlacement>,
}

/// A `/v1/recommend` placement the load asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum BenchPlacement {
    ForUser,
    SimilarItems,
    BoughtTogether,
    RecentlyViewed,
    Trending,
}

impl BenchPlacement {
    fn name(self) -> &'static str {
        match self {
            Self::ForUser => "for_user",
            Self::SimilarItems => "similar_items",
            Self::BoughtTogether => "bought_together",
            Self::RecentlyViewed => "recently_viewed",
            Self::Trending => "trending",
        }
    }
}

/// The path and body of one request of the load: a search, or a recommendation when
/// `--placement` names any (the `n`-th request takes the `n`-th placement in turn).
pub(super) fn request(
    n: usize,
    rng: &mut SmallRng,
    users: &[users::SimUser],
    items: &[String],
    args: &SearchBenchArgs,
    queries: &Queries,
) -> (&'static str, serde_json::Value) {
    if args.placement.is_empty() {
        return ("/v1/search", search_body(rng, users, args, queries));
    }
    let placement = args.placement[n % args.placement.len()];
    let mut body = serde_json::json!({ "placement": placement.name(), "k": args.k });
    let user = users[rng.random_range(0..users.len())].id.clone();
    let item = |rng: &mut SmallRng| items[rng.random_range(0..items.len())].clone();
    match placement {
        BenchPlacement::ForUser | BenchPlacement::RecentlyViewed => {
            body["user_id"] = user.clone().into()
        }
        BenchPlacement::SimilarItems => body["item_id"] = item(rng).into(),
        BenchPlacement::BoughtTogether => {
            let cart: Vec<String> = (0..rng.random_range(1..=3)).map(|_| item(rng)).collect();
            body["item_ids"] = cart.into();
        }
        BenchPlacement::Trending => {
            let leaf = Shop::leaf_path(rng.random_range(0..Shop::leaves()));
            let top = leaf.split('/').next().unwrap_or(leaf);
            if rng.random::<bool>() {
                body["category"] = top.into();
            }
        }
    }
    let personalised = matches!(
        placement,
        BenchPlacement::SimilarItems | BenchPlacement::BoughtTogether | BenchPlacement::Trending
    );
    if personalised && rng.random::<f64>() < args.personalized_share {
        body["user_id"] = user.into();
    }
    ("/v1/recommend", body)
}

/// Where the load's query texts come from.
pub(super) enum Queries {
    /// Generated demo-shop queries.
    Demo,
    /// The lines of `--queries`, taken in turn.
    File {
        lines: Vec<String>,
        next: std::sync::atomic::AtomicUsize,
    },
}

impl Queries {
    pub(super) fn load(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::Demo);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        anyhow::ensure!(!lines.is_empty(), "{} holds no query", path.display());
        Ok(Self::File {
            lines,
            next: 0.into(),
        })
    }
}

/// The items of the load's item placements: the shop's trending items, as many as its
/// trending list holds (200 by default; none needed
/// when no placement takes items).
async fn trending_items(
    api: &HttpTransport,
    placements: &[BenchPlacement],
) -> anyhow::Result<Vec<String>> {
    let takes_items = |p: &BenchPlacement| {
        matches!(
            p,
            BenchPlacement::SimilarItems | BenchPlacement::BoughtTogether
        )
    };
    if !placements.iter().any(takes_items) {
        return Ok(Vec::new());
    }
    let body = serde_json::json!({ "placement": "trending", "k": 1000, "explore": false });
    let (status, body) = api.call(Method::POST, "/v1/recommend", Some(body)).await?;
    anyhow::ensure!(status == StatusCode::OK, "trending items: {status} {body}");
    let ids: Vec<String> = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| Some(item["id"].as_str()?.to_string()))
        .collect();
    anyhow::ensure!(
        !ids.is_empty(),
        "the shop has no trending items yet (events make them): let the demo's shoppers run first"
    );
    Ok(ids)
}

/// The server's query-cache hits and misses so far (from `/metrics`).
pub(super) async fn cache_counts(api: &HttpTransport) -> anyhow::Result<(u64, u64)> {
    let text = api.get_text("/metrics").await?;
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    Ok((
        counter("shelf_query_cache_hits_total "),
        counter("shelf_query_cache_misses_total "),
    ))
}

/// A demo-shop query: a random leaf category, with a colour three times in ten.
pub(super) fn demo_query(rng: &mut SmallRng) -> String {
    demo_query_in(Language::En, rng)
}

/// [`demo_query`] in `language` (the same draws give a query and its translation).
pub(super) fn demo_query_in(language: Language, rng: &mut SmallRng) -> String {
    let leaf = rng.random_range(0..Shop::leaves());
    let color =
        (rng.random::<f64>() < 0.3).then(|| rng.random_range(0..crate::demo::shop::COLORS.len()));
    Shop::query_in(language, leaf, color, rng)
}

/// One request body of the load: a demo-shop query, sometimes with a demo user.
pub(super) fn search_body(
    rng: &mut SmallRng,
    users: &[users::SimUser],
    args: &SearchBenchArgs,
    queries: &Queries,
) -> serde_json::Value {
    let query = match queries {
        Queries::Demo => demo_query(rng),
        Queries::File { lines, next } => {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            lines[i % lines.len()].clone()
        }
    };
    let mut body = serde_json::json!({ "query": query, "k": args.k, "mode": args.mode });
    if args.facets {
        body["facets"] = serde_json::json!(["category", "brand", "price", "in_stock"]);
        body["price_buckets"] = serde_json::json!([25, 50, 100, 500]);
    }
    if rng.random::<f64>() < args.personalized_share {
        body["user_id"] = serde_json::json!(users[rng.random_range(0..users.len())].id);
    }
    body
}

#[derive(Default)]
pub(super) struct Tally {
    pub(super) latencies: Latencies,
    /// The server's own stage timings of each answer (`timings`: embed, lexical, ann,
    /// rerank), ms.
    pub(super) stages: [Latencies; 4],
    pub(super) errors: u64,
}

impl Tally {
    /// Counts one answer: its latency as the client saw it and the server's stage timings.
    pub(super) fn answered(&mut self, ms: f64, body: &serde_json::Value) {
        self.latencies.record_ms(ms);
        for (stage, name) in self
            .stages
            .iter_mut()
            .zip(["embed", "lexical", "ann", "rerank"])
        {
            if let Some(t) = body["timings"][name].as_f64() {
                stage.record_ms(t);
            }
        }
    }

    pub(super) fn extend(&mut self, other: Tally) {
        self.latencies.add(&other.latencies);
        for (mine, theirs) in self.stages.iter_mut().zip(&other.stages) {
            mine.add(theirs);
        }
        self.errors += other.errors;
    }
}

pub(super) fn report(
    mode: &str,
    label: serde_json::Value,
    tally: Tally,
    seconds: f64,
    cache: ((u64, u64), (u64, u64)),
) {
    let [embed, lexical, ann, rerank] = &tally.stages;
    let l = &tally.latencies;
    let mut line = serde_json::json!({
        "bench": "search", "mode": mode,
        "requests": l.len(), "errors": tally.errors,
        "qps": round(l.len() as f64 / seconds),
        "p50_ms": round(l.quantile_ms(0.5)), "p90_ms": round(l.quantile_ms(0.9)),
        "p99_ms": round(l.quantile_ms(0.99)), "p999_ms": round(l.quantile_ms(0.999)),
        "max_ms": round(l.max_ms()),
        "query_cache_hits": cache.1 .0.saturating_sub(cache.0 .0),
        "query_cache_misses": cache.1 .1.saturating_sub(cache.0 .1),
        "server_embed_p50_ms": round(embed.quantile_ms(0.5)),
        "server_embed_p99_ms": round(embed.quantile_ms(0.99)),
        "server_lexical_p50_ms": round(lexical.quantile_ms(0.5)),
        "server_lexical_p99_ms": round(lexical.quantile_ms(0.99)),
        "server_ann_p50_ms": round(ann.quantile_ms(0.5)),
        "server_ann_p99_ms": round(ann.quantile_ms(0.99)),
        "server_rerank_p50_ms": round(rerank.quantile_ms(0.5)),
        "server_rerank_p99_ms": round(rerank.quantile_ms(0.99)),
    });
    if let (Some(obj), Some(extra)) = (line.as_object_mut(), label.as_object()) {
        obj.extend(extra.clone());
    }
    println!("{line}");
}

pub(super) async fn search(args: SearchBenchArgs) -> anyhow::Result<()> {
    let api = Arc::new(HttpTransport::new(&args.url, args.api_key.clone()));
    let (status, body) = api.call(Method::GET, "/ready", None).await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "{} is not ready: {status} {body}",
        args.url
    );
    let users = Arc::new(users::users(500, 42 ^ 0x5eed));
    let queries = Arc::new(Queries::load(args.queries.as_deref())?);
    let placements: Vec<&str> = args.placement.iter().map(|p| p.name()).collect();
    let items = Arc::new(trending_items(&api, &args.placement).await?);
    let args = Arc::new(args);
    // No warm-up: each distinct query is embedded on first sight (then cached), as in
    // production, where shop queries repeat heavily too.
    for &concurrency in &args.concurrency {
        let cache_before = cache_counts(&api).await?;
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let mut workers = Vec::new();
        for w in 0..concurrency {
            let (api, users, args) = (Arc::clone(&api), Arc::clone(&users), Arc::clone(&args));
            let (queries, items) = (Arc::clone(&queries), Arc::clone(&items));
            workers.push(tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(w as u64);
                let mut tally = Tally::default();
                let mut sent = 0;
                while Instant::now() < deadline {
                    let (path, body) = request(sent, &mut rng, &users, &items, &args, &queries);
                    sent += 1;
                    let t = Instant::now();
                    match api.call(Method::POST, path, Some(body)).await {
                        Ok((StatusCode::OK, body)) => {
                            tally.answered(t.elapsed().as_secs_f64() * 1e3, &body)
                        }
                        _ => tally.errors += 1,
                    }
                }
                tally
            }));
        }
        let mut total = Tally::default();
        for w in workers {
            total.extend(w.await?);
        }
        let seconds = started.elapsed().as_secs_f64();
        let cache = (cache_before, cache_counts(&api).await?);
        report(
            "closed_loop",
            serde_json::json!({ "concurrency": concurrency, "placements": placements }),
            total,
            seconds,
            cache,
        );
    }
    if args.rate > 0.0 {
        // Open loop: requests start on schedule whether or not earlier ones finished, and
        // latency counts from the scheduled start (no coordinated omission).
        let interval = Duration::from_secs_f64(1.0 / args.rate);
        let n = (args.rate * args.seconds as f64) as usize;
        let cache_before = cache_counts(&api).await?;
        let started = Instant::now();
        let mut rng = SmallRng::seed_from_u64(99);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let scheduled = started + interval.mul_f64(i as f64);
            tokio::time::sleep_until(scheduled.into()).await;
            let (path, body) = request(i, &mut rng, &users, &items, &args, &queries);
            let api = Arc::clone(&api);
            handles.push(tokio::spawn(async move {
                match api.call(Method::POST, path, Some(body)).await {
                    Ok((StatusCode::OK, body)) => {
                        Some((scheduled.elapsed().as_secs_f64() * 1e3, body))
                    }
                    _ => None,
                }
            }));
        }
        let mut tally = Tally::default();
        for h in handles {
            match h.await? {
                Some((ms, body)) => tally.answered(ms, &body),
                None => tally.errors += 1,
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let cache = (cache_before, cache_counts(&api).await?);
        report(
            "open_loop",
            serde_json::json!({ "rate": args.rate, "placements": placements }),
            tally,
            seconds,
            cache,
        );
    }
    Ok(())
}
