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
    UserId, VectorIndex,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;

mod features;
mod request;

pub use features::reciprocal_rank_fusion;
use features::*;
pub use request::{
    FacetField, Facets, Placement, PriceBucket, RankedItem, RetrievalConfig, SearchMode,
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
}

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

/// What stage 1 draws its lists from.
struct Stage1<'a> {
    query_vector: Option<&'a [f32]>,
    profile_vector: Option<&'a [f32]>,
    /// The vector of the item a `similar_items` list is for.
    seed_vector: Option<&'a [f32]>,
    profile: Option<&'a Profile>,
    behaviour: &'a Behaviour,
}

/// The trending list a recommendation reads: the placement's category, else the one the
/// filter names (exact or prefix), else the overall list.
fn trending_scope<'a>(category: Option<&'a str>, filter: &'a SearchFilter) -> &'a str {
    category
        .or(filter.category.as_deref())
        .or(filter.category_prefix.as_deref())
        .map_or(shelf_store::TRENDING_OVERALL, |c| c.trim_end_matches('/'))
}

/// A candidate after stage 1: its best rank over the candidate lists, and which proposed it.
struct Candidate {
    id: ItemId,
    stage1_rank: usize,
    sources: Sources,
}

/// What the user's behaviour says about candidates: co-visitation with their recent items
/// and the overall trending list.
#[derive(Default)]
struct Behaviour {
    /// Per item, `sum_j w_j * s_j(item) / max s_j` over the seeds `j` (weights
    /// `1/sqrt(1+j)`, newest first) divided by `sum_j w_j`: in `[0, 1]`.
    covisit: HashMap<String, f64>,
    trending: TopList,
    /// Each trending item's rank, so a candidate's feature is one lookup.
    trending_rank: HashMap<String, usize>,
}

impl Behaviour {
    /// The `covisit` feature of `id`.
    fn covisit(&self, id: &str) -> f32 {
        self.covisit.get(id).copied().unwrap_or(0.0) as f32
    }

    /// The `trending` feature of `id`: `1 - rank / len` in the overall list, 0 when absent.
    fn trending(&self, id: &str) -> f32 {
        let len = self.trending.entries.len();
        self.trending_rank
            .get(id)
            .map_or(0.0, |&rank| 1.0 - rank as f32 / len as f32)
    }

