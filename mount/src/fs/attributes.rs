//! Setting a file's POSIX attributes, and symbolic links: the operations
//! behind `chmod`, `chown`, `utimes`, `ln -s` and `readlink` (see
//! [`crate::posix`] for how they are stored).

use std::time::SystemTime;

use fuser::{FileAttr, TimeOrNow};
use libc::c_int;
use p3_objectspace::{
    object::{PutOptions, Stat},
    SpaceError,
};

use super::P3Fs;
use crate::{
    errno::errno,
    handles::{keeping, Handle},
    posix::{self, Change},
    tree::{Entry, DIRECTORY_TYPE},
};

/// Longest target a symbolic link may have (Linux's `PATH_MAX`).
const MAX_TARGET: usize = 4096;

/// The time a `utimensat` asks for.
pub(super) fn requested(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl P3Fs {
    /// Sets `change` on `path`: on its open spool if it is being written
    /// (it is sent with the content), else as a new version with the same
    /// value. A directory keeps them on its marker object `DIR/` (made if
    /// it has none); the root has no object: its attributes are accepted
    /// and kept nowhere.
    pub(super) fn set_attributes(&mut self, path: &str, change: &Change) -> Result<(), c_int> {
        if change.is_empty() {
            return Ok(());
        }
        self.writable()?;
        let open = self
            .handles
            .values_mut()
            .find_map(|(name, handle)| match handle {
                Handle::Write(spool) if name == path => Some(spool),
                _ => None,
            });
        if let Some(spool) = open {
            spool.posix.merge(change);
            spool.touched();
            return Ok(());
        }
        match self.resolve(path).map_err(|e| errno("setattr", path, &e))? {
            None => Err(libc::ENOENT),
            Some(Entry::Directory(_)) if path.is_empty() => Ok(()),
            Some(Entry::Directory(None)) => self
                .make_marker(path, change)
                .map_err(|e| errno("setattr", path, &e)),
            Some(Entry::Directory(Some(marker))) => self.restamp_marker(path, &marker, change),
            Some(Entry::File(_)) => self.retag(path, |options| {
                change.apply(&mut options.meta);
                Ok(())
            }),
        }
    }

    /// Sets `change` on directory `path`'s marker, `marker` as last looked
    /// up. An empty marker (as `mkdir` makes them) is written again with
    /// the new attributes: one request, not a read and a copy. If it changed
    /// since that lookup, or holds a value, it is retagged as a file is.
    fn restamp_marker(&mut self, path: &str, marker: &Stat, change: &Change) -> Result<(), c_int> {
        let name = format!("{path}/");
        if marker.size == 0 {
            let mut options = PutOptions {
                if_version: Some(marker.version),
                ..keeping(marker)
            };
            change.apply(&mut options.meta);
            let put = self.client.put_bytes(&self.object(&name), options, &[]);
            self.changed_object(&name);
            match put {
                Ok(_) => return Ok(()),
                // Looked up before someone else's change: read it again.
                Err(SpaceError::VersionConflict { .. }) => {}
                Err(e) => return Err(errno("setattr", path, &e)),
            }
        }
        self.retag(&name, |options| {
            change.apply(&mut options.meta);
            Ok(())
        })
    }

    /// Makes the marker object `path/` of directory `path`, with `attributes`
    /// (only if it has none: two mounts racing, one wins).
    pub(super) fn make_marker(
        &mut self,
        path: &str,
        attributes: &Change,
    ) -> Result<(), SpaceError> {
        let mut options = PutOptions {
            type_tag: DIRECTORY_TYPE.into(),
            if_version: Some(0),
            ..PutOptions::default()
        };
        attributes.apply(&mut options.meta);
        let object = format!("{}/", self.object(path));
        let put = self.client.put_bytes(&object, options, &[]);
        self.changed_object(&format!("{path}/"));
        put.map(drop)
    }

    /// Makes `path` a symbolic link to `target`, owned by `uid`:`gid`.
    pub(super) fn make_symlink(
        &mut self,
        path: &str,
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, c_int> {
        self.writable()?;
        if target.len() > MAX_TARGET {
            return Err(libc::ENAMETOOLONG);
        }
        if self
            .resolve(path)
            .map_err(|e| errno("symlink", path, &e))?
            .is_some()
        {
            return Err(libc::EEXIST);
        }
        let mut options = PutOptions {
            type_tag: posix::SYMLINK_TYPE.to_owned(),
            // Only if absent: two `ln -s` racing from two mounts, one wins.
            if_version: Some(0),
            ..PutOptions::default()
        };
        Change {
            uid: Some(uid),
            gid: Some(gid),
            ..Change::default()
        }
        .apply(&mut options.meta);
        let object = self.object(path);
        let put = self.client.put_bytes(&object, options, target);
        self.changed_object(path);
        put.map_err(|e| errno("symlink", path, &e))?;
        self.attr_of(path)
    }

    /// The target of the symbolic link `path`.
    pub(super) fn read_link(&mut self, path: &str) -> Result<Vec<u8>, c_int> {
        let object = self.object(path);
        let (stat, target) = self
            .client
            .get_bytes(&object)
            .map_err(|e| errno("readlink", path, &e))?;
        if stat.type_tag != posix::SYMLINK_TYPE {
            return Err(libc::EINVAL);
        }
        Ok(target)
    }
}
