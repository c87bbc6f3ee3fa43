//! Value encoding: one version byte, then CBOR (compact, self-describing, floats kept
//! bit-exact); vectors are raw little-endian f32 after a small header, and top lists
//! (co-visits, trending) a flat binary layout of their own.

use crate::{StoreError, TopList};
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

/// Reads the fixed-size fields of a binary value off its front; errors name the value.
struct FieldReader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> FieldReader<'a> {
    fn bad(&self, reason: &str) -> StoreError {
        StoreError::Corrupt {
            what: self.what,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.rest.len() < n {
            return Err(self.bad("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    /// `len` bytes of UTF-8 text, the value's `field`.
    fn text(&mut self, len: usize, field: &str) -> Result<&'a str, StoreError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| self.bad(&format!("{field} is not UTF-8")))
    }

    /// The value ends here: bytes left over are corruption.
    fn finish(self) -> Result<(), StoreError> {
        match self.rest.is_empty() {
            true => Ok(()),
            false => Err(self.bad("trailing bytes")),
        }
    }
}

pub fn decode_vector(bytes: &[u8]) -> Result<StoredVector, StoreError> {
    let mut r = FieldReader {
        rest: bytes,
        what: "item vector",
    };
    if r.array::<1>()?[0] != VALUE_VERSION {
        return Err(r.bad("unknown value version"));
    }
    let len = u16::from_le_bytes(r.array()?) as usize;
    let model_id = r.text(len, "model id")?.to_string();
    let text_hash = u64::from_le_bytes(r.array()?);
    let dim = u32::from_le_bytes(r.array()?) as usize;
    let vector = r
        .take(dim * 4)?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    r.finish()?;
    Ok(StoredVector {
        model_id,
        text_hash,
        vector,
    })
}

/// Version byte of a top list in its binary layout (version 1 is CBOR, as every value
/// was before; both are read). Reserved: a new CBOR layout takes 3, not 2. A store holding
/// version-2 lists cannot be read by a build from before them (no downgrade).
const TOP_LIST_VERSION: u8 = 2;

/// A top list as `[2][last_ts_ms: i64][count: u32]` then per entry `[len: u16][id][score:
/// f64]`, little-endian: the event job reads and rewrites every list an event touches, and
/// this layout decodes several times faster than CBOR's self-described one.
pub fn encode_top_list(list: &TopList) -> Vec<u8> {
    let ids: usize = list.entries.iter().map(|(id, _)| id.len()).sum();
    let mut out = Vec::with_capacity(1 + 8 + 4 + list.entries.len() * 10 + ids);
    out.push(TOP_LIST_VERSION);
    out.extend_from_slice(&list.last_ts_ms.to_le_bytes());
    out.extend_from_slice(&(list.entries.len() as u32).to_le_bytes());
    for (id, score) in &list.entries {
        // Ids are at most MAX_ID_BYTES (validated where they enter); a longer one here
        // would be a bug upstream, and is cut at a character boundary rather than
        // written unreadable.
        debug_assert!(
            id.len() <= shelf_types::MAX_ID_BYTES,
            "id of {} bytes",
            id.len()
        );
        let mut end = id.len().min(u16::MAX as usize);
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        let id = &id.as_bytes()[..end];
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&score.to_le_bytes());
    }
    out
}

/// Reads a top list in either layout (`what` names it in an error).
pub fn decode_top_list(bytes: &[u8], what: &'static str) -> Result<TopList, StoreError> {
    if bytes.first() != Some(&TOP_LIST_VERSION) {
        return decode(bytes, what);
    }
    let mut r = FieldReader {
        rest: &bytes[1..],
        what,
    };
    let last_ts_ms = i64::from_le_bytes(r.array()?);
    let count = u32::from_le_bytes(r.array()?) as usize;
    // Each entry takes at least 10 bytes: a corrupt count cannot reserve much.
    let mut entries = Vec::with_capacity(count.min(bytes.len() / 10));
    for _ in 0..count {
        let len = u16::from_le_bytes(r.array()?) as usize;
        let id = r.text(len, "id")?.to_string();
        let score = f64::from_le_bytes(r.array()?);
        entries.push((id, score));
    }
    r.finish()?;
    Ok(TopList {
        last_ts_ms,
        entries,
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

    fn list() -> TopList {
        TopList {
            last_ts_ms: -5,
            entries: vec![
                ("sku-1".into(), 0.1),
                ("".into(), -0.0),
                ("沙发".into(), f64::MIN_POSITIVE),
            ],
        }
    }

    fn bits(list: &TopList) -> Vec<(String, u64)> {
        let entries = list.entries.iter();
        entries.map(|(id, s)| (id.clone(), s.to_bits())).collect()
    }

    #[test]
    fn top_lists_round_trip_bit_exact_in_both_layouts() {
        let list = list();
        let binary = encode_top_list(&list);
        assert_eq!(binary[0], TOP_LIST_VERSION);
        let back = decode_top_list(&binary, "list").unwrap();
        assert_eq!(
            (back.last_ts_ms, bits(&back)),
            (list.last_ts_ms, bits(&list))
        );
        // A store written before the binary layout holds CBOR lists: still read.
        let old = decode_top_list(&encode(&list), "list").unwrap();
        assert_eq!((old.last_ts_ms, bits(&old)), (list.last_ts_ms, bits(&list)));
        let empty = TopList::default();
        assert_eq!(
            decode_top_list(&encode_top_list(&empty), "list").unwrap(),
            empty
        );
    }

    #[test]
    fn corrupt_top_lists_are_errors_naming_the_value() {
        let binary = encode_top_list(&list());
        for cut in 1..binary.len() {
            let err = decode_top_list(&binary[..cut], "co-visits").unwrap_err();
            assert!(err.to_string().contains("co-visits"), "{err}");
        }
        let mut trailing = binary.clone();
        trailing.push(0);
        assert!(decode_top_list(&trailing, "list").is_err());
        // A count far beyond the bytes: an error, not a huge allocation.
        let mut huge = binary[..9].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_top_list(&huge, "list").is_err());
        let mut not_utf8 = encode_top_list(&TopList {
            last_ts_ms: 0,
            entries: vec![("ab".into(), 1.0)],
        });
        not_utf8[15] = 0xff;
        assert!(decode_top_list(&not_utf8, "list").is_err());
        assert!(decode_top_list(&[], "list").is_err());
    }
}
