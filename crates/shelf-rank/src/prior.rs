//! The hand-set prior model: a weighted sum of features, used until a model is trained.

use shelf_types::{Contribution, Features, Ranker, FEATURE_COUNT, FEATURE_NAMES};

/// A linear model with weights chosen by hand: relevance to the query first, then the
/// user's behaviour (co-visitation with their recent items) and profile, then item quality
/// signals, with small tie-breakers.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorRanker {
    weights: Features,
}

impl Default for PriorRanker {
    fn default() -> Self {
        Self {
            // Order of FEATURE_NAMES: query_cosine, profile_cosine, category_affinity,
            // ctr_prior, popularity, price_fit, freshness, lexical_overlap, stage1_rank,
            // covisit, trending, lexical_score.
            weights: [4.0, 2.0, 1.5, 4.0, 0.5, 1.0, 0.2, 1.5, 0.3, 16.0, 0.5, 1.0],
        }
    }
}

impl PriorRanker {
    /// A model with custom weights, indexed like [`FEATURE_NAMES`].
    pub fn with_weights(weights: Features) -> Self {
        Self { weights }
    }

    /// The weights, indexed like [`FEATURE_NAMES`].
    pub fn weights(&self) -> &Features {
        &self.weights
    }
}

impl Ranker for PriorRanker {
    fn name(&self) -> &str {
        "prior"
    }

    fn score(&self, features: &Features) -> f32 {
        self.weights.iter().zip(features).map(|(w, x)| w * x).sum()
    }

    fn explain(&self, features: &Features) -> Vec<Contribution> {
        (0..FEATURE_COUNT)
            .map(|i| Contribution {
                feature: FEATURE_NAMES[i],
                value: features[i],
                contribution: self.weights[i] * features[i],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contributions_sum_to_the_score() {
        let ranker = PriorRanker::default();
        let features = [0.8, 0.5, 0.3, 0.06, 0.2, 0.9, 0.5, 0.5, 0.25, 0.0, 0.0, 0.0];
        let explained: f32 = ranker
            .explain(&features)
            .iter()
            .map(|c| c.contribution)
            .sum();
        assert!((explained - ranker.score(&features)).abs() < 1e-5);
        // 4*0.8 + 2*0.5 + 1.5*0.3 + 4*0.06 + 0.5*0.2 + 0.9 + 0.2*0.5 + 1.5*0.5 + 0.3*0.25
        assert!((ranker.score(&features) - 6.815).abs() < 1e-5);
    }

    #[test]
    fn query_relevance_outranks_small_signals() {
        let ranker = PriorRanker::default();
        let relevant = [0.9, 0.0, 0.0, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let popular = [0.3, 0.0, 0.0, 0.05, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        assert!(ranker.score(&relevant) > ranker.score(&popular));
    }
}
