//! The live items of the index: external id to slot, attributes, and the attribute indexes
//! that enumerate and count the candidates of a filter. Vectors live only in the graph.
//!
//! Slots are the graph's: dense, and reused after a delete. Attributes are also kept per
//! slot in a compact form, so that a filter evaluated inside the graph walk costs an array
//! read and a few comparisons per node.

use shelf_types::{category_has_prefix, ItemAttributes, ItemId, SearchFilter};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Position of a point in the graph and key of a live item in the catalog.
pub type Slot = u32;

/// One live item.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: ItemId,
    pub attrs: ItemAttributes,
}

/// The filterable attributes of every slot, one array per attribute, so that a filter on
/// one attribute touches one small array.
#[derive(Debug, Default)]
struct Compact {
    /// `LIVE` and `IN_STOCK` bits.
    flags: Vec<u8>,
    /// Interned category, `NO_CATEGORY` when absent.
    category: Vec<u32>,
    /// NaN when absent.
    price: Vec<f64>,
}

const LIVE: u8 = 1;
const IN_STOCK: u8 = 2;
const NO_CATEGORY: u32 = u32::MAX;

impl Compact {
    fn ensure(&mut self, slots: usize) {
        if self.flags.len() < slots {
            self.flags.resize(slots, 0);
            self.category.resize(slots, NO_CATEGORY);
            self.price.resize(slots, f64::NAN);
        }
    }

    fn set(&mut self, slot: usize, category: u32, price: f64, in_stock: bool) {
        self.flags[slot] = LIVE | if in_stock { IN_STOCK } else { 0 };
        self.category[slot] = category;
        self.price[slot] = price;
    }

    fn clear(&mut self, slot: usize) {
        self.flags[slot] = 0;
        self.category[slot] = NO_CATEGORY;
        self.price[slot] = f64::NAN;
    }
}

/// Live items plus the secondary indexes on their attributes.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: Vec<Option<Entry>>,
    compact: Compact,
    by_item: HashMap<ItemId, Slot>,
    live: usize,
    category_ids: HashMap<String, u32>,
    by_category: BTreeMap<String, BTreeSet<Slot>>,
    by_price: BTreeSet<(u64, Slot)>,
    out_of_stock: BTreeSet<Slot>,
}

/// Where the candidates of a filter come from.
#[derive(Debug)]
pub enum CandidateSource {
    /// Every live item (no usable index).
    All,
    /// The slots of these exact categories.
    Categories(Vec<String>),
    /// Slots with a price in this key range.
    PriceRange(u64, u64),
    /// Slots marked out of stock.
    OutOfStock,
}

/// The smallest candidate set of a filter and its size (capped at `cap + 1`).
#[derive(Debug)]
pub struct Plan {
    pub source: CandidateSource,
    pub candidates: usize,
}

/// A filter compiled against the catalog: a few comparisons on the compact attributes.
#[derive(Debug)]
pub struct Matcher<'a> {
    compact: &'a Compact,
    /// Allowed category ids, sorted; `None` when the filter names no category.
    categories: Option<Vec<u32>>,
    price: Option<(f64, f64)>,
    in_stock: Option<bool>,
}

impl Matcher<'_> {
    /// Whether `slot` holds a live item that passes the filter.
    #[inline]
    pub fn matches(&self, slot: Slot) -> bool {
        let slot = slot as usize;
        let Some(&flags) = self.compact.flags.get(slot) else {
            return false;
        };
        if flags & LIVE == 0 {
            return false;
        }
        if let Some(allowed) = &self.categories {
            let category = self.compact.category[slot];
            let ok = match allowed.as_slice() {
                [one] => category == *one,
                many => many.binary_search(&category).is_ok(),
            };
            if !ok {
                return false;
            }
        }
        if let Some((low, high)) = self.price {
            // NaN (no price) fails both comparisons.
            let price = self.compact.price[slot];
            if !(price >= low && price <= high) {
                return false;
            }
        }
        self.in_stock
            .is_none_or(|want| (flags & IN_STOCK != 0) == want)
    }
}

