//! `p3ctl node start`: run a node in the foreground until SIGINT or SIGTERM.

use std::time::Duration;

use anyhow::{Context, Result};
use p3_dht::{identity, Database, Node};
use p3_http::{HttpState, Metrics};
use p3_membership::{Membership, MembershipConfig};
use p3_objectspace::{
    api::{self, ApiInfo},
    service,
    store::{self, Store},
    Local, ObjectSpace,
};
use p3_scheduler::{Registry, Worker, WorkerConfig};
use rand::RngCore;
use tokio::{net::TcpListener, signal::unix};

use crate::config::{ConfigFile, DataDir};

/// The file in a node's data directory that says what the node knows of the
/// membership map and its lease (`p3ctl node status` shows it).
pub const MEMBERSHIP_FILE: &str = "membership.json";

/// How long a starting node waits to join the membership map before it opens
/// its API anyway.
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// What `p3ctl node start` was asked for besides the data directory.
pub struct NodeArgs {
    /// `--listen` addresses.
    pub listen: Vec<String>,
    /// `--bootstrap` addresses.
    pub bootstrap: Vec<String>,
    /// `--slots`; `None` with `--no-worker`.
    pub slots: Option<usize>,
    /// `--http-listen`, overriding the config file's `http_listen`.
    pub http_listen: Option<String>,
}

/// Starts the node of `dir` and serves until a shutdown signal arrives; on the way
/// out it stops the worker and the swarm, flushes RocksDB and removes `api.json`.
pub async fn run(dir: DataDir, args: NodeArgs, registry: Registry) -> Result<()> {
    let (listen, bootstrap) = (&args.listen, &args.bootstrap);
    dir.create()?;
    let config = ConfigFile::load_or_init(&dir)?;
    let mut network = config.network(listen, bootstrap)?;
    network.swarm_key = config.swarm_key(&dir)?;
    let http_addr = config.http(args.http_listen.as_deref())?;
    // Before anything records: the facade keeps what is recorded before a
    // recorder exists nowhere.
    let metrics = match Metrics::install() {
        Ok(metrics) => Some(metrics),
        Err(e) => {
            tracing::warn!(error = %e, "metrics are off");
            None
        }
    };
    // A node with no seeds founds the membership group; the others join it.
    let found = network.bootstrap.is_empty();
    let key = identity::load_or_create(&dir.identity())?;
    let db = Database::open(&dir.db(), &store::node_column_families())?;
    let space_config = config.space();
    let store = Store::open(db.clone(), space_config.cache_bytes)?;
    // Handlers go in before the node exists so a signal during start-up still
    // gets a clean shutdown.
    let mut sigterm =
        unix::signal(unix::SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sigint =
        unix::signal(unix::SignalKind::interrupt()).context("cannot install SIGINT handler")?;

    let (node, inbound) = Node::start(network, key, db.clone()).await?;
    tracing::info!(peer_id = %node.peer_id(), data_dir = %dir.root().display(), "node started");
    let membership = Membership::start(
        node.clone(),
        db.clone(),
        MembershipConfig {
            times: config.lease_times(),
            found,
            status_file: Some(dir.root().join(MEMBERSHIP_FILE)),
            snapshot_every: p3_membership::DEFAULT_SNAPSHOT_EVERY,
            members_per_relay: config.membership.members_per_relay,
        },
    )
    .await
    .context("cannot start the membership layer")?;
    // Operations need the map: give joining a moment before the API opens,
    // but a node whose seeds are down still starts (and joins when it can).
    if !membership.joined(JOIN_WAIT).await {
        tracing::warn!("not a member of the network yet; operations fail until this node joins");
    }
    let space = ObjectSpace::new(node.clone(), membership.clone(), store, space_config);
    service::start(&space, inbound)?;

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open the local API port")?;
    let mut token = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut token);
    let token = hex::encode(token);
    let (http, http_task) = match http_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve HTTP on {addr} (http_listen)"))?;
            let local = listener.local_addr()?;
            let state = HttpState::new(
                space.clone(),
                token.clone(),
                dir.root().to_owned(),
                registry.clone(),
                metrics,
            );
            let task = tokio::spawn(async move {
                if let Err(e) = p3_http::serve(listener, state).await {
                    tracing::error!(error = %e, "the HTTP server stopped");
                }
            });
            tracing::info!(http = %local, "HTTP API, metrics and dashboard ready");
            (Some(local.to_string()), Some(task))
        }
        None => (None, None),
    };
    let info = ApiInfo {
        addr: listener.local_addr()?.to_string(),
        token,
        pid: std::process::id(),
        http,
    };
    identity::write_private(&dir.api_file(), serde_json::to_string(&info)?.as_bytes())
        .with_context(|| format!("cannot write {}", dir.api_file().display()))?;
    let api_task = tokio::spawn(api::server::serve(
        listener,
        info.token.clone(),
        space.clone(),
    ));
    tracing::info!(api = %info.addr, "local API ready");
    let worker = match args.slots {
        Some(slots) => {
            let mut config = WorkerConfig::new(dir.root().to_owned(), registry);
            config.slots = slots;
            Some(
                Worker::start(config, Local::new(space))
                    .await
                    .context("cannot start the worker")?,
            )
        }
        None => {
            // A worker killed earlier may have left its report behind.
            let _ = std::fs::remove_file(dir.root().join(p3_scheduler::worker::STATUS_FILE));
            None
        }
    };

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT received; shutting down"),
    }
    if let Some(worker) = worker {
        worker.stop().await;
    }
    api_task.abort();
    if let Some(task) = http_task {
        task.abort();
    }
    if let Err(e) = std::fs::remove_file(dir.api_file()) {
        tracing::warn!(error = %e, "cannot remove api.json");
    }
    membership.stop().await;
    let _ = std::fs::remove_file(dir.root().join(MEMBERSHIP_FILE));
    node.shutdown(Duration::from_secs(5)).await;
    db.flush().context("cannot flush the database")?;
    tracing::info!("node stopped");
    Ok(())
}
