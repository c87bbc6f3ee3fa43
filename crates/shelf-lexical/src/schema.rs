//! The index's fields, the text analyzer, and how an item becomes a document.

use crate::words::{CjkSplit, ShopTokenizer};
use shelf_types::{attribute_pair, attribute_text, hash::Fnv1a, Item};
use tantivy::schema::{
    Facet, FacetOptions, Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing,
    TextOptions, FAST, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer,
};
use tantivy::TantivyDocument;

/// Name under which [`analyzer`] is registered with the index.
pub(crate) const ANALYZER: &str = "shelf_text";

/// Bumped when the fields or the analyzer change: an index of another version is rebuilt.
/// Version 2: Chinese, Japanese and Korean text as character bigrams.
pub(crate) const SCHEMA_VERSION: u32 = 2;

/// Words split on anything not alphanumeric, Chinese, Japanese and Korean text cut into
/// character bigrams ([`ShopTokenizer`]), tokens longer than 40 bytes dropped, lowercased,
/// accents folded, English-stemmed ("Sofas" and "sofa" meet).
pub(crate) fn analyzer(cjk: CjkSplit) -> TextAnalyzer {
    TextAnalyzer::builder(ShopTokenizer { cjk })
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The text fields a query's words are looked up in, with the names used in boosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextField {
    Title,
    Brand,
    Category,
    Tags,
    Attributes,
    Description,
}

impl TextField {
    pub const ALL: [TextField; 6] = [
        TextField::Title,
        TextField::Brand,
        TextField::Category,
        TextField::Tags,
        TextField::Attributes,
        TextField::Description,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TextField::Title => "title",
            TextField::Brand => "brand",
            TextField::Category => "category",
            TextField::Tags => "tags",
            TextField::Attributes => "attributes",
            TextField::Description => "description",
        }
    }
}

/// Field handles of the schema.
#[derive(Clone, Debug)]
pub(crate) struct Fields {
    /// The item id, verbatim: exact lookups, deletes, and (fast) the id of a hit.
    pub id: Field,
    /// One per [`TextField`], in its order: analysed words with frequencies.
    pub text: [Field; 6],
    /// Exact values for filters: brand, each tag, each `key=value` attribute, the category.
    pub brand_exact: Field,
    pub tag_exact: Field,
    pub attribute_exact: Field,
    pub category_exact: Field,
    /// The category path as a hierarchical facet (`/Furniture/Sofas` is under `/Furniture`).
    pub category_facet: Field,
    pub price: Field,
    pub in_stock: Field,
    /// FNV-1a of everything indexed for the item: two indexes hold the same document for an
    /// id exactly when the digests agree.
    pub digest: Field,
}

impl Fields {
    pub fn text(&self, field: TextField) -> Field {
        self.text[field as usize]
    }
}

pub(crate) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let id = b.add_text_field("id", STRING | FAST);
    let text = TextField::ALL.map(|f| b.add_text_field(f.name(), words.clone()));
    let fields = Fields {
        id,
        text,
        brand_exact: b.add_text_field("brand_exact", STRING),
        tag_exact: b.add_text_field("tag_exact", STRING),
        attribute_exact: b.add_text_field("attribute_exact", STRING),
        category_exact: b.add_text_field("category_exact", STRING),
        category_facet: b.add_facet_field("category_facet", FacetOptions::default()),
        price: b.add_f64_field("price", NumericOptions::default().set_indexed().set_fast()),
        in_stock: b.add_bool_field("in_stock", NumericOptions::default().set_indexed()),
        digest: b.add_u64_field("digest", NumericOptions::default().set_fast()),
    };
    (b.build(), fields)
}

/// The category path as a facet: segments split on `/`, trimmed, empty ones dropped.
pub(crate) fn category_facet(category: &str) -> Option<Facet> {
    let segments: Vec<&str> = category
        .split('/')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (!segments.is_empty()).then(|| Facet::from_path(segments))
}

/// The document of `item`.
pub(crate) fn document(fields: &Fields, item: &Item) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    let mut digest = Fnv1a::default();
    let mut add = |doc: &mut TantivyDocument, field: Field, text: &str| {
        digest.update(&field.field_id().to_le_bytes());
        digest.update(text.as_bytes());
        digest.update(&[0]);
        doc.add_text(field, text);
    };
    add(&mut doc, fields.id, item.id.as_str());
    add(&mut doc, fields.text(TextField::Title), &item.title);
    if let Some(brand) = &item.brand {
        add(&mut doc, fields.text(TextField::Brand), brand);
        add(&mut doc, fields.brand_exact, brand);
    }
    if let Some(category) = &item.category {
        // Words of the path ("Furniture/Living Room/Sofas" -> furniture, living, room, sofa).
        add(&mut doc, fields.text(TextField::Category), category);
        add(&mut doc, fields.category_exact, category);
        if let Some(facet) = category_facet(category) {
            doc.add_facet(fields.category_facet, facet);
        }
    }
    for tag in &item.tags {
        add(&mut doc, fields.text(TextField::Tags), tag);
        add(&mut doc, fields.tag_exact, tag);
    }
    for (key, value) in &item.attributes {
        add(
            &mut doc,
            fields.text(TextField::Attributes),
            &format!("{key} {}", attribute_text(value)),
        );
        add(
            &mut doc,
            fields.attribute_exact,
            &attribute_pair(key, value),
        );
    }
    if let Some(description) = &item.description {
        add(&mut doc, fields.text(TextField::Description), description);
    }
    if let Some(price) = item.price {
        digest.update(&price.to_le_bytes());
        doc.add_f64(fields.price, price);
    }
    // Absent counts as in stock, as in every filter of shelf.
    let in_stock = item.in_stock.unwrap_or(true);
    digest.update(&[in_stock as u8]);
    doc.add_bool(fields.in_stock, in_stock);
    doc.add_u64(fields.digest, digest.finish());
    doc
}
