//! shelf-engine: the item job (embed, store, index), the event job (profiles, item stats,
//! impressions), the consumer loops that apply a source with exactly-once effect, and
//! two-stage retrieval.

mod consumer;
mod error;
mod event_job;
mod explore;
mod item_job;
mod query_cache;
mod retrieval;
mod stats_job;

pub use consumer::{catch_up, follow, retry_delay, source_end, Applied, Job, Progress, IDLE_WAIT};
pub use error::EngineError;
pub use event_job::{impression_record, EventJob, EVENT_BATCH_SIZE, EVENT_JOB};
pub use item_job::{ItemJob, ITEM_JOB};
pub use query_cache::QueryCache;
pub use retrieval::{
    convex_fusion, new_request_id, reciprocal_rank_fusion, request_id_floor, FacetField, Facets,
    Fusion, Placement, RankedItem, RetrievalConfig, Retriever, SearchMode, SearchRequest,
    SearchResponse, SortOrder, Source, Sources, Timings,
};
pub use stats_job::{StatsJob, STATS_JOB};
