//! [`Objects`]: the few object operations the job conventions shared by the
//! submitter and the workers need ([`crate::control`]), over either way into
//! a node: the [`Space`] client from another process (`p3ctl job ...`) or
//! [`Local`] inside the node (its worker, without a socket).

use futures::{StreamExt, TryStreamExt};
use std::{future::Future, time::Duration};

/// Reads a [`Space`] client makes at once for [`Objects::get_all`].
const PARALLEL: usize = 8;
/// Writes it makes at once for [`Objects::put_all`]: a spread job's parts,
/// each ordered by its own key's primary, so they wait on different disks
/// and locks; in two rounds of 8, 16 parts took 40-50 ms on 16 nodes, half
/// of a job's start.
const WRITES_AT_ONCE: usize = 32;

use p3_objectspace::{
    api::protocol::{Wait, Written},
    object::{PutOptions, Stat},
    Local, Space, SpaceError,
};

type Result<T> = std::result::Result<T, SpaceError>;

/// Object operations by path, as both the client and the in-process handle
/// offer them.
pub trait Objects: Send {
    /// Writes a small value held in memory.
    fn put_bytes(
        &mut self,
        path: &str,
        options: &PutOptions,
        bytes: &[u8],
    ) -> impl Future<Output = Result<Written>> + Send;
    /// Writes several small values at once; the first failure is returned.
    fn put_all(
        &mut self,
        items: &[(String, PutOptions, Vec<u8>)],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Reads a whole (small) value.
    fn get_bytes(&mut self, path: &str) -> impl Future<Output = Result<(Stat, Vec<u8>)>> + Send;
    /// Reads several whole (small) values, in the order of `paths`.
    fn get_all(&mut self, paths: &[String]) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;
    /// Waits up to `wait` for a version above `after`; `Ok` once there is one.
    fn await_newer(
        &mut self,
        path: &str,
        after: u64,
        wait: Duration,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Objects of `namespace` whose names start with `prefix`.
    fn list(
        &mut self,
        namespace: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<Stat>>> + Send;
    /// Creates a namespace.
    fn create_namespace(&mut self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Removes a namespace with everything in it.
    fn remove_namespace(&mut self, name: &str) -> impl Future<Output = Result<()>> + Send;
}

impl Objects for Space {
    async fn put_bytes(
        &mut self,
        path: &str,
        options: &PutOptions,
        bytes: &[u8],
    ) -> Result<Written> {
        Space::put_bytes(self, path, options, bytes).await
    }

    async fn put_all(&mut self, items: &[(String, PutOptions, Vec<u8>)]) -> Result<()> {
        // As `get_all`: a channel of this connection per write, a few at once.
        let this = &*self;
        futures::stream::iter(items.to_vec())
            .map(|(path, options, bytes)| async move {
                let mut channel = this.channel().await?;
                channel.put_bytes(&path, &options, &bytes).await.map(drop)
            })
            .buffer_unordered(WRITES_AT_ONCE)
            .try_collect()
            .await
    }

    async fn get_bytes(&mut self, path: &str) -> Result<(Stat, Vec<u8>)> {
        Space::get_bytes(self, path).await
    }

    async fn get_all(&mut self, paths: &[String]) -> Result<Vec<Vec<u8>>> {
        // A channel answers one request at a time: each read gets its own
        // channel of this connection, a few at once.
        let this = &*self;
        futures::stream::iter(paths.to_vec())
            .map(|path| async move {
                let mut channel = this.channel().await?;
                Ok::<_, SpaceError>(channel.get_bytes(&path).await?.1)
            })
            .buffered(PARALLEL)
            .try_collect()
            .await
    }

    async fn await_newer(&mut self, path: &str, after: u64, wait: Duration) -> Result<()> {
        let wait = Wait {
            ms: wait.as_millis() as u64,
            after_version: Some(after),
        };
        self.get_waiting(path, Some(wait), tokio::io::sink(), |_, _| {})
            .await
            .map(drop)
    }

    async fn list(&mut self, namespace: &str, prefix: &str) -> Result<Vec<Stat>> {
        Space::list(self, namespace, prefix).await
    }

    async fn create_namespace(&mut self, name: &str) -> Result<()> {
        Space::create_namespace(self, name).await
    }

    async fn remove_namespace(&mut self, name: &str) -> Result<()> {
        Space::remove_namespace(self, name).await
    }
}

impl Objects for Local {
    async fn put_bytes(
        &mut self,
        path: &str,
        options: &PutOptions,
        bytes: &[u8],
    ) -> Result<Written> {
        Local::put_bytes(self, path, options, bytes).await
    }

    async fn put_all(&mut self, items: &[(String, PutOptions, Vec<u8>)]) -> Result<()> {
        let this = &*self;
        futures::future::try_join_all(
            items
                .iter()
                .map(|(path, options, bytes)| Local::put_bytes(this, path, options, bytes)),
        )
        .await
        .map(drop)
    }

    async fn get_bytes(&mut self, path: &str) -> Result<(Stat, Vec<u8>)> {
        Local::get_bytes(self, path).await
    }

    async fn get_all(&mut self, paths: &[String]) -> Result<Vec<Vec<u8>>> {
        let this = &*self;
        futures::future::try_join_all(
            paths
                .iter()
                .map(|path| async move { Ok(Local::get_bytes(this, path).await?.1) }),
        )
        .await
    }

    async fn await_newer(&mut self, path: &str, after: u64, wait: Duration) -> Result<()> {
        self.get_waiting(path, Some(after), wait).await.map(drop)
    }

    async fn list(&mut self, namespace: &str, prefix: &str) -> Result<Vec<Stat>> {
        Local::list(self, namespace, prefix).await
    }

    async fn create_namespace(&mut self, name: &str) -> Result<()> {
        Local::create_namespace(self, name).await
    }

    async fn remove_namespace(&mut self, name: &str) -> Result<()> {
        Local::remove_namespace(self, name).await
    }
}
