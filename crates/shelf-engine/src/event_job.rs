//! The event job: user events and served impressions -> profiles, item stats, co-visitations,
//! trending lists and the impression log (with the offset, one write).

use crate::consumer::{Applied, Job};
use crate::EngineError;
use shelf_store::{
    covisit_pairs, BehaviourConfig, Counter, DeadLetter, DecayConfig, Impression, ImpressionItem,
    ItemFacts, ItemStats, Profile, Store, TopList, TRENDING_OVERALL,
};
use shelf_stream::Record;
use shelf_types::{Event, EventKind};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Consumer name of the event job.
pub const EVENT_JOB: &str = "event-job";

/// Default records per event-job batch. Every profile, item stat, co-visit and trending list
/// a batch touches is read, decoded, re-encoded and written once per batch (and each item
/// it names read once), so a large batch
/// amortises them over many events when a backlog waits (a replay, a burst: `shelf bench
/// ingest`, release: 100,000 events 3.4x faster at 4096 than at 256). A batch takes only what
/// the source already holds, so under a light load batches stay small and are applied at
/// once. Its memory and write batch grow with the distinct lists it touches: at most ~11
/// co-visit lists of 100 entries per event, so a 4,096-event batch over a large catalogue
/// holds up to ~45,000 lists (~100 MB) at worst; `--event-batch-size` bounds it.
pub const EVENT_BATCH_SIZE: usize = 4096;

/// Applies user events.
#[derive(Debug)]
pub struct EventJob {
    store: Arc<Store>,
    config: DecayConfig,
    behaviour: BehaviourConfig,
    dim: usize,
}

/// The batch's working copies of everything it changes (ordered maps: the write batch is
/// the same on every run).
#[derive(Default)]
struct Working {
    items: HashMap<String, Option<ItemView>>,
    profiles: BTreeMap<String, Profile>,
    stats: BTreeMap<String, ItemStats>,
    covisits: BTreeMap<String, TopList>,
    trending: BTreeMap<String, TopList>,
    impressions: BTreeMap<String, Impression>,
}

/// What the job needs of an item, cached per batch.
struct ItemView {
    vector: Vec<f32>,
    category: Option<String>,
    price: Option<f64>,
}

impl EventJob {
    /// A job with profile vectors of `dim` dimensions.
    pub fn new(store: Arc<Store>, config: DecayConfig, dim: usize) -> Self {
        Self {
            store,
            config,
            behaviour: BehaviourConfig::default(),
            dim,
        }
    }

    /// The same job with other co-visitation and trending settings.
    pub fn with_behaviour(mut self, behaviour: BehaviourConfig) -> Self {
        self.behaviour = behaviour;
        self
    }

    fn item_view(&self, id: &str) -> Result<Option<ItemView>, EngineError> {
        let (Some(item), Some(vector)) = (self.store.item(id)?, self.store.vector(id)?) else {
            return Ok(None);
        };
        Ok(Some(ItemView {
            vector: vector.vector,
            category: item.category,
            price: item.price,
        }))
    }
}

