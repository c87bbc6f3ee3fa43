//! Behaviour signals kept by the event job: for each item its most co-visited items, and
//! trending items overall and per category, all decayed by event time like profiles.

use crate::profile::DecayConfig;
use serde::{Deserialize, Serialize};
use shelf_types::EventKind;

/// The trending scope of every item (the per-category scopes are the category paths).
pub const TRENDING_OVERALL: &str = "";

/// A bounded list of ids with decayed scores, strongest first, all expressed at
/// `last_ts_ms`. When full, an id enters only by outscoring the weakest (which leaves);
/// an id that left comes back with only its new weight.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopList {
    pub last_ts_ms: i64,
    pub entries: Vec<(String, f64)>,
}

impl TopList {
    /// Adds `weight` to `id` at `ts_ms` with half-life `half_life_secs`: a newer time first
    /// decays the list to it; an older (out-of-order) weight is decayed to the list's time.
    pub fn add(&mut self, id: &str, weight: f64, ts_ms: i64, half_life_secs: f64, max: usize) {
        if max == 0 || weight <= 0.0 || !weight.is_finite() {
            return;
        }
        let decay = |dt_ms: i64| (-(dt_ms as f64 / 1000.0) / half_life_secs).exp2();
        let weight = if self.entries.is_empty() || ts_ms >= self.last_ts_ms {
            if !self.entries.is_empty() && ts_ms > self.last_ts_ms {
                let f = decay(ts_ms - self.last_ts_ms);
                self.entries.iter_mut().for_each(|(_, w)| *w *= f);
            }
            self.last_ts_ms = ts_ms;
            weight
        } else {
            weight * decay(self.last_ts_ms - ts_ms)
        };
        let at = match self.entries.iter().position(|(e, _)| e == id) {
            Some(at) => {
                self.entries[at].1 += weight;
                at
            }
            None if self.entries.len() < max => {
                self.entries.push((id.to_string(), weight));
                self.entries.len() - 1
            }
            None => {
                let weakest = self.entries.last().map_or(0.0, |e| e.1);
                if weight <= weakest {
                    return;
                }
                let last = self.entries.len() - 1;
                self.entries[last] = (id.to_string(), weight);
                last
            }
        };
        // Only the changed entry can be out of place, and only towards the front.
        let mut i = at;
        while i > 0 && outranks(&self.entries[i], &self.entries[i - 1]) {
            self.entries.swap(i, i - 1);
            i -= 1;
        }
    }

    /// The score of `id` at the list's time, 0 when absent.
    pub fn score(&self, id: &str) -> f64 {
        self.entries
            .iter()
            .find(|(e, _)| e == id)
            .map_or(0.0, |e| e.1)
    }

    /// The strongest score (0 for an empty list).
    pub fn top(&self) -> f64 {
        self.entries.first().map_or(0.0, |e| e.1)
    }
}

fn outranks(a: &(String, f64), b: &(String, f64)) -> bool {
    a.1 > b.1 || (a.1 == b.1 && a.0 < b.0)
}

/// How the event job pairs items into co-visitations and counts trending items.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BehaviourConfig {
    /// A user's previous item events paired with each new one (the newest first).
    pub covisit_window: usize,
    /// Only events at most this many seconds apart are paired.
    pub covisit_max_gap_secs: f64,
    /// Weight of the pair in the backward direction (the new item in the list of an item
    /// seen before it gets weight 1; the older item in the new item's list this).
    pub covisit_backward: f64,
    /// Co-visited items kept per item.
    pub covisit_neighbours: usize,
    /// Seconds after which a co-visit weight has halved.
    pub covisit_half_life_secs: f64,
    /// Seconds after which a trending weight has halved (shorter than profiles': trends move).
    pub trending_half_life_secs: f64,
    /// Items kept per trending list (overall and per category).
    pub trending_size: usize,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        Self {
            covisit_window: 10,
            covisit_max_gap_secs: 24.0 * 3600.0,
            covisit_backward: 0.5,
            covisit_neighbours: 100,
            covisit_half_life_secs: 180.0 * 24.0 * 3600.0,
            trending_half_life_secs: 3.0 * 24.0 * 3600.0,
            trending_size: 200,
        }
    }
}

/// One co-visitation pair: `weight` goes to `to` in `from`'s list.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    pub from: String,
    pub to: String,
    pub weight: f64,
}

