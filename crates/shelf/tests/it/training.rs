//! `shelf train --model trees` end to end: shoppers search and click through the API, the
//! command trains boosted trees on the logged impressions while the server runs, and the
//! saved model is listed, loads, scores, and explains itself.

use crate::common;

use axum::http::Method;
use shelf_lab::demo::shop::Shop;
use shelf_lab::demo::users;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shelf_train_fits_boosted_trees_on_logged_clicks() {
    let s = common::server(&[], true).await;
    let shop = Shop::generate(300, 3);
    let items: Vec<serde_json::Value> = shop
        .products
        .iter()
        .map(|p| serde_json::to_value(shelf_types::ItemRecord::Upsert(p.item.clone())).unwrap())
        .collect();
    common::index_catalog(&s, &items).await;
    let outcome = users::sessions(
        &s.api,
        &users::Facets::of(&shop),
        &users::users(8, 5),
        25,
        3,
    )
    .await
    .unwrap();
    s.settle().await;
    assert!(outcome.clicks > 50, "too few clicks: {outcome:?}");

    let data_dir = s.dir.path().to_str().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_shelf"))
        .args(["train", "--data-dir", &data_dir, "--model", "trees"])
        .args([
            "--objective",
            "lambdarank",
            "--depth",
            "3",
            "--min-examples",
            "500",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trained: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let model_json = std::fs::read_to_string(trained["path"].as_str().unwrap()).unwrap();
    let model = shelf_rank::LearnedModel::from_json(&model_json).unwrap();
    assert!(model.version.starts_with("trees-"), "{}", model.version);
    let shelf_rank::Params::Trees(forest) = &model.params else {
        panic!("not trees: {:?}", model.params.kind())
    };
    let r = &model.report;
    assert_eq!(forest.trees.len(), r.best_epoch, "{r:?}");
    assert!(r.train_clicks > 0 && r.best_epoch <= r.epochs_run, "{r:?}");
    assert!(
        forest.trees.iter().all(|t| t.value.len() <= 15),
        "deeper than --depth 3"
    );

    // Listed with its kind, live or not as training said.
    let (_, body) = s.call(Method::GET, "/v1/models", None).await;
    let listed = body["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["version"] == model.version.as_str())
        .unwrap_or_else(|| panic!("{} not listed: {body}", model.version));
    assert_eq!(listed["kind"], "trees");
    let live = shelf_node::models::load_live(s.dir.path()).unwrap();
    assert_eq!(
        live.is_some_and(|m| m.version == model.version),
        trained["promoted"] == true
    );

    // Served: a search ranked by it explains each score with contributions that sum to it.
    let retriever = s.app.node.retriever().unwrap();
    retriever.set_ranker(std::sync::Arc::new(model));
    let (_, body) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(serde_json::json!({"query": "grey sofa", "k": 5, "explain": true})),
        )
        .await;
    let results = body["items"].as_array().unwrap();
    assert!(!results.is_empty(), "{body}");
    for item in results {
        let sum: f64 = item["explanation"]
            .as_array()
            .unwrap_or_else(|| panic!("no explanation: {item}"))
            .iter()
            .map(|c| c["contribution"].as_f64().unwrap())
            .sum();
        let score = item["score"].as_f64().unwrap();
        assert!((sum - score).abs() < 1e-3, "{sum} vs {score}: {item}");
    }
    s.stop().await;
}
