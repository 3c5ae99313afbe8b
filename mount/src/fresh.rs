//! Keeping what the mount and the kernel cache fresh: a watch on the
//! namespace (events come straight from each key's primary) drops the
//! mount's listings and tells the kernel to forget the names and inodes that
//! changed, so another node's write shows at the next access, not when a
//! cache's time runs out. The TTLs stay as the fallback for a watch that is
//! down (the node restarting).

use std::{
    ffi::OsStr,
    path::PathBuf,
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use fuser::Notifier;
use p3_objectspace::{event::EventKind, Space};

use crate::{
    listings::Listings,
    tree::{parent, Inodes},
};

/// What the kernel is told to forget.
#[derive(Debug, Clone, PartialEq)]
pub enum Forget {
    /// An inode's attributes and cached pages (a directory's: its listing).
    Inode(u64),
    /// The name `.1` in directory inode `.0`.
    Entry(u64, String),
}

/// What to forget when the object `name` (`a/b/c`, or `a/b/` for a
/// directory's marker) changed, given the inodes handed out so far: its
/// inode, its directory's, and a file's name (it may be gone). A
/// directory's name is never forgotten: the kernel would unhash it, and a
/// process whose working directory it is could no longer find its path
/// (`getcwd` fails, and `git init` with it); a directory that vanished
/// elsewhere is found out when its attributes are next asked for.
pub fn to_forget(inodes: &Inodes, name: &str) -> Vec<Forget> {
    let path = name.trim_end_matches('/');
    let is_directory = path.len() != name.len();
    let dir = inodes.known(parent(path));
    let mut forget: Vec<Forget> = inodes.known(path).map(Forget::Inode).into_iter().collect();
    if let (Some(dir), false) = (dir, is_directory) {
        let base = path.rsplit('/').next().unwrap_or(path);
        forget.push(Forget::Entry(dir, base.to_owned()));
    }
    forget.extend(dir.map(Forget::Inode));
    forget
}

/// Watches `namespace` through the node on `data_dir` for as long as the
/// mount lives: every change is forgotten in `listings`, then goes to `changes`
/// (for [`forget_in_kernel`]). Reconnects if the node goes away.
pub async fn watch(
    data_dir: PathBuf,
    namespace: String,
    listings: Arc<Mutex<Listings>>,
    changes: mpsc::Sender<String>,
) {
    loop {
        if let Ok(space) = Space::connect(&data_dir).await {
            if let Ok(mut watching) = space.watch(&namespace, "", false).await {
                while let Ok(event) = watching.next().await {
                    let name = event.name.as_str();
                    {
                        let mut known = listings.lock().unwrap_or_else(|e| e.into_inner());
                        match event.kind {
                            EventKind::Put => known.written(name, event.version),
                            _ => known.forget(name),
                        }
                    }
                    if changes.send(name.to_owned()).is_err() {
                        return; // unmounted
                    }
                }
            }
        }
        // Whatever happened while the watch was down is unknown.
        listings.lock().unwrap_or_else(|e| e.into_inner()).clear();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Tells the kernel to forget what each change touched, until the mount
/// ends. Runs on a thread of its own: a notification waits for the kernel's
/// locks on the directory, which a request the FUSE thread is serving may
/// hold, and that thread must never wait for this one.
pub fn forget_in_kernel(
    notifier: Notifier,
    inodes: Arc<Mutex<Inodes>>,
    changes: mpsc::Receiver<String>,
) {
    while let Ok(name) = changes.recv() {
        let forget = to_forget(&inodes.lock().unwrap_or_else(|e| e.into_inner()), &name);
        for item in forget {
            let sent = match &item {
                Forget::Inode(ino) => notifier.inval_inode(*ino, 0, 0),
                Forget::Entry(dir, name) => notifier.inval_entry(*dir, OsStr::new(name)),
            };
            if let Err(e) = sent {
                // Unmounted, or the kernel has nothing cached for it.
                tracing::debug!("cannot invalidate {item:?}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_forgets_the_file_its_name_and_its_directory_but_no_directory_name() {
        let mut inodes = Inodes::default();
        let (a, b, c) = (
            inodes.number("a"),
            inodes.number("a/b"),
            inodes.number("a/b/c"),
        );
        assert_eq!(
            to_forget(&inodes, "a/b/c"),
            [
                Forget::Inode(c),
                Forget::Entry(b, "c".into()),
                Forget::Inode(b)
            ]
        );
        // A file nobody looked at: its name (it may have been looked up and
        // not found) and its directory's listing and times.
        assert_eq!(
            to_forget(&inodes, "a/b/new"),
            [Forget::Entry(b, "new".into()), Forget::Inode(b)]
        );
        // A directory's marker is the directory: its attributes, never its name.
        assert_eq!(
            to_forget(&inodes, "a/b/"),
            [Forget::Inode(b), Forget::Inode(a)]
        );
        assert_eq!(
            to_forget(&inodes, "top"),
            [
                Forget::Entry(crate::tree::ROOT, "top".into()),
                Forget::Inode(crate::tree::ROOT)
            ]
        );
        assert!(to_forget(&Inodes::default(), "x/y").is_empty());
    }
}
