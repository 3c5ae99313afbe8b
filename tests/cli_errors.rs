//! What a user sees when something is wrong: one line, non-zero exit, advice.

mod common;

use common::{p3ctl, NodeProc};

fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "command should have failed");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "error should be one line, got:\n{stderr}"
    );
    stderr
}

#[test]
fn client_without_a_node_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["node", "status"][..], &["peers"], &["closest", "k"]] {
        let err = one_line_error(&p3ctl(dir.path(), args));
        assert!(
            err.contains("no node is running") && err.contains("p3ctl node start"),
            "{err}"
        );
    }
}

#[test]
fn bad_arguments_and_config_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = one_line_error(&p3ctl(
        dir.path(),
        &["node", "start", "--listen", "nonsense"],
    ));
    assert!(err.contains("nonsense"), "{err}");

    std::fs::write(dir.path().join("config.toml"), "seeds = 1\n").unwrap();
    let err = one_line_error(&p3ctl(dir.path(), &["node", "start"]));
    assert!(err.contains("config.toml"), "{err}");
}

#[test]
fn a_bad_thread_count_in_the_environment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "0", "many"] {
        let out = common::p3ctl_command(dir.path(), &["node", "id"])
            .env("TOKIO_WORKER_THREADS", bad)
            .output()
            .expect("cannot run p3ctl");
        let err = one_line_error(&out);
        assert!(err.contains("TOKIO_WORKER_THREADS"), "{err}");
    }
    let out = common::p3ctl_command(dir.path(), &["node", "id"])
        .env("TOKIO_WORKER_THREADS", "1")
        .output()
        .expect("cannot run p3ctl");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let _node = NodeProc::start(&dir, &[]);
    let err = one_line_error(&p3ctl(
        &dir,
        &["node", "start", "--listen", "/ip4/127.0.0.1/tcp/0"],
    ));
    assert!(err.contains("already running"), "{err}");
}

#[test]
fn node_id_is_stable_without_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let first = p3ctl(dir.path(), &["node", "id"]);
    let second = p3ctl(dir.path(), &["node", "id"]);
    assert!(first.status.success());
    assert_eq!(first.stdout, second.stdout);
    assert!(String::from_utf8_lossy(&first.stdout)
        .trim()
        .starts_with("12D3Koo"));
}

#[test]
fn the_local_api_refuses_a_wrong_token_and_keeps_serving() {
    use p3::objectspace::{
        api::{ApiInfo, API_FILE},
        Space,
    };

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let node = NodeProc::start(&dir, &[]);
    let info: ApiInfo =
        serde_json::from_str(&std::fs::read_to_string(dir.join(API_FILE)).unwrap()).unwrap();
    // A client with the node's address but another token.
    let forged = root.path().join("forged");
    std::fs::create_dir(&forged).unwrap();
    let wrong = ApiInfo {
        token: "0".repeat(64),
        ..info.clone()
    };
    std::fs::write(
        forged.join(API_FILE),
        serde_json::to_string(&wrong).unwrap(),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(async {
        let mut space = Space::connect(&forged)
            .await
            .expect("the connection itself opens");
        space.status().await
    });
    match answer {
        Err(reason) => {
            assert!(reason.to_string().contains("wrong API token"), "{reason}")
        }
        Ok(status) => panic!("expected a refusal, got {status:?}"),
    }
    // Garbage instead of a frame closes that connection only.
    runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(&info.addr).await.unwrap();
        stream.write_all(&[0xff; 64]).await.unwrap();
    });
    assert!(
        node.json(&["node", "status"]).is_some(),
        "node stopped serving after bad API input"
    );
}

#[test]
fn a_value_over_the_configured_limit_is_refused_and_the_node_keeps_serving() {
    use std::io::Write;

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "[space]\nmax_object_bytes = 1000\n",
    )
    .unwrap();
    let _node = NodeProc::start(&dir, &[]);

    // Known size (a file): refused before any byte moves.
    let big = root.path().join("big");
    std::fs::write(&big, vec![7u8; 2000]).unwrap();
    let err = one_line_error(&p3ctl(&dir, &["put", "global/big", big.to_str().unwrap()]));
    assert!(
        err.contains("2000 bytes is over the 1000-byte limit"),
        "{err}"
    );

    // Unknown size (stdin): refused once the limit is crossed.
    let mut child = std::process::Command::new(common::p3ctl_bin())
        .args(["put", "global/piped", "-", "--data-dir"])
        .arg(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(&[7u8; 5000])
        .unwrap(); // closing stdin ends the value
    let err = one_line_error(&child.wait_with_output().unwrap());
    assert!(err.contains("over the 1000-byte limit"), "{err}");

    // Nothing was stored, and values within the limit still are.
    for name in ["global/big", "global/piped"] {
        let err = one_line_error(&p3ctl(&dir, &["get", name]));
        assert!(err.contains("does not exist"), "{err}");
    }
    let small = root.path().join("small");
    std::fs::write(&small, vec![7u8; 1000]).unwrap();
    let out = p3ctl(&dir, &["put", "global/small", small.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client command whose reader has gone (`p3ctl ... | head`) ends quietly,
/// killed by SIGPIPE like any Unix tool, instead of panicking on the write.
#[test]
fn a_closed_stdout_ends_a_client_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(common::p3ctl_bin())
        .args(["job", "kinds"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run p3ctl");
    drop(child.stdout.take()); // the reader goes away before anything is written
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    const SIGPIPE: i32 = 13; // on Linux
    assert_eq!(out.status.signal(), Some(SIGPIPE), "{:?}", out.status);
}
