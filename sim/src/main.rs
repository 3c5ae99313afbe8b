//! The `p3sim` binary: runs the simulation of `p3-sim` for each N asked
//! for, prints the tables and writes the figures as JSON.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use p3_sim::{clock::Dilation, scenarios, SimConfig};

/// The allocator `p3ctl` runs with (mimalloc, see `cli/src/main.rs`), so a
/// simulated node's CPU and memory are those of a real one; glibc's arenas
/// were 6 % of an idle simulation's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's setting that commits each new arena eagerly where Linux
/// overcommits. One `p3ctl` node has a few threads; a simulation has every
/// node's threads in one process, and with eager commit it held 14 MiB per
/// node at N = 100 instead of 6.4 — memory a real node would not use.
/// mimalloc reads it from the environment before `main`, so `p3sim`
/// re-executes itself once with it set.
const EAGER_COMMIT: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

/// Replaces this process by itself with [`EAGER_COMMIT`] off; returns only
/// if that cannot be done.
fn without_eager_commit() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    match std::env::current_exe() {
        Ok(exe) => std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(EAGER_COMMIT, "0")
            .exec(),
        Err(e) => e,
    }
}

/// Many P³ nodes in one process over in-process connections: join, lookups,
/// owner agreement, churn and resources, for each N.
#[derive(Parser, Debug)]
#[command(name = "p3sim", version)]
struct Args {
    /// Numbers of nodes to simulate, one simulation each (e.g. 100,1000).
    #[arg(long, value_delimiter = ',', default_value = "50")]
    nodes: Vec<usize>,
    /// Nodes others bootstrap from.
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    /// Owners per object (R).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Random keys whose owners every node is asked for.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Kademlia lookups of random keys.
    #[arg(long, default_value_t = 100)]
    lookups: usize,
    /// Rounds of churn.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Probability that a node fails in a round.
    #[arg(long, default_value_t = 0.022)]
    p_fail: f64,
    /// Objects written per round.
    #[arg(long, default_value_t = 20)]
    writes: usize,
    /// Seconds the map may take to settle after a change.
    #[arg(long, default_value_t = 60)]
    settle_secs: u64,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Each node's failure timeout (`[network] failure_timeout_ms`; every
    /// connection is pinged three times in it).
    #[arg(long, default_value_t = 3000)]
    failure_timeout_ms: u64,
    /// Which peers each node keeps connections to: `all` or `on-demand`
    /// (`[network] connections`).
    #[arg(long, default_value = "all", value_parser = connections)]
    connections: p3_dht::Connections,
    /// How long an unused connection (and, on demand, request stream) lives,
    /// in milliseconds (default: the node's for the connection policy: an
    /// hour with `all`, 30 s on demand).
    #[arg(long)]
    idle_ms: Option<u64>,
    /// How often each node refreshes its Kademlia table with lookups, in
    /// seconds (`[network] refresh_interval_secs`; default: the node's for
    /// the connection policy: 60 with `all`, 300 on demand).
    #[arg(long)]
    refresh_secs: Option<u64>,
    /// Raft entries each node applies between snapshots of its map (a
    /// member further behind than a quarter of it gets the snapshot).
    #[arg(long, default_value_t = p3_membership::DEFAULT_SNAPSHOT_EVERY)]
    map_snapshot_every: u64,
    /// Members per relay of lease renewals: above this many members, each
    /// renews through one of ⌈N / this⌉ relays instead of with the leader
    /// (0: every member with the leader).
    #[arg(long, default_value_t = p3_membership::DEFAULT_MEMBERS_PER_RELAY)]
    members_per_relay: usize,
    /// Watch the settled cluster this many seconds before the lookups:
    /// connections sampled every 5 s, CPU and traffic over the window.
    #[arg(long, default_value_t = 0)]
    watch_secs: u64,
    /// Run every node's timers this many times slower than real time (leases,
    /// Raft, pings, idle and refresh periods, timeouts), so each node gets
    /// that many times more CPU per simulated second; every time and rate
    /// reported, and every duration given above, is simulated time.
    #[arg(long, default_value_t = 1)]
    time_scale: u32,
    /// Keep the nodes' databases here instead of in a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also write the reports, one JSON array, to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if std::env::var_os(EAGER_COMMIT).is_none() {
        // Still runs, only with more memory per node, if this fails.
        let e = without_eager_commit();
        eprintln!("p3sim: cannot turn off {EAGER_COMMIT} ({e}); memory per node will read high");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error,p3_sim=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p3sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn connections(text: &str) -> Result<p3_dht::Connections, String> {
    match text {
        "all" => Ok(p3_dht::Connections::All),
        "on-demand" => Ok(p3_dht::Connections::OnDemand),
        other => Err(format!("{other:?} is not all or on-demand")),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let dilation = Dilation::new(args.time_scale)?;
    let mut reports = Vec::new();
    for &nodes in &args.nodes {
        let config = SimConfig {
            nodes,
            seeds: args.seeds,
            replicas: args.replicas,
            keys: args.keys,
            lookups: args.lookups,
            rounds: args.rounds,
            p_fail: args.p_fail,
            writes: args.writes,
            settle_deadline: Duration::from_secs(args.settle_secs),
            seed: args.seed,
            failure_timeout: Duration::from_millis(args.failure_timeout_ms),
            connections: args.connections,
            idle: args.idle_ms.map_or(
                args.connections.default_idle_connection_timeout(),
                Duration::from_millis,
            ),
            snapshot_every: args.map_snapshot_every,
            members_per_relay: args.members_per_relay,
            watch: Duration::from_secs(args.watch_secs),
            dilation,
            refresh: args.refresh_secs.map_or(
                args.connections.default_refresh_interval(),
                Duration::from_secs,
            ),
            data_dir: args.data_dir.as_ref().map(|d| d.join(format!("n{nodes}"))),
            ..SimConfig::default()
        };
        let report = runtime.block_on(scenarios::run(&config))?;
        println!("{report}");
        reports.push(report);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
