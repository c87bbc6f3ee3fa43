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
