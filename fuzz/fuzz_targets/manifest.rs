//! Manifests (`p3_objectspace::blob::Manifest`, its own validating decoder),
//! and blob hashes in hex (`BlobHash::from_hex`, from clients).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3_fuzz::decode_checked;
use p3_objectspace::blob::{chunk_count, BlobHash, Manifest};

fuzz_target!(|data: &[u8]| {
    if let Some(manifest) = decode_checked::<Manifest>(data) {
        assert_eq!(manifest.chunks().len() as u64, chunk_count(manifest.size()));
        let mut total = 0u64;
        for index in 0..manifest.chunks().len() {
            total += manifest.chunk_len(index) as u64;
        }
        assert_eq!(total, manifest.size());
        let _ = manifest.verify_chunk(0, data);
        let _ = manifest.verify_chunk(manifest.chunks().len(), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(hash) = BlobHash::from_hex(text) {
            assert_eq!(BlobHash::from_hex(&hash.to_string()).ok(), Some(hash));
        }
    }
});
