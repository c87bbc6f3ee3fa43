//! The values the node reports at scrape time (`/metrics`).

use super::*;

impl Node {
    /// Values read at scrape time: readiness, the index's size and search counters, the
    /// query cache, the live model, lag and dead letters. It reads RocksDB and the log
    /// directories: call it off the async runtime. Nothing here waits for a log append.
    pub fn readings(&self) -> Vec<Reading> {
        let mut out = vec![Reading::gauge(
            "shelf_ready",
            "1 once the index is loaded and searches are answered.",
            f64::from(u8::from(self.is_ready())),
        )];
        if let Some(r) = self.retriever() {
            let stats = r.index().stats();
            let (hits, misses) = r.cache_counts();
            let lookups = hits + misses;
            if let Some(lexical) = r.lexical() {
                out.extend([
                    Reading::gauge(
                        "shelf_lexical_documents",
                        "Items searchable by their words (the lexical index's last commit).",
                        lexical.len() as f64,
                    ),
                    Reading::gauge(
                        "shelf_lexical_disk_bytes",
                        "Bytes of the lexical index's files on disk.",
                        lexical.size_on_disk() as f64,
                    ),
                ]);
            }
            out.extend([
                Reading::gauge(
                    "shelf_index_items",
                    "Items searchable in the vector index.",
                    stats.live as f64,
                ),
                Reading::gauge(
                    "shelf_index_graph_points",
                    "Points in the HNSW graph, live and tombstoned.",
                    stats.graph_points as f64,
                ),
                Reading::gauge(
                    "shelf_index_tombstones",
                    "Deleted graph nodes still linked (reused by later inserts, or cleared by a rebuild).",
                    stats.tombstones as f64,
                ),
                Reading::gauge(
                    "shelf_index_memory_bytes",
                    "Bytes held by the vector index's graph (vectors, links, per-node state).",
                    stats.memory_bytes as f64,
                ),
                Reading::counter(
                    "shelf_index_rebuilds_total",
                    "Background graph rebuilds completed.",
                    stats.rebuilds as f64,
                ),
                Reading::counter(
                    "shelf_index_graph_searches_total",
                    "Index searches answered by walking the graph.",
                    stats.graph_searches as f64,
                ),
                Reading::counter(
                    "shelf_index_exact_searches_total",
                    "Index searches answered by an exact scan of a selective filter's matches.",
                    stats.exact_searches as f64,
                ),
                Reading::counter(
                    "shelf_index_exact_fallbacks_total",
                    "Graph searches that found fewer than k matches and finished with an exact scan.",
                    stats.exact_fallbacks as f64,
                ),
                Reading::counter(
                    "shelf_query_cache_hits_total",
                    "Query embeddings served from the cache.",
                    hits as f64,
                ),
                Reading::counter(
                    "shelf_query_cache_misses_total",
                    "Query embeddings computed.",
                    misses as f64,
                ),
                Reading::gauge(
                    "shelf_query_cache_hit_ratio",
                    "Share of query embeddings served from the cache since the start (0 before the first query).",
                    if lookups == 0 { 0.0 } else { hits as f64 / lookups as f64 },
                ),
            ]);
        }
        let live = self.live_report();
        out.extend([
            Reading::gauge(
                "shelf_model_learned",
                "1 when a trained model ranks searches, 0 while the hand-set prior does.",
                f64::from(u8::from(live.is_some())),
            ),
            Reading::gauge(
                "shelf_model_validation_auc",
                "Validation AUC of the live trained model (0 while the prior ranks).",
                live.as_ref().map_or(0.0, |r| r.validation_auc),
            ),
            Reading::gauge(
                "shelf_model_position_matched_auc",
                "Validation AUC of the live trained model over pairs shown at the same position (0 while the prior ranks).",
                live.as_ref().map_or(0.0, |r| r.validation_position_matched_auc),
            ),
        ]);
        let Transport::Embedded { items, events } = &self.transport else {
            return out; // Fluvio's lag is read from the cluster (`fluvio partition list`).
        };
        let items_at = self.store.offset(ITEM_JOB).unwrap_or(0);
        let events_at = self.store.offset(EVENT_JOB).unwrap_or(0);
        let log_bytes: u64 = ["shelf-items", "shelf-events"]
            .iter()
            .filter_map(|t| std::fs::read_dir(streams::log_dir(&self.config.data_dir, t)).ok())
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        out.extend([
            Reading::gauge(
                "shelf_log_bytes",
                "Bytes of the embedded item and event logs on disk (bounded by the log retention).",
                log_bytes as f64,
            ),
            Reading::gauge(
                "shelf_ingest_lag_items",
                "Item records in the log not yet applied.",
                items.next_offset().saturating_sub(items_at) as f64,
            ),
            Reading::gauge(
                "shelf_ingest_lag_events",
                "Events (and impressions) in the log not yet applied.",
                events.next_offset().saturating_sub(events_at) as f64,
            ),
            Reading::counter(
                "shelf_dead_letters_items_total",
                "Item records rejected by the item job.",
                self.store.dead_letter_count(ITEM_JOB).unwrap_or(0) as f64,
            ),
            Reading::counter(
                "shelf_dead_letters_events_total",
                "Events rejected by the event job.",
                self.store.dead_letter_count(EVENT_JOB).unwrap_or(0) as f64,
            ),
        ]);
        out
    }
}
