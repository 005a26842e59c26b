//! Serde glue that encodes a `Vec<u8>` field as a byte string instead of a sequence of
//! `u8` values.
//!
//! In postcard both are the same bytes on the wire (a varint length, then the bytes),
//! so this changes nothing a peer can see (spec: QX-MSG-ENC-3); it only turns a
//! per-byte loop into one copy on the hot paths (`StdinData`, output `Data`). Text
//! formats (JSON) see an array of numbers either way.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

/// Most bytes reserved up front for a sequence-encoded value: the length is only a
/// claim until the bytes arrive.
const MAX_PREALLOC: usize = 4096;

pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(ByteBufVisitor)
}

struct ByteBufVisitor;

impl<'de> Visitor<'de> for ByteBufVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsSeq(Vec<u8>);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsBytes(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn same_bytes_on_the_wire_as_a_sequence() {
        // spec: QX-MSG-ENC-3
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let v: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let seq = postcard::to_stdvec(&AsSeq(v.clone())).unwrap();
            let bytes = postcard::to_stdvec(&AsBytes(v.clone())).unwrap();
            assert_eq!(seq, bytes, "{len}");
            assert_eq!(postcard::from_bytes::<AsBytes>(&seq).unwrap().0, v);
        }
    }
}
