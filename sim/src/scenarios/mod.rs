//! The scenarios of a simulation, played in order on one cluster: nodes
//! join one after another ([`join`]), the settled cluster is measured
//! ([`crate::resources`]), keys are looked up ([`lookup`]) and their owners
//! compared across nodes, then rounds of churn fail and restart nodes while
//! objects are written and read back ([`churn`]).

pub mod churn;
pub mod join;
pub mod lookup;

use p3_dht::Connections;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::{
    cluster::Cluster,
    config::SimConfig,
    node::NodeSettings,
    report::{Agreement, Report},
    resources, SimError,
};

/// Bytes of fetched blobs each simulated node caches: small, so memory per
/// node measures the node, not a cache sized for a real machine.
const CACHE_BYTES: u64 = 4 << 20;

/// Runs every scenario on `config.nodes` nodes and reports the figures.
pub async fn run(config: &SimConfig) -> Result<Report, SimError> {
    config.validate()?;
    crate::limits::ensure_open_files(config.nodes)?;
    let temp;
    let root = match &config.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("p3sim-").tempdir()?;
            temp.path().to_owned()
        }
    };
    let settings = NodeSettings {
        dilation: config.dilation,
        replicas: config.replicas,
        join_deadline: config.join_deadline,
        failure_timeout: config.failure_timeout,
        connections: config.connections,
        idle: config.idle,
        refresh: config.refresh,
        snapshot_every: config.snapshot_every,
        members_per_relay: config.members_per_relay,
        cache_bytes: CACHE_BYTES,
    };
    let mut cluster = Cluster::new(&root, settings, config.seeds);
    let result = play(&mut cluster, config).await;
    cluster.stop().await;
    result
}

async fn play(cluster: &mut Cluster, config: &SimConfig) -> Result<Report, SimError> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let join = join::run(cluster, config).await?;
    tracing::info!(nodes = config.nodes, "joined");
    if config.connections == Connections::OnDemand {
        // The settled cluster, not the joins: connections the joins opened
        // (lookups, the map's first copies) part once idle — a stream
        // within 1.25 idle times (`p3_dht` checks every quarter of it), its
        // connection one idle time after that.
        tokio::time::sleep(config.dilation.real(config.idle * 5 / 2)).await;
    }
    let resources = resources::measure(cluster, config.dilation).await;
    let watched = match config.watch {
        w if w.is_zero() => None,
        w => Some(resources::watch(cluster, w, config.dilation).await),
    };
    let keys: Vec<[u8; 32]> = (0..config.keys).map(|_| rng.gen()).collect();
    let settled = cluster.agreement(&keys);
    let lookups = lookup::run(cluster, config, &mut rng).await;
    let churn = churn::run(cluster, config, &keys, &mut rng).await?;
    Ok(Report {
        nodes: config.nodes,
        replicas: config.replicas,
        p_fail: config.p_fail,
        seed: config.seed,
        time_scale: config.dilation.scale(),
        connections: config.connections,
        idle_ms: config.idle.as_millis() as u64,
        refresh_s: config.refresh.as_secs(),
        join,
        resources,
        watched,
        lookups,
        agreement: Agreement {
            keys: keys.len(),
            after_join: settled,
            during_churn_min: churn.agreement_during_min(),
            after_churn: churn.final_agreement,
        },
        churn,
    })
}
