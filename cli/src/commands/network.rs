//! Commands about the node and the network: `node id`, `node status`,
//! `node dashboard`, `peers`,
//! `closest`.

use anyhow::{bail, Context, Result};
use p3_dht::identity;
use p3_objectspace::api::ApiInfo;

use super::space;
use crate::{args::NodeOpts, config::DataDir, output};

/// `p3ctl node id`: works without a running node.
pub fn id(opts: &NodeOpts) -> Result<()> {
    let dir = DataDir::resolve(opts.data_dir.clone())?;
    dir.create()?;
    let peer_id = identity::load_or_create(&dir.identity())?
        .public()
        .to_peer_id()
        .to_string();
    if opts.json {
        output::json(&serde_json::json!({ "peer_id": peer_id }))
    } else {
        println!("{peer_id}");
        Ok(())
    }
}

/// `p3ctl node status`, with what the node's worker runs (from its
/// `worker.json`; absent with `--no-worker`).
pub async fn status(opts: &NodeOpts) -> Result<()> {
    let status = space(opts).await?.status().await?;
    let dir = DataDir::resolve(opts.data_dir.clone())?;
    let worker: Option<serde_json::Value> =
        std::fs::read_to_string(dir.root().join(p3_scheduler::worker::STATUS_FILE))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
    let membership: Option<p3_membership::MembershipStatus> =
        std::fs::read_to_string(dir.root().join(crate::daemon::MEMBERSHIP_FILE))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
    let http = api_info(&dir).ok().and_then(|info| info.http);
    if opts.json {
        let mut value = serde_json::to_value(&status)?;
        value["worker"] = worker.unwrap_or_default();
        value["membership"] = serde_json::to_value(&membership)?;
        value["http"] = serde_json::to_value(&http)?;
        return output::json(&value);
    }
    let node = &status.node;
    println!("peer id:       {}", node.peer_id);
    for (i, addr) in node.listen_addrs.iter().enumerate() {
        println!(
            "{}{addr}",
            if i == 0 {
                "listening on:  "
            } else {
                "               "
            }
        );
    }
    println!("connected:     {} peers", node.connected_peers);
    println!("routing table: {} peers", node.routing_table_size);
    println!("uptime:        {}", output::duration(node.uptime_secs));
    match &node.swarm_key {
        Some(fingerprint) => println!("swarm:         private, key {fingerprint}"),
        None => println!("swarm:         public"),
    }
    match &http {
        Some(addr) => println!(
            "http:          http://{addr}/ (`p3ctl node dashboard` prints the dashboard's URL)"
        ),
        None => println!("http:          off"),
    }
    match &membership {
        None => println!("membership:    unknown"),
        Some(m) => println!(
            "membership:    epoch {}, {} members, {}, leader {}; {}{}",
            m.epoch,
            m.members.len(),
            // Raft tells its voters only to the group: a node that follows
            // the map through its renewals does not know them.
            if m.voters.is_empty() {
                "following the map (not in the Raft group)".to_owned()
            } else {
                format!("{} voters", m.voters.len())
            },
            m.leader.as_deref().unwrap_or("unknown"),
            if m.lease_ms > 0 {
                format!("lease for {} ms", m.lease_ms)
            } else {
                "no lease: not acting as an owner".to_owned()
            },
            m.relay
                .as_deref()
                .map(|relay| format!(", renewed through relay {relay}"))
                .unwrap_or_default()
        ),
    }
    println!(
        "volatile:      {} bytes held; {} watch events received",
        status.volatile_bytes, status.events_received
    );
    match worker {
        None => println!("worker:        none"),
        Some(worker) => {
            println!("worker:        {} slots", worker["slots"]);
            for job in worker["jobs"].as_array().into_iter().flatten() {
                println!(
                    "  job {} ({}): {} tasks running",
                    job["id"].as_str().unwrap_or("?"),
                    job["kind"].as_str().unwrap_or("?"),
                    job["running"].as_array().map_or(0, Vec::len)
                );
            }
        }
    }
    Ok(())
}

/// What the running node of `dir` published in its `api.json`.
fn api_info(dir: &DataDir) -> Result<ApiInfo> {
    let path = dir.api_file();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no node is running on {} (cannot read {})",
            dir.root().display(),
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is corrupt; restart the node to rewrite it",
            path.display()
        )
    })
}

/// `p3ctl node dashboard`: the dashboard's URL, the token in its fragment
/// (which the browser never sends to the server).
pub fn dashboard(opts: &NodeOpts) -> Result<()> {
    let dir = DataDir::resolve(opts.data_dir.clone())?;
    let info = api_info(&dir)?;
    let Some(addr) = info.http else {
        bail!("the node serves no HTTP (http_listen = \"off\"); set http_listen in its config.toml and restart it");
    };
    println!("http://{addr}/#token={}", info.token);
    Ok(())
}

/// `p3ctl peers`.
pub async fn peers(opts: &NodeOpts) -> Result<()> {
    let peers = space(opts).await?.peers().await?;
    if opts.json {
        return output::json(&peers);
    }
    for peer in peers {
        let state = match (peer.connected, peer.rtt_us) {
            (true, Some(us)) => format!("connected (rtt {:.2} ms)", us as f64 / 1000.0),
            (true, None) => "connected".to_owned(),
            (false, _) => "not connected".to_owned(),
        };
        println!("{}  {state}  {}", peer.peer_id, peer.addrs.join(" "));
    }
    Ok(())
}

/// `p3ctl closest KEY`.
pub async fn closest(opts: &NodeOpts, key: &str, is_hex: bool, count: usize) -> Result<()> {
    let key = if is_hex {
        hex::decode(key).with_context(|| format!("KEY {key:?} is not valid hex"))?
    } else {
        key.as_bytes().to_vec()
    };
    if key.is_empty() {
        bail!("KEY must not be empty");
    }
    let mut owners = space(opts).await?.closest(key).await?;
    owners.truncate(count);
    if opts.json {
        return output::json(&owners);
    }
    for owner in owners {
        println!("{owner}");
    }
    Ok(())
}
