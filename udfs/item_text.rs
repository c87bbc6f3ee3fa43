/*
[dependencies]
*/

//! Arroyo UDF `item_text`: the text shelf embeds for an item (title, brand, category,
//! description; trimmed, empty parts dropped, joined by ". "), the same as the engine's
//! `Item::embedding_text`, so vectors made in Arroyo match vectors made in shelf.

use arroyo_udf_plugin::udf;

#[udf]
fn item_text(
    title: &str,
    brand: Option<&str>,
    category: Option<&str>,
    description: Option<&str>,
) -> String {
    let mut parts: Vec<&str> = vec![title.trim()];
    for part in [brand, category, description].into_iter().flatten() {
        let part = part.trim();
        if !part.is_empty() {
            parts.push(part);
        }
    }
    parts.join(". ")
}

#[cfg(test)]
mod tests {
    use super::item_text;

    #[test]
    fn joins_present_parts_in_order() {
        assert_eq!(
            item_text(
                " Sofa ",
                Some("Acme"),
                Some("Furniture/Sofas"),
                Some("Grey")
            ),
            "Sofa. Acme. Furniture/Sofas. Grey"
        );
        assert_eq!(item_text("Sofa", None, Some("  "), None), "Sofa");
    }

    /// The engine's `Item::embedding_text` is held to the same cases (shelf-types' tests).
    #[test]
    fn matches_the_engine_on_the_shared_parity_cases() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../tests/fixtures/udf_parity.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = fixture["item_text"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for case in cases {
            let got = item_text(
                case["title"].as_str().unwrap(),
                case["brand"].as_str(),
                case["category"].as_str(),
                case["description"].as_str(),
            );
            assert_eq!(got, case["text"].as_str().unwrap());
        }
    }
}
