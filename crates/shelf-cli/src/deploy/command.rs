//! `shelf deploy`: create the Fluvio topics, register the Arroyo UDFs and create or update
//! the Arroyo pipelines, idempotently; prints one JSON line per object.

#[cfg(feature = "fluvio")]
use super::Outcome;
use super::{bundled_pipelines, bundled_udfs, ArroyoDeploy, Step, TOPICS};
use clap::Args;
use shelf_api::client::HttpTransport;
use std::time::Duration;

/// Flags of `shelf deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Arroyo's API base URL.
    #[arg(
        long,
        env = "SHELF_ARROYO_URL",
        default_value = "http://127.0.0.1:5115"
    )]
    pub arroyo_url: String,
    /// Fluvio SC address (`HOST:PORT`) where the topics are created.
    #[arg(long, env = "SHELF_FLUVIO_ENDPOINT", default_value = "127.0.0.1:9003")]
    pub fluvio_endpoint: String,
    /// The Fluvio address written into the pipelines, as Arroyo's workers reach it
    /// (default: --fluvio-endpoint).
    #[arg(long, env = "SHELF_PIPELINE_FLUVIO_ENDPOINT")]
    pub pipeline_fluvio_endpoint: Option<String>,
    /// Partitions of each topic created (existing topics are left as they are).
    #[arg(long, env = "SHELF_TOPIC_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// Parallelism of each pipeline created.
    #[arg(long, env = "SHELF_PIPELINE_PARALLELISM", default_value_t = 1)]
    pub parallelism: u64,
    /// Seconds to wait for Arroyo to answer, and for a changed pipeline to stop.
    #[arg(long, default_value_t = 120)]
    pub wait_secs: u64,
    /// Register the SPU started by `fluvio-run spu` with this id (with --spu-public and
    /// --spu-private), unless one with this id is registered; what `fluvio cluster spu
    /// register` does.
    #[arg(long, env = "SHELF_SPU_ID", requires_all = ["spu_public", "spu_private"])]
    pub spu_id: Option<i32>,
    /// The SPU's address for clients (`HOST:PORT`).
    #[arg(long, env = "SHELF_SPU_PUBLIC")]
    pub spu_public: Option<String>,
    /// The SPU's address for the SC (`HOST:PORT`).
    #[arg(long, env = "SHELF_SPU_PRIVATE")]
    pub spu_private: Option<String>,
    /// Leave the topics alone (create them with the `fluvio` CLI instead).
    #[arg(long)]
    pub skip_topics: bool,
    /// Only register the SPU and create the topics; leave Arroyo alone (a cluster without
    /// Arroyo, such as `scripts/fluvio-local.sh`'s).
    #[arg(long, conflicts_with = "skip_topics")]
    pub skip_pipelines: bool,
}

fn print(step: &Step) {
    println!(
        "{}",
        serde_json::to_string(step).expect("a step serialises")
    );
}

#[cfg(feature = "fluvio")]
fn create_topics(args: &DeployArgs) -> anyhow::Result<()> {
    let cluster = shelf_stream::FluvioCluster::connect_within(
        &args.fluvio_endpoint,
        Duration::from_secs(args.wait_secs),
    )?;
    if let (Some(id), Some(public), Some(private)) =
        (args.spu_id, &args.spu_public, &args.spu_private)
    {
        let registered = cluster.ensure_spu(id, public, private)?;
        print(&Step {
            kind: "spu",
            name: id.to_string(),
            outcome: if registered {
                Outcome::Created
            } else {
                Outcome::Unchanged
            },
        });
    }
    for topic in TOPICS {
        let created = cluster.ensure_topic(topic, args.partitions)?;
        print(&Step {
            kind: "topic",
            name: topic.into(),
            outcome: if created {
                Outcome::Created
            } else {
                Outcome::Unchanged
            },
        });
    }
    Ok(())
}

#[cfg(not(feature = "fluvio"))]
fn create_topics(_: &DeployArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "creating topics needs a shelf built with the `fluvio` feature; pass --skip-topics and \
         create {} with the fluvio CLI",
        TOPICS.join(", ")
    )
}

pub fn run(args: DeployArgs) -> anyhow::Result<()> {
    if !args.skip_topics {
        create_topics(&args)?;
    }
    if args.skip_pipelines {
        return Ok(());
    }
    let deploy = ArroyoDeploy {
        fluvio_endpoint: args
            .pipeline_fluvio_endpoint
            .clone()
            .unwrap_or_else(|| args.fluvio_endpoint.clone()),
        parallelism: args.parallelism.max(1),
        wait: Duration::from_secs(args.wait_secs),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registering a UDF makes Arroyo compile it: allow minutes, not seconds.
    let api = HttpTransport::new(&args.arroyo_url, None)
        .with_timeout(std::time::Duration::from_secs(600));
    let steps = runtime.block_on(deploy.run(&api, &bundled_udfs(), &bundled_pipelines()))?;
    for step in &steps {
        print(step);
    }
    Ok(())
}
