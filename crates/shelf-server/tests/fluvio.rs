//! Against a real Fluvio cluster (set SHELF_FLUVIO_ENDPOINT=HOST:PORT; otherwise every test
//! says it was skipped): the Fluvio source and sink keep per-partition order, resume from a
//! committed offset, and the event job applies a topic exactly once across restarts.
#![cfg(feature = "fluvio")]

use shelf_engine::{catch_up, EventJob, EVENT_JOB};
use shelf_store::{DecayConfig, Store};
use shelf_stream::{FluvioCluster, Sink, Source};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// The cluster, or `None` (and a line saying the test was skipped).
fn cluster(test: &str) -> Option<FluvioCluster> {
    match std::env::var("SHELF_FLUVIO_ENDPOINT") {
        Ok(endpoint) => {
            Some(FluvioCluster::connect(&endpoint).expect("SHELF_FLUVIO_ENDPOINT answers"))
        }
        Err(_) => {
            // Written to the stderr handle itself, so the line shows even when the test
            // harness captures output.
            let _ = writeln!(
                std::io::stderr(),
                "{test}: SKIPPED (set SHELF_FLUVIO_ENDPOINT=HOST:PORT to run it against a Fluvio cluster)"
            );
            None
        }
    }
}

/// A topic of its own per test run, deleted at the end.
struct TempTopic<'a> {
    cluster: &'a FluvioCluster,
    name: String,
}

impl<'a> TempTopic<'a> {
    fn new(cluster: &'a FluvioCluster, prefix: &str, partitions: u32) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("{prefix}-{}-{nanos}", std::process::id());
        assert!(cluster.ensure_topic(&name, partitions).unwrap());
        // The SPU takes a moment to host a new partition.
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.end_offset(&name, partitions - 1).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        Self { cluster, name }
    }
}

impl Drop for TempTopic<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.delete_topic(&self.name);
    }
}

/// Polls until `n` records arrived or 30 s passed.
fn read(source: &mut impl Source, n: usize) -> Vec<shelf_stream::Record> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n && Instant::now() < deadline {
        out.extend(source.poll(1000, Duration::from_millis(200)).unwrap());
    }
    out
}

#[test]
fn source_and_sink_keep_partition_order_and_resume_from_an_offset() {
    let Some(cluster) = cluster("source_and_sink_keep_partition_order_and_resume_from_an_offset")
    else {
        return;
    };
    let topic = TempTopic::new(&cluster, "shelf-test-stream", 2);
    let sink = cluster.sink(&topic.name).unwrap();
    let keys: Vec<Option<Vec<u8>>> = (0..200)
        .map(|i| Some(format!("key-{}", i % 7).into_bytes()))
        .collect();
    let payloads: Vec<Vec<u8>> = (0..200).map(|i| format!("{i}").into_bytes()).collect();
    let placed = sink.produce(&keys, &payloads).unwrap();
    assert_eq!(placed.len(), 200);

    let mut source = cluster.source(&topic.name, &[]).unwrap();
    assert_eq!(source.partitions(), vec![0, 1]);
    for p in source.partitions() {
        source.seek(p, 0).unwrap();
    }
    let records = read(&mut source, 200);
    assert_eq!(records.len(), 200, "every record arrives once");
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in &records {
        by_partition.entry(r.partition).or_default().push(r.offset);
    }
    for (p, offsets) in &by_partition {
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, &expected, "partition {p} in order, no gaps");
        assert_eq!(source.end_offset(*p).unwrap(), offsets.len() as u64);
    }
    // Records of one key stay in one partition, in the order produced.
    let mut key_partition = BTreeMap::new();
    for (i, (p, _)) in placed.iter().enumerate() {
        assert_eq!(*key_partition.entry(i % 7).or_insert(*p), *p);
    }

    // Resuming at a committed offset gives exactly what follows it.
    let p0 = by_partition[&0].len() as u64;
    let mut again = cluster.source(&topic.name, &[0]).unwrap();
    again.seek(0, p0 - 3).unwrap();
    let tail = read(&mut again, 3);
    assert_eq!(
        tail.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![p0 - 3, p0 - 2, p0 - 1]
    );

    // The Sink trait appends too.
    let mut sink = sink;
    let range = sink.append(&[b"x".to_vec()]).unwrap();
    assert_eq!(range.end - range.start, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_job_applies_a_topic_exactly_once_across_restarts() {
    let Some(cluster) = cluster("the_event_job_applies_a_topic_exactly_once_across_restarts")
    else {
        return;
    };
    let topic = TempTopic::new(&cluster, "shelf-test-events", 2);
    let sink = cluster.sink(&topic.name).unwrap();
    let event = |user: usize, item: usize| {
        format!(r#"{{"user_id":"u{user}","kind":"view","item_id":"i{item}","ts":"2026-01-01T00:00:{:02}Z"}}"#, item % 60).into_bytes()
    };
    let produce = |range: std::ops::Range<usize>| {
        let payloads: Vec<Vec<u8>> = range.clone().map(|i| event(i % 5, i)).collect();
        let keys: Vec<Option<Vec<u8>>> = range
            .map(|i| Some(format!("u{}", i % 5).into_bytes()))
            .collect();
        sink.produce(&keys, &payloads).unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let views = |store: &Store| -> u64 {
        (0..5)
            .map(|u| {
                store
                    .profile(&format!("u{u}"))
                    .unwrap()
                    .map_or(0, |p| p.counts.view)
            })
            .sum()
    };

    produce(0..60);
    {
        let store = Store::open(dir.path(), Default::default()).unwrap();
        let store = std::sync::Arc::new(store);
        let mut job = EventJob::new(std::sync::Arc::clone(&store), DecayConfig::default(), 8);
        let mut source = cluster.source(&topic.name, &[]).unwrap();
        let progress = catch_up(&mut job, &mut source, &store, 16, |_, _| {})
            .await
            .unwrap();
        assert_eq!(progress.offset, 60);
        assert_eq!(views(&store), 60);
    }
    produce(60..100);
    let store = std::sync::Arc::new(Store::open(dir.path(), Default::default()).unwrap());
    let committed: u64 = (0..2)
        .map(|p| store.partition_offset(EVENT_JOB, p).unwrap())
        .sum();
    assert_eq!(
        committed, 60,
        "offsets were committed per partition with the state"
    );
    let mut job = EventJob::new(std::sync::Arc::clone(&store), DecayConfig::default(), 8);
    let mut source = cluster.source(&topic.name, &[]).unwrap();
    let progress = catch_up(&mut job, &mut source, &store, 16, |_, _| {})
        .await
        .unwrap();
    assert_eq!(progress.offset, 100);
    assert_eq!(views(&store), 100, "nothing applied twice, nothing skipped");
}
