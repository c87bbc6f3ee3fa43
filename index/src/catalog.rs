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
    /// Interned category, `ABSENT` when absent.
    category: Vec<u32>,
    /// NaN when absent.
    price: Vec<f64>,
    /// Interned brand, `ABSENT` when absent.
    brand: Vec<u32>,
    /// Interned tags and `key=value` attributes, sorted (empty for most catalogs' items).
    terms: Vec<Box<[u32]>>,
}

const LIVE: u8 = 1;
const IN_STOCK: u8 = 2;
const ABSENT: u32 = u32::MAX;

impl Compact {
    fn ensure(&mut self, slots: usize) {
        if self.flags.len() < slots {
            self.flags.resize(slots, 0);
            self.category.resize(slots, ABSENT);
            self.price.resize(slots, f64::NAN);
            self.brand.resize(slots, ABSENT);
            self.terms.resize(slots, Box::default());
        }
    }

    fn clear(&mut self, slot: usize) {
        self.flags[slot] = 0;
        self.category[slot] = ABSENT;
        self.price[slot] = f64::NAN;
        self.brand[slot] = ABSENT;
        self.terms[slot] = Box::default();
    }
}

/// Dense ids for the strings of one attribute. Ids are never reused: a value stays known
/// after its last item goes (a few bytes per distinct value ever seen).
#[derive(Debug, Default)]
struct Interner(HashMap<String, u32>);

impl Interner {
    fn intern(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.0.get(value) {
            return id;
        }
        let id = self.0.len() as u32;
        self.0.insert(value.to_string(), id);
        id
    }

    fn get(&self, value: &str) -> Option<u32> {
        self.0.get(value).copied()
    }
}

/// The key of a tag or an attribute among an item's terms: one namespace byte, then the
/// value, so that a tag never equals an attribute pair.
fn tag_term(tag: &str) -> String {
    format!("t{tag}")
}

fn attribute_term(pair: &str) -> String {
    format!("a{pair}")
}

/// Live items plus the secondary indexes on their attributes.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: Vec<Option<Entry>>,
    compact: Compact,
    by_item: HashMap<ItemId, Slot>,
    live: usize,
    category_ids: Interner,
    brand_ids: Interner,
    term_ids: Interner,
    by_category: BTreeMap<String, BTreeSet<Slot>>,
    by_brand: HashMap<u32, BTreeSet<Slot>>,
    by_term: HashMap<u32, BTreeSet<Slot>>,
    by_price: BTreeSet<(u64, Slot)>,
    out_of_stock: BTreeSet<Slot>,
}

/// Where the candidates of a filter come from: a superset of its matches that an index
/// enumerates.
#[derive(Clone, Debug)]
pub enum CandidateSource {
    /// Every live item (no usable index).
    All,
    /// The slots of these exact categories.
    Categories(Vec<String>),
    /// The slots of one brand.
    Brand(u32),
    /// The slots holding any of these tags or attribute pairs.
    Terms(Vec<u32>),
    /// Slots with a price in this key range.
    PriceRange(u64, u64),
    /// Slots marked out of stock.
    OutOfStock,
    /// The slots of any of these sources (a `should` clause).
    Union(Vec<CandidateSource>),
}

/// The smallest candidate set of a filter and its size (capped at `cap + 1`).
#[derive(Debug)]
pub struct Plan {
    pub source: CandidateSource,
    pub candidates: usize,
}

/// One condition of a filter compiled against the catalog.
#[derive(Debug)]
enum Test {
    /// The category is one of these ids (sorted; empty matches nothing).
    Categories(Vec<u32>),
    /// The price lies in this inclusive range (an absent price never does).
    Price(f64, f64),
    InStock(bool),
    /// The brand has this id (`None`: a brand no item has, so nothing matches).
    Brand(Option<u32>),
    /// The item holds at least one of these terms (empty matches nothing).
    AnyTerm(Vec<u32>),
    /// The item holds this term (`None`: no item does).
    Term(Option<u32>),
}

