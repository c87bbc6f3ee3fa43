//! Catalog items and the upsert/delete records that carry them on the item stream.

use crate::{ItemId, RecordError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One catalog item. `id` and `title` are required; everything else is optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub id: ItemId,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Category path with `/` separators, e.g. `Furniture/Living Room/Sofas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<bool>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated_at: Option<OffsetDateTime>,
}

impl Item {
    /// Checks the contract serde cannot express: non-empty id and title, sane price.
    pub fn validate(&self) -> Result<(), RecordError> {
        crate::ids::check_id("id", self.id.as_str())?;
        if self.title.trim().is_empty() {
            return Err(RecordError::MissingField { field: "title" });
        }
        use crate::ids::{
            check_len, MAX_DESCRIPTION_BYTES, MAX_LABEL_BYTES, MAX_TAGS, MAX_TITLE_BYTES,
        };
        check_len("title", &self.title, MAX_TITLE_BYTES)?;
        check_len(
            "description",
            self.description.as_deref().unwrap_or(""),
            MAX_DESCRIPTION_BYTES,
        )?;
        check_len(
            "category",
            self.category.as_deref().unwrap_or(""),
            MAX_LABEL_BYTES,
        )?;
        check_len(
            "brand",
            self.brand.as_deref().unwrap_or(""),
            MAX_LABEL_BYTES,
        )?;
        if self.tags.len() > MAX_TAGS {
            return Err(RecordError::InvalidValue {
                field: "tags",
                value: format!("with {} tags", self.tags.len()),
                reason: "must hold at most 100 tags",
            });
        }
        for tag in &self.tags {
            check_len("tags", tag, MAX_LABEL_BYTES)?;
        }
        if !self.attributes.is_empty() {
            let size = serde_json::to_string(&self.attributes).map_or(usize::MAX, |a| a.len());
            if size > MAX_DESCRIPTION_BYTES {
                return Err(RecordError::InvalidValue {
                    field: "attributes",
                    value: format!("of {size} bytes"),
                    reason: "must be at most 65536 bytes as JSON",
                });
            }
        }
        if let Some(price) = self.price {
            if !price.is_finite() || price < 0.0 {
                return Err(RecordError::InvalidValue {
                    field: "price",
                    value: price.to_string(),
                    reason: "must be a finite number >= 0",
                });
            }
        }
        Ok(())
    }

    /// The text that is embedded for this item: title, brand, category and description.
    ///
    /// The order puts the most discriminative fields first, so truncation of long
    /// descriptions never cuts the title.
    pub fn embedding_text(&self) -> String {
        let mut parts: Vec<&str> = vec![self.title.trim()];
        for part in [&self.brand, &self.category, &self.description]
            .into_iter()
            .flatten()
        {
            let part = part.trim();
            if !part.is_empty() {
                parts.push(part);
            }
        }
        parts.join(". ")
    }
}

/// A record on the item stream: an upsert carrying the whole item, or a delete by id.
// Records are short-lived (parsed, applied, dropped); boxing the item buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ItemRecord {
    Upsert(Item),
    Delete { id: ItemId },
}

impl ItemRecord {
    /// Checks the record: an upsert's item ([`Item::validate`]), a delete's id.
    pub fn validate(&self) -> Result<(), RecordError> {
        match self {
            ItemRecord::Upsert(item) => item.validate(),
            ItemRecord::Delete { id } => crate::ids::check_id("id", id.as_str()),
        }
    }

    /// The id this record is about.
    pub fn id(&self) -> &ItemId {
        match self {
            ItemRecord::Upsert(item) => &item.id,
            ItemRecord::Delete { id } => id,
        }
    }
}

/// An item record with its vector computed upstream, as found on `shelf-item-vectors`, in
/// either of two shapes:
/// - as the Arroyo item pipeline writes it: `{"item": "<the item record, JSON text>",
///   "embedding": "<JSON text of {model_id, dimension, vector}>"}` (Arroyo UDFs cannot
///   return a list of floats, so the embed UDF returns JSON text; deletes carry none);
/// - flat: the item record's fields plus `model_id`, `dimension` and `vector` (an array,
///   or a string holding one).
///
/// Null fields count as absent.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemVectorRecord {
    pub record: ItemRecord,
    /// Model id and vector; present on every upsert.
    pub vector: Option<(String, Vec<f32>)>,
}

impl ItemVectorRecord {
    /// Parses and checks one record (the vector's length must equal `dimension`, its
    /// values be finite).
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))?;
        let serde_json::Value::Object(mut fields) = value else {
            return Err("expected a JSON object".into());
        };
        fields.retain(|_, v| !v.is_null());
        if let Some(item) = fields.remove("item") {
            let embedding = fields.remove("embedding");
            fields = nested_object(item, "item")?;
            if let Some(embedding) = embedding {
                fields.extend(nested_object(embedding, "embedding")?);
            }
            fields.retain(|_, v| !v.is_null());
        }
        let model_id = fields.remove("model_id");
        let dimension = fields.remove("dimension");
        let vector = fields.remove("vector");
        let record: ItemRecord = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|e| format!("invalid item record: {e}"))?;
        if let ItemRecord::Delete { .. } = record {
            return Ok(Self {
                record,
                vector: None,
            });
        }
        let model_id = match model_id {
            Some(serde_json::Value::String(m)) if !m.is_empty() => m,
            _ => return Err("field `model_id` is required on an upsert".into()),
        };
        let dimension = dimension
            .and_then(|d| d.as_u64())
            .ok_or("field `dimension` is required on an upsert")? as usize;
        let vector = match vector {
            Some(serde_json::Value::String(text)) => serde_json::from_str::<Vec<f32>>(&text)
                .map_err(|e| format!("field `vector` is not a JSON array of numbers: {e}"))?,
            Some(array @ serde_json::Value::Array(_)) => serde_json::from_value(array)
                .map_err(|e| format!("field `vector` is not an array of numbers: {e}"))?,
            _ => return Err("field `vector` is required on an upsert".into()),
        };
        if vector.len() != dimension {
            return Err(format!(
                "vector has {} values but `dimension` says {dimension}",
                vector.len()
            ));
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err("vector holds NaN or infinite values".into());
        }
        if vector.iter().all(|x| *x == 0.0) {
            return Err("vector is all zeros (it has no direction to search by)".into());
        }
        Ok(Self {
            record,
            vector: Some((model_id, vector)),
        })
    }
}

