//! The lexical index: BM25 over each item's text fields with tantivy, exact id lookups,
//! typo-tolerant words and filters, kept by the item job beside the vector index.
//!
//! It is derived state, like the vector index: every commit records the item log position
//! it holds (tantivy's commit payload), so a restart replays only what came after.

mod faults;
mod query;
mod schema;
mod words;

pub use query::{FieldBoosts, MAX_QUERY_WORDS};
pub use schema::TextField;
pub use words::CjkSplit;

use faults::FaultableDirectory;
use query::{filter_clauses, text_query, words};
use schema::{analyzer, document, schema, Fields, ANALYZER, SCHEMA_VERSION};
use shelf_types::{ItemId, SearchFilter};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::{MmapDirectory, RamDirectory};
use tantivy::index::SegmentId;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{
    Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, TantivyDocument, Term,
};

/// Memory the writer buffers before it writes a segment (tantivy's minimum is 15 MB).
const WRITER_MEMORY_BYTES: usize = 32 << 20;

/// What can go wrong with the lexical index.
#[derive(Debug, thiserror::Error)]
pub enum LexicalError {
    #[error("lexical index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("lexical index at {path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
    #[error("lexical index at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The hits of one lexical search.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LexicalHits {
    /// Best first, with their scores (BM25 × field boosts, summed over words and fields).
    pub hits: Vec<(ItemId, f32)>,
    /// How many items match at least one word (and the filter).
    pub matched: usize,
    /// The item whose id is the whole query text, when it passes the filter.
    pub exact_id: Option<ItemId>,
    /// Query words no item holds, looked up again with typos allowed.
    pub corrected: Vec<String>,
}

/// A tantivy index of item text over a directory (or in memory).
pub struct LexicalIndex {
    fields: Fields,
    /// `None` when opened read-only.
    writer: Option<Mutex<Writer>>,
    reader: IndexReader,
    /// The last commit's position + 1 once searches see it (0: none), read without the
    /// writer's lock (readiness and retention ask for it while a commit may be syncing).
    searchable: std::sync::atomic::AtomicU64,
    boosts: std::sync::RwLock<FieldBoosts>,
    dir: Option<PathBuf>,
    /// How Chinese, Japanese and Korean text is split (bigrams but in comparisons).
    cjk: CjkSplit,
    /// How many of the next commits fail (fault injection, [`LexicalIndex::fail_next_commits`]).
    failing_commits: Arc<AtomicU32>,
    /// Each live segment's item ids by document. The id column answers one id by decoding
    /// its dictionary block from the start (a few hundred terms for each hit of each
    /// search); a segment never changes, so its ids are decoded once, in one pass, and
    /// kept while a searcher still holds the segment.
    segment_ids: Mutex<HashMap<SegmentId, SegmentIds>>,
}

/// One segment's item ids, by document (`None`: a document without one).
type SegmentIds = Arc<[Option<ItemId>]>;

struct Writer {
    inner: IndexWriter<TantivyDocument>,
    /// Documents changed since the last commit.
    dirty: bool,
    /// A write failed since the last commit: the next commit rolls back instead (what was
    /// buffered may be incomplete) and fails, so the caller replays from the last commit.
    failed: bool,
    /// The position of the last commit.
    position: Option<u64>,
}

impl std::fmt::Debug for LexicalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LexicalIndex")
            .field("dir", &self.dir)
            .field("boosts", &self.boosts)
            .finish_non_exhaustive()
    }
}

impl LexicalIndex {
    /// Opens the index in `dir` for writing, creating it when the directory holds none. An
    /// index of another schema version, or one tantivy cannot open, is an error
    /// ([`LexicalIndex::create`] starts over).
    pub fn open(dir: &Path) -> Result<Self, LexicalError> {
        if !dir.join("meta.json").exists() {
            return Self::create(dir);
        }
        let directory = FaultableDirectory::new(mmap(dir)?);
        let failing_commits = directory.failing_commits();
        let index = Index::open(directory).map_err(|e| unusable(dir, e.to_string()))?;
        let position = read_payload(dir, &index)?;
        let index = Self::with_index(index, Some(dir.to_path_buf()), true, CjkSplit::default())?
            .with_faults(failing_commits);
        index.writer_mut(|w| w.position = position);
        index.set_searchable(position);
        Ok(index)
    }

