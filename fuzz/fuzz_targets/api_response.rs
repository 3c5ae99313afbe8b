//! Local API frames as a client (`p3ctl`, `Space`) reads them from the node,
//! through `p3_objectspace::api::read_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3_objectspace::api::{protocol::Response, read_frame};

fuzz_target!(|data: &[u8]| {
    futures::executor::block_on(async {
        let mut io = data;
        while let Ok(Some(response)) = read_frame::<_, Response>(&mut io).await {
            let bytes = p3_fuzz::cbor(&response);
            let _ = p3_fuzz::decode_checked::<Response>(&bytes);
        }
    });
});