/// `value` as a JSON object: the object itself, or a string holding one.
fn nested_object(
    value: serde_json::Value,
    field: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let value = match value {
        serde_json::Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| format!("field `{field}` is not JSON text: {e}"))?,
        other => other,
    };
    match value {
        serde_json::Value::Object(object) => Ok(object),
        _ => Err(format!("field `{field}` is not a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_fields_are_refused_with_their_size_not_their_text() {
        let base: Item = serde_json::from_str(r#"{"id":"sku-1","title":"A sofa"}"#).unwrap();
        base.validate().unwrap();
        let huge = "x".repeat(1 << 20);
        let cases: Vec<(&str, Item)> = vec![
            (
                "title",
                Item {
                    title: huge.clone(),
                    ..base.clone()
                },
            ),
            (
                "description",
                Item {
                    description: Some(huge.clone()),
                    ..base.clone()
                },
            ),
            (
                "brand",
                Item {
                    brand: Some(huge.clone()),
                    ..base.clone()
                },
            ),
            (
                "category",
                Item {
                    category: Some(huge.clone()),
                    ..base.clone()
                },
            ),
            (
                "tags",
                Item {
                    tags: vec![huge.clone()],
                    ..base.clone()
                },
            ),
            (
                "tags",
                Item {
                    tags: vec!["t".into(); 101],
                    ..base.clone()
                },
            ),
        ];
        for (field, item) in cases {
            let error = item.validate().unwrap_err().to_string();
            assert!(error.contains(field) && error.len() < 200, "{error}");
        }
    }

    #[test]
    fn parses_the_contract_example() {
        let json = r#"{"op":"upsert","id":"sku-123","title":"Sofa","description":"Grey",
            "category":"Furniture/Living Room/Sofas","brand":"Acme","price":499.0,"tags":["a"],
            "in_stock":true,"attributes":{"color":"grey"},"updated_at":"2026-01-02T03:04:05Z"}"#;
        let rec: ItemRecord = serde_json::from_str(json).unwrap();
        let ItemRecord::Upsert(item) = &rec else {
            panic!("not an upsert")
        };
        assert_eq!(item.id.as_str(), "sku-123");
        assert_eq!(item.price, Some(499.0));
        assert_eq!(
            item.embedding_text(),
            "Sofa. Acme. Furniture/Living Room/Sofas. Grey"
        );
        let back: ItemRecord = serde_json::from_str(&serde_json::to_string(&rec).unwrap()).unwrap();
        assert_eq!(back, rec);
        let del: ItemRecord = serde_json::from_str(r#"{"op":"delete","id":"sku-1"}"#).unwrap();
        assert_eq!(del.id().as_str(), "sku-1");
    }

    /// The Arroyo UDF udfs/item_text.rs is held to the same file.
    #[test]
    fn embedding_text_matches_the_shared_udf_parity_cases() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/udf_parity.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = fixture["item_text"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for case in cases {
            let mut item = case.as_object().unwrap().clone();
            let expected = item.remove("text").unwrap();
            item.insert("id".into(), "x".into());
            let item: Item = serde_json::from_value(item.into()).unwrap();
            assert_eq!(item.embedding_text(), expected.as_str().unwrap());
        }
    }

    #[test]
    fn ids_with_nul_or_over_512_bytes_are_refused_on_every_path() {
        let item = |id: &str| -> Item {
            serde_json::from_value(serde_json::json!({"id": id, "title": "Sofa"})).unwrap()
        };
        assert!(item("a").validate().is_ok());
        assert!(item("a\0b").validate().is_err());
        assert!(item(&"x".repeat(513)).validate().is_err());
        let delete = |id: &str| ItemRecord::Delete { id: id.into() };
        assert!(delete("a").validate().is_ok());
        assert!(delete("a\0").validate().is_err());
        assert!(delete(" ").validate().is_err());
        assert!(ItemRecord::Upsert(item("a\0")).validate().is_err());
    }

    #[test]
    fn parses_item_vector_records_as_the_pipeline_writes_them() {
        let json = r#"{"op":"upsert","id":"a","title":"Sofa","brand":null,"tags":null,
            "model_id":"m","dimension":3,"vector":"[0.5, 0.5, 0.70710677]"}"#;
        let rec = ItemVectorRecord::parse(json.as_bytes()).unwrap();
        assert_eq!(rec.record.id().as_str(), "a");
        assert_eq!(rec.vector, Some(("m".into(), vec![0.5, 0.5, 0.70710677])));
        let array = r#"{"op":"upsert","id":"a","title":"Sofa","model_id":"m","dimension":2,"vector":[1,0]}"#;
        assert!(ItemVectorRecord::parse(array.as_bytes()).is_ok());
        // A zero vector has no direction: refused here, not found by a rebuild later.
        let zero = r#"{"op":"upsert","id":"a","title":"Sofa","model_id":"m","dimension":2,"vector":[0,-0.0]}"#;
        let e = ItemVectorRecord::parse(zero.as_bytes()).unwrap_err();
        assert!(e.contains("all zeros"), "{e}");
        let piped = r#"{"item":"{\"op\":\"upsert\",\"id\":\"a\",\"title\":\"Sofa\",\"tags\":[\"x\"]}",
            "embedding":"{\"model_id\":\"m\",\"dimension\":2,\"vector\":[0.6,0.8]}"}"#;
        let rec = ItemVectorRecord::parse(piped.as_bytes()).unwrap();
        let ItemRecord::Upsert(item) = &rec.record else {
            panic!("not an upsert")
        };
        assert_eq!(item.tags, vec!["x".to_string()]);
        assert_eq!(rec.vector, Some(("m".into(), vec![0.6, 0.8])));
        let piped_delete = r#"{"item":"{\"op\":\"delete\",\"id\":\"a\"}","embedding":null}"#;
        assert_eq!(
            ItemVectorRecord::parse(piped_delete.as_bytes())
                .unwrap()
                .vector,
            None
        );
        let del = ItemVectorRecord::parse(br#"{"op":"delete","id":"a","vector":null}"#).unwrap();
        assert_eq!(del.vector, None);
        for (bad, needle) in [
            (
                r#"{"op":"upsert","id":"a","title":"t","model_id":"m","dimension":3,"vector":"[1,2]"}"#,
                "dimension",
            ),
            (
                r#"{"op":"upsert","id":"a","title":"t","dimension":2,"vector":"[1,2]"}"#,
                "model_id",
            ),
            (
                r#"{"op":"upsert","id":"a","title":"t","model_id":"m","dimension":2}"#,
                "vector",
            ),
            (
                r#"{"op":"upsert","id":"a","title":"t","model_id":"m","dimension":1,"vector":"[x]"}"#,
                "vector",
            ),
            (
                r#"{"op":"upsert","id":"a","model_id":"m","dimension":1,"vector":[1]}"#,
                "title",
            ),
        ] {
            let e = ItemVectorRecord::parse(bad.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn rejects_contract_violations() {
        let no_title = serde_json::from_str::<ItemRecord>(r#"{"op":"upsert","id":"a"}"#);
        assert!(no_title.is_err());
        let unknown = serde_json::from_str::<ItemRecord>(
            r#"{"op":"upsert","id":"a","title":"t","colour":1}"#,
        );
        assert!(unknown.unwrap_err().to_string().contains("colour"));
        let item: Item = serde_json::from_str(r#"{"id":" ","title":"t"}"#).unwrap();
        assert_eq!(
            item.validate(),
            Err(RecordError::MissingField { field: "id" })
        );
        let item: Item = serde_json::from_str(r#"{"id":"a","title":"t","price":-1}"#).unwrap();
        assert!(matches!(
            item.validate(),
            Err(RecordError::InvalidValue { field: "price", .. })
        ));
    }
}
