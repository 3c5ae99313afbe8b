//! Network namespaces for the nemesis: one per node, joined by a bridge in a
//! hub namespace. A partition moves one side's ports onto a second bridge, so
//! packets between the sides are dropped silently, as on a real split (no
//! connection is refused or reset; the nodes must notice the silence).

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// The namespaces of one test run; deleted when dropped.
pub struct Net {
    hub: String,
    nodes: Vec<String>,
}

/// Runs `ip ARGS`; its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Creates the hub and `n` node namespaces, node `i` at 10.77.0.`i+1`/24,
    /// or says why it cannot (not root, no `ip`, no namespaces in this kernel).
    pub fn create(n: usize) -> Result<Net, String> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "p3nem{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Net {
            hub: format!("{tag}-hub"),
            nodes: Vec::new(),
        };
        ip(&["netns", "add", &net.hub])?;
        for bridge in ["br0", "br1"] {
            ip(&["-n", &net.hub, "link", "add", bridge, "type", "bridge"])?;
            ip(&["-n", &net.hub, "link", "set", bridge, "up"])?;
        }
        for i in 0..n {
            let ns = format!("{tag}-{i}");
            ip(&["netns", "add", &ns])?;
            net.nodes.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let port = format!("p{i}");
            ip(&[
                "-n", &net.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &net.hub, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Self::addr(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> &str {
        &self.nodes[i]
    }

    /// Node `i`'s address.
    pub fn addr(i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    /// Cuts the nodes of `side` off from the others (both directions).
    pub fn partition(&self, side: &[usize]) {
        for i in side {
            self.attach(*i, "br1");
        }
    }

    /// Joins every node to one network again.
    pub fn heal(&self) {
        for i in 0..self.nodes.len() {
            self.attach(i, "br0");
        }
    }

    /// Moves node `i`'s port in the hub onto `bridge`.
    fn attach(&self, i: usize, bridge: &str) {
        let port = format!("p{i}");
        ip(&["-n", &self.hub, "link", "set", &port, "master", bridge])
            .unwrap_or_else(|e| panic!("cannot move {port} to {bridge}: {e}"));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain([&self.hub]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
