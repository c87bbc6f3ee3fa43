//! Stage 1's candidates: the lists each source proposes (the query's words and vector, the
//! profile, co-visitation with the user's or the placement's items, trending), what the
//! user's behaviour says about each candidate, and which items a request excludes.

use super::*;

/// What stage 1 draws its lists from.
pub(super) struct Stage1<'a> {
    pub(super) query_vector: Option<&'a [f32]>,
    pub(super) profile_vector: Option<&'a [f32]>,
    /// The vector of the item a `similar_items` list is for.
    pub(super) seed_vector: Option<&'a [f32]>,
    pub(super) profile: Option<&'a Profile>,
    pub(super) behaviour: &'a Behaviour,
    /// How many ids the request excludes: each list fetches that many more, so that the
    /// exclusions (a user's history, a block list) never thin out stage 1.
    pub(super) excluded: usize,
}

/// The trending list a recommendation reads: the placement's category, else the one the
/// filter names (exact or prefix), else the overall list.
pub(super) fn trending_scope<'a>(category: Option<&'a str>, filter: &'a SearchFilter) -> &'a str {
    category
        .or(filter.category.as_deref())
        .or(filter.category_prefix.as_deref())
        .map_or(shelf_store::TRENDING_OVERALL, |c| c.trim_end_matches('/'))
}

/// One source's ranked list, best first, with the source's score of each item.
pub(super) type ScoredList = (Source, Vec<(ItemId, f32)>);

/// A candidate after stage 1: its best rank over the candidate lists, and which proposed it.
pub(super) struct Candidate {
    pub(super) id: ItemId,
    pub(super) stage1_rank: usize,
    pub(super) sources: Sources,
}

/// What the user's behaviour says about candidates: co-visitation with their recent items
/// and the overall trending list.
#[derive(Default)]
pub(super) struct Behaviour {
    /// Per item, `sum_j w_j * s_j(item) / max s_j` over the seeds `j` (weights
    /// `1/sqrt(1+j)`, newest first) divided by `sum_j w_j`: in `[0, 1]`.
    pub(super) covisit: HashMap<String, f64>,
    pub(super) trending: TopList,
    /// Each trending item's rank, so a candidate's feature is one lookup.
    pub(super) trending_rank: HashMap<String, usize>,
}

impl Behaviour {
    /// The `covisit` feature of `id`.
    pub(super) fn covisit(&self, id: &str) -> f32 {
        self.covisit.get(id).copied().unwrap_or(0.0) as f32
    }

    /// The `trending` feature of `id`: `1 - rank / len` in the overall list, 0 when absent.
    pub(super) fn trending(&self, id: &str) -> f32 {
        let len = self.trending.entries.len();
        self.trending_rank
            .get(id)
            .map_or(0.0, |&rank| 1.0 - rank as f32 / len as f32)
    }

    /// The `n` items of the highest co-visit score, strongest first.
    pub(super) fn covisit_top(&self, n: usize) -> Vec<String> {
        let mut all: Vec<(&String, f64)> = self.covisit.iter().map(|(k, v)| (k, *v)).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        all.into_iter().take(n).map(|(id, _)| id.clone()).collect()
    }
}

impl<E: TextEmbedder, I: VectorIndex> Retriever<E, I> {
    /// The items whose co-visit lists make the `covisit` candidates and feature: the
    /// placement's own items, or the user's most recent distinct ones.
    pub(super) fn covisit_seeds(
        &self,
        placement: &Placement,
        profile: Option<&Profile>,
    ) -> Vec<String> {
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
    pub(super) fn excluded(
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

    /// The `k` items nearest `v` that pass the request's filter, with their cosines.
    fn ann(
        &self,
        v: &[f32],
        k: usize,
        request: &SearchRequest,
    ) -> Result<Vec<(ItemId, f32)>, EngineError> {
        Ok(self
            .index
            .search(v, k, self.config.ef, &request.filter)
            .map_err(|e| EngineError::Index(e.to_string()))?
            .into_iter()
            .map(|hit| (hit.id, hit.score))
            .collect())
    }

    /// Stage 1's vector lists of a query, best first, with their cosines: the query's ANN
    /// list and the query/profile blend's (none in lexical mode, where the query has no
    /// vector). Behaviour only re-ranks a query's candidates: the query decides what is
    /// relevant.
    pub(super) fn query_lists(
        &self,
        stage1: &Stage1<'_>,
        request: &SearchRequest,
    ) -> Result<Vec<ScoredList>, EngineError> {
        let fetch = self.depth(request) + stage1.excluded;
        let mut lists = Vec::new();
        if let Some(q) = stage1.query_vector {
            lists.push((Source::Query, self.ann(q, fetch, request)?));
            if let Some(p) = stage1.profile_vector {
                let v = blend(q, p, self.config.profile_blend);
                lists.push((Source::Profile, self.ann(&v, fetch, request)?));
            }
        }
        Ok(lists)
    }

    /// Stage 1's lists of a recommendation (no query), best first: for a user the
    /// profile's ANN list, the co-visited and the trending items; for the other placements
    /// their own.
    pub(super) fn candidate_lists(
        &self,
        placement: &Placement,
        stage1: &Stage1<'_>,
        request: &SearchRequest,
    ) -> Result<Vec<(Source, Vec<ItemId>)>, EngineError> {
        let fetch = self.depth(request) + stage1.excluded;
        let ann = |v: &[f32], k: usize| -> Result<Vec<ItemId>, EngineError> {
            Ok(self
                .ann(v, k, request)?
                .into_iter()
                .map(|(id, _)| id)
                .collect())
        };
        let mut lists = Vec::new();
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
                let n = self.config.trending_candidates + stage1.excluded;
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
    pub(super) fn trending(&self, scope: &str, n: usize) -> Result<Vec<ItemId>, EngineError> {
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
            excluded: 0,
        };
        self.candidate_lists(&placement, &stage1, &SearchRequest::default())
    }

    /// Co-visit scores from `seeds` (most important first), and the overall trending list.
    pub(super) fn behaviour(&self, seeds: &[String]) -> Result<Behaviour, EngineError> {
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
}
