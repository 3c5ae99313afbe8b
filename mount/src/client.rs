//! The mount's way to the space: one connection to the local node, used from
//! the FUSE thread by blocking on the runtime ([`Client`]), re-opened after
//! any failure so a node restart costs a failed call, not a dead mount; and
//! connections for the work done off that thread, reads and sends of whole
//! values ([`Node`]). Values move through files (spools), never whole in
//! memory.

use std::{
    fs::File,
    io::{Read, Seek},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use p3_objectspace::{
    api::{
        protocol::{Written, WHOLE_MAX},
        Piece,
    },
    object::{PutOptions, Stat},
    Space, SpaceError,
};
use tokio::runtime::Handle;

/// How long a call may take before it fails with EIO instead of hanging the
/// shell: reading or writing a large value gets this per frame, not in total.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Result of a call to the space.
pub type Result<T> = std::result::Result<T, SpaceError>;

/// Idle connections kept for the next send: a file closed after each of a
/// few thousand small writes (`tar -x`) should not cost a handshake each.
const IDLE_CONNECTIONS: usize = 8;

/// The node on a data directory, for tasks on the runtime: cheap to clone.
#[derive(Clone)]
pub struct Node {
    runtime: Handle,
    data_dir: PathBuf,
    idle: Arc<Mutex<Vec<Space>>>,
}

impl Node {
    /// The node on `data_dir`; `runtime` runs the calls to it.
    pub fn new(runtime: Handle, data_dir: PathBuf) -> Self {
        Self {
            runtime,
            data_dir,
            idle: Arc::default(),
        }
    }

    /// The runtime the calls run on.
    pub fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// A fresh connection (a reader streams on its own).
    pub async fn connect(&self) -> Result<Space> {
        Ok(Space::connect(&self.data_dir)
            .await?
            .with_timeout(CALL_TIMEOUT))
    }

    /// Writes `path` with the contents of `file` (from its start), on an idle
    /// connection or a new one.
    pub async fn put_file(&self, path: &str, options: &PutOptions, file: &File) -> Result<Written> {
        let size = file.metadata().map_err(local)?.len();
        let mut file = file.try_clone().map_err(local)?;
        file.rewind().map_err(local)?;
        let mut space = self.idle_or_new().await?;
        let written = if size <= WHOLE_MAX as u64 {
            // Read here, from the page cache: tokio's file would make a
            // trip to the blocking pool for every read of a small file.
            let mut value = Vec::with_capacity(size as usize);
            file.read_to_end(&mut value).map_err(local)?;
            space.put_bytes(path, options, &value).await
        } else {
            let reader = tokio::fs::File::from_std(file);
            space.put(path, options, Some(size), reader, |_| {}).await
        };
        self.done_with(space, written.is_ok());
        written
    }

    /// Writes `path` with the pieces sent on `pieces` as they come (see
    /// [`Space::put_pieces`]); nothing is written if they stop before their end.
    pub async fn put_pieces(
        &self,
        path: &str,
        options: &PutOptions,
        pieces: tokio::sync::mpsc::Receiver<Piece>,
    ) -> Result<Written> {
        let mut space = self.idle_or_new().await?;
        let written = space.put_pieces(path, options, pieces).await;
        self.done_with(space, written.is_ok());
        written
    }

    async fn idle_or_new(&self) -> Result<Space> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(space) => Ok(space),
            None => self.connect().await,
        }
    }

    /// Keeps `space` for the next send if its call went well: one that
    /// failed may be broken (or, for an abandoned put, mid-value).
    fn done_with(&self, space: Space, good: bool) {
        if good {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < IDLE_CONNECTIONS {
                idle.push(space);
            }
        }
    }
}

/// A connection to the node on `data_dir`, for blocking callers.
pub struct Client {
    node: Node,
    space: Option<Space>,
}

impl Client {
    /// A client of the node on `data_dir`; connects on first use.
    pub fn new(runtime: Handle, data_dir: PathBuf) -> Self {
        Self {
            node: Node::new(runtime, data_dir),
            space: None,
        }
    }

