//! Membership messages (`p3_membership::wire`): requests and answers,
//! including Raft's messages and the map, decoded with
//! `ciborium::from_reader` as the membership stream's reader does, both as
//! one body and as 4-byte-length frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3_fuzz::{decode_checked, length_frames};
use p3_membership::wire::{Request, Response, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let _ = decode_checked::<Request>(data);
    let _ = decode_checked::<Response>(data);
    for body in length_frames(data, MAX_FRAME) {
        let _ = decode_checked::<Request>(body);
        let _ = decode_checked::<Response>(body);
    }
});
