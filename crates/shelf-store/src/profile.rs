//! User profiles: event-time decayed interest vector, category affinities, price preference,
//! recent items and counts (the math of DESIGN.md, "Semantics that must hold").

use serde::{Deserialize, Serialize};
use shelf_types::EventKind;

/// How events shape profiles and item stats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecayConfig {
    /// Seconds after which an event's weight has halved (default 14 days).
    pub half_life_secs: f64,
    /// Weights of view, click, add_to_cart, purchase (search events carry no item).
    pub weights: KindWeights,
    /// Category affinities kept per profile (the strongest).
    pub max_categories: usize,
    /// Recent items kept per profile (the newest by event time).
    pub max_recent: usize,
    /// Prior CTR and its strength in pseudo-impressions, for the smoothed CTR of an item.
    pub prior_ctr: f64,
    pub prior_strength: f64,
}

impl Default for DecayConfig {
    fn default() -> Self {
        Self {
            half_life_secs: 14.0 * 24.0 * 3600.0,
            weights: KindWeights::default(),
            max_categories: 20,
            max_recent: 50,
            prior_ctr: 0.05,
            prior_strength: 20.0,
        }
    }
}

/// Event weights per kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KindWeights {
    pub view: f64,
    pub click: f64,
    pub add_to_cart: f64,
    pub purchase: f64,
}

impl Default for KindWeights {
    fn default() -> Self {
        Self {
            view: 1.0,
            click: 2.0,
            add_to_cart: 4.0,
            purchase: 8.0,
        }
    }
}

impl KindWeights {
    pub fn of(&self, kind: EventKind) -> f64 {
        match kind {
            EventKind::View => self.view,
            EventKind::Click => self.click,
            EventKind::AddToCart => self.add_to_cart,
            EventKind::Purchase => self.purchase,
            EventKind::Search => 0.0,
        }
    }
}

impl DecayConfig {
    /// The factor by which a weight shrinks over `dt_ms` milliseconds.
    pub fn decay(&self, dt_ms: i64) -> f64 {
        (-(dt_ms as f64 / 1000.0) / self.half_life_secs).exp2()
    }
}

/// One interaction remembered in a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentItem {
    pub item_id: String,
    pub kind: EventKind,
    pub ts_ms: i64,
}

/// Undecayed event counts per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    pub view: u64,
    pub click: u64,
    pub add_to_cart: u64,
    pub purchase: u64,
    pub search: u64,
}

impl KindCounts {
    fn bump(&mut self, kind: EventKind) {
        match kind {
            EventKind::View => self.view += 1,
            EventKind::Click => self.click += 1,
            EventKind::AddToCart => self.add_to_cart += 1,
            EventKind::Purchase => self.purchase += 1,
            EventKind::Search => self.search += 1,
        }
    }
}

/// What shelf knows about one user. All decayed quantities are expressed at `last_ts_ms`,
/// the latest event time seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub user_id: String,
    pub last_ts_ms: i64,
    /// Decayed weighted sum of the vectors of items interacted with (not normalised).
    pub interest: Vec<f32>,
    /// Decayed total weight of item interactions.
    pub weight: f64,
    /// Decayed weight per category, strongest first, at most `max_categories`.
    pub categories: Vec<(String, f64)>,
    /// Decayed weight, weighted sum and weighted sum of squares of interacted prices.
    pub price_weight: f64,
    pub price_sum: f64,
    pub price_sq_sum: f64,
    /// Newest first by event time, at most `max_recent`.
    pub recent: Vec<RecentItem>,
    pub counts: KindCounts,
}

/// The parts of an item an interaction contributes to a profile.
#[derive(Clone, Copy, Debug)]
pub struct ItemFacts<'a> {
    pub id: &'a str,
    pub vector: &'a [f32],
    pub category: Option<&'a str>,
    pub price: Option<f64>,
}

impl Profile {
    pub fn new(user_id: &str, dim: usize) -> Self {
        Self {
            user_id: user_id.to_string(),
            last_ts_ms: i64::MIN,
            interest: vec![0.0; dim],
            weight: 0.0,
            categories: Vec::new(),
            price_weight: 0.0,
            price_sum: 0.0,
            price_sq_sum: 0.0,
            recent: Vec::new(),
            counts: KindCounts::default(),
        }
    }

    /// Mean price of interacted items, weighted by decayed event weight.
    pub fn price_preference(&self) -> Option<f64> {
        (self.price_weight > 0.0).then(|| self.price_sum / self.price_weight)
    }

    /// Applies one event at `ts_ms`. A newer event first decays the profile to its time;
    /// an older (out-of-order) one is added with its weight decayed to the profile's time.
    pub fn apply(
        &mut self,
        kind: EventKind,
        ts_ms: i64,
        item: Option<ItemFacts<'_>>,
        config: &DecayConfig,
    ) {
        self.counts.bump(kind);
        let scale = if self.last_ts_ms == i64::MIN {
            self.last_ts_ms = ts_ms;
            1.0
        } else if ts_ms >= self.last_ts_ms {
            self.decay_to(ts_ms, config);
            1.0
        } else {
            config.decay(self.last_ts_ms - ts_ms)
        };
        let Some(item) = item else {
            return;
        };
        let w = config.weights.of(kind) * scale;
        if self.interest.len() != item.vector.len() {
            // First item interaction decides the dimension (profiles made before any item).
            self.interest = vec![0.0; item.vector.len()];
        }
        let wf = w as f32;
        for (acc, x) in self.interest.iter_mut().zip(item.vector) {
            *acc += wf * x;
        }
        self.weight += w;
        if let Some(category) = item.category {
            match self.categories.iter_mut().find(|(c, _)| c == category) {
                Some((_, weight)) => *weight += w,
                None => self.categories.push((category.to_string(), w)),
            }
            self.categories
                .sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            self.categories.truncate(config.max_categories);
        }
        if let Some(price) = item.price {
            self.price_weight += w;
            self.price_sum += w * price;
            self.price_sq_sum += w * price * price;
        }
        let at = self.recent.partition_point(|r| r.ts_ms > ts_ms);
        self.recent.insert(
            at,
            RecentItem {
                item_id: item.id.to_string(),
                kind,
                ts_ms,
            },
        );
        self.recent.truncate(config.max_recent);
    }

