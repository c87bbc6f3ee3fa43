//! Index recovery, vector and lexical: the snapshot (the lexical index's last commit), a
//! rebuild from the store, catching up from the log, and repair after a failed batch.

use super::*;

impl Node {
    pub(super) fn snapshot_dir(&self) -> PathBuf {
        self.config.data_dir.join("index")
    }

    pub(super) fn lexical_dir(&self) -> PathBuf {
        self.config.data_dir.join("lexical")
    }

    /// The lexical index as of the item job's committed offset: its last commit, brought
    /// forward from the log (embedded) or, when that cannot be done, rebuilt from the store.
    pub(super) fn load_lexical(&self) -> anyhow::Result<LexicalIndex> {
        let committed = self.item_position()?;
        let dir = self.lexical_dir();
        match LexicalIndex::open(&dir) {
            Ok(index) => match index.position() {
                Some(position) if position == committed => return Ok(index),
                Some(position) if position < committed && self.is_embedded() => {
                    match self
                        .catch_up_lexical(&index, position, committed)
                        .and_then(|replayed| Ok((replayed, index.commit(committed)?)))
                    {
                        Ok((replayed, ())) => {
                            tracing::info!(
                                position,
                                replayed,
                                "lexical index caught up from the log"
                            );
                            return Ok(index);
                        }
                        Err(e) => tracing::warn!(
                            error = %e,
                            "lexical index could not catch up from the log; rebuilding from the store"
                        ),
                    }
                }
                position if index.is_empty() && position.is_none() && committed == 0 => {
                    return Ok(index)
                }
                position => tracing::warn!(
                    ?position,
                    committed,
                    "lexical index is not at the store's position; rebuilding from the store"
                ),
            },
            Err(e) => {
                tracing::warn!(error = %e, "lexical index unusable; rebuilding from the store")
            }
        }
        let index = LexicalIndex::create(&dir)?;
        self.rebuild_lexical(&index, committed)?;
        Ok(index)
    }

    /// Brings the lexical index from its last commit to `to` (the store's committed item
    /// position): replayed from the embedded log, else (on Fluvio, or when the replay fails)
    /// rebuilt from the store. After a failed write or commit, and after a failed batch.
    pub(super) fn repair_lexical(&self, lexical: &LexicalIndex, to: u64) -> anyhow::Result<()> {
        if let Some(from) = lexical.position().filter(|from| *from <= to) {
            if self.is_embedded() {
                let replayed = self
                    .catch_up_lexical(lexical, from, to)
                    .and_then(|replayed| Ok((replayed, lexical.commit(to)?)));
                match replayed {
                    Ok((replayed, ())) => {
                        tracing::info!(from, to, replayed, "lexical index repaired from the log");
                        return Ok(());
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "lexical index could not be repaired from the log; rebuilding from the store"
                    ),
                }
            }
        }
        self.rebuild_lexical(lexical, to)
    }

