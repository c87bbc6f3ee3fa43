//! Two-stage retrieval: candidates from the query's words (BM25) and the query and profile
//! vectors (ANN), fused by reciprocal rank, or without a query from the profile, the items
//! co-visited with the user's recent ones and trending items; then features per candidate
//! and a re-rank through the [`Ranker`] trait, logged as an impression.

use crate::explore::Explorer;
use crate::query_cache::QueryCache;
use crate::EngineError;
use shelf_lexical::{LexicalHits, LexicalIndex};
use shelf_store::{DecayConfig, Impression, ImpressionItem, ItemStats, Profile, Store, TopList};
use shelf_types::rules::boosted;
use shelf_types::vector::{dot, unit_vector};
use shelf_types::{
    Contribution, Features, Item, ItemAttributes, ItemId, Ranker, SearchFilter, TextEmbedder,
    TextRole, UserId, VectorIndex,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;

mod candidates;
mod features;
mod pages;
mod request;

use candidates::*;

use features::*;
pub use features::{convex_fusion, reciprocal_rank_fusion};
pub use request::{
    FacetField, Facets, Fusion, Placement, PriceBucket, RankedItem, RetrievalConfig, SearchMode,
    SearchRequest, SearchResponse, SortOrder, Source, Sources, Timings,
};

/// Retrieval over an embedder, an index, the store and a ranker.
pub struct Retriever<E, I> {
    store: Arc<Store>,
    embedder: E,
    index: I,
    /// Without one, every search is semantic.
    lexical: Option<Arc<LexicalIndex>>,
    ranker: std::sync::RwLock<Arc<dyn Ranker>>,
    cache: QueryCache,
    explorer: Explorer,
    config: RetrievalConfig,
    /// The index's mean vector and when it was taken (see [`Retriever::catalogue_mean`]).
    mean: std::sync::Mutex<Option<TakenMean>>,
}

/// The lowest query cosine still on topic: `gap` as a share of how far the `best` match
/// stands above the `floor` (the query's cosine with the catalogue's mean item), that
/// margin taken as at least [`MIN_MARGIN`] (a weak query, or a filter whose items all lie
/// near the floor, would otherwise keep only the best match); a gap of [`GAP_OFF`] or more
/// keeps everything.
fn semantic_cutoff(best: f32, floor: f32, gap: f32) -> f32 {
    if gap >= GAP_OFF {
        return f32::NEG_INFINITY;
    }
    best - gap * (best - floor).max(MIN_MARGIN)
}

/// The smallest margin of the best match over the floor that the relevance gap is a share
/// of (about half of multilingual-e5's typical margin, a tenth of MiniLM's).
const MIN_MARGIN: f32 = 0.05;

/// A relevance gap at least this large turns the on-topic cut off.
const GAP_OFF: f32 = 10.0;

/// The catalogue's mean vector (`None`: the index has none) and when it was taken.
type TakenMean = (Instant, Option<Arc<[f32]>>);

/// Slots MMR fills at most (its cost is slots × candidates × dimensions); deeper pages
/// follow in the ranking's order.
const MMR_SLOTS: usize = 200;

/// How long the catalogue's mean vector is reused before it is taken again.
const MEAN_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

impl<E, I> std::fmt::Debug for Retriever<E, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retriever")
            .field(
                "ranker",
                &self
                    .ranker
                    .read()
                    .map(|r| r.name().to_string())
                    .unwrap_or_default(),
            )
            .field("config", &self.config)
            .finish()
    }
}

impl<E: TextEmbedder, I: VectorIndex> Retriever<E, I> {
    pub fn new(
        store: Arc<Store>,
        embedder: E,
        index: I,
        ranker: Arc<dyn Ranker>,
        config: RetrievalConfig,
    ) -> Self {
        let cache = QueryCache::new(config.query_cache_capacity);
        let seed = config.exploration_seed.unwrap_or_else(|| {
            OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 ^ u64::from(std::process::id())
        });
        let explorer = Explorer::new(seed, config.decay.prior_ctr, config.decay.prior_strength);
        Self {
            explorer,
            store,
            embedder,
            index,
            lexical: None,
            ranker: std::sync::RwLock::new(ranker),
            cache,
            config,
            mean: std::sync::Mutex::new(None),
        }
    }

