//! The one home of a node's configuration: its data directory, the files in it,
//! and the TOML config file that command-line flags override.
//!
//! ```text
//! DATA_DIR/
//!   identity.key   ed25519 key (protobuf), mode 0600; the PeerId survives restarts
//!   config.toml    listen addresses, seeds, network timings (created on first start);
//!                  `swarm_key_file` names a private swarm's key, relative to DATA_DIR
//!   db/            RocksDB: Kademlia records and providers (objects later)
//!   api.json       address + access token of the running node's local API, 0600;
//!                  written at start, removed at clean shutdown
//! ```

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use p3_dht::{Connections, Multiaddr, NetworkConfig, SwarmKey};
use p3_membership::LeaseTimes;
use p3_objectspace::SpaceConfig;
use serde::{Deserialize, Serialize};

/// The default TCP port of a P³ node.
pub const DEFAULT_PORT: u16 = 4370;
/// The longest idle time on-demand connections accept: past it a node keeps
/// about as many connections as with `connections = "all"`.
const MAX_ON_DEMAND_IDLE_SECS: u64 = 600;

/// A node's data directory and the paths inside it.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// `--data-dir` / `P3_DATA_DIR` if given, else `$XDG_DATA_HOME/p3`.
    pub fn resolve(given: Option<PathBuf>) -> Result<Self> {
        let root = match given {
            Some(dir) => dir,
            None => dirs::data_dir()
                .context("cannot find a data directory for this user; pass --data-dir or set P3_DATA_DIR")?
                .join("p3"),
        };
        Ok(Self { root })
    }

    /// Creates the directory (owner-only) if it does not exist.
    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create data dir {}", self.root.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700)).with_context(
                || format!("cannot restrict permissions of {}", self.root.display()),
            )?;
        }
        Ok(())
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The ed25519 identity.
    pub fn identity(&self) -> PathBuf {
        self.root.join("identity.key")
    }
    /// The TOML configuration file.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// The RocksDB directory.
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    /// Where the running node publishes its local API address and token.
    pub fn api_file(&self) -> PathBuf {
        self.root.join(p3_objectspace::api::API_FILE)
    }
}

/// The contents of `config.toml`. Every field has a default, so an empty file
/// (or none) is a valid configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Multiaddrs of nodes to join through; re-dialled whenever no peer is connected.
    pub seeds: Vec<String>,
    /// `IP:PORT` of the HTTP API, metrics and dashboard (port 0: a free one),
    /// or `off`. Loopback by default: any other address exposes the API to
    /// whoever has the token and can reach it.
    pub http_listen: String,
    /// Network timings.
    pub network: NetworkSection,
    /// Object-space settings.
    pub space: SpaceSection,
    /// Membership leases.
    pub membership: MembershipSection,
    /// The key file of a private swarm (`p3ctl swarm-key new > FILE`), relative
    /// to the data directory unless absolute. Without it the node joins public
    /// networks only; with it, only nodes with the same key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_key_file: Option<PathBuf>,
}

/// The `[membership]` table: how quickly a silent node stops owning keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipSection {
    /// Milliseconds a node may act as an owner after a heartbeat the group
    /// acknowledged; a silent node leaves the map after this plus the drift.
    pub lease_ms: u64,
    /// Bound, in milliseconds, on how far two nodes' clocks drift apart over
    /// one lease.
    pub drift_ms: u64,
    /// Above this many members, each renews its lease through one of
    /// ⌈N / this⌉ relays instead of with the leader, so the leader does not
    /// hold a connection to every member; 0 turns relaying off.
    pub members_per_relay: usize,
}

impl Default for MembershipSection {
    fn default() -> Self {
        let d = LeaseTimes::default();
        Self {
            lease_ms: d.lease.as_millis() as u64,
            drift_ms: d.drift.as_millis() as u64,
            members_per_relay: p3_membership::DEFAULT_MEMBERS_PER_RELAY,
        }
    }
}

/// The `[space]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpaceSection {
    /// Owners per object (R). Every node of a network should use the same value.
    pub replicas: usize,
    /// Largest value a client may write, in bytes.
    pub max_object_bytes: u64,
    /// Bytes of fetched blobs this node keeps as a cache.
    pub cache_bytes: u64,
    /// Seconds between full repair rounds when no peer comes or goes.
    pub repair_interval_secs: u64,
}

impl Default for SpaceSection {
    fn default() -> Self {
        let d = SpaceConfig::default();
        Self {
            replicas: d.replicas,
            max_object_bytes: d.max_object_bytes,
            cache_bytes: d.cache_bytes,
            repair_interval_secs: d.repair_interval.as_secs(),
        }
    }
}

