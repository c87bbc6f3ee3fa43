//! The HTTP API through its router (no socket), with the real model, index and store.

use crate::common;

use axum::http::{Method, StatusCode};
use common::{catalog, server};
use serde_json::json;
use std::time::{Duration, Instant};

async fn wait_for_items(s: &common::TestServer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, body) = s.call(Method::GET, "/ready", None).await;
        if status == StatusCode::OK
            && body["items"].as_u64() == Some(n)
            && body["status"] == "ready"
        {
            assert_eq!(body["pending_items"], 0, "{body}");
            return;
        }
        if status == StatusCode::OK && body["status"] == "indexing" {
            assert!(body["pending_items"].as_u64().unwrap() > 0, "{body}");
        }
        assert!(
            Instant::now() < deadline,
            "index never reached {n} items with nothing pending: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// A profile lists its recent items newest first by event time, whatever order the events
/// arrived in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_lists_recent_items_newest_first() {
    let s = server(&[], true).await;
    let items = catalog(3);
    let (status, body) = s.call(Method::POST, "/v1/items", Some(json!(items))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_for_items(&s, 3).await;
    let id = |i: usize| items[i]["id"].as_str().unwrap().to_string();
    // Sent out of order: the second event is the oldest.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/events",
            Some(json!([
                {"user_id": "u-recent", "kind": "view", "item_id": id(0), "ts": "2026-11-20T10:00:00Z"},
                {"user_id": "u-recent", "kind": "view", "item_id": id(1), "ts": "2026-11-20T09:00:00Z"},
                {"user_id": "u-recent", "kind": "add_to_cart", "item_id": id(2), "ts": "2026-11-20T11:00:00Z"},
            ])),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    s.settle().await;
    let (status, profile) = s
        .call(Method::GET, "/v1/users/u-recent/profile", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    let recent: Vec<&str> = profile["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item_id"].as_str().unwrap())
        .collect();
    assert_eq!(recent, [id(2), id(0), id(1)], "{profile}");
    assert_eq!(profile["recent"][0]["kind"], "add_to_cart");
    s.stop().await;
}

/// With `--fsync Nms`, an accepted record is fsynced within N ms even when nothing is
/// appended after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_fsync_syncs_accepted_records_on_a_timer() {
    let s = server(&["--fsync", "50ms"], true).await;
    // The first append may sync at once (the last sync was longer ago than 50 ms); the one
    // right after it waits for the timer, as nothing is appended after it.
    for _ in 0..2 {
        let (status, body) = s
            .call(
                Method::POST,
                "/v1/events",
                Some(json!([{"user_id": "u", "kind": "search", "query": "q", "ts": "2026-01-01T00:00:00Z"}])),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.app.node.logs_unsynced() {
        assert!(
            Instant::now() < deadline,
            "an accepted record was not fsynced within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_events_search_profile_and_deletion_round_trip() {
    let s = server(&[], true).await;
    let (status, body) = s.call(Method::GET, "/health", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );

    let (status, body) = s
        .call(Method::POST, "/v1/items", Some(json!(catalog(62))))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["next_offset"].as_u64()),
        (Some(62), Some(62))
    );
    wait_for_items(&s, 62).await;

    let (status, body) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(json!({"query": "sofa", "k": 5, "explain": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(
        items[0]["category"]
            .as_str()
            .unwrap()
            .starts_with("Furniture/"),
        "{body}"
    );
    for item in items {
        let explanation = item["explanation"].as_array().unwrap();
        assert_eq!(explanation.len(), shelf_types::FEATURE_COUNT);
        let sum: f64 = explanation
            .iter()
            .map(|e| e["contribution"].as_f64().unwrap())
            .sum();
        assert!(
            (sum - item["score"].as_f64().unwrap()).abs() < 1e-3,
            "{item}"
        );
    }
    let scores: Vec<f64> = items.iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(
        body["timings"]["total"].as_f64().unwrap() >= body["timings"]["embed"].as_f64().unwrap()
    );
    let request_id = body["request_id"].as_str().unwrap().to_string();
    let clicked = items[1]["id"].as_str().unwrap().to_string();

    // Filters are applied in the index.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(json!({"query": "sofa", "k": 20, "filters": {"category_prefix": "Electronics", "price_max": 500.0}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for item in body["items"].as_array().unwrap() {
        assert!(item["category"]
            .as_str()
            .unwrap()
            .starts_with("Electronics/"));
        assert!(item["price"].as_f64().unwrap() <= 500.0);
    }

    // The search above was logged as an impression (the writer appends it asynchronously).
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.app.node.store.impression(&request_id).unwrap().is_none() {
        assert!(Instant::now() < deadline, "impression never logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A click carrying the request id updates the profile and the item's stats, and labels
    // the impression for training.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/events",
            Some(json!([{"user_id": "u1", "kind": "click", "item_id": clicked, "request_id": request_id,
                          "position": 2, "ts": "2026-11-20T10:00:00Z"}])),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    s.settle().await;
    let (status, profile) = s.call(Method::GET, "/v1/users/u1/profile", None).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["counts"]["click"], 1);
    assert_eq!(profile["recent"][0]["item_id"], clicked.as_str());
    assert!(
        s.app
            .node
            .store
            .item_stats(&clicked)
            .unwrap()
            .unwrap()
            .clicks
            > 0.0
    );
    let (status, item) = s
        .call(Method::GET, &format!("/v1/items/{clicked}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{item}");
    assert_eq!(item["item"]["id"], clicked.as_str());
    assert!(item["stats"]["clicks"].as_f64().unwrap() > 0.0, "{item}");
    assert!(
        item["stats"]["impressions"].as_f64().unwrap() > 0.0,
        "{item}"
    );
    assert!(
        item["window_stats"].is_null(),
        "no Arroyo windows on the embedded log"
    );
    let (status, _) = s.call(Method::GET, "/v1/items/sku-none", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let impression = s.app.node.store.impression(&request_id).unwrap().unwrap();
    assert_eq!(impression.items.len(), 5);
    assert_eq!(impression.items[1].item_id, clicked);
    assert_eq!(
        impression.items[1].features.len(),
        shelf_types::FEATURE_COUNT
    );
    let labels: Vec<bool> = impression.items.iter().map(|i| i.clicked).collect();
    assert_eq!(labels, [false, true, false, false, false]);

    // A recommendation: the profile alone.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(json!({"user_id": "u1", "k": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["personalized"], true);
    assert_eq!(ids(&body).len(), 3);

    // Behaviour: u2 looked at an item (in another category than the click above) right
    // after it; u3 looks at the clicked item and is recommended what u2 went on to, through
    // co-visitation, tagged as such.
    let (_, body) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(json!({"query": "laptop", "k": 1})),
        )
        .await;
    let next = ids(&body)[0].clone();
    assert_ne!(next, clicked);
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/events",
            Some(json!([
                {"user_id": "u2", "kind": "view", "item_id": clicked, "ts": "2026-11-20T11:00:00Z"},
                {"user_id": "u2", "kind": "add_to_cart", "item_id": next, "ts": "2026-11-20T11:01:00Z"},
                {"user_id": "u3", "kind": "view", "item_id": clicked, "ts": "2026-11-20T12:00:00Z"},
            ])),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    s.settle().await;
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(json!({"user_id": "u3", "k": 10, "explain": true, "explore": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let item = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == next.as_str())
        .unwrap_or_else(|| panic!("{next} not recommended: {body}"));
    assert!(
        item["sources"]
            .as_array()
            .unwrap()
            .contains(&json!("covisit")),
        "{item}"
    );
    let covisit = item["explanation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["feature"] == "covisit")
        .unwrap();
    assert!(covisit["value"].as_f64().unwrap() > 0.0, "{item}");
    // Without history and without a query: the trending items.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(json!({"user_id": "new-visitor", "k": 3, "explain": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["personalized"], false);
    // Only two items have had events so far.
    let mut trending = ids(&body);
    trending.sort();
    let mut engaged = vec![clicked.clone(), next.clone()];
    engaged.sort();
    assert_eq!(trending, engaged, "{body}");
    for item in body["items"].as_array().unwrap() {
        assert_eq!(item["sources"], json!(["trending"]), "{item}");
    }

    // Deleting an item removes it from results.
    let (status, _) = s
        .call(Method::DELETE, &format!("/v1/items/{clicked}"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for_items(&s, 61).await;
    let (_, body) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(json!({"query": "sofa", "k": 62})),
        )
        .await;
    assert!(!ids(&body).contains(&clicked));

    // Deleting a user removes the profile and their impressions.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(json!({"query": "lamp", "user_id": "u1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let user_request = body["request_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while s
        .app
        .node
        .store
        .impression(&user_request)
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "impression never logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = s.call(Method::DELETE, "/v1/users/u1", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["deleted_records"].as_u64().unwrap() >= 2, "{body}");
    let (status, _) = s.call(Method::GET, "/v1/users/u1/profile", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(s
        .app
        .node
        .store
        .impression(&user_request)
        .unwrap()
        .is_none());

    let (status, metrics) = s.call(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        metrics,
        serde_json::Value::Null,
        "metrics are text, not JSON"
    );
    let text = s.app.metrics.render(&s.app.node);
    for name in [
        "shelf_search_stage_duration_seconds_bucket{stage=\"ann\"",
        "shelf_http_requests_total{route=\"/v1/search\",status=\"200\"}",
        "shelf_index_items 61",
        "shelf_index_tombstones",
        "shelf_ingest_lag_items 0",
        "shelf_dead_letters_events_total 0",
        "shelf_item_freshness_seconds_count",
        "# TYPE shelf_index_exact_fallbacks_total counter",
        "shelf_query_cache_hit_ratio",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
    promtool_accepts(&text);
    let (status, doc) = s.call(Method::GET, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/search",
        "/v1/items",
        "/v1/items/{id}",
        "/v1/events",
        "/v1/users/{id}/profile",
        "/v1/users/{id}",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    assert!(doc["components"]["schemas"]["SearchBody"]["properties"]["filters"].is_object());
    s.stop().await;
}

async fn expect_error(
    s: &common::TestServer,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    status: StatusCode,
    code: &str,
) {
    let (got, body) = s.call(method.clone(), path, body).await;
    assert_eq!(got, status, "{method} {path}: {body}");
    assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_class_has_its_status_and_leaves_state_unchanged() {
    let mut s = server(
        &[
            "--max-body-bytes",
            "4000",
            "--max-batch",
            "3",
            "--max-concurrent-searches",
            "2",
        ],
        false,
    )
    .await;
    // Before the index is loaded: 503.
    expect_error(
        &s,
        Method::GET,
        "/ready",
        None,
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
    )
    .await;
    expect_error(
        &s,
        Method::POST,
        "/v1/search",
        Some(json!({"query": "x"})),
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
    )
    .await;
    s.start().await;
    let (status, _) = s
        .call(Method::POST, "/v1/items", Some(json!(catalog(3))))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for_items(&s, 3).await;
    let search = |body: serde_json::Value| (Method::POST, "/v1/search", Some(body));

    // 400: not JSON.
    let req = axum::http::Request::post("/v1/search")
        .body(axum::body::Body::from("{\"query\": "))
        .unwrap();
    let response = tower::ServiceExt::oneshot(s.api.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // 422: invalid values.
    for body in [
        json!({"query": "x", "k": 0}),
        json!({"query": "x", "k": 1001}),
        json!({"query": "x", "k": "ten"}),
        json!({"query": "x", "k": -1}),
        json!({"query": "x", "filters": {"colour": "red"}}),
        json!({"query": "x", "filters": {"price_min": 10.0, "price_max": 5.0}}),
        json!({"query": "x", "page": 2}),
        json!({"query": 7}),
        json!({"query": "  "}),
        json!({}),
        json!({"query": "x".repeat(2049)}),
    ] {
        let (m, p, b) = search(body.clone());
        expect_error(
            &s,
            m,
            p,
            b,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
    }
    let before = s.app.node.items_appended_ever();
    for body in [
        json!({"op": "upsert", "id": "a"}),
        json!({"op": "upsert", "id": "a", "title": "t", "price": -1.0}),
        json!({"op": "upsert", "id": "", "title": "t"}),
        json!({"op": "rename", "id": "a"}),
        json!([{"op": "upsert", "id": "ok", "title": "fine"}, {"op": "upsert", "id": "b"}]),
        json!([]),
        json!("sofa"),
    ] {
        expect_error(
            &s,
            Method::POST,
            "/v1/items",
            Some(body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
    }
    for body in [
        json!({"user_id": "u", "kind": "stare", "item_id": "a", "ts": "2026-01-01T00:00:00Z"}),
        json!({"user_id": "u", "kind": "click", "ts": "2026-01-01T00:00:00Z"}),
        json!({"user_id": "u", "kind": "click", "item_id": "a", "ts": "yesterday"}),
        json!({"kind": "impression", "request_id": "r", "ts_ms": 1, "items": []}),
    ] {
        expect_error(
            &s,
            Method::POST,
            "/v1/events",
            Some(body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
    }
    // Nothing invalid reached the logs.
    assert_eq!(s.app.node.items_appended_ever(), before);
    s.settle().await;
    assert_eq!(s.app.node.retriever().unwrap().index().len(), 3);

    // 413: body and batch limits.
    let big = json!({"query": "x".repeat(5000)});
    let (m, p, b) = search(big);
    expect_error(&s, m, p, b, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    expect_error(
        &s,
        Method::POST,
        "/v1/items",
        Some(json!(catalog(4))),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;

    // 404: unknown route, unknown user.
    expect_error(
        &s,
        Method::GET,
        "/v2/nothing",
        None,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        &s,
        Method::GET,
        "/v1/users/nobody/profile",
        None,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // 429: every search slot taken.
    {
        let _held = s.app.search_slots.acquire_many(2).await.unwrap();
        let (m, p, b) = search(json!({"query": "sofa"}));
        expect_error(&s, m, p, b, StatusCode::TOO_MANY_REQUESTS, "overloaded").await;
    }
    let (status, _) = s
        .call(Method::POST, "/v1/search", Some(json!({"query": "sofa"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

/// Each scope reaches exactly its routes: a search key only `POST /v1/search`, a read key also
/// every `GET`, a write key everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_scopes_search_read_write() {
    let mut s = server(
        &[
            "--api-keys-search",
            "storefront",
            "--api-keys-read",
            "reader",
            "--api-keys-write",
            "writer",
        ],
        true,
    )
    .await;
    let event =
        json!({"user_id": "u", "kind": "search", "query": "q", "ts": "2026-01-01T00:00:00Z"});
    let item = json!({"op": "upsert", "id": "scoped-1", "title": "a lamp"});
    // (method, path, body, the narrowest key that may call it: 0 search, 1 read, 2 write)
    let routes: Vec<(Method, &str, Option<serde_json::Value>, usize)> = vec![
        (
            Method::POST,
            "/v1/search",
            Some(json!({"query": "lamp"})),
            0,
        ),
        (Method::GET, "/v1/items/scoped-1", None, 1),
        (Method::GET, "/v1/users/u/profile", None, 1),
        (Method::GET, "/v1/models", None, 1),
        (Method::POST, "/v1/items", Some(item), 2),
        (Method::POST, "/v1/events", Some(event), 2),
        (Method::DELETE, "/v1/items/scoped-1", None, 2),
        (Method::DELETE, "/v1/users/u", None, 2),
    ];
    for (rank, key) in ["storefront", "reader", "writer"].into_iter().enumerate() {
        s.api.api_key = Some(key.into());
        for (method, path, body, needed) in &routes {
            let (status, reply) = s.call(method.clone(), path, body.clone()).await;
            if rank >= *needed {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "key {key} must reach {method} {path}: {status} {reply}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "key {key}, {method} {path}: {reply}"
                );
                assert_eq!(reply["error"]["code"], "forbidden");
            }
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_separate_read_and_write() {
    let mut s = server(
        &["--api-keys-read", "reader", "--api-keys-write", "writer"],
        true,
    )
    .await;
    let event =
        json!({"user_id": "u", "kind": "search", "query": "q", "ts": "2026-01-01T00:00:00Z"});
    s.api.api_key = None;
    expect_error(
        &s,
        Method::POST,
        "/v1/search",
        Some(json!({"query": "x"})),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    s.api.api_key = Some("guess".into());
    expect_error(
        &s,
        Method::POST,
        "/v1/search",
        Some(json!({"query": "x"})),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    s.api.api_key = Some("reader".into());
    let (status, _) = s
        .call(Method::POST, "/v1/search", Some(json!({"query": "x"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    expect_error(
        &s,
        Method::POST,
        "/v1/events",
        Some(event.clone()),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        &s,
        Method::DELETE,
        "/v1/users/u",
        None,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    s.api.api_key = Some("writer".into());
    let (status, _) = s.call(Method::POST, "/v1/events", Some(event)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = s
        .call(Method::POST, "/v1/search", Some(json!({"query": "x"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    // The key is checked before the body is read: a request without one is answered
    // while its body is still arriving (it never ends here).
    {
        use tower::ServiceExt;
        for key in [None, Some("reader")] {
            let endless =
                futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
            let mut request = axum::http::Request::builder()
                .method(Method::POST)
                .uri("/v1/events")
                .header("content-type", "application/json");
            if let Some(key) = key {
                request = request.header("authorization", format!("Bearer {key}"));
            }
            let request = request
                .body(axum::body::Body::from_stream(endless))
                .unwrap();
            let response = tokio::time::timeout(
                Duration::from_secs(5),
                s.api.router.clone().oneshot(request),
            )
            .await
            .expect("the server waited for the body of an unauthorised request")
            .unwrap();
            let expected = if key.is_some() {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(response.status(), expected);
        }
    }
    // Operations endpoints stay open for probes and scrapers.
    s.api.api_key = None;
    for path in ["/health", "/ready", "/metrics", "/openapi.json"] {
        let (status, _) = s.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exploration_shows_items_the_ranking_alone_never_shows() {
    // Two items per category: the relevance gap would leave exploration almost nothing to
    // pick from, so it is off here (exploring only among matching items is the default).
    let s = server(
        &[
            "--exploration-share",
            "0.3",
            "--exploration-seed",
            "5",
            "--relevance-gap",
            "10",
        ],
        true,
    )
    .await;
    let (status, _) = s
        .call(Method::POST, "/v1/items", Some(json!(catalog(62))))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for_items(&s, 62).await;
    let mut shown = [
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    ];
    for (explore, seen) in [(false, 0), (true, 1)] {
        // Draws are fixed per request (so its pages hold still): thirty visitors, thirty draws.
        for visitor in 0..30 {
            let (status, body) = s
                .call(
                    Method::POST,
                    "/v1/search",
                    Some(json!({
                        "query": "wireless headphones", "k": 10, "explore": explore,
                        "user_id": format!("visitor-{visitor}"),
                    })),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let items = body["items"].as_array().unwrap();
            assert_eq!(items.len(), 10);
            let explored: Vec<bool> = items.iter().map(|i| i["explored"] == true).collect();
            let expected = if explore { 3 } else { 0 };
            assert_eq!(explored.iter().filter(|e| **e).count(), expected, "{body}");
            // Explored items take the last slots.
            assert!(explored[..10 - expected].iter().all(|e| !e));
            shown[seen].extend(ids(&body));
        }
    }
    assert!(
        shown[1].len() >= shown[0].len() + 5,
        "exploration showed {} distinct items, the ranking alone {}",
        shown[1].len(),
        shown[0].len()
    );
    s.stop().await;
}

/// Items and events for the fault test: the catalog items, then (once the items are
/// stored: a view of an unknown item is a dead letter) views with fixed times.
async fn feed(s: &common::TestServer, items: &[serde_json::Value], events: usize) {
    for chunk in items.chunks(10) {
        let (status, body) = s.call(Method::POST, "/v1/items", Some(json!(chunk))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while s
        .app
        .node
        .store
        .item(items.last().unwrap()["id"].as_str().unwrap())
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "items never stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for batch in 0..events / 10 {
        let views: Vec<serde_json::Value> = (0..10)
            .map(|j| {
                let i = batch * 10 + j;
                json!({
                    "user_id": format!("u{}", i % 7),
                    "kind": "view",
                    "item_id": items[i % items.len()]["id"],
                    "ts": format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60),
                })
            })
            .collect();
        let (status, body) = s.call(Method::POST, "/v1/events", Some(json!(views))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
}

fn dump(s: &common::TestServer) -> String {
    let mut out = Vec::new();
    s.app.node.store.dump(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// A job that panics is restarted by its supervisor from its committed offsets: `/ready`
/// answers 503 naming the job while it is down, `/health` counts the failure and the
/// restart, and the store ends byte for byte as an uninterrupted run's (nothing lost,
/// nothing applied twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_panics_is_restarted_and_loses_nothing() {
    let items = catalog(40);
    let clean = server(&[], true).await;
    feed(&clean, &items, 300).await;
    clean.settle().await;
    let expected = dump(&clean);
    assert!(expected.contains(r#""type":"profile""#) && !expected.contains("dead-letters"));
    clean.stop().await;

    // Small batches of both jobs: the panics land mid-stream, between many commits.
    let s = server(&["--batch-size", "16", "--event-batch-size", "16"], true).await;
    s.app
        .node
        .panic_once_after_next_batch(shelf_engine::EVENT_JOB);
    s.app
        .node
        .panic_once_after_next_batch(shelf_engine::ITEM_JOB);
    let feeding = feed(&s, &items, 300);
    let watching = async {
        // The event job is down between its panic and its restart (100 ms later).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = s.call(Method::GET, "/ready", None).await;
            if status == StatusCode::SERVICE_UNAVAILABLE && body["error"]["code"] == "job_down" {
                return body;
            }
            assert!(Instant::now() < deadline, "no job was ever shown down");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (_, down) = tokio::join!(feeding, watching);
    let message = down["error"]["message"].as_str().unwrap();
    assert!(message.contains("panicked: fault injected"), "{message}");
    s.settle().await;
    wait_for_items(&s, 40).await;
    let (_, health) = s.call(Method::GET, "/health", None).await;
    for job in [shelf_engine::EVENT_JOB, shelf_engine::ITEM_JOB] {
        assert_eq!(health["jobs"][job]["restarts"], 1, "{health}");
        assert_eq!(health["jobs"][job]["state"], "running", "{health}");
    }
    let text = s.app.metrics.render(&s.app.node);
    assert!(
        text.contains("shelf_job_restarts_total{job=\"event-job\"} 1"),
        "{text}"
    );
    assert_eq!(dump(&s), expected);
    s.stop().await;
}

/// A lexical commit that fails on disk (an I/O error injected into tantivy's directory) is
/// repaired: the batch is indexed again from the log, or, when that commit fails too, the
/// index is rebuilt from the store. Either way it ends holding exactly what indexing the
/// stored items without a fault holds, and every item is found by its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lexical_commit_that_fails_on_disk_is_repaired() {
    let s = server(&["--batch-size", "8"], true).await;
    let lexical = std::sync::Arc::clone(s.app.node.retriever().unwrap().lexical().unwrap());
    let items = catalog(36);
    let wait_for_documents = |n: u64| {
        let lexical = std::sync::Arc::clone(&lexical);
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while lexical.len() != n {
                assert!(
                    Instant::now() < deadline,
                    "{} documents, not {n}",
                    lexical.len()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let post = |chunk: &[serde_json::Value]| s.call(Method::POST, "/v1/items", Some(json!(chunk)));
    assert_eq!(post(&items[..12]).await.0, StatusCode::ACCEPTED);
    wait_for_documents(12).await;
    // One failure: the repair from the log commits.
    lexical.fail_next_commits(1);
    assert_eq!(post(&items[12..24]).await.0, StatusCode::ACCEPTED);
    wait_for_documents(24).await;
    // Two: the repair's commit fails too, and the index is rebuilt from the store.
    lexical.fail_next_commits(2);
    assert_eq!(post(&items[24..]).await.0, StatusCode::ACCEPTED);
    wait_for_documents(36).await;
    wait_for_items(&s, 36).await;

    let fresh = shelf_lexical::LexicalIndex::in_memory();
    for item in &items {
        let stored = s.app.node.store.item(item["id"].as_str().unwrap()).unwrap();
        fresh.upsert(&stored.unwrap()).unwrap();
    }
    fresh.commit(0).unwrap();
    assert_eq!(lexical.documents().unwrap(), fresh.documents().unwrap());
    for item in &items {
        let id = item["id"].as_str().unwrap();
        let (status, body) = s
            .call(
                Method::POST,
                "/v1/search",
                Some(json!({"query": id, "mode": "lexical", "k": 1})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["items"][0]["id"], id, "{body}");
    }
    s.stop().await;
}

/// Log retention deletes only whole segments of records already applied (and, for items,
/// already in an index snapshot); the active segment and everything unapplied stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_retention_deletes_only_applied_segments() {
    let s = server(
        &[
            "--log-segment-bytes",
            "2048",
            "--log-retention-bytes",
            "0",
            "--snapshot-interval-secs",
            "0",
        ],
        true,
    )
    .await;
    let items = catalog(30);
    feed(&s, &items, 200).await;
    s.settle().await;
    wait_for_items(&s, 30).await;
    // The snapshot is written after the batch that made the items searchable.
    let manifest = s.dir.path().join("index").join("manifest.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
        .and_then(|m| m["position"].as_u64())
        != Some(30)
    {
        assert!(Instant::now() < deadline, "no snapshot at position 30");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let segments = |topic: &str| {
        std::fs::read_dir(s.dir.path().join("log").join(topic))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count()
    };
    let (items_before, events_before) = (segments("items"), segments("events"));
    assert!(events_before > 5, "{events_before} event segments");
    let deleted = s.app.node.apply_log_retention().unwrap();
    assert!(deleted > 0);
    assert_eq!(segments("events"), 1, "only the active segment stays");
    assert!(segments("items") < items_before);
    // Nothing applied was lost, and new records still flow.
    let before = dump(&s);
    let (status, _) = s
        .call(
            Method::POST,
            "/v1/events",
            Some(json!([{"user_id": "u0", "kind": "view", "item_id": items[0]["id"], "ts": "2026-01-02T00:00:00Z"}])),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    s.settle().await;
    assert_ne!(dump(&s), before);
    s.stop().await;
}

/// `promtool check metrics` (Prometheus' own linter: types, names, units, histogram shape)
/// finds nothing in `text`. Skipped with a message where promtool is missing, except under
/// `CI=true` (`.ci/run` installs Debian's prometheus package, which ships it).
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping promtool check metrics: promtool not runnable ({e})");
            return;
        }
        Err(e) => panic!("promtool is needed under CI=true: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
