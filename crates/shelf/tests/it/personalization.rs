//! Personalisation works: after simulated shoppers with hidden preferences have searched
//! and clicked through the API, their results for the same query fit their preferences
//! better than anonymous results (NDCG@10 against the hidden preferences). Broad queries
//! (`living room furniture`) are where a profile matters most; product queries (`sofa`)
//! leave it only the colour and price tier within one category to get right.

use crate::common;

use axum::http::StatusCode;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use shelf_lab::demo::shop::Shop;
use shelf_lab::demo::users::{self, Facets, QueryKind};
use std::time::{Duration, Instant};

const ITEMS: usize = 1_240;
const USERS: usize = 24;
const SESSIONS_PER_USER: usize = 12;
/// Sessions after the personalisation measurements, so the trainer has enough clicks and
/// its validation part (the newest impressions) is real sessions.
const TRAINING_SESSIONS_PER_USER: usize = 80;
/// Sessions per user and ranker of the online comparison.
const AB_SESSIONS_PER_USER: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalised_results_fit_hidden_preferences_better() {
    // The background trainer retrains once enough impressions are logged: after the
    // sessions and measurements below (about 4,000 shown items), most of the way through
    // the training sessions (19,200 more).
    let s = common::server(
        &[
            "--train-interval-secs",
            "1",
            "--train-min-new-examples",
            "20000",
        ],
        true,
    )
    .await;
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
    while s.app.node.retriever().unwrap().index().len() < ITEMS {
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
    // A query outside a shopper's tastes stays on topic: the profile re-ranks, it does not
    // override the query.
    // Some product words belong to two categories (men's and women's jackets), so the
    // anonymous results are the yardstick.
    let mut on_topic = [0usize; 2];
    for (u, user) in shoppers.iter().enumerate() {
        let leaf = (0..Shop::leaves())
            .map(|l| (l + 7 * u) % Shop::leaves())
            .find(|l| !user.leaves.contains(l))
            .unwrap();
        let query = Shop::query_for(leaf, None, &mut rng);
        for (personal, count) in on_topic.iter_mut().enumerate() {
            let mut body = serde_json::json!({"query": query, "k": 5, "explore": false});
            if personal == 1 {
                body["user_id"] = serde_json::json!(user.id);
            }
            let (status, body) = s
                .call(axum::http::Method::POST, "/v1/search", Some(body))
                .await;
            assert_eq!(status, StatusCode::OK);
            *count += body["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["category"] == Shop::leaf_path(leaf))
                .count();
        }
    }
    let [anonymous_share, personal_share] = on_topic.map(|n| n as f64 / (USERS * 5) as f64);
    eprintln!(
        "off-profile queries: share of the top 5 in the asked category: personalised {personal_share:.3}, anonymous {anonymous_share:.3}"
    );
    assert!(
        personal_share >= anonymous_share - 0.1,
        "personalisation overrode the query: {personal_share:.3} on topic vs {anonymous_share:.3} anonymous"
    );

    let (_, personal, anonymous) = gains[0];
    assert!(
        personal > anonymous + 0.05,
        "broad queries: personalised NDCG@10 {personal:.4} is not clearly above anonymous {anonymous:.4}"
    );
    // Within one category the profile has only colour and price tier to go on, and MiniLM
    // barely encodes colour: personalisation must not hurt there (measured gain ~+0.02).
    let (_, personal, anonymous) = gains[1];
    assert!(
        personal > anonymous - 0.02,
        "product queries: personalised NDCG@10 {personal:.4} is below anonymous {anonymous:.4}"
    );

    // More shopping, so the newest impressions (the validation part) are real sessions
    // rather than the measurement's searches, which nobody clicked.
    for _ in 0..TRAINING_SESSIONS_PER_USER {
        for user in &shoppers {
            users::session(&s.api, &facets, user, &mut rng)
                .await
                .unwrap();
        }
    }
    s.settle().await;

    // The background trainer trains on the logged impressions, labelled by the clicks, and
    // promotes the model only if it ranks the held-out impressions (scored at the serving
    // position, as searches are) at least as well as the prior.
    let deadline = Instant::now() + Duration::from_secs(120);
    let model = loop {
        if let Some(model) = shelf_node::models::list(&s.app.node.config.data_dir)
            .unwrap()
            .pop()
        {
            break model;
        }
        assert!(
            Instant::now() < deadline,
            "the background trainer trained no model"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let r = &model.report;
    hidden_relevance_on_held_out_clicks(&s, &facets, &shoppers, r.validation_examples);
    eprintln!(
        "trained {}: position-matched validation AUC {:.4} vs prior {:.4} (best epoch {} of {})",
        model.version,
        r.validation_position_matched_auc,
        r.prior_validation_position_matched_auc,
        r.best_epoch,
        r.epochs_run
    );
    eprintln!(
        "trained {}: validation AUC at the serving position {:.4} (with logged positions {:.4}) vs prior {:.4}, clicks NDCG@10 {:.4} vs prior {:.4}, log-loss {:.4}, {} / {} examples, importance {:?}",
        model.version,
        r.validation_auc,
        r.validation_auc_logged_positions,
        r.prior_validation_auc,
        r.validation_clicks_ndcg_at_10,
        r.prior_validation_clicks_ndcg_at_10,
        r.validation_log_loss,
        r.train_examples,
        r.validation_examples,
        r.importance
    );
    // The model learned something from the clicks (position included).
    assert!(r.validation_auc_logged_positions > 0.55, "{r:?}");
    let promoted = r.validation_position_matched_auc >= r.prior_validation_position_matched_auc;
    let expected_live = if promoted {
        model.version.as_str()
    } else {
        "prior"
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = s.call(axum::http::Method::GET, "/v1/models", None).await;
        if body["live"] == expected_live {
            assert_eq!(body["models"][0]["live"], promoted, "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "live model is not {expected_live}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = s
        .call(
            axum::http::Method::POST,
            "/v1/search",
            Some(serde_json::json!({"query": "sofa", "k": 3, "explain": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["model"], expected_live);
    for item in body["items"].as_array().unwrap() {
        let sum: f64 = item["explanation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["contribution"].as_f64().unwrap())
            .sum();
        assert!(
            (sum - item["score"].as_f64().unwrap()).abs() < 1e-3,
            "{item}"
        );
    }
    // `shelf eval ctr` reads the same data directory (read-only, beside the server).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shelf"))
        .args(["eval", "ctr", "--data-dir"])
        .arg(&s.app.node.config.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["model"], "prior");
    assert!(rows.iter().any(|r| r["model"] == model.version.as_str()));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    // The live model against the prior on the same state and the same queries (the ranker
    // swaps in between searches, as a promotion does).
    let (broad_trained, _) =
        users::personalization_gain(&s.api, &facets, &shoppers, QueryKind::Broad, 13)
            .await
            .unwrap();
    let retriever = s.app.node.retriever().unwrap();
    let live = retriever.ranker();
    retriever.set_ranker(std::sync::Arc::new(shelf_rank::PriorRanker::default()));
    let (broad_prior, _) =
        users::personalization_gain(&s.api, &facets, &shoppers, QueryKind::Broad, 13)
            .await
            .unwrap();
    retriever.set_ranker(std::sync::Arc::clone(&live));
    eprintln!(
        "Broad queries, same state: NDCG@10 personalised {broad_trained:.4} ranked by {expected_live}, {broad_prior:.4} by the prior"
    );
    // Online, as an A/B test would: the same shoppers and queries served by each ranker,
    // clicks measured on what was served.
    let online_trained = users::sessions(&s.api, &facets, &shoppers, AB_SESSIONS_PER_USER, 17)
        .await
        .unwrap();
    retriever.set_ranker(std::sync::Arc::new(shelf_rank::PriorRanker::default()));
    let online_prior = users::sessions(&s.api, &facets, &shoppers, AB_SESSIONS_PER_USER, 17)
        .await
        .unwrap();
    retriever.set_ranker(live);
    eprintln!(
        "online, {} searches each: clicks NDCG@10 {:.4} and {:.4} clicks per search ranked by {expected_live}, {:.4} and {:.4} by the prior",
        online_prior.searches,
        online_trained.clicks_ndcg_at_10(),
        online_trained.clicks_per_search(),
        online_prior.clicks_ndcg_at_10(),
        online_prior.clicks_per_search()
    );
    // With about 16,500 shown items to learn from, the model is not worse than the prior on
    // the position-matched AUC (measured: +0.010 to +0.014, and promoted), and whatever
    // ranks ranks at least as well as the prior against the hidden tastes (measured:
    // +0.036 to +0.046) and online.
    assert!(
        r.validation_position_matched_auc > r.prior_validation_position_matched_auc - 0.01,
        "the trained model is worse than the prior: {r:?}"
    );
    assert!(
        broad_trained >= broad_prior - 0.02,
        "{expected_live}: NDCG@10 {broad_trained:.4} against the prior's {broad_prior:.4}"
    );
    assert!(
        online_trained.clicks_per_search() >= online_prior.clicks_per_search() - 0.3,
        "online: {online_trained:?} ranked by {expected_live} against {online_prior:?} by the prior"
    );
    bought_together_is_recommended(&s, &shop, &shoppers).await;
    s.stop().await;
}

/// Shoppers who clicked an item often went on to its companion (bought together: another
/// category, other words, so content similarity cannot find it). A new visitor who has
/// just viewed such an item is recommended its companion, and only co-visitation proposes
/// it. Checked with the prior; the live (trained) model's figure is reported: it learned
/// from search clicks, where co-visitation matters less.
async fn bought_together_is_recommended(
    s: &common::TestServer,
    shop: &Shop,
    shoppers: &[users::SimUser],
) {
    // Items of the shoppers' categories with a companion, whose co-visitation the event
    // job has seen at least once (the shoppers did not click every item).
    let probes: Vec<usize> = (0..shop.products.len())
        .filter(|&i| {
            let Some(c) = shop.companion(i) else {
                return false;
            };
            let list = s
                .app
                .node
                .store
                .covisits(shop.products[i].item.id.as_str())
                .unwrap();
            shoppers
                .iter()
                .any(|u| u.leaves.contains(&shop.products[i].leaf))
                && list.is_some_and(|l| l.score(shop.products[c].item.id.as_str()) > 0.0)
        })
        .take(40)
        .collect();
    assert!(
        probes.len() >= 20,
        "the event job learned only {} companions",
        probes.len()
    );
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let events: Vec<serde_json::Value> = probes
        .iter()
        .map(|&i| {
            serde_json::json!({
                "user_id": format!("visitor-{i}"), "kind": "view",
                "item_id": shop.products[i].item.id.as_str(), "ts": now,
            })
        })
        .collect();
    let (status, body) = s
        .call(
            axum::http::Method::POST,
            "/v1/events",
            Some(serde_json::json!(events)),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    s.settle().await;
    let retriever = s.app.node.retriever().unwrap();
    let live = retriever.ranker();
    let prior: std::sync::Arc<dyn shelf_types::Ranker> =
        std::sync::Arc::new(shelf_rank::PriorRanker::default());
    let mut shares = Vec::new();
    for ranker in [prior, std::sync::Arc::clone(&live)] {
        retriever.set_ranker(std::sync::Arc::clone(&ranker));
        let (mut hits, mut by_content) = (0, 0);
        for &i in &probes {
            let companion = shop.products[shop.companion(i).unwrap()].item.id.as_str();
            let body = serde_json::json!({
                "user_id": format!("visitor-{i}"), "k": 10, "explain": true, "explore": false,
            });
            let (status, body) = s
                .call(axum::http::Method::POST, "/v1/search", Some(body))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let items = body["items"].as_array().unwrap();
            if let Some(hit) = items.iter().find(|item| item["id"] == companion) {
                hits += 1;
                let sources = hit["sources"].as_array().unwrap();
                if !sources.contains(&serde_json::json!("covisit")) {
                    by_content += 1;
                }
            }
        }
        let share = hits as f64 / probes.len() as f64;
        eprintln!(
            "bought together, ranked by {}: the companion of a just-viewed item is in the top 10 for {hits} of {} new visitors ({share:.2}; {by_content} without co-visitation)",
            ranker.name(),
            probes.len()
        );
        assert_eq!(
            by_content, 0,
            "a companion reached the top 10 without co-visitation"
        );
        shares.push(share);
    }
    retriever.set_ranker(live);
    // Measured 0.65 with the prior (0.42 with the trained model); chance is 10 in 1,240.
    assert!(shares[0] >= 0.4, "prior: {shares:?}");
}

/// The shoppers' hidden relevance as a ranker, judged on the trainer's held-out shown items
/// (the newest `held_out`) beside the prior: the plain AUC and NDCG@10 of logged clicks
/// favour the prior, whose order the shoppers saw, over relevance itself; the
/// position-matched AUC, which training and promotion use, puts relevance first.
fn hidden_relevance_on_held_out_clicks(
    s: &common::TestServer,
    facets: &Facets,
    shoppers: &[users::SimUser],
    held_out: usize,
) {
    use shelf_types::Ranker;
    let by_id: std::collections::HashMap<&str, &users::SimUser> =
        shoppers.iter().map(|u| (u.id.as_str(), u)).collect();
    // (ts, response, position, clicked, relevance, prior score)
    let mut shown = Vec::new();
    let prior = shelf_rank::PriorRanker::default();
    let mut response = 0u64;
    s.app
        .node
        .store
        .for_each_impression(|imp| {
            response += 1;
            let user = imp.user_id.as_deref().and_then(|u| by_id.get(u));
            for item in &imp.items {
                let features = <shelf_types::Features>::try_from(item.features.as_slice()).unwrap();
                let relevance = user.map_or(0, |u| facets.relevance(u, &item.item_id));
                // Ties within a relevance grade are broken by the prior.
                let oracle = relevance as f32 + 1e-3 * prior.score(&features);
                shown.push((
                    imp.ts_ms,
                    response,
                    item.position,
                    item.clicked,
                    oracle,
                    prior.score(&features),
                ));
            }
        })
        .unwrap();
    shown.sort_by_key(|e| e.0);
    let held_out = &shown[shown.len() - held_out..];
    let labels: Vec<bool> = held_out.iter().map(|e| e.3).collect();
    let groups: Vec<u64> = held_out.iter().map(|e| e.1).collect();
    let positions: Vec<u32> = held_out.iter().map(|e| e.2).collect();
    let measure = |scores: &[f32]| {
        (
            shelf_rank::auc(scores, &labels).unwrap(),
            shelf_rank::clicks_ndcg_at(10, scores, &labels, &groups).unwrap(),
            shelf_rank::position_matched_auc(scores, &labels, &positions).unwrap(),
        )
    };
    let oracle = measure(&held_out.iter().map(|e| e.4).collect::<Vec<_>>());
    let prior = measure(&held_out.iter().map(|e| e.5).collect::<Vec<_>>());
    eprintln!(
        "held-out clicks: hidden relevance AUC {:.4}, clicks NDCG@10 {:.4}, position-matched AUC {:.4}; prior {:.4}, {:.4}, {:.4}",
        oracle.0, oracle.1, oracle.2, prior.0, prior.1, prior.2
    );
    assert!(
        oracle.2 > prior.2 + 0.03,
        "the position-matched AUC should rank the hidden relevance clearly above the prior: {oracle:?} vs {prior:?}"
    );
}
