//! Hostile input: 10,000 generated malformed or hostile requests through the real router
//! get only 4xx answers, the server stays healthy, and the store is unchanged.

use crate::common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use tower::ServiceExt;

const WRITE_KEY: &str = "hostile-test-write-key";
const READ_KEY: &str = "hostile-test-read-key";
const REQUESTS: usize = 10_000;

/// One generated request: what it is (for the report), method, path, key and body.
struct Hostile {
    kind: &'static str,
    method: Method,
    path: String,
    key: Option<&'static str>,
    body: Vec<u8>,
}

fn item(rng: &mut SmallRng) -> serde_json::Value {
    json!({"op": "upsert", "id": format!("sku-{}", rng.random_range(0..1000)), "title": "A lamp"})
}

fn event(rng: &mut SmallRng) -> serde_json::Value {
    json!({"user_id": format!("u{}", rng.random_range(0..100)), "kind": "view",
           "item_id": "sku-1", "ts": "2026-01-01T00:00:00Z"})
}

/// A request that must be refused with a 4xx, drawn from `rng`.
fn hostile(rng: &mut SmallRng) -> Hostile {
    let post = |kind, path: &str, key, body: Vec<u8>| Hostile {
        kind,
        method: Method::POST,
        path: path.to_string(),
        key,
        body,
    };
    let write = Some(WRITE_KEY);
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let huge = || "x".repeat(1 << 20);
    match rng.random_range(0..20) {
        0 => {
            // Valid JSON cut short.
            let mut body = json(json!([item(rng), item(rng)]));
            let cut = rng.random_range(1..body.len());
            body.truncate(cut);
            post("truncated json", "/v1/items", write, body)
        }
        1 => {
            let n = rng.random_range(1..512);
            let body: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let path = ["/v1/items", "/v1/events", "/v1/search"][rng.random_range(0..3)];
            post("random bytes", path, write, body)
        }
        2 => {
            let bad = [
                json!({"query": 5}),
                json!({"query": ["a"]}),
                json!({"query": "x", "k": "ten"}),
                json!({"query": "x", "k": -1}),
                json!({"query": "x", "k": 1e12}),
                json!({"query": "x", "k": 0.5}),
                json!({"query": "x", "filters": {"price_min": "cheap"}}),
                json!({"query": "x", "filters": {"price_min": 10, "price_max": 1}}),
                json!({"query": "x", "user_id": 7}),
                json!({"query": null, "user_id": "u\u{0}1"}),
                json!({"query": "x", "facets": ["colour"]}),
                json!({"query": "x", "sort": "cheapest"}),
                json!({"query": "x", "mode": "boolean"}),
                json!({"query": "x", "k": 10, "offset": 991}),
                json!({"query": "x", "offset": -1}),
                json!({"query": "x", "facets": ["price"], "price_buckets": [10, 5]}),
                json!([]),
                json!("query"),
            ];
            post(
                "wrong types",
                "/v1/search",
                Some(READ_KEY),
                json(bad[rng.random_range(0..bad.len())].clone()),
            )
        }
        3 => {
            let mut i = item(rng);
            i[format!("field{}", rng.random_range(0..9))] = json!(1);
            post("unknown field", "/v1/items", write, json(json!([i])))
        }
        4 => {
            let mut e = event(rng);
            e["colour"] = json!("red");
            post("unknown field", "/v1/events", write, json(json!([e])))
        }
        5 => {
            let id = match rng.random_range(0..4) {
                0 => "sku\u{0}1".to_string(),
                1 => "x".repeat(513),
                2 => "   ".to_string(),
                _ => String::new(),
            };
            let mut i = item(rng);
            i["id"] = json!(id);
            post("bad id", "/v1/items", write, json(json!([i])))
        }
        6 => {
            let mut e = event(rng);
            let field = ["user_id", "item_id", "request_id"][rng.random_range(0..3)];
            e[field] = json!(if rng.random() {
                "u\u{0}x".to_string()
            } else {
                "u".repeat(600)
            });
            post("bad id", "/v1/events", write, json(json!([e])))
        }
        7 => {
            let mut i = item(rng);
            let field = ["title", "description", "brand", "category"][rng.random_range(0..4)];
            i[field] = json!(huge());
            post("1 MB string", "/v1/items", write, json(json!([i])))
        }
        8 => post(
            "1 MB string",
            "/v1/search",
            Some(READ_KEY),
            json(json!({"query": huge()})),
        ),
        9 => {
            // A body over the limit, without a key: refused before it is read.
            let path = ["/v1/items", "/v1/events"][rng.random_range(0..2)];
            post("9 MB without a key", path, None, vec![b' '; 9 << 20])
        }
        10 => post("9 MB with a key", "/v1/items", write, vec![b'['; 9 << 20]),
        11 => {
            let depth = rng.random_range(200..5000);
            let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            post("deep nesting", "/v1/events", write, body.into_bytes())
        }
        12 => {
            let e = [
                json!({"user_id": "u", "kind": "teleport", "item_id": "sku-1", "ts": "2026-01-01T00:00:00Z"}),
                json!({"user_id": "u", "kind": "view", "item_id": "sku-1", "ts": "yesterday"}),
                json!({"user_id": "u", "kind": "view", "item_id": "sku-1", "ts": 1767225600}),
                json!({"user_id": "u", "kind": "view", "ts": "2026-01-01T00:00:00Z"}),
                json!({"user_id": "u", "kind": "search", "ts": "2026-01-01T00:00:00Z"}),
                json!({"user_id": "u", "kind": "search", "query": huge(), "ts": "2026-01-01T00:00:00Z"}),
            ];
            post(
                "bad event",
                "/v1/events",
                write,
                json(json!([e[rng.random_range(0..e.len())].clone()])),
            )
        }
        13 => {
            let i = [
                json!({"op": "upsert", "id": "sku-1", "title": "x", "price": -3}),
                json!({"op": "upsert", "id": "sku-1", "title": ""}),
                json!({"op": "upsert", "id": "sku-1"}),
                json!({"op": "explode", "id": "sku-1"}),
                json!({"op": "upsert", "id": "sku-1", "title": "x", "tags": vec!["t"; 101]}),
                json!({"op": "upsert", "id": "sku-1", "title": "x", "in_stock": "yes"}),
            ];
            post(
                "bad item",
                "/v1/items",
                write,
                json(json!([i[rng.random_range(0..i.len())].clone()])),
            )
        }
        14 => Hostile {
            kind: "unknown path",
            method: Method::GET,
            path: format!(
                "/v1/{}",
                ["admin", "items/../../etc", "users", "x%00y"][rng.random_range(0..4)]
            ),
            key: write,
            body: Vec::new(),
        },
        15 => Hostile {
            kind: "wrong method",
            method: [Method::PUT, Method::PATCH, Method::GET][rng.random_range(0..3)].clone(),
            path: ["/v1/search", "/v1/events"][rng.random_range(0..2)].to_string(),
            key: write,
            body: Vec::new(),
        },
        16 => {
            // Writes with a read key or a wrong key.
            let key = if rng.random() {
                Some(READ_KEY)
            } else {
                Some("guess")
            };
            post("wrong key", "/v1/items", key, json(json!([item(rng)])))
        }
        17 => {
            let r = [
                json!({"placement": "home_page", "user_id": "u1"}),
                json!({"placement": "for_user", "user_id": "u1",
                       "rules": {"pin": [{"id": "sku-1", "position": 1}], "block": ["sku-1"]}}),
                json!({"placement": "for_user", "user_id": "u1",
                       "rules": {"diversity": {"mmr_lambda": 2}}}),
                json!({"placement": "trending", "rules": {"bury": ["sku-1"]}}),
                json!({"placement": "for_user", "user_id": "u1",
                       "rules": {"boost": [{"filter": {"brand": "x"}, "factor": 0}]}}),
            ];
            post(
                "bad recommendation",
                "/v1/recommend",
                write,
                json(r[rng.random_range(0..r.len())].clone()),
            )
        }
        18 => {
            let (placement, body) = [
                ("home_page", json(json!({}))),
                (
                    "search",
                    json(json!({"pin": [{"id": "a", "position": 1}], "block": ["a"]})),
                ),
                ("for_user", json(json!({"diversity": {"max_per_brand": 0}}))),
                ("trending", b"{\"block\": [".to_vec()),
            ][rng.random_range(0..4)]
            .clone();
            Hostile {
                kind: "bad stored rules",
                method: Method::PUT,
                path: format!("/v1/rules/{placement}"),
                key: write,
                body,
            }
        }
        _ => Hostile {
            kind: "bad user id in path",
            method: if rng.random() {
                Method::DELETE
            } else {
                Method::GET
            },
            path: format!(
                "/v1/users/{}",
                if rng.random() {
                    "u%00x".to_string()
                } else {
                    "u".repeat(600)
                }
            ),
            key: write,
            body: Vec::new(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hostile_requests_get_4xx_and_change_nothing() {
    let s = common::server(
        &["--api-keys-write", WRITE_KEY, "--api-keys-read", READ_KEY],
        true,
    )
    .await;
    let seed = |body: serde_json::Value| {
        Request::post("/v1/items")
            .header("x-api-key", WRITE_KEY)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    };
    let response = s
        .api
        .router
        .clone()
        .oneshot(seed(
            json!([{"op": "upsert", "id": "sku-1", "title": "A real lamp"}]),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    s.settle().await;
    let dump = || {
        let mut out = Vec::new();
        s.app.node.store.dump(&mut out).unwrap();
        out
    };
    let before = dump();

    let mut rng = SmallRng::seed_from_u64(17);
    let mut by_kind: BTreeMap<&str, BTreeMap<u16, usize>> = BTreeMap::new();
    for n in 0..REQUESTS {
        let h = hostile(&mut rng);
        let mut request = Request::builder().method(h.method.clone()).uri(&h.path);
        if let Some(key) = h.key {
            request = request.header("x-api-key", key);
        }
        let request = request.body(Body::from(h.body)).unwrap();
        let response = s.api.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            status.is_client_error(),
            "request {n} ({}: {} {}) got {status}: {}",
            h.kind,
            h.method,
            h.path,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        *by_kind
            .entry(h.kind)
            .or_default()
            .entry(status.as_u16())
            .or_default() += 1;
    }
    eprintln!("statuses by kind of request: {by_kind:?}");
    assert!(by_kind.len() >= 15, "{by_kind:?}");

    s.settle().await;
    for path in ["/health", "/ready"] {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = s.api.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    assert!(dump() == before, "the store changed");
    assert!(s.app.node.rules.all().is_empty(), "rules were stored");

    // Shoppers' text is never a query language: whatever it holds, a search answers 200
    // with results or an empty list.
    let emoji = "🛋️".repeat(2048 / "🛋️".len());
    let chinese = "灰色沙发".repeat(2048 / "灰色沙发".len());
    for query in [
        "\"lamp",
        "title:lamp",
        "lamp AND OR NOT",
        "(lamp",
        "[a TO z]",
        "lamp~2",
        "lamp^10",
        "*",
        "?",
        "\\",
        "+-&&||!(){}[]^\"~*?:\\/",
        "sku-1",
        "id:sku-1",
        "NOT lamp",
        &emoji,
        &chinese,
        "\u{200b}",
        "lamp\u{0301}",
        "ｌａｍｐ",
    ] {
        for mode in ["hybrid", "lexical", "semantic"] {
            let body = json!({"query": query, "mode": mode, "facets": ["brand", "category"]});
            let request = Request::post("/v1/search")
                .header("x-api-key", READ_KEY)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            let response = s.api.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let text = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                status,
                StatusCode::OK,
                "{body}: {}",
                String::from_utf8_lossy(&text)
            );
        }
    }
    s.stop().await;
}
