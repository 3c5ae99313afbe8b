//! The messages of the seed corpus: real encoded messages, built from the
//! same types the node sends (`src/bin/seeds.rs` writes them).

use std::collections::BTreeMap;

use crate::{cbor, frame, request_frame};
use p3_objectspace::{
    api::protocol::{Hello, Request as ApiRequest, Response as ApiResponse, Wait, Written},
    blob::{BlobHash, Chunker},
    event::{Event, EventKind},
    index::Entry,
    lock::{Grant, LockMode, LockRequest, LockState},
    object::{MetaValue, Metadata, ObjectRecord, PutOptions},
    protocol::{PeerRequest, PeerResponse, ShardUpdates, SyncEntry, WriteOp, WriteRequest},
    query::Searchable,
    transfer::{FetchHeader, FetchRequest},
    Namespace, ObjectName, SpaceError,
};

fn ns(name: &str) -> Namespace {
    Namespace::new(name).expect("valid namespace")
}

fn name(name: &str) -> ObjectName {
    ObjectName::new(name).expect("valid name")
}

fn meta() -> Metadata {
    let mut meta = BTreeMap::new();
    meta.insert("row".to_owned(), MetaValue::Num(12.0));
    meta.insert("owner".to_owned(), MetaValue::Str("alice".to_owned()));
    meta
}

fn record(live: bool) -> ObjectRecord {
    ObjectRecord {
        ns: ns("global"),
        name: name("rows/0012"),
        version: 3,
        ns_incarnation: 1,
        blob: live.then(|| BlobHash::of(b"hello")),
        size: if live { 5 } else { 0 },
        type_tag: if live {
            "matrix-row".into()
        } else {
            String::new()
        },
        meta: if live { meta() } else { Metadata::new() },
        created_ms: 1_700_000_000_000,
        modified_ms: 1_700_000_000_500,
        expires_ms: live.then_some(1_700_000_900_000),
        volatile: false,
        epoch: 7,
        signature: None,
    }
}

fn event() -> Event {
    Event {
        kind: EventKind::Put,
        namespace: ns("global"),
        name: name("rows/0012"),
        version: 3,
        hash: BlobHash::of(b"hello").to_string(),
        size: 5,
        at_ms: 1_700_000_000_500,
        meta: meta(),
        type_tag: "matrix-row".into(),
    }
}

fn grant() -> Grant {
    Grant {
        holder: 42,
        mode: LockMode::Write,
        token: 7 << 32,
        lease_until_ms: 1_700_000_010_000,
        node: Some("12D3KooWHolder".into()),
        signature: None,
    }
}

fn entry() -> Entry {
    Entry {
        version: 3,
        expires_ms: None,
        summary: Searchable {
            name: "rows/0012".into(),
            type_tag: "matrix-row".into(),
            size: 5,
            meta: meta(),
            content: Some(b"hello".to_vec()),
        },
    }
}

fn options() -> PutOptions {
    PutOptions {
        type_tag: "text/plain".into(),
        meta: meta(),
        ttl_ms: Some(60_000),
        if_version: Some(0),
        token: None,
        volatile: false,
    }
}

/// A manifest of a small blob (one chunk) and of the empty blob.
pub fn manifests() -> Vec<p3_objectspace::blob::Manifest> {
    [&b"hello"[..], b""]
        .iter()
        .map(|value| {
            let mut chunker = Chunker::new();
            chunker.push(value, |_, _| Ok(())).expect("no sink error");
            chunker.finish(|_, _| Ok(())).expect("no sink error").1
        })
        .collect()
}