    /// Every stored item into `index` (emptied first), committed at `position`.
    fn rebuild_lexical(&self, index: &LexicalIndex, position: u64) -> anyhow::Result<()> {
        let started = Instant::now();
        index.clear()?;
        let mut items = 0u64;
        let mut failed = None;
        self.store.for_each_item_vector(|item, _| {
            if failed.is_none() {
                match index.upsert(&item) {
                    Ok(()) => items += 1,
                    Err(e) => failed = Some(e),
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        index.commit(position)?;
        tracing::info!(
            items,
            seconds = started.elapsed().as_secs_f64(),
            "lexical index built from the store"
        );
        Ok(())
    }

    /// Brings `index` from `from` to `to` on the item log: every item touched in between
    /// gets the store's current state (uncommitted: the caller commits).
    fn catch_up_lexical(&self, index: &LexicalIndex, from: u64, to: u64) -> anyhow::Result<u64> {
        let touched = self.touched_items(from, to)?;
        for id in &touched {
            match self.store.item(id.as_str())? {
                Some(item) => index.upsert(&item)?,
                None => index.delete(id),
            }
        }
        Ok(touched.len() as u64)
    }

    pub(super) fn index_config(&self) -> IndexConfig {
        IndexConfig {
            backend: self.config.index_backend,
            ..IndexConfig::new(self.dim)
        }
    }

    /// The index as of the item job's committed offset.
    pub(super) fn load_index(&self) -> anyhow::Result<HnswIndex> {
        let committed = self.item_position()?;
        let dir = self.snapshot_dir();
        if dir.exists() {
            match HnswIndex::restore(&dir, self.index_config()) {
                // From Fluvio the index is restored only when nothing changed since.
                Ok((index, info))
                    if info.position == committed
                        || (info.position < committed && self.is_embedded()) =>
                {
                    let replayed = self.catch_up_index(&index, info.position, committed)?;
                    tracing::info!(
                        position = info.position,
                        replayed,
                        "index restored from its snapshot"
                    );
                    self.snapshot_position
                        .store(info.position, Ordering::Release);
                    return Ok(index);
                }
                Ok((_, info)) => tracing::warn!(
                    snapshot = info.position,
                    committed,
                    "index snapshot is ahead of the store; rebuilding from the store"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "index snapshot unusable; rebuilding from the store")
                }
            }
        }
        let index = self.build_index()?;
        self.snapshot_position.store(committed, Ordering::Release);
        Ok(index)
    }

    /// A new index of every vector in the store.
    pub(super) fn build_index(&self) -> anyhow::Result<HnswIndex> {
        let mut rows = Vec::new();
        self.store.for_each_item_vector(|item, vector| {
            let attrs = ItemAttributes::of(&item);
            rows.push((item.id, vector.vector, attrs));
        })?;
        tracing::info!(items = rows.len(), "building the index from the store");
        Ok(HnswIndex::build(
            self.index_config(),
            rows.iter().map(|(id, v, a)| (id, &v[..], a.clone())),
        )?)
    }

    /// Brings a restored index from `from` to `to` on the item log: every item touched in
    /// between gets the store's current state (the store is already at `to`).
    pub(super) fn catch_up_index(
        &self,
        index: &HnswIndex,
        from: u64,
        to: u64,
    ) -> anyhow::Result<u64> {
        let touched = self.touched_items(from, to)?;
        for id in &touched {
            match (
                self.store.item(id.as_str())?,
                self.store.vector(id.as_str())?,
            ) {
                (Some(item), Some(vector)) => {
                    index.upsert(id, &vector.vector, ItemAttributes::of(&item))?;
                }
                _ => {
                    index.delete(id);
                }
            }
        }
        Ok(touched.len() as u64)
    }

    /// The ids of the item records in `[from, to)` of the embedded item log, each once, in
    /// the order first seen (dead letters, which never reached the store, left out).
    fn touched_items(&self, from: u64, to: u64) -> anyhow::Result<Vec<ItemId>> {
        let mut touched = Vec::new();
        if from >= to {
            return Ok(touched);
        }
        let mut seen = HashSet::new();
        let mut reader = LogReader::open(
            &streams::log_dir(&self.config.data_dir, "shelf-items"),
            streams::max_record_bytes(),
        )?;
        reader.seek(0, from)?;
        let mut offset = from;
        while offset < to {
            let records = reader.poll(1024, Duration::ZERO)?;
            if records.is_empty() {
                break;
            }
            for record in records {
                offset = record.offset + 1;
                if record.offset >= to {
                    break;
                }
                let Ok(parsed) = serde_json::from_slice::<ItemRecord>(&record.payload) else {
                    continue; // a dead letter: it never reached the store
                };
                let id = parsed.id();
                if seen.insert(id.clone()) {
                    touched.push(id.clone());
                }
            }
        }
        Ok(touched)
    }

    /// After the item job failed or panicked, its last batch may be committed in the
    /// store but not (wholly) applied to the index. On the embedded log the items touched
    /// since the last snapshot are replayed from the store into the index. On Fluvio (no
    /// replayable log here) every stored vector is written to the index again.
    pub(super) fn repair_index_after_failure(
        &self,
        index: &HnswIndex,
        lexical: &LexicalIndex,
    ) -> anyhow::Result<()> {
        let committed = self.item_position()?;
        self.repair_lexical(lexical, committed)?;
        if self.is_embedded() {
            let from = self.snapshot_position.load(Ordering::Acquire);
            let replayed = self.catch_up_index(index, from, committed)?;
            tracing::info!(
                from,
                to = committed,
                replayed,
                "index repaired from the log"
            );
        } else {
            let mut rewritten = 0u64;
            self.store.for_each_item_vector(|item, vector| {
                let attrs = ItemAttributes::of(&item);
                if index.upsert(&item.id, &vector.vector, attrs).is_ok() {
                    rewritten += 1;
                }
            })?;
            tracing::info!(rewritten, "index repaired from the store");
        }
        Ok(())
    }

    pub(super) fn snapshot(&self, index: &HnswIndex, position: u64) {
        let started = Instant::now();
        match index.snapshot(&self.snapshot_dir(), position) {
            Ok(info) => {
                self.snapshot_position.store(position, Ordering::Release);
                tracing::info!(
                    position,
                    live = info.live,
                    seconds = started.elapsed().as_secs_f64(),
                    "index snapshot written"
                )
            }
            Err(e) => tracing::error!(error = %e, "index snapshot failed"),
        }
    }
}
