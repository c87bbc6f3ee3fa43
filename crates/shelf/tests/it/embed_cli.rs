//! `shelf embed` end to end: the real binary, the real model, stdin to stdout.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn shelf_embed(input: &[u8], extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shelf"))
        .arg("embed")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn vector(v: &serde_json::Value) -> Vec<f32> {
    v["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn adds_vectors_in_order_and_passes_fields_through() {
    let input = b"{\"id\":1,\"text\":\"red leather sofa\"}\n\n{\"text\":\"a\",\"extra\":[1,2]}\n";
    let out = shelf_embed(input, &["--batch-size", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], 1);
    assert_eq!(lines[1]["extra"], serde_json::json!([1, 2]));
    assert_eq!(vector(&lines[0]).len(), 384);
}

#[test]
fn same_text_gives_same_vector_alone_and_in_a_mixed_batch() {
    let alone = lines(&shelf_embed(
        b"{\"text\":\"stainless steel water bottle\"}\n",
        &[],
    ));
    let long = "insulated bottle that keeps drinks cold for a day ".repeat(30);
    let input = format!(
        "{{\"text\":\"{long}\"}}\n{{\"text\":\"cup\"}}\n{{\"text\":\"stainless steel water bottle\"}}\n{{\"text\":\"a bottle for water made of steel and very shiny\"}}\n"
    );
    let batch = lines(&shelf_embed(input.as_bytes(), &["--batch-size", "4"]));
    let a = vector(&alone[0]);
    let b = vector(&batch[2]);
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(max_diff < 1e-5, "max diff {max_diff}");
}

#[test]
fn bad_lines_are_reported_with_their_number_after_earlier_lines_are_written() {
    for (bad, reason) in [
        (&b"{not json"[..], "invalid JSON"),
        (b"{\"title\":\"x\"}", "missing field \"text\""),
        (b"{\"text\":\"\"}", "empty"),
        (b"{\"text\":\"caf\xff\"}", "invalid UTF-8"),
        (b"[1,2]", "JSON object"),
    ] {
        let mut input = b"{\"text\":\"one\"}\n{\"text\":\"two\"}\n".to_vec();
        input.extend_from_slice(bad);
        input.extend_from_slice(b"\n{\"text\":\"four\"}\n");
        let out = shelf_embed(&input, &["--batch-size", "8"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("line 3") && stderr.contains(reason),
            "{stderr}"
        );
        assert_eq!(lines(&out).len(), 2, "{stderr}");
    }
}

#[test]
fn missing_model_says_what_was_tried_and_how_to_fetch() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shelf"))
        .args(["embed", "--model-cache"])
        .arg(empty.path())
        .env_remove("SHELF_MODEL_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&empty.path().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("scripts/fetch-model.sh"), "{stderr}");
}

/// Without a usable GPU (no CUDA here, or a build without the `cuda` feature), `--device
/// auto` runs on the CPU and says why in one log line, and `--device cuda` fails at start
/// with an error naming the device and the reason; nothing panics.
#[test]
fn device_auto_falls_back_to_the_cpu_and_device_cuda_fails_clearly_without_a_gpu() {
    let gpu = std::path::Path::new("/dev/nvidia0").exists();
    if gpu {
        eprintln!("a GPU is present: the fallback is not exercised here");
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_shelf"))
        .args(["embed", "--device", "auto"])
        .env("SHELF_LOG", "shelf_embed=info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"text\":\"a lamp\"}\n")
        .unwrap();
    let auto = child.wait_with_output().unwrap();
    assert!(
        auto.status.success(),
        "{}",
        String::from_utf8_lossy(&auto.stderr)
    );
    assert_eq!(lines(&auto).len(), 1);
    let log = String::from_utf8_lossy(&auto.stderr);
    let why: Vec<&str> = log.lines().filter(|l| l.contains("device auto")).collect();
    assert_eq!(why.len(), 1, "{log}");
    assert!(why[0].contains("CPU"), "{log}");

    let cuda = shelf_embed(b"{\"text\":\"a lamp\"}\n", &["--device", "cuda"]);
    assert_eq!(cuda.status.code(), Some(1));
    let error = String::from_utf8_lossy(&cuda.stderr);
    assert!(error.contains("cuda:0 is not available"), "{error}");
    assert!(!error.contains("panicked"), "{error}");
    assert!(lines(&cuda).is_empty());
}
