//! Item statistics: event-time decayed impressions, views, clicks, carts and purchases,
//! and a smoothed CTR prior.

use crate::profile::DecayConfig;
use serde::{Deserialize, Serialize};
use shelf_types::EventKind;

/// Decayed counters of one item, expressed at `last_ts_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemStats {
    pub item_id: String,
    pub last_ts_ms: i64,
    /// Times shown in a search response (logged by the query endpoint).
    pub impressions: f64,
    pub views: f64,
    pub clicks: f64,
    pub carts: f64,
    pub purchases: f64,
}

/// Which counter an observation increments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Impression,
    Event(EventKind),
}

impl ItemStats {
    pub fn new(item_id: &str) -> Self {
        Self {
            item_id: item_id.into(),
            last_ts_ms: i64::MIN,
            impressions: 0.0,
            views: 0.0,
            clicks: 0.0,
            carts: 0.0,
            purchases: 0.0,
        }
    }

    /// Adds one observation at `ts_ms`, decaying like profiles (out-of-order ones count less).
    pub fn observe(&mut self, counter: Counter, ts_ms: i64, config: &DecayConfig) {
        let scale = if self.last_ts_ms == i64::MIN {
            self.last_ts_ms = ts_ms;
            1.0
        } else if ts_ms >= self.last_ts_ms {
            let f = config.decay(ts_ms - self.last_ts_ms);
            for c in [
                &mut self.impressions,
                &mut self.views,
                &mut self.clicks,
                &mut self.carts,
                &mut self.purchases,
            ] {
                *c *= f;
            }
            self.last_ts_ms = ts_ms;
            1.0
        } else {
            config.decay(self.last_ts_ms - ts_ms)
        };
        let slot = match counter {
            Counter::Impression => &mut self.impressions,
            Counter::Event(EventKind::View) => &mut self.views,
            Counter::Event(EventKind::Click) => &mut self.clicks,
            Counter::Event(EventKind::AddToCart) => &mut self.carts,
            Counter::Event(EventKind::Purchase) => &mut self.purchases,
            Counter::Event(EventKind::Search) => return,
        };
        *slot += scale;
    }

    /// Smoothed click-through rate: `(clicks + s * p0) / (impressions + s)`, so items with
    /// few impressions stay near the prior `p0`.
    pub fn ctr(&self, config: &DecayConfig) -> f64 {
        (self.clicks + config.prior_strength * config.prior_ctr)
            / (self.impressions + config.prior_strength)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_decay_and_ctr_is_smoothed() {
        let cfg = DecayConfig::default();
        let day = 24 * 3600 * 1000;
        let mut s = ItemStats::new("a");
        assert!((s.ctr(&cfg) - 0.05).abs() < 1e-12);
        for _ in 0..80 {
            s.observe(Counter::Impression, 0, &cfg);
        }
        for _ in 0..10 {
            s.observe(Counter::Event(EventKind::Click), 0, &cfg);
        }
        // (10 + 20 * 0.05) / (80 + 20) = 0.11
        assert!((s.ctr(&cfg) - 0.11).abs() < 1e-12);
        s.observe(Counter::Event(EventKind::Purchase), 14 * day, &cfg);
        assert!((s.clicks - 5.0).abs() < 1e-9 && (s.impressions - 40.0).abs() < 1e-9);
        assert_eq!(s.purchases, 1.0);
    }
}
