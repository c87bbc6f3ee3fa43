//! Value encoding: one version byte, then CBOR (compact, self-describing, floats kept
//! bit-exact); vectors are raw little-endian f32 after a small header.

use crate::StoreError;
use serde::{de::DeserializeOwned, Serialize};

/// Version of the value layout.
pub const VALUE_VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into memory cannot fail");
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, body)) => {
            ciborium::from_reader(body).map_err(|e| StoreError::Corrupt {
                what,
                reason: e.to_string(),
            })
        }
        Some((version, _)) => Err(StoreError::Corrupt {
            what,
            reason: format!("unknown value version {version}"),
        }),
        None => Err(StoreError::Corrupt {
            what,
            reason: "empty value".into(),
        }),
    }
}

/// An item vector with the model that produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredVector {
    pub model_id: String,
    /// Hash of the embedded text, to skip re-embedding unchanged items.
    pub text_hash: u64,
    pub vector: Vec<f32>,
}

pub fn encode_vector(v: &StoredVector) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 2 + v.model_id.len() + 8 + 4 + v.vector.len() * 4);
    out.push(VALUE_VERSION);
    out.extend_from_slice(&(v.model_id.len() as u16).to_le_bytes());
    out.extend_from_slice(v.model_id.as_bytes());
    out.extend_from_slice(&v.text_hash.to_le_bytes());
    out.extend_from_slice(&(v.vector.len() as u32).to_le_bytes());
    for x in &v.vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub fn decode_vector(bytes: &[u8]) -> Result<StoredVector, StoreError> {
    let bad = |reason: &str| StoreError::Corrupt {
        what: "item vector",
        reason: reason.into(),
    };
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        let out = bytes.get(at..at + n).ok_or_else(|| bad("truncated"))?;
        at += n;
        Ok(out)
    };
    if take(1)?[0] != VALUE_VERSION {
        return Err(bad("unknown value version"));
    }
    let len = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
    let model_id =
        String::from_utf8(take(len)?.to_vec()).map_err(|_| bad("model id is not UTF-8"))?;
    let text_hash = u64::from_le_bytes(take(8)?.try_into().unwrap());
    let dim = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
    let raw = take(dim * 4)?;
    let vector = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    if at != bytes.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(StoredVector {
        model_id,
        text_hash,
        vector,
    })
}

/// FNV-1a 64 of a text (stable across builds and machines).
pub fn text_hash(text: &str) -> u64 {
    shelf_types::hash::fnv1a(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_bit_exact() {
        let v = StoredVector {
            model_id: "m".into(),
            text_hash: 7,
            vector: vec![0.1, -0.0, f32::MIN_POSITIVE],
        };
        let back = decode_vector(&encode_vector(&v)).unwrap();
        assert_eq!(
            back.vector.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.vector.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(back, v);
        assert!(decode_vector(&encode_vector(&v)[..10]).is_err());
        let x: f64 = decode(&encode(&0.1f64), "x").unwrap();
        assert_eq!(x.to_bits(), 0.1f64.to_bits());
    }
}
