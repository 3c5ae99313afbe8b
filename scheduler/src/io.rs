//! [`Io`] over the object space, for job code running on a worker (or `main`
//! on the submitter). Job code is synchronous and runs on blocking threads, so
//! each call waits for its async request on the runtime's handle.

use std::path::PathBuf;

use futures::future::try_join_all;
use p3_objectspace::{object::PutOptions, Space};
use tokio::runtime::Handle;

use crate::job::{Io, Result};

/// Writes `put_many` sends at once.
const PARALLEL_PUTS: usize = 8;

/// The data area (`data/...`) of one job's namespace, through one connection
/// to the local node. Must be used from a blocking thread, never from async code.
pub struct SpaceIo {
    space: Space,
    data_dir: PathBuf,
    namespace: String,
    runtime: Handle,
}

impl SpaceIo {
    /// Connects to the node on `data_dir` for the job namespace `namespace`.
    pub async fn connect(data_dir: PathBuf, namespace: String) -> Result<Self> {
        Ok(Self {
            space: Space::connect(&data_dir).await?,
            data_dir,
            namespace,
            runtime: Handle::current(),
        })
    }

    fn path(&self, name: &str) -> String {
        format!("{}/data/{name}", self.namespace)
    }
}

impl Io for SpaceIo {
    fn get(&mut self, name: &str) -> Result<Vec<u8>> {
        let path = self.path(name);
        let (_, value) = self.runtime.block_on(self.space.get_bytes(&path))?;
        Ok(value)
    }

    fn put(&mut self, name: &str, value: &[u8]) -> Result<()> {
        let path = self.path(name);
        self.runtime
            .block_on(self.space.put_bytes(&path, &PutOptions::default(), value))?;
        Ok(())
    }

    fn put_many(&mut self, items: Vec<(String, Vec<u8>)>) -> Result<()> {
        let mut lanes: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); PARALLEL_PUTS];
        for (i, (name, value)) in items.into_iter().enumerate() {
            lanes[i % PARALLEL_PUTS].push((self.path(&name), value));
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
