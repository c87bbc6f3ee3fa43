//! What a search asks for and gets back, and the retriever's configuration.

use super::*;

/// Tunables of retrieval.
#[derive(Clone, Debug)]
pub struct RetrievalConfig {
    /// Candidates fetched from each ANN search (at least `k`).
    pub candidates: usize,
    /// Weight of the profile vector in the query/profile blend (0 = query only).
    pub profile_blend: f32,
    /// With a query, a candidate whose query cosine is below the best candidate's by more
    /// than this share of the best one's margin over the floor (the query's cosine with the
    /// catalogue's mean item vector) ranks after all the others, whatever its score:
    /// personal signals re-rank what matches the query, they never pull in what does not
    /// (10 turns it off).
    pub relevance_gap: f32,
    /// ANN search breadth; `None` uses the index default.
    pub ef: Option<usize>,
    /// Query embeddings kept in memory.
    pub query_cache_capacity: usize,
    /// Age at which an item's freshness feature halves, in days.
    pub freshness_half_life_days: f64,
    /// Decayed engagement at which the popularity feature reaches 1.
    pub popularity_saturation: f64,
    /// CTR prior and decay, as the event job uses them.
    pub decay: DecayConfig,
    /// Share of each response's slots filled by Thompson sampling over item CTR posteriors
    /// (0 turns exploration off).
    pub exploration_share: f64,
    /// Seed of the exploration sampler (fixed in tests; from the clock otherwise).
    pub exploration_seed: Option<u64>,
    /// The user's most recent distinct items whose co-visit lists are read (for the
    /// co-visit candidates and the `covisit` feature; 0 turns both off).
    pub covisit_seeds: usize,
    /// Co-visited candidates added to a recommendation (no query; 0: none).
    pub covisit_candidates: usize,
    /// Trending candidates added to a recommendation (no query; 0: none). They are all a
    /// user without history gets.
    pub trending_candidates: usize,
    /// How a hybrid search merges its lexical and vector lists into stage 1's order.
    pub fusion: Fusion,
    /// Reciprocal rank fusion of a hybrid search: a candidate's stage-1 score is the sum
    /// over lists of `weight / (rrf_k + rank)`, rank from 1.
    pub rrf_k: f64,
    /// Weight of the lexical list in reciprocal rank fusion (the vector lists weigh 1).
    pub lexical_weight: f64,
    /// Share of the lexical score in convex fusion (the vector score has the rest).
    pub lexical_share: f64,
    /// With a query, a lexical hit scoring at least this share of the best lexical score
    /// counts as on topic whatever its query cosine (a SKU, a brand, a rare word the model
    /// does not know).
    pub lexical_on_topic: f32,
    /// `exclude_seen` drops an item the user interacted with (viewed, clicked, added to
    /// the cart) at least this many times among their recent events, or bought once.
    pub seen_after: usize,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            candidates: 100,
            profile_blend: 0.35,
            relevance_gap: 0.33,
            ef: None,
            query_cache_capacity: 10_000,
            freshness_half_life_days: 30.0,
            popularity_saturation: 1000.0,
            decay: DecayConfig::default(),
            exploration_share: 0.1,
            exploration_seed: None,
            covisit_seeds: 20,
            covisit_candidates: 100,
            trending_candidates: 50,
            seen_after: 3,
            fusion: Fusion::Rrf,
            rrf_k: 60.0,
            // Tuned on the CrowdFlower development queries (1, 2, 3 tried): see the README.
            lexical_weight: 2.0,
            // Tuned there too, on stage 1 alone (0.1 to 0.7 tried).
            lexical_share: 0.5,
            lexical_on_topic: 0.5,
        }
    }
}

/// How a hybrid search fuses its lexical and vector candidate lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fusion {
    /// Reciprocal rank fusion: ranks only (`RetrievalConfig::rrf_k`, `lexical_weight`).
    #[default]
    Rrf,
    /// Convex combination of each list's scores scaled to [0, 1] within the list
    /// (`RetrievalConfig::lexical_share`); an item in both vector lists takes its better one.
    Convex,
}