/// The `[network]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// Seconds between Kademlia routing-table refreshes; unset: the
    /// connection policy's default (60 with `"all"`, 300 on demand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_interval_secs: Option<u64>,
    /// Seconds between checks for having no connected peer (then the seeds are re-dialled).
    pub reconnect_interval_secs: u64,
    /// Seconds an idle connection is kept open (with on-demand connections,
    /// an unused request stream too); unset: the connection policy's default
    /// (3,600 with `"all"`, 30 on demand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_connection_timeout_secs: Option<u64>,
    /// Which peers to keep connections to: `"all"` (every peer of the
    /// routing table, for clusters of tens of nodes) or `"on-demand"` (only
    /// those the node talks to, for large networks).
    pub connections: Connections,
    /// Seconds a DHT query may take.
    pub query_timeout_secs: u64,
    /// Seconds a request to a peer may take.
    pub request_timeout_secs: u64,
    /// Milliseconds without an answer to pings after which a peer is taken
    /// for gone and its connection closed.
    pub failure_timeout_ms: u64,
}

impl NetworkSection {
    /// The refresh period: the file's, else the connection policy's default.
    fn refresh_interval(&self) -> Duration {
        self.refresh_interval_secs.map_or(
            self.connections.default_refresh_interval(),
            Duration::from_secs,
        )
    }

    /// The idle timeout: the file's, else the connection policy's default.
    fn idle_connection_timeout(&self) -> Duration {
        self.idle_connection_timeout_secs.map_or(
            self.connections.default_idle_connection_timeout(),
            Duration::from_secs,
        )
    }
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            listen: vec![format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}")],
            seeds: Vec::new(),
            http_listen: DEFAULT_HTTP.to_owned(),
            network: NetworkSection::default(),
            space: SpaceSection::default(),
            membership: MembershipSection::default(),
            swarm_key_file: None,
        }
    }
}

impl Default for NetworkSection {
    fn default() -> Self {
        let d = NetworkConfig::default();
        Self {
            refresh_interval_secs: None,
            reconnect_interval_secs: d.reconnect_interval.as_secs(),
            idle_connection_timeout_secs: None,
            connections: d.connections,
            query_timeout_secs: d.query_timeout.as_secs(),
            request_timeout_secs: d.request_timeout.as_secs(),
            failure_timeout_ms: d.failure_timeout.as_millis() as u64,
        }
    }
}

/// Where a node serves HTTP unless told otherwise: loopback, a free port.
pub const DEFAULT_HTTP: &str = "127.0.0.1:0";

/// `IP:PORT`, or `off`.
fn http_addr(text: &str) -> Result<Option<SocketAddr>> {
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{text:?} is not IP:PORT (e.g. 127.0.0.1:8080) or off"))
}

