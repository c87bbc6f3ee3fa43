//! `shelf ingest items|events FILE.jsonl`: append a JSON-lines file to the embedded log.

use super::data::{DataArgs, Topic};
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
}

/// Appends every non-empty line. Records are checked later by `shelf process`; invalid
/// ones become dead letters there. Re-running appends the file again.
pub fn run(args: IngestArgs) -> anyhow::Result<()> {
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
