//! Blob stream frames (`p3_objectspace::transfer`): a 4-byte length and a
//! body each. The holder decodes the first frame as a `FetchRequest`; the
//! fetcher decodes it as a `FetchHeader` and checks every following frame
//! against the manifest (`Manifest::verify_chunk`) and the whole against the
//! blob hash (`Verifier`), as `transfer::fetch` does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3_fuzz::{decode_checked, length_frames};
use p3_objectspace::{
    blob::{BlobHash, Verifier, CHUNK_SIZE},
    transfer::{FetchHeader, FetchRequest},
};

/// `transfer`'s limit on a header frame.
const MAX_HEADER: usize = (4 << 20) + 64;

fuzz_target!(|data: &[u8]| {
    let frames = length_frames(data, MAX_HEADER);
    let Some(first) = frames.first() else {
        return;
    };
    if first.len() <= 1024 {
        let _ = decode_checked::<FetchRequest>(first);
    }
    let Some(FetchHeader::Found(manifest)) = decode_checked::<FetchHeader>(first) else {
        return;
    };
    let mut verifier = Verifier::new(BlobHash::of(b"hello"));
    for (index, chunk) in frames[1..].iter().enumerate() {
        if chunk.len() > CHUNK_SIZE || index >= manifest.chunks().len() {
            break;
        }
        if manifest.verify_chunk(index, chunk).is_err() {
            break;
        }
        verifier.update(chunk);
    }
    let _ = verifier.finish();
});
