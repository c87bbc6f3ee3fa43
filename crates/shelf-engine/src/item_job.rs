//! The item job: item records -> embed new or changed text -> items, vectors and tombstones
//! in the store (with the offset, one write) -> the vector index and the lexical index.

use crate::consumer::{Applied, Job};
use crate::EngineError;
use shelf_lexical::LexicalIndex;
use shelf_store::{text_hash, DeadLetter, Store, StoredVector};
use shelf_stream::Record;
use shelf_types::{
    Item, ItemAttributes, ItemId, ItemRecord, ItemVectorRecord, TextEmbedder, TextRole, VectorIndex,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Consumer name of the item job.
pub const ITEM_JOB: &str = "item-job";

/// Applies item records.
#[derive(Debug)]
pub struct ItemJob<E, I> {
    store: Arc<Store>,
    embedder: E,
    index: Option<I>,
    /// The lexical index, kept beside the vector index (its commits are the caller's: they
    /// record the log position, which spans partitions).
    lexical: Option<Arc<LexicalIndex>>,
    embedded: u64,
    reused: u64,
    /// Records carry vectors computed upstream (`shelf-item-vectors`); nothing is embedded.
    upstream_vectors: bool,
    /// Items whose index update (vector or lexical) failed after their batch committed.
    /// Each is retried from the store's state before the next batch; the indexes are in
    /// step with the committed offset only when none is left ([`ItemJob::index_in_step`]).
    index_backlog: Vec<ItemId>,
}

/// What the indexes must do for one item after the batch commits: upsert (vector and
/// item) or delete (`None`).
type IndexOp = Option<(Vec<f32>, Box<Item>)>;

enum Parsed {
    /// The item, its embedding text, the text's hash and the upstream vector, if any.
    Upsert(Box<shelf_types::Item>, String, u64, Option<Vec<f32>>),
    Delete(ItemId),
    Dead(String),
}

impl<E: TextEmbedder, I: VectorIndex> ItemJob<E, I> {
    /// A job writing to `store` and, when given, keeping `index` in step.
    pub fn new(store: Arc<Store>, embedder: E, index: Option<I>) -> Result<Self, EngineError> {
        if let Some(index) = &index {
            if index.dim() != embedder.dim() {
                return Err(EngineError::DimensionMismatch {
                    embedder: embedder.dim(),
                    index: index.dim(),
                });
            }
        }
        Ok(Self {
            store,
            embedder,
            index,
            lexical: None,
            embedded: 0,
            reused: 0,
            upstream_vectors: false,
            index_backlog: Vec::new(),
        })
    }

    /// A job for records that carry their vectors (the Arroyo item pipeline's output): it
    /// checks each vector's model id and dimension against `embedder` (the model queries
    /// are embedded with) and embeds nothing itself.
    pub fn with_upstream_vectors(
        store: Arc<Store>,
        embedder: E,
        index: Option<I>,
    ) -> Result<Self, EngineError> {
        let mut job = Self::new(store, embedder, index)?;
        job.upstream_vectors = true;
        Ok(job)
    }

    /// Keeps `lexical` in step too: the same upserts and deletes, after the same commits.
    pub fn with_lexical(mut self, lexical: Arc<LexicalIndex>) -> Self {
        self.lexical = Some(lexical);
        self
    }

    /// Whether the index holds every change committed so far (no failed index update is
    /// waiting for its retry). An index snapshot is only consistent with the committed
    /// offset when this holds.
    pub fn index_in_step(&self) -> bool {
        self.index_backlog.is_empty()
    }

    /// Retries the index updates that failed, each from the store's current state of its
    /// item (upsert when it is there, delete when not). Those that fail again stay queued.
    pub fn retry_index_backlog(&mut self) -> Result<(), EngineError> {
        let mut still_failing = Vec::new();
        for id in std::mem::take(&mut self.index_backlog) {
            let op = match (
                self.store.item(id.as_str())?,
                self.store.vector(id.as_str())?,
            ) {
                (Some(item), Some(vector)) => Some((vector.vector, Box::new(item))),
                _ => None,
            };
            if let Err(e) = self.apply_to_indexes(&id, op) {
                tracing::error!(item = %id, error = %e, "index update failed again");
                still_failing.push(id);
            }
        }
        self.index_backlog = still_failing;
        Ok(())
    }

    /// One item's upsert or delete in the vector and the lexical index.
    fn apply_to_indexes(&self, id: &ItemId, op: IndexOp) -> Result<(), String> {
        match op {
            Some((vector, item)) => {
                if let Some(index) = &self.index {
                    let attrs = ItemAttributes::of(&item);
                    index
                        .upsert(id, &vector, attrs)
                        .map_err(|e| e.to_string())?;
                }
                if let Some(lexical) = &self.lexical {
                    lexical.upsert(&item).map_err(|e| e.to_string())?;
                }
            }
            None => {
                if let Some(index) = &self.index {
                    index.delete(id).map_err(|e| e.to_string())?;
                }
                if let Some(lexical) = &self.lexical {
                    lexical.delete(id);
                }
            }
        }
        Ok(())
    }

    /// Texts embedded and vectors reused (text unchanged) so far.
    pub fn embed_counts(&self) -> (u64, u64) {
        (self.embedded, self.reused)
    }

    fn parse(&self, record: &Record) -> Parsed {
        let (parsed, vector) = if self.upstream_vectors {
            match ItemVectorRecord::parse(&record.payload) {
                Ok(ItemVectorRecord { record, vector }) => match vector {
                    Some((model_id, _)) if model_id != self.embedder.model_id() => {
                        return Parsed::Dead(format!(
                            "vector of model {model_id}, but queries are embedded with {}",
                            self.embedder.model_id()
                        ))
                    }
                    Some((_, v)) if v.len() != self.embedder.dim() => {
                        return Parsed::Dead(format!(
                            "vector of dimension {}, but the model's is {}",
                            v.len(),
                            self.embedder.dim()
                        ))
                    }
                    Some((_, v)) => (record, Some(normalized(v))),
                    None => (record, None),
                },
                Err(e) => return Parsed::Dead(format!("invalid item vector record: {e}")),
            }
        } else {
            match serde_json::from_slice(&record.payload) {
                Ok(parsed) => (parsed, None),
                Err(e) => return Parsed::Dead(format!("invalid item record: {e}")),
            }
        };
        match parsed {
            ItemRecord::Upsert(item) => {
                if let Err(e) = item.validate() {
                    return Parsed::Dead(format!("invalid item: {e}"));
                }
                let text = item.embedding_text();
                let hash = text_hash(&text);
                Parsed::Upsert(Box::new(item), text, hash, vector)
            }
            ItemRecord::Delete { id } => match shelf_types::check_id("id", id.as_str()) {
                Ok(()) => Parsed::Delete(id),
                Err(e) => Parsed::Dead(format!("invalid item delete: {e}")),
            },
        }
    }

    /// Embeds `texts`; when the whole call fails, retries one by one so that one bad text
    /// fails only its own record (a dead letter). A failure that is not the text's fault
    /// (the model's or the worker's) fails the whole batch: nothing is committed, and the
    /// batch is applied again later.
    async fn embed(
        &mut self,
        texts: Vec<String>,
    ) -> Result<HashMap<String, Result<Vec<f32>, String>>, EngineError> {
        let mut out = HashMap::new();
        if texts.is_empty() {
            return Ok(out);
        }
        match self
            .embedder
            .embed_as(TextRole::Document, texts.clone())
            .await
        {
            Ok(vectors) => {
                for (text, v) in texts.into_iter().zip(vectors) {
                    out.insert(text, Ok(v.0));
                }
            }
            Err(batch_error) => {
                tracing::warn!(error = %batch_error, "batch embedding failed; embedding texts one by one");
                for text in texts {
                    let one = match self
                        .embedder
                        .embed_as(TextRole::Document, vec![text.clone()])
                        .await
                    {
                        Ok(mut v) => Ok(v.remove(0).0),
                        Err(e) if E::is_invalid_input(&e) => Err(e.to_string()),
                        Err(e) => return Err(EngineError::Embed(e.to_string())),
                    };
                    out.insert(text, one);
                }
            }
        }
        Ok(out)
    }
}

/// `v` scaled to unit length (the index compares by inner product); as it is when it has no
/// length to scale.
fn normalized(v: Vec<f32>) -> Vec<f32> {
    shelf_types::vector::unit_vector(&v).unwrap_or(v)
}

impl<E: TextEmbedder, I: VectorIndex> Job for ItemJob<E, I> {
    fn name(&self) -> &'static str {
        ITEM_JOB
    }

    async fn apply(&mut self, records: Vec<Record>) -> Result<Applied, EngineError> {
        self.retry_index_backlog()?;
        let Some(last) = records.last() else {
            return Ok(Applied::default());
        };
        let next_offset = last.offset + 1;
        let parsed: Vec<(u64, &[u8], Parsed)> = records
            .iter()
            .map(|r| (r.offset, &r.payload[..], self.parse(r)))
            .collect();

        // Which texts need the model: those whose hash differs from the stored vector's
        // (or that were touched earlier in this batch).
        let model_id = self.embedder.model_id().to_string();
        let mut touched = HashSet::new();
        let mut reuse: HashMap<String, StoredVector> = HashMap::new();
        let mut to_embed: Vec<String> = Vec::new();
        let mut seen_text = HashSet::new();
        for (_, _, p) in &parsed {
            match p {
                Parsed::Upsert(item, _, _, Some(_)) => {
                    touched.insert(item.id.as_str().to_string());
                }
                Parsed::Upsert(item, text, hash, None) => {
                    let id = item.id.as_str().to_string();
                    let stored = if touched.contains(&id) {
                        None
                    } else {
                        self.store.vector(&id)?
                    };
                    match stored {
                        Some(v) if v.text_hash == *hash && v.model_id == model_id => {
                            reuse.insert(id.clone(), v);
                        }
                        _ => {
                            if seen_text.insert(text.clone()) {
                                to_embed.push(text.clone());
                            }
                        }
                    }
                    touched.insert(id);
                }
                Parsed::Delete(id) => {
                    touched.insert(id.as_str().to_string());
                }
                Parsed::Dead(_) => {}
            }
        }
        self.embedded += to_embed.len() as u64;
        let vectors = self.embed(to_embed).await?;

        let mut batch = self.store.batch();
        let mut dead_total = self.store.dead_letter_count(ITEM_JOB)?;
        let mut dead = 0;
        let mut index_ops: Vec<(ItemId, IndexOp)> = Vec::new();
        for (offset, payload, p) in parsed {
            let reason = match p {
                Parsed::Upsert(item, text, hash, upstream) => {
                    let vector = match (upstream, reuse.remove(item.id.as_str())) {
                        (Some(v), _) => Ok(v),
                        (None, Some(v)) => {
                            self.reused += 1;
                            Ok(v.vector)
                        }
                        (None, None) => vectors
                            .get(&text)
                            .cloned()
                            .unwrap_or_else(|| Err("text was not embedded".into())),
                    };
                    match vector {
                        Ok(vector) => {
                            let stored = StoredVector {
                                model_id: model_id.clone(),
                                text_hash: hash,
                                vector,
                            };
                            batch.put_item(&item, &stored);
                            index_ops.push((item.id.clone(), Some((stored.vector, item))));
                            continue;
                        }
                        Err(e) => format!("embedding failed: {e}"),
                    }
                }
                Parsed::Delete(id) => {
                    batch.delete_item(id.as_str(), offset);
                    index_ops.push((id, None));
                    continue;
                }
                Parsed::Dead(reason) => reason,
            };
            dead += 1;
            dead_total += 1;
            let letter = DeadLetter {
                consumer: ITEM_JOB.into(),
                partition: last.partition,
                offset,
                reason,
                payload: String::from_utf8_lossy(payload).into_owned(),
            };
            batch.put_dead_letter(&letter, dead_total);
        }
        batch.put_partition_offset(ITEM_JOB, last.partition, next_offset);
        self.store.commit(batch)?;

        if self.index.is_some() || self.lexical.is_some() {
            for (id, op) in index_ops {
                if let Err(e) = self.apply_to_indexes(&id, op) {
                    // The store holds the item: retried from it before the next batch.
                    tracing::error!(item = %id, error = %e, "index update failed; will retry");
                    self.index_backlog.push(id);
                }
            }
        }
        Ok(Applied {
            records: records.len(),
            dead_letters: dead,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelf_types::{BoxFuture, Embedding};

    /// An embedder that must never be called (upstream vectors need no model).
    #[derive(Debug)]
    struct NoModel;

    impl TextEmbedder for NoModel {
        type Error = std::io::Error;
        fn model_id(&self) -> &str {
            "test-model"
        }
        fn dim(&self) -> usize {
            2
        }
        fn embed_as(
            &self,
            _: TextRole,
            _: Vec<String>,
        ) -> BoxFuture<'_, Result<Vec<Embedding>, Self::Error>> {
            panic!("upstream vectors must not be embedded again")
        }
    }

    /// The index type; the test passes none and reads the store.
    type NoIndex = shelf_index::HnswIndex;

    /// An embedder whose first `failures` calls fail as if the worker had died, and which
    /// refuses (as invalid input) any text containing `reject`.
    #[derive(Debug)]
    struct Flaky {
        failures: std::sync::atomic::AtomicUsize,
        calls: std::sync::atomic::AtomicUsize,
    }

    #[derive(Debug, thiserror::Error)]
    enum FlakyError {
        #[error("the embedding worker is gone")]
        WorkerGone,
        #[error("text refused")]
        Refused,
    }

    impl TextEmbedder for Flaky {
        type Error = FlakyError;
        fn model_id(&self) -> &str {
            "flaky"
        }
        fn dim(&self) -> usize {
            2
        }
        fn embed_as(
            &self,
            role: TextRole,
            texts: Vec<String>,
        ) -> BoxFuture<'_, Result<Vec<Embedding>, FlakyError>> {
            assert_eq!(role, TextRole::Document, "item texts are documents");
            use std::sync::atomic::Ordering;
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let result = if call < self.failures.load(Ordering::SeqCst) {
                Err(FlakyError::WorkerGone)
            } else if texts.iter().any(|t| t.contains("reject")) {
                Err(FlakyError::Refused)
            } else {
                Ok(texts
                    .iter()
                    .map(|t| Embedding(vec![t.len() as f32, 1.0]))
                    .collect())
            };
            Box::pin(async move { result })
        }
        fn is_invalid_input(error: &FlakyError) -> bool {
            matches!(error, FlakyError::Refused)
        }
    }

    /// A transient embedder failure (the worker gone for a few calls) neither drops the
    /// batch's items as dead letters nor stops the job: the batch is retried from the
    /// committed offset. A text the model refuses is still a dead letter.
    #[tokio::test]
    async fn a_transient_embedder_failure_loses_nothing_and_invalid_text_is_set_aside() {
        use shelf_stream::Sink;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store"), Default::default()).unwrap());
        let mut log = shelf_stream::Log::open(&dir.path().join("log"), Default::default()).unwrap();
        let payloads: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                let title = if i == 7 {
                    "reject me".to_string()
                } else {
                    format!("item {i}")
                };
                serde_json::to_vec(
                    &serde_json::json!({"op": "upsert", "id": format!("i{i}"), "title": title}),
                )
                .unwrap()
            })
            .collect();
        log.append(&payloads).unwrap();
        log.sync().unwrap();
        let mut reader = log.reader().unwrap();
        let embedder = Flaky {
            failures: 5.into(),
            calls: 0.into(),
        };
        let mut job = ItemJob::<_, NoIndex>::new(Arc::clone(&store), embedder, None).unwrap();
        let wake = tokio::sync::Notify::new();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let progress = crate::consumer::follow(
            &mut job,
            &mut reader,
            &store,
            8,
            &wake,
            stop,
            |_, progress, end| {
                if end.is_ok_and(|end| progress.offset >= end) {
                    let _ = stop_tx.send(true);
                }
            },
        )
        .await
        .unwrap();
        assert!(progress.failures >= 1, "{progress:?}");
        assert_eq!(progress.offset, 20);
        for i in (0..20).filter(|i| *i != 7) {
            assert!(store.item(&format!("i{i}")).unwrap().is_some(), "i{i} lost");
        }
        let letters = store.dead_letters(ITEM_JOB).unwrap();
        assert_eq!(letters.len(), 1, "{letters:?}");
        assert_eq!(letters[0].offset, 7);
        assert!(store.item("i7").unwrap().is_none());
    }

    /// An index whose first `failures` upserts fail.
    struct FlakyIndex {
        inner: shelf_index::HnswIndex,
        failures: std::sync::atomic::AtomicUsize,
    }

    impl VectorIndex for FlakyIndex {
        type Error = shelf_index::IndexError;
        fn dim(&self) -> usize {
            VectorIndex::dim(&self.inner)
        }
        fn len(&self) -> usize {
            VectorIndex::len(&self.inner)
        }
        fn upsert(&self, id: &ItemId, v: &[f32], a: ItemAttributes) -> Result<(), Self::Error> {
            use std::sync::atomic::Ordering;
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(shelf_index::IndexError::ZeroVector);
            }
            VectorIndex::upsert(&self.inner, id, v, a)
        }
        fn delete(&self, id: &ItemId) -> Result<bool, Self::Error> {
            VectorIndex::delete(&self.inner, id)
        }
        fn search(
            &self,
            query: &[f32],
            k: usize,
            ef: Option<usize>,
            filter: &shelf_types::SearchFilter,
        ) -> Result<Vec<shelf_types::ScoredItem>, Self::Error> {
            VectorIndex::search(&self.inner, query, k, ef, filter)
        }
        fn vectors(&self, ids: &[&ItemId]) -> Vec<Option<Vec<f32>>> {
            VectorIndex::vectors(&self.inner, ids)
        }
    }

    /// An index update that fails after its batch committed is not forgotten: the job is
    /// out of step (no snapshot may record that position) until the retry before the next
    /// batch puts the store's state into the index.
    #[tokio::test]
    async fn a_failed_index_update_is_retried_from_the_store_before_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store"), Default::default()).unwrap());
        let index = FlakyIndex {
            inner: shelf_index::HnswIndex::new(shelf_index::IndexConfig::new(2)).unwrap(),
            failures: 1.into(),
        };
        let embedder = Flaky {
            failures: 0.into(),
            calls: 0.into(),
        };
        let mut job = ItemJob::new(Arc::clone(&store), embedder, Some(index)).unwrap();
        let upsert = |o: u64, id: &str| {
            record(
                o,
                &format!(r#"{{"op":"upsert","id":"{id}","title":"t {id}"}}"#),
            )
        };
        job.apply(vec![upsert(0, "a")]).await.unwrap();
        assert!(
            store.item("a").unwrap().is_some(),
            "the store commits first"
        );
        assert!(!job.index_in_step(), "the failed update must be remembered");
        let indexed = |job: &ItemJob<Flaky, FlakyIndex>| job.index.as_ref().unwrap().len();
        assert_eq!(indexed(&job), 0);
        job.apply(vec![upsert(1, "b")]).await.unwrap();
        assert!(job.index_in_step());
        assert_eq!(indexed(&job), 2, "the retry put `a` in the index");
    }

    fn record(offset: u64, json: &str) -> Record {
        Record {
            partition: 3,
            offset,
            payload: json.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn upstream_vectors_are_stored_normalised_and_checked_against_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Default::default()).unwrap());
        let mut job =
            ItemJob::<NoModel, NoIndex>::with_upstream_vectors(Arc::clone(&store), NoModel, None)
                .unwrap();
        let applied = job
            .apply(vec![
                record(
                    7,
                    r#"{"op":"upsert","id":"a","title":"Sofa","model_id":"test-model","dimension":2,"vector":"[3,4]"}"#,
                ),
                record(
                    8,
                    r#"{"op":"upsert","id":"b","title":"Bed","model_id":"other-model","dimension":2,"vector":"[1,0]"}"#,
                ),
                record(
                    9,
                    r#"{"op":"upsert","id":"c","title":"Lamp","model_id":"test-model","dimension":3,"vector":"[1,0,0]"}"#,
                ),
            ])
            .await
            .unwrap();
        assert_eq!(applied.dead_letters, 2);
        let stored = store.vector("a").unwrap().unwrap();
        assert_eq!(stored.vector, vec![0.6, 0.8]);
        assert_eq!(stored.model_id, "test-model");
        assert!(store.vector("b").unwrap().is_none());
        let reasons: Vec<String> = store
            .dead_letters(ITEM_JOB)
            .unwrap()
            .into_iter()
            .map(|d| d.reason)
            .collect();
        assert!(reasons[0].contains("other-model"), "{reasons:?}");
        assert!(reasons[1].contains("dimension 3"), "{reasons:?}");
        // The offset is committed for the records' partition only.
        assert_eq!(store.partition_offset(ITEM_JOB, 3).unwrap(), 10);
        assert_eq!(store.offset(ITEM_JOB).unwrap(), 0);
    }
}
