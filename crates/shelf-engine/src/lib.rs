//! shelf-engine: the item job (embed, store, index), the event job (profiles, item stats)
//! and the consumer loop that applies a source batch by batch with exactly-once effect.

mod consumer;
mod error;
mod event_job;
mod item_job;

pub use consumer::{catch_up, Job, Progress};
pub use error::EngineError;
pub use event_job::{EventJob, EVENT_JOB};
pub use item_job::{ItemJob, ITEM_JOB};
