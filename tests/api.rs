//! The local API's client: one connection carries many conversations at once
//! (channels). A real node process on 127.0.0.1.

mod common;

use std::time::Duration;

use common::Cluster;
use p3::objectspace::{
    api::{
        protocol::{Request, Wait, WHOLE_MAX},
        HeldLock,
    },
    lock::LockMode,
    object::PutOptions,
    watch::EventKind,
    Space, SpaceError,
};

/// How long any step of these tests may take.
const STEP: Duration = Duration::from_secs(30);

/// The write lock on `global/mux/x`, taken on a new channel of `space`
/// within `wait`.
async fn write_lock(space: &Space, wait: Duration) -> HeldLock {
    space
        .channel()
        .await
        .expect("lock channel")
        .lock(
            "global/mux/x",
            LockMode::Write,
            Duration::from_secs(10),
            Some(wait),
        )
        .await
        .expect("lock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_a_blocking_read_a_watch_and_a_lock_while_it_writes() {
    let cluster = tokio::task::block_in_place(|| Cluster::start(1));
    let dir = cluster.nodes[0].dir.clone();
    let mut space = Space::connect(&dir).await.expect("connect");
    // Channels need no second connection: without the node's api.json a new
    // connection could not even be made.
    let api = dir.join("api.json");
    let hidden = dir.join("api.json.hidden");
    std::fs::rename(&api, &hidden).expect("hide api.json");
    assert!(
        Space::connect(&dir).await.is_err(),
        "connected without api.json"
    );

    let mut watching = space
        .channel()
        .await
        .expect("watch channel")
        .watch("global", "mux/", false)
        .await
        .expect("watch");
    let mut reader = space.channel().await.expect("read channel");
    let reading = tokio::spawn(async move {
        let mut value = Vec::new();
        let wait = Wait {
            ms: STEP.as_millis() as u64,
            after_version: None,
        };
        let stat = reader
            .get_waiting("global/mux/x", Some(wait), &mut value, |_, _| {})
            .await;
        (stat, value)
    });
    let lock = write_lock(&space, STEP).await;

    // The blocking read and the watch wait on their channels while this one
    // writes under the lock.
    let options = PutOptions {
        token: Some(lock.token()),
        ..PutOptions::default()
    };
    let written = space
        .put_bytes("global/mux/x", &options, b"through one connection")
        .await
        .expect("put under the lock");

    let (stat, value) = tokio::time::timeout(STEP, reading)
        .await
        .expect("the blocking read never returned")
        .expect("reader task");
    assert_eq!(stat.expect("blocking read").version, written.version);
    assert_eq!(value, b"through one connection");

    let event = tokio::time::timeout(STEP, watching.next())
        .await
        .expect("no event within the step")
        .expect("event");
    assert_eq!(event.kind, EventKind::Put);
    assert_eq!(event.name.as_str(), "mux/x");
    assert_eq!(event.version, written.version);

    lock.release().await.expect("release");
    // The lock is free again: this channel can take it at once.
    let again = write_lock(&space, Duration::ZERO).await;
    assert!(again.token() > options.token.unwrap_or_default());
    again.release().await.expect("release again");
    std::fs::rename(&hidden, &api).expect("restore api.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_sent_whole_or_streamed_read_back_the_same_and_an_oversized_whole_one_is_refused() {
    let cluster = tokio::task::block_in_place(|| Cluster::start(1));
    let mut space = Space::connect(&cluster.nodes[0].dir)
        .await
        .expect("connect");
    // Either side of the size up to which a value travels inside its request.
    for size in [0, 1, WHOLE_MAX - 1, WHOLE_MAX, WHOLE_MAX + 1, 3 * WHOLE_MAX] {
        let value: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let path = format!("global/whole/{size}");
        let written = space
            .put_bytes(&path, &PutOptions::default(), &value)
            .await
            .unwrap_or_else(|e| panic!("put of {size} bytes: {e}"));
        assert_eq!(written.size, size as u64);
        let (stat, read) = space.get_bytes(&path).await.expect("get");
        assert_eq!(stat.version, written.version);
        assert!(read == value, "{size} bytes read back differently");
    }
    // A client that sends a larger value whole is told to stream it, and its
    // connection goes on serving.
    let refused = space
        .call(Request::PutWhole {
            path: "global/whole/over".into(),
            options: PutOptions::default(),
            value: vec![1; WHOLE_MAX + 1],
        })
        .await
        .expect_err("an oversized whole value was accepted");
    assert!(
        matches!(&refused, SpaceError::Invalid(m) if m.contains("streamed")),
        "{refused}"
    );
    assert!(space.stat("global/whole/over").await.is_err());
    space.status().await.expect("the connection still serves");
}
