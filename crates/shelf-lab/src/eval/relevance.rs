//! `shelf eval relevance`: graded product-search judgments (items, queries, grades) scored
//! by NDCG, recall and MRR for each retrieval mode (lexical, semantic, hybrid), each as
//! retrieved and re-ranked.

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
    /// Evaluate one mode only (default: lexical, semantic and hybrid).
    #[arg(long, value_enum)]
    pub mode: Option<EvalMode>,
    /// How hybrid search fuses its lists (see `--fusion` of `shelf serve`).
    #[arg(long, value_enum)]
    pub fusion: Option<shelf_cli::serve::FusionArg>,
    /// The lexical share of convex fusion (see `shelf serve`).
    #[arg(long)]
    pub lexical_share: Option<f64>,
    /// The hybrid fusion's rank constant (see `--rrf-k` of `shelf serve`).
    #[arg(long)]
    pub rrf_k: Option<f64>,
    /// The lexical list's weight in the hybrid fusion (see `shelf serve`).
    #[arg(long)]
    pub lexical_weight: Option<f64>,
    /// Share of the best lexical score that keeps a hit on topic (see `shelf serve`).
    #[arg(long)]
    pub lexical_on_topic: Option<f32>,
    /// The prior's weights instead of its defaults: twelve numbers, comma-separated, in the
    /// order of the features (see the README's *Retrieval and ranking*).
    #[arg(long, value_delimiter = ',')]
    pub prior_weights: Option<Vec<f32>>,
    /// Also score hybrid + re-rank over a grid of the title's boost and the prior's
    /// `query_cosine`, `lexical_overlap` and `lexical_score` weights, and print each row:
    /// for tuning on a development set (report the chosen values' figures on a test set
    /// once).
    #[arg(long)]
    pub sweep: bool,
}

/// A retrieval mode to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalMode {
    Lexical,
    Semantic,
    Hybrid,
}

impl EvalMode {
    fn search_mode(self) -> SearchMode {
        match self {
            EvalMode::Lexical => SearchMode::Lexical,
            EvalMode::Semantic => SearchMode::Semantic,
            EvalMode::Hybrid => SearchMode::Hybrid,
        }
    }
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
    /// Each query's NDCG, for per-query wins and losses between systems.
    pub(super) per_query: Vec<(String, f64)>,
}