impl EventJob {
    /// Applies one valid event to the batch's working set; `Err(reason)` for a dead letter.
    fn apply_event(
        &self,
        event: &Event,
        working: &mut Working,
    ) -> Result<Result<(), String>, EngineError> {
        let Working {
            items, profiles, ..
        } = working;
        let ts = millis(event);
        let user = event.user_id.as_str();
        let item_id = event.item_id.as_ref().map(|i| i.as_str());
        if let Some(id) = item_id {
            if !items.contains_key(id) {
                let view = self.item_view(id)?;
                items.insert(id.to_string(), view);
            }
            if items[id].is_none() {
                return Ok(Err(format!(
                    "unknown item `{id}` (not in the catalog, or deleted)"
                )));
            }
        }
        if !profiles.contains_key(user) {
            let stored = self
                .store
                .profile(user)?
                .unwrap_or_else(|| Profile::new(user, self.dim));
            profiles.insert(user.to_string(), stored);
        }
        if let Some(id) = item_id {
            let recent = &profiles[user].recent;
            let pairs = covisit_pairs(id, event.kind, ts, recent, &self.config, &self.behaviour);
            let category = items[id].as_ref().and_then(|v| v.category.clone());
            for pair in pairs {
                working_copy(&mut working.covisits, &pair.from, || {
                    Ok(self.store.covisits(&pair.from)?.unwrap_or_default())
                })?
                .add(
                    &pair.to,
                    pair.weight,
                    ts,
                    self.behaviour.covisit_half_life_secs,
                    self.behaviour.covisit_neighbours,
                );
            }
            let weight = self.config.weights.of(event.kind);
            // Overall, and per category at every level of its path (`Home` holds what
            // trends in `Home/Sofas` too).
            let paths = category.as_deref().map(shelf_types::category_paths);
            for scope in std::iter::once(TRENDING_OVERALL).chain(paths.into_iter().flatten()) {
                working_copy(&mut working.trending, scope, || {
                    Ok(self.store.trending(scope)?.unwrap_or_default())
                })?
                .add(
                    id,
                    weight,
                    ts,
                    self.behaviour.trending_half_life_secs,
                    self.behaviour.trending_size,
                );
            }
        }
        let Working {
            items,
            profiles,
            stats,
            ..
        } = working;
        let facts = item_id.map(|id| {
            let view = items[id].as_ref().expect("checked above");
            ItemFacts {
                id,
                vector: &view.vector,
                category: view.category.as_deref(),
                price: view.price,
            }
        });
        profiles
            .get_mut(user)
            .expect("inserted above")
            .apply(event.kind, ts, facts, &self.config);
        if let Some(id) = item_id {
            self.stats_entry(id, stats)?
                .observe(Counter::Event(event.kind), ts, &self.config);
        }
        Ok(Ok(()))
    }

    /// Marks the clicked, carted or purchased item in the impression the event's request id
    /// names (the click is the label for CTR training; all three count in A/B tests).
    /// Events on expired or unknown requests, and on a response served to another user,
    /// only update the profile. A response served without a user (an anonymous search)
    /// takes the label of whoever acts on it: the event carries the id the shop knows the
    /// visitor by, which the search did not.
    fn label_response(
        &self,
        event: &Event,
        impressions: &mut BTreeMap<String, Impression>,
    ) -> Result<(), EngineError> {
        let (Some(request), Some(item)) = (&event.request_id, &event.item_id) else {
            return Ok(());
        };
        let label: fn(&mut ImpressionItem) = match event.kind {
            EventKind::Click => |shown| shown.clicked = true,
            EventKind::AddToCart => |shown| shown.carted = true,
            EventKind::Purchase => |shown| shown.purchased = true,
            EventKind::View | EventKind::Search => return Ok(()),
        };
        let request = request.as_str();
        if !impressions.contains_key(request) {
            match self.store.impression(request)? {
                Some(stored) => {
                    impressions.insert(request.to_string(), stored);
                }
                None => return Ok(()),
            }
        }
        let impression = impressions.get_mut(request).expect("inserted above");
        if impression
            .user_id
            .as_deref()
            .is_some_and(|served| served != event.user_id.as_str())
        {
            return Ok(());
        }
        if let Some(shown) = impression
            .items
            .iter_mut()
            .find(|shown| shown.item_id == item.as_str())
        {
            label(shown);
        }
        Ok(())
    }

    /// The batch's working copy of `id`'s stats, loaded from the store on first use.
    fn stats_entry<'s>(
        &self,
        id: &str,
        stats: &'s mut BTreeMap<String, ItemStats>,
    ) -> Result<&'s mut ItemStats, EngineError> {
        working_copy(stats, id, || {
            Ok(self
                .store
                .item_stats(id)?
                .unwrap_or_else(|| ItemStats::new(id)))
        })
    }
}

/// The batch's working copy of `key` in `map`, loaded with `load` on first use.
fn working_copy<'s, T>(
    map: &'s mut BTreeMap<String, T>,
    key: &str,
    load: impl FnOnce() -> Result<T, EngineError>,
) -> Result<&'s mut T, EngineError> {
    if !map.contains_key(key) {
        map.insert(key.to_string(), load()?);
    }
    Ok(map.get_mut(key).expect("inserted above"))
}

/// A record of the events topic: a user event, or the impression log of one search
/// response (appended by the query endpoint, `"kind": "impression"`).
enum EventRecord {
    Event(Event),
    Impression(Impression),
}

