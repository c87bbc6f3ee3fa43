//! `POST /v1/recommend` through the router: every placement on a small shop with a known
//! browsing history, the exclusions, and the 422s and empty lists of bad requests.

use crate::common;

use axum::http::{Method, StatusCode};
use common::{catalog, index_catalog, server};
use serde_json::{json, Value};

async fn shop(n: usize) -> (common::TestServer, Vec<Value>) {
    let items = catalog(n);
    let s = server(&["--exploration-share", "0"], true).await;
    index_catalog(&s, &items).await;
    (s, items)
}

async fn recommend(s: &common::TestServer, body: Value) -> Value {
    let (status, response) = s
        .call(Method::POST, "/v1/recommend", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body} -> {response}");
    response
}

fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn event(user: &str, kind: &str, item: &str, minute: u32) -> Value {
    json!({"user_id": user, "kind": kind, "item_id": item,
           "ts": format!("2026-11-20T10:{minute:02}:00Z")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_placement_serves_its_list() {
    let (s, items) = shop(60).await;
    let id = |i: usize| items[i]["id"].as_str().unwrap().to_string();
    let category = |i: usize| items[i]["category"].as_str().unwrap().to_string();
    // Shoppers who viewed item 0 then carted item 1 (so 1 is "bought together" with 0),
    // and item 2 trending (bought by many).
    let mut events = Vec::new();
    for u in 0..6 {
        let user = format!("shopper-{u}");
        events.push(event(&user, "view", &id(0), 1));
        events.push(event(&user, "add_to_cart", &id(1), 2));
        events.push(event(&user, "purchase", &id(2), 3));
    }
    // u1: item 3 viewed three times, item 4 once, item 5 bought; item 6 viewed last.
    for minute in [10, 11, 12] {
        events.push(event("u1", "view", &id(3), minute));
    }
    events.push(event("u1", "view", &id(4), 13));
    events.push(event("u1", "purchase", &id(5), 14));
    events.push(event("u1", "view", &id(6), 15));
    let (status, body) = s
        .call(Method::POST, "/v1/events", Some(json!(events)))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    s.settle().await;

    // recently_viewed: newest first, each item once, in recency order (not re-ranked).
    let body = recommend(&s, json!({"placement": "recently_viewed", "user_id": "u1"})).await;
    assert_eq!(ids(&body), [id(6), id(5), id(4), id(3)], "{body}");
    assert_eq!(body["placement"], "recently_viewed");
    let page2 = recommend(
        &s,
        json!({"placement": "recently_viewed", "user_id": "u1", "k": 2, "offset": 2}),
    )
    .await;
    assert_eq!(ids(&page2), [id(4), id(3)], "{page2}");

    // bought_together: the item carted with item 0 comes first; item 0 itself never.
    let body = recommend(
        &s,
        json!({"placement": "bought_together", "item_ids": [id(0)], "explain": true}),
    )
    .await;
    let got = ids(&body);
    assert!(!got.contains(&id(0)), "{body}");
    assert!(got.contains(&id(1)), "{body}");
    let sources = body["items"][0]["sources"].to_string();
    assert!(sources.contains("covisit"), "{body}");

    // similar_items: content neighbours and co-visits, never the item itself.
    let body = recommend(
        &s,
        json!({"placement": "similar_items", "item_id": id(0), "k": 20, "explain": true}),
    )
    .await;
    let got = ids(&body);
    assert!(!got.contains(&id(0)), "{body}");
    assert!(got.contains(&id(1)), "the co-visited item: {body}");
    assert!(body.to_string().contains("similar_ann"), "{body}");
    assert_eq!(got.len(), 20, "{body}");

    // trending: item 2 leads overall, in its category and in its top-level department.
    let body = recommend(&s, json!({"placement": "trending"})).await;
    assert_eq!(ids(&body)[0], id(2), "{body}");
    let leaf = category(2);
    let department = leaf.split('/').next().unwrap().to_string();
    for scope in [&leaf, &department] {
        let body = recommend(&s, json!({"placement": "trending", "category": scope})).await;
        let got = ids(&body);
        assert_eq!(got[0], id(2), "{scope}: {body}");
        for item in &got {
            let i = items.iter().position(|it| it["id"] == *item).unwrap();
            assert!(category(i).starts_with(scope.as_str()), "{scope}: {body}");
        }
    }
    // A category no event touched has no trending list: empty, with a reason.
    let body = recommend(&s, json!({"placement": "trending", "category": "Nowhere"})).await;
    assert!(
        ids(&body).is_empty() && body["reason"].is_string(),
        "{body}"
    );

    // for_user: by default without what u1 bought (5) or viewed three times (3); item 4,
    // viewed once, may come back. exclude_ids holds.
    let body = recommend(
        &s,
        json!({"placement": "for_user", "user_id": "u1", "k": 60}),
    )
    .await;
    let got = ids(&body);
    assert!(!got.contains(&id(3)) && !got.contains(&id(5)), "{body}");
    assert!(!got.is_empty(), "{body}");
    let body = recommend(
        &s,
        json!({"placement": "for_user", "user_id": "u1", "k": 60, "exclude_seen": false,
               "exclude_ids": [id(4)]}),
    )
    .await;
    let unfiltered = ids(&body);
    assert!(!unfiltered.contains(&id(4)), "{body}");
    assert!(
        unfiltered.contains(&id(3)) || unfiltered.contains(&id(5)),
        "exclude_seen false keeps seen items: {body}"
    );
    // A new visitor asking within a category gets that category's trending items.
    let body = recommend(
        &s,
        json!({"placement": "for_user", "user_id": "new-visitor",
               "filters": {"category_prefix": department}}),
    )
    .await;
    assert_eq!(ids(&body).first(), Some(&id(2)), "{body}");
    // /v1/search without a query is still a recommendation (for_user, nothing excluded).
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(json!({"user_id": "u1", "k": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["placement"], "for_user");
    let metrics = s.app.metrics.render(&s.app.node);
    assert!(
        metrics.contains("shelf_recommendations_total{placement=\"trending\",empty=\"true\"} 1"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field_and_unknown_items_get_a_reason() {
    let (s, items) = shop(12).await;
    let id0 = items[0]["id"].as_str().unwrap();
    for (body, names) in [
        (json!({"placement": "also_liked"}), "also_liked"),
        (json!({"user_id": "u"}), "placement"),
        (json!({"placement": "for_user"}), "user_id"),
        (json!({"placement": "recently_viewed"}), "user_id"),
        (json!({"placement": "similar_items"}), "item_id"),
        (json!({"placement": "bought_together"}), "item_ids"),
        (
            json!({"placement": "for_user", "user_id": "u", "item_id": id0}),
            "item_id",
        ),
        (
            json!({"placement": "similar_items", "item_id": id0, "category": "A"}),
            "category",
        ),
        (
            json!({"placement": "trending", "k": 10, "offset": 995}),
            "offset + k",
        ),
        (
            json!({"placement": "trending", "filters": {"price_min": -1}}),
            "price_min",
        ),
        (
            json!({"placement": "bought_together", "item_ids": (0..51).map(|n| n.to_string()).collect::<Vec<_>>()}),
            "item_ids",
        ),
        (json!({"placement": "trending", "colour": "red"}), "colour"),
    ] {
        let (status, response) = s
            .call(Method::POST, "/v1/recommend", Some(body.clone()))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {response}"
        );
        assert!(response.to_string().contains(names), "{body}: {response}");
    }
    for body in [
        json!({"placement": "similar_items", "item_id": "no-such-item"}),
        json!({"placement": "bought_together", "item_ids": ["no-such-item"]}),
        json!({"placement": "recently_viewed", "user_id": "nobody"}),
    ] {
        let response = recommend(&s, body.clone()).await;
        assert!(ids(&response).is_empty(), "{body}: {response}");
        assert!(response["reason"].is_string(), "{body}: {response}");
    }
    let unknown = recommend(&s, json!({"placement": "similar_items", "item_id": "gone"})).await;
    assert!(
        unknown["reason"]
            .as_str()
            .unwrap()
            .contains("unknown item `gone`"),
        "{unknown}"
    );
    s.stop().await;
}
