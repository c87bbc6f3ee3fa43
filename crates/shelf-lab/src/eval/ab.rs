//! `shelf eval ab`: an online A/B test on the demo shop. It starts an experiment on a
//! running `shelf serve --demo`, sends the demo's shoppers' sessions through the API, waits
//! until their events are applied, and prints each arm's report.

use crate::demo::shop::Shop;
use crate::demo::users::{self, Facets, SessionOutcome};
use axum::http::{Method, StatusCode};
use clap::Args;
use shelf_api::client::{HttpTransport, Transport};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct AbArgs {
    /// Base URL of the server (`shelf serve --demo`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (write scope: the test is started and stopped).
    #[arg(long, env = "SHELF_API_KEY")]
    pub api_key: Option<String>,
    /// The control arm's ranker: `live`, `prior` or a saved model version.
    #[arg(long, default_value = "live")]
    pub control: String,
    /// The treatment arm's ranker (the control's again for an A/A test, which measures the
    /// noise).
    #[arg(long)]
    pub treatment: String,
    /// Share of the search traffic in each arm (the rest stays outside the test).
    #[arg(long, default_value_t = 0.5)]
    pub share: f64,
    /// Shoppers taking part: the first N of the demo's (`--demo-users` of the server).
    #[arg(long, default_value_t = 500)]
    pub users: usize,
    /// Sessions (one search, then clicks, carts and purchases) per shopper.
    #[arg(long, default_value_t = 4)]
    pub sessions: usize,
    /// The server's `--demo-items` and `--demo-seed`: the catalogue and shoppers' tastes.
    #[arg(long, default_value_t = 20_000)]
    pub demo_items: usize,
    #[arg(long, default_value_t = 42)]
    pub demo_seed: u64,
    /// Seed of the sessions.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Leave the experiment running at the end (by default it is stopped).
    #[arg(long)]
    pub keep_running: bool,
}

/// What [`run_ab`] did: the sessions it sent and the server's final report.
#[derive(Debug)]
pub struct AbOutcome {
    pub sent: SessionOutcome,
    pub report: serde_json::Value,
}

/// Starts a two-arm test on `search`, runs `sessions` sessions of each of `shoppers`,
/// waits (at most `timeout`) until the report counts at least the clicks they made, and
/// returns the report (the test stopped unless `keep_running`).
#[allow(clippy::too_many_arguments)]
pub async fn run_ab(
    api: &impl Transport,
    facets: &Facets,
    shoppers: &[users::SimUser],
    arms: [(&str, &str); 2],
    share: f64,
    sessions: usize,
    seed: u64,
    keep_running: bool,
    timeout: Duration,
) -> anyhow::Result<AbOutcome> {
    let body = serde_json::json!({ "placement": "search", "arms": [
        { "name": arms[0].0, "model": arms[0].1, "share": share },
        { "name": arms[1].0, "model": arms[1].1, "share": share },
    ]});
    let (status, experiment) = api
        .call(Method::POST, "/v1/experiments", Some(body))
        .await?;
    anyhow::ensure!(
        status == StatusCode::CREATED,
        "starting the experiment answered {status}: {experiment}"
    );
    let id = experiment["id"].as_str().unwrap_or_default().to_string();
    eprintln!(
        "eval ab: experiment {id}: {} ({}) against {} ({}), {share} of searches each",
        arms[0].0, experiment["arms"][0]["model"], arms[1].0, experiment["arms"][1]["model"]
    );
    let mut sent = SessionOutcome::default();
    let started = Instant::now();
    for round in 0..sessions {
        let outcome =
            users::sessions(api, facets, shoppers, 1, seed.wrapping_add(round as u64)).await?;
        sent.add(&outcome);
        eprintln!(
            "eval ab: round {} of {sessions}: {} searches, {} clicks so far ({:.0} s)",
            round + 1,
            sent.searches,
            sent.clicks,
            started.elapsed().as_secs_f64()
        );
    }
    // The event job labels the impressions shortly after: wait until the report counts
    // the shoppers' clicks (the demo's own shoppers may add more).
    let deadline = Instant::now() + timeout;
    let path = format!("/v1/experiments/{id}");
    let report = loop {
        let (status, report) = api.call(Method::GET, &path, None).await?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "{path} answered {status}: {report}"
        );
        let counted: u64 = report["arms"]
            .as_array()
            .map(|arms| arms.iter().filter_map(|a| a["clicks"].as_u64()).sum())
            .unwrap_or(0);
        if counted >= sent.clicks {
            break report;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the report counts {counted} of the {} clicks sent after {timeout:?}",
            sent.clicks
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !keep_running {
        let (status, body) = api
            .call(Method::POST, &format!("{path}/stop"), None)
            .await?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "stopping answered {status}: {body}"
        );
    }
    Ok(AbOutcome { sent, report })
}

pub(super) async fn ab(args: AbArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.share > 0.0 && args.share <= 0.5,
        "--share must be in (0, 0.5]: two arms take twice it"
    );
    anyhow::ensure!(
        args.users > 0 && args.sessions > 0,
        "--users and --sessions must be positive"
    );
    let api = HttpTransport::new(&args.url, args.api_key.clone());
    let shop = Shop::generate(args.demo_items, args.demo_seed);
    let facets = Facets::of(&shop);
    // The demo's own shoppers (`shelf serve --demo` draws them from the same seed), so
    // their tastes match their histories on the server.
    let shoppers = users::users(args.users, args.demo_seed ^ 0x5eed);
    let treatment_name = if args.treatment == args.control {
        "control-again"
    } else {
        "treatment"
    };
    let outcome = run_ab(
        &api,
        &facets,
        &shoppers,
        [
            ("control", &args.control),
            (treatment_name, &args.treatment),
        ],
        args.share,
        args.sessions,
        args.seed,
        args.keep_running,
        Duration::from_secs(120),
    )
    .await?;
    print_report(&outcome.report);
    println!("{}", outcome.report);
    Ok(())
}

/// One line per arm: responses, and each rate with its 95% interval.
fn print_report(report: &serde_json::Value) {
    let interval = |e: &serde_json::Value| {
        format!(
            "{:.4} [{:.4}, {:.4}]",
            e["value"].as_f64().unwrap_or(f64::NAN),
            e["low"].as_f64().unwrap_or(f64::NAN),
            e["high"].as_f64().unwrap_or(f64::NAN)
        )
    };
    eprintln!(
        "{:<14} {:<26} {:>9} {:>26} {:>26} {:>28}",
        "arm",
        "model",
        "responses",
        "clicks/response",
        "purchases/response",
        "clicks lift over control"
    );
    for arm in report["arms"].as_array().into_iter().flatten() {
        let lift = &arm["clicks_per_response_lift"];
        eprintln!(
            "{:<14} {:<26} {:>9} {:>26} {:>26} {:>28}",
            arm["name"].as_str().unwrap_or_default(),
            arm["model"].as_str().unwrap_or_default(),
            arm["responses"],
            interval(&arm["clicks_per_response"]),
            interval(&arm["purchases_per_response"]),
            if lift.is_null() {
                "—".to_string()
            } else {
                interval(lift)
            },
        );
    }
    match report["winner"].as_str() {
        Some(winner) => eprintln!("winner: {winner} (its clicks lift's 95% interval is above 0)"),
        None => eprintln!("no winner: no arm's clicks lift over the control is significant"),
    }
}