/// The tagged form of an impression on the events topic.
#[derive(serde::Serialize, serde::Deserialize)]
struct TaggedImpression {
    kind: ImpressionKind,
    #[serde(flatten)]
    impression: Impression,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum ImpressionKind {
    Impression,
}

/// The events-topic payload that logs `impression` (what the query endpoint appends).
pub fn impression_record(impression: &Impression) -> Vec<u8> {
    serde_json::to_vec(&TaggedImpression {
        kind: ImpressionKind::Impression,
        impression: impression.clone(),
    })
    .expect("an impression always serialises")
}

fn parse(payload: &[u8]) -> Result<EventRecord, String> {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    let is_impression = serde_json::from_slice::<Kind>(payload)
        .is_ok_and(|k| k.kind.as_deref() == Some("impression"));
    if is_impression {
        let tagged: TaggedImpression =
            serde_json::from_slice(payload).map_err(|e| format!("invalid impression: {e}"))?;
        return Ok(EventRecord::Impression(tagged.impression));
    }
    let event: Event =
        serde_json::from_slice(payload).map_err(|e| format!("invalid event: {e}"))?;
    event
        .validate()
        .map_err(|e| format!("invalid event: {e}"))?;
    Ok(EventRecord::Event(event))
}

fn millis(event: &Event) -> i64 {
    (event.ts.unix_timestamp_nanos() / 1_000_000) as i64
}

impl Job for EventJob {
    fn name(&self) -> &'static str {
        EVENT_JOB
    }