/// Maps a price to a key whose unsigned order equals the numeric order.
pub fn price_key(price: f64) -> u64 {
    let bits = price.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

impl Catalog {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn get(&self, slot: Slot) -> Option<&Entry> {
        self.entries.get(slot as usize).and_then(|e| e.as_ref())
    }

    pub fn is_live(&self, slot: Slot) -> bool {
        self.get(slot).is_some()
    }

    pub fn slot_of(&self, id: &ItemId) -> Option<Slot> {
        self.by_item.get(id).copied()
    }

    /// Live entries in slot order.
    pub fn entries(&self) -> impl Iterator<Item = (Slot, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| e.as_ref().map(|e| (slot as Slot, e)))
    }

    /// Live slots in order.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.entries().map(|(slot, _)| slot)
    }

    /// Puts `id` at `slot` with `attrs`; returns the slot it held before, if another.
    pub fn insert(&mut self, id: &ItemId, slot: Slot, attrs: ItemAttributes) -> Option<Slot> {
        let previous = self.slot_of(id);
        if let Some(old) = previous {
            self.clear(old);
        }
        if self.is_live(slot) {
            let other = self.get(slot).map(|e| e.id.clone()).expect("live slot");
            self.remove(&other);
        }
        self.set(
            slot,
            Entry {
                id: id.clone(),
                attrs,
            },
        );
        previous.filter(|old| *old != slot)
    }

    /// Replaces the attributes of a live item in place.
    pub fn set_attributes(&mut self, slot: Slot, attrs: ItemAttributes) {
        let entry = self.clear(slot).expect("slot of a live item");
        self.set(slot, Entry { attrs, ..entry });
    }

    /// Removes `id`; returns the slot it held.
    pub fn remove(&mut self, id: &ItemId) -> Option<Slot> {
        let slot = self.slot_of(id)?;
        self.clear(slot);
        Some(slot)
    }

    fn set(&mut self, slot: Slot, entry: Entry) {
        let at = slot as usize;
        if self.entries.len() <= at {
            self.entries.resize(at + 1, None);
        }
        self.compact.ensure(at + 1);
        self.index(slot, &entry.attrs);
        let next_id = self.category_ids.len() as u32;
        let category = entry.attrs.category.as_ref().map_or(NO_CATEGORY, |c| {
            *self.category_ids.entry(c.clone()).or_insert(next_id)
        });
        self.compact.set(
            at,
            category,
            entry.attrs.price.unwrap_or(f64::NAN),
            entry.attrs.is_in_stock(),
        );
        self.by_item.insert(entry.id.clone(), slot);
        self.entries[at] = Some(entry);
        self.live += 1;
    }

    fn clear(&mut self, slot: Slot) -> Option<Entry> {
        let entry = self.entries.get_mut(slot as usize)?.take()?;
        self.compact.clear(slot as usize);
        self.unindex(slot, &entry.attrs);
        self.by_item.remove(&entry.id);
        self.live -= 1;
        Some(entry)
    }

    fn index(&mut self, slot: Slot, attrs: &ItemAttributes) {
        if let Some(category) = &attrs.category {
            self.by_category
                .entry(category.clone())
                .or_default()
                .insert(slot);
        }
        if let Some(price) = attrs.price {
            self.by_price.insert((price_key(price), slot));
        }
        if !attrs.is_in_stock() {
            self.out_of_stock.insert(slot);
        }
    }

    fn unindex(&mut self, slot: Slot, attrs: &ItemAttributes) {
        if let Some(category) = &attrs.category {
            if let Some(slots) = self.by_category.get_mut(category) {
                slots.remove(&slot);
                if slots.is_empty() {
                    self.by_category.remove(category);
                }
            }
        }
        if let Some(price) = attrs.price {
            self.by_price.remove(&(price_key(price), slot));
        }
        self.out_of_stock.remove(&slot);
    }

    fn categories_matching(&self, filter: &SearchFilter) -> Option<Vec<String>> {
        match (&filter.category, &filter.category_prefix) {
            (Some(exact), prefix) => {
                let ok = prefix
                    .as_deref()
                    .is_none_or(|p| category_has_prefix(exact, p));
                let present = self.by_category.contains_key(exact);
                Some(if ok && present {
                    vec![exact.clone()]
                } else {
                    Vec::new()
                })
            }
            (None, Some(prefix)) => {
                let stem = prefix.trim_end_matches('/');
                Some(
                    self.by_category
                        .range(stem.to_string()..)
                        .take_while(|(category, _)| category.starts_with(stem))
                        .filter(|(category, _)| category_has_prefix(category, prefix))
                        .map(|(category, _)| category.clone())
                        .collect(),
                )
            }
            (None, None) => None,
        }
    }

    /// Compiles `filter` for evaluation inside a graph walk.
    pub fn matcher(&self, filter: &SearchFilter) -> Matcher<'_> {
        let categories = self.categories_matching(filter).map(|names| {
            let mut ids: Vec<u32> = names
                .iter()
                .filter_map(|n| self.category_ids.get(n).copied())
                .collect();
            ids.sort_unstable();
            ids
        });
        let price = (filter.price_min.is_some() || filter.price_max.is_some()).then(|| {
            (
                filter.price_min.unwrap_or(f64::NEG_INFINITY),
                filter.price_max.unwrap_or(f64::INFINITY),
            )
        });
        Matcher {
            compact: &self.compact,
            categories,
            price,
            in_stock: filter.in_stock,
        }
    }

    /// Picks the smallest candidate set for `filter`, counting at most `cap + 1` of each.
    pub fn plan(&self, filter: &SearchFilter, cap: usize) -> Plan {
        let mut best = Plan {
            source: CandidateSource::All,
            candidates: self.len(),
        };
        let consider = |source: CandidateSource, count: usize, best: &mut Plan| {
            if count < best.candidates {
                best.source = source;
                best.candidates = count;
            }
        };
        if let Some(categories) = self.categories_matching(filter) {
            let count = categories.iter().map(|c| self.by_category[c].len()).sum();
            consider(CandidateSource::Categories(categories), count, &mut best);
        }
        if filter.price_min.is_some() || filter.price_max.is_some() {
            let low = price_key(filter.price_min.unwrap_or(f64::NEG_INFINITY));
            let high = price_key(filter.price_max.unwrap_or(f64::INFINITY));
            let count = if low > high {
                0
            } else {
                self.by_price
                    .range((low, 0)..=(high, Slot::MAX))
                    .take(cap + 1)
                    .count()
            };
            consider(CandidateSource::PriceRange(low, high), count, &mut best);
        }
        match filter.in_stock {
            Some(false) => consider(
                CandidateSource::OutOfStock,
                self.out_of_stock.len(),
                &mut best,
            ),
            Some(true) => {
                let count = self.len() - self.out_of_stock.len();
                consider(CandidateSource::All, count, &mut best)
            }
            None => {}
        }
        best
    }

    /// Share of live items that `matcher` lets through, estimated on up to 512 evenly
    /// spaced slots (no independence assumption between conditions).
    pub fn sample_pass_rate(&self, matcher: &Matcher<'_>) -> f64 {
        let slots = self.entries.len();
        if slots == 0 {
            return 1.0;
        }
        let step = slots.div_ceil(512).max(1);
        let (mut live, mut pass) = (0usize, 0usize);
        for slot in (0..slots).step_by(step) {
            if self.compact.flags[slot] & LIVE != 0 {
                live += 1;
                pass += usize::from(matcher.matches(slot as Slot));
            }
        }
        if live == 0 {
            1.0
        } else {
            pass as f64 / live as f64
        }
    }

    /// The live slots of `source` that pass `filter`.
    pub fn candidates(&self, source: &CandidateSource, filter: &SearchFilter) -> Vec<Slot> {
        let matcher = self.matcher(filter);
        let keep = |slot: &Slot| matcher.matches(*slot).then_some(*slot);
        match source {
            CandidateSource::All => self.slots().filter_map(|s| keep(&s)).collect(),
            CandidateSource::Categories(categories) => categories
                .iter()
                .filter_map(|c| self.by_category.get(c))
                .flat_map(|slots| slots.iter())
                .filter_map(keep)
                .collect(),
            CandidateSource::PriceRange(low, high) => self
                .by_price
                .range((*low, 0)..=(*high, Slot::MAX))
                .map(|(_, slot)| slot)
                .filter_map(keep)
                .collect(),
            CandidateSource::OutOfStock => self.out_of_stock.iter().filter_map(keep).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(category: &str, price: f64, in_stock: bool) -> ItemAttributes {
        ItemAttributes {
            category: Some(category.into()),
            price: Some(price),
            in_stock: Some(in_stock),
        }
    }

    #[test]
    fn price_keys_keep_numeric_order() {
        let prices = [-5.0, -0.5, 0.0, 0.25, 1.0, 99.99, 1e9];
        for pair in prices.windows(2) {
            assert!(price_key(pair[0]) < price_key(pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn moving_and_removing_items_keeps_the_indexes_exact() {
        let mut catalog = Catalog::default();
        let id = ItemId::from("a");
        assert_eq!(catalog.insert(&id, 0, attrs("A", 1.0, true)), None);
        catalog.set_attributes(0, attrs("B", 2.0, true));
        assert_eq!(catalog.get(0).unwrap().attrs.category.as_deref(), Some("B"));
        assert_eq!(catalog.insert(&id, 3, attrs("B", 2.0, false)), Some(0));
        assert!(catalog.get(0).is_none());
        assert_eq!(catalog.len(), 1);
        let b_only = SearchFilter {
            category: Some("B".into()),
            in_stock: Some(false),
            ..Default::default()
        };
        assert!(catalog.matcher(&b_only).matches(3));
        assert!(!catalog.matcher(&b_only).matches(0));
        assert_eq!(catalog.remove(&id), Some(3));
        assert_eq!(catalog.remove(&id), None);
        assert_eq!(catalog.len(), 0);
        assert!(!catalog.matcher(&SearchFilter::default()).matches(3));
        assert!(catalog.by_category.is_empty() && catalog.by_price.is_empty());
        assert!(catalog.out_of_stock.is_empty());
    }

    #[test]
    fn matcher_agrees_with_the_filter_on_every_item() {
        let mut catalog = Catalog::default();
        let mut all = Vec::new();
        for i in 0..200u32 {
            let a = ItemAttributes {
                category: (i % 7 != 0).then(|| format!("D{}/L{}", i % 3, i % 5)),
                price: (i % 11 != 0).then_some(f64::from(i)),
                in_stock: (i % 4 != 0).then_some(i % 2 == 0),
            };
            catalog.insert(&ItemId::from(format!("i{i}")), i, a.clone());
            all.push(a);
        }
        let filters = [
            SearchFilter::default(),
            SearchFilter {
                category: Some("D1/L2".into()),
                ..Default::default()
            },
            SearchFilter {
                category_prefix: Some("D2".into()),
                ..Default::default()
            },
            SearchFilter {
                category: Some("D1/L2".into()),
                category_prefix: Some("D2".into()),
                ..Default::default()
            },
            SearchFilter {
                price_min: Some(20.0),
                price_max: Some(120.5),
                ..Default::default()
            },
            SearchFilter {
                price_max: Some(50.0),
                in_stock: Some(true),
                ..Default::default()
            },
            SearchFilter {
                in_stock: Some(false),
                category_prefix: Some("D0".into()),
                ..Default::default()
            },
        ];
        for filter in &filters {
            let matcher = catalog.matcher(filter);
            for (slot, a) in all.iter().enumerate() {
                assert_eq!(
                    matcher.matches(slot as Slot),
                    filter.matches(a),
                    "{filter:?} slot {slot}"
                );
            }
        }
    }

    #[test]
    fn plan_picks_the_smallest_index_and_candidates_apply_the_whole_filter() {
        let mut catalog = Catalog::default();
        for i in 0..100u32 {
            let category = if i % 10 == 0 {
                "Home/Lamps"
            } else {
                "Garden/Tools"
            };
            catalog.insert(
                &ItemId::from(format!("i{i}").as_str()),
                i,
                attrs(category, f64::from(i), i % 2 == 0),
            );
        }
        let filter = SearchFilter {
            category_prefix: Some("Home".into()),
            price_max: Some(49.0),
            in_stock: Some(true),
            ..Default::default()
        };
        let plan = catalog.plan(&filter, 1000);
        assert!(matches!(plan.source, CandidateSource::Categories(_)));
        assert_eq!(plan.candidates, 10);
        assert_eq!(
            catalog.candidates(&plan.source, &filter),
            vec![0, 10, 20, 30, 40]
        );
        let rate = catalog.sample_pass_rate(&catalog.matcher(&filter));
        assert!((rate - 0.05).abs() < 1e-9, "{rate}");
    }
}
