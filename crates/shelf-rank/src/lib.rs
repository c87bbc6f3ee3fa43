//! shelf-rank: models that score (user, query, item) candidates from their features.

mod prior;

pub use prior::PriorRanker;
