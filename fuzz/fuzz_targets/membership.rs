//! Membership messages (`p3_membership::wire`): requests and answers,
//! including Raft's messages and the map, decoded with
//! `ciborium::from_reader` as `wire::decode` does, both as one body and as
//! the frames of a request stream (`p3_dht::read_request_frames`, the
//! membership channel's reader).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3_fuzz::decode_checked;
use p3_membership::wire::{Request, Response, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let _ = decode_checked::<Request>(data);
    let _ = decode_checked::<Response>(data);
    if let Ok(frames) = p3_dht::read_request_frames(data, MAX_FRAME as u64) {
        for (_kind, _id, body) in frames {
            let _ = decode_checked::<Request>(&body);
            let _ = decode_checked::<Response>(&body);
        }
    }
});
