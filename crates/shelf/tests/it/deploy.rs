//! `shelf deploy`'s Arroyo half against an in-process fake of Arroyo's REST API: first run
//! creates, a second changes nothing, a changed pipeline is stopped, deleted and recreated,
//! and Arroyo's rejection of a query is reported with the pipeline's name.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use shelf_api::client::RouterTransport;
use shelf_cli::deploy::{bundled_pipelines, bundled_udfs, ArroyoDeploy, Outcome, Pipeline};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Fake {
    udfs: Vec<Value>,
    pipelines: Vec<Value>,
    calls: Vec<String>,
    next_id: u32,
}

type Shared = Arc<Mutex<Fake>>;

fn fake_arroyo(state: Shared) -> Router {
    fn log(state: &Shared, call: String) -> std::sync::MutexGuard<'_, Fake> {
        let mut fake = state.lock().unwrap();
        fake.calls.push(call);
        fake
    }
    Router::new()
        .route(
            "/api/v1/udfs",
            get(|State(s): State<Shared>| async move {
                Json(json!({ "data": s.lock().unwrap().udfs }))
            })
            .post(|State(s): State<Shared>, Json(body): Json<Value>| async move {
                let mut fake = log(&s, "POST udf".into());
                fake.next_id += 1;
                let definition = body["definition"].as_str().unwrap().to_string();
                let name = definition
                    .split("#[udf]")
                    .nth(1)
                    .and_then(|r| r.split("fn ").nth(1))
                    .and_then(|r| r.split('(').next())
                    .unwrap()
                    .to_string();
                let udf = json!({"id": format!("udf_{}", fake.next_id), "prefix": body["prefix"],
                    "name": name, "definition": definition, "language": body["language"]});
                fake.udfs.push(udf.clone());
                Json(udf)
            }),
        )
        .route(
            "/api/v1/udfs/validate",
            post(|Json(body): Json<Value>| async move {
                let errors: Vec<&str> = if body["definition"].as_str().unwrap().contains("#[udf]") {
                    vec![]
                } else {
                    vec!["no function with #[udf] found"]
                };
                Json(json!({ "udfName": null, "errors": errors }))
            }),
        )
        .route(
            "/api/v1/udfs/{id}",
            axum::routing::delete(|State(s): State<Shared>, Path(id): Path<String>| async move {
                let mut fake = log(&s, format!("DELETE udf {id}"));
                fake.udfs.retain(|u| u["id"] != id.as_str());
                StatusCode::OK
            }),
        )
        .route(
            "/api/v1/pipelines",
            get(|State(s): State<Shared>| async move {
                Json(json!({ "data": s.lock().unwrap().pipelines, "hasMore": false }))
            })
            .post(|State(s): State<Shared>, Json(body): Json<Value>| async move {
                let mut fake = log(&s, format!("POST pipeline {}", body["name"].as_str().unwrap()));
                fake.next_id += 1;
                let pipeline = json!({"id": format!("pl_{}", fake.next_id), "name": body["name"],
                    "query": body["query"], "parallelism": body["parallelism"], "state": "Running"});
                fake.pipelines.push(pipeline.clone());
                Json(pipeline)
            }),
        )
        .route(
            "/api/v1/pipelines/validate_query",
            post(|Json(body): Json<Value>| async move {
                let query = body["query"].as_str().unwrap();
                let errors: Vec<String> = if query.contains("no_such_udf(") {
                    vec!["Error during planning: Invalid function 'no_such_udf'".into()]
                } else {
                    vec![]
                };
                Json(json!({ "graph": null, "errors": errors }))
            }),
        )
        .route(
            "/api/v1/pipelines/{id}",
            patch(|State(s): State<Shared>, Path(id): Path<String>, Json(body): Json<Value>| async move {
                let mut fake = log(&s, format!("PATCH {id} stop={}", body["stop"]));
                for p in fake.pipelines.iter_mut().filter(|p| p["id"] == id.as_str()) {
                    p["state"] = "Stopped".into();
                }
                StatusCode::OK
            })
            .delete(|State(s): State<Shared>, Path(id): Path<String>| async move {
                let mut fake = log(&s, format!("DELETE pipeline {id}"));
                let running = fake.pipelines.iter().any(|p| p["id"] == id.as_str() && p["state"] == "Running");
                if running {
                    return (StatusCode::BAD_REQUEST, Json(json!({"error": "pipeline is running"})));
                }
                fake.pipelines.retain(|p| p["id"] != id.as_str());
                (StatusCode::OK, Json(json!({})))
            }),
        )
        .route(
            "/api/v1/pipelines/{id}/jobs",
            get(|State(s): State<Shared>, Path(id): Path<String>| async move {
                let fake = s.lock().unwrap();
                let jobs: Vec<Value> = fake.pipelines.iter().filter(|p| p["id"] == id.as_str())
                    .map(|p| json!({"id": "job", "state": p["state"]})).collect();
                Json(json!({ "data": jobs }))
            }),
        )
        .with_state(state)
}

