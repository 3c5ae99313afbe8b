//! The figures of a simulation: one JSON document for plots, and the tables
//! `p3sim` prints.

use std::fmt::{self, Display};

use serde::Serialize;

use crate::{
    resources::Resources,
    scenarios::{churn::Churn, join::Join, lookup::Lookups},
};

/// Mean, median, 99th percentile and maximum of a set of samples.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    /// Samples.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Their median.
    pub p50: f64,
    /// Their 99th percentile.
    pub p99: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `samples` (all zero if there are none).
    pub fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Self {
            n: sorted.len(),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: at(0.5),
            p99: at(0.99),
            max: sorted[sorted.len() - 1],
        }
    }
}

impl Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mean {:.1}, p50 {:.1}, p99 {:.1}, max {:.1}",
            self.mean, self.p50, self.p99, self.max
        )
    }
}

/// Owner agreement: the fraction of sampled keys on which every running
/// node names the same owners.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    /// Keys sampled.
    pub keys: usize,
    /// Once every node joined and the map settled.
    pub after_join: f64,
    /// The least seen right after a round's failures.
    pub during_churn_min: f64,
    /// Once churn ended and every node was back.
    pub after_churn: f64,
}

/// Everything one simulation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// Owners per object.
    pub replicas: usize,
    /// Failure probability per node and round.
    pub p_fail: f64,
    /// Seed of the random choices.
    pub seed: u64,
    /// How many times slower than real time the nodes' timers ran; every
    /// time and rate here is simulated time.
    pub time_scale: u32,
    /// Which peers each node kept connections to.
    pub connections: p3_dht::Connections,
    /// How long an unused connection lived, in milliseconds.
    pub idle_ms: u64,
    /// How often each node refreshed its Kademlia table, in seconds.
    pub refresh_s: u64,
    /// Joining.
    pub join: Join,
    /// Resources once joined.
    pub resources: Resources,
    /// The settled cluster watched over a window (`--watch-secs`), if asked.
    pub watched: Option<crate::resources::Watched>,
    /// Kademlia lookups.
    pub lookups: Lookups,
    /// Owner agreement.
    pub agreement: Agreement,
    /// Churn.
    pub churn: Churn,
}

impl Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |x: f64| x * 100.0;
        writeln!(
            f,
            "N = {}, R = {}, p_f = {}, seed {}, connections {:?} (idle {} ms), table refreshed every {} s",
            self.nodes, self.replicas, self.p_fail, self.seed, self.connections, self.idle_ms, self.refresh_s
        )?;
        if self.time_scale > 1 {
            writeln!(
                f,
                "time       every node's timers {}x slower than real time; times and rates below are simulated time",
                self.time_scale
            )?;
        }
        let j = &self.join;
        writeln!(
            f,
            "join       {} nodes in {:.1} s; per join ms: {}",
            j.nodes, j.total_s, j.join_ms
        )?;
        writeln!(
            f,
            "           KiB sent during a join: {}; maps taken whole: {}",
            j.kib_per_join, j.maps_whole
        )?;
        match j.settle_s {
            Some(s) => writeln!(
                f,
                "           every map the same {s:.2} s after the last join"
            )?,
            None => writeln!(f, "           the maps did NOT settle")?,
        }
        let r = &self.resources;
        writeln!(
            f,
            "resources  {:.1} MiB per node; connections mean {:.1}, max {} (leader {}, relays {}, others {}); routing table mean {:.1}, max {}; map {} members; idle CPU {:.2} cores, {:.1} KiB/s sent per node",
            r.rss_mib_per_node,
            r.connections_mean,
            r.connections_max,
            r.connections_max_by_role.leader,
            r.connections_max_by_role.relay,
            r.connections_max_by_role.other,
            r.routing_mean,
            r.routing_max,
            r.map_members_max,
            r.idle_cores,
            r.idle_bytes_per_node_s / 1024.0
        )?;
        if let Some(w) = &self.watched {
            writeln!(
                f,
                "watched    {:.0} s, {} samples: connections per node mean {:.1}, highest sample {:.1}; CPU {:.2} cores, {:.1} KiB/s sent per node",
                w.secs,
                w.samples,
                w.connections_mean,
                w.connections_peak,
                w.cores,
                w.bytes_per_node_s / 1024.0
            )?;
        }
        let l = &self.lookups;
        writeln!(
            f,
            "lookups    {} answered, {} failed; requests: {}; ms: {}",
            l.answered, l.failed, l.requests, l.ms
        )?;
        writeln!(
            f,
            "           hops to know the R owners (replayed over the routing tables): {} (log2 N / 2 + 2 = {:.1}); {} ran out of peers",
            l.hops, l.hop_bound, l.hops_unfound
        )?;
        let a = &self.agreement;
        writeln!(
            f,
            "agreement  {} keys: {:.2} % after joining, {:.2} % least during churn, {:.2} % after churn",
            a.keys,
            pct(a.after_join),
            pct(a.during_churn_min),
            pct(a.after_churn)
        )?;
        let c = &self.churn;
        writeln!(f, "churn      round failed back up agree% settle_s acked refused reads ok missing unheld KiB s (restart, writes, reads)")?;
        for r in &c.rounds {
            writeln!(
                f,
                "           {:>5} {:>6} {:>4} {:>2} {:>6.2} {:>8} {:>5} {:>7} {:>5} {:>5} {:>7} {:>6} {:>8.0} {:.1} ({:.1}, {:.1}, {:.1})",
                r.round,
                r.failed,
                r.restarted,
                r.up,
                pct(r.agreement_during),
                r.settle_s.map_or("-".into(), |s| format!("{s:.2}")),
                r.writes_acked,
                r.writes_failed,
                r.reads,
                r.reads_ok,
                r.reads_missing,
                r.reads_unheld,
                r.kib_sent,
                r.seconds,
                r.restart_s,
                r.writes_s,
                r.reads_s
            )?;
        }
        let settled = match c.final_settle_s {
            Some(s) => format!("settled {s:.2} s after all were back"),
            None => "did not settle after all were back".to_owned(),
        };
        writeln!(
            f,
            "           {} acknowledged, {} lost; reads available {:.2} %; {settled}",
            c.acknowledged,
            c.lost,
            pct(c.availability)
        )
    }
}
