//! The lexical index against brute force: exact ids, typos, filters, hostile text, and its
//! commit position across a reopen.

use shelf_lexical::LexicalIndex;
use shelf_types::{Item, ItemId, SearchFilter, SplitMix};
use std::collections::BTreeSet;

fn item(id: &str, title: &str, category: &str, brand: &str, price: Option<f64>) -> Item {
    serde_json::from_value(serde_json::json!({
        "id": id, "title": title, "category": category, "brand": brand,
        "price": price, "tags": ["tag-" .to_string() + brand],
        "attributes": {"colour": if id.len().is_multiple_of(2) { "red" } else { "blue" }},
    }))
    .unwrap()
}

fn ids(hits: &[(ItemId, f32)]) -> Vec<String> {
    hits.iter().map(|(id, _)| id.0.clone()).collect()
}

fn small_index() -> LexicalIndex {
    let index = LexicalIndex::in_memory();
    for it in [
        item(
            "sku-006417",
            "Velvet sofa",
            "Furniture/Sofas",
            "Nord",
            Some(499.0),
        ),
        item(
            "sku-000001",
            "Leather sofa with chaise",
            "Furniture/Sofas",
            "Nord",
            Some(899.0),
        ),
        item(
            "sku-000002",
            "Oak dining table",
            "Furniture/Tables",
            "Eik",
            Some(350.0),
        ),
        item(
            "sku-000003",
            "Espresso machine",
            "Kitchen/Coffee",
            "Brio",
            None,
        ),
    ] {
        index.upsert(&it).unwrap();
    }
    index.commit(4).unwrap();
    index
}

#[test]
fn an_items_id_is_an_exact_match() {
    let index = small_index();
    let hits = index
        .search("sku-006417", &SearchFilter::default(), 10)
        .unwrap();
    assert_eq!(hits.exact_id, Some(ItemId::from("sku-006417")));
    // Its words are in no text field: the sku is found by id only.
    let hits = index
        .search("  sku-000002 ", &SearchFilter::default(), 10)
        .unwrap();
    assert_eq!(hits.exact_id, Some(ItemId::from("sku-000002")));
    let hits = index.search("sku-9", &SearchFilter::default(), 10).unwrap();
    assert_eq!(hits.exact_id, None);
    // The exact match obeys the filter too.
    let kitchen = SearchFilter {
        category_prefix: Some("Kitchen".into()),
        ..Default::default()
    };
    assert_eq!(
        index.search("sku-006417", &kitchen, 10).unwrap().exact_id,
        None
    );
}

#[test]
fn words_match_stemmed_in_any_field_with_title_first() {
    let index = small_index();
    let hits = index.search("Sofas", &SearchFilter::default(), 10).unwrap();
    assert_eq!(hits.matched, 2);
    assert!(hits.corrected.is_empty());
    let hits = index
        .search("nord table", &SearchFilter::default(), 10)
        .unwrap();
    assert_eq!(hits.matched, 3, "brand words match as well as title words");
    // A word in the title outweighs the same word in the brand's tag.
    let hits = index
        .search("espresso brio", &SearchFilter::default(), 10)
        .unwrap();
    assert_eq!(ids(&hits.hits), ["sku-000003"]);
}

#[test]
fn chinese_keywords_match_chinese_titles() {
    let index = LexicalIndex::in_memory();
    for it in [
        item(
            "zh-1",
            "三人座浅灰色布艺沙发",
            "家具/沙发",
            "北欧",
            Some(2999.0),
        ),
        item(
            "zh-2",
            "头戴式蓝牙耳机，主动降噪",
            "数码/耳机",
            "声阔",
            Some(599.0),
        ),
        item("zh-3", "灰色羊毛地毯", "家居/地毯", "北欧", Some(399.0)),
        item("zh-4", "真皮沙发床", "家具/沙发", "宜居", None),
    ] {
        index.upsert(&it).unwrap();
    }
    index.commit(4).unwrap();
    let search = |q: &str| ids(&index.search(q, &SearchFilter::default(), 10).unwrap().hits);
    // A word inside a run of characters with no spaces.
    assert_eq!(search("耳机"), ["zh-2"]);
    let sofas = search("沙发");
    assert_eq!(sofas.len(), 2, "{sofas:?}");
    assert!(sofas.contains(&"zh-1".to_owned()) && sofas.contains(&"zh-4".to_owned()));
    // The item holding every bigram of the query ranks first; one sharing a word follows.
    let grey_sofa = search("灰色沙发");
    assert_eq!(grey_sofa[0], "zh-1", "{grey_sofa:?}");
    assert!(grey_sofa.contains(&"zh-3".to_owned()), "{grey_sofa:?}");
    // Brands and categories are words too; a mixed query finds both scripts.
    assert_eq!(search("声阔"), ["zh-2"]);
    assert_eq!(search("降噪 headphones")[0], "zh-2");
}

