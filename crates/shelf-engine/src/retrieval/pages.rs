//! Pages: how deep each list is read for the page asked for, and the exploration slots of
//! each page (Thompson draws seeded by the request, so pages are disjoint and stable).

use super::*;

impl<E: TextEmbedder, I: VectorIndex> Retriever<E, I> {
    /// Candidates to fetch from each list: enough for the page asked for.
    pub(super) fn depth(&self, request: &SearchRequest) -> usize {
        self.config.candidates.max(request.offset + request.k)
    }

    /// `ranked` (best first) reordered page by page: each page of `k` is the best remaining
    /// items by score except that its last `round(k * share)` slots go to the remaining
    /// on-topic items with the highest Thompson draws of their CTR, up to `offset + k`;
    /// the rest follows in score order. The draws are seeded by the request (without its
    /// offset), so asking for page 2 gives the items after page 1's, none twice.
    pub(super) fn explored_order(
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
    pub(super) fn page_seed(&self, request: &SearchRequest) -> u64 {
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
    pub(super) fn explore_page(
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
}
