//! `p3sim` at N = 50: fifty real nodes in one process over in-process
//! connections join, agree on every sampled key's owners, and lose no
//! acknowledged write across ten rounds of churn, with every node connected
//! to every other and with connections made on demand; and N = 20 with
//! every node's timers dilated (`--time-scale`). The simulator is a
//! separate process, killed when the test ends.

mod common;

use std::{
    process::{Command, Stdio},
    sync::Mutex,
};

use common::KillOnDrop;
use serde_json::Value;

/// One simulation at a time: two would share the two cores, and the
/// figures (and deadlines) are for one.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `p3sim` with `args` in a directory of its own, asserts it succeeded,
/// and returns its report and the output to show with a failure.
fn p3sim(args: &[&str]) -> (Value, String) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let child = Command::new(env!("CARGO_BIN_EXE_p3sim"))
        .args(args)
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
    let mut reports: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (reports[0].take(), format!("{table}\n{stderr}"))
}

/// Runs `p3sim` at N = 50 through ten rounds of churn with `extra`
/// arguments, checks what holds whatever the connections, and returns the
/// report and the output to show with a failure.
fn fifty_nodes_through_churn(extra: &[&str]) -> (Value, String) {
    let mut args = vec!["--nodes", "50", "--rounds", "10", "--writes", "10"];
    args.extend(["--keys", "500", "--lookups", "20", "--settle-secs", "30"]);
    // Kwan & Reed's p_f = 0.022: about one of fifty nodes fails a round.
    args.extend(["--p-fail", "0.022", "--seed", "7"]);
    args.extend(extra);
    let (report, context) = p3sim(&args);
    assert_eq!(report["join"]["nodes"], 50, "{context}");
    assert!(
        report["join"]["settle_s"].is_f64(),
        "the maps never settled: {context}"
    );
    assert_eq!(report["resources"]["map_members_max"], 50, "{context}");
    assert_eq!(report["agreement"]["after_join"], 1.0, "{context}");
    assert_eq!(report["lookups"]["failed"], 0, "{context}");
    assert_eq!(report["lookups"]["answered"], 20, "{context}");
    // Replayed over the live routing tables, every lookup reaches the
    // key's owners, within the bound on hops.
    let lookups = &report["lookups"];
    assert_eq!(lookups["hops_unfound"], 0, "{context}");
    assert_eq!(lookups["hops"]["n"], 20, "{context}");
    let (hops, bound) = (
        lookups["hops"]["max"].as_f64(),
        lookups["hop_bound"].as_f64(),
    );
    assert!(hops.zip(bound).is_some_and(|(h, b)| h <= b), "{context}");

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
    (report, context)
}

#[test]
fn fifty_nodes_join_agree_and_lose_nothing_under_churn() {
    let (report, context) = fifty_nodes_through_churn(&[]);
    // Every node connects to every other.
    assert_eq!(report["resources"]["connections_max"], 49, "{context}");
}

#[test]
fn with_connections_on_demand_fifty_nodes_keep_few_and_lose_nothing() {
    // Snapshots every 8 entries, so a window of only 2 changes: most
    // members join, and members that fell behind in the churn come back,
    // too far behind for the changes and get the map whole. The churn's
    // guarantees then hold through that path too.
    let (report, context) = fifty_nodes_through_churn(&[
        "--connections",
        "on-demand",
        "--idle-ms",
        "1000",
        "--map-snapshot-every",
        "8",
        // Five relays of lease renewals, about ten members each: the churn
        // runs with members renewing through relays that fail too.
        "--members-per-relay",
        "10",
    ]);
    assert_eq!(report["connections"], "on-demand", "{context}");
    let whole = report["join"]["maps_whole"].as_u64().unwrap();
    assert!(whole > 0, "no member took the map whole: {context}");
    // Members renew through relays, so no node, the leader included, stays
    // connected to all 49 others: the leader keeps its relays and voters,
    // a relay its members, every other node its relay.
    let mean = report["resources"]["connections_mean"].as_f64().unwrap();
    assert!(mean <= 10.0, "{mean} connections per node: {context}");
    let max = report["resources"]["connections_max"].as_u64().unwrap();
    assert!(
        max <= 25,
        "{max} connections at the busiest node: {context}"
    );
}

#[test]
fn with_timers_dilated_nodes_join_agree_and_lose_nothing() {
    // Every node's timers three times slower (`--time-scale 3`): leases,
    // Raft, pings and timeouts all stretch alike, and the protocol keeps
    // its promises; the report says which time it is in.
    let args = "--nodes 20 --rounds 3 --writes 10 --keys 200 --lookups 10 --settle-secs 30 \
                --p-fail 0.1 --seed 3 --time-scale 3 --connections on-demand --idle-ms 1000";
    let (report, context) = p3sim(&args.split_whitespace().collect::<Vec<_>>());
    assert!(context.contains("3x slower than real time"), "{context}");
    assert_eq!(report["time_scale"], 3, "{context}");
    assert_eq!(report["join"]["nodes"], 20, "{context}");
    assert_eq!(report["agreement"]["after_join"], 1.0, "{context}");
    assert_eq!(report["lookups"]["failed"], 0, "{context}");
    let churn = &report["churn"];
    let rounds = churn["rounds"].as_array().unwrap();
    let failed: u64 = rounds.iter().map(|r| r["failed"].as_u64().unwrap()).sum();
    assert!(failed >= 1, "no node failed: {context}");
    for round in rounds {
        assert!(
            round["settle_s"].is_f64(),
            "a round never settled: {context}"
        );
        assert_eq!(round["reads_missing"], 0, "{context}");
    }
    assert!(churn["acknowledged"].as_u64().unwrap() > 0, "{context}");
    assert_eq!(churn["lost"], 0, "{context}");
    assert_eq!(report["agreement"]["after_churn"], 1.0, "{context}");
}
