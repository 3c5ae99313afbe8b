//! Local API frames as the node reads them from a client: the `Hello`, then
//! requests, through `p3_objectspace::api::read_frame` (the server's reader);
//! the paths and queries in them go through the same checks the server makes
//! (`ObjectPath::parse`, `Namespace::new`, `Query::parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3_objectspace::{
    api::{
        protocol::{Hello, Request},
        read_frame,
    },
    query::Query,
    Namespace, ObjectPath,
};

fuzz_target!(|data: &[u8]| {
    futures::executor::block_on(async {
        let mut io = data;
        let Ok(Some(_hello)) = read_frame::<_, Hello>(&mut io).await else {
            return;
        };
        while let Ok(Some(request)) = read_frame::<_, Request>(&mut io).await {
            let _ = p3_fuzz::cbor(&request);
            match &request {
                Request::Put { path, .. }
                | Request::Get { path, .. }
                | Request::Take { path, .. }
                | Request::Lock { path, .. }
                | Request::Stat { path, .. }
                | Request::Remove { path, .. } => {
                    let _ = ObjectPath::parse(path);
                }
                Request::Copy { from, to, .. } => {
                    let _ = (ObjectPath::parse(from), ObjectPath::parse(to));
                }
                Request::TakeMatch {
                    namespace, query, ..
                }
                | Request::Search { namespace, query } => {
                    let _ = (Namespace::new(namespace), Query::parse(query));
                }
                _ => {}
            }
        }
    });
});
