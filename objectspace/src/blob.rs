//! Blobs: immutable values addressed by the blake3 hash of their bytes, split
//! into fixed-size chunks so that they move and are verified a piece at a time.
//!
//! A blob's hash is the plain blake3 digest of its whole content (what `b3sum`
//! prints). Its [`Manifest`] lists the blake3 hash of every chunk: a receiver checks
//! each chunk against the manifest as it arrives, and the whole content against
//! the blob hash at the end, so neither a corrupted chunk nor a forged manifest is
//! ever stored as the blob.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, SpaceError};

/// Size of every chunk but the last.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Values up to this size (one chunk) travel inside the messages that carry
/// their records, to the primary and from it to every replica at once,
/// instead of being fetched over a stream by each owner in turn (three
/// round trips in series, a quarter of the write rate for 256 KiB values).
/// Well under the peer request limit (`max_request_bytes`, 4 MiB).
pub const INLINE_MAX: u64 = CHUNK_SIZE as u64;

/// Values up to this size also travel inside the answers to reads and are
/// not announced as provider records. A larger one is announced, and a
/// reader that holds it (an owner, or a node that cached it) reads its own
/// copy instead of having the primary send it: for a 1 MiB value that is
/// the difference between 540 and 700-890 MB/s of gets.
pub const SMALL_MAX: u64 = 64 << 10;

/// A blake3-256 digest naming a blob or a chunk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out)
            .map_err(|_| SpaceError::Invalid(format!("{text:?} is not a blake3 hash")))?;
        Ok(Self(out))
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", &hex::encode(self.0)[..12])
    }
}

impl Serialize for BlobHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for BlobHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::custom("a blake3 hash has 32 bytes"))?;
        Ok(Self(array))
    }
}

/// The chunk hashes of a blob, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawManifest", into = "RawManifest")]
pub struct Manifest {
    size: u64,
    chunks: Vec<BlobHash>,
}

#[derive(Serialize, Deserialize)]
struct RawManifest {
    size: u64,
    #[serde(with = "serde_bytes")]
    chunks: Vec<u8>,
}

impl TryFrom<RawManifest> for Manifest {
    type Error = String;
    fn try_from(raw: RawManifest) -> Result<Self, String> {
        if !raw.chunks.len().is_multiple_of(32) {
            return Err("chunk list is not a whole number of hashes".into());
        }
        let chunks: Vec<BlobHash> = raw
            .chunks
            .chunks_exact(32)
            .map(|c| BlobHash(c.try_into().unwrap_or([0; 32])))
            .collect();
        if chunks.len() as u64 != chunk_count(raw.size) {
            return Err(format!(
                "{} chunk hashes for a blob of {} bytes",
                chunks.len(),
                raw.size
            ));
        }
        Ok(Manifest {
            size: raw.size,
            chunks,
        })
    }
}

impl From<Manifest> for RawManifest {
    fn from(m: Manifest) -> Self {
        RawManifest {
            size: m.size,
            chunks: m.chunks.iter().flat_map(|c| c.0).collect(),
        }
    }
}

/// How many chunks a blob of `size` bytes has (none for the empty blob).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE as u64)
}

impl Manifest {
    /// The manifest of a value of at most one chunk, `bytes`, whose hash
    /// `hash` the caller has checked (a value's one chunk is the value).
    pub fn of_small(hash: BlobHash, bytes: &[u8]) -> Result<Manifest> {
        if bytes.len() > CHUNK_SIZE {
            return Err(SpaceError::Invalid(format!(
                "a value of {} bytes is more than one chunk",
                bytes.len()
            )));
        }
        Ok(Manifest {
            size: bytes.len() as u64,
            chunks: if bytes.is_empty() { vec![] } else { vec![hash] },
        })
    }

    /// The blob size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunk hashes, in order.
    pub fn chunks(&self) -> &[BlobHash] {
        &self.chunks
    }

    /// Length of chunk `index`.
    pub fn chunk_len(&self, index: usize) -> usize {
        let start = index as u64 * CHUNK_SIZE as u64;
        (self.size - start).min(CHUNK_SIZE as u64) as usize
    }

    /// Checks that `bytes` are chunk `index` of this blob.
    pub fn verify_chunk(&self, index: usize, bytes: &[u8]) -> Result<()> {
        let expected = self
            .chunks
            .get(index)
            .ok_or_else(|| SpaceError::Corrupt(format!("chunk {index} is past the end")))?;
        if bytes.len() != self.chunk_len(index) || BlobHash::of(bytes) != *expected {
            return Err(SpaceError::Corrupt(format!(
                "chunk {index} does not match its hash {expected}"
            )));
        }
        Ok(())
    }
}

/// Splits a stream of bytes into chunks while hashing the whole, so a value of
/// any size is addressed without being held in memory.
#[derive(Default)]
pub struct Chunker {
    whole: blake3::Hasher,
    pending: Vec<u8>,
    chunks: Vec<BlobHash>,
    size: u64,
}

