//! The item stats job: windowed item activity from the Arroyo item stats pipeline
//! (`shelf-item-stats`) -> the store, keeping each item's newest window.

use crate::consumer::{Applied, Job};
use crate::EngineError;
use shelf_store::{DeadLetter, ItemWindow, Store};
use shelf_stream::Record;
use std::collections::HashMap;
use std::sync::Arc;

/// Consumer name of the item stats job.
pub const STATS_JOB: &str = "stats-job";

/// Applies `shelf-item-stats` records.
#[derive(Debug)]
pub struct StatsJob {
    store: Arc<Store>,
}

impl StatsJob {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

impl Job for StatsJob {
    fn name(&self) -> &'static str {
        STATS_JOB
    }

    async fn apply(&mut self, records: Vec<Record>) -> Result<Applied, EngineError> {
        let Some(last) = records.last() else {
            return Ok(Applied::default());
        };
        let (partition, next_offset) = (last.partition, last.offset + 1);
        let mut batch = self.store.batch();
        let mut dead_total = self.store.dead_letter_count(STATS_JOB)?;
        let mut dead = 0;
        // Windows slide, so several arrive per item: keep the newest (by window end).
        let mut newest: HashMap<String, ItemWindow> = HashMap::new();
        for record in &records {
            match ItemWindow::parse(&record.payload) {
                Ok(window) => {
                    let current = match newest.get(&window.item_id) {
                        Some(w) => Some(w.window_end_ms),
                        None => self
                            .store
                            .item_window(&window.item_id)?
                            .map(|w| w.window_end_ms),
                    };
                    if current.is_none_or(|end| window.window_end_ms >= end) {
                        newest.insert(window.item_id.clone(), window);
                    }
                }
                Err(reason) => {
                    dead += 1;
                    dead_total += 1;
                    let letter = DeadLetter {
                        consumer: STATS_JOB.into(),
                        partition: record.partition,
                        offset: record.offset,
                        reason: format!("invalid item stats record: {reason}"),
                        payload: String::from_utf8_lossy(&record.payload).into_owned(),
                    };
                    batch.put_dead_letter(&letter, dead_total);
                }
            }
        }
        for window in newest.values() {
            batch.put_item_window(window);
        }
        batch.put_partition_offset(STATS_JOB, partition, next_offset);
        self.store.commit(batch)?;
        Ok(Applied {
            records: records.len(),
            dead_letters: dead,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, item: &str, end_ms: i64, views: u32) -> Record {
        Record {
            partition: 1,
            offset,
            payload: format!(
                r#"{{"item_id":"{item}","window":{{"start":{},"end":{end_ms}}},"views":{views}}}"#,
                end_ms - 3_600_000
            )
            .into_bytes(),
        }
    }

    #[tokio::test]
    async fn keeps_the_newest_window_per_item_whatever_the_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Default::default()).unwrap());
        let mut job = StatsJob::new(Arc::clone(&store));
        let mut bad = record(3, "x", 0, 0);
        bad.payload = b"{\"item_id\":\"x\"}".to_vec();
        let applied = job
            .apply(vec![
                record(0, "a", 7_200_000, 2),
                record(1, "a", 10_800_000, 5),
                record(2, "b", 7_200_000, 1),
                bad,
            ])
            .await
            .unwrap();
        assert_eq!(applied.dead_letters, 1);
        assert_eq!(store.item_window("a").unwrap().unwrap().views, 5.0);
        // An older window arriving later does not replace the newer one.
        job.apply(vec![record(4, "a", 7_200_000, 9)]).await.unwrap();
        assert_eq!(store.item_window("a").unwrap().unwrap().views, 5.0);
        assert_eq!(store.item_window("b").unwrap().unwrap().views, 1.0);
        assert_eq!(store.partition_offset(STATS_JOB, 1).unwrap(), 5);
    }
}