#[test]
fn a_misspelt_word_is_found_with_a_typo_and_reported() {
    let index = small_index();
    let hits = index
        .search("expresso", &SearchFilter::default(), 10)
        .unwrap();
    assert_eq!(ids(&hits.hits), ["sku-000003"]);
    assert_eq!(hits.corrected, ["expresso"]);
    // Two edits in a long word.
    let hits = index
        .search("lether", &SearchFilter::default(), 10)
        .unwrap();
    assert_eq!(ids(&hits.hits), ["sku-000001"]);
    // Short words are not corrected: too many words are one edit away.
    let hits = index.search("oax", &SearchFilter::default(), 10).unwrap();
    assert!(hits.hits.is_empty() && hits.corrected.is_empty());
}

#[test]
fn any_text_is_a_query() {
    let index = small_index();
    let long = "🛋".repeat(512);
    let chinese = "灰色沙发".repeat(170);
    for text in [
        "\"sofa",
        "title:sofa",
        "(sofa",
        "sofa AND OR NOT",
        "*",
        "~2",
        "[a TO z]",
        "\\",
        "",
        "   ",
        "sofa^10",
        "+-&&||!(){}[]^\"~*?:\\/",
        &long,
        &chinese,
        "\u{0}",
    ] {
        let hits = index.search(text, &SearchFilter::default(), 10).unwrap();
        assert!(hits.hits.len() <= 2, "{text}: {hits:?}");
    }
    let hits = index
        .search("title:sofa", &SearchFilter::default(), 10)
        .unwrap();
    assert_eq!(hits.matched, 2, "`title:` is a word, not a field");
}

// No brand, tag or colour shares a stem with a title word: brute force reads titles only.
const BRANDS: [&str; 3] = ["Acme", "Nimbus", "Nord"];
const TAGS: [&str; 4] = ["sale", "new", "eco", "gift"];
const COLOURS: [&str; 3] = ["teal", "grey", "blue"];

/// A random filter over every field, with `must` / `should` / `must_not` clauses nested up
/// to two levels below the top.
fn random_filter(
    rng: &mut SplitMix,
    categories: &[&str],
    trial: usize,
    depth: usize,
) -> SearchFilter {
    let pick = |rng: &mut SplitMix, values: &[&str]| values[rng.below(values.len())].to_string();
    let some = |rng: &mut SplitMix, one_in: usize| rng.below(one_in) == 0;
    let mut filter = SearchFilter {
        category: some(rng, 6).then(|| pick(rng, categories)),
        category_prefix: some(rng, 4).then(|| pick(rng, categories)),
        price_min: some(rng, 3).then(|| rng.below(500) as f64),
        price_max: some(rng, 4).then(|| 500.0 + rng.below(500) as f64),
        in_stock: [None, None, Some(true), Some(false)][rng.below(4)],
        brand: some(rng, 4).then(|| pick(rng, &BRANDS)),
        tags_any: (0..rng.below(3)).map(|_| pick(rng, &TAGS)).collect(),
        tags_all: (0..rng.below(2)).map(|_| pick(rng, &TAGS)).collect(),
        ..Default::default()
    };
    if some(rng, 3) {
        filter
            .attributes
            .insert("colour".into(), pick(rng, &COLOURS).into());
    }
    if some(rng, 5) {
        filter
            .attributes
            .insert("seats".into(), (rng.below(3) + 1).into());
    }
    if depth < 2 && trial.is_multiple_of(2) {
        for clause in 0..3 {
            let count = rng.below(3);
            let children: Vec<SearchFilter> = (0..count)
                .map(|_| random_filter(rng, categories, trial + 1, depth + 1))
                .collect();
            match clause {
                0 => filter.must = children,
                1 => filter.should = children,
                _ => filter.must_not = children,
            }
        }
    }
    filter
}

