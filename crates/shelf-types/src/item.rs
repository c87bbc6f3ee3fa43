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
        if self.id.0.trim().is_empty() {
            return Err(RecordError::MissingField { field: "id" });
        }
        if self.title.trim().is_empty() {
            return Err(RecordError::MissingField { field: "title" });
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
    /// The id this record is about.
    pub fn id(&self) -> &ItemId {
        match self {
            ItemRecord::Upsert(item) => &item.id,
            ItemRecord::Delete { id } => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