/// One peer request of every kind.
pub fn peer_requests() -> Vec<PeerRequest> {
    let write = WriteRequest {
        ns: ns("global"),
        name: name("rows/0012"),
        ns_incarnation: 1,
        op: WriteOp::Put {
            blob: BlobHash::of(b"hello"),
            size: 5,
            type_tag: "matrix-row".into(),
            meta: meta(),
            ttl_ms: None,
            volatile: false,
        },
        if_version: Some(2),
        inline: Some(b"hello".to_vec()),
        origin: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
        hops: 0,
        token: Some(7 << 32),
        ticket: None,
        origin_stores: true,
    };
    let remove = WriteRequest {
        op: WriteOp::Remove,
        inline: None,
        ..write.clone()
    };
    vec![
        PeerRequest::Write(write),
        PeerRequest::Write(remove),
        PeerRequest::Sign {
            ticket: 5,
            record: record(true),
        },
        PeerRequest::Replicate {
            record: record(true),
            inline: Some(b"hello".to_vec()),
            sources: vec![],
            ordered: true,
        },
        PeerRequest::Head {
            ns: ns("global"),
            name: name("a"),
            inline: true,
            epoch: 3,
        },
        PeerRequest::Read {
            ns: ns("job-7f3a"),
            name: name("dir/file.txt"),
            inline: false,
        },
        PeerRequest::Sync(vec![SyncEntry {
            ns: ns("global"),
            name: name("a"),
            order: record(true).order(),
        }]),
        PeerRequest::List {
            ns: ns("global"),
            prefix: "rows/".into(),
            after: Some(name("rows/0001")),
        },
        PeerRequest::DropNamespace(ns("old")),
        PeerRequest::Index(vec![ShardUpdates {
            ns: ns("global"),
            shard: 3,
            updates: vec![
                (
                    record(true),
                    Some(serde_bytes::ByteBuf::from(b"hello".to_vec())),
                ),
                (record(false), None),
            ],
        }]),
        PeerRequest::IndexHave {
            ns: ns("global"),
            shard: 3,
            held: vec![(name("a"), 1, record(true).order())],
        },
        PeerRequest::Search {
            ns: ns("global"),
            shard: 0,
            incarnation: 1,
            query: "type = matrix-row and meta.row >= 10".into(),
            after: Some("rows/0001".into()),
        },
        PeerRequest::Lock(LockRequest::Acquire {
            ns: ns("global"),
            name: name("a"),
            holder: 42,
            mode: LockMode::Read,
            lease_ms: 10_000,
            wait_ms: 500,
            signature: None,
        }),
        PeerRequest::Lock(LockRequest::Renew {
            ns: ns("global"),
            name: name("a"),
            holder: 42,
            lease_ms: 10_000,
        }),
        PeerRequest::Lock(LockRequest::Release {
            ns: ns("global"),
            name: name("a"),
            holder: 42,
        }),
        PeerRequest::LockState {
            ns: ns("global"),
            name: name("a"),
            state: LockState {
                epoch: 7,
                revision: 2,
                last_token: 7 << 32,
                grants: vec![grant()],
            },
        },
        PeerRequest::LockStateOf {
            ns: ns("global"),
            name: name("a"),
            epoch: 7,
        },
        PeerRequest::Interest {
            interests: vec![(ns("global"), "rows/".into())],
            lease_ms: 30_000,
        },
        PeerRequest::Events(vec![event()]),
        PeerRequest::WaitNewer {
            ns: ns("global"),
            name: name("a"),
            after: 2,
            wait_ms: 1_000,
        },
    ]
}

