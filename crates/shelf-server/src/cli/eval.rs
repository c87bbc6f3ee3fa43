//! `shelf eval`: offline evaluation from files — `relevance` (items, queries, graded
//! judgments: ANN-only against ANN + re-rank), `interactions` (items and a time-ordered
//! interaction log replayed through the event job, each user's last interaction held out:
//! popularity, item-kNN, EASE, profile-ANN, co-visitation and shelf's recommendation path)
//! and `ctr` (held-out impressions).

use super::baselines::{Ease, Interactions, ItemKnn};
use super::model::ModelArgs;
use anyhow::Context;
use clap::{Args, Subcommand};
use shelf_engine::{RetrievalConfig, Retriever, SearchRequest, Source};
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
    /// Next-interaction prediction: replay a time-ordered interaction log, hold out each
    /// user's last interaction, and score popularity, item-kNN, EASE, profile-ANN,
    /// co-visitation and shelf's recommendation path.
    Interactions(Box<InteractionsArgs>),
    /// Click prediction on the newest logged impressions of a data directory: AUC and
    /// log-loss of the prior and of every saved model.
    Ctr(CtrArgs),
    /// Writes the demo shop's catalog and its shoppers' browsing (with companion items
    /// bought together) as `items.jsonl` and `interactions.tsv` for `eval interactions`.
    DemoData(DemoDataArgs),
}