    /// The `n` items of the highest co-visit score, strongest first.
    fn covisit_top(&self, n: usize) -> Vec<String> {
        let mut all: Vec<(&String, f64)> = self.covisit.iter().map(|(k, v)| (k, *v)).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        all.into_iter().take(n).map(|(id, _)| id.clone()).collect()
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
        let stage1 = Stage1 {
            query_vector: query_vector.as_ref().map(|v| v.as_slice()),
            profile_vector: profile_vector.as_deref(),
            seed_vector: seed_vector.as_deref(),
            profile: profile.as_ref(),
            behaviour: &behaviour,
        };
        let mut lists = self.candidate_lists(query.is_some(), placement, &stage1, request)?;
        if !lexical.hits.is_empty() {
            let ids = lexical.hits.iter().map(|(id, _)| id.clone()).collect();
            lists.push((Source::Lexical, ids));
        }
        let mut candidates = match (query, mode) {
            (Some(_), SearchMode::Hybrid) => fuse(
                lists,
                self.config.rrf_k,
                &[(Source::Lexical, self.config.lexical_weight)],
            ),
            _ => union(lists),
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
        let excluded = self.excluded(placement, request, profile.as_ref());
        candidates.retain(|c| !excluded.contains(&c.id));

        let rerank_started = Instant::now();
        let now_ms = unix_ms(OffsetDateTime::now_utc());
        let query_terms = query.map(terms).unwrap_or_default();
        let ranker = self.ranker();
        let mut ranked = Vec::with_capacity(candidates.len());
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
            let mut score = ranker.score(&features);
            if let Some(attrs) = attrs.as_ref().filter(|_| !rules.boost.is_empty()) {
                score = boosted(score, rules.factor(|f| f.matches(attrs)));
            }
            ranked.push(RankedItem {
                id: candidate.id,
                score,
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
        if query.is_some() {
            let best = ranked
                .iter()
                .map(|r| r.features[0])
                .fold(f32::MIN, f32::max);
            for r in &mut ranked {
                let semantic =
                    query_vector.is_some() && r.features[0] >= best - self.config.relevance_gap;
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
                })
                .collect(),
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

    /// The items whose co-visit lists make the `covisit` candidates and feature: the
    /// placement's own items, or the user's most recent distinct ones.
    fn covisit_seeds(&self, placement: &Placement, profile: Option<&Profile>) -> Vec<String> {
        let mut seeds: Vec<String> = Vec::with_capacity(self.config.covisit_seeds);
        let mut most = self.config.covisit_seeds;
        let ids: Vec<&str> = match placement {
            Placement::SimilarItems(id) => vec![id.as_str()],
            Placement::BoughtTogether(ids) => {
                // Every item of the cart counts, however many seeds a profile gives.
                most = most.max(ids.len());
                ids.iter().map(ItemId::as_str).collect()
            }
            _ => profile
                .map(|p| p.recent.iter().map(|r| r.item_id.as_str()).collect())
                .unwrap_or_default(),
        };
        for id in ids {
            if seeds.len() == most {
                break;
            }
            if !seeds.iter().any(|s| s == id) {
                seeds.push(id.to_string());
            }
        }
        seeds
    }

    /// Items a response must not hold: `exclude_ids`, blocked ones, the placement's own items, and with
    /// `exclude_seen` the items the user bought or interacted with `seen_after` times.
    fn excluded(
        &self,
        placement: &Placement,
        request: &SearchRequest,
        profile: Option<&Profile>,
    ) -> std::collections::HashSet<ItemId> {
        let mut out: std::collections::HashSet<ItemId> =
            request.exclude_ids.iter().cloned().collect();
        out.extend(request.rules.block.iter().cloned());
        match placement {
            Placement::SimilarItems(id) => {
                out.insert(id.clone());
            }
            Placement::BoughtTogether(ids) => out.extend(ids.iter().cloned()),
            _ => {}
        }
        if let (true, Some(profile)) = (request.exclude_seen, profile) {
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for recent in &profile.recent {
                let count = seen.entry(recent.item_id.as_str()).or_default();
                *count += match recent.kind {
                    shelf_types::EventKind::Purchase => self.config.seen_after.max(1),
                    shelf_types::EventKind::Search => 0,
                    _ => 1,
                };
            }
            out.extend(
                seen.into_iter()
                    .filter(|(_, n)| *n >= self.config.seen_after.max(1))
                    .map(|(id, _)| ItemId::from(id)),
            );
        }
        out
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

    /// Candidates to fetch from each list: enough for the page asked for.
    fn depth(&self, request: &SearchRequest) -> usize {
        self.config.candidates.max(request.offset + request.k)
    }

    /// `ranked` (best first) reordered page by page: each page of `k` is the best remaining
    /// items by score except that its last `round(k * share)` slots go to the remaining
    /// on-topic items with the highest Thompson draws of their CTR, up to `offset + k`;
    /// the rest follows in score order. The draws are seeded by the request (without its
    /// offset), so asking for page 2 gives the items after page 1's, none twice.
    fn explored_order(
        &self,
        mut ranked: Vec<RankedItem>,
        request: &SearchRequest,
    ) -> Vec<RankedItem> {
        let k = request.k.max(1);
        let slots = (k as f64 * self.config.exploration_share).round() as usize;
        if !request.explore || slots == 0 {
            return ranked;
        }
        let seed = self.page_seed(request);
        let mut out = Vec::with_capacity(ranked.len());
        let mut page = 0u64;
        while out.len() < request.offset + request.k && !ranked.is_empty() {
            let (taken, rest) = self.explore_page(ranked, k, slots.min(k), seed ^ page);
            out.extend(taken);
            ranked = rest;
            page += 1;
        }
        out.extend(ranked);
        out
    }

    /// The seed of a request's exploration draws: the same for the same request (page
    /// aside) within a 10-minute window, so its pages hold still while it is paged through.
    fn page_seed(&self, request: &SearchRequest) -> u64 {
        let mut hash = shelf_types::hash::Fnv1a::default();
        let key = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{}",
            request.query,
            request.user_id,
            request.placement,
            request.exclude_ids,
            request.rules,
            request.filter,
            request.k,
            request.mode,
            self.config.exploration_seed.is_some()
        );
        hash.update(key.as_bytes());
        let window = match self.config.exploration_seed {
            Some(_) => 0, // tests: fixed draws
            None => OffsetDateTime::now_utc().unix_timestamp() as u64 / 600,
        };
        hash.finish() ^ window.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// One page of `k` from `ranked` with `slots` explored slots, and what is left, in
    /// order.
    fn explore_page(
        &self,
        ranked: Vec<RankedItem>,
        k: usize,
        slots: usize,
        seed: u64,
    ) -> (Vec<RankedItem>, Vec<RankedItem>) {
        if ranked.len() <= k {
            return (ranked, Vec::new());
        }
        let exploit = k - slots;
        let posteriors: Vec<(f64, f64)> = ranked.iter().map(|r| r.clicks_impressions).collect();
        let mut sampled = self.explorer.sample_seeded(&posteriors, seed);
        // Only candidates that match the query may be explored.
        for (s, r) in sampled.iter_mut().zip(&ranked) {
            if !r.on_topic {
                *s = f64::NEG_INFINITY;
            }
        }
        let picks = crate::explore::pick(&sampled, exploit, slots);
        let mut taken: Vec<Option<RankedItem>> = ranked.into_iter().map(Some).collect();
        let mut out: Vec<RankedItem> = taken[..exploit]
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for i in picks {
            if sampled[i] == f64::NEG_INFINITY {
                continue;
            }
            if let Some(mut item) = taken[i].take() {
                item.explored = true;
                out.push(item);
            }
        }
        // Slots exploration could not fill (too few matching candidates) go by score.
        let mut rest = taken.into_iter().flatten();
        let missing = k - out.len();
        out.extend(rest.by_ref().take(missing));
        (out, rest.collect())
    }

    /// Stage 1's vector and behaviour lists, best first. With a query, the query's ANN
    /// list and the query/profile blend's (none in lexical mode, where the query has no
    /// vector); without, the profile's ANN list, the co-visited and the trending items
    /// (with a query, behaviour only re-ranks: the query decides what is relevant).
    fn candidate_lists(
        &self,
        has_query: bool,
        placement: &Placement,
        stage1: &Stage1<'_>,
        request: &SearchRequest,
    ) -> Result<Vec<(Source, Vec<ItemId>)>, EngineError> {
        let fetch = self.depth(request);
        let ann = |v: &[f32], k: usize| -> Result<Vec<ItemId>, EngineError> {
            Ok(self
                .index
                .search(v, k, self.config.ef, &request.filter)
                .map_err(|e| EngineError::Index(e.to_string()))?
                .into_iter()
                .map(|hit| hit.id)
                .collect())
        };
        let mut lists = Vec::new();
        if has_query {
            if let Some(q) = stage1.query_vector {
                lists.push((Source::Query, ann(q, fetch)?));
                if let Some(p) = stage1.profile_vector {
                    let v = blend(q, p, self.config.profile_blend);
                    lists.push((Source::Profile, ann(&v, fetch)?));
                }
            }
            return Ok(lists);
        }
        let covisited = || {
            let top = stage1
                .behaviour
                .covisit_top(self.config.covisit_candidates.max(fetch));
            (Source::Covisit, top.into_iter().map(ItemId::from).collect())
        };
        match placement {
            Placement::ForUser => {
                if let Some(p) = stage1.profile_vector {
                    lists.push((Source::Profile, ann(p, fetch)?));
                }
                lists.push(covisited());
                let n = self.config.trending_candidates;
                let trending = match trending_scope(None, &request.filter) {
                    shelf_store::TRENDING_OVERALL => (stage1.behaviour.trending.entries.iter())
                        .take(n)
                        .map(|(id, _)| ItemId::from(id.as_str()))
                        .collect(),
                    scope => self.trending(scope, n)?,
                };
                lists.push((Source::Trending, trending));
            }
            Placement::SimilarItems(_) => {
                if let Some(v) = stage1.seed_vector {
                    // One more: the item itself is its own nearest neighbour.
                    lists.push((Source::Similar, ann(v, fetch + 1)?));
                }
                lists.push(covisited());
            }
            Placement::BoughtTogether(_) => lists.push(covisited()),
            Placement::RecentlyViewed => {
                let mut recent: Vec<ItemId> = Vec::new();
                for r in stage1
                    .profile
                    .map(|p| p.recent.as_slice())
                    .unwrap_or_default()
                {
                    if r.kind != shelf_types::EventKind::Search
                        && !recent.iter().any(|id| id.as_str() == r.item_id)
                    {
                        recent.push(ItemId::from(r.item_id.as_str()));
                    }
                }
                lists.push((Source::Recent, recent));
            }
            Placement::Trending(category) => {
                let scope = trending_scope(category.as_deref(), &request.filter);
                lists.push((Source::Trending, self.trending(scope, fetch)?));
            }
        }
        Ok(lists)
    }

    /// The top `n` of a category's trending list, topped up from the overall list when it
    /// holds fewer (a category that trends little, or lists written before every level of
    /// the path had one); the caller filters by the category.
    fn trending(&self, scope: &str, n: usize) -> Result<Vec<ItemId>, EngineError> {
        let mut out: Vec<ItemId> = (self.store.trending(scope)?.unwrap_or_default().entries)
            .into_iter()
            .take(n)
            .map(|(id, _)| ItemId::from(id))
            .collect();
        if out.len() < n && scope != shelf_store::TRENDING_OVERALL {
            let overall = self.store.trending(shelf_store::TRENDING_OVERALL)?;
            for (id, _) in overall.unwrap_or_default().entries {
                if out.len() == n {
                    break;
                }
                let id = ItemId::from(id);
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    /// Stage 1 of a recommendation for `user_id` (no query, no filter): each source's
    /// candidates as [`Retriever::search`] would merge them, for offline evaluation.
    pub fn recommendation_sources(
        &self,
        user_id: &str,
    ) -> Result<Vec<(Source, Vec<ItemId>)>, EngineError> {
        let profile = self.store.profile(user_id)?;
        let profile_vector = profile.as_ref().and_then(interest_direction);
        let placement = Placement::ForUser;
        let behaviour = self.behaviour(&self.covisit_seeds(&placement, profile.as_ref()))?;
        let stage1 = Stage1 {
            query_vector: None,
            profile_vector: profile_vector.as_deref(),
            seed_vector: None,
            profile: profile.as_ref(),
            behaviour: &behaviour,
        };
        self.candidate_lists(false, &placement, &stage1, &SearchRequest::default())
    }

    /// Co-visit scores from `seeds` (most important first), and the overall trending list.
    fn behaviour(&self, seeds: &[String]) -> Result<Behaviour, EngineError> {
        let trending = self
            .store
            .trending(shelf_store::TRENDING_OVERALL)?
            .unwrap_or_default();
        let mut behaviour = Behaviour {
            trending_rank: (trending.entries.iter().enumerate())
                .map(|(rank, (id, _))| (id.clone(), rank))
                .collect(),
            trending,
            ..Default::default()
        };
        let mut total_weight = 0.0;
        for (j, seed) in seeds.iter().enumerate() {
            let w = 1.0 / ((1 + j) as f64).sqrt();
            total_weight += w;
            let Some(list) = self.store.covisits(seed)? else {
                continue;
            };
            let top = list.top();
            if top <= 0.0 {
                continue;
            }
            for (id, score) in &list.entries {
                *behaviour.covisit.entry(id.clone()).or_default() += w * score / top;
            }
        }
        if total_weight > 0.0 {
            behaviour
                .covisit
                .values_mut()
                .for_each(|v| *v /= total_weight);
        }
        Ok(behaviour)
    }

    async fn embed_query(&self, query: &str) -> Result<Arc<Vec<f32>>, EngineError> {
        if let Some(v) = self.cache.get(query) {
            return Ok(v);
        }
        let mut vectors = self
            .embedder
            .embed(vec![query.to_string()])
            .await
            .map_err(|e| EngineError::Embed(e.to_string()))?;
        let vector = Arc::new(vectors.pop().map(|v| v.0).unwrap_or_default());
        self.cache.insert(query, Arc::clone(&vector));
        Ok(vector)
    }

    #[allow(clippy::too_many_arguments)]
    fn features(
        &self,
        item: &Item,
        vector: &[f32],
        stats: Option<&ItemStats>,
        query: Option<&[f32]>,
        query_terms: &[String],
        profile: Option<&Profile>,
        profile_vector: Option<&[f32]>,
        stage1_rank: usize,
        lexical_score: f32,
        behaviour: &Behaviour,
        now_ms: i64,
    ) -> (Features, (f64, f64)) {
        let counts = stats.map_or((0.0, 0.0), |s| (s.clicks, s.impressions));
        let decay = &self.config.decay;
        let ctr = stats.map_or(decay.prior_ctr, |s| s.ctr(decay));
        let engagement = stats.map_or(0.0, |s| {
            let w = &decay.weights;
            s.views * w.view
                + s.clicks * w.click
                + s.carts * w.add_to_cart
                + s.purchases * w.purchase
        });
        let popularity = (engagement.ln_1p() / self.config.popularity_saturation.ln_1p()).min(1.0);
        let freshness = item.updated_at.map_or(0.0, |t| {
            let age_days = ((now_ms - unix_ms(t)) as f64 / 86_400_000.0).max(0.0);
            0.5f64.powf(age_days / self.config.freshness_half_life_days)
        });
        let price_fit = match (item.price, profile.and_then(Profile::price_preference)) {
            (Some(price), Some(preferred)) if price > 0.0 && preferred > 0.0 => {
                (-(price / preferred).ln().abs()).exp()
            }
            _ => 0.0,
        };
        (
            [
                query.map_or(0.0, |q| dot(q, vector)),
                profile_vector.map_or(0.0, |p| dot(p, vector)),
                profile.map_or(0.0, |p| category_affinity(p, item.category.as_deref())) as f32,
                ctr as f32,
                popularity as f32,
                price_fit as f32,
                freshness as f32,
                lexical_overlap(query_terms, item),
                1.0 / (1.0 + stage1_rank as f32),
                behaviour.covisit(item.id.as_str()),
                behaviour.trending(item.id.as_str()),
                lexical_score,
            ],
            counts,
        )
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
