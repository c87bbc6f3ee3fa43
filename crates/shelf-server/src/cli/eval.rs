//! `shelf eval relevance`: offline relevance evaluation from files — items, queries and
//! graded judgments — of ANN-only retrieval and of ANN + re-rank (NDCG@10, Recall@100, MRR).

use super::model::ModelArgs;
use anyhow::Context;
use clap::{Args, Subcommand};
use shelf_engine::{RetrievalConfig, Retriever, SearchRequest};
use shelf_index::{HnswIndex, IndexConfig};
use shelf_rank::{ndcg_at, recall_at, reciprocal_rank, Judgments, PriorRanker};
use shelf_store::{text_hash, Store, StoreOptions, StoredVector};
use shelf_types::{Item, ItemAttributes, ItemRecord, Ranker};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Relevance of search results against graded judgments.
    Relevance(Box<RelevanceArgs>),
    /// Click prediction on the newest logged impressions of a data directory: AUC and
    /// log-loss of the prior and of every saved model.
    Ctr(CtrArgs),
}

#[derive(Debug, Args)]
pub struct CtrArgs {
    #[command(flatten)]
    pub data: super::data::DataArgs,
    /// Newest share of the shown items held out for evaluation.
    #[arg(long, default_value_t = 0.2)]
    pub held_out_share: f64,
}

#[derive(Debug, Args)]
pub struct RelevanceArgs {
    /// Items, JSON lines: item records (`{"op":"upsert",...}`) or bare items (`{"id","title",...}`).
    #[arg(long)]
    pub items: PathBuf,
    /// Queries, JSON lines: `{"id": "q1", "text": "red sofa"}`.
    #[arg(long)]
    pub queries: PathBuf,
    /// Judgments: `query_id<TAB>item_id<TAB>grade` lines (grade 0 = not relevant), or TREC
    /// qrels (`query_id 0 item_id grade`). A header line is skipped.
    #[arg(long)]
    pub judgments: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cut-off of NDCG.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Depth of retrieval and of Recall.
    #[arg(long, default_value_t = 100)]
    pub depth: usize,
    /// A trained model (`DATA/models/*.json`) to re-rank with instead of the prior.
    #[arg(long)]
    pub ranker: Option<PathBuf>,
}

pub fn run(command: EvalCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        EvalCommand::Relevance(args) => runtime.block_on(relevance(*args)),
        EvalCommand::Ctr(args) => ctr(args),
    }
}

/// AUC and log-loss on the held-out newest impressions. The prior's scores are not
/// probabilities, so it has no log-loss. A model trained after those impressions were
/// logged has seen them: compare models on impressions newer than their training.
fn ctr(args: CtrArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.held_out_share > 0.0 && args.held_out_share < 1.0,
        "--held-out-share must be between 0 and 1"
    );
    let store = args.data.open_store_read_only()?;
    let mut examples = crate::models::examples(&store)?;
    examples.sort_by_key(|e| e.ts_ms);
    let split = ((examples.len() as f64) * (1.0 - args.held_out_share)).round() as usize;
    let held_out = &examples[split..];
    let labels: Vec<bool> = held_out.iter().map(|e| e.clicked).collect();
    let clicks = labels.iter().filter(|c| **c).count();
    anyhow::ensure!(
        clicks > 0 && clicks < labels.len(),
        "the held-out impressions ({} shown items, {clicks} clicked) need clicks and non-clicks",
        labels.len()
    );
    let prior = PriorRanker::default();
    let prior_scores: Vec<f32> = held_out.iter().map(|e| prior.score(&e.features)).collect();
    let mut rows = vec![(
        "prior".to_string(),
        shelf_rank::auc(&prior_scores, &labels).unwrap_or(0.5),
        None,
    )];
    for model in crate::models::list(&args.data.data_dir)? {
        let scores: Vec<f32> = held_out.iter().map(|e| model.score(&e.features)).collect();
        let probabilities: Vec<f32> = held_out
            .iter()
            .map(|e| model.probability(&e.features, e.position))
            .collect();
        rows.push((
            model.version.clone(),
            shelf_rank::auc(&scores, &labels).unwrap_or(0.5),
            Some(shelf_rank::log_loss(&probabilities, &labels)),
        ));
    }
    eprintln!(
        "{:<28} {:>7} {:>9}   ({} held-out shown items, {clicks} clicked)",
        "model",
        "AUC",
        "log-loss",
        labels.len()
    );
    for (name, auc, loss) in &rows {
        let loss_text = loss.map_or("—".to_string(), |l| format!("{l:.4}"));
        eprintln!("{name:<28} {auc:>7.4} {loss_text:>9}");
        println!(
            "{}",
            serde_json::json!({"model": name, "auc": auc, "log_loss": loss,
                               "held_out": labels.len(), "clicks": clicks})
        );
    }
    Ok(())
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

fn read_items(path: &Path) -> anyhow::Result<Vec<Item>> {
    let mut items = Vec::new();
    for (n, line) in lines(path)? {
        let value: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: line {n}: not JSON", path.display()))?;
        let item = if value.get("op").is_some() {
            match serde_json::from_value::<ItemRecord>(value) {
                Ok(ItemRecord::Upsert(item)) => item,
                Ok(ItemRecord::Delete { .. }) => continue,
                Err(e) => anyhow::bail!("{}: line {n}: {e}", path.display()),
            }
        } else {
            serde_json::from_value::<Item>(value)
                .with_context(|| format!("{}: line {n}", path.display()))?
        };
        item.validate()
            .with_context(|| format!("{}: line {n}", path.display()))?;
        items.push(item);
    }
    anyhow::ensure!(!items.is_empty(), "{}: no items", path.display());
    Ok(items)
}

