//! Key encoding, the same in every column family: one version byte, then the fields.
//!
//! | column family   | key                                           |
//! |-----------------|-----------------------------------------------|
//! | `items`         | `01` item id (UTF-8)                          |
//! | `item_vectors`  | `01` item id                                  |
//! | `tombstones`    | `01` item id                                  |
//! | `profiles`      | `01` user id                                  |
//! | `item_stats`    | `01` item id                                  |
//! | `covisits`      | `01` item id                                  |
//! | `trending`      | `01` category path (empty: all items)         |
//! | `impressions`   | `01` request id                               |
//! | `user_requests` | `01` user id `00` request id                  |
//! | `offsets`       | `01` consumer name                            |
//! | `dead_letters`  | `01` consumer name `00` partition (u32 big-endian) offset (u64 big-endian) |
//!
//! Ids never contain `00` (rejected on input), so `00` ends a variable-length field and
//! big-endian offsets sort numerically.

/// Version of the key layout above.
pub const KEY_VERSION: u8 = 1;

/// `01` + `id`.
pub fn id_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 1);
    key.push(KEY_VERSION);
    key.extend_from_slice(id.as_bytes());
    key
}

/// `01` + `first` + `00` (the prefix of every key under `first`).
pub fn prefix_key(first: &str) -> Vec<u8> {
    let mut key = id_key(first);
    key.push(0);
    key
}

/// `01` + `first` + `00` + `second`.
pub fn pair_key(first: &str, second: &str) -> Vec<u8> {
    let mut key = prefix_key(first);
    key.extend_from_slice(second.as_bytes());
    key
}

/// `01` + `consumer` + `00` + `offset` big-endian.
/// The key of a dead letter: unique per consumer, partition and offset (partitions of one
/// topic reuse offsets), in partition then offset order.
pub fn dead_letter_key(consumer: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut key = prefix_key(consumer);
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// The id part of an `id_key`, if it is one of this version.
pub fn decode_id(key: &[u8]) -> Option<&str> {
    match key.split_first() {
        Some((&KEY_VERSION, rest)) => std::str::from_utf8(rest).ok(),
        _ => None,
    }
}

/// The part after `00` in a `pair_key`.
pub fn decode_second(key: &[u8]) -> Option<&str> {
    let (version, rest) = key.split_first()?;
    if *version != KEY_VERSION {
        return None;
    }
    let split = rest.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&rest[split + 1..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort() {
        assert_eq!(decode_id(&id_key("sku-1")), Some("sku-1"));
        assert_eq!(decode_second(&pair_key("u1", "r9")), Some("r9"));
        assert!(dead_letter_key("items", 0, 2) < dead_letter_key("items", 0, 256));
        assert!(dead_letter_key("items", 0, u64::MAX) < dead_letter_key("items", 1, 0));
        assert_ne!(
            dead_letter_key("items", 0, 7),
            dead_letter_key("items", 1, 7)
        );
        assert!(pair_key("u1", "zzz").starts_with(&prefix_key("u1")));
        assert!(!pair_key("u10", "a").starts_with(&prefix_key("u1")));
    }
}
