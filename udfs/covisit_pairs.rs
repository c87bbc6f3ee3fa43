/*
[dependencies]
serde_json = "1"
*/

//! Arroyo UDAF `covisit_pairs(item_id, kind, ts_ms)`: the co-visitation pairs of one
//! user's item events in a window, as a JSON array of `{"from","to","weight","ts_ms"}`,
//! computed as shelf's event job does (shelf-store's `covisit_pairs`, default settings):
//! each event pairs with the user's 10 previous distinct other items (newest first), the
//! j-th with weight `sqrt(w(kind) * w(its kind)) / j`, forward (`earlier -> item`) and
//! backward (`item -> earlier`, half weight), unless the two are more than 24 h apart.
//! Weights are view 1, click 2, add_to_cart 4, purchase 8 (`event_weight`); decay over
//! time stays in shelf. Events are taken in time order, ties in the order they arrived.

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

#[udf]
fn covisit_pairs(item_id: Vec<&str>, kind: Vec<&str>, ts_ms: Vec<i64>) -> String {
    let mut events: Vec<(&str, &str, i64)> = item_id
        .into_iter()
        .zip(kind)
        .zip(ts_ms)
        .map(|((item, kind), ts)| (item, kind, ts))
        .filter(|(_, kind, _)| weight(kind) > 0.0)
        .collect();
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
        let events = case["events"].as_array().unwrap();
        let items: Vec<&str> = events
            .iter()
            .map(|e| e["item_id"].as_str().unwrap())
            .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        let ts: Vec<i64> = events
            .iter()
            .map(|e| e["ts_ms"].as_i64().unwrap())
            .collect();
        // A window's rows may arrive in any order (the times here are distinct): reversed,
        // the result is the same.
        let mut rows: Vec<usize> = (0..events.len()).collect();
        for _ in 0..2 {
            let got = covisit_pairs(
                rows.iter().map(|&i| items[i]).collect(),
                rows.iter().map(|&i| kinds[i]).collect(),
                rows.iter().map(|&i| ts[i]).collect(),
            );
            let got: serde_json::Value = serde_json::from_str(&got).unwrap();
            assert_eq!(got, case["pairs"]);
            rows.reverse();
        }
    }

    #[test]
    fn searches_and_single_events_make_no_pairs() {
        assert_eq!(covisit_pairs(vec!["a"], vec!["view"], vec![0]), "[]");
        assert_eq!(
            covisit_pairs(vec!["a", "b"], vec!["search", "view"], vec![0, 1]),
            "[]"
        );
    }
}