impl Fusion {
    pub fn name(self) -> &'static str {
        match self {
            Fusion::Rrf => "rrf",
            Fusion::Convex => "convex",
        }
    }
}

/// Where a query's candidates come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SearchMode {
    /// Lexical and vector candidates, fused by reciprocal rank.
    #[default]
    Hybrid,
    /// Vector candidates only (the query's and the query/profile blend's).
    Semantic,
    /// Lexical candidates only; the query is not embedded.
    Lexical,
}

impl SearchMode {
    pub fn name(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Semantic => "semantic",
            SearchMode::Lexical => "lexical",
        }
    }
}

/// The order of a response's items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// By the ranker's score (with exploration).
    #[default]
    Relevance,
    /// Cheapest first; items without a price last.
    PriceAsc,
    /// Dearest first; items without a price last.
    PriceDesc,
    /// Newest `updated_at` first; items without one last.
    Newest,
}

/// A field a response counts its matched items by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FacetField {
    /// Every level of the category path (`Furniture` counts the items of `Furniture/Sofas`).
    Category,
    Brand,
    /// Items per price bucket (`SearchRequest::price_buckets`).
    Price,
    InStock,
}

/// Counts of the matched items by the requested fields, most frequent first (price
/// buckets in price order). Fields not asked for are `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facets {
    pub category: Option<Vec<(String, usize)>>,
    pub brand: Option<Vec<(String, usize)>>,
    pub price: Option<Vec<PriceBucket>>,
    pub in_stock: Option<Vec<(bool, usize)>>,
}

/// `(from, to, count)`: the items priced in `[from, to)`, open where `None`.
pub type PriceBucket = (Option<f64>, Option<f64>, usize);

/// The list a request without a query asks for: where a shop places it.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Placement {
    /// "For you": the profile's neighbours, the items co-visited with the user's recent
    /// ones, and trending items (in the filter's category when it names one).
    #[default]
    ForUser,
    /// A product page's "similar items": the item's nearest vectors and the items
    /// co-visited with it.
    SimilarItems(ItemId),
    /// A cart's "bought together": the items co-visited with these, strongest first.
    BoughtTogether(Vec<ItemId>),
    /// The user's recent items, newest first.
    RecentlyViewed,
    /// The trending items overall, or of a category (with the categories below it).
    Trending(Option<String>),
}

impl Placement {
    pub fn name(&self) -> &'static str {
        match self {
            Placement::ForUser => "for_user",
            Placement::SimilarItems(_) => "similar_items",
            Placement::BoughtTogether(_) => "bought_together",
            Placement::RecentlyViewed => "recently_viewed",
            Placement::Trending(_) => "trending",
        }
    }

    /// Whether the list keeps its own order (recency, trend) instead of the ranker's.
    pub fn keeps_list_order(&self) -> bool {
        matches!(self, Placement::RecentlyViewed | Placement::Trending(_))
    }
}

/// One search or recommendation request.
#[derive(Clone, Debug, Default)]
pub struct SearchRequest {
    pub query: Option<String>,
    pub mode: SearchMode,
    pub user_id: Option<UserId>,
    /// The page: items `offset..offset + k` of the ordered results.
    pub k: usize,
    pub offset: usize,
    pub sort: SortOrder,
    pub facets: Vec<FacetField>,
    /// Bucket edges of the price facet, ascending: `[50, 100]` counts below 50, 50 to
    /// 100, and 100 and above.
    pub price_buckets: Vec<f64>,
    pub filter: SearchFilter,
    pub explain: bool,
    /// Let exploration fill its share of the slots.
    pub explore: bool,
    /// The list asked for when there is no query.
    pub placement: Placement,
    /// Items never returned (besides a placement's own seed items).
    pub exclude_ids: Vec<ItemId>,
    /// Drop the items the user has seen enough of (`RetrievalConfig::seen_after`).
    pub exclude_seen: bool,
    /// Boosts, pins, blocks and diversity caps.
    pub rules: shelf_types::Rules,
}