impl Chunker {
    /// An empty chunker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `emit(hash, chunk)` for every chunk completed.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        mut emit: impl FnMut(BlobHash, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.whole.update(bytes);
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = (CHUNK_SIZE - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == CHUNK_SIZE {
                self.flush(&mut emit)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, emit: &mut impl FnMut(BlobHash, &[u8]) -> Result<()>) -> Result<()> {
        let hash = BlobHash::of(&self.pending);
        emit(hash, &self.pending)?;
        self.chunks.push(hash);
        self.pending.clear();
        Ok(())
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Emits the last, short chunk and returns the blob's hash and manifest.
    pub fn finish(
        mut self,
        mut emit: impl FnMut(BlobHash, &[u8]) -> Result<()>,
    ) -> Result<(BlobHash, Manifest)> {
        if !self.pending.is_empty() {
            self.flush(&mut emit)?;
        }
        let hash = BlobHash(*self.whole.finalize().as_bytes());
        Ok((
            hash,
            Manifest {
                size: self.size,
                chunks: self.chunks,
            },
        ))
    }
}

/// Checks a whole value received chunk by chunk against the blob hash.
pub struct Verifier {
    whole: blake3::Hasher,
    expected: BlobHash,
}

impl Verifier {
    /// Starts checking a blob that should hash to `expected`.
    pub fn new(expected: BlobHash) -> Self {
        Self {
            whole: blake3::Hasher::new(),
            expected,
        }
    }

    /// Feeds the next verified chunk.
    pub fn update(&mut self, bytes: &[u8]) {
        self.whole.update(bytes);
    }

    /// Whether everything fed hashes to the expected blob hash.
    pub fn finish(self) -> Result<()> {
        let got = BlobHash(*self.whole.finalize().as_bytes());
        if got == self.expected {
            Ok(())
        } else {
            Err(SpaceError::Corrupt(format!(
                "content hashes to {got}, not {}",
                self.expected
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk_all(data: &[u8], step: usize) -> (BlobHash, Manifest, Vec<Vec<u8>>) {
        let mut chunker = Chunker::new();
        let mut out = Vec::new();
        for piece in data.chunks(step.max(1)) {
            chunker
                .push(piece, |_, c| {
                    out.push(c.to_vec());
                    Ok(())
                })
                .unwrap();
        }
        let (hash, manifest) = chunker
            .finish(|_, c| {
                out.push(c.to_vec());
                Ok(())
            })
            .unwrap();
        (hash, manifest, out)
    }

    #[test]
    fn a_corrupted_chunk_is_rejected() {
        let data: Vec<u8> = (0..CHUNK_SIZE * 2 + 17).map(|i| (i % 251) as u8).collect();
        let (hash, manifest, mut chunks) = chunk_all(&data, 4096);
        assert_eq!(hash, BlobHash::of(&data));
        for (i, c) in chunks.iter().enumerate() {
            manifest.verify_chunk(i, c).unwrap();
        }
        chunks[1][12345] ^= 1;
        let err = manifest.verify_chunk(1, &chunks[1]).unwrap_err();
        assert!(matches!(err, SpaceError::Corrupt(_)), "{err}");
        // A truncated last chunk is as wrong as a flipped bit.
        assert!(manifest.verify_chunk(2, &chunks[2][..16]).is_err());
        assert!(manifest.verify_chunk(3, b"").is_err());
    }

    #[test]
    fn a_forged_manifest_fails_the_whole_hash() {
        let real = vec![7u8; 1000];
        let forged = vec![8u8; 1000];
        let mut verifier = Verifier::new(BlobHash::of(&real));
        verifier.update(&forged);
        assert!(verifier.finish().is_err());
    }

    #[test]
    fn manifests_with_the_wrong_chunk_count_do_not_decode() {
        let raw = RawManifest {
            size: CHUNK_SIZE as u64 + 1,
            chunks: vec![0; 32],
        };
        let mut buf = Vec::new();
        ciborium::into_writer(&raw, &mut buf).unwrap();
        assert!(ciborium::from_reader::<Manifest, _>(buf.as_slice()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn chunking_is_independent_of_how_bytes_arrive(
            len in 0usize..(3 * CHUNK_SIZE), step in 1usize..300_000, seed in any::<u8>()
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let (hash, manifest, chunks) = chunk_all(&data, step);
            prop_assert_eq!(hash, BlobHash::of(&data));
            prop_assert_eq!(manifest.size(), len as u64);
            prop_assert_eq!(chunks.len() as u64, chunk_count(len as u64));
            prop_assert_eq!(chunks.concat(), data);
            let mut verifier = Verifier::new(hash);
            for (i, c) in chunks.iter().enumerate() {
                prop_assert!(manifest.verify_chunk(i, c).is_ok());
                verifier.update(c);
            }
            prop_assert!(verifier.finish().is_ok());
        }

        #[test]
        fn manifests_round_trip_through_cbor(len in 0u64..(64 * CHUNK_SIZE as u64)) {
            let manifest = Manifest {
                size: len,
                chunks: (0..chunk_count(len)).map(|i| BlobHash::of(&i.to_le_bytes())).collect(),
            };
            let mut buf = Vec::new();
            ciborium::into_writer(&manifest, &mut buf).unwrap();
            let back: Manifest = ciborium::from_reader(buf.as_slice()).unwrap();
            prop_assert_eq!(back, manifest);
        }

        #[test]
        fn flipping_any_bit_of_a_chunk_is_detected(len in 1usize..5000, bit in any::<usize>()) {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (_, manifest, mut chunks) = chunk_all(&data, 1000);
            let bit = bit % (len * 8);
            chunks[0][bit / 8] ^= 1 << (bit % 8);
            prop_assert!(manifest.verify_chunk(0, &chunks[0]).is_err());
        }
    }
}
