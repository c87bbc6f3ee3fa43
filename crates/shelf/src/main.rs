//! The `shelf` command: embedding, ingest into the embedded log, the jobs, and inspection.

use clap::{Args, Parser, Subcommand};
use shelf_cli as cli;
#[cfg(feature = "lab")]
use shelf_lab as lab;
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
    /// Append a JSON-lines file of item records or events to the embedded log.
    Ingest(cli::ingest::IngestArgs),
    /// Run the item and event jobs over the log (exactly-once into the store).
    Process(cli::process::ProcessArgs),
    /// Serve the HTTP API (search, ingest, profiles, metrics) with the jobs in-process.
    Serve(Box<ServeCommand>),
    /// Benchmarks printing JSON lines: `ingest` (jobs, freshness), `search` (load generator).
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Bench(lab::bench::BenchCommand),
    /// Train a CTR model on the logged impressions; promote it if not worse than the live one.
    Train(cli::train::TrainArgs),
    /// Offline evaluation from files: `relevance` (items, queries, graded judgments).
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Eval(lab::eval::EvalCommand),
    /// Create the Fluvio topics, register the Arroyo UDFs and create or update the Arroyo
    /// pipelines (idempotent).
    Deploy(cli::deploy::DeployArgs),
    /// Print one user's profile as JSON.
    Profile(cli::inspect::ProfileArgs),
    /// Print every item, profile and item stat as JSON lines sorted by key.
    Dump(cli::inspect::DumpArgs),
    /// Repair a damaged embedded log (stop the server first): each damaged record is
    /// replaced by a placeholder its consumers dead-letter, its bytes kept in a side file.
    RepairLog(cli::inspect::RepairLogArgs),
}

/// `shelf serve`'s flags: the server's, and the demo shop's where the lab is built in.
#[derive(Debug, Args)]
struct ServeCommand {
    #[command(flatten)]
    serve: cli::serve::ServeArgs,
    #[cfg(feature = "lab")]
    #[command(flatten)]
    demo: lab::demo::DemoArgs,
}

impl ServeCommand {
    fn run(self) -> anyhow::Result<()> {
        #[cfg(feature = "lab")]
        let companion = self.demo.companion(&self.serve)?;
        #[cfg(not(feature = "lab"))]
        let companion = None;
        cli::serve::run_with(self.serve, companion)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHELF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => cli::embed::run(args),
        Command::Ingest(args) => cli::ingest::run(args).map(|()| ExitCode::SUCCESS),
        Command::Process(args) => cli::process::run(args).map(|()| ExitCode::SUCCESS),
        Command::Serve(command) => command.run().map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "lab")]
        Command::Bench(command) => lab::bench::run(command).map(|()| ExitCode::SUCCESS),
        Command::Train(args) => cli::train::run(args).map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "lab")]
        Command::Eval(command) => lab::eval::run(command).map(|()| ExitCode::SUCCESS),
        Command::RepairLog(args) => cli::inspect::repair_log(args),
        Command::Deploy(args) => cli::deploy::run(args).map(|()| ExitCode::SUCCESS),
        Command::Profile(args) => cli::inspect::profile(args),
        Command::Dump(args) => cli::inspect::dump(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
