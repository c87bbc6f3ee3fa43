//! The live items of the index: external id to slot, vectors, attributes, and the attribute
//! indexes that enumerate and count the candidates of a filter.
//!
//! Every upsert of a new vector gets a fresh slot (the id hnsw_rs stores with the point);
//! the item's previous slot leaves the catalog, which is what makes its graph point a
//! tombstone: graph results are only returned when their slot is still here.

use shelf_types::{category_has_prefix, ItemAttributes, ItemId, SearchFilter};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Position of a point in the graph and key of a live item in the catalog.
pub type Slot = usize;

/// One live item.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: ItemId,
    pub vector: Arc<[f32]>,
    pub attrs: ItemAttributes,
}

/// What an upsert changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Upserted {
    /// The vector is new or changed: insert it into the graph under this slot.
    NewSlot(Slot),
    /// Same vector as before: only the attributes were replaced, the graph is untouched.
    AttributesOnly,
}

/// Live items plus the secondary indexes on their attributes.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: BTreeMap<Slot, Entry>,
    by_item: HashMap<ItemId, Slot>,
    next_slot: Slot,
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
    /// Estimated share of live items matching the whole filter (independence assumed).
    pub selectivity: f64,
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
        self.entries.len()
    }

    pub fn next_slot(&self) -> Slot {
        self.next_slot
    }

    pub fn get(&self, slot: Slot) -> Option<&Entry> {
        self.entries.get(&slot)
    }

    pub fn slot_of(&self, id: &ItemId) -> Option<Slot> {
        self.by_item.get(id).copied()
    }

    /// Live entries with slots at or after `from`, in slot order.
    pub fn entries_from(&self, from: Slot) -> impl Iterator<Item = (Slot, &Entry)> {
        self.entries
            .range(from..)
            .map(|(slot, entry)| (*slot, entry))
    }

    /// Inserts or replaces `id`. A changed vector moves the item to a new slot.
    pub fn upsert(&mut self, id: &ItemId, vector: Arc<[f32]>, attrs: ItemAttributes) -> Upserted {
        if let Some(slot) = self.by_item.get(id).copied() {
            let unchanged = self.entries[&slot].vector[..] == vector[..];
            if unchanged {
                let entry = self.entries.remove(&slot).expect("slot of a live item");
                self.unindex(slot, &entry.attrs);
                self.index(slot, &attrs);
                self.entries.insert(slot, Entry { attrs, ..entry });
                return Upserted::AttributesOnly;
            }
            self.remove(id);
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        self.insert_at(
            slot,
            Entry {
                id: id.clone(),
                vector,
                attrs,
            },
        );
        Upserted::NewSlot(slot)
    }

    /// Puts an entry back under its original slot (snapshot restore).
    pub fn insert_at(&mut self, slot: Slot, entry: Entry) {
        self.index(slot, &entry.attrs);
        self.by_item.insert(entry.id.clone(), slot);
        self.entries.insert(slot, entry);
        self.next_slot = self.next_slot.max(slot + 1);
    }

    /// Sets the next slot to hand out (snapshot restore keeps slot numbers unique).
    pub fn reserve_slots_below(&mut self, next_slot: Slot) {
        self.next_slot = self.next_slot.max(next_slot);
    }

    /// Removes `id`; returns whether it was live.
    pub fn remove(&mut self, id: &ItemId) -> bool {
        let Some(slot) = self.by_item.remove(id) else {
            return false;
        };
        let entry = self.entries.remove(&slot).expect("slot of a live item");
        self.unindex(slot, &entry.attrs);
        true
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

    /// Picks the smallest candidate set for `filter`, counting at most `cap + 1` of each.
    pub fn plan(&self, filter: &SearchFilter, cap: usize) -> Plan {
        let live = self.len().max(1) as f64;
        let mut best = Plan {
            source: CandidateSource::All,
            candidates: self.len(),
            selectivity: 1.0,
        };
        let consider = |source: CandidateSource, count: usize, best: &mut Plan| {
            best.selectivity *= (count as f64 / live).min(1.0);
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

    /// The slots of `source` whose entries pass `filter`, with their vectors.
    pub fn candidates(
        &self,
        source: &CandidateSource,
        filter: &SearchFilter,
    ) -> Vec<(Slot, Arc<[f32]>)> {
        let keep = |slot: &Slot| {
            let entry = &self.entries[slot];
            filter
                .matches(&entry.attrs)
                .then(|| (*slot, Arc::clone(&entry.vector)))
        };
        match source {
            CandidateSource::All => self.entries.keys().filter_map(keep).collect(),
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

    fn vector(x: f32) -> Arc<[f32]> {
        Arc::from(vec![x, 1.0])
    }

    #[test]
    fn price_keys_keep_numeric_order() {
        let prices = [-5.0, -0.5, 0.0, 0.25, 1.0, 99.99, 1e9];
        for pair in prices.windows(2) {
            assert!(price_key(pair[0]) < price_key(pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn changed_vector_moves_to_a_new_slot_unchanged_keeps_it() {
        let mut catalog = Catalog::default();
        let id = ItemId::from("a");
        assert_eq!(
            catalog.upsert(&id, vector(1.0), attrs("A", 1.0, true)),
            Upserted::NewSlot(0)
        );
        assert_eq!(
            catalog.upsert(&id, vector(1.0), attrs("B", 2.0, true)),
            Upserted::AttributesOnly
        );
        assert_eq!(catalog.get(0).unwrap().attrs.category.as_deref(), Some("B"));
        assert_eq!(
            catalog.upsert(&id, vector(2.0), attrs("B", 2.0, true)),
            Upserted::NewSlot(1)
        );
        assert!(catalog.get(0).is_none());
        assert_eq!(catalog.len(), 1);
        assert!(catalog.remove(&id));
        assert!(!catalog.remove(&id));
        assert_eq!(catalog.len(), 0);
        assert!(catalog.by_category.is_empty() && catalog.by_price.is_empty());
    }

    #[test]
    fn plan_picks_the_smallest_index_and_candidates_apply_the_whole_filter() {
        let mut catalog = Catalog::default();
        for i in 0..100 {
            let category = if i % 10 == 0 {
                "Home/Lamps"
            } else {
                "Garden/Tools"
            };
            catalog.upsert(
                &ItemId::from(format!("i{i}").as_str()),
                vector(i as f32),
                attrs(category, i as f64, i % 2 == 0),
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
        let found: Vec<Slot> = catalog
            .candidates(&plan.source, &filter)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(found, vec![0, 10, 20, 30, 40]);
    }
}
