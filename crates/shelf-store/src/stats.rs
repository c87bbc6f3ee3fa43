//! Item statistics: event-time decayed impressions, views, clicks, carts and purchases,
//! a smoothed CTR prior, and the windowed activity the Arroyo item stats pipeline computes.

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

/// An item's activity in one window, as the Arroyo item stats pipeline writes it to
/// `shelf-item-stats`: `{"item_id", "window": {"start", "end"}, "views", "clicks", "carts",
/// "purchases", "weight"}` (window bounds as RFC 3339 text or Unix milliseconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemWindow {
    pub item_id: String,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub views: f64,
    pub clicks: f64,
    pub carts: f64,
    pub purchases: f64,
    /// Sum of the events' kind weights.
    pub weight: f64,
}

impl ItemWindow {
    /// Parses and checks one `shelf-item-stats` record.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))?;
        let item_id = v
            .get("item_id")
            .and_then(|x| x.as_str())
            .filter(|s| !s.trim().is_empty())
            .ok_or("field `item_id` is required")?
            .to_string();
        let window = v.get("window").ok_or("field `window` is required")?;
        let bound = |name: &str| -> Result<i64, String> {
            match window.get(name) {
                Some(serde_json::Value::Number(n)) => n
                    .as_i64()
                    .ok_or_else(|| format!("window {name} is not whole milliseconds")),
                Some(serde_json::Value::String(s)) => {
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                        .map_err(|e| format!("window {name} {s:?}: {e}"))
                }
                _ => Err(format!("field `window.{name}` is required")),
            }
        };
        let count = |name: &str| -> Result<f64, String> {
            match v.get(name) {
                None | Some(serde_json::Value::Null) => Ok(0.0),
                Some(x) => x
                    .as_f64()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .ok_or_else(|| format!("field `{name}` must be a number >= 0")),
            }
        };
        let out = Self {
            item_id,
            window_start_ms: bound("start")?,
            window_end_ms: bound("end")?,
            views: count("views")?,
            clicks: count("clicks")?,
            carts: count("carts")?,
            purchases: count("purchases")?,
            weight: count("weight")?,
        };
        if out.window_end_ms <= out.window_start_ms {
            return Err("window ends before it starts".into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_item_windows_as_the_pipeline_writes_them() {
        let json = br#"{"item_id":"a","window":{"start":"2026-01-01T10:00:00Z","end":"2026-01-01T11:00:00Z"},
            "views":3,"clicks":1,"carts":0,"purchases":null,"weight":5.0}"#;
        let w = ItemWindow::parse(json).unwrap();
        assert_eq!(w.window_end_ms - w.window_start_ms, 3_600_000);
        assert_eq!(
            (w.views, w.clicks, w.purchases, w.weight),
            (3.0, 1.0, 0.0, 5.0)
        );
        let millis = br#"{"item_id":"a","window":{"start":0,"end":1000},"views":1}"#;
        assert_eq!(ItemWindow::parse(millis).unwrap().window_end_ms, 1000);
        for (bad, needle) in [
            (&br#"{"window":{"start":0,"end":1}}"#[..], "item_id"),
            (br#"{"item_id":"a"}"#, "window"),
            (
                br#"{"item_id":"a","window":{"start":5,"end":1}}"#,
                "ends before",
            ),
            (
                br#"{"item_id":"a","window":{"start":0,"end":1},"views":-1}"#,
                "views",
            ),
        ] {
            let e = ItemWindow::parse(bad).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

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
