//! # p3-mount — a namespace as a directory
//!
//! Mounts one namespace through FUSE so ordinary tools read and write it:
//! object names with `/` are paths and directories are their prefixes
//! ([`tree`]); reads stream values from the node, writes collect in a spool
//! file and become the object's next version, whole, when the file is closed
//! or fsync'd ([`handles`]); both run on the runtime and answer the kernel
//! from there, so a large value being read or sent holds up no other
//! request (names and attributes are served in order, one request each); type and metadata are extended attributes
//! (`user.p3.type`, `user.p3.meta.KEY`); mode, owner and times are kept as
//! metadata too, and symbolic links are objects of their own type
//! ([`posix`]). Changes made elsewhere show at the next access: a watch on
//! the namespace drops the mount's listings and the kernel's cached names,
//! attributes and pages of what changed ([`fresh`]).
//!
//! What it must never do: hold a whole value in memory; leave a half-written
//! file in the space; hang a program forever on a node that stopped answering
//! (every call has a deadline, then EIO with the reason in the log).

pub mod client;
pub mod errno;
pub mod fresh;
pub mod fs;
pub mod handles;
pub mod listings;
pub mod posix;
pub mod tree;

use std::{
    path::PathBuf,
    sync::{mpsc, Arc, Mutex},
};

use fuser::{BackgroundSession, MountOption};
use p3_objectspace::SpaceError;
use tokio::{runtime::Handle, task::JoinHandle};

use crate::{client::Client, fs::P3Fs, handles::SpoolFiles, listings::Listings, tree::Inodes};

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
    let inodes = Arc::new(Mutex::new(Inodes::default()));
    let spool_files = SpoolFiles::start().map_err(|e| MountError::MountPoint {
        path: config.mountpoint.clone(),
        reason: format!("cannot start the spool file helpers: {e}"),
    })?;
    let fs = P3Fs::new(
        config.namespace.clone(),
        config.read_only,
        client,
        listings.clone(),
        inodes.clone(),
        spool_files,
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
    let (changes, changed) = mpsc::channel();
    let notifier = session.notifier();
    std::thread::Builder::new()
        .name("p3-mount-invalidate".into())
        .spawn(move || fresh::forget_in_kernel(notifier, inodes, changed))
        .map_err(|e| MountError::MountPoint {
            path: config.mountpoint.clone(),
            reason: format!("cannot start a thread: {e}"),
        })?;
    let watcher = runtime.spawn(fresh::watch(
        config.data_dir.clone(),
        config.namespace.clone(),
        listings,
        changes,
    ));
    Ok(Mounted { session, watcher })
}
