//! shelf-node: the engine core of a shelf process (store, index, embedders and streams, the
//! supervised jobs that apply them, recovery, snapshots, impressions, training and expiry),
//! without HTTP.

pub mod config;
pub mod experiments;
pub mod metrics;
pub mod models;
mod node;
pub mod rules;
mod streams;
pub mod supervisor;

pub use config::NodeConfig;
pub use node::{Node, NodeTasks, ShelfRetriever};
#[cfg(feature = "fluvio")]
pub use streams::FluvioTopics;
pub use streams::{record_keys, Streams, ITEM_VECTORS_TOPIC};
