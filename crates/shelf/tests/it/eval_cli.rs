//! `shelf eval relevance` and `shelf eval interactions` end to end: files in, metrics out,
//! on sets with known answers; malformed files reported with their line.

use shelf_lab::demo::shop::Shop;
use std::io::Write;
use std::process::Command;

fn eval_relevance(dir: &std::path::Path, judgments: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shelf"))
        .args([
            "eval",
            "relevance",
            "--items",
            "items.jsonl",
            "--queries",
            "queries.jsonl",
        ])
        .args(["--judgments", judgments])
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn relevance_eval_scores_known_answers_and_reports_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::generate(200, 9);
    let mut items = std::fs::File::create(dir.path().join("items.jsonl")).unwrap();
    for p in &shop.products {
        writeln!(items, "{}", serde_json::to_string(&p.item).unwrap()).unwrap();
    }
    // Each query is one item's exact title; that item is the one relevant answer (grade 2),
    // and a judged-irrelevant item is listed too.
    let mut queries = std::fs::File::create(dir.path().join("queries.jsonl")).unwrap();
    let mut qrels = std::fs::File::create(dir.path().join("qrels.tsv")).unwrap();
    writeln!(qrels, "query_id\titem_id\tgrade").unwrap();
    for (i, p) in shop.products.iter().step_by(10).enumerate() {
        writeln!(
            queries,
            "{}",
            serde_json::json!({"id": format!("q{i}"), "text": p.item.title})
        )
        .unwrap();
        writeln!(qrels, "q{i}\t{}\t2", p.item.id).unwrap();
        writeln!(qrels, "q{i}\tsku-999999\t0").unwrap();
    }
    drop((items, queries, qrels));

    let out = eval_relevance(dir.path(), "qrels.tsv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("NDCG@10") && stderr.contains("hybrid+rerank:prior"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Each mode (lexical, semantic, hybrid), alone and re-ranked.
    let systems: Vec<&str> = lines
        .iter()
        .map(|l| l["system"].as_str().unwrap())
        .collect();
    assert_eq!(
        systems,
        [
            "lexical",
            "lexical+rerank:prior",
            "semantic",
            "semantic+rerank:prior",
            "hybrid",
            "hybrid+rerank:prior"
        ]
    );
    for line in &lines {
        assert_eq!(line["per_query_ndcg"].as_array().unwrap().len(), 20);
    }
    for line in &lines {
        assert_eq!(line["queries"], 20);
        assert_eq!(line["items"], 200);
        // An exact title finds its item first or nearly so.
        assert!(line["mrr"].as_f64().unwrap() > 0.8, "{line}");
        assert!(line["ndcg_at_10"].as_f64().unwrap() > 0.8, "{line}");
        assert_eq!(line["recall_at_100"].as_f64().unwrap(), 1.0, "{line}");
    }

    // A malformed judgments file is reported with its line.
    std::fs::write(dir.path().join("bad.tsv"), "q0\tsku-000000\n").unwrap();
    let out = eval_relevance(dir.path(), "bad.tsv");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.tsv: line 1"), "{stderr}");
}

fn eval_interactions(dir: &std::path::Path, file: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shelf"))
        .args(["eval", "interactions", "--items", "items.jsonl"])
        .args(["--interactions", file])
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn interactions_eval_replays_holds_out_the_last_and_beats_popularity_on_taste() {
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::generate(300, 5);
    let mut items = std::fs::File::create(dir.path().join("items.jsonl")).unwrap();
    for p in &shop.products {
        writeln!(items, "{}", serde_json::to_string(&p.item).unwrap()).unwrap();
    }
    // Products by category.
    let mut by_category: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for p in &shop.products {
        by_category
            .entry(p.item.category.clone().unwrap())
            .or_default()
            .push(p.item.id.to_string());
    }
    let categories: Vec<&Vec<String>> = by_category.values().filter(|v| v.len() >= 7).collect();
    assert!(categories.len() >= 5);
    // Each shopper sticks to one category: six items from it, in time order; everyone also
    // views the same three bestsellers first (popular, but not anyone's taste).
    let bestsellers = ["sku-000000", "sku-000001", "sku-000002"];
    let mut log = std::fs::File::create(dir.path().join("log.tsv")).unwrap();
    writeln!(log, "user_id\titem_id\tkind\tts").unwrap();
    let mut t = 1_700_000_000i64;
    for u in 0..40 {
        let taste = categories[u % categories.len()];
        for b in bestsellers {
            t += 60;
            writeln!(log, "user-{u}\t{b}\tview\t{t}").unwrap();
        }
        for (j, item) in taste.iter().skip(u % 2).take(6).enumerate() {
            t += 60;
            let kind = if j % 3 == 2 { "add_to_cart" } else { "view" };
            writeln!(log, "user-{u}\t{item}\t{kind}\t{t}").unwrap();
        }
    }
    writeln!(log, "user-0\tsku-not-in-catalog\tview\t{}", t + 1).unwrap();
    drop((items, log));

    let out = eval_interactions(dir.path(), "log.tsv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Recall@10") && stderr.contains("recommend:prior"),
        "{stderr}"
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (lines, sources): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|r| r["system"].is_string());
    // Item-to-item lines (the next item after the user's last one) come after the users'.
    let (pairs, lines): (Vec<_>, Vec<_>) =
        lines.into_iter().partition(|r| r["task"] == "next item");
    let pair_systems: Vec<&str> = pairs
        .iter()
        .map(|l| l["system"].as_str().unwrap())
        .collect();
    assert_eq!(
        pair_systems,
        [
            "item-knn neighbours",
            "similar_items:prior",
            "bought_together:prior"
        ]
    );
    for pair in &pairs {
        assert!(pair["pairs"].as_u64().unwrap() > 0, "{pair}");
        let ndcg = pair["ndcg_at_10"].as_f64().unwrap();
        let hit = pair["recall_at_10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&hit) && ndcg <= hit + 1e-9, "{pair}");
    }
    let systems: Vec<&str> = lines
        .iter()
        .map(|l| l["system"].as_str().unwrap())
        .collect();
    assert_eq!(
        systems,
        [
            "popularity",
            "item-knn",
            "ease",
            "profile-ann",
            "covisit",
            "recommend:prior"
        ]
    );
    let recall = |system: &str| {
        lines.iter().find(|l| l["system"] == system).unwrap()["recall_at_10"]
            .as_f64()
            .unwrap()
    };
    // Each candidate source's Recall@100, then that of their union.
    let source_names: Vec<&str> = sources
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        source_names,
        ["profile_ann", "covisit", "trending", "all sources"]
    );
    let source_recall: Vec<f64> = sources
        .iter()
        .map(|s| s["recall_at_100"].as_f64().unwrap())
        .collect();
    assert!(
        source_recall[..3].iter().all(|r| *r <= source_recall[3]),
        "{sources:?}"
    );
    for line in &lines {
        assert_eq!(line["users"], 40, "{line}");
        assert_eq!(line["skipped_unknown_items"], 1, "{line}");
        assert_eq!(line["replayed"], 40 * 9 - 40, "{line}");
        // One target per user: NDCG@10 is at most the hit rate.
        let ndcg = line["ndcg_at_10"].as_f64().unwrap();
        let hit = line["recall_at_10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&hit) && ndcg <= hit + 1e-9, "{line}");
    }
    // The held-out item shares the shopper's category: the profile finds it, popularity
    // (everyone's bestsellers are already seen) does not; the collaborative systems find
    // it when another shopper of the category had it (in this log, for about one in five).
    assert!(recall("profile-ann") >= 0.7, "{lines:?}");
    assert!(
        recall("profile-ann") > recall("popularity") + 0.3,
        "{lines:?}"
    );
    assert!(recall("recommend:prior") >= 0.7, "{lines:?}");
    for system in ["item-knn", "ease", "covisit"] {
        assert!(
            recall(system) > recall("popularity") + 0.1,
            "{system}: {lines:?}"
        );
    }

    // A malformed line is reported with its number.
    std::fs::write(
        dir.path().join("bad.tsv"),
        "user-1\tsku-000003\tview\t5\nuser-1\tsku-000004\tlooked\t6\n",
    )
    .unwrap();
    let out = eval_interactions(dir.path(), "bad.tsv");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.tsv: line 2") && stderr.contains("looked"),
        "{stderr}"
    );
}

/// One code path: the lists `shelf eval interactions` scores are what `POST /v1/recommend`
/// serves for the same history replayed through the HTTP API (items posted, events posted,
/// the same request with the user's history as `exclude_ids`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_the_lists_eval_interactions_scores() {
    use axum::http::{Method, StatusCode};
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::generate(300, 8);
    let mut items = std::fs::File::create(dir.path().join("items.jsonl")).unwrap();
    for p in &shop.products {
        writeln!(items, "{}", serde_json::to_string(&p.item).unwrap()).unwrap();
    }
    let mut by_category: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for p in &shop.products {
        by_category
            .entry(p.item.category.clone().unwrap())
            .or_default()
            .push(p.item.id.to_string());
    }
    let categories: Vec<&Vec<String>> = by_category.values().filter(|v| v.len() >= 6).collect();
    assert!(categories.len() >= 4, "{by_category:?}");
    // Shoppers browse a category each (some of another's too), minute after minute, ending
    // two days ago; everyone's last event is held out by the evaluation.
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(3);
    let mut events = Vec::new();
    let mut minute = 0i64;
    for u in 0..16usize {
        let taste = categories[u % categories.len()];
        let other = categories[(u * 7 + 3) % categories.len()];
        let mut viewed: Vec<&String> = taste.iter().skip(u % 3).take(5).collect();
        viewed.insert(2, &other[u % other.len()]);
        for (j, item) in viewed.into_iter().enumerate() {
            minute += 1;
            let ts = start + time::Duration::minutes(minute);
            let kind = ["view", "view", "add_to_cart", "view", "purchase", "view"][j % 6];
            events.push(serde_json::json!({
                "user_id": format!("user-{u}"), "item_id": item, "kind": kind,
                "ts": ts.format(&time::format_description::well_known::Rfc3339).unwrap(),
            }));
        }
    }
    let mut log = std::fs::File::create(dir.path().join("log.jsonl")).unwrap();
    for e in &events {
        writeln!(log, "{e}").unwrap();
    }
    drop((items, log));
    let out = Command::new(env!("CARGO_BIN_EXE_shelf"))
        .args(["eval", "interactions", "--items", "items.jsonl"])
        .args(["--interactions", "log.jsonl", "--lists-out", "lists.jsonl"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lists: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("lists.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["system"] == "recommend:prior")
        .collect();
    assert_eq!(lists.len(), 16);

    // The same catalogue and history through the API: every event but each user's last.
    // Serving logs each response's impressions, which change the shown items' CTR and
    // popularity for the next request, so each user checked gets a server of their own.
    let records: Vec<serde_json::Value> = shop
        .products
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(&p.item).unwrap();
            v["op"] = serde_json::json!("upsert");
            v
        })
        .collect();
    let mut last: std::collections::HashMap<&str, usize> = Default::default();
    for (i, e) in events.iter().enumerate() {
        last.insert(e["user_id"].as_str().unwrap(), i);
    }
    let held: std::collections::HashSet<usize> = last.into_values().collect();
    let replayed: Vec<serde_json::Value> = (events.iter().enumerate())
        .filter(|(i, _)| !held.contains(i))
        .map(|(_, e)| e.clone())
        .collect();
    // Two shoppers (a server each takes seconds).
    for list in [&lists[0], &lists[5]] {
        let s = crate::common::server(&["--exploration-share", "0"], true).await;
        crate::common::index_catalog(&s, &records).await;
        let (status, body) = s
            .call(
                Method::POST,
                "/v1/events",
                Some(serde_json::json!(replayed)),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        s.settle().await;
        let user = list["user"].as_str().unwrap();
        let history: std::collections::BTreeSet<&str> = replayed
            .iter()
            .filter(|e| e["user_id"] == user)
            .map(|e| e["item_id"].as_str().unwrap())
            .collect();
        let request = serde_json::json!({
            "placement": "for_user", "user_id": user, "k": 10, "exclude_ids": history,
        });
        let (status, body) = s
            .call(Method::POST, "/v1/recommend", Some(request.clone()))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let served: Vec<(&str, f64)> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["id"].as_str().unwrap(), i["score"].as_f64().unwrap()))
            .collect();
        let scored: Vec<(&str, f64)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .zip(list["scores"].as_array().unwrap())
            .map(|(i, s)| (i.as_str().unwrap(), s.as_f64().unwrap()))
            .collect();
        assert_eq!(scored.len(), 10, "{list}");
        assert_eq!(served.len(), scored.len(), "{user}: {body}");
        for ((id, score), (eval_id, eval_score)) in served.iter().zip(&scored) {
            assert_eq!(
                id, eval_id,
                "{user}: served {served:?}, evaluated {scored:?}"
            );
            assert!(
                (score - eval_score).abs() < 1e-4,
                "{user}: {id} {score} {eval_score}"
            );
        }
        s.stop().await;
    }
}
