//! Errors that stop a job (bad records never do: they become dead letters).

/// A failure of the machinery, not of a record: the batch is not committed and the job
/// resumes from its last committed offset.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] shelf_store::StoreError),
    #[error(transparent)]
    Stream(#[from] shelf_stream::StreamError),
    #[error("index failed: {0}")]
    Index(String),
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error("the embedder makes {embedder}-d vectors but the index expects {index}")]
    DimensionMismatch { embedder: usize, index: usize },
}
