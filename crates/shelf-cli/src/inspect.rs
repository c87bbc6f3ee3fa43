//! `shelf profile USER_ID` and `shelf dump`: read the store (also while a job writes it).

use crate::data::DataArgs;
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::process::ExitCode;

/// Flags of `shelf profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// The user whose profile to print.
    pub user_id: String,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Prints the profile as JSON; exit code 1 when the user has none.
pub fn profile(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    let store = args.data.open_store_read_only()?;
    let Some(profile) = store.profile(&args.user_id)? else {
        eprintln!("error: no profile for user `{}`", args.user_id);
        return Ok(ExitCode::FAILURE);
    };
    let mut value = serde_json::to_value(&profile)?;
    value["price_preference"] = serde_json::json!(profile.price_preference());
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}

/// Flags of `shelf dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub data: DataArgs,
}

/// Prints every item, tombstone, profile, item stat and offset as JSON lines sorted by key.
pub fn dump(args: DumpArgs) -> anyhow::Result<ExitCode> {
    let store = args.data.open_store_read_only()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    store.dump(&mut out).context("dumping the store")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Flags of `shelf repair-log`.
#[derive(Debug, Args)]
pub struct RepairLogArgs {
    /// The log directory (`DATA/log/TOPIC`), as the error that sent you here names it.
    pub dir: std::path::PathBuf,
    /// Largest record the log holds (the embedded log's limit, 16 MiB).
    #[arg(long, default_value_t = 16 << 20)]
    pub max_record_bytes: usize,
}

/// Replaces each damaged record of a log with a placeholder and reports what it did.
pub fn repair_log(args: RepairLogArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.dir.is_dir(),
        "{} is not a log directory",
        args.dir.display()
    );
    let repaired = shelf_stream::repair(&args.dir, args.max_record_bytes)
        .with_context(|| format!("repairing {}", args.dir.display()))?;
    for r in &repaired {
        println!(
            "{}",
            serde_json::json!({
                "segment": r.segment, "offset": r.offset, "saved_to": r.saved_to,
            })
        );
    }
    eprintln!(
        "{}: {} damaged record(s) replaced by placeholders (their consumers dead-letter them)",
        args.dir.display(),
        repaired.len()
    );
    Ok(ExitCode::SUCCESS)
}
