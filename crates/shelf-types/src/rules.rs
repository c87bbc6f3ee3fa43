//! Business rules a merchandiser puts on a search or recommendation: boost or bury what a
//! filter matches, pin items at positions, block items, and cap items per category or brand.

use crate::{ItemId, RecordError, SearchFilter};
use serde::{Deserialize, Serialize};

/// Most boosts, pins or blocked ids one request may carry.
pub const MAX_RULES: usize = 100;

/// The rules of one request; the default changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Scale the score of the items a filter matches: `factor` above 1 raises them, below
    /// 1 buries them (a score is moved away from zero by a boost and toward it by a bury,
    /// so the direction holds for negative scores too). Factors of several matching boosts
    /// multiply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boost: Vec<Boost>,
    /// Items put at fixed 1-based positions of the result list, whatever their score. A
    /// pinned item that does not exist, is blocked or excluded, or fails the filters is
    /// skipped and listed in the response's `skipped_pins`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pin: Vec<Pin>,
    /// Items never returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block: Vec<ItemId>,
    /// Caps on how many items of one category or brand the list may show before the items
    /// of others (see [`Diversity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diversity: Option<Diversity>,
}

/// One boost or bury.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Boost {
    pub filter: SearchFilter,
    /// Greater than 0 and at most 100; 1 changes nothing.
    pub factor: f32,
}

/// One pinned item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub id: ItemId,
    /// 1-based position in the whole result list (1 to 1000).
    pub position: usize,
}

/// Diversity among the first `offset + k` results.
///
/// `mmr_lambda` (0 to 1) first re-orders the items that match the query by maximal
/// marginal relevance: each next slot goes to the item with the highest
/// `λ · relevance − (1 − λ) · (its highest cosine with a matching item placed before it)`, relevance
/// being the score scaled to [0, 1] over those items (1: the ranking's order; lower values
/// trade relevance for items unlike those above them). Then the caps: at most this many
/// items per (exact) category or brand; items over a cap move after them, in order, and
/// fill the list after all when too few other items exist.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Diversity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_category: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_brand: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmr_lambda: Option<f32>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The boost of an item that `matches` each boost's filter or not: the product of the
    /// factors of the boosts it matches.
    pub fn factor(&self, matches: impl Fn(&SearchFilter) -> bool) -> f32 {
        self.boost
            .iter()
            .filter(|b| matches(&b.filter))
            .map(|b| b.factor)
            .product()
    }

    /// Checks sizes, factors, positions and conflicts (an id pinned twice, two pins at one
    /// position, an id both pinned and blocked).
    pub fn validate(&self) -> Result<(), RecordError> {
        let invalid = |field, value: String, reason| {
            Err(RecordError::InvalidValue {
                field,
                value,
                reason,
            })
        };
        for (field, len) in [
            ("rules.boost", self.boost.len()),
            ("rules.pin", self.pin.len()),
            ("rules.block", self.block.len()),
        ] {
            if len > MAX_RULES {
                return invalid(field, len.to_string(), "at most 100 entries");
            }
        }
        for boost in &self.boost {
            if !(boost.factor.is_finite() && boost.factor > 0.0 && boost.factor <= 100.0) {
                return invalid(
                    "rules.boost.factor",
                    boost.factor.to_string(),
                    "must be greater than 0 and at most 100",
                );
            }
            boost.filter.validate()?;
        }
        for (i, pin) in self.pin.iter().enumerate() {
            if !(1..=1000).contains(&pin.position) {
                return invalid(
                    "rules.pin.position",
                    pin.position.to_string(),
                    "must be between 1 and 1000",
                );
            }
            if self.pin[..i].iter().any(|p| p.id == pin.id) {
                return invalid(
                    "rules.pin",
                    pin.id.to_string(),
                    "the same id is pinned twice",
                );
            }
            if self.pin[..i].iter().any(|p| p.position == pin.position) {
                return invalid(
                    "rules.pin",
                    pin.position.to_string(),
                    "two pins at the same position",
                );
            }
            if self.block.contains(&pin.id) {
                return invalid("rules.pin", pin.id.to_string(), "the id is also blocked");
            }
        }
        if let Some(d) = &self.diversity {
            for (field, cap) in [
                ("rules.diversity.max_per_category", d.max_per_category),
                ("rules.diversity.max_per_brand", d.max_per_brand),
            ] {
                if cap == Some(0) {
                    return invalid(field, "0".into(), "must be at least 1");
                }
            }
            if let Some(lambda) = d.mmr_lambda {
                if !(0.0..=1.0).contains(&lambda) {
                    return invalid(
                        "rules.diversity.mmr_lambda",
                        lambda.to_string(),
                        "must be between 0 and 1",
                    );
                }
            }
        }
        Ok(())
    }
}