/// One peer response of every kind.
pub fn peer_responses() -> Vec<PeerResponse> {
    vec![
        PeerResponse::Written {
            record: record(true),
            acked: 3,
        },
        PeerResponse::Ordered {
            record: record(true),
            acked: 2,
        },
        PeerResponse::NotPrimary("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into()),
        PeerResponse::Replicated,
        PeerResponse::Stale(Box::new(record(false))),
        PeerResponse::Head {
            record: Some(Box::new(record(true))),
            inline: Some(b"hello".to_vec()),
        },
        PeerResponse::Sync {
            want: vec![0, 2],
            newer: vec![record(true)],
        },
        PeerResponse::Records(vec![record(true), record(false)]),
        PeerResponse::IndexWant(vec![1]),
        PeerResponse::Found {
            entries: vec![entry()],
            next: Some("rows/0012".into()),
        },
        PeerResponse::Newer(Some(4)),
        PeerResponse::Granted {
            grant: grant(),
            waited_ms: 12,
        },
        PeerResponse::HeldLockState(LockState::default()),
        PeerResponse::Done,
        PeerResponse::Error(SpaceError::NotFound("global/a".into())),
        PeerResponse::Error(SpaceError::Locked {
            path: "global/a".into(),
            waited_ms: 0,
            by: vec!["12D3KooWHolder".into()],
        }),
    ]
}

/// Blob stream messages: a request, and each header.
pub fn blob_stream() -> Vec<Vec<u8>> {
    let request = cbor(&FetchRequest {
        hash: BlobHash::of(b"hello"),
        from_chunk: 0,
    });
    let manifest = manifests().remove(0);
    // What a holder sends: the header, then the chunk.
    let mut found = frame(&cbor(&FetchHeader::Found(manifest)));
    found.extend(frame(b"hello"));
    vec![frame(&request), found, frame(&cbor(&FetchHeader::Missing))]
}

/// Local API client streams: the hello, then requests, as framed on the wire.
pub fn api_requests() -> Vec<Vec<u8>> {
    let hello = frame(&cbor(&Hello {
        token: "00112233445566778899aabbccddeeff".into(),
    }));
    let requests = vec![
        ApiRequest::Status,
        ApiRequest::Peers,
        ApiRequest::Closest { key: b"k".to_vec() },
        ApiRequest::Put {
            path: "global/a".into(),
            options: options(),
            size: Some(5),
        },
        ApiRequest::Data(b"hello".to_vec()),
        ApiRequest::End,
        ApiRequest::PutWhole {
            path: "global/b".into(),
            options: options(),
            value: b"hello".to_vec(),
        },
        ApiRequest::EndWith(options()),
        ApiRequest::Get {
            path: "global/a".into(),
            wait: Some(Wait {
                ms: 1_000,
                after_version: Some(2),
            }),
        },
        ApiRequest::Take {
            path: "global/a".into(),
            wait_ms: None,
        },
        ApiRequest::TakeMatch {
            namespace: "global".into(),
            query: "meta.row < 20".into(),
            wait_ms: Some(100),
        },
        ApiRequest::Search {
            namespace: "global".into(),
            query: "name ~ \"rows/*\"".into(),
        },
        ApiRequest::Lock {
            path: "global/a".into(),
            mode: LockMode::Write,
            lease_ms: 10_000,
            timeout_ms: None,
        },
        ApiRequest::Unlock,
        ApiRequest::Watch {
            namespace: "global".into(),
            prefix: "rows/".into(),
            exact: false,
        },
        ApiRequest::Stat {
            path: "global/a".into(),
            local: true,
        },
        ApiRequest::Remove {
            path: "global/a".into(),
            if_version: Some(3),
            token: None,
        },
        ApiRequest::Copy {
            from: "global/a".into(),
            to: "global/b".into(),
            options: PutOptions::default(),
        },
        ApiRequest::List {
            namespace: "global".into(),
            prefix: String::new(),
        },
        ApiRequest::CreateNamespace("job-1".into()),
        ApiRequest::RemoveNamespace("job-1".into()),
        ApiRequest::ListNamespaces,
    ];
    // A put conversation, then each request alone after the hello.
    let mut put = hello.clone();
    for r in &requests[3..6] {
        put.extend(frame(&cbor(r)));
    }
    let mut out = vec![put];
    for r in requests {
        let mut one = hello.clone();
        one.extend(frame(&cbor(&r)));
        out.push(one);
    }
    out
}

/// Local API answers, as framed on the wire.
pub fn api_responses() -> Vec<Vec<u8>> {
    let stat = record(true).stat();
    let responses = vec![
        ApiResponse::Closest(vec![
            "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into()
        ]),
        ApiResponse::Ready,
        ApiResponse::Written(Written {
            path: "global/a".into(),
            version: 3,
            hash: BlobHash::of(b"hello").to_string(),
            size: 5,
            acked_by: 3,
        }),
        ApiResponse::Object(stat.clone()),
        ApiResponse::Data(b"hello".to_vec()),
        ApiResponse::End,
        ApiResponse::Objects(vec![stat]),
        ApiResponse::Namespaces(vec!["global".into()]),
        ApiResponse::Done,
        ApiResponse::Matches(vec![entry()]),
        ApiResponse::Locked {
            grant: grant(),
            valid_ms: 9_000,
        },
        ApiResponse::LockLost(SpaceError::Unavailable("lease ran out".into())),
        ApiResponse::Watching,
        ApiResponse::Event(event()),
        ApiResponse::Error(SpaceError::Invalid("bad".into())),
    ];
    responses.iter().map(|r| frame(&cbor(r))).collect()
}

/// Membership messages (requests, then answers), unframed and framed.
pub fn membership() -> Vec<Vec<u8>> {
    use p3_membership::{
        follow::Catchup,
        wire::{Request, Response},
        Change, Map,
    };
    let mut map = Map::default();
    let change = Change::Join {
        peer: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
        addrs: vec!["/ip4/127.0.0.1/tcp/4370".into()],
        incarnation: 9,
    };
    map.apply(&change);
    let mut out = vec![
        cbor(&Request::Join {
            addrs: vec!["/ip4/127.0.0.1/tcp/4370".into()],
            incarnation: 9,
            epoch: 0,
        }),
        cbor(&Request::Heartbeat {
            incarnation: 9,
            epoch: 1,
        }),
        cbor(&Request::Map),
        cbor(&Response::Joined {
            epoch: 1,
            catchup: Catchup::Whole(map.clone()),
        }),
        cbor(&Response::Renewed {
            epoch: 2,
            catchup: Catchup::Changes {
                from: 1,
                changes: vec![change.clone()],
            },
        }),
        cbor(&Response::Renewed {
            epoch: 2,
            catchup: Catchup::Current,
        }),
        cbor(&Response::NotMember),
        cbor(&Response::NotLeader { leader: None }),
        cbor(&Response::Map(map)),
        cbor(&Response::Refused("no".into())),
    ];
    // As a request stream carries them: requests, then answers.
    let stream: Vec<u8> = out
        .iter()
        .enumerate()
        .flat_map(|(id, body)| request_frame(u8::from(id >= 3), id as u64, body))
        .collect();
    out.push(stream);
    out
}
