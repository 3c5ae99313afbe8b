//! The FUSE filesystem: the namespace seen as a tree, and the operations on
//! it ([`P3Fs`]); [`requests`] answers the kernel's requests with them.

mod attributes;
mod directory;
mod requests;
mod xattrs;

use std::{
    collections::HashMap,
    ffi::OsStr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fuser::{FileAttr, FileType, ReplyEmpty};
use libc::c_int;
use p3_objectspace::{
    object::{PutOptions, Stat},
    SpaceError,
};

use crate::{
    client::{local, Client},
    errno::errno,
    handles::{keeping, spool::Upload, Handle, Spool, SpoolFiles},
    listings::{Known, Listings},
    posix::{self, Change},
    tree::{by_name, child, join, parent, prefix, Entry, Inodes},
};

/// The block size files report, which is the size tools write in (cp, tar
/// and stdio take it from `st_blksize`): each write is a round trip through
/// the mount, and at 128 KiB a 1 GiB copy made 8,192 of them. 1 MiB is the
/// most the kernel passes in one write request by default.
const PREFERRED_IO: u32 = 1 << 20;

/// Files of this size and more are read past the kernel's page cache
/// (`FOPEN_DIRECT_IO`), each read answered from the mount's stream straight
/// into the reader's buffer. Through the page cache every byte is copied
/// twice more (into the kernel's pages, then out of them) and the pages are
/// allocated and reclaimed: a 1 GiB `cat` ran at a median 1.03 GB/s that
/// way and 1.64 GB/s past it, here. Smaller files keep the cache, where a
/// program's many small reads cost no request each. The same size from
/// which writes stream: what is large to one is large to the other.
const DIRECT_FROM: u64 = crate::handles::stream::STREAM_FROM;

/// The kernel's `FUSE_DIRECT_IO_ALLOW_MMAP` (init flags, ABI 7.39; not in
/// `fuser`'s constants): a file read with direct I/O can still be mapped
/// shared. Without it such a map fails (ENODEV), so reads keep the page
/// cache.
const FUSE_DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;

/// How long the kernel may trust an attribute or a name without asking again:
/// changes made elsewhere show within this.
const TTL: Duration = Duration::from_secs(1);

/// A namespace as a filesystem.
pub struct P3Fs {
    namespace: String,
    read_only: bool,
    client: Client,
    inodes: Arc<Mutex<Inodes>>,
    listings: Arc<Mutex<Listings>>,
    handles: HashMap<u64, (String, Handle)>,
    spool_files: SpoolFiles,
    next_handle: u64,
    uid: u32,
    gid: u32,
    mounted: SystemTime,
    /// Large files are read with direct I/O (see [`DIRECT_FROM`]): the
    /// kernel allows such files to be mapped.
    direct_reads: bool,
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn text(name: &OsStr) -> Result<&str, c_int> {
    name.to_str().ok_or(libc::EINVAL)
}

impl P3Fs {
    /// A filesystem over `namespace`, through `client`; `listings` and
    /// `inodes` are shared with the watcher that drops what changed (see
    /// [`crate::fresh`]).
    pub fn new(
        namespace: String,
        read_only: bool,
        client: Client,
        listings: Arc<Mutex<Listings>>,
        inodes: Arc<Mutex<Inodes>>,
        spool_files: SpoolFiles,
    ) -> Self {
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Self {
            namespace,
            read_only,
            client,
            inodes,
            listings,
            handles: HashMap::new(),
            spool_files,
            next_handle: 1,
            uid,
            gid,
            mounted: SystemTime::now(),
            direct_reads: false,
        }
    }

    fn object(&self, name: &str) -> String {
        format!("{}/{name}", self.namespace)
    }

    /// What a send calls with the object it stored: forgets what the
    /// listings knew of it (see [`Upload::run`]).
    fn forget_stored(&self) -> impl FnOnce(&str) + Send + 'static {
        let (listings, namespace) = (self.listings.clone(), format!("{}/", self.namespace));
        move |object| {
            if let Some(path) = object.strip_prefix(&namespace) {
                listings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .forget(path);
            }
        }
    }

    fn listings(&self) -> std::sync::MutexGuard<'_, Listings> {
        self.listings.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn inodes(&self) -> std::sync::MutexGuard<'_, Inodes> {
        self.inodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes of wide or unknown extent were made (a directory renamed).
    fn changed(&self) {
        self.listings().clear();
    }

    /// Object `path` (`a/b/` for a directory's marker) was changed here.
    fn changed_object(&self, path: &str) {
        self.listings().forget(path);
    }

    fn attr(
        &self,
        ino: u64,
        kind: FileType,
        size: u64,
        modified: SystemTime,
        created: SystemTime,
    ) -> FileAttr {
        let perm = match (kind, self.read_only) {
            (FileType::Symlink, _) => 0o777,
            (FileType::Directory, false) => 0o755,
            (FileType::Directory, true) => 0o555,
            (_, false) => 0o644,
            (_, true) => 0o444,
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: modified,
            mtime: modified,
            ctime: modified,
            crtime: created,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: PREFERRED_IO,
            flags: 0,
        }
    }

    /// A directory's attributes: its marker's, if it has one (set by
    /// `mkdir`, `chmod`, `chown`, `touch`), else the mount's defaults.
    fn directory_attr(&self, ino: u64, marker: Option<&Stat>) -> FileAttr {
        let Some(marker) = marker else {
            return self.attr(ino, FileType::Directory, 0, self.mounted, self.mounted);
        };
        let attr = self.attr(
            ino,
            FileType::Directory,
            0,
            time(marker.modified_ms),
            time(marker.created_ms),
        );
        self.with_posix(attr, &posix::read(&marker.meta))
    }

    fn file_attr(&self, ino: u64, stat: &Stat) -> FileAttr {
        let attr = self.attr(
            ino,
            kind_of(stat),
            stat.size,
            time(stat.modified_ms),
            time(stat.created_ms),
        );
        self.with_posix(attr, &posix::read(&stat.meta))
    }

    /// `attr` with the attributes a file has set; the change time stays the
    /// version's.
    fn with_posix(&self, mut attr: FileAttr, posix: &Change) -> FileAttr {
        if let Some(mode) = posix.mode {
            let writable = if self.read_only { !0o222 } else { 0o7777 };
            attr.perm = (mode & writable) as u16;
        }
        attr.uid = posix.uid.unwrap_or(attr.uid);
        attr.gid = posix.gid.unwrap_or(attr.gid);
        if let Some(mtime) = posix.mtime {
            attr.mtime = mtime;
            attr.atime = mtime;
        }
        attr.atime = posix.atime.unwrap_or(attr.atime);
        attr
    }

    fn listing(&mut self, dir: &str) -> Result<Arc<Vec<Stat>>, SpaceError> {
        if let Some(list) = self.listings().get(dir) {
            return Ok(list);
        }
        let ticket = self.listings().asking_list(dir);
        let mut list = self.client.list(&self.namespace, &prefix(dir))?;
        by_name(&mut list);
        let list = Arc::new(list);
        self.listings().put(dir, list.clone(), ticket);
        Ok(list)
    }

    /// The spool of a file open for writing, if any: it is what the file is
    /// until it is sent.
    fn writing(&self, path: &str) -> Option<&Spool> {
        self.handles
            .values()
            .find_map(|(name, handle)| match handle {
                Handle::Write(spool) if name == path => Some(spool),
                _ => None,
            })
    }

    /// What `path` is, or `None`.
    fn resolve(&mut self, path: &str) -> Result<Option<Entry>, SpaceError> {
        if path.is_empty() {
            return Ok(Some(Entry::Directory(None)));
        }
        let dir = parent(path).to_owned();
        let base = path.rsplit('/').next().unwrap_or(path);
        let known = self.listings().lookup(&dir, path);
        match known {
            Known::Listed(list) => Ok(child(&dir, base, &list)),
            // Changed since the listing: the object itself says what it is
            // now; only a directory can still be answered by the listing.
            Known::Stale(list) => {
                match self.look_up(path)? {
                    Some(stat) => Ok(Some(Entry::File(stat))),
                    None => Ok(child(&dir, base, &list)
                        .filter(|entry| matches!(entry, Entry::Directory(_)))),
                }
            }
            Known::Nothing if self.listings().is_large(&dir) => self.resolve_alone(path),
            Known::Nothing => {
                let list = self.listing(&dir)?;
                Ok(child(&dir, base, &list))
            }
        }
    }

    /// What `path` is, asked of the node without listing its directory: the
    /// object of that name (a file wins over a directory, as in
    /// [`child`]), else its marker, else whatever is below it.
    fn resolve_alone(&mut self, path: &str) -> Result<Option<Entry>, SpaceError> {
        tracing::debug!(%path, "looked up on its own: its directory's listing is large");
        if let Some(stat) = self.look_up(path)? {
            return Ok(Some(Entry::File(stat)));
        }
        if let Some(stat) = self.look_up(&format!("{path}/"))? {
            return Ok(Some(Entry::Directory(Some(stat))));
        }
        let below = self.client.list(&self.namespace, &prefix(path))?;
        Ok((!below.is_empty()).then_some(Entry::Directory(None)))
    }

    /// Object `name`'s stat, or `None` if it has none: from a recent lookup
    /// of it (see [`Listings::looked_up`]), else from the node.
    fn look_up(&mut self, name: &str) -> Result<Option<Stat>, SpaceError> {
        if let Some(known) = self.listings().looked_up(name) {
            return Ok(known);
        }
        let ticket = self.listings().asking(name);
        let stat = self.client.stat_if_present(&self.object(name))?;
        self.listings().answered(name, ticket, stat.clone());
        Ok(stat)
    }

    /// The flags of a read-only open of `path`: past the page cache if it
    /// is large (see [`DIRECT_FROM`]). A size that cannot be known now
    /// counts as small; the reads then say what went wrong.
    fn read_flags(&mut self, path: &str) -> u32 {
        if !self.direct_reads {
            return 0;
        }
        match self.resolve(path) {
            Ok(Some(Entry::File(stat))) if stat.size >= DIRECT_FROM => {
                fuser::consts::FOPEN_DIRECT_IO
            }
            _ => 0,
        }
    }

    fn attr_of(&mut self, path: &str) -> Result<FileAttr, c_int> {
        let ino = self.inodes().number(path);
        if let Some(spool) = self.writing(path) {
            let size = spool.size().map_err(|e| errno("getattr", path, &e))?;
            let now = SystemTime::now();
            // What the version it becomes will have: see `send`.
            let modified = match &spool.base {
                Some(base) if !spool.new_content => time(base.modified_ms),
                _ => now,
            };
            let posix = posix::read(&spool.options().meta);
            let attr = self.attr(ino, FileType::RegularFile, size, modified, now);
            return Ok(self.with_posix(attr, &posix));
        }
        match self.resolve(path) {
            Ok(Some(Entry::File(stat))) => Ok(self.file_attr(ino, &stat)),
            Ok(Some(Entry::Directory(marker))) => Ok(self.directory_attr(ino, marker.as_ref())),
            Ok(None) => Err(libc::ENOENT),
            Err(e) => Err(errno("getattr", path, &e)),
        }
    }

    fn path_of(&self, ino: u64) -> Result<String, c_int> {
        self.inodes()
            .path(ino)
            .map(str::to_owned)
            .ok_or(libc::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<String, c_int> {
        Ok(join(&self.path_of(parent)?, text(name)?))
    }

    fn writable(&self) -> Result<(), c_int> {
        if self.read_only {
            Err(libc::EROFS)
        } else {
            Ok(())
        }
    }

    fn add_handle(&mut self, path: String, handle: Handle) -> u64 {
        let fh = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(fh, (path, handle));
        fh
    }

    /// What sending handle `fh`'s spool takes, if it has changes to send
    /// (on a close, only if it was written to: see [`Spool::upload`]).
    fn upload_of(&mut self, fh: u64, closing: bool) -> Result<Option<(String, Upload)>, c_int> {
        let Some((path, Handle::Write(_))) = self.handles.get(&fh) else {
            return Ok(None);
        };
        let (path, object) = (path.clone(), self.object(path));
        let Some((_, Handle::Write(spool))) = self.handles.get_mut(&fh) else {
            return Ok(None);
        };
        match spool.upload(object, closing) {
            Ok(upload) => Ok(upload.map(|u| (path, u))),
            Err(e) => Err(errno("write", &path, &e)),
        }
    }

    /// An empty spool for `path` (a new or truncated file whose last
    /// version was `base`), sent while it is written if it is written in
    /// order.
    fn new_spool(&self, path: &str, base: Option<Stat>) -> Result<Spool, c_int> {
        let file = self
            .spool_files
            .take()
            .map_err(|e| errno("open", path, &local(e)))?;
        let spool = Spool::empty(file, base);
        Ok(spool.streamed(self.client.node().clone(), self.object(path)))
    }

    /// Sends handle `fh`'s changes as the file's next version and answers
    /// `reply` once they are stored, from the runtime: the FUSE thread
    /// serves others meanwhile. For `flush` and `fsync`, whose caller waits
    /// for the answer before it does anything else to the file.
    fn send(&mut self, fh: u64, closing: bool, reply: ReplyEmpty) {
        let (path, upload) = match self.upload_of(fh, closing) {
            Ok(Some(found)) => found,
            Ok(None) => return reply.ok(),
            Err(e) => return reply.error(e),
        };
        let (node, stored) = (self.client.node().clone(), self.forget_stored());
        node.runtime().clone().spawn(async move {
            let sent = upload.run(&node, stored).await;
            match sent {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("write", &path, &e)),
            }
        });
    }

    /// Sends handle `fh`'s changes before anything else is served. For
    /// `release`, which the kernel sends without waiting for it: the
    /// program may already be renaming or removing the file, and those
    /// must find what it wrote (a lock file removed unwritten must not
    /// appear afterwards). What is left by then is small: a close has
    /// already sent what was written.
    fn send_now(&mut self, fh: u64) -> Result<(), c_int> {
        let Some((path, upload)) = self.upload_of(fh, false)? else {
            return Ok(());
        };
        let node = self.client.node().clone();
        let sent = node
            .runtime()
            .block_on(upload.run(&node, self.forget_stored()));
        sent.map_err(|e| errno("write", &path, &e))
    }

    /// The spool of `path` with its current contents (for changing a file
    /// that is not open).
    fn spool_of(&mut self, path: &str) -> Result<Spool, c_int> {
        let file = self
            .spool_files
            .take()
            .map_err(|e| errno("open", path, &local(e)))?;
        let spool = Spool::empty(file, None);
        let object = self.object(path);
        let base = self
            .client
            .get_file(&object, &spool.file)
            .map_err(|e| errno("open", path, &e))?;
        Ok(spool.filled_from(base))
    }

    fn send_spool(&mut self, path: &str, spool: Spool, options: PutOptions) -> Result<(), c_int> {
        let object = self.object(path);
        let sent = self.client.put_file(&object, options, &spool.file);
        self.changed_object(path);
        sent.map(drop).map_err(|e| errno("write", path, &e))
    }

    /// Moves object `from` (whose metadata is `stat`): its value, type and
    /// metadata to `to` (copied by the node, no bytes through here), then away
    /// from `from`.
    fn move_object(&mut self, from: &str, stat: &Stat, to: &str) -> Result<(), c_int> {
        let (source, target) = (self.object(from), self.object(to));
        self.client
            .copy(&source, &target, keeping(stat))
            .map_err(|e| errno("rename", to, &e))?;
        self.client
            .remove(&source)
            .map(drop)
            .map_err(|e| errno("rename", from, &e))
    }

    /// Writes a new version of `path` with the same value and changed type or
    /// metadata, unless it changed meanwhile (then EAGAIN).
    fn retag(
        &mut self,
        path: &str,
        change: impl FnOnce(&mut PutOptions) -> Result<(), c_int>,
    ) -> Result<(), c_int> {
        let object = self.object(path);
        let stat = self
            .client
            .stat(&object)
            .map_err(|e| errno("xattr", path, &e))?;
        let mut options = PutOptions {
            if_version: Some(stat.version),
            ..keeping(&stat)
        };
        change(&mut options)?;
        let copied = self.client.copy(&object, &object, options);
        self.changed_object(path);
        copied.map(drop).map_err(|e| errno("xattr", path, &e))
    }

    /// After a rename: inode numbers and open files follow their paths.
    fn renamed(&mut self, from: &str, to: &str) {
        self.inodes().rename(from, to);
        let dir = prefix(from);
        let namespace = self.namespace.clone();
        for (path, handle) in self.handles.values_mut() {
            if path == from {
                *path = to.to_owned();
            } else if let Some(rest) = path.strip_prefix(&dir) {
                *path = format!("{}{rest}", prefix(to));
            } else {
                continue;
            }
            if let Handle::Write(spool) = handle {
                spool.moved(format!("{namespace}/{path}"));
            }
        }
    }

    /// Holds the sends of every file open for writing at `from` or below
    /// it while the guards live (see [`Spool::hold_sends`]).
    fn hold_sends(&self, from: &str) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let dir = prefix(from);
        self.handles
            .values()
            .filter_map(|(path, handle)| match handle {
                Handle::Write(spool) if path == from || path.starts_with(&dir) => {
                    Some(spool.hold_sends())
                }
                _ => None,
            })
            .collect()
    }

    fn rename_paths(&mut self, from: &str, to: &str) -> Result<(), c_int> {
        match self.resolve(from).map_err(|e| errno("rename", from, &e))? {
            // A new file still being written has no object yet: its name
            // moves with its open handles ([`P3Fs::renamed`]) and its object
            // is made under the new name when it is sent. Until then others
            // see what `to` was, as for any file being written.
            None if self.writing(from).is_some() => {
                match self.resolve(to).map_err(|e| errno("rename", to, &e))? {
                    Some(Entry::Directory(_)) => Err(libc::EISDIR),
                    _ => Ok(()),
                }
            }
            None => Err(libc::ENOENT),
            Some(Entry::File(stat)) => {
                if let Some(Entry::Directory(_)) =
                    self.resolve(to).map_err(|e| errno("rename", to, &e))?
                {
                    return Err(libc::EISDIR);
                }
                self.move_object(from, &stat, to)
            }
            Some(Entry::Directory(_)) => {
                let target = self
                    .client
                    .list(&self.namespace, &prefix(to))
                    .map_err(|e| errno("rename", to, &e))?;
                if target.iter().any(|s| !s.path.ends_with(&format!("/{to}/"))) {
                    return Err(libc::ENOTEMPTY);
                }
                let objects = self
                    .client
                    .list(&self.namespace, &prefix(from))
                    .map_err(|e| errno("rename", from, &e))?;
                for stat in objects {
                    let name = stat.path.split_once('/').map_or("", |(_, n)| n);
                    let Some(rest) = name.strip_prefix(&prefix(from)) else {
                        continue;
                    };
                    let (old, new) = (name.to_owned(), format!("{}{rest}", prefix(to)));
                    self.move_object(&old, &stat, &new)?;
                }
                Ok(())
            }
        }
    }
}

/// Replies to a request that returns nothing but success or an errno.
fn empty(reply: ReplyEmpty, result: Result<(), c_int>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// What kind of file an object is.
fn kind_of(stat: &Stat) -> FileType {
    if stat.type_tag == posix::SYMLINK_TYPE {
        FileType::Symlink
    } else {
        FileType::RegularFile
    }
}