    /// The node, for work done off the caller's thread.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Opens a fresh connection.
    pub fn connect(&self) -> Result<Space> {
        self.node.runtime.block_on(self.node.connect())
    }

    /// Runs one call on the shared connection; a connection that failed is
    /// dropped so the next call starts clean.
    fn call<T>(
        &mut self,
        f: impl for<'a> FnOnce(
            &'a mut Space,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>,
        >,
    ) -> Result<T> {
        if self.space.is_none() {
            self.space = Some(self.connect()?);
        }
        let Some(space) = self.space.as_mut() else {
            return Err(SpaceError::Unavailable("no connection".into()));
        };
        let result = self.node.runtime.block_on(f(space));
        if matches!(
            result,
            Err(SpaceError::Unavailable(_)
                | SpaceError::OutcomeUnknown(_)
                | SpaceError::TimedOut(_))
        ) {
            self.space = None;
        }
        result
    }

    /// Metadata of `path` (`NS/NAME`).
    pub fn stat(&mut self, path: &str) -> Result<Stat> {
        let path = path.to_owned();
        self.call(move |s| Box::pin(async move { s.stat(&path).await }))
    }

    /// Metadata of `path`, or `None` if there is no such object.
    pub fn stat_if_present(&mut self, path: &str) -> Result<Option<Stat>> {
        match self.stat(path) {
            Ok(stat) => Ok(Some(stat)),
            Err(SpaceError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Objects of `namespace` whose names start with `prefix`.
    pub fn list(&mut self, namespace: &str, prefix: &str) -> Result<Vec<Stat>> {
        let (ns, prefix) = (namespace.to_owned(), prefix.to_owned());
        self.call(move |s| Box::pin(async move { s.list(&ns, &prefix).await }))
    }

    /// Removes `path`.
    pub fn remove(&mut self, path: &str) -> Result<Written> {
        let path = path.to_owned();
        self.call(move |s| Box::pin(async move { s.remove(&path, None).await }))
    }

    /// Writes `path` with the contents of `file` (from its start).
    pub fn put_file(&mut self, path: &str, options: PutOptions, file: &File) -> Result<Written> {
        self.node
            .runtime
            .block_on(self.node.put_file(path, &options, file))
    }

    /// Writes `to` with the value of `from` (the node copies; no bytes here).
    pub fn copy(&mut self, from: &str, to: &str, options: PutOptions) -> Result<Written> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.call(move |s| Box::pin(async move { s.copy(&from, &to, &options).await }))
    }

    /// Writes a small value (a directory marker, a symbolic link's target).
    pub fn put_bytes(&mut self, path: &str, options: PutOptions, value: &[u8]) -> Result<Written> {
        let (path, value) = (path.to_owned(), value.to_owned());
        self.call(move |s| Box::pin(async move { s.put_bytes(&path, &options, &value).await }))
    }

    /// Reads a small value whole (a symbolic link's target) with its metadata.
    pub fn get_bytes(&mut self, path: &str) -> Result<(Stat, Vec<u8>)> {
        let path = path.to_owned();
        self.call(move |s| Box::pin(async move { s.get_bytes(&path).await }))
    }

    /// Reads `path` into `file` (replacing its contents); returns its metadata.
    pub fn get_file(&mut self, path: &str, file: &File) -> Result<Stat> {
        file.set_len(0).map_err(local)?;
        let mut file = file.try_clone().map_err(local)?;
        file.rewind().map_err(local)?;
        let path = path.to_owned();
        self.call(move |s| {
            Box::pin(async move {
                let mut writer = tokio::fs::File::from_std(file);
                let stat = s.get(&path, &mut writer, |_, _| {}).await?;
                tokio::io::AsyncWriteExt::flush(&mut writer)
                    .await
                    .map_err(local)?;
                Ok(stat)
            })
        })
    }
}

/// A failure of the mount's own disk (its spool files).
pub fn local(e: std::io::Error) -> SpaceError {
    SpaceError::Storage(format!("spool file: {e}"))
}
