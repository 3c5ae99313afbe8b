//! Helpers shared by the fuzz targets, and (with the `seeds` feature) the
//! messages of their seed corpus, which `src/bin/seeds.rs` writes.

use serde::{de::DeserializeOwned, Serialize};

#[cfg(feature = "seeds")]
pub mod seeds;

/// Encodes `value` as CBOR, as every P³ wire format does.
pub fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("encoding into a Vec cannot fail");
    out
}

/// Decodes `bytes` with `ciborium::from_reader`, the call every P³ decoder of
/// peer and client messages makes; if that succeeds, checks that the value
/// re-encodes to bytes that decode again and re-encode the same
/// (decode(encode(x)) == x, compared through the encoding so that NaN
/// metadata numbers compare equal).
pub fn decode_checked<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: T = ciborium::from_reader(bytes).ok()?;
    let once = cbor(&value);
    let again: T = match ciborium::from_reader(once.as_slice()) {
        Ok(again) => again,
        Err(e) => panic!("a decoded value re-encodes to bytes that do not decode: {e}"),
    };
    assert!(cbor(&again) == once, "decode(encode(x)) != x");
    Some(value)
}

/// Splits `bytes` into frames of a 4-byte big-endian length and that many
/// bytes, the framing of blob streams and the local API, stopping (as their
/// readers do) at a length over `max` or a short frame.
pub fn length_frames(mut bytes: &[u8], max: usize) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len > max || bytes.len() - 4 < len {
            break;
        }
        frames.push(&bytes[4..4 + len]);
        bytes = &bytes[4 + len..];
    }
    frames
}

/// Prefixes `body` with its 4-byte big-endian length.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A request-stream frame (kind, id, body), as `p3_dht`'s request streams
/// carry them.
pub fn request_frame(kind: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}