/// One ranked item of a response.
#[derive(Clone, Debug)]
pub struct RankedItem {
    pub id: ItemId,
    pub score: f32,
    pub title: String,
    pub category: Option<String>,
    pub brand: Option<String>,
    pub price: Option<f64>,
    pub in_stock: Option<bool>,
    pub updated_at: Option<time::OffsetDateTime>,
    pub features: Features,
    pub explanation: Option<Vec<Contribution>>,
    /// Placed by exploration rather than by score.
    pub explored: bool,
    /// Within the relevance gap of the best query match (always true without a query).
    pub on_topic: bool,
    /// Decayed clicks and impressions (the CTR posterior's counts).
    pub clicks_impressions: (f64, f64),
    /// The candidate sources that proposed it.
    pub sources: Sources,
}

/// Where candidates come from (stage 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// ANN search with the query's vector.
    Query,
    /// ANN search with the user's interest vector (blended with the query's, with one).
    Profile,
    /// BM25 over the item's text fields.
    Lexical,
    /// The item whose id is the query text.
    ExactId,
    /// Items co-visited with the user's recent items (recommendations only).
    Covisit,
    /// Trending items (recommendations only).
    Trending,
    /// ANN search with the vector of the item a `similar_items` list is for.
    Similar,
    /// The user's recent items (`recently_viewed`).
    Recent,
    /// Pinned by a rule.
    Pinned,
}

impl Source {
    const ALL: [Source; 9] = [
        Source::Query,
        Source::Profile,
        Source::Lexical,
        Source::ExactId,
        Source::Covisit,
        Source::Trending,
        Source::Similar,
        Source::Recent,
        Source::Pinned,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Source::Query => "query_ann",
            Source::Profile => "profile_ann",
            Source::Lexical => "lexical",
            Source::ExactId => "exact_id",
            Source::Covisit => "covisit",
            Source::Trending => "trending",
            Source::Similar => "similar_ann",
            Source::Recent => "recent",
            Source::Pinned => "pinned",
        }
    }

    pub(super) fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of [`Source`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sources(u16);

impl Sources {
    /// The set of `source` alone.
    pub fn of(source: Source) -> Self {
        Self(source.bit())
    }

    pub fn contains(self, source: Source) -> bool {
        self.0 & source.bit() != 0
    }

    pub(super) fn insert(&mut self, source: Source) {
        self.0 |= source.bit();
    }

    /// The names of the sources in the set, in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        Source::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Source::name)
            .collect()
    }
}

/// Milliseconds spent per stage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub embed_ms: f64,
    pub lexical_ms: f64,
    pub ann_ms: f64,
    pub rerank_ms: f64,
    pub total_ms: f64,
}

/// A response plus the impression to log for it.
#[derive(Clone, Debug)]
pub struct SearchResponse {
    pub request_id: String,
    /// The ranker that scored the items.
    pub model: String,
    pub items: Vec<RankedItem>,
    pub timings: Timings,
    /// Whether the user's profile took part.
    pub personalized: bool,
    /// The mode the search ran in (semantic when the node has no lexical index).
    pub mode: SearchMode,
    /// Query words no item holds, looked up again with typos allowed.
    pub corrected: Vec<String>,
    /// How many items match: those on topic for a query (all candidates without one), up
    /// to the depth retrieved (`max(candidates, offset + k)`).
    pub total: usize,
    pub facets: Facets,
    /// Why a recommendation is empty when the request itself is at fault or nothing is
    /// known yet (an unknown item, a user without history).
    pub reason: Option<String>,
    /// Pinned items left out, and why (not in the catalog, excluded, failing the filters).
    pub skipped_pins: Vec<(ItemId, String)>,
    pub impression: Impression,
}
