//! A shopper's text and a [`SearchFilter`] as a tantivy query, built term by term: the text
//! is never parsed as a query language, so quotes, colons, `AND` or brackets are just words.

use crate::schema::{category_facet, Fields, TextField};
use shelf_types::SearchFilter;
use std::ops::Bound;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, EmptyQuery, FuzzyTermQuery, Occur, Query,
    RangeQuery, TermQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Searcher, Term};

/// Words of a query beyond this many are ignored (a pasted paragraph is not a product query).
pub const MAX_QUERY_WORDS: usize = 32;

/// How much a word found in each field counts (BM25 of the field times its boost).
#[derive(Clone, Debug, PartialEq)]
pub struct FieldBoosts {
    pub title: f32,
    pub brand: f32,
    pub category: f32,
    pub tags: f32,
    pub attributes: f32,
    pub description: f32,
}

impl Default for FieldBoosts {
    fn default() -> Self {
        Self {
            title: 2.0,
            brand: 1.5,
            category: 1.0,
            tags: 1.0,
            attributes: 1.0,
            description: 1.0,
        }
    }
}

impl FieldBoosts {
    pub fn of(&self, field: TextField) -> f32 {
        match field {
            TextField::Title => self.title,
            TextField::Brand => self.brand,
            TextField::Category => self.category,
            TextField::Tags => self.tags,
            TextField::Attributes => self.attributes,
            TextField::Description => self.description,
        }
    }
}

/// One word of a query: as analysed (what the index holds) and as the shopper typed it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Word {
    pub analysed: String,
    pub typed: String,
}

/// The analysed words of `text`, each once, in order, at most [`MAX_QUERY_WORDS`].
pub(crate) fn words(analyzer: &mut TextAnalyzer, text: &str) -> Vec<Word> {
    let mut out: Vec<Word> = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(token) = stream.next() {
        if out.len() == MAX_QUERY_WORDS {
            break;
        }
        if !out.iter().any(|w| w.analysed == token.text) {
            out.push(Word {
                analysed: token.text.clone(),
                typed: text
                    .get(token.offset_from..token.offset_to)
                    .unwrap_or(&token.text)
                    .to_string(),
            });
        }
    }
    out
}

/// Edit distance a misspelt word is looked up with: none under 4 characters (too many
/// words are one edit from a short one), 1 up to 7, 2 from 8, as Typesense and Algolia do.
pub(crate) fn typo_distance(word: &str) -> u8 {
    match word.chars().count() {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// The text part of a query: every word in every text field (BM25 × the field's boost),
/// summed over fields and words. A word no field holds is looked up with typos allowed
/// (and returned, as typed, in the second list); such matches score a constant per field.
pub(crate) fn text_query(
    searcher: &Searcher,
    fields: &Fields,
    boosts: &FieldBoosts,
    words: &[Word],
) -> tantivy::Result<(Box<dyn Query>, Vec<String>)> {
    let mut corrected = Vec::new();
    let mut per_word: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(words.len());
    for Word {
        analysed: word,
        typed,
    } in words
    {
        let mut found = false;
        for field in TextField::ALL {
            let term = Term::from_field_text(fields.text(field), word);
            if searcher.doc_freq(&term)? > 0 {
                found = true;
                break;
            }
        }
        let distance = typo_distance(word);
        let fuzzy = !found && distance > 0;
        if fuzzy {
            corrected.push(typed.clone());
        }
        let mut per_field: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for field in TextField::ALL {
            let boost = boosts.of(field);
            if boost <= 0.0 {
                continue;
            }
            let term = Term::from_field_text(fields.text(field), word);
            let query: Box<dyn Query> = if fuzzy {
                Box::new(FuzzyTermQuery::new(term, distance, true))
            } else {
                Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
            };
            per_field.push((Occur::Should, Box::new(BoostQuery::new(query, boost))));
        }
        per_word.push((Occur::Should, Box::new(BooleanQuery::new(per_field))));
    }
    if per_word.is_empty() {
        return Ok((Box::new(EmptyQuery), corrected));
    }
    Ok((Box::new(BooleanQuery::new(per_word)), corrected))
}

/// The filter as clauses every hit must satisfy: one clause that scores nothing, so a
/// filter never changes a hit's BM25 score. Empty when the filter has no condition.
pub(crate) fn filter_clauses(
    fields: &Fields,
    filter: &SearchFilter,
) -> Vec<(Occur, Box<dyn Query>)> {
    if filter.is_empty() {
        return Vec::new();
    }
    vec![(
        Occur::Must,
        Box::new(ConstScoreQuery::new(filter_query(fields, filter), 0.0)),
    )]
}

/// The items `filter` matches, as a boolean query over the exact-value fields, with
/// `must` / `should` / `must_not` as nested boolean queries.
fn filter_query(fields: &Fields, filter: &SearchFilter) -> Box<dyn Query> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let exact = |field, value: &str| -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, value),
            IndexRecordOption::Basic,
        ))
    };
    if let Some(category) = &filter.category {
        clauses.push((Occur::Must, exact(fields.category_exact, category)));
    }
    if let Some(prefix) = &filter.category_prefix {
        // A facet term matches its own path and every path below it.
        let query: Box<dyn Query> = match category_facet(prefix) {
            Some(facet) => Box::new(TermQuery::new(
                Term::from_facet(fields.category_facet, &facet),
                IndexRecordOption::Basic,
            )),
            None => Box::new(EmptyQuery),
        };
        clauses.push((Occur::Must, query));
    }
    if filter.price_min.is_some() || filter.price_max.is_some() {
        let bound = |value: Option<f64>| match value {
            Some(v) => Bound::Included(Term::from_field_f64(fields.price, v)),
            // Unbounded on one side still requires a price, as `SearchFilter::matches` does.
            None => Bound::Unbounded,
        };
        let lower = match filter.price_min {
            Some(_) => bound(filter.price_min),
            None => Bound::Included(Term::from_field_f64(fields.price, f64::MIN)),
        };
        clauses.push((
            Occur::Must,
            Box::new(RangeQuery::new(lower, bound(filter.price_max))),
        ));
    }
    if let Some(in_stock) = filter.in_stock {
        clauses.push((
            Occur::Must,
            Box::new(TermQuery::new(
                Term::from_field_bool(fields.in_stock, in_stock),
                IndexRecordOption::Basic,
            )),
        ));
    }
    if let Some(brand) = &filter.brand {
        clauses.push((Occur::Must, exact(fields.brand_exact, brand)));
    }
    if !filter.tags_any.is_empty() {
        let any = filter
            .tags_any
            .iter()
            .map(|tag| (Occur::Should, exact(fields.tag_exact, tag)))
            .collect();
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(any))));
    }
    for tag in &filter.tags_all {
        clauses.push((Occur::Must, exact(fields.tag_exact, tag)));
    }
    for pair in filter.attribute_pairs() {
        clauses.push((Occur::Must, exact(fields.attribute_exact, &pair)));
    }
    for must in &filter.must {
        clauses.push((Occur::Must, filter_query(fields, must)));
    }
    if !filter.should.is_empty() {
        let any = filter
            .should
            .iter()
            .map(|f| (Occur::Should, filter_query(fields, f)))
            .collect();
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(any))));
    }
    for must_not in &filter.must_not {
        clauses.push((Occur::MustNot, filter_query(fields, must_not)));
    }
    if clauses.iter().all(|(occur, _)| *occur == Occur::MustNot) {
        // A boolean query of exclusions alone matches nothing: exclude from every item.
        clauses.push((Occur::Must, Box::new(AllQuery)));
    }
    Box::new(BooleanQuery::new(clauses))
}
