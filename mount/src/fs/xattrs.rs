//! Extended attributes: an object's type, hash, version and metadata shown
//! as `user.p3.*` names; the type and the metadata can be set.

use fuser::ReplyXattr;
use libc::c_int;
use p3_objectspace::object::MetaValue;

use super::P3Fs;
use crate::{errno::errno, tree::Entry};

/// What every extended attribute the mount shows starts with: it stores no
/// other (`setxattr` of any other name is ENOTSUP).
const PREFIX: &str = "user.p3.";
/// The object's type tag (settable).
const TYPE: &str = "user.p3.type";
/// Before a metadata key (settable, removable).
const META: &str = "user.p3.meta.";
/// The value's blake3 hash (read-only).
const HASH: &str = "user.p3.hash";
/// The object's version (read-only).
const VERSION: &str = "user.p3.version";

impl P3Fs {
    pub(super) fn set_xattr(&mut self, path: &str, name: &str, value: &[u8]) -> Result<(), c_int> {
        let value = std::str::from_utf8(value)
            .map_err(|_| libc::EINVAL)?
            .to_owned();
        self.retag(path, |options| {
            if name == TYPE {
                options.type_tag = value;
            } else if let Some(key) = name.strip_prefix(META).filter(|k| !k.is_empty()) {
                options
                    .meta
                    .insert(key.to_owned(), MetaValue::parse(&value));
            } else {
                return Err(libc::ENOTSUP);
            }
            Ok(())
        })
    }

    pub(super) fn remove_xattr(&mut self, path: &str, name: &str) -> Result<(), c_int> {
        let key = name.strip_prefix(META).ok_or(libc::ENOTSUP)?.to_owned();
        self.retag(path, |options| {
            options.meta.remove(&key).map(drop).ok_or(libc::ENODATA)
        })
    }

    /// Extended attribute `name` of `path`'s object.
    pub(super) fn xattr(&mut self, path: &str, name: &str) -> Result<Vec<u8>, c_int> {
        if !name.starts_with(PREFIX) {
            // The kernel asks for `security.capability` before every write
            // and `chown`: no object has it, so it is answered without
            // resolving the path (which may ask the node).
            return Err(libc::ENODATA);
        }
        self.xattrs(path)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or(libc::ENODATA)
    }

    /// Every extended attribute of `path`'s object, in order.
    pub(super) fn xattrs(&mut self, path: &str) -> Result<Vec<(String, Vec<u8>)>, c_int> {
        let stat = match self
            .resolve(path)
            .map_err(|e| errno("getxattr", path, &e))?
        {
            Some(Entry::File(stat)) => stat,
            Some(Entry::Directory(_)) => return Ok(Vec::new()),
            None => return Err(libc::ENOENT),
        };
        let mut all = vec![
            (TYPE.to_owned(), stat.type_tag.clone().into_bytes()),
            (HASH.to_owned(), stat.hash.clone().into_bytes()),
            (VERSION.to_owned(), stat.version.to_string().into_bytes()),
        ];
        for (key, value) in &stat.meta {
            all.push((format!("{META}{key}"), value.to_string().into_bytes()));
        }
        Ok(all)
    }
}

/// Replies `bytes` to an xattr request of buffer size `size`.
pub(super) fn reply_xattr(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() > size as usize {
        reply.error(libc::ERANGE);
    } else {
        reply.data(bytes);
    }
}
