//! What the vector index stores per item, the filters a search can carry, and the index trait.

use crate::{Item, ItemId};
use serde::{Deserialize, Serialize};

/// The item attributes a search can filter on, kept next to each vector in the index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemAttributes {
    /// Category path with `/` separators.
    pub category: Option<String>,
    pub price: Option<f64>,
    /// `None` (unknown) counts as in stock: catalogs usually send the flag only when false.
    pub in_stock: Option<bool>,
}

impl ItemAttributes {
    /// The filterable attributes of `item`.
    pub fn of(item: &Item) -> Self {
        Self {
            category: item.category.clone(),
            price: item.price,
            in_stock: item.in_stock,
        }
    }

    /// Whether the item counts as in stock (absent flag = in stock).
    pub fn is_in_stock(&self) -> bool {
        self.in_stock.unwrap_or(true)
    }
}

/// A conjunction of optional conditions; the default matches every item.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SearchFilter {
    /// The item's category equals this path exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The item's category is this path or lies below it (`Furniture` matches
    /// `Furniture/Sofas`, not `Furnitures`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_prefix: Option<String>,
    /// Inclusive lower price bound; items without a price never match a price bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_min: Option<f64>,
    /// Inclusive upper price bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_max: Option<f64>,
    /// Only items in stock (`true`) or only items out of stock (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<bool>,
}

impl SearchFilter {
    /// True when the filter has no condition.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Whether an item with `attrs` passes every condition.
    pub fn matches(&self, attrs: &ItemAttributes) -> bool {
        if let Some(want) = &self.category {
            if attrs.category.as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(prefix) = &self.category_prefix {
            match attrs.category.as_deref() {
                Some(category) if category_has_prefix(category, prefix) => {}
                _ => return false,
            }
        }
        if self.price_min.is_some() || self.price_max.is_some() {
            let Some(price) = attrs.price else {
                return false;
            };
            if self.price_min.is_some_and(|min| price < min)
                || self.price_max.is_some_and(|max| price > max)
            {
                return false;
            }
        }
        if let Some(want) = self.in_stock {
            if attrs.is_in_stock() != want {
                return false;
            }
        }
        true
    }

    /// Checks bounds that can never match: NaN, negative or inverted price bounds.
    pub fn validate(&self) -> Result<(), crate::RecordError> {
        for (field, bound) in [("price_min", self.price_min), ("price_max", self.price_max)] {
            if let Some(value) = bound {
                if !value.is_finite() || value < 0.0 {
                    return Err(crate::RecordError::InvalidValue {
                        field,
                        value: value.to_string(),
                        reason: "must be a finite number >= 0",
                    });
                }
            }
        }
        if let (Some(min), Some(max)) = (self.price_min, self.price_max) {
            if min > max {
                return Err(crate::RecordError::InvalidValue {
                    field: "price_min",
                    value: min.to_string(),
                    reason: "must not exceed price_max",
                });
            }
        }
        Ok(())
    }
}

/// Path-aware prefix test: `prefix` equals `category` or names one of its ancestors.
pub fn category_has_prefix(category: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match category.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

/// One search result: the item and its cosine similarity to the query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredItem {
    pub id: ItemId,
    pub score: f32,
}

/// An approximate nearest-neighbour index over normalised item vectors (cosine similarity).
pub trait VectorIndex: Send + Sync {
    /// The error an index call can fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Number of dimensions every vector must have.
    fn dim(&self) -> usize;

    /// Number of live items.
    fn len(&self) -> usize;

    /// True when no item is live.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts or replaces the vector and attributes of `id`.
    fn upsert(&self, id: &ItemId, vector: &[f32], attrs: ItemAttributes)
        -> Result<(), Self::Error>;

    /// Removes `id`; returns whether it was present.
    fn delete(&self, id: &ItemId) -> Result<bool, Self::Error>;

    /// The `k` items most similar to `query` that pass `filter`, best first. `ef` overrides
    /// the configured search breadth.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredItem>, Self::Error>;

    /// The stored unit vectors of `ids`, in order; `None` where an id is not live.
    fn vectors(&self, ids: &[&ItemId]) -> Vec<Option<Vec<f32>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(category: &str, price: Option<f64>, in_stock: Option<bool>) -> ItemAttributes {
        ItemAttributes {
            category: Some(category.into()),
            price,
            in_stock,
        }
    }

    #[test]
    fn category_prefix_respects_path_segments() {
        assert!(category_has_prefix("Furniture/Sofas", "Furniture"));
        assert!(category_has_prefix("Furniture/Sofas", "Furniture/"));
        assert!(category_has_prefix("Furniture", "Furniture"));
        assert!(!category_has_prefix("Furnitures/Sofas", "Furniture"));
        assert!(!category_has_prefix("Home", "Furniture"));
    }

    #[test]
    fn filter_is_a_conjunction() {
        let filter = SearchFilter {
            category_prefix: Some("Furniture".into()),
            price_min: Some(10.0),
            price_max: Some(100.0),
            in_stock: Some(true),
            ..Default::default()
        };
        assert!(filter.matches(&attrs("Furniture/Sofas", Some(50.0), None)));
        assert!(filter.matches(&attrs("Furniture/Sofas", Some(100.0), Some(true))));
        assert!(!filter.matches(&attrs("Furniture/Sofas", Some(100.5), Some(true))));
        assert!(!filter.matches(&attrs("Furniture/Sofas", None, Some(true))));
        assert!(!filter.matches(&attrs("Furniture/Sofas", Some(50.0), Some(false))));
        assert!(!filter.matches(&attrs("Garden", Some(50.0), Some(true))));
        assert!(SearchFilter::default().matches(&ItemAttributes::default()));
    }

    #[test]
    fn inverted_or_negative_bounds_are_rejected() {
        let inverted = SearchFilter {
            price_min: Some(5.0),
            price_max: Some(1.0),
            ..Default::default()
        };
        assert!(inverted.validate().is_err());
        let negative = SearchFilter {
            price_max: Some(-1.0),
            ..Default::default()
        };
        assert!(negative.validate().is_err());
        let unknown = serde_json::from_str::<SearchFilter>(r#"{"colour":"red"}"#);
        assert!(unknown.is_err());
    }
}