    /// Opens the index in `dir` for searching and listing only (beside a running writer).
    pub fn open_read_only(dir: &Path) -> Result<Self, LexicalError> {
        let index = Index::open_in_dir(dir).map_err(|e| unusable(dir, e.to_string()))?;
        read_payload(dir, &index)?;
        Self::with_index(index, Some(dir.to_path_buf()), false, CjkSplit::default())
    }

    /// An empty index in `dir`, replacing whatever the directory held.
    pub fn create(dir: &Path) -> Result<Self, LexicalError> {
        let io = |source| LexicalError::Io {
            path: dir.to_path_buf(),
            source,
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io)?;
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let (schema, _) = schema();
        let directory = FaultableDirectory::new(mmap(dir)?);
        let failing_commits = directory.failing_commits();
        let index = Index::create(directory, schema, IndexSettings::default())?;
        Ok(
            Self::with_index(index, Some(dir.to_path_buf()), true, CjkSplit::default())?
                .with_faults(failing_commits),
        )
    }

    /// An empty index held in memory (evaluation, tests).
    pub fn in_memory() -> Self {
        Self::in_memory_with(CjkSplit::default())
    }

    /// An empty in-memory index that splits CJK text by `cjk` (to compare the splits).
    pub fn in_memory_with(cjk: CjkSplit) -> Self {
        let (schema, _) = schema();
        let directory = FaultableDirectory::new(RamDirectory::create());
        let failing_commits = directory.failing_commits();
        let index = Index::create(directory, schema, IndexSettings::default())
            .expect("an in-memory index is created");
        Self::with_index(index, None, true, cjk)
            .expect("an in-memory index opens")
            .with_faults(failing_commits)
    }

    fn with_index(
        index: Index,
        dir: Option<PathBuf>,
        writable: bool,
        cjk: CjkSplit,
    ) -> Result<Self, LexicalError> {
        index.tokenizers().register(ANALYZER, analyzer(cjk));
        let (_, fields) = schema();
        let writer = if writable {
            Some(Mutex::new(Writer {
                inner: index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?,
                dirty: false,
                failed: false,
                position: None,
            }))
        } else {
            None
        };
        let reader = index
            .reader_builder()
            .reload_policy(if writable {
                ReloadPolicy::Manual
            } else {
                ReloadPolicy::OnCommitWithDelay
            })
            .try_into()?;
        Ok(Self {
            fields,
            writer,
            reader,
            searchable: std::sync::atomic::AtomicU64::new(0),
            boosts: std::sync::RwLock::new(FieldBoosts::default()),
            dir,
            cjk,
            failing_commits: Arc::default(),
            segment_ids: Mutex::default(),
        })
    }

    fn with_faults(mut self, failing_commits: Arc<AtomicU32>) -> Self {
        self.failing_commits = failing_commits;
        self
    }

    /// Makes the next `n` commits fail as a failing disk would: their last write (tantivy's
    /// `meta.json`) returns an I/O error. Fault-injection tests use it to exercise the
    /// rollback and the caller's repair.
    #[doc(hidden)]
    pub fn fail_next_commits(&self, n: u32) {
        self.failing_commits.store(n, Ordering::Release);
    }

    /// Searches weigh words by these boosts from now on.
    pub fn set_boosts(&self, boosts: FieldBoosts) {
        *self.boosts.write().unwrap_or_else(|e| e.into_inner()) = boosts;
    }

