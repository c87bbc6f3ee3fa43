//! `shelf process`: run the item and event jobs over the embedded log.

use crate::data::{DataArgs, Topic};
use crate::model::ModelArgs;
use clap::Args;
use shelf_engine::{catch_up, EventJob, ItemJob, Progress};
use shelf_index::HnswIndex;
use shelf_store::DecayConfig;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flags of `shelf process`.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Apply everything in the log, then exit 0 (otherwise keep following the log).
    #[arg(long)]
    pub until_caught_up: bool,
    /// Items applied (and committed with their offset) per item-job batch.
    #[arg(long, env = "SHELF_BATCH_SIZE", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Events applied (and committed with their offset) per event-job batch.
    #[arg(long, env = "SHELF_EVENT_BATCH_SIZE", default_value_t = shelf_engine::EVENT_BATCH_SIZE as u32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub event_batch_size: u32,
    /// Half-life of event weights in profiles and item stats, in days.
    #[arg(long, env = "SHELF_HALF_LIFE_DAYS", default_value_t = 14.0)]
    pub half_life_days: f64,
    #[command(flatten)]
    pub behaviour: crate::serve::BehaviourArgs,
}

/// Runs the item job, then the event job, until both have applied the whole log (and, when
/// following, again whenever the log grows).
pub fn run(args: ProcessArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.half_life_days > 0.0,
        "--half-life-days must be positive"
    );
    let behaviour = args.behaviour.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = Arc::new(args.data.open_store()?);
        let embedder = args.model.start(32)?;
        let dim = embedder.dim();
        let mut item_job = ItemJob::<_, HnswIndex>::new(Arc::clone(&store), embedder, None)?;
        let config = DecayConfig {
            half_life_secs: args.half_life_days * 86_400.0,
            ..Default::default()
        };
        let mut event_job =
            EventJob::new(Arc::clone(&store), config, dim).with_behaviour(behaviour);
        let mut items = args.data.open_reader(Topic::Items)?;
        let mut events = args.data.open_reader(Topic::Events)?;
        let batch = args.batch_size as usize;
        loop {
            let started = Instant::now();
            let item_progress =
                catch_up(&mut item_job, &mut items, &store, batch, reporter("items")).await?;
            let event_progress = catch_up(
                &mut event_job,
                &mut events,
                &store,
                args.event_batch_size as usize,
                reporter("events"),
            )
            .await?;
            if args.until_caught_up {
                let (embedded, reused) = item_job.embed_counts();
                let summary = serde_json::json!({
                    "items": summary(&item_progress),
                    "events": summary(&event_progress),
                    "texts_embedded": embedded,
                    "vectors_reused": reused,
                    "seconds": started.elapsed().as_secs_f64(),
                });
                println!("{summary}");
                return Ok(());
            }
            if item_progress.records == 0 && event_progress.records == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        }
    })
}

fn summary(p: &Progress) -> serde_json::Value {
    serde_json::json!({ "applied": p.records, "dead_letters": p.dead_letters, "offset": p.offset })
}

/// Draws progress on a terminal.
fn reporter(what: &'static str) -> impl FnMut(&Progress, u64) {
    let terminal = std::io::stderr().is_terminal();
    let mut last = Instant::now();
    move |p, end| {
        if terminal && (last.elapsed() > Duration::from_millis(200) || p.offset >= end) {
            last = Instant::now();
            let end_marker = if p.offset >= end { "\n" } else { "" };
            eprint!(
                "\r{what}: offset {} of {end}, {} dead letters{end_marker}",
                p.offset, p.dead_letters
            );
        }
    }
}
