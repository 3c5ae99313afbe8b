//! Reading a directory: its entries in the order `readdir` and
//! `readdirplus` hand them out, each with what the listing knows of it.

use std::collections::BTreeSet;

use fuser::{FileAttr, FileType};
use libc::c_int;

use super::{kind_of, P3Fs};
use crate::{
    errno::errno,
    handles::Handle,
    tree::{children, join, parent, Entry, ROOT},
};

/// What an entry of a directory read is.
pub(super) enum Listed {
    /// `.` or `..`, both answered with the directory itself (the kernel
    /// keeps no entry for either).
    Itself,
    /// A file, link or directory in the listing.
    Child(Entry),
    /// A file being written here and not yet sent: not in any listing yet.
    Writing,
}

/// One entry of a directory read.
pub(super) struct DirEntry {
    /// The offset the kernel passes back to read on after this entry.
    pub(super) next: i64,
    pub(super) name: String,
    /// Its path in the namespace (the directory's own for `.` and `..`).
    pub(super) path: String,
    pub(super) ino: u64,
    pub(super) listed: Listed,
}

impl DirEntry {
    /// The file type the kernel is told.
    pub(super) fn kind(&self) -> FileType {
        match &self.listed {
            Listed::Itself | Listed::Child(Entry::Directory(_)) => FileType::Directory,
            Listed::Child(Entry::File(stat)) => kind_of(stat),
            Listed::Writing => FileType::RegularFile,
        }
    }
}

/// A directory read from some offset on: the entries still to hand out,
/// each given its path and inode number only when it is handed out (a
/// large directory is read one buffer of a few dozen entries at a time, and
/// numbering every remaining entry on each call made reading it quadratic).
pub(super) struct DirRead {
    dir: String,
    ino: u64,
    rest: std::vec::IntoIter<(i64, String, Listed)>,
}

impl P3Fs {
    /// Directory `ino` read from `offset` on. The whole read is `.`, `..`,
    /// the children in name order, then files being written in it; an
    /// entry's place in it is its offset, so the order must not change
    /// between the calls that read one directory a buffer at a time.
    pub(super) fn read_dir(&mut self, ino: u64, offset: i64) -> Result<DirRead, c_int> {
        let dir = self.path_of(ino)?;
        let list = self.listing(&dir).map_err(|e| errno("readdir", &dir, &e))?;
        let listed = children(&dir, &list);
        // A set: two handles may write one file.
        let writing: BTreeSet<String> = self
            .handles
            .values()
            .filter(|(path, handle)| matches!(handle, Handle::Write(_)) && parent(path) == dir)
            .filter_map(|(path, _)| path.rsplit('/').next().map(str::to_owned))
            .filter(|name| !listed.contains_key(name))
            .collect();
        let rest: Vec<_> = [
            (".".to_owned(), Listed::Itself),
            ("..".to_owned(), Listed::Itself),
        ]
        .into_iter()
        .chain(
            listed
                .into_iter()
                .map(|(name, entry)| (name, Listed::Child(entry))),
        )
        .chain(writing.into_iter().map(|name| (name, Listed::Writing)))
        .enumerate()
        .skip(offset.max(0) as usize)
        .map(|(i, (name, listed))| (i as i64 + 1, name, listed))
        .collect();
        Ok(DirRead {
            dir,
            ino,
            rest: rest.into_iter(),
        })
    }

    /// The next entry of `read`, with its path and inode number.
    pub(super) fn next_entry(&mut self, read: &mut DirRead) -> Option<DirEntry> {
        let (next, name, listed) = read.rest.next()?;
        let (path, ino) = match listed {
            Listed::Itself => (read.dir.clone(), read.ino),
            _ => {
                let path = join(&read.dir, &name);
                let ino = self.inodes().number(&path);
                (path, ino)
            }
        };
        Some(DirEntry {
            next,
            name,
            path,
            ino,
            listed,
        })
    }

    /// What `readdirplus` says of `entry`: from the listing, except for a
    /// file open for writing here, which shows what is written so far, as a
    /// lookup would, not the version listed.
    pub(super) fn entry_attr(&mut self, entry: &DirEntry) -> Result<FileAttr, c_int> {
        match &entry.listed {
            Listed::Itself if entry.ino == ROOT => Ok(self.directory_attr(ROOT, None)),
            Listed::Child(Entry::File(stat)) if self.writing(&entry.path).is_none() => {
                Ok(self.file_attr(entry.ino, stat))
            }
            Listed::Child(Entry::Directory(marker)) => {
                Ok(self.directory_attr(entry.ino, marker.as_ref()))
            }
            _ => self.attr_of(&entry.path),
        }
    }
}
