//! The UDF's event weights equal the engine's on the shared inputs of
//! tests/fixtures/udf_parity.json (shelf-store's tests check the engine against the same file).

use serde::Deserialize;
use udf_event_weight::event_weight;

#[derive(Deserialize)]
struct Case {
    kind: String,
    weight: f64,
}

#[derive(Deserialize)]
struct Fixture {
    event_weight: Vec<Case>,
}

#[test]
fn event_weight_matches_the_engine() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../tests/fixtures/udf_parity.json");
    let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(fixture.event_weight.len(), 5);
    for case in fixture.event_weight {
        let got = event_weight(&case.kind);
        assert_eq!(got, case.weight, "{}", case.kind);
    }
}
