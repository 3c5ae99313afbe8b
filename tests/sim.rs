//! `p3sim` at N = 50: fifty real nodes in one process over in-process
//! connections join, agree on every sampled key's owners, and lose no
//! acknowledged write across ten rounds of churn. The simulator is a
//! separate process, killed when the test ends.

mod common;

use std::process::{Command, Stdio};

use common::KillOnDrop;
use serde_json::Value;

#[test]
fn fifty_nodes_join_agree_and_lose_nothing_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let child = Command::new(env!("CARGO_BIN_EXE_p3sim"))
        .args(["--nodes", "50", "--rounds", "10", "--writes", "10"])
        .args(["--keys", "500", "--lookups", "20", "--settle-secs", "30"])
        // Kwan & Reed's p_f = 0.022: about one of fifty nodes fails a round.
        .args(["--p-fail", "0.022", "--seed", "7"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start p3sim");
    let (ok, stdout, stderr) = KillOnDrop(child).finish();
    let table = String::from_utf8_lossy(&stdout);
    assert!(ok, "p3sim failed:\n{table}\n{stderr}");
    let reports: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let report = &reports[0];
    let context = format!("{table}\n{stderr}");

    assert_eq!(report["join"]["nodes"], 50, "{context}");
    assert!(
        report["join"]["settle_s"].is_f64(),
        "the maps never settled: {context}"
    );
    assert_eq!(report["resources"]["map_members_max"], 50, "{context}");
    assert_eq!(report["agreement"]["after_join"], 1.0, "{context}");
    assert_eq!(report["lookups"]["failed"], 0, "{context}");
    assert_eq!(report["lookups"]["answered"], 20, "{context}");

    let churn = &report["churn"];
    let rounds = churn["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 10, "{context}");
    let failed: u64 = rounds.iter().map(|r| r["failed"].as_u64().unwrap()).sum();
    assert!(
        failed >= 1,
        "no node failed: the churn was not exercised: {context}"
    );
    for round in rounds {
        assert!(
            round["settle_s"].is_f64(),
            "a round never settled: {context}"
        );
        assert_eq!(round["agreement_after"], 1.0, "{context}");
        assert_eq!(round["reads_missing"], 0, "{context}");
    }
    assert!(churn["acknowledged"].as_u64().unwrap() > 0, "{context}");
    assert_eq!(churn["lost"], 0, "{context}");
    assert!(
        churn["final_settle_s"].is_f64(),
        "the map never settled with every node back: {context}"
    );
    assert_eq!(report["agreement"]["after_churn"], 1.0, "{context}");
}
