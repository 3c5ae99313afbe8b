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
    use p3::objectspace::api::{self, protocol::Hello, protocol::Response, ApiInfo};

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let node = NodeProc::start(&dir, &[]);
    let info: ApiInfo =
        serde_json::from_str(&std::fs::read_to_string(dir.join("api.json")).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer: Option<Response> = runtime.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(&info.addr).await.unwrap();
        api::write_frame(
            &mut stream,
            &Hello {
                token: "0".repeat(64),
            },
        )
        .await
        .unwrap();
        api::read_frame(&mut stream).await.unwrap()
    });
    match answer {
        Some(Response::Error(reason)) => {
            assert!(reason.to_string().contains("wrong API token"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
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