fn deploy() -> ArroyoDeploy {
    ArroyoDeploy {
        fluvio_endpoint: "fluvio-sc:9003".into(),
        parallelism: 2,
        wait: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn deploys_idempotently_and_updates_what_changed() {
    let state = Shared::default();
    let api = RouterTransport {
        router: fake_arroyo(Arc::clone(&state)),
        api_key: None,
    };
    let udfs = bundled_udfs();
    let mut pipelines = bundled_pipelines();

    let steps = deploy().run(&api, &udfs, &pipelines).await.unwrap();
    assert_eq!(steps.len(), 8);
    assert!(
        steps.iter().all(|s| s.outcome == Outcome::Created),
        "{steps:?}"
    );
    {
        let fake = state.lock().unwrap();
        let names: Vec<&str> = fake
            .udfs
            .iter()
            .map(|u| u["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["item_text", "event_weight", "embed", "covisit_pairs"]
        );
        for p in &fake.pipelines {
            let query = p["query"].as_str().unwrap();
            assert!(query.contains("endpoint = 'fluvio-sc:9003'"), "{query}");
            assert!(!query.contains("${"), "{query}");
            assert_eq!(p["parallelism"], 2);
        }
    }

    // Nothing changed: nothing is written.
    let calls_before = state.lock().unwrap().calls.len();
    let steps = deploy().run(&api, &udfs, &pipelines).await.unwrap();
    assert!(
        steps.iter().all(|s| s.outcome == Outcome::Unchanged),
        "{steps:?}"
    );
    assert_eq!(state.lock().unwrap().calls.len(), calls_before);

    // A changed query: stopped with a checkpoint, deleted, created again.
    pipelines[1].sql = pipelines[1]
        .sql
        .replace("INTERVAL '5' MINUTE", "INTERVAL '10' MINUTE");
    let steps = deploy().run(&api, &udfs, &pipelines).await.unwrap();
    let changed: Vec<_> = steps
        .iter()
        .filter(|s| s.outcome != Outcome::Unchanged)
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].name, "shelf-item-stats");
    assert_eq!(changed[0].outcome, Outcome::Updated);
    let fake = state.lock().unwrap();
    let new_calls: Vec<&str> = fake.calls[calls_before..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(new_calls.len(), 3, "{new_calls:?}");
    assert!(new_calls[0].starts_with("PATCH pl_") && new_calls[0].ends_with("stop=\"checkpoint\""));
    assert!(new_calls[1].starts_with("DELETE pipeline pl_"));
    assert_eq!(new_calls[2], "POST pipeline shelf-item-stats");
    assert_eq!(fake.pipelines.len(), 4);
    let stats = fake
        .pipelines
        .iter()
        .find(|p| p["name"] == "shelf-item-stats")
        .unwrap();
    assert!(stats["query"].as_str().unwrap().contains("'10' MINUTE"));
}

#[tokio::test]
async fn a_rejected_query_is_reported_with_its_pipeline_and_arroyo_message() {
    let state = Shared::default();
    let api = RouterTransport {
        router: fake_arroyo(Arc::clone(&state)),
        api_key: None,
    };
    let bad = Pipeline {
        name: "shelf-broken".into(),
        sql: "INSERT INTO x SELECT no_such_udf(value) FROM items;".into(),
    };
    let e = deploy()
        .run(&api, &bundled_udfs(), &[bad])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("shelf-broken"), "{e}");
    assert!(e.contains("Invalid function 'no_such_udf'"), "{e}");
    assert!(state.lock().unwrap().pipelines.is_empty());

    let unknown_placeholder = Pipeline {
        name: "shelf-typo".into(),
        sql: "endpoint = '${FLUVIO_ENDPOIN}'".into(),
    };
    let e = deploy()
        .run(&api, &[], &[unknown_placeholder])
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("${FLUVIO_ENDPOIN}"), "{e:#}");
}

#[tokio::test]
async fn waits_for_arroyo_and_gives_up_with_the_last_answer() {
    let api = RouterTransport {
        router: Router::new().route(
            "/api/v1/pipelines",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "starting"})),
                )
            }),
        ),
        api_key: None,
    };
    let mut d = deploy();
    d.wait = Duration::from_millis(100);
    let e = d.run(&api, &[], &[]).await.unwrap_err().to_string();
    assert!(
        e.contains("did not become ready") && e.contains("starting"),
        "{e}"
    );
}
