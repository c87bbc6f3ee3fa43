//! Identifier newtypes, so an item id can never be passed where a user id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// A catalog item's id as the shop knows it (e.g. a SKU).
    ItemId
);
string_id!(
    /// A user's id as the shop knows it (logged-in id or anonymous session id).
    UserId
);
string_id!(
    /// The id shelf gives each search response; clicks carry it back.
    RequestId
);

/// The longest id shelf accepts, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// The rules every id follows wherever it enters (the API, `shelf ingest`, Fluvio): not
/// blank, at most [`MAX_ID_BYTES`] bytes, no NUL (the store's keys end a variable-length
/// field with NUL, so an id with one could reach another user's or item's keys).
pub fn check_id(field: &'static str, id: &str) -> Result<(), crate::RecordError> {
    let reason = if id.trim().is_empty() {
        return Err(crate::RecordError::MissingField { field });
    } else if id.contains('\0') {
        "must not contain NUL"
    } else if id.len() > MAX_ID_BYTES {
        "must be at most 512 bytes"
    } else {
        return Ok(());
    };
    let shown: String = id.chars().take(40).collect();
    Err(crate::RecordError::InvalidValue {
        field,
        value: format!("{shown:?}"),
        reason,
    })
}

/// Checks that the text field `field` holds at most `max` bytes (the error shows the size,
/// not the text).
pub fn check_len(field: &'static str, text: &str, max: usize) -> Result<(), crate::RecordError> {
    if text.len() <= max {
        return Ok(());
    }
    Err(crate::RecordError::InvalidValue {
        field,
        value: format!("of {} bytes", text.len()),
        reason: match max {
            MAX_TITLE_BYTES => "must be at most 2048 bytes",
            MAX_LABEL_BYTES => "must be at most 1024 bytes",
            MAX_DESCRIPTION_BYTES => "must be at most 65536 bytes",
            _ => "is too long",
        },
    })
}

/// Longest item title, and longest search text of an event.
pub const MAX_TITLE_BYTES: usize = 2048;
/// Longest brand, category and tag.
pub const MAX_LABEL_BYTES: usize = 1024;
/// Longest item description. Title, brand, category and description together stay well
/// below the embedder's text limit (256 KiB), so a valid item is never refused there.
pub const MAX_DESCRIPTION_BYTES: usize = 65_536;
/// Most tags on one item.
pub const MAX_TAGS: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_non_blank_bounded_and_without_nul() {
        assert!(check_id("id", "sku-1").is_ok());
        assert!(check_id("id", &"x".repeat(MAX_ID_BYTES)).is_ok());
        for bad in ["", "  ", "a\0b"] {
            assert!(check_id("id", bad).is_err(), "{bad:?}");
        }
        assert!(check_id("id", &"x".repeat(MAX_ID_BYTES + 1)).is_err());
    }
}
