//! The `shelf` command: subcommands for embedding (and, as they land, serving and ingest).

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// shelf: real-time retrieval and ranking for e-commerce search and recommendation.
#[derive(Debug, Parser)]
#[command(name = "shelf", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Embed JSON lines from stdin: each needs a "text" field; each output line adds "vector".
    Embed(cli::embed::EmbedArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHELF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => cli::embed::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
