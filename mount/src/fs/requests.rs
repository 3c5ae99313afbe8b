//! The kernel's requests, each answered from [`P3Fs`]'s operations: the
//! `fuser::Filesystem` implementation.

use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::Path, time::SystemTime};

use fuser::{
    consts::{FUSE_ATOMIC_O_TRUNC, FUSE_DO_READDIRPLUS, FUSE_READDIRPLUS_AUTO},
    Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow,
};

use super::{
    attributes::requested, empty, text, xattrs::reply_xattr, P3Fs, FUSE_DIRECT_IO_ALLOW_MMAP, TTL,
};
use crate::{
    errno::errno,
    handles::{Handle, Reads},
    posix::Change,
    tree::{prefix, Entry, ROOT},
};

impl Filesystem for P3Fs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        // O_TRUNC with the open: without it the kernel opens a file for
        // writing and then cuts it to nothing, and an open for writing
        // first fetches the current version (a `cp` over a 1 GiB file read
        // all of it back before writing anything).
        if config.add_capabilities(FUSE_ATOMIC_O_TRUNC).is_err() {
            tracing::info!(
                "the kernel cannot pass O_TRUNC with an open; overwriting a file fetches it first"
            );
        }
        // Directory reads with attributes (`readdirplus`), when the kernel
        // sees them followed by lookups (`ls -l`, `find`, `rsync`), plain
        // ones otherwise (`ls`).
        if config
            .add_capabilities(FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO)
            .is_err()
        {
            tracing::info!(
                "the kernel cannot read directories with attributes; each entry is looked up"
            );
        }
        self.direct_reads = config.add_capabilities(FUSE_DIRECT_IO_ALLOW_MMAP).is_ok();
        if !self.direct_reads {
            tracing::info!(
                "the kernel cannot map files read with direct I/O; large files are read through its page cache"
            );
        }
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self
            .child(parent, name)
            .and_then(|path| self.attr_of(&path))
        {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        if ino == ROOT {
            return reply.attr(&TTL, &self.directory_attr(ROOT, None));
        }
        match self.path_of(ino).and_then(|path| self.attr_of(&path)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let result = (|| {
            let path = self.path_of(ino)?;
            if let Some(size) = size {
                self.writable()?;
                let open = fh
                    .filter(|fh| matches!(self.handles.get(fh), Some((_, Handle::Write(_)))))
                    .or_else(|| {
                        self.handles.iter().find_map(|(fh, (name, handle))| {
                            (name == &path && matches!(handle, Handle::Write(_))).then_some(*fh)
                        })
                    });
                match open {
                    Some(fh) => {
                        let (node, object) = (self.client.node().clone(), self.object(&path));
                        if let Some((_, Handle::Write(spool))) = self.handles.get_mut(&fh) {
                            spool
                                .truncate(size)
                                .map_err(|e| errno("truncate", &path, &e))?;
                            if size == 0 {
                                spool.stream_to(node, object);
                            }
                        }
                    }
                    None => {
                        let mut spool = self.spool_of(&path)?;
                        spool
                            .truncate(size)
                            .map_err(|e| errno("truncate", &path, &e))?;
                        let options = spool.options();
                        self.send_spool(&path, spool, options)?;
                    }
                }
            }
            let change = Change {
                mode,
                uid,
                gid,
                atime: atime.map(requested),
                mtime: mtime.map(requested),
            };
            self.set_attributes(&path, &change)?;
            self.attr_of(&path)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = (|| {
            self.writable()?;
            let path = self.child(parent, name)?;
            if self
                .resolve(&path)
                .map_err(|e| errno("mkdir", &path, &e))?
                .is_some()
            {
                return Err(libc::EEXIST);
            }
            // A new directory is its creator's, with the mode it asked for.
            let attributes = Change {
                mode: Some(mode & !umask),
                uid: Some(req.uid()),
                gid: Some(req.gid()),
                ..Change::default()
            };
            self.make_marker(&path, &attributes)
                .map_err(|e| errno("mkdir", &path, &e))?;
            self.attr_of(&path)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            self.writable()?;
            let path = self.child(parent, name)?;
            match self
                .resolve(&path)
                .map_err(|e| errno("unlink", &path, &e))?
            {
                Some(Entry::File(_)) => {}
                Some(Entry::Directory(_)) => return Err(libc::EISDIR),
                None => return Err(libc::ENOENT),
            }
            let removed = self.client.remove(&self.object(&path));
            self.changed_object(&path);
            removed.map(drop).map_err(|e| errno("unlink", &path, &e))
        })();
        empty(reply, result);
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            self.writable()?;
            let path = self.child(parent, name)?;
            match self.resolve(&path).map_err(|e| errno("rmdir", &path, &e))? {
                Some(Entry::Directory(_)) => {}
                Some(Entry::File(_)) => return Err(libc::ENOTDIR),
                None => return Err(libc::ENOENT),
            }
            let marker = format!("{}/", path);
            let inside = self
                .client
                .list(&self.namespace, &prefix(&path))
                .map_err(|e| errno("rmdir", &path, &e))?;
            if inside
                .iter()
                .any(|s| s.path.split_once('/').map(|(_, n)| n) != Some(marker.as_str()))
            {
                return Err(libc::ENOTEMPTY);
            }
            let removed = self.client.remove(&self.object(&marker));
            self.changed_object(&marker);
            removed.map(drop).map_err(|e| errno("rmdir", &path, &e))
        })();
        empty(reply, result);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            self.writable()?;
            let (from, to) = (self.child(parent, name)?, self.child(newparent, newname)?);
            if from == to {
                return Ok(());
            }
            let _held = self.hold_sends(&from);
            let moved = self.rename_paths(&from, &to);
            self.changed();
            moved?;
            self.renamed(&from, &to);
            Ok(())
        })();
        empty(reply, result);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let result = (|| {
            let path = self.path_of(ino)?;
            let (handle, open_flags) = if flags & libc::O_ACCMODE == libc::O_RDONLY {
                let reads = Reads::new(self.client.node().clone(), self.object(&path));
                (Handle::Read(reads), self.read_flags(&path))
            } else {
                self.writable()?;
                let spool = if flags & libc::O_TRUNC != 0 {
                    let base = match self.resolve(&path).map_err(|e| errno("open", &path, &e))? {
                        Some(Entry::File(stat)) => Some(stat),
                        _ => None,
                    };
                    self.new_spool(&path, base)?
                } else {
                    self.spool_of(&path)?
                };
                (Handle::Write(spool), 0)
            };
            Ok((self.add_handle(path, handle), open_flags))
        })();
        match result {
            Ok((fh, open_flags)) => reply.opened(fh, open_flags),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = (|| {
            self.writable()?;
            let path = self.child(parent, name)?;
            let existing = self
                .resolve(&path)
                .map_err(|e| errno("create", &path, &e))?;
            let base = match existing {
                Some(Entry::Directory(_)) => return Err(libc::EISDIR),
                Some(Entry::File(_)) if flags & libc::O_EXCL != 0 => return Err(libc::EEXIST),
                Some(Entry::File(stat)) => Some(stat),
                None => None,
            };
            let mut spool = self.new_spool(&path, base)?;
            if spool.base.is_none() {
                // A new file is its creator's, with the mode it asked for.
                spool.posix = Change {
                    mode: Some(mode & !umask),
                    uid: Some(req.uid()),
                    gid: Some(req.gid()),
                    ..Change::default()
                };
            }
            let fh = self.add_handle(path.clone(), Handle::Write(spool));
            Ok((self.attr_of(&path)?, fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(&TTL, &attr, 0, fh, 0),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let offset = offset.max(0) as u64;
        match self.handles.get(&fh) {
            None => reply.error(libc::EBADF),
            Some((_, Handle::Read(reads))) => reads.read(offset, size as usize, reply),
            Some((path, Handle::Write(spool))) => match spool.read(offset, size as usize) {
                Ok(bytes) => reply.data(&bytes),
                Err(e) => reply.error(errno("read", path, &e)),
            },
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        match self.handles.get_mut(&fh) {
            Some((path, Handle::Write(spool))) => match spool.write(offset.max(0) as u64, data) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(errno("write", path, &e)),
            },
            Some(_) => reply.error(libc::EBADF),
            None => reply.error(libc::EBADF),
        }
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        self.send(fh, true, reply);
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.send(fh, false, reply);
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let sent = self.send_now(fh);
        if let Some((_, Handle::Write(spool))) = self.handles.remove(&fh) {
            self.spool_files.discard(spool.file);
        }
        empty(reply, sent);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut read = match self.read_dir(ino, offset) {
            Ok(read) => read,
            Err(e) => return reply.error(e),
        };
        while let Some(entry) = self.next_entry(&mut read) {
            if reply.add(entry.ino, entry.next, entry.kind(), &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    /// A directory read with each entry's attributes, which the listing
    /// holds already: the kernel then looks up no entry on its own (`ls -l`
    /// of a directory of n files made n lookups after reading it).
    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut read = match self.read_dir(ino, offset) {
            Ok(read) => read,
            Err(e) => return reply.error(e),
        };
        while let Some(entry) = self.next_entry(&mut read) {
            // An entry gone since the listing (a write just sent, a
            // directory removed) is left out, as a later listing would.
            let Ok(attr) = self.entry_attr(&entry) else {
                continue;
            };
            if reply.add(entry.ino, entry.next, &entry.name, &TTL, &attr, 0) {
                break;
            }
        }
        reply.ok();
    }

    fn symlink(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let result = self.child(parent, link_name).and_then(|path| {
            self.make_symlink(&path, target.as_os_str().as_bytes(), req.uid(), req.gid())
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.path_of(ino).and_then(|path| self.read_link(&path)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    /// An object has one name: hard links are refused (EPERM, as on
    /// filesystems without them); `cp -l` and `git` fall back to copies.
    fn link(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _newparent: u64,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(libc::EPERM);
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        // The space has no fixed size; report plenty so tools do not refuse to copy.
        reply.statfs(
            1 << 40,
            1 << 40,
            1 << 40,
            1 << 32,
            1 << 32,
            4096,
            1024,
            4096,
        );
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            self.writable()?;
            let path = self.path_of(ino)?;
            self.set_xattr(&path, text(name)?, value)
        })();
        empty(reply, result);
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let result = (|| {
            let path = self.path_of(ino)?;
            self.xattr(&path, text(name)?)
        })();
        match result {
            Ok(value) => reply_xattr(reply, size, &value),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        let result = self.path_of(ino).and_then(|path| self.xattrs(&path));
        match result {
            Ok(all) => {
                let mut names = Vec::new();
                for (name, _) in all {
                    names.extend_from_slice(name.as_bytes());
                    names.push(0);
                }
                reply_xattr(reply, size, &names);
            }
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&mut self, _req: &Request<'_>, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            self.writable()?;
            let path = self.path_of(ino)?;
            self.remove_xattr(&path, text(name)?)
        })();
        empty(reply, result);
    }
}