/// The pairs one item event (`kind` on `item` at `ts_ms`) makes with the user's earlier
/// events `recent` (newest first, as a profile holds them before the event is applied).
///
/// The `j`-th distinct other item back (1-based) pairs with weight
/// `sqrt(w(kind) * w(its kind)) / j`: both forward (`earlier -> item`, full weight) and
/// backward (`item -> earlier`, times `covisit_backward`). Events further apart than
/// `covisit_max_gap_secs` do not pair. The co-visit lists then decay by event time.
pub fn covisit_pairs(
    item: &str,
    kind: EventKind,
    ts_ms: i64,
    recent: &[crate::RecentItem],
    decay: &DecayConfig,
    config: &BehaviourConfig,
) -> Vec<Pair> {
    let w = decay.weights.of(kind);
    if w <= 0.0 || config.covisit_window == 0 {
        return Vec::new();
    }
    let max_gap_ms = (config.covisit_max_gap_secs * 1000.0) as i64;
    let mut seen: Vec<&str> = Vec::with_capacity(config.covisit_window);
    let mut pairs = Vec::new();
    for earlier in recent {
        if seen.len() == config.covisit_window {
            break;
        }
        if earlier.item_id == item || seen.contains(&earlier.item_id.as_str()) {
            continue;
        }
        seen.push(&earlier.item_id);
        if (ts_ms - earlier.ts_ms).abs() > max_gap_ms {
            continue;
        }
        let weight = (w * decay.weights.of(earlier.kind)).sqrt() / seen.len() as f64;
        pairs.push(Pair {
            from: earlier.item_id.clone(),
            to: item.to_string(),
            weight,
        });
        if config.covisit_backward > 0.0 {
            pairs.push(Pair {
                from: item.to_string(),
                to: earlier.item_id.clone(),
                weight: weight * config.covisit_backward,
            });
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecentItem;

    const HOUR_MS: i64 = 3600 * 1000;

    #[test]
    fn a_top_list_keeps_the_strongest_and_decays_by_event_time() {
        let mut list = TopList::default();
        let day = 86_400.0;
        list.add("a", 1.0, 0, day, 2);
        list.add("b", 3.0, 0, day, 2);
        list.add("a", 1.0, 0, day, 2);
        assert_eq!(
            list.entries,
            vec![("b".to_string(), 3.0), ("a".to_string(), 2.0)]
        );
        // Full: a weaker newcomer is turned away, a stronger one replaces the weakest.
        list.add("c", 1.0, 0, day, 2);
        assert_eq!(list.score("c"), 0.0);
        list.add("c", 2.5, 0, day, 2);
        assert_eq!(list.entries[1], ("c".to_string(), 2.5));
        // One half-life later everything has halved before the new weight lands.
        list.add("c", 1.0, 86_400_000, day, 2);
        assert_eq!(list.last_ts_ms, 86_400_000);
        assert!((list.score("b") - 1.5).abs() < 1e-12);
        assert!((list.score("c") - 2.25).abs() < 1e-12);
        assert_eq!(list.entries[0].0, "c");
        // An older weight is decayed to the list's time instead.
        list.add("b", 2.0, 0, day, 2);
        assert!((list.score("b") - 2.5).abs() < 1e-12);
        assert_eq!(list.entries[0].0, "b");
        assert_eq!(list.top(), 2.5);
    }

    #[test]
    fn a_top_list_ignores_empty_and_invalid_weights() {
        let mut list = TopList::default();
        for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            list.add("a", w, 0, 1.0, 3);
        }
        list.add("a", 1.0, 0, 1.0, 0);
        assert!(list.entries.is_empty());
    }

    fn recent(items: &[(&str, EventKind, i64)]) -> Vec<RecentItem> {
        items
            .iter()
            .map(|(id, kind, ts)| RecentItem {
                item_id: id.to_string(),
                kind: *kind,
                ts_ms: *ts,
            })
            .collect()
    }

    /// The `covisit_pairs` UDF of the distributed path is held to the same cases.
    #[test]
    fn pairs_match_the_shared_udf_parity_cases() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/udf_parity.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let case = &fixture["covisit_pairs"];
        let decay = DecayConfig::default();
        let config = BehaviourConfig::default();
        let mut profile = crate::Profile::new("u", 1);
        let mut got = Vec::new();
        for event in case["events"].as_array().unwrap() {
            let item = event["item_id"].as_str().unwrap();
            let kind: EventKind = serde_json::from_value(event["kind"].clone()).unwrap();
            let ts = event["ts_ms"].as_i64().unwrap();
            for pair in covisit_pairs(item, kind, ts, &profile.recent, &decay, &config) {
                got.push(serde_json::json!({
                    "from": pair.from, "to": pair.to, "weight": pair.weight, "ts_ms": ts,
                }));
            }
            let facts = crate::ItemFacts {
                id: item,
                vector: &[1.0],
                category: None,
                price: None,
            };
            profile.apply(kind, ts, Some(facts), &decay);
        }
        assert_eq!(serde_json::Value::Array(got), case["pairs"]);
    }

    #[test]
    fn pairs_weigh_kinds_and_distance_and_skip_repeats_and_old_events() {
        let decay = DecayConfig::default();
        let config = BehaviourConfig {
            covisit_window: 3,
            covisit_max_gap_secs: 10.0 * 3600.0,
            covisit_backward: 0.5,
            ..Default::default()
        };
        let history = recent(&[
            ("b", EventKind::Purchase, 9 * HOUR_MS),
            ("x", EventKind::View, 8 * HOUR_MS), // the new item itself: skipped
            ("b", EventKind::View, 7 * HOUR_MS), // a repeat: only the newest counts
            ("c", EventKind::View, 6 * HOUR_MS),
            ("d", EventKind::View, -5 * HOUR_MS), // 15 h before: too far apart
            ("e", EventKind::View, 5 * HOUR_MS),  // beyond the window of 3 distinct items
        ]);
        let pairs = covisit_pairs(
            "x",
            EventKind::View,
            10 * HOUR_MS,
            &history,
            &decay,
            &config,
        );
        let got: Vec<(&str, &str, f64)> = pairs
            .iter()
            .map(|p| (p.from.as_str(), p.to.as_str(), p.weight))
            .collect();
        let b = (1.0f64 * 8.0).sqrt();
        assert_eq!(
            got,
            vec![
                ("b", "x", b),
                ("x", "b", b * 0.5),
                ("c", "x", 0.5),
                ("x", "c", 0.25),
            ]
        );
        // Search events carry no item weight and pair with nothing.
        assert!(covisit_pairs("x", EventKind::Search, 0, &history, &decay, &config).is_empty());
    }
}
