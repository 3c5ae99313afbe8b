//! Peer requests: what a node decodes from another node. The bytes are read
//! both as one request-response body (decoded with `ciborium::from_reader`,
//! as `p3_dht::InboundRequest::decode` does) and as a request stream, split
//! into frames by the node's own reader (`p3_dht::read_request_frames`) with
//! each frame's body decoded the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3_fuzz::decode_checked;
use p3_objectspace::protocol::PeerRequest;

/// The default `max_request_bytes`.
const MAX_REQUEST: u64 = 4 << 20;

fuzz_target!(|data: &[u8]| {
    if let Some(request) = decode_checked::<PeerRequest>(data) {
        let _ = request.kind();
    }
    if let Ok(frames) = p3_dht::read_request_frames(data, MAX_REQUEST) {
        for (_kind, _id, body) in frames {
            let _ = decode_checked::<PeerRequest>(&body);
        }
    }
});