impl Rules {
    /// These (a request's) rules on top of a placement's stored `defaults`: the defaults'
    /// boosts, then these (factors multiply); these pins, then the defaults' pins of ids and
    /// positions these neither pin nor block; the blocks of both, except ids these pin (an
    /// explicit pin or block beats a default); each diversity setting from these if given,
    /// else from the defaults.
    pub fn over(self, defaults: &Rules) -> Rules {
        let mut pin = self.pin;
        for p in &defaults.pin {
            let taken = pin.iter().any(|q| q.id == p.id || q.position == p.position);
            if !taken && !self.block.contains(&p.id) {
                pin.push(p.clone());
            }
        }
        let mut block: Vec<ItemId> = defaults
            .block
            .iter()
            .filter(|id| !pin.iter().any(|p| &p.id == *id))
            .cloned()
            .collect();
        for id in self.block {
            if !block.contains(&id) {
                block.push(id);
            }
        }
        let diversity = match (self.diversity, &defaults.diversity) {
            (Some(own), Some(stored)) => Some(Diversity {
                max_per_category: own.max_per_category.or(stored.max_per_category),
                max_per_brand: own.max_per_brand.or(stored.max_per_brand),
                mmr_lambda: own.mmr_lambda.or(stored.mmr_lambda),
            }),
            (own, stored) => own.or_else(|| stored.clone()),
        };
        Rules {
            boost: defaults.boost.iter().cloned().chain(self.boost).collect(),
            pin,
            block,
            diversity,
        }
    }
}

/// `score` scaled by a boost `factor`: away from zero above 1, toward it below.
pub fn boosted(score: f32, factor: f32) -> f32 {
    if score >= 0.0 {
        score * factor
    } else {
        score / factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requests_rules_go_on_top_of_the_defaults() {
        let parse = |json: &str| serde_json::from_str::<Rules>(json).unwrap();
        let defaults = parse(
            r#"{"boost": [{"filter": {"brand": "Nord"}, "factor": 1.5}],
                "pin": [{"id": "a", "position": 1}, {"id": "b", "position": 2}],
                "block": ["x", "c"], "diversity": {"max_per_brand": 2}}"#,
        );
        let request = parse(
            r#"{"boost": [{"filter": {"in_stock": true}, "factor": 2}],
                "pin": [{"id": "c", "position": 2}], "block": ["y"]}"#,
        );
        let merged = request.over(&defaults);
        assert_eq!(
            merged,
            parse(
                r#"{"boost": [{"filter": {"brand": "Nord"}, "factor": 1.5},
                              {"filter": {"in_stock": true}, "factor": 2}],
                    "pin": [{"id": "c", "position": 2}, {"id": "a", "position": 1}],
                    "block": ["x", "y"], "diversity": {"max_per_brand": 2}}"#
            )
        );
        assert!(merged.validate().is_ok());
        // No defaults: the request's own; no request rules: the defaults.
        assert_eq!(defaults.clone().over(&Rules::default()), defaults);
        assert_eq!(Rules::default().over(&defaults), defaults);
        // Diversity settings merge one by one: the request's cap, the stored other cap.
        let own = parse(r#"{"diversity": {"max_per_category": 1, "mmr_lambda": 0.5}}"#);
        assert_eq!(
            own.over(&defaults).diversity,
            parse(
                r#"{"diversity": {"max_per_category": 1, "max_per_brand": 2, "mmr_lambda": 0.5}}"#
            )
            .diversity
        );
        // A request's block beats a stored pin of the same id: no conflict is left.
        let blocking = parse(r#"{"block": ["b"]}"#);
        let merged = blocking.over(&defaults);
        assert!(merged.validate().is_ok(), "{merged:?}");
        assert!(!merged.pin.iter().any(|p| p.id.as_str() == "b"));
        assert!(merged.block.iter().any(|id| id.as_str() == "b"));
    }

    #[test]
    fn boosts_keep_their_direction_for_any_sign() {
        assert_eq!(boosted(2.0, 1.5), 3.0);
        assert_eq!(boosted(-2.0, 2.0), -1.0);
        assert!(boosted(-2.0, 0.5) < -2.0);
        assert!(boosted(2.0, 0.5) < 2.0);
    }

    #[test]
    fn conflicts_and_bad_values_are_rejected() {
        let parse = |json: &str| serde_json::from_str::<Rules>(json).unwrap();
        for bad in [
            r#"{"pin":[{"id":"a","position":1}],"block":["a"]}"#,
            r#"{"pin":[{"id":"a","position":1},{"id":"a","position":2}]}"#,
            r#"{"pin":[{"id":"a","position":1},{"id":"b","position":1}]}"#,
            r#"{"pin":[{"id":"a","position":0}]}"#,
            r#"{"boost":[{"filter":{"brand":"x"},"factor":0}]}"#,
            r#"{"boost":[{"filter":{"price_min":-1},"factor":2}]}"#,
            r#"{"diversity":{"max_per_brand":0}}"#,
        ] {
            assert!(parse(bad).validate().is_err(), "{bad}");
        }
        let good = parse(
            r#"{"boost":[{"filter":{"brand":"x"},"factor":1.5}],"pin":[{"id":"a","position":3}],
                "block":["b"],"diversity":{"max_per_category":2}}"#,
        );
        good.validate().unwrap();
        assert_eq!(good.factor(|f| f.brand.as_deref() == Some("x")), 1.5);
        assert_eq!(good.factor(|_| false), 1.0);
        assert!(serde_json::from_str::<Rules>(r#"{"promote":[]}"#).is_err());
    }
}
