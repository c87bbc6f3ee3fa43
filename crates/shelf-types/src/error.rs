//! Errors for records that break the data contract (always the producer's fault).

use thiserror::Error;

/// A record that does not satisfy the data contract in DESIGN.md. Caller's fault.
#[derive(Debug, Error, PartialEq)]
pub enum RecordError {
    /// A required field is absent or empty.
    #[error("field `{field}` is required and must not be empty")]
    MissingField { field: &'static str },
    /// A numeric field holds a value outside its domain.
    #[error("field `{field}` has invalid value {value}: {reason}")]
    InvalidValue {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
}
