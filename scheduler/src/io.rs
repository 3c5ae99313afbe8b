//! [`Io`] over the object space, for job code: [`SpaceIo`] through the
//! client (a job's `main`, run by `p3ctl job run`), [`LocalIo`] inside the
//! node (its worker). Job code is synchronous and runs on blocking threads, so
//! each call waits for its async request on the runtime's handle.

use std::path::PathBuf;

use futures::future::try_join_all;
use p3_objectspace::{object::PutOptions, Local, Space};
use tokio::runtime::Handle;

use crate::{
    job::{Io, Result},
    records::{JobId, JobPaths},
};

/// Writes `put_many` sends at once.
const PARALLEL_PUTS: usize = 8;

/// The data area (`data/...`) of one job's namespace, through one connection
/// to the local node. Must be used from a blocking thread, never from async code.
pub struct SpaceIo {
    space: Space,
    data_dir: PathBuf,
    paths: JobPaths,
    runtime: Handle,
}

impl SpaceIo {
    /// Connects to the node on `data_dir` for job `id`.
    pub async fn connect(data_dir: PathBuf, id: &JobId) -> Result<Self> {
        Ok(Self {
            space: Space::connect(&data_dir).await?,
            data_dir,
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
        let data_dir = &self.data_dir;
        self.runtime
            .block_on(try_join_all(lanes.into_iter().map(|lane| async move {
                if lane.is_empty() {
                    return Ok(());
                }
                let mut space = Space::connect(data_dir).await?;
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

/// The data area of one job's namespace, through the node's engine in this
/// process. Must be used from a blocking thread.
pub struct LocalIo {
    space: Local,
    paths: JobPaths,
    runtime: Handle,
}

impl LocalIo {
    /// For job `paths`, on the current runtime.
    pub fn new(space: Local, paths: JobPaths) -> Self {
        Self {
            space,
            paths,
            runtime: Handle::current(),
        }
    }
}

impl Io for LocalIo {
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
        let paths = &self.paths;
        let space = &self.space;
        self.runtime.block_on(try_join_all(
            items
                .chunks(items.len().div_ceil(PARALLEL_PUTS).max(1))
                .map(|lane| async move {
                    for (name, value) in lane {
                        space
                            .put_bytes(&paths.data(name), &PutOptions::default(), value)
                            .await?;
                    }
                    Ok::<_, crate::JobError>(())
                }),
        ))?;
        Ok(())
    }
}
