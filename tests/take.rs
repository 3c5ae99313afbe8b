//! take (Linda's `in`): of any number of concurrent takers on different nodes,
//! exactly one gets each object, and nothing is lost. Real node processes on
//! 127.0.0.1; every taker is a separate `p3ctl` process.

mod common;

use std::{thread, time::Duration};

use common::{
    objects::take_once_everywhere, p3ctl_err, p3ctl_ok, p3ctl_spawn, pseudo_random, Cluster,
    KillOnDrop, DEADLINE,
};

#[test]
fn concurrent_takers_on_five_nodes_each_object_goes_to_exactly_one() {
    let cluster = Cluster::start(5);
    cluster.wait_formed();
    let values: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            // One value large enough to travel over a blob stream, not inline.
            let len = if i == 0 { 3 << 20 } else { 100 + i * 10 };
            pseudo_random(len, i as u64)
        })
        .collect();
    for (i, value) in values.iter().enumerate() {
        let file = cluster.root.path().join(format!("task-{i}"));
        std::fs::write(&file, value).unwrap();
        p3ctl_ok(
            &cluster.nodes[i % 5].dir,
            &["put", &format!("global/bag/{i}"), file.to_str().unwrap()],
        );
    }

    for (i, value) in values.iter().enumerate() {
        let path = format!("global/bag/{i}");
        let (taken, said) = take_once_everywhere(&cluster, &path);
        assert!(taken == *value, "{path}: the taker got other bytes");
        assert!(said.contains(&format!("took {path}")), "{said}");
        // It is gone for everyone.
        let err = p3ctl_err(&cluster.nodes[4].dir, &["get", &path]);
        assert!(err.contains("does not exist"), "{err}");
    }
}

#[test]
fn take_waits_for_the_object_to_be_written() {
    let cluster = Cluster::start(3);
    cluster.wait_formed();
    let mut taker = KillOnDrop(p3ctl_spawn(
        &cluster.nodes[0].dir,
        &["take", "global/job", "--wait", "60s"],
    ));
    assert!(
        taker.0.try_wait().unwrap().is_none(),
        "take returned before the write"
    );
    let file = cluster.root.path().join("job");
    std::fs::write(&file, b"work item").unwrap();
    p3ctl_ok(
        &cluster.nodes[2].dir,
        &["put", "global/job", file.to_str().unwrap()],
    );
    let deadline = std::time::Instant::now() + DEADLINE;
    while taker.0.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "take did not return");
        thread::sleep(Duration::from_millis(10)); // polling a local process's exit
    }
    let (ok, out, err) = taker.finish();
    assert!(ok, "{err}");
    assert_eq!(out, b"work item");
    let err = p3ctl_err(&cluster.nodes[1].dir, &["get", "global/job"]);
    assert!(err.contains("does not exist"), "{err}");
}