/// A filter compiled against the catalog: a few comparisons on the compact attributes
/// per condition, and the boolean clauses compiled the same way.
#[derive(Debug)]
struct Compiled {
    tests: Vec<Test>,
    must: Vec<Compiled>,
    should: Vec<Compiled>,
    must_not: Vec<Compiled>,
}

/// A filter compiled for evaluation inside a graph walk.
#[derive(Debug)]
pub struct Matcher<'a> {
    compact: &'a Compact,
    root: Compiled,
}

impl Matcher<'_> {
    /// Whether `slot` holds a live item that passes the filter.
    #[inline]
    pub fn matches(&self, slot: Slot) -> bool {
        let slot = slot as usize;
        match self.compact.flags.get(slot) {
            Some(flags) if flags & LIVE != 0 => self.passes(&self.root, slot),
            _ => false,
        }
    }

    fn passes(&self, node: &Compiled, slot: usize) -> bool {
        node.tests.iter().all(|test| self.test(test, slot))
            && node.must.iter().all(|n| self.passes(n, slot))
            && (node.should.is_empty() || node.should.iter().any(|n| self.passes(n, slot)))
            && !node.must_not.iter().any(|n| self.passes(n, slot))
    }

    #[inline]
    fn test(&self, test: &Test, slot: usize) -> bool {
        let c = self.compact;
        match test {
            Test::Categories(allowed) => {
                let category = c.category[slot];
                match allowed.as_slice() {
                    [one] => category == *one,
                    many => many.binary_search(&category).is_ok(),
                }
            }
            // NaN (no price) fails both comparisons.
            Test::Price(low, high) => c.price[slot] >= *low && c.price[slot] <= *high,
            Test::InStock(want) => (c.flags[slot] & IN_STOCK != 0) == *want,
            Test::Brand(want) => *want == Some(c.brand[slot]),
            Test::AnyTerm(wanted) => {
                let terms = &c.terms[slot];
                wanted.iter().any(|t| terms.binary_search(t).is_ok())
            }
            Test::Term(want) => want.is_some_and(|t| c.terms[slot].binary_search(&t).is_ok()),
        }
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

/// The inclusive price range of a filter's bounds, when it has one.
fn price_range(filter: &SearchFilter) -> Option<(f64, f64)> {
    (filter.price_min.is_some() || filter.price_max.is_some()).then(|| {
        (
            filter.price_min.unwrap_or(f64::NEG_INFINITY),
            filter.price_max.unwrap_or(f64::INFINITY),
        )
    })
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
        let a = &entry.attrs;
        let category = a
            .category
            .as_ref()
            .map_or(ABSENT, |c| self.category_ids.intern(c));
        let brand = a
            .brand
            .as_ref()
            .map_or(ABSENT, |b| self.brand_ids.intern(b));
        let keys = a.tags.iter().map(|t| tag_term(t));
        let keys = keys.chain(a.attributes.iter().map(|p| attribute_term(p)));
        let mut terms: Vec<u32> = keys.map(|key| self.term_ids.intern(&key)).collect();
        terms.sort_unstable();
        terms.dedup();

        if let Some(category) = &a.category {
            self.by_category
                .entry(category.clone())
                .or_default()
                .insert(slot);
        }
        if let Some(price) = a.price {
            self.by_price.insert((price_key(price), slot));
        }
        if !a.is_in_stock() {
            self.out_of_stock.insert(slot);
        }
        if brand != ABSENT {
            self.by_brand.entry(brand).or_default().insert(slot);
        }
        for term in &terms {
            self.by_term.entry(*term).or_default().insert(slot);
        }

        let c = &mut self.compact;
        c.flags[at] = LIVE | if a.is_in_stock() { IN_STOCK } else { 0 };
        c.category[at] = category;
        c.price[at] = a.price.unwrap_or(f64::NAN);
        c.brand[at] = brand;
        c.terms[at] = terms.into_boxed_slice();
        self.by_item.insert(entry.id.clone(), slot);
        self.entries[at] = Some(entry);
        self.live += 1;
    }

    fn clear(&mut self, slot: Slot) -> Option<Entry> {
        let at = slot as usize;
        let entry = self.entries.get_mut(at)?.take()?;
        let a = &entry.attrs;
        if let Some(category) = &a.category {
            if let Some(slots) = self.by_category.get_mut(category) {
                slots.remove(&slot);
                if slots.is_empty() {
                    self.by_category.remove(category);
                }
            }
        }
        if let Some(price) = a.price {
            self.by_price.remove(&(price_key(price), slot));
        }
        self.out_of_stock.remove(&slot);
        let brand = self.compact.brand[at];
        if brand != ABSENT {
            remove_posting(&mut self.by_brand, brand, slot);
        }
        for term in self.compact.terms[at].iter() {
            remove_posting(&mut self.by_term, *term, slot);
        }
        self.compact.clear(at);
        self.by_item.remove(&entry.id);
        self.live -= 1;
        Some(entry)
    }

    /// The categories a category condition allows: the exact one, or every one under a
    /// prefix.
    fn categories_under(&self, exact: Option<&str>, prefix: Option<&str>) -> Vec<String> {
        if let Some(exact) = exact {
            return if self.by_category.contains_key(exact) {
                vec![exact.to_string()]
            } else {
                Vec::new()
            };
        }
        let prefix = prefix.unwrap_or_default();
        let stem = prefix.trim_end_matches('/');
        self.by_category
            .range(stem.to_string()..)
            .take_while(|(category, _)| category.starts_with(stem))
            .filter(|(category, _)| category_has_prefix(category, prefix))
            .map(|(category, _)| category.clone())
            .collect()
    }

    fn category_test(&self, names: Vec<String>) -> Test {
        let mut ids: Vec<u32> = names
            .iter()
            .filter_map(|n| self.category_ids.get(n))
            .collect();
        ids.sort_unstable();
        Test::Categories(ids)
    }

    fn compile(&self, filter: &SearchFilter) -> Compiled {
        let mut tests = Vec::new();
        if let Some(exact) = &filter.category {
            tests.push(self.category_test(self.categories_under(Some(exact), None)));
        }
        if let Some(prefix) = &filter.category_prefix {
            tests.push(self.category_test(self.categories_under(None, Some(prefix))));
        }
        if let Some((low, high)) = price_range(filter) {
            tests.push(Test::Price(low, high));
        }
        if let Some(want) = filter.in_stock {
            tests.push(Test::InStock(want));
        }
        if let Some(brand) = &filter.brand {
            tests.push(Test::Brand(self.brand_ids.get(brand)));
        }
        if !filter.tags_any.is_empty() {
            let mut any: Vec<u32> = filter
                .tags_any
                .iter()
                .filter_map(|t| self.term_ids.get(&tag_term(t)))
                .collect();
            any.sort_unstable();
            tests.push(Test::AnyTerm(any));
        }
        for tag in &filter.tags_all {
            tests.push(Test::Term(self.term_ids.get(&tag_term(tag))));
        }
        for pair in filter.attribute_pairs() {
            tests.push(Test::Term(self.term_ids.get(&attribute_term(&pair))));
        }
        let compile_all =
            |filters: &[SearchFilter]| filters.iter().map(|f| self.compile(f)).collect();
        Compiled {
            tests,
            must: compile_all(&filter.must),
            should: compile_all(&filter.should),
            must_not: compile_all(&filter.must_not),
        }
    }

    /// Compiles `filter` for evaluation inside a graph walk.
    pub fn matcher(&self, filter: &SearchFilter) -> Matcher<'_> {
        Matcher {
            compact: &self.compact,
            root: self.compile(filter),
        }
    }

    /// Picks the smallest candidate set for `filter`, counting at most `cap + 1` of a price
    /// range.
    pub fn plan(&self, filter: &SearchFilter, cap: usize) -> Plan {
        let (source, candidates) = self
            .source(filter, cap)
            .unwrap_or((CandidateSource::All, self.len()));
        Plan { source, candidates }
    }

    /// The smallest index-backed superset of `filter`'s matches and its size (an upper
    /// bound for unions); `None` when no condition has an index.
    fn source(&self, filter: &SearchFilter, cap: usize) -> Option<(CandidateSource, usize)> {
        let mut options: Vec<(CandidateSource, usize)> = Vec::new();
        if filter.category.is_some() || filter.category_prefix.is_some() {
            // Either condition narrows to the categories under it; the exact one is tighter.
            let names = self.categories_under(
                filter.category.as_deref(),
                filter.category_prefix.as_deref(),
            );
            let count = names.iter().map(|c| self.by_category[c].len()).sum();
            options.push((CandidateSource::Categories(names), count));
        }
        if let Some((low, high)) = price_range(filter) {
            let (low, high) = (price_key(low), price_key(high));
            let count = if low > high {
                0
            } else {
                self.by_price
                    .range((low, 0)..=(high, Slot::MAX))
                    .take(cap + 1)
                    .count()
            };
            options.push((CandidateSource::PriceRange(low, high), count));
        }
        match filter.in_stock {
            Some(false) => options.push((CandidateSource::OutOfStock, self.out_of_stock.len())),
            Some(true) => {
                options.push((CandidateSource::All, self.len() - self.out_of_stock.len()))
            }
            None => {}
        }
        if let Some(brand) = &filter.brand {
            options.push(match self.brand_ids.get(brand) {
                Some(id) => (CandidateSource::Brand(id), postings(&self.by_brand, &id)),
                None => (CandidateSource::Terms(Vec::new()), 0),
            });
        }
        let term_source = |keys: Vec<String>| {
            let ids: Vec<u32> = keys.iter().filter_map(|k| self.term_ids.get(k)).collect();
            let count = ids.iter().map(|id| postings(&self.by_term, id)).sum();
            (CandidateSource::Terms(ids), count)
        };
        if !filter.tags_any.is_empty() {
            options.push(term_source(
                filter.tags_any.iter().map(|t| tag_term(t)).collect(),
            ));
        }
        for tag in &filter.tags_all {
            options.push(term_source(vec![tag_term(tag)]));
        }
        for pair in filter.attribute_pairs() {
            options.push(term_source(vec![attribute_term(&pair)]));
        }
        options.extend(filter.must.iter().filter_map(|f| self.source(f, cap)));
        if !filter.should.is_empty() {
            let alternatives: Option<Vec<(CandidateSource, usize)>> =
                filter.should.iter().map(|f| self.source(f, cap)).collect();
            if let Some(alternatives) = alternatives {
                let count = alternatives.iter().map(|(_, n)| n).sum();
                let sources = alternatives.into_iter().map(|(s, _)| s).collect();
                options.push((CandidateSource::Union(sources), count));
            }
        }
        options.into_iter().min_by_key(|(_, count)| *count)
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

    /// Appends the slots of `source` (with repeats where a union's parts overlap).
    fn source_slots(&self, source: &CandidateSource, out: &mut Vec<Slot>) {
        match source {
            CandidateSource::All => out.extend(self.slots()),
            CandidateSource::Categories(categories) => out.extend(
                categories
                    .iter()
                    .filter_map(|c| self.by_category.get(c))
                    .flatten(),
            ),
            CandidateSource::Brand(id) => out.extend(self.by_brand.get(id).into_iter().flatten()),
            CandidateSource::Terms(ids) => {
                out.extend(ids.iter().filter_map(|id| self.by_term.get(id)).flatten())
            }
            CandidateSource::PriceRange(low, high) => out.extend(
                self.by_price
                    .range((*low, 0)..=(*high, Slot::MAX))
                    .map(|(_, slot)| *slot),
            ),
            CandidateSource::OutOfStock => out.extend(self.out_of_stock.iter()),
            CandidateSource::Union(parts) => {
                for part in parts {
                    self.source_slots(part, out);
                }
            }
        }
    }

    /// The live slots of `source` that pass `filter`, in slot order.
    pub fn candidates(&self, source: &CandidateSource, filter: &SearchFilter) -> Vec<Slot> {
        let matcher = self.matcher(filter);
        let mut slots = Vec::new();
        self.source_slots(source, &mut slots);
        slots.retain(|slot| matcher.matches(*slot));
        slots.sort_unstable();
        slots.dedup();
        slots
    }
}

