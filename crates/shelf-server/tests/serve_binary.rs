//! `shelf serve` as users run it: the real binary on a real socket, fed over HTTP, stopped
//! with SIGTERM (graceful: snapshot written), restarted from its snapshot.

use axum::http::{Method, StatusCode};
use shelf_server::client::{HttpTransport, Transport};
use shelf_server::demo::shop::Shop;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the binary on a free port and returns it with its base URL (read from stderr).
fn start(data: &Path) -> (Child, String, std::thread::JoinHandle<String>) {
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
        .env("SHELF_LOG", "shelf_server=info,shelf_node=info")
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
