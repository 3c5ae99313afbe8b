//! [`Io`] over the object space, for job code: [`SpaceIo`] through the
//! client (a job's `main`, run by `p3ctl job run`), [`LocalIo`] inside the
//! node (its worker). Job code is synchronous and runs on blocking threads, so
//! each call waits for its async request on the runtime's handle.

use futures::future::try_join_all;
use p3_objectspace::{object::PutOptions, Local, Space};
use tokio::{runtime::Handle, task::JoinHandle};

use crate::{
    job::{Io, Result},
    records::{JobId, JobPaths},
};

/// Writes `put_many` sends at once.
const PARALLEL_PUTS: usize = 8;

/// The data area (`data/...`) of one job's namespace, through channels of a
/// connection to the local node. Must be used from a blocking thread, never
/// from async code.
pub struct SpaceIo {
    space: Space,
    paths: JobPaths,
    runtime: Handle,
}

impl SpaceIo {
    /// The data area of job `id`, on a channel of `space`'s connection.
    pub async fn open(space: &Space, id: &JobId) -> Result<Self> {
        Ok(Self {
            space: space.channel().await?,
            paths: JobPaths::new(id),
            runtime: Handle::current(),
        })
    }
}

impl Io for SpaceIo {
    fn get(&mut self, name: &str) -> Result<Vec<u8>> {
        let path = self.paths.data(name);
        let (_, value) = self.runtime.block_on(self.space.get_bytes(&path))?;
        Ok(value)
    }

    fn put(&mut self, name: &str, value: &[u8]) -> Result<()> {
        let path = self.paths.data(name);
        self.runtime
            .block_on(self.space.put_bytes(&path, &PutOptions::default(), value))?;
        Ok(())
    }

    fn put_many(&mut self, items: Vec<(String, Vec<u8>)>) -> Result<()> {
        let mut lanes: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); PARALLEL_PUTS];
        for (i, (name, value)) in items.into_iter().enumerate() {
            lanes[i % PARALLEL_PUTS].push((self.paths.data(&name), value));
        }
        let space = &self.space;
        self.runtime
            .block_on(try_join_all(lanes.into_iter().map(|lane| async move {
                if lane.is_empty() {
                    return Ok(());
                }
                let mut space = space.channel().await?;
                for (path, value) in lane {
                    space
                        .put_bytes(&path, &PutOptions::default(), &value)
                        .await?;
                }
                Ok::<_, crate::JobError>(())
            })))?;
        Ok(())
    }
}

/// Writes a [`LocalIo`] keeps in flight before a `put` waits for the oldest.
const WRITE_BEHIND: usize = 4;
/// Reads a [`LocalIo`] starts ahead of need ([`Io::prefetch`]); an older
/// one is dropped for a newer.
const READ_AHEAD: usize = 2;

/// The data area of one job's namespace, through the node's engine in this
/// process, writing behind (see [`Io`]). Must be used from a blocking thread,
/// except [`LocalIo::flush`].
pub struct LocalIo {
    space: Local,
    paths: JobPaths,
    runtime: Handle,
    /// Writes not yet acknowledged, oldest first, with their names.
    pending: std::collections::VecDeque<(String, JoinHandle<Result<()>>)>,
    /// Reads started by [`Io::prefetch`], oldest first, with their names.
    ahead: std::collections::VecDeque<(String, JoinHandle<Result<Vec<u8>>>)>,
}

impl LocalIo {
    /// For job `paths`, on the current runtime.
    pub fn new(space: Local, paths: JobPaths) -> Self {
        Self {
            space,
            paths,
            runtime: Handle::current(),
            pending: Default::default(),
            ahead: Default::default(),
        }
    }

    /// Waits until every write made so far is acknowledged; the first
    /// failure, if any.
    pub async fn flush(&mut self) -> Result<()> {
        let mut outcome = Ok(());
        while let Some((_, write)) = self.pending.pop_front() {
            let done = write
                .await
                .map_err(|e| crate::JobError::Failed(format!("a write panicked: {e}")))
                .and_then(|written| written);
            if outcome.is_ok() {
                outcome = done;
            }
        }
        outcome
    }

    fn flush_blocking(&mut self) -> Result<()> {
        let runtime = self.runtime.clone();
        runtime.block_on(self.flush())
    }
}

impl Io for LocalIo {
    fn get(&mut self, name: &str) -> Result<Vec<u8>> {
        // Only a write of this name must land first: a slice that reads its
        // input while the previous slice's output travels keeps computing.
        if self.pending.iter().any(|(written, _)| written == name) {
            self.flush_blocking()?;
        }
        if let Some(i) = self.ahead.iter().position(|(read, _)| read == name) {
            if let Some((_, read)) = self.ahead.remove(i) {
                // A read ahead that failed is made again, and fails here.
                if let Ok(Ok(value)) = self.runtime.block_on(read) {
                    return Ok(value);
                }
            }
        }
        let path = self.paths.data(name);
        let (_, value) = self.runtime.block_on(self.space.get_bytes(&path))?;
        Ok(value)
    }

    fn put(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.ahead.retain(|(read, ahead)| {
            let keep = read != name;
            if !keep {
                ahead.abort();
            }
            keep
        });
        if self.pending.len() >= WRITE_BEHIND {
            if let Some((_, oldest)) = self.pending.pop_front() {
                self.runtime
                    .block_on(oldest)
                    .map_err(|e| crate::JobError::Failed(format!("a write panicked: {e}")))??;
            }
        }
        let (space, path, value) = (self.space.clone(), self.paths.data(name), value.to_vec());
        let write = self.runtime.spawn(async move {
            space
                .put_bytes(&path, &PutOptions::default(), &value)
                .await?;
            Ok(())
        });
        self.pending.push_back((name.to_owned(), write));
        Ok(())
    }

    fn put_many(&mut self, items: Vec<(String, Vec<u8>)>) -> Result<()> {
        for (name, value) in items {
            self.put(&name, &value)?;
        }
        Ok(())
    }

    fn prefetch(&mut self, name: &str) {
        // A name being written is read after its write lands, by `get`.
        if self.ahead.iter().any(|(read, _)| read == name)
            || self.pending.iter().any(|(written, _)| written == name)
        {
            return;
        }
        if self.ahead.len() >= READ_AHEAD {
            if let Some((_, oldest)) = self.ahead.pop_front() {
                oldest.abort();
            }
        }
        let (space, path) = (self.space.clone(), self.paths.data(name));
        let read = self.runtime.spawn(async move {
            let (_, value) = space.get_bytes(&path).await?;
            Ok(value)
        });
        self.ahead.push_back((name.to_owned(), read));
    }
}

impl Drop for LocalIo {
    /// A task that ends (or is stolen from) leaves no read ahead running.
    fn drop(&mut self) {
        for (_, read) in &self.ahead {
            read.abort();
        }
    }
}
