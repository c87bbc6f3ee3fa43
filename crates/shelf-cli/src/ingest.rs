//! `shelf ingest items|events FILE.jsonl [--to embedded|fluvio]`: append a JSON-lines file
//! to the embedded log, or produce it to the Fluvio topic (`shelf-items`, `shelf-events`).

use crate::data::{DataArgs, Topic};
use clap::Args;
use shelf_stream::{JsonlSource, Sink, Source};
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `shelf ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Which stream the records belong to.
    #[arg(value_enum)]
    pub topic: Topic,
    /// A JSON-lines file: one item record or event per line (see the README's data contracts).
    pub file: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Records appended (and fsynced) per write.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk: u32,
    /// Where the records go: `embedded` (the log in --data-dir) or `fluvio` (the topic
    /// `shelf-items` or `shelf-events` at --fluvio-endpoint, keyed by item or user id; needs
    /// the `fluvio` feature).
    #[arg(long, value_enum, default_value_t = Destination::Embedded)]
    pub to: Destination,
    /// Fluvio SC address (`HOST:PORT`) with `--to fluvio`.
    #[arg(long, env = "SHELF_FLUVIO_ENDPOINT", default_value = "127.0.0.1:9003")]
    pub fluvio_endpoint: String,
}

/// Where `shelf ingest` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Destination {
    Embedded,
    Fluvio,
}

/// Appends every non-empty line. Records are checked later by `shelf process`; invalid
/// ones become dead letters there. Re-running appends the file again.
pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    match args.to {
        Destination::Embedded => to_log(args),
        Destination::Fluvio => to_fluvio(args),
    }
}

/// Produces every non-empty line to the stream's Fluvio topic; waits for every
/// acknowledgement before printing the summary.
#[cfg(feature = "fluvio")]
fn to_fluvio(args: IngestArgs) -> anyhow::Result<()> {
    let mut source = JsonlSource::open(&args.file, true)?;
    let cluster = shelf_stream::FluvioCluster::connect_within(
        &args.fluvio_endpoint,
        Duration::from_secs(60),
    )?;
    let topic = args.topic.fluvio_topic();
    let sink = cluster.sink(topic)?;
    let mut produced = 0u64;
    let mut partitions: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
    loop {
        let records = source.poll(args.chunk as usize, Duration::ZERO)?;
        if records.is_empty() {
            break;
        }
        let payloads: Vec<Vec<u8>> = records.into_iter().map(|r| r.payload).collect();
        let keys = shelf_node::record_keys(&payloads, args.topic.key_field());
        for (partition, offset) in sink.produce(&keys, &payloads)? {
            let span = partitions.entry(partition).or_insert((offset, offset + 1));
            span.0 = span.0.min(offset);
            span.1 = span.1.max(offset + 1);
            produced += 1;
        }
    }
    let summary = serde_json::json!({
        "topic": topic,
        "produced": produced,
        "partitions": partitions
            .iter()
            .map(|(p, (first, end))| serde_json::json!({"partition": p, "offsets": [first, end]}))
            .collect::<Vec<_>>(),
        "fluvio": args.fluvio_endpoint,
    });
    println!("{summary}");
    Ok(())
}

#[cfg(not(feature = "fluvio"))]
fn to_fluvio(_: IngestArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "--to fluvio needs a shelf built with the `fluvio` feature \
         (cargo build --release -p shelf --features fluvio)"
    )
}

fn to_log(args: IngestArgs) -> anyhow::Result<()> {
    let mut source = JsonlSource::open(&args.file, true)?;
    let mut log = args.data.open_log(args.topic)?;
    let first = log.next_offset();
    loop {
        let records = source.poll(args.chunk as usize, Duration::ZERO)?;
        if records.is_empty() {
            break;
        }
        let payloads: Vec<Vec<u8>> = records.into_iter().map(|r| r.payload).collect();
        log.append(&payloads)?;
    }
    log.sync()?;
    let last = log.next_offset();
    let summary = serde_json::json!({
        "topic": args.topic.name(),
        "appended": last - first,
        "offsets": [first, last],
        "log": args.data.log_dir(args.topic),
    });
    println!("{summary}");
    Ok(())
}
