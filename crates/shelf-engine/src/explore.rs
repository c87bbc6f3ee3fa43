//! Exploration: a share of result slots filled by Thompson sampling over items' CTR
//! posteriors (Beta), so items with few impressions get shown and learned about.

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Beta, Distribution};

/// Beta-posterior Thompson sampling with a seeded generator.
#[derive(Debug)]
pub struct Explorer {
    seed: u64,
    /// Prior CTR and its strength in pseudo-impressions: Beta(p0 s, (1 - p0) s).
    prior_ctr: f64,
    prior_strength: f64,
}

impl Explorer {
    pub fn new(seed: u64, prior_ctr: f64, prior_strength: f64) -> Self {
        Self {
            seed,
            prior_ctr,
            prior_strength,
        }
    }

    /// One draw of each candidate's CTR from Beta(prior + clicks, prior + impressions -
    /// clicks); counts may be decayed (fractional). The draws are fixed by `seed` (and the
    /// explorer's own): the same seed gives the same draws.
    pub fn sample_seeded(&self, posteriors: &[(f64, f64)], seed: u64) -> Vec<f64> {
        let rng = &mut SmallRng::seed_from_u64(self.seed ^ seed);
        posteriors
            .iter()
            .map(|&(clicks, impressions)| {
                let a = self.prior_ctr * self.prior_strength + clicks.max(0.0);
                let b =
                    (1.0 - self.prior_ctr) * self.prior_strength + (impressions - clicks).max(0.0);
                beta(rng, a, b)
            })
            .collect()
    }
}

/// Positions of `explore_slots` slots: the candidates below the first `k - explore_slots`
/// whose sampled CTR is highest, best first.
pub fn pick(sampled: &[f64], exploit: usize, explore_slots: usize) -> Vec<usize> {
    let mut rest: Vec<usize> = (exploit..sampled.len()).collect();
    rest.sort_by(|&a, &b| sampled[b].total_cmp(&sampled[a]));
    rest.truncate(explore_slots);
    rest
}

/// One draw from Beta(a, b) (rand_distr); parameters that are not positive and finite
/// (which the counts above cannot produce) give the uninformed 0.5.
fn beta(rng: &mut SmallRng, a: f64, b: f64) -> f64 {
    Beta::new(a, b).map_or(0.5, |beta| beta.sample(rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_draws_have_the_right_mean_and_spread() {
        let mut rng = SmallRng::seed_from_u64(1);
        for (a, b) in [(2.0, 8.0), (0.5, 0.5), (101.0, 901.0)] {
            let draws: Vec<f64> = (0..20_000).map(|_| beta(&mut rng, a, b)).collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / draws.len() as f64;
            let (m, v) = (a / (a + b), a * b / ((a + b).powi(2) * (a + b + 1.0)));
            assert!((mean - m).abs() < 0.01, "Beta({a},{b}) mean {mean} vs {m}");
            assert!(
                (var - v).abs() < 0.1 * v + 1e-4,
                "Beta({a},{b}) var {var} vs {v}"
            );
        }
    }

    #[test]
    fn uncertain_items_are_explored_more_than_known_mediocre_ones() {
        let explorer = Explorer::new(3, 0.05, 20.0);
        // Candidates 0..4 exploited; 4..8 well known at CTR 0.04; 8..12 never shown.
        let mut posteriors = vec![(40.0, 1000.0); 8];
        posteriors.extend(vec![(0.0, 0.0); 4]);
        let mut new_picks = 0;
        for seed in 0..1000 {
            let sampled = explorer.sample_seeded(&posteriors, seed);
            new_picks += pick(&sampled, 4, 2).iter().filter(|&&i| i >= 8).count();
        }
        assert!(
            new_picks > 1200,
            "new items picked {new_picks} times of 2000 slots"
        );
        assert_eq!(pick(&[0.1, 0.9, 0.2, 0.8], 1, 2), vec![1, 3]);
    }
}
