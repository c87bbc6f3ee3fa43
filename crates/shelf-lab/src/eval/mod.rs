//! `shelf eval`: offline evaluation from files — `relevance` (items, queries, graded
//! judgments: ANN-only against ANN + re-rank), `interactions` (items and a time-ordered
//! interaction log replayed through the event job, each user's last interaction held out:
//! popularity, item-kNN, EASE, profile-ANN, co-visitation and shelf's recommendation path)
//! `ctr` (held-out impressions) and `languages` (English and Chinese on the demo shop);
//! and `ab`, an online A/B test against a running demo server.

use crate::baselines::{Ease, Interactions, ItemKnn};
use anyhow::Context;
use clap::{Args, Subcommand};
use shelf_cli::model::ModelArgs;
use shelf_engine::{
    convex_fusion, reciprocal_rank_fusion, Fusion, RetrievalConfig, Retriever, SearchMode,
    SearchRequest, Source,
};
use shelf_index::{HnswIndex, IndexConfig};
use shelf_lexical::LexicalIndex;
use shelf_rank::{ndcg_at, recall_at, reciprocal_rank, Judgments, PriorRanker};
use shelf_store::{text_hash, Store, StoreOptions, StoredVector};
use shelf_types::{
    Item, ItemAttributes, ItemId, ItemRecord, Ranker, TextEmbedder, TextRole, VectorIndex,
    FEATURE_COUNT, FEATURE_NAMES,
};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod ab;
mod ctr;
mod interaction_log;
mod interactions;
mod languages;
mod relevance;

pub use ab::AbArgs;
use ctr::*;
pub use ctr::{CtrArgs, DemoDataArgs};
use interaction_log::*;
pub use interactions::InteractionsArgs;
use interactions::*;
pub use languages::LanguagesArgs;
pub use relevance::RelevanceArgs;
use relevance::*;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Relevance of search results against graded judgments.
    Relevance(Box<RelevanceArgs>),
    /// Next-interaction prediction: replay a time-ordered interaction log, hold out each
    /// user's last interaction, and score popularity, item-kNN, EASE, profile-ANN,
    /// co-visitation and shelf's recommendation path.
    Interactions(Box<InteractionsArgs>),
    /// Click prediction on the newest logged impressions of a data directory: AUC and
    /// log-loss of the prior and of every saved model.
    Ctr(CtrArgs),
    /// Search across languages on the demo shop (English and Chinese catalogues and
    /// queries): semantic and lexical NDCG, and overlap with the English query's results.
    Languages(Box<LanguagesArgs>),
    /// An online A/B test of two rankers on a running `shelf serve --demo`: the demo's
    /// shoppers search through the API, split by the experiment, and each arm's clicks,
    /// carts and purchases per search are reported with 95% intervals.
    Ab(Box<AbArgs>),
    /// Writes the demo shop's catalog and its shoppers' browsing (with companion items
    /// bought together) as `items.jsonl` and `interactions.tsv` for `eval interactions`.
    DemoData(DemoDataArgs),
}

pub fn run(command: EvalCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        EvalCommand::Relevance(args) => runtime.block_on(relevance(*args)),
        EvalCommand::Interactions(args) => runtime.block_on(interactions(*args)),
        EvalCommand::Ctr(args) => ctr(args),
        EvalCommand::Languages(args) => runtime.block_on(languages::languages(*args)),
        EvalCommand::Ab(args) => runtime.block_on(ab::ab(*args)),
        EvalCommand::DemoData(args) => demo_data(args),
    }
}

fn lines(path: &Path) -> anyhow::Result<Vec<(usize, String)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: line {}", path.display(), i + 1))?;
        if !line.trim().is_empty() {
            out.push((i + 1, line));
        }
    }
    Ok(out)
}

/// `--prior-weights` as the prior's weights.
fn prior_weights(w: &[f32]) -> anyhow::Result<shelf_types::Features> {
    anyhow::ensure!(
        w.iter().all(|x| x.is_finite()),
        "--prior-weights must be finite numbers"
    );
    w.try_into().map_err(|_| {
        anyhow::anyhow!(
            "--prior-weights needs {FEATURE_COUNT} numbers, got {}",
            w.len()
        )
    })
}

/// The model of `--ranker`, or the prior.
fn load_ranker(path: Option<&Path>) -> anyhow::Result<Arc<dyn Ranker>> {
    Ok(match path {
        Some(path) => Arc::new(
            shelf_rank::LearnedModel::from_json(&std::fs::read_to_string(path)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ),
        None => Arc::new(PriorRanker::default()),
    })
}

/// The catalogue embedded into a scratch store and index under `scratch`.
async fn scratch_catalog(
    items: &[Item],
    model: &ModelArgs,
    scratch: &Path,
) -> anyhow::Result<(Arc<Store>, shelf_embed::Embedder, HnswIndex)> {
    let store = Arc::new(Store::open(
        &scratch.join("store"),
        StoreOptions {
            sync: false,
            ..Default::default()
        },
    )?);
    let embedder = model.start(32)?;
    let terminal = std::io::stderr().is_terminal();
    let mut rows = Vec::with_capacity(items.len());
    for (done, chunk) in items.chunks(256).enumerate() {
        let texts: Vec<String> = chunk.iter().map(Item::embedding_text).collect();
        let vectors = embedder.embed_as(TextRole::Document, texts.clone()).await?;
        let mut batch = store.batch();
        for ((item, text), vector) in chunk.iter().zip(&texts).zip(vectors) {
            let stored = StoredVector {
                model_id: embedder.model_id().to_string(),
                text_hash: text_hash(text),
                vector: vector.0,
            };
            batch.put_item(item, &stored);
            rows.push((item.id.clone(), stored.vector, ItemAttributes::of(item)));
        }
        store.commit(batch)?;
        if terminal {
            eprint!(
                "\rembedded {} of {} items",
                ((done + 1) * 256).min(items.len()),
                items.len()
            );
        }
    }
    if terminal {
        eprintln!();
    }
    let index = HnswIndex::build(
        IndexConfig::new(embedder.dim()),
        rows.iter().map(|(id, v, a)| (id, &v[..], a.clone())),
    )?;
    Ok((store, embedder, index))
}
