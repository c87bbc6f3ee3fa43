//! Online A/B tests through the HTTP API: bad input refused, users kept in their arm,
//! outcomes counted from the clicks that carry the request id, the test and its counts read
//! back from disk, and promotion gated on a significant win.

use crate::common;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// Saves a logistic model that ranks by the given feature weights (no position effect).
fn save_model(data_dir: &std::path::Path, version: &str) {
    let model = shelf_rank::LearnedModel {
        schema_version: shelf_rank::SCHEMA_VERSION,
        inputs: shelf_rank::input_names()
            .iter()
            .map(|s| s.to_string())
            .collect(),
        version: version.into(),
        params: shelf_rank::Params::Logistic {
            weights: (0..shelf_rank::INPUT_COUNT)
                .map(|i| if i == 0 { -1.0 } else { 0.0 })
                .collect(),
            bias: -2.0,
        },
        report: shelf_rank::TrainingReport::default(),
    };
    let dir = shelf_node::models::dir(data_dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{version}.json")), model.to_json()).unwrap();
}

async fn expect(
    s: &common::TestServer,
    method: Method,
    path: &str,
    body: Value,
    status: StatusCode,
    code: &str,
) {
    let (got, answer) = s.call(method, path, Some(body)).await;
    assert_eq!(got, status, "{path}: {answer}");
    assert_eq!(answer["error"]["code"], code, "{answer}");
}

/// One search per user `u{first}..u{last}`: (user, arm, model, request id, first item).
async fn searches(
    s: &common::TestServer,
    users: std::ops::Range<usize>,
) -> Vec<(String, Option<String>, String, String, String)> {
    let mut out = Vec::new();
    for u in users {
        let user = format!("u{u}");
        let (status, body) = s
            .call(
                Method::POST,
                "/v1/search",
                Some(json!({ "query": "sofa", "user_id": user, "k": 5 })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        out.push((
            user,
            body["experiment"]["arm"].as_str().map(str::to_string),
            body["model"].as_str().unwrap().to_string(),
            body["request_id"].as_str().unwrap().to_string(),
            body["items"][0]["id"].as_str().unwrap().to_string(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ab_test_splits_traffic_counts_outcomes_persists_and_gates_promotion() {
    let s = common::server(&[], true).await;
    common::index_catalog(&s, &common::catalog(60)).await;
    save_model(s.dir.path(), "logistic-1000");
    let arms = |a: f64, b: f64, model: &str| {
        json!({ "placement": "search", "arms": [
            { "name": "control", "model": "live", "share": a },
            { "name": "treatment", "model": model, "share": b },
        ]})
    };

    // Bad input: a clear 4xx, nothing started.
    let post = Method::POST;
    expect(
        &s,
        post.clone(),
        "/v1/experiments",
        arms(0.6, 0.5, "logistic-1000"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    expect(
        &s,
        post.clone(),
        "/v1/experiments",
        arms(0.5, 0.5, "mlp-404"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_model",
    )
    .await;
    let mut trending = arms(0.5, 0.5, "logistic-1000");
    trending["placement"] = json!("trending");
    expect(
        &s,
        post.clone(),
        "/v1/experiments",
        trending,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    let (_, list) = s.call(Method::GET, "/v1/experiments", None).await;
    assert_eq!(list, json!([]));

    let (status, started) = s
        .call(
            post.clone(),
            "/v1/experiments",
            Some(arms(0.5, 0.5, "logistic-1000")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(
        started["arms"][0]["model"], "prior",
        "live resolved when the test starts"
    );
    let id = started["id"].as_str().unwrap().to_string();
    expect(
        &s,
        post.clone(),
        "/v1/experiments",
        arms(0.5, 0.5, "prior"),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;

    // Every search is in an arm (shares sum to 1), ranked by the arm's model; shoppers
    // click the treatment's first item every time and the control's one time in five.
    let served = searches(&s, 0..120).await;
    let mut events = Vec::new();
    for (i, (user, arm, model, request, item)) in served.iter().enumerate() {
        let arm = arm.as_deref().expect("every search is in the test");
        let expected_model = if arm == "treatment" {
            "logistic-1000"
        } else {
            "prior"
        };
        assert_eq!(model, expected_model);
        if arm == "treatment" || i % 5 == 0 {
            events.push(json!({ "user_id": user, "kind": "click", "item_id": item,
                "request_id": request, "position": 1, "ts": "2026-12-01T10:00:00Z" }));
        }
        if arm == "treatment" && i % 2 == 0 {
            events.push(
                json!({ "user_id": user, "kind": "purchase", "item_id": item,
                "request_id": request, "ts": "2026-12-01T10:05:00Z" }),
            );
        }
    }
    let per_arm = |arm: &str| {
        served
            .iter()
            .filter(|r| r.1.as_deref() == Some(arm))
            .count()
    };
    assert!(
        per_arm("control") > 30 && per_arm("treatment") > 30,
        "{}",
        per_arm("control")
    );
    assert!(s
        .app
        .node
        .drain_events(Duration::from_secs(60))
        .await
        .unwrap());
    let (status, body) = s
        .call(post.clone(), "/v1/events", Some(json!(events)))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    s.settle().await;

    let (status, report) = s
        .call(Method::GET, &format!("/v1/experiments/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let arm = |report: &Value, i: usize| report["arms"][i].clone();
    assert_eq!(arm(&report, 0)["responses"], per_arm("control"));
    assert_eq!(arm(&report, 1)["responses"], per_arm("treatment"));
    assert_eq!(arm(&report, 1)["clicks"], per_arm("treatment"));
    assert_eq!(arm(&report, 1)["clicks_per_response"]["value"], 1.0);
    assert!(arm(&report, 1)["purchases"].as_u64().unwrap() > 10);
    assert_eq!(arm(&report, 0)["purchases"], 0);
    let lift = &arm(&report, 1)["clicks_per_response_lift"];
    assert!(lift["low"].as_f64().unwrap() > 0.0, "{lift}");
    assert_eq!(report["winner"], "treatment");
    let ctr = &arm(&report, 0)["click_through_rate"];
    assert!(
        ctr["low"].as_f64() < ctr["value"].as_f64() && ctr["value"].as_f64() < ctr["high"].as_f64()
    );

    // The report is on /metrics too.
    let metrics = s.app.metrics.render(&s.app.node);
    assert!(
        metrics.contains(&format!(
            "shelf_experiment_clicks_per_response{{experiment=\"{id}\",arm=\"treatment\"}} 1"
        )),
        "{metrics}"
    );

    // What a restart reads back: the stored test gives every user the same arm, and the
    // report comes from the store.
    let reopened = shelf_node::experiments::Experiments::open(s.dir.path()).unwrap();
    for (user, arm, ..) in &served {
        let again = reopened
            .assign("search", Some(user))
            .map(|(tag, _)| tag.arm);
        assert_eq!(&again, arm, "{user} changed arm");
    }
    let stored = reopened.get(&id).unwrap();
    let again = shelf_node::experiments::report(&s.app.node.store, &stored).unwrap();
    for (i, arm) in again.arms.iter().enumerate() {
        let served = &report["arms"][i];
        assert_eq!(arm.responses, served["responses"].as_u64().unwrap());
        assert_eq!(arm.clicks, served["clicks"].as_u64().unwrap());
        assert_eq!(arm.purchases, served["purchases"].as_u64().unwrap());
    }

    // Promotion: the control has not won; the treatment has.
    let promote = format!("/v1/experiments/{id}/promote");
    expect(
        &s,
        post.clone(),
        &promote,
        json!({ "arm": "control" }),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    expect(
        &s,
        post.clone(),
        &promote,
        json!({ "arm": "nobody" }),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    let (status, body) = s
        .call(post.clone(), &promote, Some(json!({ "arm": "treatment" })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, models) = s.call(Method::GET, "/v1/models", None).await;
    assert_eq!(models["live"], "logistic-1000");
    let (_, listed) = s.call(Method::GET, "/v1/experiments", None).await;
    assert!(listed[0]["stopped_ms"].is_i64(), "{listed}");
    let (_, body) = s
        .call(
            post.clone(),
            "/v1/search",
            Some(json!({ "query": "sofa", "user_id": "u1" })),
        )
        .await;
    assert!(body.get("experiment").is_none(), "{body}");
    assert_eq!(body["model"], "logistic-1000");
    expect(
        &s,
        post,
        &format!("/v1/experiments/{id}/stop"),
        json!({}),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let live = shelf_node::models::load_live(s.dir.path())
        .unwrap()
        .unwrap();
    assert_eq!(live.version, "logistic-1000", "the promotion is stored");
    let reopened = shelf_node::experiments::Experiments::open(s.dir.path()).unwrap();
    assert!(reopened.running("search").is_none(), "the stop is stored");

    // `shelf eval ab`'s loop, through the router: the demo's shoppers split between the live
    // model and the prior; every click and purchase they make is counted for an arm.
    let shop = shelf_lab::demo::shop::Shop::generate(60, 3);
    let facets = shelf_lab::demo::users::Facets::of(&shop);
    let shoppers = shelf_lab::demo::users::users(40, 11);
    let outcome = shelf_lab::eval::ab::run_ab(
        &s.api,
        &facets,
        &shoppers,
        [("control", "live"), ("treatment", "prior")],
        0.5,
        2,
        5,
        false,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let arms = outcome.report["arms"].as_array().unwrap();
    let total = |field: &str| arms.iter().map(|a| a[field].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        outcome.report["experiment"]["arms"][0]["model"],
        "logistic-1000"
    );
    assert!(arms.iter().all(|a| a["responses"].as_u64().unwrap() > 0));
    assert!(total("responses") <= outcome.sent.searches);
    assert_eq!(total("clicks"), outcome.sent.clicks);
    assert_eq!(total("purchases"), outcome.sent.purchases);
    assert!(total("carts") <= outcome.sent.carts);
    assert!(
        s.app.node.experiments.running("search").is_none(),
        "stopped at the end"
    );
    s.stop().await;
}
