//! [`Space`]: the client of a node's local API, used by `p3ctl` and by Rust
//! programs (the scheduler, the mount) that work with the object space; its
//! puts and gets of values are in [`super::values`].

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use p3_dht::PeerInfo;
use tokio::{net::TcpStream, time::timeout};

use super::{
    held::HeldLock,
    mux::{self, Channel, Opener},
    protocol::{Hello, Request, Response, SpaceStatus, Written},
    read_frame, write_data, write_frame, ApiInfo, FrameError, API_FILE,
};
use crate::{
    error::{Result, SpaceError},
    index::Entry,
    lock::LockMode,
    object::{PutOptions, Stat},
    watch::Event,
};

/// How long the client waits for any one answer before it gives up on a node
/// that accepts connections but does not answer (hung, or stopped with SIGSTOP).
/// Longer than any network deadline of the node, so a slow but working answer
/// still arrives.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A conversation with the node of a data directory: one request at a time.
/// [`Space::channel`] opens another over the same connection, for requests
/// that run concurrently.
pub struct Space {
    pub(super) stream: Channel,
    opener: Opener,
    pub(super) timeout: Duration,
}

pub(super) fn lost(e: FrameError) -> SpaceError {
    SpaceError::Unavailable(e.to_string())
}

impl Space {
    /// Connects to the node running on `data_dir` (through its `api.json`).
    pub async fn connect(data_dir: &Path) -> Result<Self> {
        let api_file: PathBuf = data_dir.join(API_FILE);
        let not_running = || {
            SpaceError::Unavailable(format!(
                "no node is running on data dir {0}; start one with `p3ctl node start --data-dir {0}`",
                data_dir.display()
            ))
        };
        let text = match std::fs::read_to_string(&api_file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_running()),
            Err(e) => {
                return Err(SpaceError::Unavailable(format!(
                    "cannot read {}: {e}",
                    api_file.display()
                )))
            }
        };
        let info: ApiInfo = serde_json::from_str(&text).map_err(|_| {
            SpaceError::Unavailable(format!(
                "{} is corrupt; restart the node to rewrite it",
                api_file.display()
            ))
        })?;
        let mut stream = match TcpStream::connect(&info.addr).await {
            Ok(stream) => stream,
            // A node killed without a clean shutdown leaves its api.json behind.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(not_running()),
            Err(e) => {
                return Err(SpaceError::Unavailable(format!(
                    "cannot reach the node at {}: {e}",
                    info.addr
                )))
            }
        };
        stream.set_nodelay(true).ok();
        write_frame(&mut stream, &Hello { token: info.token })
            .await
            .map_err(lost)?;
        let opener = mux::client(stream);
        Ok(Self {
            stream: opener.open().await.map_err(|e| lost(e.into()))?,
            opener,
            timeout: CALL_TIMEOUT,
        })
    }

    /// Another conversation with the same node over the same connection (no
    /// new handshake): its requests run concurrently with this one's.
    pub async fn channel(&self) -> Result<Space> {
        Ok(Self {
            stream: self.opener.open().await.map_err(|e| lost(e.into()))?,
            opener: self.opener.clone(),
            timeout: self.timeout,
        })
    }

    /// The conversation, the connection it runs on, and the answer timeout.
    pub(super) fn into_parts(self) -> (Channel, Opener, Duration) {
        (self.stream, self.opener, self.timeout)
    }

    /// Replaces [`CALL_TIMEOUT`] for this connection.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(super) async fn send(&mut self, request: &Request) -> Result<()> {
        write_frame(&mut self.stream, request).await.map_err(lost)
    }

    /// Sends the frame of `Request::Data(bytes)` (see [`write_data`]).
    pub(super) async fn send_data(&mut self, bytes: &[u8]) -> Result<()> {
        write_data(&mut self.stream, bytes).await.map_err(lost)
    }

    /// Reads the next answer; a [`Response::Error`] becomes the error.
    pub(super) async fn receive(&mut self) -> Result<Response> {
        self.receive_within(self.timeout).await
    }

    pub(super) async fn receive_within(&mut self, deadline: Duration) -> Result<Response> {
        let answer = timeout(deadline, read_frame(&mut self.stream))
            .await
            .map_err(|_| {
                SpaceError::Unavailable(format!(
                    "the node did not answer within {deadline:?}; it may be hung (check its log)"
                ))
            })?
            .map_err(lost)?;
        match answer {
            Some(Response::Error(e)) => Err(e),
            Some(response) => Ok(response),
            None => Err(SpaceError::Unavailable(
                "the node closed the connection (is it shutting down?)".into(),
            )),
        }
    }

    /// Sends one request and returns its one answer.
    pub async fn call(&mut self, request: Request) -> Result<Response> {
        self.send(&request).await?;
        self.receive().await
    }

    /// The node's status.
    pub async fn status(&mut self) -> Result<SpaceStatus> {
        match self.call(Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// The peers the node knows.
    pub async fn peers(&mut self) -> Result<Vec<PeerInfo>> {
        match self.call(Request::Peers).await? {
            Response::Peers(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// The nodes closest to `key`, nearest first.
    pub async fn closest(&mut self, key: Vec<u8>) -> Result<Vec<String>> {
        match self.call(Request::Closest { key }).await? {
            Response::Closest(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// The objects of `namespace` matching `query` (see [`crate::query`]).
    pub async fn search(&mut self, namespace: &str, query: &str) -> Result<Vec<Entry>> {
        let request = Request::Search {
            namespace: namespace.to_owned(),
            query: query.to_owned(),
        };
        match self.call(request).await? {
            Response::Matches(found) => Ok(found),
            other => Err(unexpected(other)),
        }
    }

    /// Turns this connection into a stream of the events of `namespace` for the
    /// objects whose names start with `prefix`; returns once the node watches.
    /// With `exact`, only the object named `prefix` is watched.
    pub async fn watch(mut self, namespace: &str, prefix: &str, exact: bool) -> Result<Watching> {
        let request = Request::Watch {
            namespace: namespace.to_owned(),
            prefix: prefix.to_owned(),
            exact,
        };
        match self.call(request).await? {
            Response::Watching => Ok(Watching { space: self }),
            other => Err(unexpected(other)),
        }
    }

    /// Acquires a lock on `path`, waiting up to `timeout` (forever if `None`).
    /// This connection then belongs to the lock: the node renews its lease
    /// while the connection is open, and releases it when it closes.
    pub async fn lock(
        mut self,
        path: &str,
        mode: LockMode,
        lease: Duration,
        timeout: Option<Duration>,
    ) -> Result<HeldLock> {
        let ms = |d: Duration| d.as_millis().try_into().unwrap_or(u64::MAX);
        let request = Request::Lock {
            path: path.to_owned(),
            mode,
            lease_ms: ms(lease),
            timeout_ms: timeout.map(ms),
        };
        self.send(&request).await?;
        // Waiting in line can take as long as the holders keep the lock.
        let patience = timeout.unwrap_or(Duration::from_secs(365 * 24 * 3600));
        match self
            .receive_within(self.timeout.saturating_add(patience))
            .await?
        {
            Response::Locked { grant, valid_ms } => Ok(HeldLock::new(self, grant, valid_ms)),
            other => Err(unexpected(other)),
        }
    }

    /// Metadata of `path` and the versions its owners hold.
    pub async fn stat(&mut self, path: &str) -> Result<Stat> {
        self.stat_request(path, false).await
    }

    /// The copy of `path` this node holds itself, if any, without asking other
    /// nodes (and so without read repair): how operators and tests see where
    /// replicas are.
    pub async fn stat_local(&mut self, path: &str) -> Result<Stat> {
        self.stat_request(path, true).await
    }

    async fn stat_request(&mut self, path: &str, local: bool) -> Result<Stat> {
        let request = Request::Stat {
            path: path.to_owned(),
            local,
        };
        match self.call(request).await? {
            Response::Object(stat) => Ok(stat),
            other => Err(unexpected(other)),
        }
    }

    /// Removes `path`, optionally only at version `if_version`.
    pub async fn remove(&mut self, path: &str, if_version: Option<u64>) -> Result<Written> {
        self.remove_fenced(path, if_version, None).await
    }

    /// [`Space::remove`] under a write lock: `token` is its fencing token.
    pub async fn remove_fenced(
        &mut self,
        path: &str,
        if_version: Option<u64>,
        token: Option<u64>,
    ) -> Result<Written> {
        match self
            .call(Request::Remove {
                path: path.to_owned(),
                if_version,
                token,
            })
            .await?
        {
            Response::Written(w) => Ok(w),
            other => Err(unexpected(other)),
        }
    }

    /// Writes `to` with the value `from` has now; the bytes do not pass through
    /// this client. `options` gives the new version's type, metadata and
    /// conditions.
    pub async fn copy(&mut self, from: &str, to: &str, options: &PutOptions) -> Result<Written> {
        let request = Request::Copy {
            from: from.to_owned(),
            to: to.to_owned(),
            options: options.clone(),
        };
        match self.call(request).await? {
            Response::Written(w) => Ok(w),
            other => Err(unexpected(other)),
        }
    }

    /// Objects of `namespace` whose names start with `prefix`, in name order.
    pub async fn list(&mut self, namespace: &str, prefix: &str) -> Result<Vec<Stat>> {
        match self
            .call(Request::List {
                namespace: namespace.to_owned(),
                prefix: prefix.to_owned(),
            })
            .await?
        {
            Response::Objects(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a namespace.
    pub async fn create_namespace(&mut self, name: &str) -> Result<()> {
        self.done(Request::CreateNamespace(name.to_owned())).await
    }

    /// Creates a writer-only namespace: only `writers` (PeerIds; the node
    /// this client talks to must be one) may change it, and if `private`
    /// only they may read it.
    pub async fn create_writer_only(
        &mut self,
        name: &str,
        writers: &[String],
        private: bool,
    ) -> Result<()> {
        self.done(Request::CreateWriterOnly {
            name: name.to_owned(),
            writers: writers.to_vec(),
            private,
        })
        .await
    }

    /// Adds and removes writers of a writer-only namespace; its writers now.
    pub async fn change_writers(
        &mut self,
        name: &str,
        grant: &[String],
        revoke: &[String],
    ) -> Result<Vec<String>> {
        let request = Request::ChangeWriters {
            name: name.to_owned(),
            grant: grant.to_vec(),
            revoke: revoke.to_vec(),
        };
        match self.call(request).await? {
            Response::Writers(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }

    /// The writers of a namespace (empty: open to every node).
    pub async fn writers(&mut self, name: &str) -> Result<Vec<String>> {
        match self.call(Request::Writers(name.to_owned())).await? {
            Response::Writers(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }

    /// Removes a namespace and every object in it.
    pub async fn remove_namespace(&mut self, name: &str) -> Result<()> {
        self.done(Request::RemoveNamespace(name.to_owned())).await
    }

    /// The namespaces that exist, `global` included.
    pub async fn namespaces(&mut self) -> Result<Vec<String>> {
        match self.call(Request::ListNamespaces).await? {
            Response::Namespaces(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }

    async fn done(&mut self, request: Request) -> Result<()> {
        match self.call(request).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// A connection delivering watch events.
pub struct Watching {
    space: Space,
}

impl Watching {
    /// The next event (waits as long as it takes).
    pub async fn next(&mut self) -> Result<Event> {
        let answer = read_frame(&mut self.space.stream).await.map_err(lost)?;
        match answer {
            Some(Response::Event(event)) => Ok(event),
            Some(Response::Error(e)) => Err(e),
            Some(other) => Err(unexpected(other)),
            None => Err(SpaceError::Unavailable(
                "the node closed the connection (is it shutting down?)".into(),
            )),
        }
    }
}

pub(super) fn unexpected(response: Response) -> SpaceError {
    let name = format!("{response:?}");
    let name = name.split(['(', ' ', '{']).next().unwrap_or("?").to_owned();
    SpaceError::Unavailable(format!("the node sent an unexpected {name} answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_that_never_answers_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        // Accepts connections and reads, but never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let info = ApiInfo {
            addr: listener.local_addr().unwrap().to_string(),
            token: "t".into(),
            pid: 0,
            http: None,
        };
        std::fs::write(
            dir.path().join(API_FILE),
            serde_json::to_string(&info).unwrap(),
        )
        .unwrap();
        let silent = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink)
                .await
                .ok();
        });

        let space = Space::connect(dir.path()).await.unwrap();
        let err = space
            .with_timeout(Duration::from_millis(200))
            .status()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("did not answer"), "{err}");
        silent.abort();
    }

    #[tokio::test]
    async fn no_api_file_means_no_node_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let err = Space::connect(dir.path()).await.err().unwrap();
        assert!(
            err.to_string().contains("p3ctl node start --data-dir"),
            "{err}"
        );
    }
}
