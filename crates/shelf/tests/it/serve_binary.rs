//! `shelf serve` as users run it: the real binary on a real socket, fed over HTTP, stopped
//! with SIGTERM (graceful: snapshot written), restarted from its snapshot.

use axum::http::{Method, StatusCode};
use shelf_api::client::{HttpTransport, Transport};
use shelf_lab::demo::shop::Shop;
use shelf_lexical::LexicalIndex;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the binary on a free port and returns it with its base URL (read from stderr).
fn start(data: &Path) -> (Child, String, std::thread::JoinHandle<String>) {
    start_with(data, &[])
}

/// [`start`] with more flags.
fn start_with(data: &Path, flags: &[&str]) -> (Child, String, std::thread::JoinHandle<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shelf"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--fsync",
            "never",
            "--data-dir",
        ])
        .arg(data)
        .args(flags)
        .env("SHELF_LOG", "shelf_api=info,shelf_cli=info,shelf_node=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("shelf exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("shelf: listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    let rest =
        std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    (child, url, rest)
}

async fn wait_ready(api: &HttpTransport, items: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok((StatusCode::OK, body)) = api.call(Method::GET, "/ready", None).await {
            if body["items"].as_u64() == Some(items) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "server never had {items} items ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn terminate(mut child: Child, stderr: std::thread::JoinHandle<String>) -> String {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let log = stderr.join().unwrap();
    assert!(status.success(), "shelf exited with {status}: {log}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_http_stops_gracefully_and_restarts_from_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url, stderr) = start(dir.path());
    let api = HttpTransport::new(&url, None);
    let (status, _) = api.call(Method::GET, "/health", None).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    let items: Vec<serde_json::Value> = Shop::generate(40, 1)
        .products
        .iter()
        .map(|p| serde_json::to_value(shelf_types::ItemRecord::Upsert(p.item.clone())).unwrap())
        .collect();
    let (status, body) = api
        .call(Method::POST, "/v1/items", Some(serde_json::json!(items)))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_ready(&api, 40).await;
    let query = serde_json::json!({"query": "wireless headphones", "k": 3});
    let (status, first) = api
        .call(Method::POST, "/v1/search", Some(query.clone()))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["items"].as_array().unwrap().len(), 3);

    let log = terminate(child, stderr);
    assert!(log.contains("stopped cleanly"), "{log}");
    assert!(
        dir.path().join("index").join("manifest.json").exists(),
        "no snapshot: {log}"
    );

    // The restart restores the snapshot instead of rebuilding, and answers at once.
    let (child, url, stderr) = start(dir.path());
    let api = HttpTransport::new(&url, None);
    wait_ready(&api, 40).await;
    let (status, again) = api
        .call(Method::POST, "/v1/search", Some(query))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["items"].as_array().unwrap().len(), 3);
    let log = terminate(child, stderr);
    assert!(log.contains("index restored from its snapshot"), "{log}");
    assert!(!log.contains("building the index from the store"), "{log}");
}

fn shelf(args: &[&str], data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shelf"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// SIGKILL of `shelf serve` while items arrive, with the index snapshot behind the store:
/// the restart restores the snapshot, replays the item log from its position, applies the
/// rest, and ends with every item searchable, and a store and a lexical index equal to an
/// uninterrupted run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_the_snapshot_behind_the_store_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("killed");
    let items: Vec<serde_json::Value> = Shop::generate(200, 9)
        .products
        .iter()
        .map(|p| serde_json::to_value(shelf_types::ItemRecord::Upsert(p.item.clone())).unwrap())
        .collect();
    let (mut child, url, stderr) = start_with(&data, &["--snapshot-interval-secs", "1"]);
    let api = HttpTransport::new(&url, None);
    for chunk in items[..100].chunks(20) {
        let (status, body) = api
            .call(Method::POST, "/v1/items", Some(serde_json::json!(chunk)))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    wait_ready(&api, 100).await;
    let manifest = data.join("index").join("manifest.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !manifest.exists() {
        assert!(Instant::now() < deadline, "no snapshot was written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for chunk in items[100..].chunks(20) {
        let (status, body) = api
            .call(Method::POST, "/v1/items", Some(serde_json::json!(chunk)))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(stderr.join());
    let snapshot: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let position = snapshot["position"].as_u64().unwrap();
    assert!(position < 200, "the snapshot is not behind: {snapshot}");

    let (child, url, stderr) = start(&data);
    let api = HttpTransport::new(&url, None);
    wait_ready(&api, 200).await;
    // The store (read while the node runs, before any search logs an impression) equals
    // an uninterrupted run's.
    let reference = dir.path().join("reference");
    let file = dir.path().join("items.jsonl");
    let lines: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    shelf(&["ingest", "items", file.to_str().unwrap()], &reference);
    shelf(&["process", "--until-caught-up"], &reference);
    assert!(
        shelf(&["dump"], &data) == shelf(&["dump"], &reference),
        "the store after SIGKILL differs from an uninterrupted run's"
    );
    // The lexical index holds the same document for every id as one built without a
    // crash (whether the kill came before or after its last commit).
    let lexical = LexicalIndex::open_read_only(&data.join("lexical")).unwrap();
    let uninterrupted = LexicalIndex::in_memory();
    for item in &items {
        // Parsed from JSON text, as the server parsed it (serde_json's text parser and its
        // `from_value` may differ in a price's last bit).
        let record: shelf_types::ItemRecord = serde_json::from_str(&item.to_string()).unwrap();
        if let shelf_types::ItemRecord::Upsert(item) = record {
            uninterrupted.upsert(&item).unwrap();
        }
    }
    uninterrupted.commit(200).unwrap();
    assert_eq!(
        lexical.documents().unwrap(),
        uninterrupted.documents().unwrap()
    );
    for item in &items {
        let (status, body) = api
            .call(
                Method::POST,
                "/v1/search",
                Some(serde_json::json!({"query": item["title"], "k": 10, "explore": false})),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let found = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|hit| hit["id"] == item["id"]);
        assert!(found, "{} is not found by its own title", item["id"]);
    }
    let log = terminate(child, stderr);
    assert!(log.contains("index restored from its snapshot"), "{log}");
}
