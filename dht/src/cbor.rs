//! CBOR bodies of peer requests and answers, without ciborium's regrowth.
//!
//! ciborium writes into a `Vec` that doubles as it fills and reads a byte
//! string by appending 4 KiB pieces to an empty `Vec`; a write carrying a
//! 1 MiB value inline regrew both buffers from nothing, in freshly faulted
//! pages, on every owner. Here both go through a buffer each thread keeps:
//! a body is encoded into it and copied out at its exact size, and a byte
//! string is read into it whole, so its `Vec` is allocated once.

use std::cell::RefCell;

use serde::{de::DeserializeOwned, Serialize};

/// Bodies up to this size need no kept buffer (ciborium's own scratch is
/// 4 KiB).
const SMALL: usize = 4 << 10;

/// Largest buffer a thread keeps between bodies; larger ones use one of
/// their own, freed after.
const KEPT_MAX: usize = 4 << 20;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a buffer of at least `len` bytes: the thread's own when it
/// is free and `len` is at most [`KEPT_MAX`].
fn with_buffer<R>(len: usize, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    BUFFER.with(|kept| match kept.try_borrow_mut() {
        Ok(mut buffer) if len <= KEPT_MAX => f(&mut buffer),
        _ => f(&mut Vec::new()),
    })
}

/// Encodes `value`.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    with_buffer(0, |buffer| {
        buffer.clear();
        let encoded = ciborium::into_writer(value, &mut *buffer).map_err(|e| e.to_string());
        let body = encoded.map(|()| buffer.as_slice().to_vec());
        if buffer.capacity() > KEPT_MAX {
            *buffer = Vec::new();
        }
        body
    })
}

/// Decodes a body.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.len() <= SMALL {
        return ciborium::from_reader(body).map_err(|e| e.to_string());
    }
    with_buffer(body.len(), |scratch| {
        if scratch.len() < body.len() {
            scratch.resize(body.len(), 0);
        }
        ciborium::from_reader_with_buffer(body, scratch.as_mut_slice()).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Message {
        name: String,
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
    }

    #[test]
    fn bodies_are_ciboriums_and_read_back() {
        for len in [0, 100, SMALL, SMALL + 1, 1 << 20, KEPT_MAX + 1] {
            let message = Message {
                name: format!("m{len}"),
                value: Some((0..len).map(|i| (i % 251) as u8).collect()),
            };
            let mut theirs = Vec::new();
            ciborium::into_writer(&message, &mut theirs).unwrap();
            let ours = encode(&message).unwrap();
            assert_eq!(ours, theirs, "{len} bytes");
            assert_eq!(decode::<Message>(&ours).unwrap(), message);
        }
    }

    #[test]
    fn a_bad_body_is_an_error_and_the_buffer_stays_usable() {
        let good = encode(&Message {
            name: "x".into(),
            value: Some(vec![7; 2 * SMALL]),
        })
        .unwrap();
        assert!(decode::<Message>(&good[..good.len() - 1]).is_err());
        assert!(decode::<Message>(&vec![0xFF; 2 * SMALL]).is_err());
        assert_eq!(
            decode::<Message>(&good).unwrap().value.unwrap().len(),
            2 * SMALL
        );
    }
}
