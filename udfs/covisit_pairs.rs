/*
[dependencies]
serde_json = "1"
*/

//! Arroyo UDF `covisit_pairs(events)`: the co-visitation pairs of one user's item events
//! in a window, as a JSON array of `{"from","to","weight","ts_ms"}`. `events` holds one
//! event per line, `item_id<TAB>kind<TAB>ts_ms` (the pipeline gathers them with
//! `string_agg`: arroyo-udf-plugin 0.2's aggregate UDFs take only numeric lists). The pairs
//! are those of shelf's event job (shelf-store's `covisit_pairs`, default settings): each
//! event pairs with the user's 10 previous distinct other items (newest first), the j-th
//! with weight `sqrt(w(kind) * w(its kind)) / j`, forward (`earlier -> item`) and backward
//! (`item -> earlier`, half weight), unless the two are more than 24 h apart. Weights are
//! view 1, click 2, add_to_cart 4, purchase 8 (`event_weight`); decay over time stays in
//! shelf. Events are taken in time order, ties in the order they arrived.

use arroyo_udf_plugin::udf;

const WINDOW: usize = 10;
const MAX_GAP_MS: i64 = 24 * 3600 * 1000;
const BACKWARD: f64 = 0.5;

fn weight(kind: &str) -> f64 {
    match kind {
        "view" => 1.0,
        "click" => 2.0,
        "add_to_cart" => 4.0,
        "purchase" => 8.0,
        _ => 0.0,
    }
}

/// `item_id<TAB>kind<TAB>ts_ms` lines as events; malformed lines and kinds without an
/// item weight are skipped.
fn parse(events: &str) -> Vec<(&str, &str, i64)> {
    events
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (item, kind, ts) = (fields.next()?, fields.next()?, fields.next()?);
            Some((item, kind, ts.trim().parse().ok()?))
        })
        .filter(|(item, kind, _)| !item.is_empty() && weight(kind) > 0.0)
        .collect()
}

#[udf]
fn covisit_pairs(events: &str) -> String {
    let mut events = parse(events);
    events.sort_by_key(|e| e.2); // stable: ties keep their arrival order
    let mut pairs = Vec::new();
    for (n, &(item, kind, ts)) in events.iter().enumerate() {
        let mut seen: Vec<&str> = Vec::with_capacity(WINDOW);
        // The earlier events, newest first (a tie: the later arrival first).
        for &(earlier, earlier_kind, earlier_ts) in events[..n].iter().rev() {
            if seen.len() == WINDOW {
                break;
            }
            if earlier == item || seen.contains(&earlier) {
                continue;
            }
            seen.push(earlier);
            if (ts - earlier_ts).abs() > MAX_GAP_MS {
                continue;
            }
            let w = (weight(kind) * weight(earlier_kind)).sqrt() / seen.len() as f64;
            pairs.push(serde_json::json!({"from": earlier, "to": item, "weight": w, "ts_ms": ts}));
            pairs.push(
                serde_json::json!({"from": item, "to": earlier, "weight": w * BACKWARD, "ts_ms": ts}),
            );
        }
    }
    serde_json::Value::Array(pairs).to_string()
}

#[cfg(test)]
mod tests {
    use super::covisit_pairs;

    /// The engine's `covisit_pairs` is held to the same cases (shelf-store's tests).
    #[test]
    fn matches_the_engine_on_the_shared_parity_cases() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../tests/fixtures/udf_parity.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let case = &fixture["covisit_pairs"];
        let lines: Vec<String> = case["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}\t{}\t{}",
                    e["item_id"].as_str().unwrap(),
                    e["kind"].as_str().unwrap(),
                    e["ts_ms"].as_i64().unwrap()
                )
            })
            .collect();
        // A window's rows may arrive in any order (the times here are distinct): reversed,
        // the result is the same.
        for reversed in [false, true] {
            let mut rows = lines.clone();
            if reversed {
                rows.reverse();
            }
            let got: serde_json::Value =
                serde_json::from_str(&covisit_pairs(&rows.join("\n"))).unwrap();
            assert_eq!(got, case["pairs"]);
        }
    }

    #[test]
    fn searches_single_events_and_malformed_lines_make_no_pairs() {
        assert_eq!(covisit_pairs("a\tview\t0"), "[]");
        assert_eq!(covisit_pairs("a\tsearch\t0\nb\tview\t1"), "[]");
        assert_eq!(covisit_pairs("a\tview\tsoon\nb\tview\nc\tview\t2"), "[]");
        assert_eq!(covisit_pairs(""), "[]");
    }
}