    async fn apply(&mut self, records: Vec<Record>) -> Result<Applied, EngineError> {
        let Some(last) = records.last() else {
            return Ok(Applied::default());
        };
        let next_offset = last.offset + 1;
        let mut working = Working::default();
        let mut batch = self.store.batch();
        let mut dead_total = self.store.dead_letter_count(EVENT_JOB)?;
        let mut dead = 0;
        for record in &records {
            let outcome = match parse(&record.payload) {
                Ok(EventRecord::Event(event)) => {
                    let outcome = self.apply_event(&event, &mut working)?;
                    if outcome.is_ok() {
                        self.label_response(&event, &mut working.impressions)?;
                    }
                    outcome
                }
                Ok(EventRecord::Impression(impression)) => {
                    for shown in &impression.items {
                        self.stats_entry(&shown.item_id, &mut working.stats)?
                            .observe(Counter::Impression, impression.ts_ms, &self.config);
                    }
                    working
                        .impressions
                        .insert(impression.request_id.clone(), impression);
                    Ok(())
                }
                Err(reason) => Err(reason),
            };
            if let Err(reason) = outcome {
                dead += 1;
                dead_total += 1;
                let letter = DeadLetter {
                    consumer: EVENT_JOB.into(),
                    partition: record.partition,
                    offset: record.offset,
                    reason,
                    payload: String::from_utf8_lossy(&record.payload).into_owned(),
                };
                batch.put_dead_letter(&letter, dead_total);
            }
        }
        for profile in working.profiles.values() {
            batch.put_profile(profile);
        }
        for s in working.stats.values() {
            batch.put_item_stats(s);
        }
        for (id, list) in &working.covisits {
            batch.put_covisits(id, list);
        }
        for (scope, list) in &working.trending {
            batch.put_trending(scope, list);
        }
        for impression in working.impressions.values() {
            batch.put_impression(impression);
        }
        batch.put_partition_offset(EVENT_JOB, last.partition, next_offset);
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
    use shelf_store::{ImpressionItem, StoredVector};

    fn record(offset: u64, payload: Vec<u8>) -> Record {
        Record {
            partition: 0,
            offset,
            payload,
        }
    }

    /// A fresh store holding items `ids` (titled with their ids, 2-d vectors).
    fn store_with_items(ids: &[&str]) -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Default::default()).unwrap());
        let mut batch = store.batch();
        for id in ids {
            let item: shelf_types::Item =
                serde_json::from_value(serde_json::json!({"id": id, "title": id})).unwrap();
            let vector = StoredVector {
                model_id: "m".into(),
                text_hash: 0,
                vector: vec![1.0, 0.0],
            };
            batch.put_item(&item, &vector);
        }
        store.commit(batch).unwrap();
        (dir, store)
    }

    /// Co-visit lists decay with the behaviour's own half-life, not the profiles'.
    #[tokio::test]
    async fn covisits_decay_with_their_own_half_life() {
        let (_dir, store) = store_with_items(&["a", "b"]);
        let day = 86_400.0;
        let profiles = DecayConfig {
            half_life_secs: day,
            ..Default::default()
        };
        let behaviour = BehaviourConfig {
            covisit_half_life_secs: 10.0 * day,
            ..Default::default()
        };
        let mut job = EventJob::new(Arc::clone(&store), profiles, 2).with_behaviour(behaviour);
        let view = |item: &str, ts: &str| {
            serde_json::to_vec(&serde_json::json!({
                "user_id": "u", "kind": "view", "item_id": item, "ts": ts,
            }))
            .unwrap()
        };
        // a then b on day 0, and again on day 10: the day-0 pair has halved once.
        job.apply(vec![
            record(0, view("a", "2026-11-01T10:00:00Z")),
            record(1, view("b", "2026-11-01T10:01:00Z")),
            record(2, view("a", "2026-11-11T10:00:00Z")),
            record(3, view("b", "2026-11-11T10:01:00Z")),
        ])
        .await
        .unwrap();
        let list = store.covisits("a").unwrap().unwrap();
        // Forward a -> b weighs 1 (views, neighbour 1) on day 0 and again on day 10 (the
        // second a is 10 days after the first b, beyond the 24-hour gap: no pair). With the
        // profiles' 1-day half-life the first would be worth 2^-10.
        let (expected, got) = (1.5, list.score("b"));
        assert!(
            (got - expected).abs() < 1e-9,
            "a's list holds b at {got}, expected {expected}"
        );
    }

    /// A click labels the impression it names only when it comes from the user who was
    /// served it (an anonymous response, from anyone): another user's click is no label.
    #[tokio::test]
    async fn a_click_labels_only_its_own_users_impression() {
        let (_dir, store) = store_with_items(&["sku-1"]);
        let mut job = EventJob::new(Arc::clone(&store), DecayConfig::default(), 2);
        let impression = |request: &str, user: Option<&str>| Impression {
            request_id: request.into(),
            user_id: user.map(str::to_string),
            ts_ms: 1_000,
            query: Some("sofa".into()),
            items: vec![ImpressionItem {
                item_id: "sku-1".into(),
                position: 0,
                features: vec![0.0; shelf_types::FEATURE_COUNT],
                clicked: false,
                carted: false,
                purchased: false,
            }],
            arm: None,
        };
        let click = |user: &str, request: &str| {
            serde_json::to_vec(&serde_json::json!({
                "user_id": user, "kind": "click", "item_id": "sku-1",
                "request_id": request, "position": 1, "ts": "2026-11-20T10:00:00Z",
            }))
            .unwrap()
        };
        job.apply(vec![
            record(0, impression_record(&impression("r-alice", Some("alice")))),
            record(1, impression_record(&impression("r-anon", None))),
            record(2, click("mallory", "r-alice")),
            record(3, click("mallory", "r-anon")),
        ])
        .await
        .unwrap();
        let clicked = |request: &str| store.impression(request).unwrap().unwrap().items[0].clicked;
        assert!(
            !clicked("r-alice"),
            "another user's click labelled alice's impression"
        );
        assert!(clicked("r-anon"));
        // Mallory's clicks still count for mallory's profile.
        assert_eq!(store.profile("mallory").unwrap().unwrap().counts.click, 2);
        job.apply(vec![record(4, click("alice", "r-alice"))])
            .await
            .unwrap();
        assert!(clicked("r-alice"));
        // Carts and purchases carrying the request id label the response too (A/B tests).
        let act = |kind: &str, user: &str| {
            serde_json::to_vec(&serde_json::json!({
                "user_id": user, "kind": kind, "item_id": "sku-1",
                "request_id": "r-alice", "ts": "2026-11-20T10:01:00Z",
            }))
            .unwrap()
        };
        job.apply(vec![
            record(5, act("add_to_cart", "mallory")),
            record(6, act("purchase", "alice")),
        ])
        .await
        .unwrap();
        let shown = store.impression("r-alice").unwrap().unwrap().items[0].clone();
        assert!(
            !shown.carted,
            "another user's cart labelled alice's impression"
        );
        assert!(shown.purchased);
    }
}
