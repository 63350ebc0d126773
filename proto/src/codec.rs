//! Bounded postcard encoding, with an explicit version marker for values
//! that are stored, and a `u32` length prefix for messages on a stream.
//!
//! Every decoder here checks the input length against a named limit before
//! it decodes, so a peer can never make us allocate more than that limit.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::Error;

/// Size of the little-endian `u32` length prefix of a framed message.
pub const FRAME_HEADER_LEN: usize = 4;

/// Encodes `value` with postcard.
pub fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard only fails on types serde cannot express (maps with unknown
    // length and the like); none of ours are such.
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Decodes a whole postcard value no larger than `max` bytes. Trailing bytes
/// are an error: one encoding, one meaning.
pub fn from_bytes<T: DeserializeOwned>(what: &'static str, bytes: &[u8], max: usize) -> Result<T, Error> {
    if bytes.len() > max {
        return Err(Error::TooLarge { what, len: bytes.len() as u64, max: max as u64 });
    }
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| Error::Malformed { what, reason: e.to_string() })?;
    if !rest.is_empty() {
        return Err(Error::Malformed { what, reason: format!("{} trailing bytes", rest.len()) });
    }
    Ok(value)
}

/// Encodes a stored value: one version byte, then postcard.
pub fn to_versioned<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    out.extend_from_slice(&to_bytes(value));
    out
}

/// Decodes a stored value written by [`to_versioned`] with `version`.
pub fn from_versioned<T: DeserializeOwned>(
    what: &'static str,
    version: u8,
    bytes: &[u8],
    max: usize,
) -> Result<T, Error> {
    match bytes.split_first() {
        None => Err(Error::Malformed { what, reason: "empty".into() }),
        Some((&v, rest)) if v == version => from_bytes(what, rest, max),
        Some((&v, _)) => Err(Error::UnknownVersion { what, version: v }),
    }
}

/// Encodes a stored value like [`to_versioned`], then zeros up to `len`
/// bytes (when it is shorter): the value's length is hidden.
pub fn to_versioned_padded<T: Serialize>(version: u8, value: &T, len: usize) -> Vec<u8> {
    let mut out = to_versioned(version, value);
    if out.len() < len {
        out.resize(len, 0);
    }
    out
}

/// Decodes a value written by [`to_versioned_padded`]: bytes after the
/// value must all be zeros.
pub fn from_versioned_padded<T: DeserializeOwned>(
    what: &'static str,
    version: u8,
    bytes: &[u8],
    max: usize,
) -> Result<T, Error> {
    if bytes.len() > max {
        return Err(Error::TooLarge { what, len: bytes.len() as u64, max: max as u64 });
    }
    match bytes.split_first() {
        None => Err(Error::Malformed { what, reason: "empty".into() }),
        Some((&v, rest)) if v == version => {
            let (value, pad) =
                postcard::take_from_bytes(rest).map_err(|e| Error::Malformed { what, reason: e.to_string() })?;
            if pad.iter().any(|&b| b != 0) {
                return Err(Error::Malformed { what, reason: "padding that is not zeros".into() });
            }
            Ok(value)
        }
        Some((&v, _)) => Err(Error::UnknownVersion { what, version: v }),
    }
}

/// Encodes a message for a stream: `u32` LE length, then postcard.
pub fn to_frame<T: Serialize>(value: &T) -> Vec<u8> {
    let body = to_bytes(value);
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads a frame header and checks the announced length against `max`
/// before the caller allocates a buffer for the body.
pub fn frame_len(what: &'static str, header: [u8; FRAME_HEADER_LEN], max: usize) -> Result<usize, Error> {
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(Error::TooLarge { what, len: len as u64, max: max as u64 });
    }
    Ok(len)
}

