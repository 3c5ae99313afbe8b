//! Reading a directory: its entries in the order `readdir` and
//! `readdirplus` hand them out, each with what the listing knows of it.

use std::collections::BTreeSet;

use fuser::FileType;
use libc::c_int;

use super::{kind_of, P3Fs};
use crate::{
    errno::errno,
    handles::Handle,
    tree::{children, parent, Entry},
};

/// One entry of a directory read.
pub(super) enum Listed {
    /// `.` or `..`, both answered with the directory itself (the kernel
    /// keeps no entry for either).
    Itself,
    /// A file, link or directory in the listing.
    Child(Entry),
    /// A file being written here and not yet sent: not in any listing yet.
    Writing,
}

/// The file type the kernel is told for `entry`.
pub(super) fn entry_kind(entry: &Entry) -> FileType {
    match entry {
        Entry::File(stat) => kind_of(stat),
        Entry::Directory(_) => FileType::Directory,
    }
}

impl P3Fs {
    /// The path of directory `ino` and its entries: `.`, `..`, the children
    /// in name order, then files being written in it. An entry's place in
    /// this list is its offset, so the order must not change between the
    /// calls that read one directory a buffer at a time.
    pub(super) fn dir_entries(
        &mut self,
        ino: u64,
    ) -> Result<(String, Vec<(String, Listed)>), c_int> {
        let dir = self.path_of(ino)?;
        let list = self.listing(&dir).map_err(|e| errno("readdir", &dir, &e))?;
        let mut entries = vec![
            (".".to_owned(), Listed::Itself),
            ("..".to_owned(), Listed::Itself),
        ];
        let listed = children(&dir, &list);
        // A set: two handles may write one file.
        let writing: BTreeSet<String> = self
            .handles
            .values()
            .filter(|(path, handle)| matches!(handle, Handle::Write(_)) && parent(path) == dir)
            .filter_map(|(path, _)| path.rsplit('/').next().map(str::to_owned))
            .filter(|name| !listed.contains_key(name))
            .collect();
        entries.extend(
            listed
                .into_iter()
                .map(|(name, entry)| (name, Listed::Child(entry))),
        );
        entries.extend(writing.into_iter().map(|name| (name, Listed::Writing)));
        Ok((dir, entries))
    }
}
