//! An in-process server over a temporary data directory, called through its router.

#![allow(dead_code)]

use axum::http::{Method, StatusCode};
use clap::Parser;
use shelf_api::app::App;
use shelf_api::client::{RouterTransport, Transport};
use shelf_cli::serve::{open_app, ServeArgs};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    args: ServeArgs,
}

pub struct TestServer {
    pub app: Arc<App>,
    pub api: RouterTransport,
    pub dir: tempfile::TempDir,
    tasks: Option<shelf_node::NodeTasks>,
}

/// The demo shop's first `n` products (seed 3) as item upsert records.
pub fn catalog(n: usize) -> Vec<serde_json::Value> {
    shelf_lab::demo::shop::Shop::generate(n, 3)
        .products
        .into_iter()
        .map(|p| {
            let mut v = serde_json::to_value(&p.item).unwrap();
            v["op"] = serde_json::json!("upsert");
            v
        })
        .collect()
}

/// Posts `items` and waits until every one is indexed (nothing pending).
pub async fn index_catalog(s: &TestServer, items: &[serde_json::Value]) {
    let (status, body) = s
        .call(Method::POST, "/v1/items", Some(serde_json::json!(items)))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, body) = s.call(Method::GET, "/ready", None).await;
        if body["items"].as_u64() == Some(items.len() as u64) && body["pending_items"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "items never indexed: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens an app with `flags` (besides --data-dir); `start` also loads the index and runs
/// the jobs.
pub async fn server(flags: &[&str], start: bool) -> TestServer {
    log_to_the_test_output();
    let dir = tempfile::tempdir().unwrap();
    let mut argv = vec!["shelf", "--data-dir", dir.path().to_str().unwrap()];
    if !flags.contains(&"--fsync") {
        argv.extend(["--fsync", "never"]);
    }
    argv.extend_from_slice(flags);
    let args = Wrapper::try_parse_from(argv).unwrap().args;
    let app = open_app(&args).unwrap();
    let router = shelf_api::router(Arc::clone(&app));
    let mut server = TestServer {
        app,
        api: RouterTransport {
            router,
            api_key: None,
        },
        dir,
        tasks: None,
    };
    if start {
        server.start().await;
    }
    server
}

/// Sends the servers' log (level from `SHELF_LOG`, default warn) to the test harness, which
/// shows a test's part of it when the test fails.
fn log_to_the_test_output() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("SHELF_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

impl TestServer {
    pub async fn start(&mut self) {
        self.tasks = Some(
            self.app
                .node
                .start(Arc::new(shelf_rank::PriorRanker::default()))
                .await
                .unwrap(),
        );
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        self.api.call(method, path, body).await.unwrap()
    }

    /// Waits until the item and event jobs have applied everything appended so far.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let lag: f64 = self
                .app
                .node
                .readings()
                .iter()
                .filter(|r| r.name.starts_with("shelf_ingest_lag"))
                .map(|r| r.value)
                .sum();
            if lag == 0.0 {
                return;
            }
            assert!(Instant::now() < deadline, "jobs did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.app.node.shutdown();
        if let Some(tasks) = self.tasks {
            tasks.join().await.unwrap();
        }
    }
}
