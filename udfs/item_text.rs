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
            item_text(" Sofa ", Some("Acme"), Some("Furniture/Sofas"), Some("Grey")),
            "Sofa. Acme. Furniture/Sofas. Grey"
        );
        assert_eq!(item_text("Sofa", None, Some("  "), None), "Sofa");
    }
}