impl ConfigFile {
    /// Reads the config file of `dir`, writing the defaults there first if it does
    /// not exist so the user has a file to edit.
    pub fn load_or_init(dir: &DataDir) -> Result<Self> {
        let path = dir.config_file();
        match fs::read_to_string(&path) {
            Ok(text) => {
                Self::parse(&text).with_context(|| format!("config file {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let config = Self::default();
                let text = format!(
                    "# P³ node configuration. Command-line flags override it.\n{}",
                    toml::to_string_pretty(&config)?
                );
                fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(config)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| {
            // toml's own Display is a multi-line snippet; errors here are one line.
            let line = e
                .span()
                .and_then(|span| text.get(..span.start))
                .map_or(1, |before| before.matches('\n').count() + 1);
            anyhow::anyhow!("line {line}: {}", e.message())
        })?;
        let n = &config.network;
        for (name, secs) in [
            ("refresh_interval_secs", n.refresh_interval().as_secs()),
            ("reconnect_interval_secs", n.reconnect_interval_secs),
            ("query_timeout_secs", n.query_timeout_secs),
            ("request_timeout_secs", n.request_timeout_secs),
        ] {
            if secs == 0 {
                bail!("network.{name} must be at least 1");
            }
        }
        if config.space.replicas == 0 || config.space.repair_interval_secs == 0 {
            bail!("space.replicas and space.repair_interval_secs must be at least 1");
        }
        let idle = n.idle_connection_timeout().as_secs();
        if n.connections == Connections::OnDemand && !(1..=MAX_ON_DEMAND_IDLE_SECS).contains(&idle)
        {
            bail!(
                "network.connections = \"on-demand\" closes connections unused for idle_connection_timeout_secs; set that to 1..={MAX_ON_DEMAND_IDLE_SECS} (e.g. 30), not {idle}"
            );
        }
        let floor = p3_dht::MIN_FAILURE_TIMEOUT.as_millis() as u64;
        if config.network.failure_timeout_ms < floor {
            bail!("network.failure_timeout_ms must be at least {floor}");
        }
        http_addr(&config.http_listen).context("http_listen")?;
        let membership = &config.membership;
        if membership.lease_ms < 300 || membership.drift_ms >= membership.lease_ms {
            bail!("membership.lease_ms must be at least 300 and more than membership.drift_ms");
        }
        if membership.members_per_relay == 1 {
            bail!("membership.members_per_relay must be 0 (no relays) or at least 2: with 1, every member would relay for nobody");
        }
        Ok(config)
    }

    /// Where to serve HTTP: `flag` (`--http-listen`) if given, else the file's
    /// `http_listen`; `None` when off.
    pub fn http(&self, flag: Option<&str>) -> Result<Option<SocketAddr>> {
        let (text, from) = match flag {
            Some(text) => (text, "--http-listen"),
            None => (self.http_listen.as_str(), "http_listen"),
        };
        http_addr(text).context(from)
    }

    /// The private swarm's key, read from `swarm_key_file`; `None` for a
    /// public network.
    pub fn swarm_key(&self, dir: &DataDir) -> Result<Option<SwarmKey>> {
        let Some(file) = &self.swarm_key_file else {
            return Ok(None);
        };
        let path = dir.root().join(file);
        let text = fs::read_to_string(&path)
            .with_context(|| format!("swarm_key_file: cannot read {}", path.display()))?;
        let key =
            SwarmKey::parse(&text).with_context(|| format!("swarm_key_file {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "swarm key file {} can be read by other users (mode {:o}): anyone who has it can join; chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
        }
        Ok(Some(key))
    }

    /// The membership lease and drift.
    pub fn lease_times(&self) -> LeaseTimes {
        LeaseTimes {
            lease: Duration::from_millis(self.membership.lease_ms),
            drift: Duration::from_millis(self.membership.drift_ms),
        }
    }

    /// The object-space settings.
    pub fn space(&self) -> SpaceConfig {
        SpaceConfig {
            replicas: self.space.replicas,
            max_object_bytes: self.space.max_object_bytes,
            cache_bytes: self.space.cache_bytes,
            repair_interval: Duration::from_secs(self.space.repair_interval_secs),
            rpc_timeout: Duration::from_secs(self.network.request_timeout_secs),
        }
    }

    /// The network settings: the file's, with `--listen` replacing its listen list
    /// and `--bootstrap` adding to its seeds.
    pub fn network(&self, listen: &[String], bootstrap: &[String]) -> Result<NetworkConfig> {
        let listen = if listen.is_empty() {
            &self.listen
        } else {
            listen
        };
        let n = &self.network;
        Ok(NetworkConfig {
            listen: parse_addrs(listen, "listen address")?,
            bootstrap: parse_addrs(self.seeds.iter().chain(bootstrap), "seed address")?,
            refresh_interval: n.refresh_interval(),
            reconnect_interval: Duration::from_secs(n.reconnect_interval_secs),
            idle_connection_timeout: n.idle_connection_timeout(),
            connections: n.connections,
            query_timeout: Duration::from_secs(n.query_timeout_secs),
            request_timeout: Duration::from_secs(n.request_timeout_secs),
            failure_timeout: Duration::from_millis(n.failure_timeout_ms),
            ..NetworkConfig::default()
        })
    }
}

fn parse_addrs<'a>(
    addrs: impl IntoIterator<Item = &'a String>,
    what: &str,
) -> Result<Vec<Multiaddr>> {
    addrs
        .into_iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .with_context(|| format!("invalid {what} {a:?} (expected a multiaddr like /ip4/127.0.0.1/tcp/{DEFAULT_PORT})"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(ConfigFile::parse("").unwrap(), ConfigFile::default());
    }

    #[test]
    fn written_defaults_parse_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::resolve(Some(dir.path().to_owned())).unwrap();
        let first = ConfigFile::load_or_init(&data).unwrap();
        assert!(data.config_file().exists());
        assert_eq!(ConfigFile::load_or_init(&data).unwrap(), first);
    }

    #[test]
    fn flags_override_and_extend_the_file() {
        let config = ConfigFile::parse(
            "seeds = [\"/ip4/127.0.0.1/tcp/1\"]\n[network]\nquery_timeout_secs = 7\n",
        )
        .unwrap();
        let net = config
            .network(
                &["/ip4/127.0.0.1/tcp/0".into()],
                &["/ip4/127.0.0.1/tcp/2".into()],
            )
            .unwrap();
        assert_eq!(
            net.listen,
            vec!["/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>().unwrap()]
        );
        assert_eq!(net.bootstrap.len(), 2);
        assert_eq!(net.query_timeout, Duration::from_secs(7));
    }

    #[test]
    fn swarm_key_file_is_read_relative_to_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::resolve(Some(dir.path().to_owned())).unwrap();
        assert!(ConfigFile::default().swarm_key(&data).unwrap().is_none());
        let key = SwarmKey::generate();
        fs::write(dir.path().join("swarm.key"), key.to_file_text()).unwrap();
        let config = ConfigFile::parse("swarm_key_file = \"swarm.key\"").unwrap();
        let read = config.swarm_key(&data).unwrap().unwrap();
        assert_eq!(read.fingerprint(), key.fingerprint());

        let missing = ConfigFile::parse("swarm_key_file = \"nope.key\"").unwrap();
        let err = format!("{:#}", missing.swarm_key(&data).unwrap_err());
        assert!(err.contains("nope.key"), "{err}");
        fs::write(dir.path().join("bad.key"), "hello\n").unwrap();
        let bad = ConfigFile::parse("swarm_key_file = \"bad.key\"").unwrap();
        let err = format!("{:#}", bad.swarm_key(&data).unwrap_err());
        assert!(
            err.contains("bad.key") && err.contains("not a swarm key"),
            "{err}"
        );
    }

    #[test]
    fn on_demand_connections_need_a_short_idle_time() {
        let err = ConfigFile::parse(
            "[network]\nconnections = \"on-demand\"\nidle_connection_timeout_secs = 3600",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("idle_connection_timeout_secs"),
            "{err}"
        );
        let config = ConfigFile::parse(
            "[network]\nconnections = \"on-demand\"\nidle_connection_timeout_secs = 10",
        )
        .unwrap();
        let net = config.network(&[], &[]).unwrap();
        assert_eq!(net.connections, Connections::OnDemand);
        assert_eq!(net.idle_connection_timeout, Duration::from_secs(10));
        let err = ConfigFile::parse("[network]\nconnections = \"some\"").unwrap_err();
        assert!(err.to_string().contains("on-demand"), "{err}");
        assert_eq!(
            ConfigFile::default().network(&[], &[]).unwrap().connections,
            Connections::All
        );
    }

    #[test]
    fn unset_timings_follow_the_connection_policy() {
        let all = ConfigFile::default().network(&[], &[]).unwrap();
        assert_eq!(all.refresh_interval, Duration::from_secs(60));
        assert_eq!(all.idle_connection_timeout, Duration::from_secs(3600));
        let on_demand = ConfigFile::parse("[network]\nconnections = \"on-demand\"")
            .unwrap()
            .network(&[], &[])
            .unwrap();
        assert_eq!(on_demand.refresh_interval, Duration::from_secs(300));
        assert_eq!(on_demand.idle_connection_timeout, Duration::from_secs(30));
        let set =
            ConfigFile::parse("[network]\nconnections = \"on-demand\"\nrefresh_interval_secs = 90")
                .unwrap()
                .network(&[], &[])
                .unwrap();
        assert_eq!(set.refresh_interval, Duration::from_secs(90));
        let err = ConfigFile::parse("[network]\nrefresh_interval_secs = 0").unwrap_err();
        assert!(err.to_string().contains("refresh_interval_secs"), "{err}");
    }

    #[test]
    fn bad_input_is_named() {
        let err = ConfigFile::parse("listen = 3").unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = ConfigFile::parse("colour = \"red\"").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = ConfigFile::parse("[network]\nquery_timeout_secs = 0").unwrap_err();
        assert!(err.to_string().contains("query_timeout_secs"), "{err}");
        let err = ConfigFile::parse("[membership]\nlease_ms = 500\ndrift_ms = 500").unwrap_err();
        assert!(err.to_string().contains("membership.lease_ms"), "{err}");
        let err = ConfigFile::parse("[membership]\nmembers_per_relay = 1").unwrap_err();
        assert!(err.to_string().contains("members_per_relay"), "{err}");
        let lease = ConfigFile::parse("[membership]\nlease_ms = 1500")
            .unwrap()
            .lease_times();
        assert_eq!(lease.lease, Duration::from_millis(1500));
        let err = ConfigFile::default()
            .network(&["not-an-addr".into()], &[])
            .unwrap_err();
        assert!(format!("{err:#}").contains("not-an-addr"), "{err:#}");
    }
}