    /// Re-orders the items of `ranked` that match the query (after an exact id, before
    /// those off topic) by maximal marginal relevance over their vectors, for the first
    /// `shown` slots ([`mmr_order`]).
    fn spread(&self, ranked: &mut Vec<RankedItem>, lambda: f32, shown: usize) {
        let start = ranked
            .iter()
            .take_while(|r| r.sources.contains(Source::ExactId))
            .count();
        let end = start + ranked[start..].iter().take_while(|r| r.on_topic).count();
        if end - start < 2 || shown <= start {
            return;
        }
        let segment: Vec<RankedItem> = ranked.drain(start..end).collect();
        let ids: Vec<&ItemId> = segment.iter().map(|r| &r.id).collect();
        let vectors = self.index.vectors(&ids);
        let scores: Vec<f32> = segment.iter().map(|r| r.score).collect();
        let order = mmr_order(&scores, &vectors, lambda, (shown - start).min(MMR_SLOTS));
        let mut slots: Vec<Option<RankedItem>> = segment.into_iter().map(Some).collect();
        let spread: Vec<RankedItem> = order.into_iter().filter_map(|i| slots[i].take()).collect();
        ranked.splice(start..start, spread);
    }

    /// The index's mean unit vector (`q · mean` is a query's expected cosine with a
    /// catalogue item: "unrelated" for this model), taken again every 30 s.
    fn catalogue_mean(&self) -> Option<Arc<[f32]>> {
        let mut mean = self.mean.lock().unwrap_or_else(|e| e.into_inner());
        match &*mean {
            Some((at, m)) if at.elapsed() < MEAN_REFRESH => m.clone(),
            _ => {
                let m: Option<Arc<[f32]>> = self.index.mean_vector().map(Into::into);
                // An empty index is asked again next time: items may be arriving.
                *mean = m.as_ref().map(|_| (Instant::now(), m.clone()));
                m
            }
        }
    }

    /// Searches take lexical candidates from `lexical` too (modes `hybrid` and `lexical`).
    pub fn with_lexical(mut self, lexical: Arc<LexicalIndex>) -> Self {
        self.lexical = Some(lexical);
        self
    }

    pub fn lexical(&self) -> Option<&Arc<LexicalIndex>> {
        self.lexical.as_ref()
    }

