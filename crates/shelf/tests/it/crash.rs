//! Exactly-once under SIGKILL: the same log processed by a run killed at random points
//! (and restarted until done) and by an uninterrupted run gives bit-identical dumps; a
//! replay of the log into a fresh store gives the same dump again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// Sized so an uninterrupted run takes a few seconds in the test profile on 2 cores (the
// whole test runs it about five times): 2,000 items and 30,000 events made it 163 s of CI.
const ITEMS: usize = 1_000;
const EVENTS: usize = 12_000;
const USERS: usize = 300;
/// Three malformed events are written every this many.
const MALFORMED_EVERY: usize = 5_000;

fn shelf(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shelf"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null());
    cmd
}

fn run_ok(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Items with some updates (same and changed text), deletes and invalid records; events
/// over them with out-of-order timestamps and invalid records.
fn write_fixture(dir: &Path) -> (PathBuf, PathBuf) {
    // Seeded: the fixture is the same on every run.
    let mut rng = shelf_types::SplitMix(42);
    let colours = [
        "red", "blue", "green", "black", "white", "oak", "steel", "linen",
    ];
    let kinds = [
        "sofa", "lamp", "desk", "chair", "rug", "shelf", "kettle", "jacket", "boot", "tent",
    ];
    let depts = [
        "Furniture/Living Room",
        "Furniture/Office",
        "Home/Lighting",
        "Kitchen/Appliances",
        "Outdoor/Camping",
        "Apparel/Outerwear",
    ];
    let mut items = String::new();
    for i in 0..ITEMS {
        let (c, k) = (
            colours[rng.below(colours.len())],
            kinds[rng.below(kinds.len())],
        );
        let dept = depts[rng.below(depts.len())];
        let price = 5 + rng.below(995);
        items.push_str(&format!(
            "{{\"op\":\"upsert\",\"id\":\"sku-{i}\",\"title\":\"{c} {k} {i}\",\"category\":\"{dept}/{k}s\",\"price\":{price}.5,\"in_stock\":{}}}\n",
            rng.below(10) != 0
        ));
    }
    for i in (0..ITEMS).step_by(50) {
        // Price change only (text unchanged: no re-embedding), then a changed title.
        items.push_str(&format!(
            "{{\"op\":\"upsert\",\"id\":\"sku-{i}\",\"title\":\"updated {i}\",\"price\":9.0}}\n"
        ));
    }
    for i in (7..ITEMS).step_by(97) {
        items.push_str(&format!("{{\"op\":\"delete\",\"id\":\"sku-{i}\"}}\n"));
    }
    items.push_str("not json\n{\"op\":\"upsert\",\"title\":\"no id\"}\n{\"op\":\"upsert\",\"id\":\"x\",\"title\":\"  \"}\n");

    let mut events = String::new();
    let kinds = [
        "view",
        "view",
        "view",
        "click",
        "click",
        "add_to_cart",
        "purchase",
        "search",
    ];
    for e in 0..EVENTS {
        let user = rng.below(USERS);
        let kind = kinds[rng.below(kinds.len())];
        // Mostly increasing time with some events up to two days late.
        let ts =
            1_700_000_000 + e as i64 * 30 - (rng.below(10) == 0) as i64 * rng.below(172_800) as i64;
        let ts = time::OffsetDateTime::from_unix_timestamp(ts)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        if kind == "search" {
            events.push_str(&format!("{{\"user_id\":\"u{user}\",\"kind\":\"search\",\"query\":\"red sofa\",\"ts\":\"{ts}\"}}\n"));
        } else {
            let item = rng.below(ITEMS);
            events.push_str(&format!("{{\"user_id\":\"u{user}\",\"kind\":\"{kind}\",\"item_id\":\"sku-{item}\",\"ts\":\"{ts}\"}}\n"));
        }
        if e % MALFORMED_EVERY == 0 {
            events.push_str("{\"user_id\":\"u1\",\"kind\":\"teleport\",\"item_id\":\"sku-1\",\"ts\":\"2024-01-01T00:00:00Z\"}\n");
            events.push_str("{\"user_id\":\"u1\",\"kind\":\"view\",\"item_id\":\"nope\",\"ts\":\"2024-01-01T00:00:00Z\"}\n");
            events.push_str(
                "{\"kind\":\"view\",\"item_id\":\"sku-1\",\"ts\":\"2024-01-01T00:00:00Z\"}\n",
            );
        }
    }
    let (items_path, events_path) = (dir.join("items.jsonl"), dir.join("events.jsonl"));
    std::fs::write(&items_path, items).unwrap();
    std::fs::write(&events_path, events).unwrap();
    (items_path, events_path)
}

fn ingest(data: &Path, items: &Path, events: &Path) {
    run_ok(shelf(
        data,
        &[
            "ingest",
            "items",
            items.to_str().unwrap(),
            "--fsync",
            "never",
        ],
    ));
    run_ok(shelf(
        data,
        &[
            "ingest",
            "events",
            events.to_str().unwrap(),
            "--fsync",
            "never",
        ],
    ));
}

fn process(data: &Path) -> Command {
    shelf(
        data,
        // Small batches of both jobs: a kill lands between many commits of each.
        &[
            "process",
            "--until-caught-up",
            "--batch-size",
            "200",
            "--event-batch-size",
            "200",
        ],
    )
}

fn dump(data: &Path) -> String {
    run_ok(shelf(data, &["dump"]))
}

#[test]
fn sigkill_at_random_points_then_restart_gives_the_uninterrupted_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (items, events) = write_fixture(tmp.path());

    let reference = tmp.path().join("reference");
    ingest(&reference, &items, &events);
    let started = Instant::now();
    let summary = run_ok(process(&reference));
    let full_run = started.elapsed();
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(summary["items"]["dead_letters"], 3, "{summary}");
    // The malformed events, plus events that name items deleted earlier in the log.
    assert!(
        summary["events"]["dead_letters"].as_u64().unwrap()
            >= 3 * EVENTS.div_ceil(MALFORMED_EVERY) as u64,
        "{summary}"
    );
    let expected = dump(&reference);
    assert!(expected.lines().count() > ITEMS, "dump too small");
    // The behaviour signals are part of the state compared below.
    for kind in ["\"type\":\"covisits\"", "\"type\":\"trending\""] {
        assert!(expected.contains(kind), "the dump has no {kind} lines");
    }

    let crashed = tmp.path().join("crashed");
    ingest(&crashed, &items, &events);
    let mut rng = shelf_types::SplitMix(7);
    let mut kills = 0;
    for attempt in 0..12 {
        let mut child = process(&crashed)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a random point; each run gets a bit further than the last.
        let delay =
            Duration::from_millis(300 + rng.below(full_run.as_millis() as usize / 4 + 1) as u64);
        let deadline = Instant::now() + delay;
        let mut finished = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                finished = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match finished {
            Some(status) => {
                assert!(status.success(), "attempt {attempt} failed");
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    run_ok(process(&crashed));
    assert!(
        kills >= 3,
        "only {kills} kills landed before the run finished"
    );
    let after_crashes = dump(&crashed);
    assert!(
        after_crashes == expected,
        "state after {kills} SIGKILLs differs from the uninterrupted run"
    );

    // Replaying the same log into a fresh store gives the same state.
    std::fs::remove_dir_all(crashed.join("store")).unwrap();
    run_ok(process(&crashed));
    assert!(
        dump(&crashed) == expected,
        "replay of the log into a fresh store differs"
    );
}
