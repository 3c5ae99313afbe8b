//! [`Space`]: the client of a node's local API, used by `p3ctl` and by Rust
//! programs (the scheduler, the mount) that work with the object space.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use p3_dht::PeerInfo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

use super::{
    held::HeldLock,
    mux::{self, Channel, Opener},
    protocol::{Hello, Request, Response, SpaceStatus, Wait, Written, DATA_FRAME},
    read_frame, write_frame, ApiInfo, FrameError, API_FILE,
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

/// A piece of a value sent while it is produced ([`Space::put_pieces`]).
#[derive(Debug)]
pub enum Piece {
    /// The value's next bytes.
    Data(Vec<u8>),
    /// The value is complete; its version takes these options.
    End(PutOptions),
}

/// A conversation with the node of a data directory: one request at a time.
/// [`Space::channel`] opens another over the same connection, for requests
/// that run concurrently.
pub struct Space {
    stream: Channel,
    opener: Opener,
    timeout: Duration,
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

    async fn send(&mut self, request: &Request) -> Result<()> {
        write_frame(&mut self.stream, request).await.map_err(lost)
    }

    /// Reads the next answer; a [`Response::Error`] becomes the error.
    async fn receive(&mut self) -> Result<Response> {
        self.receive_within(self.timeout).await
    }

    async fn receive_within(&mut self, deadline: Duration) -> Result<Response> {
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

    /// Writes `path` (`NS/NAME`) with the bytes of `value`, streamed in frames so
    /// a value of any size passes without being held in memory. `size`, if
    /// known, lets the node refuse an oversized value before it is sent.
    /// `progress` is called with the bytes sent so far.
    pub async fn put(
        &mut self,
        path: &str,
        options: &PutOptions,
        size: Option<u64>,
        mut value: impl AsyncRead + Unpin,
        mut progress: impl FnMut(u64),
    ) -> Result<Written> {
        self.begin_put(path, options, size).await?;
        let mut buf = vec![0u8; DATA_FRAME];
        let mut sent = 0u64;
        loop {
            let n = value
                .read(&mut buf)
                .await
                .map_err(|e| SpaceError::Invalid(format!("cannot read the value: {e}")))?;
            if n == 0 {
                break;
            }
            self.send(&Request::Data(buf[..n].to_vec())).await?;
            sent += n as u64;
            progress(sent);
        }
        self.send(&Request::End).await?;
        self.written(sent).await
    }

    /// Writes `path` with a value sent while it is produced: the bytes of
    /// every [`Piece::Data`] from `pieces`, until a [`Piece::End`] gives the
    /// options the version takes (those of the start may be out of date by
    /// then). When `pieces` closes before its end, nothing is written and
    /// this fails; the value is left unfinished on this connection, so the
    /// caller must drop it.
    pub async fn put_pieces(
        &mut self,
        path: &str,
        options: &PutOptions,
        mut pieces: tokio::sync::mpsc::Receiver<Piece>,
    ) -> Result<Written> {
        self.begin_put(path, options, None).await?;
        let mut sent = 0u64;
        let last = loop {
            match pieces.recv().await {
                Some(Piece::Data(bytes)) => {
                    sent += bytes.len() as u64;
                    if bytes.len() <= DATA_FRAME {
                        self.send(&Request::Data(bytes)).await?;
                    } else {
                        for frame in bytes.chunks(DATA_FRAME) {
                            self.send(&Request::Data(frame.to_vec())).await?;
                        }
                    }
                }
                Some(Piece::End(last)) => break last,
                None => {
                    return Err(SpaceError::Invalid(format!(
                        "the value of {path} was abandoned before its end; nothing was written"
                    )))
                }
            }
        };
        self.send(&Request::EndWith(last)).await?;
        self.written(sent).await
    }

    /// Asks to write `path`; the value's frames may follow once this returns.
    async fn begin_put(
        &mut self,
        path: &str,
        options: &PutOptions,
        size: Option<u64>,
    ) -> Result<()> {
        let request = Request::Put {
            path: path.to_owned(),
            options: options.clone(),
            size,
        };
        match self.call(request).await? {
            Response::Ready => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The answer to a put of `sent` bytes.
    async fn written(&mut self, sent: u64) -> Result<Written> {
        // The node answers once every owner holds the value: two transfers of it
        // on top of the usual deadline, at no less than 8 MiB/s.
        let deadline = self.timeout + Duration::from_secs(sent.saturating_mul(2) / (8 << 20));
        match self.receive_within(deadline).await? {
            Response::Written(w) => Ok(w),
            other => Err(unexpected(other)),
        }
    }

    /// Writes a value held in memory.
    pub async fn put_bytes(
        &mut self,
        path: &str,
        options: &PutOptions,
        value: &[u8],
    ) -> Result<Written> {
        self.put(path, options, Some(value.len() as u64), value, |_| {})
            .await
    }

    /// Reads `path` into `out`, streaming; returns its metadata. The bytes are
    /// verified against the object's hash by the node; `progress` gets the bytes
    /// received so far.
    pub async fn get(
        &mut self,
        path: &str,
        out: impl AsyncWrite + Unpin,
        progress: impl FnMut(&Stat, u64),
    ) -> Result<Stat> {
        self.get_waiting(path, None, out, progress).await
    }

    /// [`Space::get`] that first waits, up to `wait`, until the object exists
    /// (with a version above [`Wait::after_version`], if given). The node waits
    /// for the write to happen rather than asking again and again.
    pub async fn get_waiting(
        &mut self,
        path: &str,
        wait: Option<Wait>,
        out: impl AsyncWrite + Unpin,
        progress: impl FnMut(&Stat, u64),
    ) -> Result<Stat> {
        let patience = wait.map_or(Duration::ZERO, |w| Duration::from_millis(w.ms));
        let request = Request::Get {
            path: path.to_owned(),
            wait,
        };
        self.receive_value(request, patience, out, progress).await
    }

    /// Takes `path` (reads and removes it in one step; of concurrent takers
    /// exactly one gets it), waiting up to `wait` for it to exist, and writes its
    /// value to `out`.
    pub async fn take(
        &mut self,
        path: &str,
        wait: Option<Duration>,
        out: impl AsyncWrite + Unpin,
        progress: impl FnMut(&Stat, u64),
    ) -> Result<Stat> {
        let request = Request::Take {
            path: path.to_owned(),
            wait_ms: wait.map(|w| w.as_millis().try_into().unwrap_or(u64::MAX)),
        };
        self.receive_value(request, wait.unwrap_or_default(), out, progress)
            .await
    }

    /// Takes any one object of `namespace` matching `query`, waiting up to
    /// `wait` for one, and writes its value to `out`.
    pub async fn take_match(
        &mut self,
        namespace: &str,
        query: &str,
        wait: Option<Duration>,
        out: impl AsyncWrite + Unpin,
        progress: impl FnMut(&Stat, u64),
    ) -> Result<Stat> {
        let request = Request::TakeMatch {
            namespace: namespace.to_owned(),
            query: query.to_owned(),
            wait_ms: wait.map(|w| w.as_millis().try_into().unwrap_or(u64::MAX)),
        };
        self.receive_value(request, wait.unwrap_or_default(), out, progress)
            .await
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

    /// Sends a request answered by a value and streams the value to `out`.
    async fn receive_value(
        &mut self,
        request: Request,
        patience: Duration,
        mut out: impl AsyncWrite + Unpin,
        mut progress: impl FnMut(&Stat, u64),
    ) -> Result<Stat> {
        self.send(&request).await?;
        let stat = match self.receive_within(self.timeout + patience).await? {
            Response::Object(stat) => stat,
            other => return Err(unexpected(other)),
        };
        let mut received = 0u64;
        loop {
            match self.receive().await? {
                Response::Data(bytes) => {
                    out.write_all(&bytes)
                        .await
                        .map_err(|e| SpaceError::Invalid(format!("cannot write the value: {e}")))?;
                    received += bytes.len() as u64;
                    progress(&stat, received);
                }
                Response::End => break,
                other => return Err(unexpected(other)),
            }
        }
        out.flush()
            .await
            .map_err(|e| SpaceError::Invalid(format!("cannot write the value: {e}")))?;
        if received != stat.size {
            return Err(SpaceError::Corrupt(format!(
                "received {received} of {} bytes",
                stat.size
            )));
        }
        Ok(stat)
    }

    /// Reads a value into memory.
    pub async fn get_bytes(&mut self, path: &str) -> Result<(Stat, Vec<u8>)> {
        let mut out = Vec::new();
        let stat = self.get(path, &mut out, |_, _| {}).await?;
        Ok((stat, out))
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
