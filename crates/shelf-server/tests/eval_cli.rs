//! `shelf eval relevance` end to end: files in, metrics out, on a set with known answers.

use shelf_server::demo::shop::Shop;
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
        stderr.contains("NDCG@10") && stderr.contains("ann+rerank:prior"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
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
