//! Where things live in the DHT: the Kademlia keys of objects and blobs.

use crate::name::{Namespace, ObjectName};

/// Multihash prefix of a blake3-256 digest (code 0x1e, length 0x20): blob
/// provider records use the standard multihash form so any Kademlia peer can
/// look up who holds some content.
pub const BLAKE3_MULTIHASH_PREFIX: [u8; 2] = [0x1e, 0x20];

/// The DHT key of an object: `blake3(namespace ‖ 0x00 ‖ name)`. The separator
/// cannot occur in either part, so different (namespace, name) pairs never share
/// the preimage. The nodes closest to this key own the object.
pub fn object_key(namespace: &Namespace, name: &ObjectName) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(namespace.as_str().as_bytes());
    hasher.update(&[0]);
    hasher.update(name.as_str().as_bytes());
    *hasher.finalize().as_bytes()
}

/// The provider-record key of a blob: `0x1e 0x20 ‖ blake3 digest`.
pub fn blob_provider_key(digest: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(34);
    key.extend_from_slice(&BLAKE3_MULTIHASH_PREFIX);
    key.extend_from_slice(digest);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> [u8; 32] {
        object_key(
            &Namespace::new(ns).unwrap(),
            &ObjectName::new(name).unwrap(),
        )
    }

    #[test]
    fn object_key_is_blake3_of_namespace_nul_name() {
        assert_eq!(key("global", "a"), *blake3::hash(b"global\0a").as_bytes());
    }

    #[test]
    fn moving_the_boundary_changes_the_key() {
        // "ab" + "c" and "a" + "bc" would collide without the separator.
        assert_ne!(key("ab", "c"), key("a", "bc"));
    }

    #[test]
    fn blob_keys_are_multihashes() {
        let digest = *blake3::hash(b"content").as_bytes();
        let k = blob_provider_key(&digest);
        assert_eq!(k.len(), 34);
        assert_eq!(&k[..2], &[0x1e, 0x20]);
        assert_eq!(&k[2..], &digest);
    }
}