fn read_queries(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    #[derive(serde::Deserialize)]
    struct Query {
        id: serde_json::Value,
        text: String,
    }
    lines(path)?
        .into_iter()
        .map(|(n, line)| {
            let q: Query = serde_json::from_str(&line).with_context(|| {
                format!(
                    "{}: line {n}: expected {{\"id\", \"text\"}}",
                    path.display()
                )
            })?;
            let id = match q.id {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            Ok((id, q.text))
        })
        .collect()
}

fn read_judgments(path: &Path) -> anyhow::Result<HashMap<String, Judgments>> {
    let mut out: HashMap<String, Judgments> = HashMap::new();
    for (n, line) in lines(path)? {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (query, item, grade) = match fields.as_slice() {
            [q, i, g] => (*q, *i, *g),
            [q, _, i, g] => (*q, *i, *g),
            _ => anyhow::bail!(
                "{}: line {n}: expected query_id, item_id, grade",
                path.display()
            ),
        };
        let Ok(grade) = grade.parse::<f64>() else {
            if n == 1 {
                continue; // a header
            }
            anyhow::bail!(
                "{}: line {n}: grade `{grade}` is not a number",
                path.display()
            );
        };
        out.entry(query.to_string())
            .or_default()
            .insert(item.to_string(), grade.max(0.0).round() as u32);
    }
    Ok(out)
}

#[derive(Default)]
struct Totals {
    ndcg: f64,
    recall: f64,
    mrr: f64,
}

async fn relevance(args: RelevanceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.k > 0 && args.depth >= args.k,
        "need 0 < --k <= --depth"
    );
    let items = read_items(&args.items)?;
    let queries = read_queries(&args.queries)?;
    let judgments = read_judgments(&args.judgments)?;
    let judged: Vec<&(String, String)> = queries
        .iter()
        .filter(|(id, _)| {
            judgments
                .get(id)
                .is_some_and(|j| j.values().any(|g| *g > 0))
        })
        .collect();
    anyhow::ensure!(
        !judged.is_empty(),
        "no query has a positive judgment (query ids must match between the files)"
    );
    let ranker: Arc<dyn Ranker> = match &args.ranker {
        Some(path) => Arc::new(
            shelf_rank::LearnedModel::from_json(&std::fs::read_to_string(path)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ),
        None => Arc::new(PriorRanker::default()),
    };

    // Embed the catalogue into a scratch store and index.
    let scratch = std::env::temp_dir().join(format!("shelf-eval-{}", std::process::id()));
    let result = async {
        let store = Arc::new(Store::open(
            &scratch.join("store"),
            StoreOptions { sync: false },
        )?);
        let embedder = args.model.start(32)?;
        let terminal = std::io::stderr().is_terminal();
        let mut rows = Vec::with_capacity(items.len());
        for (done, chunk) in items.chunks(256).enumerate() {
            let texts: Vec<String> = chunk.iter().map(Item::embedding_text).collect();
            let vectors = embedder.embed(texts.clone()).await?;
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
        let retriever = Retriever::new(
            Arc::clone(&store),
            embedder.clone(),
            index.clone(),
            ranker,
            RetrievalConfig {
                candidates: args.depth,
                exploration_share: 0.0,
                ..Default::default()
            },
        );
        let (mut ann, mut reranked) = (Totals::default(), Totals::default());
        for (id, text) in &judged {
            let j = &judgments[id.as_str()];
            let query_vector = embedder.embed(vec![text.clone()]).await?.remove(0);
            let ann_ids: Vec<String> = index
                .search(&query_vector.0, args.depth, None, &Default::default())?
                .into_iter()
                .map(|h| h.id.0)
                .collect();
            let response = retriever
                .search(&SearchRequest {
                    query: Some(text.clone()),
                    k: args.depth,
                    ..Default::default()
                })
                .await?;
            let reranked_ids: Vec<String> = response.items.into_iter().map(|i| i.id.0).collect();
            for (ids, totals) in [(&ann_ids, &mut ann), (&reranked_ids, &mut reranked)] {
                totals.ndcg += ndcg_at(args.k, ids, j);
                totals.recall += recall_at(args.depth, ids, j);
                totals.mrr += reciprocal_rank(ids, j);
            }
        }
        let n = judged.len() as f64;
        let ranker_name = retriever.ranker().name().to_string();
        eprintln!(
            "{:<24} {:>9} {:>11} {:>7}   ({} queries, {} items)",
            "system",
            format!("NDCG@{}", args.k),
            format!("Recall@{}", args.depth),
            "MRR",
            judged.len(),
            items.len()
        );
        for (system, t) in [
            ("ann".to_string(), &ann),
            (format!("ann+rerank:{ranker_name}"), &reranked),
        ] {
            eprintln!(
                "{system:<24} {:>9.4} {:>11.4} {:>7.4}",
                t.ndcg / n,
                t.recall / n,
                t.mrr / n
            );
            println!(
                "{}",
                serde_json::json!({
                    "system": system, "queries": judged.len(), "items": items.len(),
                    format!("ndcg_at_{}", args.k): t.ndcg / n,
                    format!("recall_at_{}", args.depth): t.recall / n,
                    "mrr": t.mrr / n,
                })
            );
        }
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
