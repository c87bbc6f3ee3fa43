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
}
