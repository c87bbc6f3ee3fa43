//! Boundary traits: what the engine needs from the components it wires together.

use crate::Embedding;
use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future (keeps the traits object-safe without extra crates).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a text is to the model. Some models are trained with a different prompt in front of
/// queries and of the documents they should find (multilingual-e5: `query: ` and `passage: `);
/// the embedder applies the model's own. Models without prompts embed every role alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextRole {
    /// A shopper's search text.
    Query,
    /// An item's text, as indexed.
    Document,
    /// The text exactly as given, no prompt (`shelf embed`'s default, reference checks).
    Raw,
}

/// Turns texts into embeddings. Implementations must not block the async runtime:
/// model work runs elsewhere and the future only waits for it.
pub trait TextEmbedder: Send + Sync {
    /// The error an embedding call can fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A stable identifier of the model (checked against vectors made elsewhere).
    fn model_id(&self) -> &str;

    /// Number of dimensions of every vector this embedder returns.
    fn dim(&self) -> usize;

    /// Embeds `texts` in the given role (the model's prompt for it in front of each); the
    /// result has one vector per text, in input order.
    fn embed_as(
        &self,
        role: TextRole,
        texts: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Embedding>, Self::Error>>;

    /// Whether `error` is the input's fault (a text the model refuses), so the record can
    /// be set aside, rather than the machinery's (worker gone, inference failed), when it
    /// must be retried. Unknown errors are the machinery's: nothing is dropped for them.
    fn is_invalid_input(_error: &Self::Error) -> bool {
        false
    }
}
