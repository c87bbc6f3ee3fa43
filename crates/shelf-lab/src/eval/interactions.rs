//! `shelf eval interactions`: leave-last-out recommendation on an interaction log (e.g.
//! MovieLens), shelf beside popularity, item-kNN and EASE.

use super::*;
use std::io::Write;

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
    /// The event job's co-visit and trending settings (as `shelf serve`'s).
    #[command(flatten)]
    pub behaviour: shelf_cli::serve::BehaviourArgs,
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
    /// Which interaction of each user is held out: `test`, the last; `validation`, the
    /// second-to-last, with the last dropped from the log (tune on it, report `test` once).
    #[arg(long, value_enum, default_value = "test")]
    pub split: Split,
    /// Also write every evaluated user's lists here, one JSON line per user and system:
    /// `{"user", "system", "held_out", "items"}`, and `scores` for the recommendation path
    /// (what the API gives for the same request;
    /// `tests/it/eval_cli.rs` checks it).
    #[arg(long)]
    pub lists_out: Option<PathBuf>,
    /// A trained model (`DATA/models/*.json`) to re-rank with instead of the prior.
    #[arg(long)]
    pub ranker: Option<PathBuf>,
    /// The prior's 12 weights instead of its defaults, comma-separated, in the order of
    /// the features (see the README's *Retrieval and ranking*).
    #[arg(long, value_delimiter = ',')]
    pub prior_weights: Option<Vec<f32>>,
    /// The user's most recent distinct items whose co-visit lists feed the recommendation
    /// (as `shelf serve --covisit-seeds`; a profile keeps 50).
    #[arg(long, env = "SHELF_COVISIT_SEEDS", default_value_t = 20)]
    pub covisit_seeds: usize,
    /// Neighbours kept per item by the item-kNN baseline.
    #[arg(long, default_value_t = 100)]
    pub knn_neighbours: usize,
    /// L2 regularisation λ of the EASE baseline.
    #[arg(long, default_value_t = 500.0)]
    pub ease_lambda: f64,
    /// EASE is skipped (with a message) above this many interacted items: its dense
    /// inverse takes 8 n² bytes and O(n³) time.
    #[arg(long, default_value_t = crate::baselines::Ease::DEFAULT_MAX_ITEMS)]
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
    /// With --train-ranker: the model trained (the MLP with 16 hidden units).
    #[arg(long, value_enum, default_value = "logistic")]
    pub train_model: shelf_cli::train::Kind,
    /// With --train-model trees: most splits from a tree's root to a leaf.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=12))]
    pub train_depth: u32,
    /// With --train-model trees: what the trees' scores start from.
    #[arg(long, value_enum, default_value = "prior")]
    pub train_boost_from: shelf_cli::train::BoostFrom,
    /// With --train-ranker: what training minimises (`lambdarank`: the order within each
    /// response, selected on validation NDCG@10; `pointwise`: click probability, selected
    /// on validation AUC).
    #[arg(long, value_enum, default_value = "lambdarank")]
    pub train_objective: shelf_cli::train::ObjectiveArg,
}

/// The held-out interaction `--split` picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    Validation,
    Test,
}

