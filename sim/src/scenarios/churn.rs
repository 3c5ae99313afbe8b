//! Churn: in each round every running node fails with probability p_f and
//! the nodes failed in the round before come back with their data; objects
//! are written through random nodes, and every acknowledged write so far
//! is read back. At the end every node is back and each acknowledged write
//! must still be there with its value: one that is not is lost.

use futures::future::join_all;
use p3_objectspace::{name::ObjectPath, object::PutOptions, SpaceError};
use rand::{rngs::StdRng, seq::IteratorRandom, Rng};
use serde::Serialize;

use crate::{
    cluster::Cluster,
    config::SimConfig,
    node::{Crashed, SimNode},
    SimError,
};

/// The namespace the scenario writes in.
const NAMESPACE: &str = "sim";

/// One round of churn.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// Its number, from 1.
    pub round: usize,
    /// Nodes failed at its start.
    pub failed: usize,
    /// Nodes restarted at its start (those failed the round before).
    pub restarted: usize,
    /// Nodes running during it.
    pub up: usize,
    /// Keys on which all running nodes agreed about the owners, right
    /// after the failures.
    pub agreement_during: f64,
    /// The same once the map settled.
    pub agreement_after: f64,
    /// Seconds from the failures until every running node held the same map
    /// of exactly the running nodes; `None` if that did not happen within
    /// the deadline.
    pub settle_s: Option<f64>,
    /// Writes acknowledged in the round.
    pub writes_acked: usize,
    /// Writes refused or failed in the round.
    pub writes_failed: usize,
    /// Reads of every write acknowledged so far.
    pub reads: usize,
    /// Reads that returned the written value.
    pub reads_ok: usize,
    /// Reads that found no such object (or another value) although a
    /// running node held it: the owners had not caught up.
    pub reads_missing: usize,
    /// Reads that found no such object because every node holding it had
    /// failed: unavailable until one comes back, not lost (the final reads
    /// say whether it was).
    pub reads_unheld: usize,
    /// Seconds the restarts at its start took.
    pub restart_s: f64,
    /// Seconds the slowest write of the round took (they go out at once,
    /// right after the failures).
    pub writes_s: f64,
    /// Seconds reading back every acknowledged write took (all at once).
    pub reads_s: f64,
    /// KiB sent over all connections during the round (failure detection,
    /// map changes, repair, the writes and reads).
    pub kib_sent: f64,
    /// Seconds the round took.
    pub seconds: f64,
}

/// What churn did.
#[derive(Debug, Clone, Serialize)]
pub struct Churn {
    /// The rounds.
    pub rounds: Vec<Round>,
    /// Writes acknowledged over all rounds.
    pub acknowledged: usize,
    /// Acknowledged writes not readable with their value once every node was
    /// back and the map settled.
    pub lost: usize,
    /// Reads during the rounds that returned the value, as a fraction.
    pub availability: f64,
    /// Owner agreement once every node was back.
    pub final_agreement: f64,
    /// Seconds the map took to settle once every node was back; `None` if
    /// it did not within the settle deadline (the agreement and the reads
    /// are measured then all the same).
    pub final_settle_s: Option<f64>,
}

impl Churn {
    /// The least agreement seen right after failures.
    pub fn agreement_during_min(&self) -> f64 {
        self.rounds
            .iter()
            .map(|r| r.agreement_during)
            .fold(1.0, f64::min)
    }
}

/// An acknowledged write: where, and the value it wrote.
struct Written {
    path: String,
    value: Vec<u8>,
}