    fn decay_to(&mut self, ts_ms: i64, config: &DecayConfig) {
        if ts_ms == self.last_ts_ms {
            return;
        }
        let f = config.decay(ts_ms - self.last_ts_ms);
        let ff = f as f32;
        self.interest.iter_mut().for_each(|x| *x *= ff);
        self.weight *= f;
        self.categories.iter_mut().for_each(|(_, w)| *w *= f);
        self.price_weight *= f;
        self.price_sum *= f;
        self.price_sq_sum *= f;
        self.last_ts_ms = ts_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 24 * 3600 * 1000;

    fn config() -> DecayConfig {
        DecayConfig {
            max_categories: 2,
            max_recent: 3,
            ..Default::default()
        }
    }

    fn facts<'a>(id: &'a str, v: &'a [f32], category: &'a str, price: f64) -> ItemFacts<'a> {
        ItemFacts {
            id,
            vector: v,
            category: Some(category),
            price: Some(price),
        }
    }

    /// The Arroyo UDF udfs/event_weight.rs is held to the same file.
    #[test]
    fn event_weights_match_the_shared_udf_parity_cases() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/udf_parity.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = fixture["event_weight"].as_array().unwrap();
        assert_eq!(cases.len(), EventKind::ALL.len());
        let weights = KindWeights::default();
        for case in cases {
            let kind: EventKind = serde_json::from_value(case["kind"].clone()).unwrap();
            assert_eq!(
                weights.of(kind),
                case["weight"].as_f64().unwrap(),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn weights_decay_with_a_half_life_of_14_days() {
        let cfg = config();
        let mut p = Profile::new("u", 2);
        p.apply(
            EventKind::Purchase,
            0,
            Some(facts("a", &[1.0, 0.0], "A", 100.0)),
            &cfg,
        );
        p.apply(
            EventKind::View,
            14 * DAY_MS,
            Some(facts("b", &[0.0, 1.0], "B", 10.0)),
            &cfg,
        );
        // Purchase (8) halved to 4 after 14 days, plus a fresh view (1).
        assert!((p.interest[0] - 4.0).abs() < 1e-6, "{:?}", p.interest);
        assert!((p.interest[1] - 1.0).abs() < 1e-6);
        assert!((p.weight - 5.0).abs() < 1e-9);
        assert_eq!(p.categories, vec![("A".into(), 4.0), ("B".into(), 1.0)]);
        // Weighted mean price: (4 * 100 + 1 * 10) / 5 = 82.
        assert!((p.price_preference().unwrap() - 82.0).abs() < 1e-9);
        assert_eq!(
            p.counts,
            KindCounts {
                view: 1,
                purchase: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn out_of_order_events_are_decayed_to_the_latest_time() {
        let cfg = config();
        let mut p = Profile::new("u", 1);
        p.apply(
            EventKind::Click,
            28 * DAY_MS,
            Some(facts("a", &[1.0], "A", 1.0)),
            &cfg,
        );
        p.apply(
            EventKind::Purchase,
            0,
            Some(facts("b", &[1.0], "A", 1.0)),
            &cfg,
        );
        // Click 2 at the latest time + purchase 8 from 28 days earlier (two half-lives): 2 + 2.
        assert!((p.interest[0] - 4.0).abs() < 1e-6);
        assert_eq!(p.last_ts_ms, 28 * DAY_MS);
        assert_eq!(p.recent[0].item_id, "a");
        assert_eq!(p.recent[1].item_id, "b");
    }

    #[test]
    fn categories_and_recent_items_are_bounded() {
        let cfg = config();
        let mut p = Profile::new("u", 1);
        for (i, (category, kind)) in [
            ("A", EventKind::View),
            ("B", EventKind::Purchase),
            ("C", EventKind::Click),
            ("D", EventKind::View),
        ]
        .into_iter()
        .enumerate()
        {
            p.apply(
                kind,
                i as i64,
                Some(facts(category, &[1.0], category, 1.0)),
                &cfg,
            );
        }
        let names: Vec<&str> = p.categories.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["B", "C"]);
        let recent: Vec<&str> = p.recent.iter().map(|r| r.item_id.as_str()).collect();
        assert_eq!(recent, ["D", "C", "B"]);
    }

    #[test]
    fn search_events_count_but_add_no_interest() {
        let cfg = config();
        let mut p = Profile::new("u", 2);
        p.apply(EventKind::Search, 5, None, &cfg);
        assert_eq!(p.counts.search, 1);
        assert_eq!(p.weight, 0.0);
        assert_eq!(p.last_ts_ms, 5);
    }
}
