//! `shelf serve --demo`: a synthetic shop fed into the item log, and simulated shoppers who
//! search and click through the public HTTP API, so profiles, item stats and impressions
//! fill up as on a real site.

pub mod shop;
pub mod users;
mod zh;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use shelf_api::app::App;
use shelf_api::client::HttpTransport;
use shelf_cli::serve::{Companion, ServeArgs, SourceKind};
use shop::Shop;
use std::sync::Arc;
use std::time::{Duration, Instant};
use users::{Facets, SessionOutcome};

/// Flags of `shelf serve` that start the demo shop.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Run the demo shop: a generated catalog and simulated shoppers using the API.
    #[arg(long)]
    pub demo: bool,
    /// Demo catalog size.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(100..=10_000_000))]
    pub demo_items: u32,
    /// Demo shoppers.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub demo_users: u32,
    /// Demo shopper sessions (one search each, then clicks) per second.
    #[arg(long, default_value_t = 5.0)]
    pub demo_rate: f64,
    /// Seed of the demo catalog and shoppers.
    #[arg(long, default_value_t = 42)]
    pub demo_seed: u64,
    /// Language of the demo catalog and of the shoppers' queries: `en`, or `zh` (Chinese;
    /// run it with `--model-name multilingual-e5-small`, as `make run
    /// MODEL=multilingual-e5-small DEMO_LANGUAGE=zh` does).
    #[arg(long, value_enum, default_value = "en")]
    pub demo_language: shop::Language,
}

impl DemoArgs {
    /// The demo as `shelf serve`'s companion, when `--demo` is given; it feeds the embedded
    /// log, so it refuses another source.
    pub fn companion(&self, serve: &ServeArgs) -> anyhow::Result<Option<Companion>> {
        if !self.demo {
            return Ok(None);
        }
        anyhow::ensure!(
            serve.source == SourceKind::Embedded,
            "--demo runs on the embedded log only"
        );
        let config = DemoConfig {
            items: self.demo_items as usize,
            users: self.demo_users as usize,
            sessions_per_second: self.demo_rate,
            seed: self.demo_seed,
            language: self.demo_language,
        };
        Ok(Some(Box::new(
            move |app: Arc<App>, base_url: String, stop: tokio::sync::watch::Receiver<bool>| {
                let demo: std::pin::Pin<
                    Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>,
                > = Box::pin(run(app, base_url, config, stop));
                demo
            },
        )))
    }
}

/// Settings of the demo.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub items: usize,
    pub users: usize,
    /// Simulated sessions (one search each) per second.
    pub sessions_per_second: f64,
    pub seed: u64,
    pub language: shop::Language,
}

/// Feeds the catalog (first run only), waits until it is indexed, prints how to query,
/// then runs shopper sessions until `stop`.
pub async fn run(
    app: Arc<App>,
    base_url: String,
    config: DemoConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let shop = Shop::generate_in(config.language, config.items, config.seed);
    if app
        .node
        .store
        .item(shop.products[0].item.id.as_str())?
        .is_none()
        && app.node.items_appended_ever() == 0
    {
        eprintln!(
            "demo: appending {} catalog items to the item log",
            shop.products.len()
        );
        for chunk in shop.products.chunks(1000) {
            let payloads = chunk
                .iter()
                .map(|p| serde_json::to_vec(&shelf_types::ItemRecord::Upsert(p.item.clone())))
                .collect::<Result<Vec<_>, _>>()?;
            app.node.append_items(payloads).await?;
        }
    }
    let started = Instant::now();
    let mut last_report = Instant::now() - Duration::from_secs(60);
    loop {
        let indexed = app.node.retriever().map_or(0, |r| r.index().len());
        if indexed >= shop.products.len() {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "demo: {indexed} of {} items embedded and indexed ({:.0} s)",
                shop.products.len(),
                started.elapsed().as_secs_f64()
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    let example = match config.language {
        shop::Language::En => "grey sofa",
        shop::Language::Zh => "灰色沙发",
    };
    eprintln!(
        "\ndemo: the shop is ready ({} items). Try:\n\n  curl -s {base_url}/v1/search -H 'content-type: application/json' \\\n    -d '{{\"query\": \"{example}\", \"user_id\": \"user-00001\", \"k\": 5, \"explain\": true}}'\n\n\
         demo: {} simulated shoppers now search and click at {} sessions/s (metrics: {base_url}/metrics)\n",
        shop.products.len(),
        config.users,
        config.sessions_per_second
    );
    let api = HttpTransport::new(
        &base_url,
        app.api_keys
            .any_key_for(shelf_api::app::Scope::Write)
            .map(str::to_owned),
    );
    let facets = Facets::of(&shop);
    let users = users::users(config.users, config.seed ^ 0x5eed);
    let mut rng = SmallRng::seed_from_u64(config.seed ^ 0xc11c);
    let pause = Duration::from_secs_f64(1.0 / config.sessions_per_second.max(0.01));
    let (mut total, mut window) = (SessionOutcome::default(), SessionOutcome::default());
    let mut last_report = Instant::now();
    let mut i = 0usize;
    loop {
        let user = &users[i % users.len()];
        i += 1;
        match users::session(&api, &facets, user, &mut rng).await {
            Ok(o) => {
                total.add(&o);
                window.add(&o);
            }
            Err(e) => tracing::warn!(error = %e, "demo session failed"),
        }
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            let ranker = app
                .node
                .retriever()
                .map_or_else(|| "prior".to_string(), |r| r.ranker().name().to_string());
            eprintln!(
                "demo: {} searches, {} clicks, {} carts, {} purchases so far; last 30 s ranked by {ranker}: {:.3} clicks per search, clicks NDCG@10 {:.3}",
                total.searches,
                total.clicks,
                total.carts,
                total.purchases,
                window.clicks_per_search(),
                window.clicks_ndcg_at_10()
            );
            window = SessionOutcome::default();
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
}