    /// The ranker now in use.
    pub fn ranker(&self) -> Arc<dyn Ranker> {
        Arc::clone(&self.ranker.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Swaps in another ranker; searches in flight finish with the one they started with.
    pub fn set_ranker(&self, ranker: Arc<dyn Ranker>) {
        *self.ranker.write().unwrap_or_else(|e| e.into_inner()) = ranker;
    }

    pub fn index(&self) -> &I {
        &self.index
    }

    /// Query-embedding cache hits and misses so far.
    pub fn cache_counts(&self) -> (u64, u64) {
        self.cache.counts()
    }

    /// Runs both stages. Without a query and without a profile, the candidates are the
    /// trending items (none before any event: the response is empty).
    pub async fn search(&self, request: &SearchRequest) -> Result<SearchResponse, EngineError> {
        self.search_with(request, self.ranker()).await
    }

    /// [`Retriever::search`] re-ranked by `ranker` instead of the live one (an A/B test's
    /// arm); the response's `model` names it.
    pub async fn search_with(
        &self,
        request: &SearchRequest,
        ranker: Arc<dyn Ranker>,
    ) -> Result<SearchResponse, EngineError> {
        let started = Instant::now();
        let request_id = new_request_id();
        let query = request
            .query
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty());
        let mode = match self.lexical {
            Some(_) => request.mode,
            None => SearchMode::Semantic,
        };
        // The lexical search runs while the model embeds the query on its own thread (the
        // embedding is polled first, which hands the query to the model).
        let embed = async {
            let vector = match query {
                Some(q) if mode != SearchMode::Lexical => Some(self.embed_query(q).await?),
                _ => None,
            };
            Ok::<_, EngineError>((vector, ms_since(started)))
        };
        let lexical = async {
            let lexical_started = Instant::now();
            let hits = match (query, &self.lexical) {
                (Some(q), Some(index)) if mode != SearchMode::Semantic => index
                    .search(q, &request.filter, self.depth(request))
                    .map_err(|e| EngineError::Index(e.to_string()))?,
                _ => LexicalHits::default(),
            };
            Ok::<_, EngineError>((hits, ms_since(lexical_started)))
        };
        let (embedded, lexical) = tokio::join!(biased; embed, lexical);
        let (query_vector, embed_ms) = embedded?;
        let (lexical, lexical_ms) = lexical?;
        // Each lexical hit's score as a share of the best one's.
        let best_lexical = lexical.hits.first().map_or(0.0, |h| h.1);
        let lexical_share: HashMap<&ItemId, f32> = lexical
            .hits
            .iter()
            .map(|(id, score)| {
                let share = if best_lexical > 0.0 {
                    score / best_lexical
                } else {
                    0.0
                };
                (id, share)
            })
            .collect();

        let ann_started = Instant::now();
        let profile = match &request.user_id {
            Some(user) => self.store.profile(user.as_str())?,
            None => None,
        };
        let profile_vector = profile.as_ref().and_then(interest_direction);
        // A query decides what is relevant: the placement applies to recommendations.
        let placement = match query {
            Some(_) => &Placement::ForUser,
            None => &request.placement,
        };
        // The item a similar-items list is for stands in for the query's vector.
        let seed_vector = match placement {
            Placement::SimilarItems(id) => self.index.vectors(&[id]).pop().flatten(),
            _ => None,
        };
        let behaviour = self.behaviour(&self.covisit_seeds(placement, profile.as_ref()))?;
        let excluded = self.excluded(placement, request, profile.as_ref());
        let stage1 = Stage1 {
            query_vector: query_vector.as_ref().map(|v| v.as_slice()),
            profile_vector: profile_vector.as_deref(),
            seed_vector: seed_vector.as_deref(),
            profile: profile.as_ref(),
            behaviour: &behaviour,
            excluded: excluded.len(),
        };
        let mut candidates = match query {
            None => union(self.candidate_lists(placement, &stage1, request)?),
            Some(_) => {
                let vector_lists = self.query_lists(&stage1, request)?;
                match (mode, self.config.fusion) {
                    (SearchMode::Hybrid, Fusion::Convex) => {
                        fuse_scores(&vector_lists, &lexical.hits, self.config.lexical_share)
                    }
                    _ => {
                        let mut lists: Vec<(Source, Vec<ItemId>)> = (vector_lists.into_iter())
                            .map(|(s, hits)| (s, hits.into_iter().map(|(id, _)| id).collect()))
                            .collect();
                        if !lexical.hits.is_empty() {
                            let ids = lexical.hits.iter().map(|(id, _)| id.clone()).collect();
                            lists.push((Source::Lexical, ids));
                        }
                        if mode == SearchMode::Hybrid {
                            let weights = [(Source::Lexical, self.config.lexical_weight)];
                            fuse(lists, self.config.rrf_k, &weights)
                        } else {
                            union(lists)
                        }
                    }
                }
            }
        };
        if let Some(exact) = &lexical.exact_id {
            candidates.retain(|c| &c.id != exact);
            candidates.insert(
                0,
                Candidate {
                    id: exact.clone(),
                    stage1_rank: 0,
                    sources: Sources::of(Source::ExactId),
                },
            );
        }
        let ann_ms = ms_since(ann_started);

        // Pinned items are scored like the others, then placed by `place_pins`.
        for pin in &request.rules.pin {
            match candidates.iter_mut().find(|c| c.id == pin.id) {
                Some(c) => c.sources.insert(Source::Pinned),
                None => candidates.push(Candidate {
                    id: pin.id.clone(),
                    stage1_rank: candidates.len(),
                    sources: Sources::of(Source::Pinned),
                }),
            }
        }
        candidates.retain(|c| !excluded.contains(&c.id));

        let rerank_started = Instant::now();
        let now_ms = unix_ms(OffsetDateTime::now_utc());
        let query_terms = query.map(terms).unwrap_or_default();
        let mut ranked = Vec::with_capacity(candidates.len());
        // Each ranked item's boost factor, when its request boosts or buries by a filter.
        let mut boosts: Vec<Option<f32>> = Vec::with_capacity(candidates.len());
        let ids: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
        let rows = self.store.candidates(&ids)?;
        let vectors = self
            .index
            .vectors(&candidates.iter().map(|c| &c.id).collect::<Vec<_>>());
        for ((candidate, row), vector) in candidates.into_iter().zip(rows).zip(vectors) {
            let (Some(shelf_store::Candidate { item, stats }), Some(vector)) = (row, vector) else {
                // Deleted since the index answered (or since it was co-visited), or not
                // (yet) in the index.
                continue;
            };
            // The indexes filter too; the store's item is the truth (the lexical index
            // lags it by a commit), and the behaviour lists are filtered only here.
            let rules = &request.rules;
            let attrs = (!request.filter.is_empty() || !rules.boost.is_empty())
                .then(|| ItemAttributes::of(&item));
            if let Some(attrs) = &attrs {
                if !request.filter.matches(attrs) {
                    continue;
                }
            }
            let (features, clicks_impressions) = self.features(
                &item,
                &vector,
                stats.as_ref(),
                stage1.query_vector.or(stage1.seed_vector),
                &query_terms,
                profile.as_ref(),
                profile_vector.as_deref(),
                candidate.stage1_rank,
                lexical_share.get(&candidate.id).copied().unwrap_or(0.0),
                &behaviour,
                now_ms,
            );
            boosts.push(
                attrs
                    .as_ref()
                    .filter(|_| !rules.boost.is_empty())
                    .map(|attrs| rules.factor(|f| f.matches(attrs))),
            );
            ranked.push(RankedItem {
                id: candidate.id,
                // Scored below, every candidate in one call.
                score: 0.0,
                title: item.title,
                category: item.category,
                brand: item.brand,
                price: item.price,
                in_stock: item.in_stock,
                updated_at: item.updated_at,
                features,
                explanation: None,
                explored: false,
                on_topic: true,
                clicks_impressions,
                sources: candidate.sources,
            });
        }
        let features: Vec<Features> = ranked.iter().map(|r| r.features).collect();
        for ((item, score), boost) in ranked
            .iter_mut()
            .zip(ranker.score_all(&features))
            .zip(&boosts)
        {
            item.score = match boost {
                Some(factor) => boosted(score, *factor),
                None => score,
            };
        }
        if query.is_some() {
            let best = ranked
                .iter()
                .map(|r| r.features[0])
                .fold(f32::MIN, f32::max);
            // The gap is a share of how far the best match stands above the query's
            // cosine with the catalogue's mean item, so it means the same for a model
            // whose cosines crowd near 0.8 (multilingual-e5) as for one spread over 0..0.7
            // (MiniLM).
            let floor = match (&query_vector, self.catalogue_mean()) {
                (Some(q), Some(mean)) => dot(q, &mean),
                _ => 0.0,
            };
            let cutoff = semantic_cutoff(best, floor, self.config.relevance_gap);
            for r in &mut ranked {
                let semantic = query_vector.is_some() && r.features[0] >= cutoff;
                let lexical = lexical_share.get(&r.id).is_some_and(|share| {
                    mode == SearchMode::Lexical || *share >= self.config.lexical_on_topic
                });
                r.on_topic = semantic
                    || lexical
                    || r.sources.contains(Source::ExactId)
                    || r.sources.contains(Source::Pinned);
            }
        }
        // Recency and trend lists keep their own order (already the candidates').
        let keep_order = placement.keeps_list_order();
        ranked.sort_by(|a, b| {
            if keep_order {
                return std::cmp::Ordering::Equal;
            }
            let exact = |r: &RankedItem| r.sources.contains(Source::ExactId);
            exact(b)
                .cmp(&exact(a))
                .then_with(|| b.on_topic.cmp(&a.on_topic))
                .then_with(|| b.score.total_cmp(&a.score))
                .then_with(|| a.id.cmp(&b.id))
        });
        // The matched set: what facets count and a sorted listing orders.
        if query.is_some() {
            ranked.retain(|r| r.on_topic || request.sort == SortOrder::Relevance);
        }
        let total = ranked.iter().filter(|r| r.on_topic).count();
        let facets = facet_counts(&ranked, request);
        let mmr_lambda = request.rules.diversity.as_ref().and_then(|d| d.mmr_lambda);
        if let Some(lambda) = mmr_lambda.filter(|_| request.sort == SortOrder::Relevance) {
            if !keep_order {
                self.spread(&mut ranked, lambda, request.offset + request.k);
            }
        }
        let mut ordered = match request.sort {
            SortOrder::Relevance if keep_order => ranked,
            SortOrder::Relevance => self.explored_order(ranked, request),
            sort => {
                sort_by(&mut ranked, sort);
                ranked
            }
        };
        let shown = request.offset + request.k;
        if let Some(diversity) = &request.rules.diversity {
            diversify(&mut ordered, diversity, shown);
        }
        let placed = place_pins(&mut ordered, &request.rules.pin);
        let skipped_pins = (request.rules.pin.iter())
            .filter(|p| !placed.contains(&p.id))
            .map(|p| {
                let why = self.why_not_shown(&p.id, &excluded, request);
                (p.id.clone(), why)
            })
            .collect();
        let mut ranked: Vec<RankedItem> = ordered
            .into_iter()
            .skip(request.offset)
            .take(request.k)
            .collect();
        if request.explain {
            for item in &mut ranked {
                item.explanation = Some(ranker.explain(&item.features));
            }
        }
        let rerank_ms = ms_since(rerank_started);
        let reason = match (query, ranked.is_empty() && request.offset == 0) {
            (None, true) => Some(self.empty_reason(placement, profile.as_ref(), &seed_vector)),
            _ => None,
        };

        let impression = Impression {
            request_id: request_id.clone(),
            user_id: request.user_id.as_ref().map(|u| u.as_str().to_string()),
            ts_ms: now_ms,
            query: query.map(str::to_string),
            items: ranked
                .iter()
                .enumerate()
                .map(|(position, item)| ImpressionItem {
                    item_id: item.id.as_str().to_string(),
                    position: (request.offset + position) as u32,
                    features: item.features.to_vec(),
                    clicked: false,
                    carted: false,
                    purchased: false,
                })
                .collect(),
            arm: None,
        };
        Ok(SearchResponse {
            model: ranker.name().to_string(),
            request_id,
            items: ranked,
            timings: Timings {
                embed_ms,
                lexical_ms,
                ann_ms,
                rerank_ms,
                total_ms: ms_since(started),
            },
            personalized: profile_vector.is_some(),
            mode,
            corrected: lexical.corrected,
            total,
            facets,
            reason,
            skipped_pins,
            impression,
        })
    }

    /// Why a pinned item is not in the list.
    fn why_not_shown(
        &self,
        id: &ItemId,
        excluded: &std::collections::HashSet<ItemId>,
        request: &SearchRequest,
    ) -> String {
        if excluded.contains(id) {
            return "excluded (exclude_ids, exclude_seen or the placement's own item)".into();
        }
        match self.store.item(id.as_str()) {
            Ok(Some(item)) if !request.filter.matches(&ItemAttributes::of(&item)) => {
                "fails the filters".into()
            }
            Ok(Some(_)) => "not in the vector index yet".into(),
            Ok(None) => "not in the catalog (unknown or deleted)".into(),
            Err(e) => format!("could not be read: {e}"),
        }
    }

    /// Why a recommendation came back empty.
    fn empty_reason(
        &self,
        placement: &Placement,
        profile: Option<&Profile>,
        seed_vector: &Option<Vec<f32>>,
    ) -> String {
        match placement {
            Placement::SimilarItems(id) if seed_vector.is_none() => {
                format!("unknown item `{id}` (not in the catalog, or deleted)")
            }
            Placement::BoughtTogether(_) => {
                "no item was bought or viewed together with these yet (or none passes the filters)"
                    .to_string()
            }
            Placement::RecentlyViewed if profile.is_none() => {
                "no events recorded for this user yet".to_string()
            }
            Placement::ForUser if profile.is_none() => {
                "no events recorded for this user yet, and nothing trending passes the filters"
                    .to_string()
            }
            Placement::Trending(Some(category)) => {
                format!("nothing trending in `{category}` passes the filters yet")
            }
            _ => "no candidate passes the filters and exclusions".to_string(),
        }
    }

    async fn embed_query(&self, query: &str) -> Result<Arc<Vec<f32>>, EngineError> {
        if let Some(v) = self.cache.get(query) {
            return Ok(v);
        }
        let mut vectors = self
            .embedder
            .embed_as(TextRole::Query, vec![query.to_string()])
            .await
            .map_err(|e| EngineError::Embed(e.to_string()))?;
        let vector = Arc::new(vectors.pop().map(|v| v.0).unwrap_or_default());
        self.cache.insert(query, Arc::clone(&vector));
        Ok(vector)
    }
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// A request id that sorts by creation time: 12 hex digits of Unix milliseconds, `-`,
/// 16 hex digits unique within the process (and random across processes).
pub fn new_request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
        shelf_types::SplitMix(nanos ^ u64::from(std::process::id()) << 32).next_u64()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let ms = unix_ms(OffsetDateTime::now_utc()).max(0) as u64;
    format!(
        "{ms:012x}-{:016x}",
        shelf_types::SplitMix(seed.wrapping_add(n)).next_u64()
    )
}

/// The smallest request id of time `ts_ms` (for expiring older impressions).
pub fn request_id_floor(ts_ms: i64) -> String {
    format!("{:012x}-", ts_ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relevance_gap_is_a_share_of_the_best_matchs_margin_over_the_floor() {
        // MiniLM-like cosines (best 0.6, the catalogue's mean item at 0.1) and e5-like ones
        // (best 0.9, mean at 0.8): the same gap cuts at the same share of the margin.
        assert!((semantic_cutoff(0.6, 0.1, 0.4) - 0.4).abs() < 1e-6);
        assert!((semantic_cutoff(0.9, 0.8, 0.4) - 0.86).abs() < 1e-6);
        // Gap 0 keeps the best match only; a best match at or below the floor keeps a
        // share of the smallest margin.
        assert_eq!(semantic_cutoff(0.7, 0.2, 0.0), 0.7);
        assert!((semantic_cutoff(0.1, 0.3, 0.4) - 0.08).abs() < 1e-6);
        assert!((semantic_cutoff(0.8, 0.79, 0.4) - 0.78).abs() < 1e-6);
        // 10 or more: everything is on topic.
        assert_eq!(semantic_cutoff(0.9, 0.8, GAP_OFF), f32::NEG_INFINITY);
        // Without a floor (no mean vector) the gap is a share of the best cosine.
        assert!((semantic_cutoff(0.5, 0.0, 0.4) - 0.3).abs() < 1e-6);
    }

    #[test]
    fn convex_fusion_scales_each_list_and_weighs_the_lexical_share() {
        let scored = |l: &[(&str, f32)]| -> Vec<(ItemId, f32)> {
            l.iter().map(|(id, s)| (ItemId::from(*id), *s)).collect()
        };
        // Semantic scaled: a 1, b 0.5, c 0; lexical scaled: c 1, d 0.
        let semantic = scored(&[("a", 0.9), ("b", 0.8), ("c", 0.7)]);
        let lexical = scored(&[("c", 12.0), ("d", 3.0)]);
        let ids = |v: Vec<ItemId>| v.iter().map(|i| i.as_str().to_owned()).collect::<Vec<_>>();
        // Share 0.25: a 0.75, b 0.375, c 0.25, d 0.
        assert_eq!(
            ids(convex_fusion(&semantic, &lexical, 0.25)),
            ["a", "b", "c", "d"]
        );
        // Share 0.75: c 0.75, a 0.25, b 0.125, d 0.
        assert_eq!(
            ids(convex_fusion(&semantic, &lexical, 0.75)),
            ["c", "a", "b", "d"]
        );
        // One score in a list scales to 1; an empty list adds nothing.
        let one = scored(&[("z", 5.0)]);
        assert_eq!(ids(convex_fusion(&one, &[], 0.5)), ["z"]);
    }

    #[test]
    fn convex_fusion_takes_an_items_better_vector_score_and_keeps_its_sources() {
        let scored = |l: &[(&str, f32)]| -> Vec<(ItemId, f32)> {
            l.iter().map(|(id, s)| (ItemId::from(*id), *s)).collect()
        };
        // Scaled: query a 1, b 0; blend b 1, a 0; lexical c 1, b 0.
        let vector = [
            (Source::Query, scored(&[("a", 0.9), ("b", 0.5)])),
            (Source::Profile, scored(&[("b", 0.8), ("a", 0.6)])),
        ];
        let lexical = scored(&[("c", 9.0), ("b", 1.0)]);
        let fused = fuse_scores(&vector, &lexical, 0.4);
        let got: Vec<(&str, usize, Vec<&str>)> = fused
            .iter()
            .map(|c| (c.id.as_str(), c.stage1_rank, c.sources.names()))
            .collect();
        // a 0.6, b 0.6 (its blend score; lexical 0), c 0.4; a before b by id.
        assert_eq!(
            got,
            vec![
                ("a", 0, vec!["query_ann", "profile_ann"]),
                ("b", 1, vec!["query_ann", "profile_ann", "lexical"]),
                ("c", 2, vec!["lexical"]),
            ]
        );
    }

    #[test]
    fn union_keeps_each_id_once_at_its_best_rank() {
        let ids = |ids: &[&str]| ids.iter().map(|id| ItemId::from(*id)).collect();
        let merged = union(vec![
            (Source::Query, ids(&["a", "b", "c"])),
            (Source::Covisit, ids(&["c", "d"])),
        ]);
        let got: Vec<(&str, usize, Vec<&str>)> = merged
            .iter()
            .map(|c| (c.id.as_str(), c.stage1_rank, c.sources.names()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 0, vec!["query_ann"]),
                ("c", 0, vec!["query_ann", "covisit"]),
                ("b", 1, vec!["query_ann"]),
                ("d", 1, vec!["covisit"]),
            ]
        );
    }

    #[test]
    fn category_affinity_credits_ancestors() {
        let mut p = Profile::new("u", 2);
        p.categories = vec![("A/B/C".into(), 3.0), ("X".into(), 1.0)];
        assert!((category_affinity(&p, Some("A/B/C")) - 0.75).abs() < 1e-9);
        // Shares A/B with A/B/C: 2 of 3 levels of the weight 3, over a total of 4.
        assert!((category_affinity(&p, Some("A/B/D")) - 0.5).abs() < 1e-9);
        assert_eq!(category_affinity(&p, Some("Y")), 0.0);
        assert_eq!(category_affinity(&p, None), 0.0);
    }

    #[test]
    fn lexical_overlap_counts_query_words_in_title_brand_category() {
        let item: Item = serde_json::from_str(
            r#"{"id":"1","title":"Red leather sofa","brand":"Nord","category":"Furniture/Sofas"}"#,
        )
        .unwrap();
        let q = terms("red SOFA, nord velvet");
        assert_eq!(lexical_overlap(&q, &item), 0.75);
        assert_eq!(lexical_overlap(&[], &item), 0.0);
    }

    #[test]
    fn blend_is_unit_and_between_its_inputs() {
        let v = blend(&[1.0, 0.0], &[0.0, 1.0], 0.25);
        assert!((v[0] * v[0] + v[1] * v[1] - 1.0).abs() < 1e-6);
        assert!(v[0] > v[1] && v[1] > 0.0);
    }

    #[test]
    fn request_ids_sort_by_time_and_are_unique() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 29);
        let floor = request_id_floor(unix_ms(OffsetDateTime::now_utc()) + 1000);
        assert!(a < floor && b < floor);
        assert!(request_id_floor(0) < a);
    }
}
