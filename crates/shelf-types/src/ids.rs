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
