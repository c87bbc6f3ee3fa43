/*
[dependencies]
*/

//! Arroyo UDF `event_weight`: how much one event counts toward an item's or a user's
//! activity: view 1, click 2, add_to_cart 4, purchase 8, search (and any other kind) 0, the
//! engine's default `KindWeights`. Decay over time stays in shelf; windows need none.

use arroyo_udf_plugin::udf;

#[udf]
fn event_weight(kind: &str) -> f64 {
    match kind {
        "view" => 1.0,
        "click" => 2.0,
        "add_to_cart" => 4.0,
        "purchase" => 8.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::event_weight;

    #[test]
    fn weights_by_kind() {
        assert_eq!(event_weight("purchase"), 8.0);
        assert_eq!(event_weight("view"), 1.0);
        assert_eq!(event_weight("search"), 0.0);
        assert_eq!(event_weight("impression"), 0.0);
    }

    /// The engine's kind weights are held to the same cases (shelf-store's tests).
    #[test]
    fn matches_the_engine_on_the_shared_parity_cases() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../tests/fixtures/udf_parity.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = fixture["event_weight"].as_array().unwrap();
        assert_eq!(cases.len(), 5);
        for case in cases {
            let kind = case["kind"].as_str().unwrap();
            assert_eq!(
                event_weight(kind),
                case["weight"].as_f64().unwrap(),
                "{kind}"
            );
        }
    }
}