    pub fn boosts(&self) -> FieldBoosts {
        self.boosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn writer_mut<T>(&self, f: impl FnOnce(&mut Writer) -> T) -> T {
        let writer = self
            .writer
            .as_ref()
            .expect("a write to a lexical index opened read-only");
        f(&mut writer.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The item log position of the last commit, once searches see it (`None` before the
    /// first).
    pub fn position(&self) -> Option<u64> {
        match self.searchable.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            n => Some(n - 1),
        }
    }

    fn set_searchable(&self, position: Option<u64>) {
        let n = position.map_or(0, |p| p + 1);
        self.searchable
            .store(n, std::sync::atomic::Ordering::Release);
    }

    /// Replaces the document of `item.id` (searchable after the next commit).
    pub fn upsert(&self, item: &shelf_types::Item) -> Result<(), LexicalError> {
        let doc = document(&self.fields, item);
        let id = Term::from_field_text(self.fields.id, item.id.as_str());
        self.writer_mut(|w| {
            w.inner.delete_term(id);
            w.dirty = true;
            if let Err(e) = w.inner.add_document(doc) {
                w.failed = true;
                return Err(e.into());
            }
            Ok(())
        })
    }

    /// Removes the document of `id` (at the next commit).
    pub fn delete(&self, id: &ItemId) {
        let id = Term::from_field_text(self.fields.id, id.as_str());
        self.writer_mut(|w| {
            w.inner.delete_term(id);
            w.dirty = true;
        })
    }

    /// Removes every document (at the next commit): the start of a rebuild. Changes not
    /// yet committed are dropped first (`delete_all_documents` alone would keep documents
    /// still buffered in the indexing thread).
    pub fn clear(&self) -> Result<(), LexicalError> {
        self.writer_mut(|w| {
            w.inner.rollback()?;
            w.failed = false;
            w.inner.delete_all_documents()?;
            w.dirty = true;
            Ok(())
        })
    }

    /// Makes every change so far durable and searchable, recording `position` with them
    /// ([`LexicalIndex::position`] says so only once searches see them). Does nothing when
    /// neither the documents nor the position changed. After a failed write, or when the
    /// commit itself fails, it rolls back to the last commit and fails: the caller must
    /// apply what came after that commit's position again.
    pub fn commit(&self, position: u64) -> Result<(), LexicalError> {
        self.writer_mut(|w| {
            if !w.dirty && !w.failed && w.position == Some(position) {
                return Ok(());
            }
            let result = if w.failed {
                Err(LexicalError::Unusable {
                    path: self.dir.clone().unwrap_or_default(),
                    reason: "a write failed since the last commit".into(),
                })
            } else {
                w.inner
                    .prepare_commit()
                    .and_then(|mut prepared| {
                        prepared.set_payload(&payload(position));
                        prepared.commit()
                    })
                    .map_err(LexicalError::from)
            };
            if let Err(e) = result {
                // Back to the last commit, with a working indexing thread.
                w.inner.rollback()?;
                w.failed = false;
                w.dirty = false;
                return Err(e);
            }
            w.dirty = false;
            w.position = Some(position);
            self.reader.reload()?;
            self.set_searchable(Some(position));
            Ok(())
        })
    }

    /// Documents in the last committed state.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every committed document as (id, digest of what was indexed), sorted by id: two
    /// indexes hold the same documents exactly when these lists are equal.
    pub fn documents(&self) -> Result<Vec<(String, u64)>, LexicalError> {
        let searcher = self.reader.searcher();
        let mut out = Vec::new();
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let ids = self.segment_ids(&searcher, ord as tantivy::SegmentOrdinal)?;
            let digests = segment.fast_fields().u64("digest")?;
            for doc in segment.doc_ids_alive() {
                if let Some(Some(id)) = ids.get(doc as usize) {
                    out.push((id.0.clone(), digests.first(doc).unwrap_or(0)));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Bytes the index's files take on disk (0 in memory).
    pub fn size_on_disk(&self) -> u64 {
        let Some(dir) = &self.dir else { return 0 };
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The `limit` best items for `text` that pass `filter`. Any text is a valid query:
    /// text without a word (punctuation, emoji) matches nothing.
    pub fn search(
        &self,
        text: &str,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<LexicalHits, LexicalError> {
        let searcher = self.reader.searcher();
        let mut analyzer = analyzer(self.cjk);
        let words = words(&mut analyzer, text);
        let filters = filter_clauses(&self.fields, filter);
        let mut out = LexicalHits::default();

        let raw = text.trim();
        if !raw.is_empty() && raw.len() <= shelf_types::MAX_ID_BYTES {
            let mut clauses = filter_clauses(&self.fields, filter);
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.id, raw),
                    IndexRecordOption::Basic,
                )),
            ));
            let found = searcher.search(&BooleanQuery::new(clauses), &Count)?;
            if found > 0 {
                out.exact_id = Some(ItemId::from(raw));
            }
        }
        if words.is_empty() || limit == 0 {
            return Ok(out);
        }
        let boosts = self.boosts();
        let (text_query, corrected) = text_query(&searcher, &self.fields, &boosts, &words)?;
        out.corrected = corrected;
        let mut clauses = filters;
        clauses.push((Occur::Must, text_query));
        let query: Box<dyn Query> = Box::new(BooleanQuery::new(clauses));
        let (top, matched) = searcher.search(
            &query,
            &(TopDocs::with_limit(limit).order_by_score(), Count),
        )?;
        out.matched = matched;
        out.hits = self.ids(&searcher, top)?;
        Ok(out)
    }

    /// The ids of `top`'s documents, in order.
    fn ids(
        &self,
        searcher: &tantivy::Searcher,
        top: Vec<(f32, tantivy::DocAddress)>,
    ) -> Result<Vec<(ItemId, f32)>, LexicalError> {
        let mut segments: Vec<Option<SegmentIds>> = vec![None; searcher.segment_readers().len()];
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let segment = address.segment_ord as usize;
            if segments[segment].is_none() {
                segments[segment] = Some(self.segment_ids(searcher, address.segment_ord)?);
            }
            let ids = segments[segment].as_ref().expect("set above");
            if let Some(Some(id)) = ids.get(address.doc_id as usize) {
                out.push((id.clone(), score));
            }
        }
        Ok(out)
    }

    /// The item ids of segment `ord` of `searcher`, by document: decoded on the segment's
    /// first search, then shared. Segments no searcher holds any more are forgotten.
    fn segment_ids(
        &self,
        searcher: &tantivy::Searcher,
        ord: tantivy::SegmentOrdinal,
    ) -> Result<SegmentIds, LexicalError> {
        let reader = searcher.segment_reader(ord);
        let segment = reader.segment_id();
        let cached = |map: &HashMap<SegmentId, SegmentIds>| map.get(&segment).cloned();
        if let Some(ids) = cached(&self.segment_ids.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(ids);
        }
        let mut by_doc: Vec<Option<ItemId>> = vec![None; reader.max_doc() as usize];
        if let Some(column) = reader.fast_fields().str("id")? {
            // The dictionary in one pass: term `i` is ordinal `i`.
            let mut terms: Vec<ItemId> = Vec::with_capacity(column.num_terms());
            let mut stream = column
                .dictionary()
                .stream()
                .map_err(|e| LexicalError::Tantivy(e.into()))?;
            while stream.advance() {
                terms.push(ItemId::from(String::from_utf8_lossy(stream.key()).as_ref()));
            }
            for (doc, id) in by_doc.iter_mut().enumerate() {
                *id = (column.term_ords(doc as u32).next())
                    .and_then(|ord| terms.get(ord as usize).cloned());
            }
        }
        let ids: SegmentIds = by_doc.into();
        let live: Vec<SegmentId> = (searcher.segment_readers().iter())
            .map(|r| r.segment_id())
            .collect();
        let mut map = self.segment_ids.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what no current searcher holds (a merge or a deletion replaced it).
        if map.len() >= live.len() {
            map.retain(|id, _| live.contains(id));
        }
        map.insert(segment, Arc::clone(&ids));
        Ok(ids)
    }
}

/// The words the index makes of `text` (split, lowercased, folded, stemmed), in order: what
/// a query word must equal to match.
pub fn analyse(text: &str) -> Vec<String> {
    let mut analyzer = analyzer(CjkSplit::default());
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while let Some(token) = stream.next() {
        out.push(token.text.clone());
    }
    out
}

/// The directory at `dir` (existing) as tantivy's memory-mapped directory.
fn mmap(dir: &Path) -> Result<MmapDirectory, LexicalError> {
    MmapDirectory::open(dir).map_err(|e| unusable(dir, e.to_string()))
}

fn unusable(dir: &Path, reason: String) -> LexicalError {
    LexicalError::Unusable {
        path: dir.to_path_buf(),
        reason,
    }
}

fn payload(position: u64) -> String {
    serde_json::json!({"schema": SCHEMA_VERSION, "position": position}).to_string()
}

/// The position of the index's last commit; an index of another schema is unusable.
fn read_payload(dir: &Path, index: &Index) -> Result<Option<u64>, LexicalError> {
    let metas = index.load_metas()?;
    let Some(payload) = metas.payload else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_str(&payload)
        .map_err(|e| unusable(dir, format!("commit payload `{payload}`: {e}")))?;
    let schema = value.get("schema").and_then(|v| v.as_u64());
    if schema != Some(u64::from(SCHEMA_VERSION)) {
        return Err(unusable(
            dir,
            format!("schema {schema:?}, this build writes {SCHEMA_VERSION}"),
        ));
    }
    Ok(value.get("position").and_then(|v| v.as_u64()))
}
