//! The command line, as clap sees it.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use p3_objectspace::object::MetaValue;

use crate::parse;

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
    /// Write an object: its value from FILE, or from stdin.
    Put {
        /// The object, NAMESPACE/NAME (e.g. global/readme.txt).
        path: String,
        /// Where the value comes from; `-` or nothing means stdin.
        file: Option<PathBuf>,
        /// Type tag, free text (e.g. text/plain).
        #[arg(long = "type", value_name = "T", default_value = "")]
        type_tag: String,
        /// User metadata (repeatable); V is stored as a number if it reads as one.
        #[arg(long = "meta", value_name = "K=V", value_parser = parse::meta)]
        meta: Vec<(String, MetaValue)>,
        /// Remove the object after this long: 500ms, 30s, 5m, 2h, 1d, or seconds.
        #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
        ttl: Option<Duration>,
        /// Write only if the current version is N (0: only if the object is absent).
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        /// Write under a held write lock: its fencing token (`$P3_FENCING_TOKEN`).
        #[arg(long, value_name = "N")]
        token: Option<u64>,
        /// Keep the object in its owners' memory only (never on disk, not
        /// searchable; lost if all its owners restart). Values up to 64 KiB.
        #[arg(long)]
        volatile: bool,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Read an object's value to stdout (raw bytes) or to a file.
    Get {
        /// The object, NAMESPACE/NAME.
        path: String,
        /// Write the value to FILE (replaced only once the whole value arrived;
        /// a device or FIFO is written through).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Wait up to DURATION for the object to exist (the node is told of the
        /// write; it does not poll).
        #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
        wait: Option<Duration>,
        /// With --wait: wait for a version greater than N.
        #[arg(long, value_name = "N", requires = "wait")]
        after_version: Option<u64>,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Take an object: read and remove it in one step (of concurrent takers
    /// exactly one gets it). Its name goes to stderr, its value to stdout or FILE.
    Take {
        /// The object, NAMESPACE/NAME; with --match, the NAMESPACE.
        target: String,
        /// Take any one object of the namespace that matches QUERY (see
        /// `p3ctl search`).
        #[arg(long = "match", value_name = "QUERY")]
        query: Option<String>,
        /// Wait up to DURATION for the object (or a match) to exist.
        #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
        wait: Option<Duration>,
        /// Write the value to FILE (replaced only once the whole value arrived;
        /// a device or FIFO is written through).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// List the objects of a namespace that match a query, e.g.
    /// `type = task and meta.size > 10 and name ~ "jobs/*"` (the README has the
    /// syntax).
    Search {
        /// The namespace.
        namespace: String,
        /// The query; `*` matches everything.
        query: String,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Hold a lock on an object while a command runs, like `flock`: acquires it,
    /// runs CMD with P3_FENCING_TOKEN set, releases it when CMD exits, and exits
    /// with CMD's status.
    Lock {
        /// The object, NAMESPACE/NAME.
        path: String,
        /// A shared lock (many readers at once).
        #[arg(long, conflicts_with = "write")]
        read: bool,
        /// An exclusive lock (the default).
        #[arg(long)]
        write: bool,
        /// Lease: how long the lock outlives this node if it dies.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse::duration)]
        lease: Duration,
        /// Give up after waiting this long (default: wait as long as it takes).
        #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
        timeout: Option<Duration>,
        #[command(flatten)]
        opts: NodeOpts,
        /// The command to run, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Print one line (or JSON object) per put, removal and expiry of the objects
    /// of NS whose names start with PREFIX, until interrupted.
    Watch {
        /// NAMESPACE or NAMESPACE/PREFIX.
        target: String,
        /// Watch only the object named exactly NAMESPACE/PREFIX.
        #[arg(long)]
        exact: bool,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Show an object's version, size, hash, type, metadata, times and replicas.
    Stat {
        /// The object, NAMESPACE/NAME.
        path: String,
        /// Show only this node's own copy (no network): what repair has put here.
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Remove an object.
    Rm {
        /// The object, NAMESPACE/NAME.
        path: String,
        /// Remove only if the current version is N.
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        /// Remove under a held write lock: its fencing token.
        #[arg(long, value_name = "N")]
        token: Option<u64>,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// List the objects of a namespace, optionally only names starting with PREFIX.
    Ls {
        /// NAMESPACE or NAMESPACE/PREFIX.
        #[arg(value_name = "NS[/PREFIX]")]
        target: String,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Create, remove or list namespaces.
    Ns {
        #[command(subcommand)]
        command: NsCommand,
    },
    /// Mount namespace NS at directory DIR (FUSE) and serve it in the
    /// foreground until unmounted or interrupted.
    Mount {
        /// The namespace.
        namespace: String,
        /// An existing directory to mount it on.
        dir: PathBuf,
        /// Refuse every change (EROFS).
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Unmount a directory mounted with `p3ctl mount` (the mount process exits).
    Umount {
        /// The mount point.
        dir: PathBuf,
    },
    /// Keys of private swarms: networks only nodes with the key can join.
    SwarmKey {
        #[command(subcommand)]
        command: SwarmKeyCommand,
    },
    /// Run parallel jobs on the nodes that join: submit, watch, cancel.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Measure the running node: time many puts or gets of SIZE-byte objects.
    Bench {
        #[command(flatten)]
        bench: BenchArgs,
        #[command(flatten)]
        opts: NodeOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum SwarmKeyCommand {
    /// Print a new random key to stdout: `p3ctl swarm-key new > swarm.key`,
    /// then copy the file to every node of the swarm and name it in each
    /// node's config.toml (`swarm_key_file`). Keep it secret.
    New,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job: run its setup here, then every node's worker joins in.
    /// Prints the job id; with --wait, shows progress and prints the result.
    Run {
        /// The job kind (see `p3ctl job kinds`).
        kind: String,
        /// A job argument (repeatable), e.g. --arg n=256.
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
        /// Wait for the job to finish and print its result.
        #[arg(long)]
        wait: bool,
        /// Publish the root as one task for idle workers to steal from,
        /// instead of dividing it among the workers there are (to measure
        /// stealing).
        #[arg(long)]
        no_spread: bool,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// State, progress, steals, divides, restarts and each worker's share.
    Status {
        /// The job id.
        id: String,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// List the jobs.
    Ls {
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Print a job's result (JSON).
    Result {
        /// The job id.
        id: String,
        /// Wait for the job to finish first.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Stop a job on every worker and remove its namespace.
    Cancel {
        /// The job id.
        id: String,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// List the job kinds this binary can run.
    Kinds,
    /// Run a job in this one process, without any node: the reference result
    /// and time a cluster run compares with.
    Local {
        /// The job kind.
        kind: String,
        /// A job argument (repeatable), e.g. --arg n=256.
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// `node start` and `mount`: processes that serve until stopped.
    pub fn is_long_running(&self) -> bool {
        matches!(
            self,
            Command::Node {
                command: NodeCommand::Start { .. }
            } | Command::Mount { .. }
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum NsCommand {
    /// Create a namespace.
    Create {
        /// The namespace: 1-63 characters from a-z, 0-9, '.', '_', '-'.
        name: String,
        /// Make it writer-only: only these nodes (PeerIds, as `p3ctl node
        /// status` prints them; the node asked must be one) may change it.
        #[arg(long = "writer", value_name = "PEER_ID")]
        writers: Vec<String>,
        /// Only the writers may read it (needs --writer).
        #[arg(long, requires = "writers")]
        private: bool,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Let more nodes change a writer-only namespace (asked of a writer).
    Grant {
        /// The namespace.
        name: String,
        /// PeerIds of the new writers.
        #[arg(required = true)]
        writers: Vec<String>,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Stop nodes changing a writer-only namespace (asked of a writer).
    Revoke {
        /// The namespace.
        name: String,
        /// PeerIds of the writers to remove.
        #[arg(required = true)]
        writers: Vec<String>,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Print who may change a namespace: its writers' PeerIds, or "open".
    Writers {
        /// The namespace.
        name: String,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Remove a namespace and every object in it.
    Rm {
        /// The namespace.
        name: String,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// List the namespaces.
    Ls {
        #[command(flatten)]
        opts: NodeOpts,
    },
}

/// What `p3ctl bench` measures and how hard it pushes.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The operation to time.
    pub op: BenchOp,
    /// Bytes per object: 4096, 4k, 1KiB, 1M, 1MiB, 1MB...
    #[arg(long, value_name = "BYTES", default_value = "4096", value_parser = parse::size)]
    pub size: u64,
    /// Operations in total, spread over the connections.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Connections to the node, each running its operations one after another.
    #[arg(long, value_name = "C", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Namespace to write into (created if missing).
    #[arg(long, value_name = "NS", default_value = "bench")]
    pub namespace: String,
    /// `bench lock`: distinct locks; connection i uses lock i mod N (1: every
    /// connection contends for the same lock; --concurrency: each has its own).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub locks: u64,
}

/// The operations `p3ctl bench` can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchOp {
    /// Write new objects.
    Put,
    /// Read objects written beforehand (untimed).
    Get,
    /// Acquire and release a write lock; with --concurrency 1 uncontended,
    /// with more the connections share --locks distinct locks.
    Lock,
    /// Take (read and remove) objects written beforehand (untimed), each once.
    Take,
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
        /// Tasks of jobs this node runs at the same time.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
        slots: u16,
        /// Store objects and serve the space, but run no job tasks.
        #[arg(long)]
        no_worker: bool,
        /// Where to serve the HTTP API, metrics and dashboard, e.g.
        /// 127.0.0.1:8080, or `off` [default: `http_listen` of the config
        /// file, 127.0.0.1 on a free port].
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<String>,
        /// Log lines as plain text or as one JSON object per line.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
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
    /// Print the URL of the running node's dashboard (with its token).
    Dashboard {
        #[command(flatten)]
        opts: NodeOpts,
    },
}

/// How a node writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}