/// Number of slots under `key` in a posting map.
fn postings<K: std::hash::Hash + Eq>(map: &HashMap<K, BTreeSet<Slot>>, key: &K) -> usize {
    map.get(key).map_or(0, BTreeSet::len)
}

/// Removes `slot` from the postings of `key`, and the key once it has none.
fn remove_posting(map: &mut HashMap<u32, BTreeSet<Slot>>, key: u32, slot: Slot) {
    if let Some(slots) = map.get_mut(&key) {
        slots.remove(&slot);
        if slots.is_empty() {
            map.remove(&key);
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
            ..Default::default()
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
        assert!(catalog.by_brand.is_empty() && catalog.by_term.is_empty());
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
                brand: (i % 6 != 0).then(|| format!("B{}", i % 4)),
                tags: (0..3)
                    .filter(|t| i % (t + 2) == 0)
                    .map(|t| format!("t{t}"))
                    .collect(),
                attributes: (i % 3 == 0)
                    .then(|| format!("color={}", ["grey", "red"][i as usize % 2]))
                    .into_iter()
                    .collect(),
            };
            catalog.insert(&ItemId::from(format!("i{i}")), i, a.clone());
            all.push(a);
        }
        let parse = |json: &str| serde_json::from_str::<SearchFilter>(json).unwrap();
        let filters = [
            "{}",
            r#"{"category":"D1/L2"}"#,
            r#"{"category_prefix":"D2"}"#,
            r#"{"category":"D1/L2","category_prefix":"D2"}"#,
            r#"{"price_min":20,"price_max":120.5}"#,
            r#"{"price_max":50,"in_stock":true}"#,
            r#"{"in_stock":false,"category_prefix":"D0"}"#,
            r#"{"brand":"B1"}"#,
            r#"{"brand":"nobody"}"#,
            r#"{"tags_any":["t0","t2"]}"#,
            r#"{"tags_all":["t0","t1"]}"#,
            r#"{"tags_all":["t0","unknown"]}"#,
            r#"{"attributes":{"color":"grey"}}"#,
            r#"{"should":[{"brand":"B1"},{"tags_any":["t2"]}]}"#,
            r#"{"should":[{"brand":"B1"},{"price_min":150}],"must_not":[{"in_stock":false}]}"#,
            r#"{"must_not":[{"category_prefix":"D1"},{"attributes":{"color":"red"}}]}"#,
            r#"{"must":[{"should":[{"brand":"B2"},{"brand":"B3"}]},{"should":[{"tags_all":["t1"]},{"category":"D0/L0"}]}]}"#,
            r#"{"brand":"B0","must":[{"must_not":[{"tags_any":["t0"]}]}]}"#,
        ]
        .map(parse);
        for filter in &filters {
            let matcher = catalog.matcher(filter);
            for (slot, a) in all.iter().enumerate() {
                assert_eq!(
                    matcher.matches(slot as Slot),
                    filter.matches(a),
                    "{filter:?} slot {slot}"
                );
            }
            let brute: Vec<Slot> = (0..all.len() as Slot)
                .filter(|s| filter.matches(&all[*s as usize]))
                .collect();
            let plan = catalog.plan(filter, 1000);
            assert!(plan.candidates >= brute.len(), "{filter:?}");
            assert_eq!(
                catalog.candidates(&plan.source, filter),
                brute,
                "{filter:?}"
            );
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
