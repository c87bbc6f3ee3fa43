//! Ranking vocabulary shared by the engine (which computes features) and the rankers.

/// The features of one (user, query, item) candidate, in the order rankers read them.
///
/// Every value is scaled to roughly `[0, 1]` (cosines stay in `[-1, 1]`) so hand-set
/// weights are comparable and learned models train without further normalisation.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "query_cosine",
    "profile_cosine",
    "category_affinity",
    "ctr_prior",
    "popularity",
    "price_fit",
    "freshness",
    "lexical_overlap",
    "stage1_rank",
    "covisit",
    "trending",
    "lexical_score",
];

/// Number of ranking features.
pub const FEATURE_COUNT: usize = 12;

/// Features of schema version 1 (before `covisit` and `trending`): a prefix of
/// [`FEATURE_NAMES`].
pub const FEATURE_COUNT_V1: usize = 9;

/// Features of schema version 2 (before `lexical_score`): a prefix of [`FEATURE_NAMES`].
pub const FEATURE_COUNT_V2: usize = 11;

/// Features logged with an impression, as the current schema: a vector logged by an older
/// schema (a prefix of [`FEATURE_NAMES`]) gets 0 for the later features; other lengths are
/// `None`.
pub fn features_from_logged(values: &[f32]) -> Option<Features> {
    let mut features = [0.0; FEATURE_COUNT];
    match values.len() {
        FEATURE_COUNT | FEATURE_COUNT_V2 | FEATURE_COUNT_V1 => {
            features[..values.len()].copy_from_slice(values);
            Some(features)
        }
        _ => None,
    }
}

/// Feature values of one candidate, indexed like [`FEATURE_NAMES`].
pub type Features = [f32; FEATURE_COUNT];

/// One feature's share of a score.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Contribution {
    pub feature: &'static str,
    pub value: f32,
    pub contribution: f32,
}

/// Scores candidates from their features; higher ranks first.
pub trait Ranker: Send + Sync {
    /// A short name of the model (reported in responses and metrics).
    fn name(&self) -> &str;

    /// The score of one candidate.
    fn score(&self, features: &Features) -> f32;

    /// The scores of many candidates, in order, equal to `score` of each; a model that
    /// scores faster in bulk (trees: each tree walked for every candidate while its nodes
    /// are in cache) overrides it.
    fn score_all(&self, features: &[Features]) -> Vec<f32> {
        features.iter().map(|f| self.score(f)).collect()
    }

    /// Each feature's additive contribution to the score, when the model is additive
    /// in its features (linear models); other models return their own decomposition.
    fn explain(&self, features: &Features) -> Vec<Contribution>;
}
