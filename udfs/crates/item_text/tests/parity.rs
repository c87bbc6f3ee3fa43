//! The UDF's item text equals the engine's on the shared inputs of
//! tests/fixtures/udf_parity.json (shelf-types' tests check the engine against the same file).

use serde::Deserialize;
use udf_item_text::item_text;

#[derive(Deserialize)]
struct Case {
    title: String,
    brand: Option<String>,
    category: Option<String>,
    description: Option<String>,
    text: String,
}

#[derive(Deserialize)]
struct Fixture {
    item_text: Vec<Case>,
}

#[test]
fn item_text_matches_the_engine() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../tests/fixtures/udf_parity.json");
    let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(fixture.item_text.len() >= 5);
    for case in fixture.item_text {
        let got = item_text(
            &case.title,
            case.brand.as_deref(),
            case.category.as_deref(),
            case.description.as_deref(),
        );
        assert_eq!(got, case.text);
    }
}
