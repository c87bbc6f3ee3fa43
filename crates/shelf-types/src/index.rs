//! What the vector index stores per item, the filters a search can carry, and the index trait.

use crate::{Item, ItemId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The item attributes a search can filter on, kept next to each vector in the index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemAttributes {
    /// Category path with `/` separators.
    pub category: Option<String>,
    pub price: Option<f64>,
    /// `None` (unknown) counts as in stock: catalogs usually send the flag only when false.
    pub in_stock: Option<bool>,
    pub brand: Option<String>,
    /// The item's tags, sorted, without repeats.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The item's attributes as `key=value` pairs ([`attribute_pair`]), sorted.
    #[serde(default)]
    pub attributes: Vec<String>,
}

impl ItemAttributes {
    /// The filterable attributes of `item`.
    pub fn of(item: &Item) -> Self {
        let mut tags = item.tags.clone();
        tags.sort_unstable();
        tags.dedup();
        let mut attributes: Vec<String> = item
            .attributes
            .iter()
            .map(|(key, value)| attribute_pair(key, value))
            .collect();
        attributes.sort_unstable();
        Self {
            category: item.category.clone(),
            price: item.price,
            in_stock: item.in_stock,
            brand: item.brand.clone(),
            tags,
            attributes,
        }
    }

    /// Whether the item counts as in stock (absent flag = in stock).
    pub fn is_in_stock(&self) -> bool {
        self.in_stock.unwrap_or(true)
    }

    fn has_tag(&self, tag: &str) -> bool {
        self.tags.binary_search_by(|t| t.as_str().cmp(tag)).is_ok()
    }

    fn has_attribute(&self, pair: &str) -> bool {
        self.attributes
            .binary_search_by(|a| a.as_str().cmp(pair))
            .is_ok()
    }
}

/// An attribute value as filters and the lexical index see it: strings as they are, other
/// JSON as JSON text (`4`, `true`).
pub fn attribute_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `key=value`, the one form in which attribute filters compare an item's attribute.
pub fn attribute_pair(key: &str, value: &serde_json::Value) -> String {
    format!("{key}={}", attribute_text(value))
}

/// Most nested `must` / `should` / `must_not` levels a filter may have.
pub const MAX_FILTER_DEPTH: usize = 4;
/// Most conditions (values to compare, and nested filters) in one filter, all levels
/// together.
pub const MAX_FILTER_CONDITIONS: usize = 256;

/// Which items a search may return: every condition given holds (AND), and the boolean
/// clauses `must` (each holds), `should` (at least one holds, when any is given) and
/// `must_not` (none holds), each itself a filter, nested up to [`MAX_FILTER_DEPTH`] levels.
/// The default matches every item.
///
/// `{"brand": "Acme", "should": [{"tags_any": ["grey"]}, {"price_max": 100}],
///   "must_not": [{"in_stock": false}]}`: Acme items that are grey or cost at most 100,
/// and are not marked out of stock.
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
    /// The item's brand equals this exactly (case matters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// The item has at least one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_any: Vec<String>,
    /// The item has every one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_all: Vec<String>,
    /// The item has each of these attributes with this value (a string, number or boolean,
    /// compared as the item's `key=value` text: `{"color": "grey", "seats": 3}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Filters that must each hold (AND).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub must: Vec<SearchFilter>,
    /// Filters of which at least one must hold (OR), when any is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub should: Vec<SearchFilter>,
    /// Filters none of which may hold (NOT).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub must_not: Vec<SearchFilter>,
}

