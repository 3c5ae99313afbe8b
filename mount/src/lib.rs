//! # p3-mount — a namespace as a directory
//!
//! Mounts one namespace through FUSE so ordinary tools read and write it:
//! object names with `/` are paths and directories are their prefixes
//! ([`tree`]); reads stream values from the node, writes collect in a spool
//! file and become the object's next version, whole, when the file is closed
//! or fsync'd ([`handles`]); type and metadata are extended attributes
//! (`user.p3.type`, `user.p3.meta.KEY`); mode, owner and times are kept as
//! metadata too, and symbolic links are objects of their own type ([`posix`]). Changes made elsewhere show up within
//! a second: the kernel trusts what it was told for one second, and a watch
//! on the namespace empties the mount's own caches on every change.
//!
//! What it must never do: hold a whole value in memory; leave a half-written
//! file in the space; hang a program forever on a node that stopped answering
//! (every call has a deadline, then EIO with the reason in the log).

pub mod client;
pub mod errno;
pub mod fs;
pub mod handles;
pub mod posix;
pub mod tree;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use fuser::{BackgroundSession, MountOption};
use p3_objectspace::{Space, SpaceError};
use tokio::{runtime::Handle, task::JoinHandle};

use crate::{client::Client, fs::P3Fs, tree::Listings};

/// Why a mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The node refused or is not there.
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// The mount point is unusable.
    #[error("cannot mount on {path}: {reason}")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// What to mount where.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// The namespace.
    pub namespace: String,
    /// The data directory of the node to go through.
    pub data_dir: PathBuf,
    /// Where.
    pub mountpoint: PathBuf,
    /// Refuse every change (EROFS).
    pub read_only: bool,
}

/// A mounted namespace; dropping it unmounts.
pub struct Mounted {
    session: BackgroundSession,
    watcher: JoinHandle<()>,
}

impl Mounted {
    /// Whether it was unmounted from outside (`p3ctl umount`, `fusermount -u`).
    pub fn is_unmounted(&self) -> bool {
        self.session.guard.is_finished()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Mounts `config.namespace` at `config.mountpoint`; `runtime` runs the calls
/// to the node. Fails at once if the node or the namespace is not there.
pub fn mount(runtime: Handle, config: &MountConfig) -> Result<Mounted, MountError> {
    if !config.mountpoint.is_dir() {
        return Err(MountError::MountPoint {
            path: config.mountpoint.clone(),
            reason: "not a directory".into(),
        });
    }
    let client = Client::new(runtime.clone(), config.data_dir.clone());
    let mut space = client.connect()?;
    let namespaces = runtime.block_on(space.namespaces())?;
    if !namespaces.contains(&config.namespace) {
        return Err(SpaceError::NoSuchNamespace(config.namespace.clone()).into());
    }
    let listings = Arc::new(Mutex::new(Listings::default()));
    let fs = P3Fs::new(
        config.namespace.clone(),
        config.read_only,
        client,
        listings.clone(),
    );
    let mut options = vec![
        MountOption::FSName(format!("p3:{}", config.namespace)),
        MountOption::Subtype("p3".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        if config.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        // fusermount unmounts it even if this process is killed; it needs
        // allow_root, which for root changes nothing else.
        options.extend([MountOption::AutoUnmount, MountOption::AllowRoot]);
    }
    let session = fuser::spawn_mount2(fs, &config.mountpoint, &options).map_err(|e| {
        MountError::MountPoint {
            path: config.mountpoint.clone(),
            reason: e.to_string(),
        }
    })?;
    let watcher = runtime.spawn(invalidate_on_change(
        config.data_dir.clone(),
        config.namespace.clone(),
        listings,
    ));
    Ok(Mounted { session, watcher })
}

/// Empties the listing cache whenever an object of the namespace changes
/// (watched through the node); reconnects if the node goes away.
async fn invalidate_on_change(
    data_dir: PathBuf,
    namespace: String,
    listings: Arc<Mutex<Listings>>,
) {
    loop {
        if let Ok(space) = Space::connect(&data_dir).await {
            if let Ok(mut watching) = space.watch(&namespace, "", false).await {
                while watching.next().await.is_ok() {
                    listings.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