/// Random items and filters over every field, with AND / OR / NOT clauses: the hits equal a
/// brute-force scan of the items, and a filter never changes a hit's score.
#[test]
fn filters_equal_brute_force() {
    let mut rng = SplitMix(7);
    let categories = ["A/B", "A/C", "A/B/D", "E", "A"];
    let words = ["red", "sofa", "lamp", "table", "oak", "velvet"];
    let index = LexicalIndex::in_memory();
    let mut items = Vec::new();
    for n in 0..400 {
        let title: Vec<&str> = (0..3).map(|_| words[rng.below(words.len())]).collect();
        let mut it = item(
            &format!("i{n}"),
            &title.join(" "),
            categories[rng.below(categories.len())],
            "b",
            (rng.below(4) > 0).then(|| rng.below(1000) as f64),
        );
        it.in_stock = [None, Some(true), Some(false)][rng.below(3)];
        it.brand = (rng.below(4) > 0).then(|| BRANDS[rng.below(BRANDS.len())].to_string());
        it.tags = TAGS
            .iter()
            .filter(|_| rng.below(3) == 0)
            .map(|t| t.to_string())
            .collect();
        it.attributes.clear();
        it.attributes
            .insert("colour".into(), COLOURS[rng.below(3)].into());
        it.attributes
            .insert("seats".into(), (rng.below(3) + 1).into());
        index.upsert(&it).unwrap();
        items.push(it);
    }
    // Replace some, delete some: only the last state counts.
    for n in (0..400).step_by(7) {
        items[n].title = "oak lamp".into();
        index.upsert(&items[n]).unwrap();
    }
    let mut deleted = BTreeSet::new();
    for n in (3..400).step_by(11) {
        index.delete(&items[n].id);
        deleted.insert(n);
    }
    index.commit(1).unwrap();
    assert_eq!(index.len(), 400 - deleted.len() as u64);
    let mut matched = 0;
    for trial in 0..300 {
        let filter = random_filter(&mut rng, &categories, trial, 0);
        let word = words[rng.below(words.len())];
        let hits = index.search(word, &filter, 1000).unwrap().hits;
        let unfiltered = index
            .search(word, &SearchFilter::default(), 1000)
            .unwrap()
            .hits;
        for (id, score) in &hits {
            let (_, alone) = unfiltered.iter().find(|(i, _)| i == id).unwrap();
            assert_eq!(score, alone, "a filter changed the score of {id}");
        }
        let got: BTreeSet<String> = ids(&hits).into_iter().collect();
        let want: BTreeSet<String> = items
            .iter()
            .enumerate()
            .filter(|(n, it)| {
                !deleted.contains(n)
                    && it.title.split(' ').any(|w| w == word)
                    && filter.matches(&shelf_types::ItemAttributes::of(it))
            })
            .map(|(_, it)| it.id.0.clone())
            .collect();
        assert_eq!(
            got,
            want,
            "{word} with {filter:?}: only the index has {:?}, only brute force {:?}",
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        );
        matched += usize::from(!want.is_empty());
    }
    // Not a test of empty sets: most filters match something.
    assert!(matched > 100, "{matched} of 300 filters matched an item");
}

#[test]
fn a_commit_records_its_position_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lexical");
    let index = LexicalIndex::open(&path).unwrap();
    assert_eq!(index.position(), None);
    index
        .upsert(&item("a", "Red lamp", "Lights", "Lumo", Some(20.0)))
        .unwrap();
    index
        .upsert(&item("b", "Blue lamp", "Lights", "Lumo", None))
        .unwrap();
    // Not committed: not searchable yet.
    assert_eq!(
        index
            .search("lamp", &SearchFilter::default(), 10)
            .unwrap()
            .matched,
        0
    );
    index.commit(2).unwrap();
    assert_eq!(
        index
            .search("lamp", &SearchFilter::default(), 10)
            .unwrap()
            .matched,
        2
    );
    let before = index.documents().unwrap();
    index
        .upsert(&item("c", "Green lamp", "Lights", "Lumo", None))
        .unwrap();
    drop(index); // uncommitted: lost, as a crash would lose it

    let index = LexicalIndex::open(&path).unwrap();
    assert_eq!(index.position(), Some(2));
    assert_eq!(index.documents().unwrap(), before);
    // The same upsert again leaves the same document: replays are harmless.
    index
        .upsert(&item("b", "Blue lamp", "Lights", "Lumo", None))
        .unwrap();
    index.commit(3).unwrap();
    assert_eq!(index.documents().unwrap(), before);
    let reader = LexicalIndex::open_read_only(&path).unwrap();
    assert_eq!(reader.documents().unwrap(), before);
}