impl SearchFilter {
    /// True when the filter has no condition.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The `key=value` pairs of `attributes`, as [`ItemAttributes::attributes`] holds them.
    pub fn attribute_pairs(&self) -> impl Iterator<Item = String> + '_ {
        self.attributes
            .iter()
            .map(|(key, value)| attribute_pair(key, value))
    }

    /// Whether an item with `attrs` passes the filter.
    pub fn matches(&self, attrs: &ItemAttributes) -> bool {
        self.matches_own(attrs)
            && self.must.iter().all(|f| f.matches(attrs))
            && (self.should.is_empty() || self.should.iter().any(|f| f.matches(attrs)))
            && !self.must_not.iter().any(|f| f.matches(attrs))
    }

    /// The filter's own conditions, without its clauses.
    fn matches_own(&self, attrs: &ItemAttributes) -> bool {
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
        if let Some(want) = &self.brand {
            if attrs.brand.as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        if !self.tags_any.is_empty() && !self.tags_any.iter().any(|t| attrs.has_tag(t)) {
            return false;
        }
        if !self.tags_all.iter().all(|t| attrs.has_tag(t)) {
            return false;
        }
        self.attribute_pairs()
            .all(|pair| attrs.has_attribute(&pair))
    }

    /// Checks what can never match or would cost too much: NaN, negative or inverted price
    /// bounds, attribute values that are not a string, number or boolean, more than
    /// [`MAX_FILTER_DEPTH`] levels or [`MAX_FILTER_CONDITIONS`] conditions.
    pub fn validate(&self) -> Result<(), crate::RecordError> {
        let mut conditions = 0;
        self.validate_level(1, &mut conditions)?;
        if conditions > MAX_FILTER_CONDITIONS {
            return Err(crate::RecordError::InvalidValue {
                field: "filters",
                value: conditions.to_string(),
                reason: "too many conditions (at most 256 in all)",
            });
        }
        Ok(())
    }

    fn validate_level(
        &self,
        depth: usize,
        conditions: &mut usize,
    ) -> Result<(), crate::RecordError> {
        if depth > MAX_FILTER_DEPTH {
            return Err(crate::RecordError::InvalidValue {
                field: "filters",
                value: depth.to_string(),
                reason: "must/should/must_not nest at most 4 levels deep",
            });
        }
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
        for (key, value) in &self.attributes {
            if !(value.is_string() || value.is_number() || value.is_boolean()) {
                return Err(crate::RecordError::InvalidValue {
                    field: "attributes",
                    value: format!("{key}: {value}"),
                    reason: "an attribute value must be a string, a number or a boolean",
                });
            }
        }
        for (field, value) in [
            ("category", &self.category),
            ("category_prefix", &self.category_prefix),
        ] {
            if value
                .as_deref()
                .is_some_and(|c| c.trim_matches('/').trim().is_empty())
            {
                return Err(crate::RecordError::InvalidValue {
                    field,
                    value: format!("{value:?}"),
                    reason: "must name a category",
                });
            }
        }
        // Each nested filter counts as a condition too, so breadth is bounded as well.
        *conditions += self.must.len() + self.should.len() + self.must_not.len();
        *conditions += usize::from(self.category.is_some())
            + usize::from(self.category_prefix.is_some())
            + usize::from(self.price_min.is_some() || self.price_max.is_some())
            + usize::from(self.in_stock.is_some())
            + usize::from(self.brand.is_some())
            + self.tags_any.len()
            + self.tags_all.len()
            + self.attributes.len();
        for clause in self.must.iter().chain(&self.should).chain(&self.must_not) {
            clause.validate_level(depth + 1, conditions)?;
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

/// The paths of a category and of every ancestor, top first: `A/B/C` gives `A`, `A/B`,
/// `A/B/C` (a trailing `/` is ignored).
pub fn category_paths(category: &str) -> impl Iterator<Item = &str> {
    let category = category.trim_end_matches('/');
    category
        .match_indices('/')
        .map(move |(at, _)| &category[..at])
        .chain(std::iter::once(category))
        // `/Home` or `A//B` would give an empty path (the overall list's key) or `A/`.
        .filter(|path| !path.is_empty() && !path.ends_with('/'))
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

    /// The mean of the live unit vectors (of an even sample of them in a large index), so
    /// that `q · mean` is a query's expected cosine with an item of the catalogue: the
    /// level of "unrelated" for the model that made the vectors. `None` when empty, or when
    /// an index does not say.
    fn mean_vector(&self) -> Option<Vec<f32>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(category: &str, price: Option<f64>, in_stock: Option<bool>) -> ItemAttributes {
        ItemAttributes {
            category: Some(category.into()),
            price,
            in_stock,
            ..Default::default()
        }
    }

    #[test]
    fn category_paths_lists_every_ancestor() {
        let paths: Vec<&str> = category_paths("Home/Living Room/Sofas").collect();
        assert_eq!(
            paths,
            ["Home", "Home/Living Room", "Home/Living Room/Sofas"]
        );
        assert_eq!(category_paths("Home/").collect::<Vec<_>>(), ["Home"]);
        assert_eq!(category_paths("").count(), 0);
        assert_eq!(category_paths("/Home").collect::<Vec<_>>(), ["/Home"]);
        assert_eq!(category_paths("A//B").collect::<Vec<_>>(), ["A", "A//B"]);
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

    #[test]
    fn boolean_clauses_and_every_field() {
        let item: Item = serde_json::from_str(
            r#"{"id":"a","title":"t","brand":"Acme","tags":["grey","sale","grey"],
                "attributes":{"color":"grey","seats":3,"modular":true},"price":80}"#,
        )
        .unwrap();
        let attrs = ItemAttributes::of(&item);
        assert_eq!(attrs.tags, ["grey", "sale"]);
        assert_eq!(attrs.attributes, ["color=grey", "modular=true", "seats=3"]);
        let parse = |json: &str| serde_json::from_str::<SearchFilter>(json).unwrap();
        let pass = [
            r#"{"brand":"Acme"}"#,
            r#"{"tags_any":["blue","sale"]}"#,
            r#"{"tags_all":["grey","sale"]}"#,
            r#"{"attributes":{"color":"grey","seats":3,"modular":true}}"#,
            r#"{"should":[{"brand":"Other"},{"price_max":100}]}"#,
            r#"{"must_not":[{"brand":"Other"}],"must":[{"tags_any":["grey"]}]}"#,
            r#"{"must":[{"should":[{"brand":"Acme"},{"brand":"B"}]},{"must_not":[{"in_stock":false}]}]}"#,
        ];
        let fail = [
            r#"{"brand":"acme"}"#,
            r#"{"tags_any":["blue"]}"#,
            r#"{"tags_all":["grey","blue"]}"#,
            r#"{"attributes":{"seats":"4"}}"#,
            r#"{"attributes":{"colour":"grey"}}"#,
            r#"{"should":[{"brand":"Other"},{"price_min":100}]}"#,
            r#"{"must_not":[{"tags_any":["sale"]}]}"#,
            r#"{"brand":"Acme","must":[{"price_max":10}]}"#,
        ];
        for json in pass {
            let filter = parse(json);
            filter.validate().unwrap();
            assert!(filter.matches(&attrs), "{json}");
        }
        for json in fail {
            assert!(!parse(json).matches(&attrs), "{json}");
        }
    }

    #[test]
    fn deep_or_large_or_odd_filters_are_rejected() {
        let mut filter = SearchFilter::default();
        for _ in 0..MAX_FILTER_DEPTH {
            filter = SearchFilter {
                must: vec![filter],
                ..Default::default()
            };
        }
        let err = filter.validate().unwrap_err().to_string();
        assert!(err.contains("4 levels"), "{err}");
        let many = SearchFilter {
            tags_any: (0..=MAX_FILTER_CONDITIONS).map(|i| i.to_string()).collect(),
            ..Default::default()
        };
        assert!(many.validate().is_err());
        let nested_value: SearchFilter =
            serde_json::from_str(r#"{"attributes":{"color":["grey"]}}"#).unwrap();
        assert!(nested_value.validate().is_err());
        for empty in [
            r#"{"category_prefix":""}"#,
            r#"{"must":[{"category":"/"}]}"#,
        ] {
            let filter: SearchFilter = serde_json::from_str(empty).unwrap();
            assert!(filter.validate().is_err(), "{empty}");
        }
        let wide = SearchFilter {
            should: vec![SearchFilter::default(); MAX_FILTER_CONDITIONS + 1],
            ..Default::default()
        };
        assert!(wide.validate().is_err());
        let bad_bound: SearchFilter =
            serde_json::from_str(r#"{"should":[{"price_min":-1}]}"#).unwrap();
        assert!(bad_bound.validate().is_err());
    }
}
