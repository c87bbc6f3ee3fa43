//! `shelf eval relevance`: graded product-search judgments (items, queries, grades) scored
//! by NDCG, recall and MRR, with BM25 beside shelf.

use super::*;

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

pub(super) fn read_items(path: &Path) -> anyhow::Result<Vec<Item>> {
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

pub(super) fn read_queries(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
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

pub(super) fn read_judgments(path: &Path) -> anyhow::Result<HashMap<String, Judgments>> {
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
pub(super) struct Totals {
    pub(super) ndcg: f64,
    pub(super) recall: f64,
    pub(super) mrr: f64,
}

pub(super) async fn relevance(args: RelevanceArgs) -> anyhow::Result<()> {
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