pub(super) async fn interactions(args: InteractionsArgs) -> anyhow::Result<()> {
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
    // Validation: each user's last interaction is not there at all, so the second-to-last
    // is held out below.
    let log = match args.split {
        Split::Test => log,
        Split::Validation => {
            let mut last: HashMap<&str, usize> = HashMap::new();
            for (i, x) in log.iter().enumerate() {
                last.insert(x.user.as_str(), i);
            }
            let dropped: HashSet<usize> = last.into_values().collect();
            log.iter()
                .enumerate()
                .filter(|(i, _)| !dropped.contains(i))
                .map(|(_, x)| x.clone())
                .collect()
        }
    };
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
    let behaviour = args.behaviour.config()?;
    // What `/v1/recommend` serves with, less exploration: the trained ranker's training
    // responses and the evaluated ones alike.
    let retrieval = RetrievalConfig {
        exploration_share: 0.0,
        covisit_seeds: args.covisit_seeds,
        ..Default::default()
    };
    let ranker: Arc<dyn Ranker> = match (&args.prior_weights, &args.ranker) {
        (Some(_), Some(_)) => anyhow::bail!("give --prior-weights or --ranker, not both"),
        (Some(w), None) => Arc::new(PriorRanker::with_weights(prior_weights(w)?)),
        (None, path) => load_ranker(path.as_deref())?,
    };

    let scratch = std::env::temp_dir().join(format!("shelf-eval-{}", std::process::id()));
    let result = async {
        let (store, embedder, index) = scratch_catalog(&items, &args.model, &scratch).await?;

        // Replay through the event job, as the stream would deliver it.
        let mut job = EventJob::new(Arc::clone(&store), DecayConfig::default(), embedder.dim())
            .with_behaviour(behaviour.clone());
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
                retrieval.clone(),
            );
            let mut examples = Vec::new();
            let mut requests = 0u64;
            // Each user's history so far: a training response is the request served at
            // evaluation (below), with that history excluded.
            let mut so_far: HashMap<&str, HashSet<&str>> = HashMap::new();
            for x in &first {
                so_far.entry(x.user.as_str()).or_default().insert(x.item.as_str());
            }
            for round in 0..args.train_rounds {
                let mut targets: Vec<(&str, usize)> = held_back
                    .iter()
                    .filter_map(|(user, backs)| backs.get(round).map(|&i| (*user, i)))
                    .collect();
                for &(user, target) in &targets {
                    let target = &log[target];
                    let seen = so_far.get(user);
                    // k 100 fetches the same stage 1 as the evaluation's k 10 (the
                    // candidate depth is 100 either way); the training response is the
                    // prior's top 100 of it.
                    let response = retriever
                        .search(&SearchRequest {
                            user_id: Some(user.to_string().into()),
                            k: 100,
                            placement: shelf_engine::Placement::ForUser,
                            exclude_seen: true,
                            exclude_ids: seen
                                .into_iter()
                                .flatten()
                                .map(|id| ItemId::from(*id))
                                .collect(),
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
                for x in &round_events {
                    so_far.entry(x.user.as_str()).or_default().insert(x.item.as_str());
                }
            }
            let clicks = examples.iter().filter(|e| e.clicked).count();
            eprintln!(
                "training a ranker on {requests} responses ({} candidates, {clicks} of them the next item)",
                examples.len()
            );
            let config = shelf_rank::TrainConfig {
                objective: args.train_objective.into(),
                ..shelf_rank::TrainConfig::for_model(args.train_model.model(
                    16,
                    args.train_depth,
                    args.train_boost_from,
                ))
            };
            let model = shelf_rank::train(&examples, &config, "trained-eval")?;
            let r = &model.report;
            eprintln!(
                "trained ({:?}, {:?}): validation clicks NDCG@10 {:.4} (prior {:.4}), position-matched AUC {:.4} (prior {:.4}), best epoch {} of {}",
                config.kind,
                config.objective,
                r.validation_clicks_ndcg_at_10,
                r.prior_validation_clicks_ndcg_at_10,
                r.validation_position_matched_auc,
                r.prior_validation_position_matched_auc,
                r.best_epoch,
                r.epochs_run
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
            retrieval,
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
        // Item to item: the held-out item as the next one after the user's last replayed
        // item (the seed), for the product page's lists against item-kNN's neighbours.
        let pair_systems = [
            "item-knn neighbours".to_string(),
            format!("similar_items:{ranker_name}"),
            format!("bought_together:{ranker_name}"),
        ];
        let mut pair_totals: Vec<Totals> = pair_systems.iter().map(|_| Totals::default()).collect();
        let mut pairs = 0usize;
        let mut lists_out = match &args.lists_out {
            Some(path) => Some(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )),
            None => None,
        };
        for (user, &target_index) in &held_out {
            let target = log[target_index].item.as_str();
            let seen_by_user = &per_user[user];
            let seed = seen_by_user
                .iter()
                .rev()
                .copied()
                .filter(|&i| i != target_index && !held_back_all.contains(&i))
                .map(|i| log[i].item.as_str())
                .next();
            if let Some(seed) = seed.filter(|s| *s != target) {
                pairs += 1;
                let neighbours = match matrix.item_index(seed) {
                    Some(i) => {
                        let scores = knn.scores(&[i]);
                        top_items(&matrix, &scores, i, args.k)
                    }
                    None => Vec::new(),
                };
                let mut lists = vec![neighbours];
                for placement in [
                    shelf_engine::Placement::SimilarItems(seed.into()),
                    shelf_engine::Placement::BoughtTogether(vec![seed.into()]),
                ] {
                    // The request a product page sends: the same function the API serves.
                    let request = SearchRequest {
                        placement,
                        k: args.k,
                        ..Default::default()
                    };
                    let response = retriever.search(&request).await?;
                    lists.push(response.items.into_iter().map(|i| i.id.0).collect());
                }
                let judgment: Judgments = [(target.to_string(), 1)].into_iter().collect();
                for (ids, t) in lists.iter().zip(pair_totals.iter_mut()) {
                    t.ndcg += ndcg_at(args.k, ids, &judgment);
                    t.recall += recall_at(args.k, ids, &judgment);
                    t.mrr += reciprocal_rank(ids, &judgment);
                }
            }

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
            ranked.push(if let Some(unit) = shelf_types::vector::unit_vector(&profile.interest) {
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
            // What `POST /v1/recommend` serves for `{"placement": "for_user", "user_id",
            // "k", "exclude_ids": the user's history}` (exclude_seen on, as its default):
            // the same request, the same function, nothing filtered here.
            let request = SearchRequest {
                user_id: Some((*user).to_string().into()),
                k: args.k,
                placement: shelf_engine::Placement::ForUser,
                exclude_seen: true,
                exclude_ids: seen.iter().map(|id| ItemId::from(*id)).collect(),
                ..Default::default()
            };
            // The recommendation systems' scores, by system, for --lists-out.
            let mut scores: Vec<Vec<f32>> = vec![Vec::new(); systems.len()];
            let recommend = |response: shelf_engine::SearchResponse| {
                let scored: Vec<f32> = response.items.iter().map(|i| i.score).collect();
                let ids: Vec<String> = response.items.into_iter().map(|i| i.id.0).collect();
                (ids, scored)
            };
            let (list, scored) = recommend(retriever.search(&request).await?);
            scores[ranked.len()] = scored;
            ranked.push(list);
            if let Some(model) = &trained {
                let live = retriever.ranker();
                retriever.set_ranker(Arc::clone(model));
                let (list, scored) = recommend(retriever.search(&request).await?);
                scores[ranked.len()] = scored;
                ranked.push(list);
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
            if let Some(out) = lists_out.as_mut() {
                for ((system, ids), scores) in systems.iter().zip(&ranked).zip(&scores) {
                    let mut line = serde_json::json!({
                        "user": user, "system": system, "held_out": target, "items": ids,
                    });
                    if !scores.is_empty() {
                        line["scores"] = serde_json::json!(scores);
                    }
                    writeln!(out, "{line}")?;
                }
            }
            let judgment: Judgments = [(target.to_string(), 1)].into_iter().collect();
            for (ids, t) in ranked.iter().zip(totals.iter_mut()) {
                t.ndcg += ndcg_at(args.k, ids, &judgment);
                t.recall += recall_at(args.k, ids, &judgment);
                t.mrr += reciprocal_rank(ids, &judgment);
            }
        }
        if let Some(out) = lists_out.as_mut() {
            out.flush()?;
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
        if pairs > 0 {
            eprintln!(
                "{:<28} {:>10} {:>8} {:>7}   (item to item: the held-out item after the user's last one; {pairs} pairs)",
                "system",
                format!("Recall@{}", args.k),
                format!("NDCG@{}", args.k),
                "MRR",
            );
            let n = pairs as f64;
            for (system, t) in pair_systems.iter().zip(&pair_totals) {
                eprintln!(
                    "{system:<28} {:>10.4} {:>8.4} {:>7.4}",
                    t.recall / n,
                    t.ndcg / n,
                    t.mrr / n
                );
                println!(
                    "{}",
                    serde_json::json!({
                        "system": system, "pairs": pairs, "task": "next item",
                        format!("recall_at_{}", args.k): t.recall / n,
                        format!("ndcg_at_{}", args.k): t.ndcg / n,
                        "mrr": t.mrr / n,
                    })
                );
            }
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

/// The `k` highest-scoring items other than `seed`, best first (ties by id).
fn top_items(matrix: &Interactions, scores: &[f64], seed: u32, k: usize) -> Vec<String> {
    let mut ranked: Vec<(usize, f64)> = scores
        .iter()
        .copied()
        .enumerate()
        .filter(|&(i, s)| s > 0.0 && i as u32 != seed)
        .collect();
    ranked.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| matrix.items[a.0].cmp(&matrix.items[b.0]))
    });
    ranked
        .into_iter()
        .take(k)
        .map(|(i, _)| matrix.items[i].clone())
        .collect()
}
