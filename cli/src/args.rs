//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// P³: a peer-to-peer object space.
#[derive(Debug, Parser)]
#[command(name = "p3ctl", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command that touches a node takes.
#[derive(Debug, Clone, Args)]
pub struct NodeOpts {
    /// The node's data directory [default: $XDG_DATA_HOME/p3, i.e. ~/.local/share/p3].
    #[arg(long, env = "P3_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print JSON instead of plain text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run or inspect the node of a data directory.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// List the peers the running node knows, with their addresses.
    Peers {
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Print the nodes the DHT says are closest to KEY (the owners of that key),
    /// nearest first.
    Closest {
        /// The key, taken as UTF-8 bytes (or hex bytes with --hex).
        key: String,
        /// Treat KEY as hex-encoded bytes.
        #[arg(long)]
        hex: bool,
        /// How many owners to print.
        #[arg(long, default_value_t = 3)]
        count: usize,
        #[command(flatten)]
        opts: NodeOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Run a node in the foreground until SIGINT or SIGTERM.
    Start {
        /// Address to listen on (repeatable) [default: from the config file,
        /// /ip4/0.0.0.0/tcp/4370].
        #[arg(long = "listen", value_name = "MULTIADDR")]
        listen: Vec<String>,
        /// A node to join through (repeatable), e.g.
        /// /ip4/10.0.0.5/tcp/4370/p2p/12D3Koo...; added to the config file's seeds.
        #[arg(long = "bootstrap", value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Print the node's PeerId (creating its identity if the data dir is new).
    Id {
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Ask the running node for its PeerId, addresses, peers and uptime.
    Status {
        #[command(flatten)]
        opts: NodeOpts,
    },
}
