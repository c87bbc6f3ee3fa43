//! User events (views, clicks, carts, purchases, searches) as they arrive on the event stream.

use crate::{ItemId, RecordError, RequestId, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What the user did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    View,
    Click,
    AddToCart,
    Purchase,
    Search,
}

impl EventKind {
    /// Every kind, in a fixed order.
    pub const ALL: [EventKind; 5] = [
        EventKind::View,
        EventKind::Click,
        EventKind::AddToCart,
        EventKind::Purchase,
        EventKind::Search,
    ];

    /// The wire name (`add_to_cart`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::Click => "click",
            EventKind::AddToCart => "add_to_cart",
            EventKind::Purchase => "purchase",
            EventKind::Search => "search",
        }
    }
}

/// One user event. `item_id` is required except for `search`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub user_id: UserId,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<ItemId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Ties a click to the search response that showed the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// 1-based position of the item in that response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
}

impl Event {
    /// Checks the contract serde cannot express.
    pub fn validate(&self) -> Result<(), RecordError> {
        crate::ids::check_id("user_id", self.user_id.as_str())?;
        if let Some(item) = self.item_id.as_ref().filter(|id| !id.0.is_empty()) {
            crate::ids::check_id("item_id", item.as_str())?;
        }
        if let Some(request) = &self.request_id {
            crate::ids::check_id("request_id", request.as_str())?;
        }
        let has_item = self
            .item_id
            .as_ref()
            .is_some_and(|id| !id.0.trim().is_empty());
        if self.kind != EventKind::Search && !has_item {
            return Err(RecordError::MissingField { field: "item_id" });
        }
        if self.kind == EventKind::Search && self.query.as_deref().is_none_or(str::is_empty) {
            return Err(RecordError::MissingField { field: "query" });
        }
        crate::ids::check_len(
            "query",
            self.query.as_deref().unwrap_or(""),
            crate::ids::MAX_TITLE_BYTES,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let e: Event = serde_json::from_str(
            r#"{"user_id":"u1","kind":"add_to_cart","item_id":"sku-1","request_id":"r1","position":3,"ts":"2026-11-01T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::AddToCart);
        assert_eq!(e.validate(), Ok(()));
        // The id rules hold here too, not only in the API: ids from `shelf ingest` and
        // Fluvio become store keys.
        for (field, value) in [
            ("user_id", "u\0x"),
            ("item_id", "sku\0"),
            ("request_id", "r\0"),
        ] {
            let mut bad: serde_json::Value = serde_json::to_value(&e).unwrap();
            bad[field] = serde_json::json!(value);
            let bad: Event = serde_json::from_value(bad).unwrap();
            assert!(bad.validate().is_err(), "{field}");
        }
        let search: Event = serde_json::from_str(
            r#"{"user_id":"u1","kind":"search","query":"red sofa","ts":"2026-11-01T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(search.validate(), Ok(()));
        let click: Event =
            serde_json::from_str(r#"{"user_id":"u1","kind":"click","ts":"2026-11-01T10:00:00Z"}"#)
                .unwrap();
        assert_eq!(
            click.validate(),
            Err(RecordError::MissingField { field: "item_id" })
        );
        assert!(serde_json::from_str::<Event>(
            r#"{"user_id":"u1","kind":"like","item_id":"a","ts":"2026-11-01T10:00:00Z"}"#
        )
        .is_err());
    }
}