/// Plays `config.rounds` rounds of churn.
pub async fn run(
    cluster: &mut Cluster,
    config: &SimConfig,
    keys: &[[u8; 32]],
    rng: &mut StdRng,
) -> Result<Churn, SimError> {
    let mut rounds = Vec::new();
    let mut written: Vec<Written> = Vec::new();
    let mut down: Vec<usize> = Vec::new();
    if config.rounds > 0 {
        let first = cluster.up().next().ok_or(SimError::Down(0))?;
        let created = first
            .on(|local| async move { local.create_namespace(NAMESPACE).await })
            .await?;
        match created {
            Ok(()) | Err(SpaceError::NamespaceExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (mut reads, mut reads_ok) = (0, 0);
    for round in 1..=config.rounds {
        let start = config.dilation.stopwatch();
        let before = p3_dht::memory::bytes_sent();
        let restarted = down.len();
        restart(cluster, &mut down).await;
        let restart_s = start.secs();
        let failing: Vec<usize> = cluster
            .up()
            .filter(|_| rng.gen_bool(config.p_fail))
            .map(|n| n.index)
            .collect();
        let crashed = cluster.crash(&failing);
        down.extend(&failing);
        let agreement_during = cluster.agreement(keys);
        // The writes go out at once while the map settles: how long they
        // wait for the failed owners to be replaced is part of what churn costs.
        let view: &Cluster = cluster;
        let targets: Vec<Option<&SimNode>> = (0..config.writes).map(|_| pick(view, rng)).collect();
        let writes = join_all(targets.into_iter().enumerate().map(|(i, node)| async move {
            let path = format!("{NAMESPACE}/r{round}-w{i}");
            let value = format!("{path} written in round {round}").into_bytes();
            let started = config.dilation.stopwatch();
            let result = write(node, &path, &value).await;
            (Written { path, value }, result, started.elapsed())
        }));
        let stopped = join_all(crashed.into_iter().map(Crashed::finish));
        let (settle, results, _) =
            tokio::join!(view.settle(config.settle_deadline), writes, stopped);
        let (mut acked, mut refused) = (0, 0);
        let writes_s = results
            .iter()
            .map(|(_, _, took)| took.as_secs_f64())
            .fold(0.0, f64::max);
        for (w, result, _) in results {
            match result {
                Ok(()) => {
                    acked += 1;
                    written.push(w);
                }
                Err(e) => {
                    tracing::debug!(path = %w.path, error = %e, "write failed");
                    refused += 1;
                }
            }
        }
        let agreement_after = cluster.agreement(keys);
        let reads_started = config.dilation.stopwatch();
        let readers: Vec<Option<&SimNode>> = written.iter().map(|_| pick(cluster, rng)).collect();
        let answers = join_all(written.iter().zip(readers).map(|(w, node)| read(node, w))).await;
        let ok = answers.iter().filter(|a| matches!(a, Read::Ok)).count();
        let (mut missing, mut unheld) = (0, 0);
        for (w, answer) in written.iter().zip(&answers) {
            if let Read::Missing = answer {
                if held_by_a_running_node(cluster, w).await {
                    missing += 1;
                } else {
                    unheld += 1;
                }
            }
        }
        reads += written.len();
        reads_ok += ok;
        rounds.push(Round {
            round,
            failed: failing.len(),
            restarted,
            up: cluster.up().count(),
            agreement_during,
            agreement_after,
            settle_s: settle.map(|d| d.as_secs_f64()),
            writes_acked: acked,
            writes_failed: refused,
            reads: written.len(),
            reads_ok: ok,
            reads_missing: missing,
            reads_unheld: unheld,
            restart_s,
            writes_s,
            reads_s: reads_started.secs(),
            kib_sent: (p3_dht::memory::bytes_sent() - before) as f64 / 1024.0,
            seconds: start.secs(),
        });
        tracing::info!(round, failed = failing.len(), "churn round done");
    }
    // Everyone back, then every acknowledged write must be there.
    restart(cluster, &mut down).await;
    let final_settle = cluster.settle(config.settle_deadline).await;
    let mut lost = 0;
    for w in &written {
        if !read_anywhere(cluster, rng, w).await {
            tracing::warn!(path = %w.path, "acknowledged write lost");
            lost += 1;
        }
    }
    Ok(Churn {
        rounds,
        acknowledged: written.len(),
        lost,
        availability: if reads == 0 {
            1.0
        } else {
            reads_ok as f64 / reads as f64
        },
        final_agreement: cluster.agreement(keys),
        final_settle_s: final_settle.map(|d| d.as_secs_f64()),
    })
}

/// Starts the nodes of `down` again.
async fn restart(cluster: &mut Cluster, down: &mut Vec<usize>) {
    for (index, result) in cluster.restart(down).await {
        if let Err(e) = result {
            tracing::warn!(node = index, error = %e, "a failed node did not come back");
        }
    }
    down.clear();
}

/// A random running node.
fn pick<'a>(cluster: &'a Cluster, rng: &mut StdRng) -> Option<&'a SimNode> {
    cluster.up().choose(rng)
}

async fn write(node: Option<&SimNode>, path: &str, value: &[u8]) -> Result<(), SimError> {
    let node = node.ok_or(SimError::Down(usize::MAX))?;
    let (path, value) = (path.to_owned(), value.to_vec());
    node.on(|local| async move {
        local
            .put_bytes(&path, &PutOptions::default(), &value)
            .await
            .map(drop)
    })
    .await??;
    Ok(())
}

/// What reading an acknowledged write back gave.
enum Read {
    /// Its value.
    Ok,
    /// No such object, or another value: lost, if it stays so.
    Missing,
    /// The read failed (no node, owners unreachable): unavailable now.
    Failed,
}

async fn read(node: Option<&SimNode>, w: &Written) -> Read {
    let Some(node) = node else {
        return Read::Failed;
    };
    let path = w.path.clone();
    match node
        .on(|local| async move { local.get_bytes(&path).await })
        .await
    {
        Ok(Ok((_, bytes))) if bytes == w.value => Read::Ok,
        Ok(Ok(_)) | Ok(Err(SpaceError::NotFound(_))) => Read::Missing,
        Ok(Err(e)) => {
            tracing::debug!(path = %w.path, error = %e, "read failed");
            Read::Failed
        }
        Err(_) => Read::Failed,
    }
}

/// Whether some running node has `w` in its own store, whatever the map
/// says about its owners.
async fn held_by_a_running_node(cluster: &Cluster, w: &Written) -> bool {
    let Ok(path) = ObjectPath::parse(&w.path) else {
        return false;
    };
    for node in cluster.up() {
        let path = path.clone();
        let held = node
            .on(|local| async move { local.engine().store().record(&path.namespace, &path.name) })
            .await;
        if matches!(held, Ok(Ok(Some(_)))) {
            return true;
        }
    }
    false
}

/// Reads `w` through a few nodes: a write counts as lost only if none of
/// them can return it.
async fn read_anywhere(cluster: &Cluster, rng: &mut StdRng, w: &Written) -> bool {
    for _ in 0..3 {
        if let Read::Ok = read(pick(cluster, rng), w).await {
            return true;
        }
    }
    false
}
