//! Shared vocabulary of shelf: ids, catalog items, user events, embeddings and the traits
//! at the boundaries between crates.

mod backoff;
mod embedding;
mod error;
mod event;
pub mod hash;
mod ids;
mod index;
mod item;
mod rank;
mod rng;
pub mod rules;
mod traits;
pub mod vector;

pub use backoff::Backoff;
pub use embedding::Embedding;
pub use error::RecordError;
pub use event::{Event, EventKind};
pub use ids::{check_id, ItemId, RequestId, UserId, MAX_ID_BYTES};
pub use index::{
    attribute_pair, attribute_text, category_has_prefix, category_paths, ItemAttributes,
    ScoredItem, SearchFilter, VectorIndex, MAX_FILTER_CONDITIONS, MAX_FILTER_DEPTH,
};
pub use item::{Item, ItemRecord, ItemVectorRecord};
pub use rank::{
    features_from_logged, Contribution, Features, Ranker, FEATURE_COUNT, FEATURE_COUNT_V1,
    FEATURE_COUNT_V2, FEATURE_NAMES,
};
pub use rng::{mix as splitmix_mix, SplitMix};
pub use rules::Rules;
pub use traits::{BoxFuture, TextEmbedder, TextRole};
