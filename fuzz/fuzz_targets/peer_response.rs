//! Peer responses: what a node decodes from the peer it asked, as one
//! response body (`ciborium::from_reader`, as `p3_dht::Node::request` does)
//! and as the frames of an answer stream (`p3_dht::read_request_frames`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3_fuzz::decode_checked;
use p3_objectspace::protocol::PeerResponse;

/// The default `max_response_bytes`.
const MAX_RESPONSE: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = decode_checked::<PeerResponse>(data);
    if let Ok(frames) = p3_dht::read_request_frames(data, MAX_RESPONSE) {
        for (_kind, _id, body) in frames {
            let _ = decode_checked::<PeerResponse>(&body);
        }
    }
});