/// A rebuild starts with `clear`: what was committed and what was still buffered are both
/// gone, and only what is written after it is committed.
#[test]
fn clear_drops_committed_and_buffered_documents() {
    let index = LexicalIndex::in_memory();
    index
        .upsert(&item("a", "Red lamp", "Lights", "Lumo", None))
        .unwrap();
    index.commit(1).unwrap();
    index
        .upsert(&item("b", "Blue lamp", "Lights", "Lumo", None))
        .unwrap();
    index.clear().unwrap();
    index
        .upsert(&item("c", "Green lamp", "Lights", "Lumo", None))
        .unwrap();
    assert_eq!(index.position(), Some(1), "not committed yet");
    index.commit(3).unwrap();
    assert_eq!(index.position(), Some(3));
    let ids: Vec<String> = index
        .documents()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["c"]);
}

/// A commit whose last write fails (an I/O error injected into tantivy's directory) rolls
/// the index back to the last commit, searchable and on disk; applying the same changes
/// again commits them, and a reopen finds exactly that.
#[test]
fn a_commit_that_fails_on_disk_rolls_back_and_the_changes_apply_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lexical");
    let index = LexicalIndex::open(&path).unwrap();
    let lantern = item("a", "Brass lantern", "Lights", "Lumo", Some(20.0));
    let cushion = item("b", "Velvet cushion", "Home", "Lumo", None);
    index.upsert(&lantern).unwrap();
    index.commit(1).unwrap();
    let committed = index.documents().unwrap();

    index.fail_next_commits(1);
    let changes = |index: &LexicalIndex| {
        index.upsert(&cushion).unwrap();
        index.delete(&ItemId::from("a"));
    };
    changes(&index);
    let error = index.commit(2).unwrap_err().to_string();
    assert!(error.contains("fault injected"), "{error}");
    assert_eq!(index.position(), Some(1));
    assert_eq!(index.documents().unwrap(), committed);
    let found = |index: &LexicalIndex, word: &str| {
        ids(&index
            .search(word, &SearchFilter::default(), 10)
            .unwrap()
            .hits)
    };
    assert_eq!(found(&index, "lantern"), ["a"]);
    assert!(found(&index, "cushion").is_empty());
    // The rollback dropped the failed batch: a commit now has nothing new to write.
    index.commit(1).unwrap();
    assert_eq!(index.documents().unwrap(), committed);

    changes(&index);
    index.commit(2).unwrap();
    assert_eq!(found(&index, "cushion"), ["b"]);
    assert!(found(&index, "lantern").is_empty());
    let after = index.documents().unwrap();
    drop(index);
    let index = LexicalIndex::open(&path).unwrap();
    assert_eq!(index.position(), Some(2));
    assert_eq!(index.documents().unwrap(), after);
}

/// Hits name their items rightly as segments come and go: each commit adds a segment, an
/// update deletes the old document and adds one, a deletion hides one, and ids decoded for
/// a segment on its first search stay right for its later searches.
#[test]
fn hits_name_the_right_items_across_commits_updates_and_deletions() {
    let index = small_index();
    let sofas = |index: &LexicalIndex| -> BTreeSet<String> {
        let hits = index.search("sofa", &SearchFilter::default(), 10).unwrap();
        ids(&hits.hits).into_iter().collect()
    };
    let set = |ids: &[&str]| -> BTreeSet<String> { ids.iter().map(|s| s.to_string()).collect() };
    assert_eq!(sofas(&index), set(&["sku-000001", "sku-006417"]));
    // A second segment.
    index
        .upsert(&item(
            "sku-000010",
            "Corner sofa",
            "Furniture/Sofas",
            "Nord",
            None,
        ))
        .unwrap();
    index.commit(5).unwrap();
    assert_eq!(
        sofas(&index),
        set(&["sku-000001", "sku-000010", "sku-006417"])
    );
    // An update that is no sofa any more, and a deletion, in a third commit.
    index
        .upsert(&item(
            "sku-000001",
            "Leather armchair",
            "Furniture/Chairs",
            "Nord",
            None,
        ))
        .unwrap();
    index.delete(&ItemId::from("sku-006417"));
    index
        .upsert(&item(
            "sku-000011",
            "Sofa bed",
            "Furniture/Sofas",
            "Eik",
            None,
        ))
        .unwrap();
    index.commit(6).unwrap();
    assert_eq!(sofas(&index), set(&["sku-000010", "sku-000011"]));
    let chairs = index
        .search("armchair", &SearchFilter::default(), 10)
        .unwrap();
    assert_eq!(ids(&chairs.hits), ["sku-000001"]);
    // Every stored document is found by its own id's words in its title.
    for (id, title) in [("sku-000002", "oak"), ("sku-000003", "espresso")] {
        let hits = index.search(title, &SearchFilter::default(), 10).unwrap();
        assert_eq!(ids(&hits.hits), [id]);
    }
}
