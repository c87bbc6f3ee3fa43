//! Personalisation works: after simulated shoppers with hidden preferences have searched
//! and clicked through the API, their results for the same query fit their preferences
//! better than anonymous results (NDCG@10 against the hidden preferences). Broad queries
//! (`living room furniture`) are where a profile matters most; product queries (`sofa`)
//! leave it only the colour and price tier within one category to get right.

mod common;

use axum::http::StatusCode;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use shelf_server::demo::shop::Shop;
use shelf_server::demo::users::{self, Facets, QueryKind};
use std::time::{Duration, Instant};

const ITEMS: usize = 1_240;
const USERS: usize = 24;
const SESSIONS_PER_USER: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalised_results_fit_hidden_preferences_better() {
    let s = common::server(&[], true).await;
    let shop = Shop::generate(ITEMS, 11);
    let records: Vec<serde_json::Value> = shop
        .products
        .iter()
        .map(|p| serde_json::to_value(shelf_types::ItemRecord::Upsert(p.item.clone())).unwrap())
        .collect();
    for chunk in records.chunks(500) {
        let (status, body) = s
            .call(
                axum::http::Method::POST,
                "/v1/items",
                Some(serde_json::json!(chunk)),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while s.app.retriever().unwrap().index().len() < ITEMS {
        assert!(Instant::now() < deadline, "catalog not indexed in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let facets = Facets::of(&shop);
    let shoppers = users::users(USERS, 5);
    let mut rng = SmallRng::seed_from_u64(9);
    let mut clicks = 0;
    for _ in 0..SESSIONS_PER_USER {
        for user in &shoppers {
            clicks += users::session(&s.api, &facets, user, &mut rng)
                .await
                .unwrap()
                .clicks;
        }
    }
    s.settle().await;
    assert!(
        clicks > USERS as u64,
        "too few clicks to learn from: {clicks}"
    );

    let mut gains = Vec::new();
    for kind in [QueryKind::Broad, QueryKind::Product] {
        let (personal, anonymous) =
            users::personalization_gain(&s.api, &facets, &shoppers, kind, 13)
                .await
                .unwrap();
        eprintln!(
            "{kind:?} queries ({} of them, after {clicks} clicks): NDCG@10 personalised {personal:.4}, anonymous {anonymous:.4}",
            USERS * 2
        );
        gains.push((kind, personal, anonymous));
    }
    let (_, personal, anonymous) = gains[0];
    assert!(
        personal > anonymous + 0.05,
        "broad queries: personalised NDCG@10 {personal:.4} is not clearly above anonymous {anonymous:.4}"
    );
    let (_, personal, anonymous) = gains[1];
    assert!(
        personal > anonymous,
        "product queries: personalised NDCG@10 {personal:.4} is below anonymous {anonymous:.4}"
    );
    s.stop().await;
}