#[derive(Debug, Args)]
pub struct DemoDataArgs {
    /// Directory to write `items.jsonl` and `interactions.tsv` into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Products in the shop.
    #[arg(long, default_value_t = 2_000)]
    pub items: usize,
    /// Shoppers.
    #[arg(long, default_value_t = 300)]
    pub users: usize,
    /// Sessions per shopper.
    #[arg(long, default_value_t = 20)]
    pub sessions: usize,
    /// Seed of the shop, the shoppers and their sessions.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
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

#[derive(Debug, Args)]
pub struct InteractionsArgs {
    /// Items, JSON lines (as for `relevance`).
    #[arg(long)]
    pub items: PathBuf,
    /// Interactions in time order (sorted here anyway, stably): JSON lines
    /// `{"user_id","item_id","kind","ts"}`, or TSV/CSV lines `user_id,item_id,kind,ts` (a
    /// header line is skipped). `kind`: view, click, add_to_cart or purchase (a missing
    /// kind column means --default-kind); `ts`: RFC 3339, or Unix seconds or milliseconds.
    #[arg(long)]
    pub interactions: PathBuf,
    /// Kind of interactions whose file has no kind column.
    #[arg(long, default_value = "view")]
    pub default_kind: String,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cut-off of Recall and NDCG.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Users with fewer interactions than this are not evaluated (their events still shape
    /// popularity and the others' history).
    #[arg(long, default_value_t = 3)]
    pub min_interactions: usize,
    /// Evaluate at most this many users (the first in id order; 0: all).
    #[arg(long, default_value_t = 0)]
    pub max_users: usize,
    /// A trained model (`DATA/models/*.json`) to re-rank with instead of the prior.
    #[arg(long)]
    pub ranker: Option<PathBuf>,
    /// Neighbours kept per item by the item-kNN baseline.
    #[arg(long, default_value_t = 100)]
    pub knn_neighbours: usize,
    /// L2 regularisation λ of the EASE baseline.
    #[arg(long, default_value_t = 500.0)]
    pub ease_lambda: f64,
    /// EASE is skipped (with a message) above this many interacted items: its dense
    /// inverse takes 8 n² bytes and O(n³) time.
    #[arg(long, default_value_t = super::baselines::Ease::DEFAULT_MAX_ITEMS)]
    pub ease_max_items: usize,
    /// Depth at which each candidate source's recall is reported (does the held-out item
    /// reach stage 2 at all).
    #[arg(long, default_value_t = 100)]
    pub source_depth: usize,
    /// Also train a logistic ranker here and score the recommendation path with it: each
    /// evaluated user's last --train-rounds interactions before the held-out one are held
    /// back too; before each, the user's recommendation (100 candidates, ranked by the
    /// prior) becomes a training response with that item as the click, then it is
    /// replayed; a model is trained on those responses and the last interactions predicted
    /// as usual.
    #[arg(long)]
    pub train_ranker: bool,
    /// With --train-ranker: how many of each user's interactions before the held-out one
    /// become training responses.
    #[arg(long, default_value_t = 5)]
    pub train_rounds: usize,
}

pub fn run(command: EvalCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        EvalCommand::Relevance(args) => runtime.block_on(relevance(*args)),
        EvalCommand::Interactions(args) => runtime.block_on(interactions(*args)),
        EvalCommand::Ctr(args) => ctr(args),
        EvalCommand::DemoData(args) => demo_data(args),
    }
}

fn demo_data(args: DemoDataArgs) -> anyhow::Result<()> {
    use crate::demo::{shop::Shop, users};
    use std::io::Write;
    anyhow::ensure!(
        args.items > 0 && args.users > 0,
        "--items and --users must be positive"
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let shop = Shop::generate(args.items, args.seed);
    let shoppers = users::users(args.users, args.seed + 1);
    let log = users::browsing_log(&shop, &shoppers, args.sessions, args.seed + 2);
    let write = |name: &str, body: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| {
        let path = args.out.join(name);
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        body(&mut file)?;
        file.flush()?;
        anyhow::Ok(())
    };
    write("items.jsonl", &|out| {
        for p in &shop.products {
            writeln!(out, "{}", serde_json::to_string(&p.item)?)?;
        }
        Ok(())
    })?;
    write("interactions.tsv", &|out| {
        writeln!(out, "user_id\titem_id\tkind\tts")?;
        for x in &log {
            writeln!(
                out,
                "{}\t{}\t{}\t{}",
                x.user_id, x.item_id, x.kind, x.ts_secs
            )?;
        }
        Ok(())
    })?;
    eprintln!(
        "wrote {} items and {} interactions of {} shoppers to {}",
        shop.products.len(),
        log.len(),
        shoppers.len(),
        args.out.display()
    );
    Ok(())
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
    let mut examples = shelf_node::models::examples(&store)?;
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
    let groups: Vec<u64> = held_out.iter().map(|e| e.request).collect();
    let positions: Vec<u32> = held_out.iter().map(|e| e.position).collect();
    let clicks_ndcg = |scores: &[f32]| shelf_rank::clicks_ndcg_at(10, scores, &labels, &groups);
    let matched_auc = |scores: &[f32]| {
        shelf_rank::position_matched_auc(scores, &labels, &positions).unwrap_or(0.5)
    };
    let prior = PriorRanker::default();
    let prior_scores: Vec<f32> = held_out.iter().map(|e| prior.score(&e.features)).collect();
    let mut rows = vec![(
        "prior".to_string(),
        shelf_rank::auc(&prior_scores, &labels).unwrap_or(0.5),
        matched_auc(&prior_scores),
        None,
        clicks_ndcg(&prior_scores),
    )];
    for model in shelf_node::models::list(&args.data.data_dir)? {
        let scores: Vec<f32> = held_out.iter().map(|e| model.score(&e.features)).collect();
        let probabilities: Vec<f32> = held_out
            .iter()
            .map(|e| model.probability(&e.features, e.position))
            .collect();
        rows.push((
            model.version.clone(),
            shelf_rank::auc(&scores, &labels).unwrap_or(0.5),
            matched_auc(&scores),
            Some(shelf_rank::log_loss(&probabilities, &labels)),
            clicks_ndcg(&scores),
        ));
    }
    eprintln!(
        "{:<28} {:>7} {:>11} {:>9} {:>14}   ({} held-out shown items, {clicks} clicked)",
        "model",
        "AUC",
        "matched AUC",
        "log-loss",
        "clicks NDCG@10",
        labels.len()
    );
    for (name, auc, matched, loss, ndcg) in &rows {
        let loss_text = loss.map_or("—".to_string(), |l| format!("{l:.4}"));
        let ndcg_text = ndcg.map_or("—".to_string(), |n| format!("{n:.4}"));
        eprintln!("{name:<28} {auc:>7.4} {matched:>11.4} {loss_text:>9} {ndcg_text:>14}");
        println!(
            "{}",
            serde_json::json!({"model": name, "auc": auc, "position_matched_auc": matched,
                               "log_loss": loss,
                               "clicks_ndcg_at_10": ndcg,
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
    Ok((store, embedder, index))
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
    let ranker = load_ranker(args.ranker.as_deref())?;

    // Embed the catalogue into a scratch store and index.
    let scratch = std::env::temp_dir().join(format!("shelf-eval-{}", std::process::id()));
    let result = async {
        let (store, embedder, index) = scratch_catalog(&items, &args.model, &scratch).await?;
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

/// Applies `interactions` (in order) through the event job as records from `*offset` on.
async fn replay_events(
    job: &mut shelf_engine::EventJob,
    interactions: &[&Interaction],
    offset: &mut u64,
) -> anyhow::Result<()> {
    use shelf_engine::Job;
    for chunk in interactions.chunks(1024) {
        let records = chunk
            .iter()
            .map(|x| {
                let ts = time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(x.ts_ms) * 1_000_000,
                )?;
                let event = shelf_types::Event {
                    user_id: x.user.clone().into(),
                    kind: x.kind,
                    item_id: Some(x.item.clone().into()),
                    query: None,
                    request_id: None,
                    position: None,
                    ts,
                };
                *offset += 1;
                Ok(shelf_stream::Record {
                    partition: 0,
                    offset: *offset - 1,
                    payload: serde_json::to_vec(&event)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        job.apply(records).await?;
    }
    Ok(())
}

/// One interaction of the log.
#[derive(Clone, Debug)]
struct Interaction {
    user: String,
    item: String,
    kind: shelf_types::EventKind,
    ts_ms: i64,
}

/// A timestamp: RFC 3339, or Unix seconds (below 10^11) or milliseconds.
fn parse_ts(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<f64>() {
        return n
            .is_finite()
            .then(|| if n.abs() < 1e11 { n * 1000.0 } else { n } as i64);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn parse_kind(text: &str) -> Option<shelf_types::EventKind> {
    serde_json::from_value(serde_json::Value::String(text.trim().to_lowercase())).ok()
}

fn read_interactions(path: &Path, default_kind: &str) -> anyhow::Result<Vec<Interaction>> {
    let default_kind = parse_kind(default_kind)
        .filter(|k| *k != shelf_types::EventKind::Search)
        .ok_or_else(|| {
            anyhow::anyhow!("--default-kind {default_kind:?} is not an item event kind")
        })?;
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let at = || format!("{}: line {n}", path.display());
        let (user, item, kind, ts) = if line.trim_start().starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&line).with_context(at)?;
            let field = |name: &str| match &v[name] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(x) => Some(x.to_string()),
                _ => None,
            };
            (
                field("user_id"),
                field("item_id"),
                field("kind"),
                field("ts"),
            )
        } else {
            let fields: Vec<String> = line
                .split(['\t', ','])
                .map(|f| f.trim().to_string())
                .collect();
            match fields.as_slice() {
                [u, i, k, t] => (
                    Some(u.clone()),
                    Some(i.clone()),
                    Some(k.clone()),
                    Some(t.clone()),
                ),
                [u, i, t] => (Some(u.clone()), Some(i.clone()), None, Some(t.clone())),
                _ => anyhow::bail!("{}: expected user_id, item_id, kind, ts", at()),
            }
        };
        let ts_ms = ts.as_deref().and_then(parse_ts);
        if ts_ms.is_none() && n == 1 && !line.trim_start().starts_with('{') {
            continue; // a header
        }
        let (Some(user), Some(item), Some(ts_ms)) = (user, item, ts_ms) else {
            anyhow::bail!(
                "{}: needs user_id, item_id and a timestamp (RFC 3339 or Unix time)",
                at()
            );
        };
        let kind = match kind {
            Some(k) => parse_kind(&k)
                .filter(|k| *k != shelf_types::EventKind::Search)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: kind {k:?} is not view, click, add_to_cart or purchase",
                        at()
                    )
                })?,
            None => default_kind,
        };
        anyhow::ensure!(!user.is_empty() && !item.is_empty(), "{}: empty id", at());
        out.push(Interaction {
            user,
            item,
            kind,
            ts_ms,
        });
    }
    anyhow::ensure!(!out.is_empty(), "{}: no interactions", path.display());
    out.sort_by_key(|i| i.ts_ms);
    Ok(out)
}

async fn interactions(args: InteractionsArgs) -> anyhow::Result<()> {
    use shelf_engine::EventJob;
    use shelf_store::DecayConfig;
    use std::collections::{BTreeMap, HashSet};

    anyhow::ensure!(args.k > 0, "--k must be positive");
    let items = read_items(&args.items)?;
    let known: HashSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let all = read_interactions(&args.interactions, &args.default_kind)?;
    let total = all.len();
    let log: Vec<Interaction> = all
        .into_iter()
        .filter(|i| known.contains(i.item.as_str()))
        .collect();
    let unknown = total - log.len();
    anyhow::ensure!(
        !log.is_empty(),
        "no interaction names an item of {}",
        args.items.display()
    );

    // Each user's last interaction (in time) is held out; everything else is replayed.
    let mut per_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, x) in log.iter().enumerate() {
        per_user.entry(x.user.as_str()).or_default().push(i);
    }
    let mut held_out: BTreeMap<&str, usize> = per_user
        .iter()
        .filter(|(_, seen)| seen.len() >= args.min_interactions.max(2))
        .map(|(user, seen)| (*user, *seen.last().expect("non-empty")))
        .collect();
    if args.max_users > 0 {
        let keep: HashSet<&str> = held_out.keys().take(args.max_users).copied().collect();
        held_out.retain(|u, _| keep.contains(u));
    }
    anyhow::ensure!(
        !held_out.is_empty(),
        "no user has {} or more interactions with known items",
        args.min_interactions.max(2)
    );
    let held: HashSet<usize> = held_out.values().copied().collect();
    let ranker = load_ranker(args.ranker.as_deref())?;

    let scratch = std::env::temp_dir().join(format!("shelf-eval-{}", std::process::id()));
    let result = async {
        let (store, embedder, index) = scratch_catalog(&items, &args.model, &scratch).await?;

        // Replay through the event job, as the stream would deliver it.
        let mut job = EventJob::new(Arc::clone(&store), DecayConfig::default(), embedder.dim());
        let mut popularity: HashMap<&str, f64> = HashMap::new();
        let mut history: HashMap<&str, HashSet<&str>> = HashMap::new();
        let replay: Vec<&Interaction> = log
            .iter()
            .enumerate()
            .filter(|(i, _)| !held.contains(i))
            .map(|(_, x)| x)
            .collect();
        // With --train-ranker, each evaluated user's last --train-rounds interactions before
        // the held-out one are held back: round r asks for every such user's
        // recommendation before their r-th held-back interaction (a training response whose
        // click is that item), then replays those interactions.
        let held_back: BTreeMap<&str, Vec<usize>> = if args.train_ranker {
            held_out
                .keys()
                .map(|user| {
                    let seen = &per_user[user];
                    let before = &seen[..seen.len() - 1];
                    let keep = before.len().saturating_sub(args.train_rounds).max(1);
                    (*user, before[keep.min(before.len())..].to_vec())
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        let held_back_all: HashSet<usize> = held_back.values().flatten().copied().collect();
        let first: Vec<&Interaction> = log
            .iter()
            .enumerate()
            .filter(|(i, _)| !held.contains(i) && !held_back_all.contains(i))
            .map(|(_, x)| x)
            .collect();
        let mut offset = 0u64;
        replay_events(&mut job, &first, &mut offset).await?;
        let trained: Option<Arc<dyn Ranker>> = if args.train_ranker {
            let retriever = Retriever::new(
                Arc::clone(&store),
                embedder.clone(),
                index.clone(),
                Arc::clone(&ranker),
                RetrievalConfig {
                    exploration_share: 0.0,
                    ..Default::default()
                },
            );
            let mut examples = Vec::new();
            let mut requests = 0u64;
            for round in 0..args.train_rounds {
                let mut targets: Vec<(&str, usize)> = held_back
                    .iter()
                    .filter_map(|(user, backs)| backs.get(round).map(|&i| (*user, i)))
                    .collect();
                for &(user, target) in &targets {
                    let target = &log[target];
                    let response = retriever
                        .search(&SearchRequest {
                            user_id: Some(user.to_string().into()),
                            k: 100,
                            ..Default::default()
                        })
                        .await?;
                    requests += 1;
                    // Nobody saw these lists, so there is no position bias to learn: every
                    // candidate gets the serving position.
                    for item in &response.items {
                        examples.push(shelf_rank::Example {
                            features: item.features,
                            position: shelf_rank::SERVING_POSITION,
                            clicked: item.id.as_str() == target.item,
                            ts_ms: target.ts_ms,
                            request: requests,
                        });
                    }
                }
                targets.sort_by_key(|&(_, i)| i);
                let round_events: Vec<&Interaction> = targets.iter().map(|&(_, i)| &log[i]).collect();
                replay_events(&mut job, &round_events, &mut offset).await?;
            }
            let clicks = examples.iter().filter(|e| e.clicked).count();
            eprintln!(
                "training a logistic ranker on {requests} responses ({} candidates, {clicks} of them the next item)",
                examples.len()
            );
            let model = shelf_rank::train(
                &examples,
                &shelf_rank::TrainConfig::default(),
                "logistic-eval",
            )?;
            eprintln!(
                "trained: validation position-matched AUC {:.4} (prior {:.4})",
                model.report.validation_position_matched_auc,
                model.report.prior_validation_position_matched_auc
            );
            Some(Arc::new(model))
        } else {
            None
        };
        for x in &replay {
            *popularity.entry(x.item.as_str()).or_default() += 1.0;
            history.entry(x.user.as_str()).or_default().insert(x.item.as_str());
        }
        let mut by_popularity: Vec<(&str, f64)> = popularity.into_iter().collect();
        by_popularity.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));

        // The collaborative baselines see the same training interactions.
        let matrix = Interactions::new(replay.iter().map(|x| (x.user.as_str(), x.item.as_str())));
        let knn = ItemKnn::fit(&matrix, args.knn_neighbours);
        let ease = match Ease::fit(&matrix, args.ease_lambda, args.ease_max_items) {
            Ok(ease) => Some(ease),
            Err(e) => {
                eprintln!("ease skipped: {e}");
                None
            }
        };

        let retriever = Retriever::new(
            Arc::clone(&store),
            embedder.clone(),
            index.clone(),
            ranker,
            RetrievalConfig {
                exploration_share: 0.0,
                ..Default::default()
            },
        );
        let ranker_name = retriever.ranker().name().to_string();
        let mut systems: Vec<String> = ["popularity", "item-knn"].map(String::from).to_vec();
        if ease.is_some() {
            systems.push("ease".into());
        }
        systems.extend(["profile-ann".into(), "covisit".into(), format!("recommend:{ranker_name}")]);
        if let Some(model) = &trained {
            systems.push(format!("recommend:{}", model.name()));
        }
        let mut totals: Vec<Totals> = systems.iter().map(|_| Totals::default()).collect();
        let sources = [Source::Profile, Source::Covisit, Source::Trending];
        // Hits at --source-depth per source, then of their union.
        let mut source_hits = vec![0usize; sources.len() + 1];
        let (mut evaluated, mut repeats) = (0usize, 0usize);
        for (user, &target) in &held_out {
            let target = log[target].item.as_str();
            let seen = history.get(user).cloned().unwrap_or_default();
            if seen.contains(target) {
                repeats += 1; // every system drops seen items, so a repeat cannot be hit
                continue;
            }
            let Some(profile) = store.profile(user)? else {
                continue;
            };
            evaluated += 1;
            let depth = args.k + seen.len();
            let unseen = |ids: Vec<String>| -> Vec<String> {
                ids.into_iter()
                    .filter(|id| !seen.contains(id.as_str()))
                    .take(args.k)
                    .collect()
            };
            let mut ranked: Vec<Vec<String>> = Vec::with_capacity(systems.len());
            ranked.push(unseen(by_popularity.iter().take(depth).map(|(id, _)| id.to_string()).collect()));
            let row = matrix.row(user);
            ranked.push(matrix.top_unseen(user, &knn.scores(row), args.k));
            if let Some(ease) = &ease {
                ranked.push(matrix.top_unseen(user, &ease.scores(row), args.k));
            }
            let norm = profile.interest.iter().map(|x| x * x).sum::<f32>().sqrt();
            ranked.push(if norm > 0.0 {
                let unit: Vec<f32> = profile.interest.iter().map(|x| x / norm).collect();
                unseen(
                    index
                        .search(&unit, depth, None, &Default::default())?
                        .into_iter()
                        .map(|h| h.id.0)
                        .collect(),
                )
            } else {
                Vec::new()
            });
            let lists = retriever.recommendation_sources(user)?;
            let list_of = |source: Source| -> Vec<String> {
                lists
                    .iter()
                    .find(|(s, _)| *s == source)
                    .map(|(_, ids)| ids.iter().map(|id| id.0.clone()).collect())
                    .unwrap_or_default()
            };
            ranked.push(unseen(list_of(Source::Covisit)));
            let request = SearchRequest {
                user_id: Some((*user).to_string().into()),
                k: depth,
                ..Default::default()
            };
            let recommend = |response: shelf_engine::SearchResponse| {
                unseen(response.items.into_iter().map(|i| i.id.0).collect())
            };
            ranked.push(recommend(retriever.search(&request).await?));
            if let Some(model) = &trained {
                let live = retriever.ranker();
                retriever.set_ranker(Arc::clone(model));
                ranked.push(recommend(retriever.search(&request).await?));
                retriever.set_ranker(live);
            }
            let mut reached = false;
            for (hits, source) in source_hits.iter_mut().zip(sources) {
                let list = list_of(source);
                if list.iter().take(args.source_depth).any(|id| id == target) {
                    *hits += 1;
                    reached = true;
                }
            }
            source_hits[sources.len()] += usize::from(reached);
            let judgment: Judgments = [(target.to_string(), 1)].into_iter().collect();
            for (ids, t) in ranked.iter().zip(totals.iter_mut()) {
                t.ndcg += ndcg_at(args.k, ids, &judgment);
                t.recall += recall_at(args.k, ids, &judgment);
                t.mrr += reciprocal_rank(ids, &judgment);
            }
        }
        anyhow::ensure!(evaluated > 0, "no held-out interaction could be evaluated ({repeats} were repeats of seen items)");
        let n = evaluated as f64;
        eprintln!(
            "{:<28} {:>10} {:>8} {:>7}   ({evaluated} users, {} items, {} interactions replayed; skipped: {repeats} repeat targets, {unknown} interactions with unknown items)",
            "system",
            format!("Recall@{}", args.k),
            format!("NDCG@{}", args.k),
            "MRR",
            items.len(),
            replay.len()
        );
        for (system, t) in systems.iter().zip(&totals) {
            eprintln!(
                "{system:<28} {:>10.4} {:>8.4} {:>7.4}",
                t.recall / n,
                t.ndcg / n,
                t.mrr / n
            );
            println!(
                "{}",
                serde_json::json!({
                    "system": system, "users": evaluated, "items": items.len(),
                    "replayed": replay.len(), "skipped_repeats": repeats,
                    "skipped_unknown_items": unknown,
                    format!("recall_at_{}", args.k): t.recall / n,
                    format!("ndcg_at_{}", args.k): t.ndcg / n,
                    "mrr": t.mrr / n,
                })
            );
        }
        eprintln!("candidate source    Recall@{} (the held-out item reaches stage 2)", args.source_depth);
        let names = sources.iter().map(|s| s.name()).chain(["all sources"]);
        for (name, hits) in names.zip(&source_hits) {
            let recall = *hits as f64 / n;
            eprintln!("{name:<19} {recall:.4}");
            println!(
                "{}",
                serde_json::json!({
                    "source": name, "users": evaluated,
                    format!("recall_at_{}", args.source_depth): recall,
                })
            );
        }
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