/// Decodes one whole frame (header and body) held in memory.
pub fn from_frame<T: DeserializeOwned>(what: &'static str, bytes: &[u8], max: usize) -> Result<T, Error> {
    let (header, body) = bytes
        .split_first_chunk::<FRAME_HEADER_LEN>()
        .ok_or_else(|| Error::Malformed { what, reason: "shorter than a frame header".into() })?;
    let len = frame_len(what, *header, max)?;
    if body.len() != len {
        return Err(Error::Malformed { what, reason: format!("frame says {len} bytes, has {}", body.len()) });
    }
    from_bytes(what, body, max)
}

/// Serde helper for `[u8; 64]` (serde derives stop at 32).
pub mod bytes64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// Serializes as a byte string.
    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    /// Deserializes a byte string of exactly 64 bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: &[u8] = <&[u8]>::deserialize(d)?;
        v.try_into().map_err(|_| D::Error::custom(format!("expected 64 bytes, got {}", v.len())))
    }
}

/// `#[serde(with = "codec::bytes")]` for a `Vec<u8>`: written as a byte
/// string (postcard: the length, then the bytes: the same bytes as a
/// sequence of `u8`, which serde's default writes one call per byte).
pub mod bytes {
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Serializes as a byte string.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    /// Deserializes a byte string (or a sequence of bytes).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    pub(super) struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}

/// `#[serde(with = "codec::opt_bytes")]` for an `Option<Vec<u8>>` (or any
/// byte container made from a `Vec<u8>`, such as `bytes::Bytes`), as
/// [`bytes`] does for a `Vec<u8>`.
pub mod opt_bytes {
    use serde::de::Visitor;
    use serde::{Deserializer, Serialize, Serializer};

    struct Bytes<'a>(&'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    /// Serializes `None`, or `Some` and a byte string.
    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(bytes: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&Bytes(b.as_ref())),
            None => s.serialize_none(),
        }
    }

    /// Deserializes what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>, T: From<Vec<u8>>>(d: D) -> Result<Option<T>, D::Error> {
        Ok(d.deserialize_option(OptVisitor)?.map(T::from))
    }

    struct OptVisitor;

    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<Vec<u8>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an optional byte string")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_byte_buf(super::bytes::BytesVisitor).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_strings_are_written_as_sequences_of_bytes_are() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Fast {
            #[serde(with = "bytes")]
            a: Vec<u8>,
            #[serde(with = "opt_bytes")]
            b: Option<Vec<u8>>,
            #[serde(with = "opt_bytes")]
            c: Option<Vec<u8>>,
        }
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Plain {
            a: Vec<u8>,
            b: Option<Vec<u8>>,
            c: Option<Vec<u8>>,
        }
        let a: Vec<u8> = (0..=255).cycle().take(300).collect();
        let fast = Fast { a: a.clone(), b: Some(vec![0, 200, 7]), c: None };
        let plain = Plain { a, b: Some(vec![0, 200, 7]), c: None };
        let bytes = to_bytes(&fast);
        assert_eq!(bytes, to_bytes(&plain));
        assert_eq!(from_bytes::<Fast>("fast", &bytes, 1024), Ok(fast));
        assert_eq!(from_bytes::<Plain>("plain", &bytes, 1024), Ok(plain));
        // A length past the end is refused, not allocated.
        let mut short = bytes.clone();
        short.truncate(100);
        assert!(from_bytes::<Fast>("fast", &short, 1024).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut b = to_bytes(&7u32);
        b.push(0);
        assert!(matches!(from_bytes::<u32>("n", &b, 16), Err(Error::Malformed { .. })));
    }

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        let b = vec![0u8; 100];
        assert_eq!(from_bytes::<Vec<u8>>("v", &b, 10), Err(Error::TooLarge { what: "v", len: 100, max: 10 }));
        assert!(matches!(frame_len("f", u32::MAX.to_le_bytes(), 1024), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn unknown_version_is_named() {
        let b = to_versioned(9, &1u8);
        assert_eq!(from_versioned::<u8>("x", 1, &b, 8), Err(Error::UnknownVersion { what: "x", version: 9 }));
    }
}