pub(super) async fn relevance(args: RelevanceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.k > 0 && args.depth >= args.k,
        "need 0 < --k <= --depth"
    );
    let items = read_items(&args.items)?;
    let queries = read_queries(&args.queries)?;
    let judgments = read_judgments(&args.judgments)?;
    let judged: Vec<(String, String)> = queries
        .into_iter()
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
    let ranker: Arc<dyn Ranker> = match (&args.prior_weights, &args.ranker) {
        (Some(_), Some(_)) => anyhow::bail!("give --prior-weights or --ranker, not both"),
        (Some(w), None) => Arc::new(PriorRanker::with_weights(prior_weights(w)?)),
        (None, path) => load_ranker(path.as_deref())?,
    };
    let mut config = RetrievalConfig {
        candidates: args.depth,
        exploration_share: 0.0,
        ..Default::default()
    };
    config.rrf_k = args.rrf_k.unwrap_or(config.rrf_k);
    config.lexical_weight = args.lexical_weight.unwrap_or(config.lexical_weight);
    config.fusion = args.fusion.map_or(config.fusion, Into::into);
    config.lexical_share = args.lexical_share.unwrap_or(config.lexical_share);
    anyhow::ensure!(
        (0.0..=1.0).contains(&config.lexical_share),
        "--lexical-share must be between 0 and 1"
    );
    config.lexical_on_topic = args.lexical_on_topic.unwrap_or(config.lexical_on_topic);

    // Embed the catalogue into a scratch store and index.
    let scratch = std::env::temp_dir().join(format!("shelf-eval-{}", std::process::id()));
    let result = async {
        let (store, embedder, index) = scratch_catalog(&items, &args.model, &scratch).await?;
        let lexical = Arc::new(LexicalIndex::in_memory());
        for item in &items {
            lexical.upsert(item)?;
        }
        lexical.commit(items.len() as u64)?;
        let retriever_with = |config: RetrievalConfig, ranker: Arc<dyn Ranker>| {
            Retriever::new(
                Arc::clone(&store),
                embedder.clone(),
                index.clone(),
                ranker,
                config,
            )
            .with_lexical(Arc::clone(&lexical))
        };
        let retriever = |config: RetrievalConfig| retriever_with(config, Arc::clone(&ranker));
        let eval = Eval {
            args: &args,
            judged: &judged,
            judgments: &judgments,
        };
        let modes = match args.mode {
            Some(mode) => vec![mode],
            None => vec![EvalMode::Lexical, EvalMode::Semantic, EvalMode::Hybrid],
        };
        let ranker_name = ranker.name().to_string();
        eprintln!(
            "{:<24} {:>9} {:>11} {:>7}   ({} queries, {} items)",
            "system",
            format!("NDCG@{}", args.k),
            format!("Recall@{}", args.depth),
            "MRR",
            judged.len(),
            items.len()
        );
        let main = retriever(config.clone());
        for mode in modes {
            // Stage 1 alone: the lexical list, the ANN list, or their fusion.
            let mut stage1 = Totals::default();
            for (id, text) in &judged {
                let lexical_hits = || -> anyhow::Result<Vec<(ItemId, f32)>> {
                    Ok(lexical.search(text, &Default::default(), args.depth)?.hits)
                };
                let ann_hits = || async {
                    let v = embedder.embed_as(TextRole::Query, vec![text.clone()]).await?.remove(0);
                    anyhow::Ok(
                        index
                            .search(&v.0, args.depth, None, &Default::default())?
                            .into_iter()
                            .map(|h| (h.id, h.score))
                            .collect::<Vec<(ItemId, f32)>>(),
                    )
                };
                let ids_of = |hits: Vec<(ItemId, f32)>| hits.into_iter().map(|(id, _)| id).collect();
                let ids: Vec<ItemId> = match mode {
                    EvalMode::Lexical => ids_of(lexical_hits()?),
                    EvalMode::Semantic => ids_of(ann_hits().await?),
                    EvalMode::Hybrid => match config.fusion {
                        Fusion::Rrf => reciprocal_rank_fusion(
                            &[
                                (ids_of(ann_hits().await?), 1.0),
                                (ids_of(lexical_hits()?), config.lexical_weight),
                            ],
                            config.rrf_k,
                        ),
                        Fusion::Convex => convex_fusion(
                            &ann_hits().await?,
                            &lexical_hits()?,
                            config.lexical_share,
                        ),
                    },
                };
                stage1.add(&eval, id, &ids);
            }
            let name = match mode {
                EvalMode::Hybrid if config.fusion == Fusion::Convex => "hybrid-convex".into(),
                _ => format!("{mode:?}").to_lowercase(),
            };
            eval.report(&name, &stage1, items.len());
            let reranked = eval.reranked(&main, mode).await?;
            eval.report(
                &format!("{name}+rerank:{ranker_name}"),
                &reranked,
                items.len(),
            );
        }
        if args.sweep {
            let base = match &args.prior_weights {
                Some(w) => prior_weights(w)?,
                None => *PriorRanker::default().weights(),
            };
            let at = |name: &str| FEATURE_NAMES.iter().position(|f| *f == name).unwrap();
            // Stage 1 fused by scores instead of ranks, at a range of lexical shares.
            let mut scored = Vec::with_capacity(judged.len());
            for (id, text) in &judged {
                let lexical_hits = lexical.search(text, &Default::default(), args.depth)?.hits;
                let v = embedder.embed_as(TextRole::Query, vec![text.clone()]).await?.remove(0);
                let ann_hits: Vec<(ItemId, f32)> = index
                    .search(&v.0, args.depth, None, &Default::default())?
                    .into_iter()
                    .map(|h| (h.id, h.score))
                    .collect();
                scored.push((id, ann_hits, lexical_hits));
            }
            eprintln!("sweep of hybrid stage 1 by convex score fusion (lexical share):");
            for share in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7] {
                let mut totals = Totals::default();
                for (id, ann_hits, lexical_hits) in &scored {
                    totals.add(&eval, id, &convex_fusion(ann_hits, lexical_hits, share));
                }
                eval.report(&format!("hybrid:convex {share}"), &totals, items.len());
            }
            eprintln!(
                "sweep of hybrid+rerank (title boost, w_query_cosine, w_lexical_overlap, w_lexical_score):"
            );
            for title in [1.0, 2.0, 3.0] {
                lexical.set_boosts(shelf_lexical::FieldBoosts {
                    title,
                    ..Default::default()
                });
                for w_cosine in [3.0, 4.0, 5.0] {
                    for w_overlap in [0.75, 1.5, 3.0] {
                        for w_lexical in [0.5, 1.0, 1.5] {
                            let mut weights = base;
                            weights[at("query_cosine")] = w_cosine;
                            weights[at("lexical_overlap")] = w_overlap;
                            weights[at("lexical_score")] = w_lexical;
                            let r = retriever_with(
                                config.clone(),
                                Arc::new(PriorRanker::with_weights(weights)),
                            );
                            let totals = eval.reranked(&r, EvalMode::Hybrid).await?;
                            eval.report(
                                &format!("sweep {title} {w_cosine} {w_overlap} {w_lexical}"),
                                &totals,
                                items.len(),
                            );
                        }
                    }
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// The judged queries and how they are scored.
struct Eval<'a> {
    args: &'a RelevanceArgs,
    judged: &'a [(String, String)],
    judgments: &'a HashMap<String, Judgments>,
}

impl Eval<'_> {
    /// Every judged query through `retriever` in `mode` (both stages).
    async fn reranked<E: TextEmbedder, I: VectorIndex>(
        &self,
        retriever: &Retriever<E, I>,
        mode: EvalMode,
    ) -> anyhow::Result<Totals> {
        let mut totals = Totals::default();
        for (id, text) in self.judged {
            let response = retriever
                .search(&SearchRequest {
                    query: Some(text.clone()),
                    mode: mode.search_mode(),
                    k: self.args.depth,
                    ..Default::default()
                })
                .await?;
            let ids: Vec<ItemId> = response.items.into_iter().map(|i| i.id).collect();
            totals.add(self, id, &ids);
        }
        Ok(totals)
    }

    fn report(&self, system: &str, t: &Totals, items: usize) {
        let n = self.judged.len() as f64;
        let (k, depth) = (self.args.k, self.args.depth);
        eprintln!(
            "{system:<24} {:>9.4} {:>11.4} {:>7.4}",
            t.ndcg / n,
            t.recall / n,
            t.mrr / n
        );
        println!(
            "{}",
            serde_json::json!({
                "system": system, "queries": self.judged.len(), "items": items,
                format!("ndcg_at_{k}"): t.ndcg / n,
                format!("recall_at_{depth}"): t.recall / n,
                "mrr": t.mrr / n,
                "per_query_ndcg": t.per_query,
            })
        );
    }
}

impl Totals {
    fn add(&mut self, eval: &Eval<'_>, query: &str, ids: &[ItemId]) {
        let ids: Vec<String> = ids.iter().map(|id| id.0.clone()).collect();
        let j = &eval.judgments[query];
        let ndcg = ndcg_at(eval.args.k, &ids, j);
        self.ndcg += ndcg;
        self.recall += recall_at(eval.args.depth, &ids, j);
        self.mrr += reciprocal_rank(&ids, j);
        self.per_query.push((query.to_string(), ndcg));
    }
}
