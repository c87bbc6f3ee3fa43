//! `shelf profile USER_ID` and `shelf dump`: read the store (also while a job writes it).

use super::data::DataArgs;
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
