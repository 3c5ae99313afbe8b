//! Writer-only namespaces (`docs/writers.md`): only the nodes a namespace
//! lists may change it, from any of them; every owner refuses the rest,
//! including records a peer forges during replication and repair, and
//! changes to the namespace list that drop a writer history. Real node
//! processes on 127.0.0.1 and a real libp2p peer playing the forger.

mod common;

use std::fs;

use common::objects::*;
use common::{p3ctl, p3ctl_err, p3ctl_ok, wait_for, Cluster, DEADLINE};
use p3::dht::{Keypair, Node, PeerId};
use p3::objectspace::{
    blob::BlobHash,
    lock::{LockMode, LockRequest},
    namespaces::Registry,
    object::ObjectRecord,
    protocol::{PeerRequest, PeerResponse},
    writers::{record_statement, Signer},
    Namespace, ObjectName, SpaceError,
};

/// `request`'s answer from `peer`, dialling again while the connection is
/// being set up.
async fn ask(node: &Node, peer: PeerId, request: &PeerRequest) -> PeerResponse {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match node.request(peer, request).await {
            Ok(answer) => return answer,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "{peer} never answered {}: {e}",
                request.kind()
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits until `node` is connected to every one of `peers`.
async fn connected_to(node: &Node, peers: &[PeerId]) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let connected = node.connected().await.unwrap();
        if peers.iter().all(|p| connected.contains(p)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the peer never connected to every node: {connected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The record of `ns/name` as `peer` holds it, with its value if small.
async fn head_value(
    node: &Node,
    peer: PeerId,
    ns: &str,
    name: &str,
) -> (ObjectRecord, Option<Vec<u8>>) {
    let request = PeerRequest::Head {
        ns: Namespace::new(ns).unwrap(),
        name: ObjectName::new(name).unwrap(),
        inline: true,
        epoch: 0,
    };
    match ask(node, peer, &request).await {
        PeerResponse::Head {
            record: Some(record),
            inline,
        } => (*record, inline),
        other => panic!("no record of {ns}/{name} at {peer}: {other:?}"),
    }
}

async fn head(node: &Node, peer: PeerId, ns: &str, name: &str) -> ObjectRecord {
    head_value(node, peer, ns, name).await.0
}

/// Sends `record` (with `value`) to `peer` as repair (`ordered: false`) and
/// as a primary's replication; both must be refused.
async fn refused(node: &Node, peer: PeerId, record: &ObjectRecord, value: &[u8], what: &str) {
    for ordered in [false, true] {
        let request = PeerRequest::Replicate {
            record: record.clone(),
            inline: Some(value.to_vec()),
            sources: vec![],
            ordered,
        };
        let answer = ask(node, peer, &request).await;
        // Repair has no primary to check: the refusal is the signature's
        // (or the namespace list's). Replication is refused at least for
        // its sender not being the primary.
        let ok = match &answer {
            PeerResponse::Error(SpaceError::Forbidden(_)) => true,
            // Not the primary, or of an epoch the node has not reached.
            PeerResponse::Error(SpaceError::Unavailable(_)) => ordered,
            _ => false,
        };
        assert!(ok, "{what} (ordered: {ordered}) at {peer}: {answer:?}");
    }
}

/// Three nodes, their membership formed.
/// Asks `peer` and expects a refusal for want of a writer's signature (or a
/// redirect to the key's primary, which refuses it in turn).
async fn forbidden_here(node: &Node, peer: PeerId, request: &PeerRequest) {
    let answer = ask(node, peer, request).await;
    assert!(
        matches!(
            &answer,
            PeerResponse::Error(SpaceError::Forbidden(_)) | PeerResponse::NotPrimary(_)
        ),
        "{answer:?}"
    );
}

fn formed() -> Cluster {
    let cluster = Cluster::start(3);
    cluster.wait_formed();
    cluster
}

fn versions(dir: &std::path::Path, path: &str) -> Vec<(String, u64)> {
    let stat = stat(dir, path);
    let mut replicas: Vec<(String, u64)> = stat["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| {
            (
                r["peer"].as_str().unwrap().to_owned(),
                r["version"].as_u64().unwrap(),
            )
        })
        .collect();
    replicas.sort();
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_writers_change_a_writer_only_namespace() {
    let cluster = tokio::task::block_in_place(formed);
    let [a, b, c] = [0, 1, 2].map(|i| cluster.nodes[i].dir.clone());
    let [id_a, id_b, id_c] = [0, 1, 2].map(|i| cluster.nodes[i].peer_id.clone());
    let value = cluster.root.path().join("value");
    fs::write(&value, b"signed bytes").unwrap();

    tokio::task::block_in_place(|| {
        // Only a listed node may create it, and it must list itself.
        let err = p3ctl_err(&c, &["ns", "create", "team", "--writer", &id_a]);
        assert!(err.contains("is not a writer of team"), "{err}");
        p3ctl_ok(&a, &["ns", "create", "team", "--writer", &id_a]);
        // b and c read the list before the grant, and cache it.
        for node in [&b, &c] {
            let out = p3ctl_ok(node, &["ns", "writers", "team", "--json"]);
            let listed: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(listed, [id_a.clone()]);
        }
        p3ctl_ok(&a, &["ns", "grant", "team", &id_b]);

        // The writers' operations work from either of them at once, though
        // every other owner's cached list predates the grant.
        put(&b, "team/doc", &value, &[]);
        put(&a, "team/doc", &value, &[]);
        put(&b, "team/task", &value, &[]);
        let out = p3ctl_ok(&c, &["ns", "writers", "team", "--json"]);
        let mut listed: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
        listed.sort();
        let mut expected = vec![id_a.clone(), id_b.clone()];
        expected.sort();
        assert_eq!(listed, expected);
        assert_eq!(get(&c, "team/doc"), b"signed bytes");
        p3ctl_ok(&a, &["lock", "team/doc", "--", "true"]);

        // A non-writer reads, but cannot put, remove, take, lock, grant
        // itself or remove the namespace.
        for args in [
            vec!["put", "team/doc", value.to_str().unwrap()],
            vec!["put", "team/new", value.to_str().unwrap()],
            vec!["rm", "team/doc"],
            vec!["take", "team/task"],
            vec!["lock", "team/doc", "--", "true"],
            vec!["ns", "grant", "team", &id_c],
            vec!["ns", "rm", "team"],
        ] {
            let err = p3ctl_err(&c, &args);
            assert!(
                err.contains("not a writer of team") || err.contains("not signed"),
                "`p3ctl {}` from a non-writer: {err}",
                args.join(" ")
            );
        }
        assert_eq!(stat(&a, "team/doc")["version"], 2);
        assert_eq!(get(&c, "team/task"), b"signed bytes");
    });

    // A forger: a peer of the swarm that is no writer.
    let node = common::rogue::start(cluster.root.path(), &cluster.nodes[0].addr).await;
    let owners: Vec<PeerId> = cluster
        .nodes
        .iter()
        .map(|n| n.peer_id.parse().unwrap())
        .collect();
    connected_to(&node, &owners).await;
    let genuine = head(&node, owners[0], "team", "doc").await;
    assert_eq!(genuine.version, 2);
    assert!(genuine.signature.is_some(), "{genuine:?}");
    let old = tokio::task::block_in_place(|| versions(&a, "team/doc"));
    let forged_value = b"forged bytes";
    let forged_content = ObjectRecord {
        blob: Some(BlobHash::of(forged_value)),
        size: forged_value.len() as u64,
        ..genuine.clone()
    };
    let mallory = Keypair::generate_ed25519();
    let mut cases: Vec<(&str, ObjectRecord)> = Vec::new();
    // Another value under the writer's signature, a newer version.
    cases.push((
        "a new value under an old signature",
        ObjectRecord {
            version: 3,
            ..forged_content.clone()
        },
    ));
    // No signature at all.
    cases.push((
        "an unsigned record",
        ObjectRecord {
            version: 3,
            signature: None,
            ..forged_content.clone()
        },
    ));
    // Signed, by a key that is not a writer's.
    let mut by_mallory = ObjectRecord {
        version: 3,
        ..forged_content.clone()
    };
    by_mallory.signature = Some(mallory.signature(&record_statement(&by_mallory)).unwrap());
    cases.push(("a record signed by a non-writer", by_mallory));
    // The writer's genuine record replayed as a newer version, or in a
    // later epoch.
    cases.push((
        "a genuine record replayed as a newer version",
        ObjectRecord {
            version: 5,
            ..genuine.clone()
        },
    ));
    cases.push((
        "a genuine record replayed in a later epoch",
        ObjectRecord {
            epoch: genuine.epoch + 100,
            ..genuine.clone()
        },
    ));
    // A writer's genuine record of another name and of another namespace,
    // carried over to this one.
    tokio::task::block_in_place(|| {
        p3ctl_ok(&a, &["ns", "create", "other", "--writer", &id_a]);
        put(&a, "other/doc", &value, &[]);
        put(&a, "other/doc", &value, &[]);
        put(&a, "other/doc", &value, &[]);
    });
    let elsewhere = head(&node, owners[0], "other", "doc").await;
    cases.push((
        "a writer's record of another namespace",
        ObjectRecord {
            ns: Namespace::new("team").unwrap(),
            ns_incarnation: genuine.ns_incarnation,
            ..elsewhere
        },
    ));
    let task = head(&node, owners[0], "team", "task").await;
    cases.push((
        "a writer's record of another name",
        ObjectRecord {
            name: ObjectName::new("doc").unwrap(),
            version: 3,
            ..task
        },
    ));
    for &peer in &owners {
        for (what, record) in &cases {
            let bytes: &[u8] = if record.blob == genuine.blob {
                b"signed bytes"
            } else {
                forged_value
            };
            refused(&node, peer, record, bytes, what).await;
        }
        // The genuine version 1, replayed after version 2: stale.
        let mut v1 = genuine.clone();
        v1.version = 1;
        let answer = ask(
            &node,
            peer,
            &PeerRequest::Replicate {
                record: v1,
                inline: Some(b"signed bytes".to_vec()),
                sources: vec![],
                ordered: false,
            },
        )
        .await;
        assert!(
            matches!(
                answer,
                PeerResponse::Stale(_) | PeerResponse::Error(SpaceError::Forbidden(_))
            ),
            "{answer:?}"
        );

        // A write sent straight to a node, claiming to come from a writer:
        // the primary asks that writer to sign, and it has no such write.
        let write = PeerRequest::Write(p3::objectspace::protocol::WriteRequest {
            ns: Namespace::new("team").unwrap(),
            name: ObjectName::new("doc").unwrap(),
            ns_incarnation: genuine.ns_incarnation,
            op: p3::objectspace::protocol::WriteOp::Remove,
            if_version: None,
            inline: None,
            origin: id_a.clone(),
            hops: 3,
            token: None,
            ticket: Some(7),
            origin_stores: false,
        });
        forbidden_here(&node, peer, &write).await;

        // A lock request without a writer's signature.
        let lock = PeerRequest::Lock(LockRequest::Acquire {
            ns: Namespace::new("team").unwrap(),
            name: ObjectName::new("doc").unwrap(),
            holder: 1,
            mode: LockMode::Write,
            lease_ms: 10_000,
            wait_ms: 0,
            signature: None,
        });
        forbidden_here(&node, peer, &lock).await;
    }

    // The namespace list, replaced by one that forgets team's writers (so
    // that team would be open), or removed: refused by its owners.
    let (list, current) = head_value(&node, owners[0], "p3.system", "namespaces").await;
    let registry: Registry = ciborium::from_reader(current.expect("its value").as_slice()).unwrap();
    assert!(registry.writers.contains_key("team"), "{registry:?}");
    let mut open = registry.clone();
    open.writers.remove("team");
    let mut bytes = Vec::new();
    ciborium::into_writer(&open, &mut bytes).unwrap();
    let rewritten = ObjectRecord {
        version: list.version + 1,
        blob: Some(BlobHash::of(&bytes)),
        size: bytes.len() as u64,
        ..list.clone()
    };
    let removed = ObjectRecord {
        version: list.version + 1,
        blob: None,
        size: 0,
        ..list.clone()
    };
    for &peer in &owners {
        refused(
            &node,
            peer,
            &rewritten,
            &bytes,
            "a namespace list without team's writers",
        )
        .await;
        refused(&node, peer, &removed, b"", "the namespace list removed").await;
        // Nor does a peer's word make a node drop the namespace's objects.
        let answer = ask(
            &node,
            peer,
            &PeerRequest::DropNamespace(Namespace::new("team").unwrap()),
        )
        .await;
        assert!(matches!(answer, PeerResponse::Done), "{answer:?}");
    }

    tokio::task::block_in_place(|| {
        // Every owner still holds the writer's version, with its value.
        assert_eq!(versions(&a, "team/doc"), old);
        assert!(old.iter().all(|(_, v)| *v == 2), "{old:?}");
        for dir in [&a, &b, &c] {
            assert_eq!(get(dir, "team/doc"), b"signed bytes");
        }
        let out = p3ctl_ok(&c, &["ns", "writers", "team"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&id_a),
            "{out:?}"
        );

        // Revoked, b's writes are refused (once the primary's view of the
        // namespace list has caught up); a's go on.
        p3ctl_ok(&a, &["ns", "revoke", "team", &id_b]);
        wait_for("b's write refused after its revocation", DEADLINE, || {
            let out = p3ctl(&b, &["put", "team/doc", value.to_str().unwrap()]);
            (!out.status.success()).then_some(())
        });
        let err = p3ctl_err(&b, &["put", "team/doc", value.to_str().unwrap()]);
        assert!(err.contains("not a writer of team"), "{err}");
        put(&a, "team/doc", &value, &[]);

        // Removed by a writer: its objects go, its name stays taken.
        p3ctl_ok(&a, &["ns", "rm", "team"]);
        let err = p3ctl_err(&c, &["get", "team/doc"]);
        assert!(err.contains("does not exist"), "{err}");
        let err = p3ctl_err(&c, &["ns", "create", "team"]);
        assert!(err.contains("already exists"), "{err}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_namespace_is_read_only_by_its_writers() {
    let cluster = tokio::task::block_in_place(formed);
    let [a, b, c] = [0, 1, 2].map(|i| cluster.nodes[i].dir.clone());
    let [id_a, id_b] = [0, 1].map(|i| cluster.nodes[i].peer_id.clone());
    let value = cluster.root.path().join("value");
    fs::write(&value, b"secret bytes").unwrap();

    tokio::task::block_in_place(|| {
        let out = p3ctl(&a, &["ns", "create", "loose", "--private"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("--writer"), "{err}");
        p3ctl_ok(
            &a,
            &["ns", "create", "secret", "--writer", &id_a, "--private"],
        );
        put(&a, "secret/doc", &value, &[]);
        assert_eq!(get(&a, "secret/doc"), b"secret bytes");
        // Every owner holds it (they store and repair it like any object).
        let replicas = versions(&a, "secret/doc");
        assert_eq!(replicas.len(), 3, "{replicas:?}");
        assert!(replicas.iter().all(|(_, v)| *v == 1), "{replicas:?}");
        // A node that is not a writer reads nothing of it.
        for args in [
            vec!["get", "secret/doc"],
            vec!["stat", "secret/doc"],
            vec!["ls", "secret"],
            vec!["search", "secret", "name=doc"],
        ] {
            let err = p3ctl_err(&b, &args);
            assert!(
                err.contains("secret is private"),
                "`p3ctl {}` from a non-writer: {err}",
                args.join(" ")
            );
        }
        // Granted, it does.
        p3ctl_ok(&a, &["ns", "grant", "secret", &id_b]);
        wait_for("the new writer reads", DEADLINE, || {
            p3ctl(&b, &["get", "secret/doc"])
                .status
                .success()
                .then_some(())
        });
        assert_eq!(get(&b, "secret/doc"), b"secret bytes");
        let err = p3ctl_err(&c, &["get", "secret/doc"]);
        assert!(err.contains("secret is private"), "{err}");
    });

    // A peer that is neither writer nor owner is refused at every node.
    let node = common::rogue::start(cluster.root.path(), &cluster.nodes[0].addr).await;
    let ns = Namespace::new("secret").unwrap();
    let name = ObjectName::new("doc").unwrap();
    for peer in cluster
        .nodes
        .iter()
        .map(|n| n.peer_id.parse::<PeerId>().unwrap())
    {
        for request in [
            PeerRequest::Read {
                ns: ns.clone(),
                name: name.clone(),
                inline: true,
            },
            PeerRequest::Head {
                ns: ns.clone(),
                name: name.clone(),
                inline: true,
                epoch: 0,
            },
            PeerRequest::List {
                ns: ns.clone(),
                prefix: String::new(),
                after: None,
            },
        ] {
            let answer = ask(&node, peer, &request).await;
            assert!(
                matches!(&answer, PeerResponse::Error(SpaceError::Forbidden(e)) if e.contains("private")),
                "{} from a stranger at {peer}: {answer:?}",
                request.kind()
            );
        }
    }
}
