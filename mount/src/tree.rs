//! The directory tree a namespace looks like: object names are paths, a
//! directory is a name prefix (or an empty directory's marker object `DIR/`),
//! and inode numbers are handed out per path for as long as the mount lives.

use std::collections::{BTreeMap, HashMap};

use p3_objectspace::object::Stat;

/// The root directory's inode.
pub const ROOT: u64 = fuser::FUSE_ROOT_ID;

/// Type tag of an empty directory's marker object.
pub const DIRECTORY_TYPE: &str = "p3.directory";

/// What a name in a directory is.
#[derive(Debug, Clone)]
pub enum Entry {
    /// An object.
    File(Stat),
    /// A prefix of other names, with its marker object `DIR/` if it has one
    /// (an empty directory, or one whose mode, owner or times were set).
    Directory(Option<Stat>),
}

/// Paths ↔ inode numbers. A path is the object name (`a/b/c`), `""` for the
/// root; numbers are never reused while mounted.
#[derive(Debug)]
pub struct Inodes {
    paths: HashMap<u64, String>,
    numbers: HashMap<String, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        Self {
            paths: HashMap::from([(ROOT, String::new())]),
            numbers: HashMap::from([(String::new(), ROOT)]),
            next: ROOT + 1,
        }
    }
}

impl Inodes {
    /// The inode of `path`, numbered on first sight.
    pub fn number(&mut self, path: &str) -> u64 {
        if let Some(&ino) = self.numbers.get(path) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.paths.insert(ino, path.to_owned());
        self.numbers.insert(path.to_owned(), ino);
        ino
    }

    /// The inode of `path` if it has one yet.
    pub fn known(&self, path: &str) -> Option<u64> {
        self.numbers.get(path).copied()
    }

    /// The path of `ino`.
    pub fn path(&self, ino: u64) -> Option<&str> {
        self.paths.get(&ino).map(String::as_str)
    }

    /// `from` (a file, or a directory with everything under it) is now `to`:
    /// its inode numbers follow it, as the kernel expects of a rename (a
    /// program that renames `config.lock` over `config` and opens `config`
    /// gets the lock file's inode); whatever was at `to` before names nothing.
    pub fn rename(&mut self, from: &str, to: &str) {
        for path in self.under(to) {
            if let Some(ino) = self.numbers.remove(&path) {
                self.paths.remove(&ino);
            }
        }
        for old in self.under(from) {
            if let Some(ino) = self.numbers.remove(&old) {
                let new = format!("{to}{}", &old[from.len()..]);
                self.paths.insert(ino, new.clone());
                self.numbers.insert(new, ino);
            }
        }
    }

    /// The numbered paths that are `dir` or below it.
    fn under(&self, dir: &str) -> Vec<String> {
        let below = |path: &str| {
            path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
        };
        self.numbers.keys().filter(|p| below(p)).cloned().collect()
    }
}

/// `dir/name`, or `name` in the root.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The directory holding `path` (`""` for a name in the root).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The prefix every name inside directory `dir` starts with.
pub fn prefix(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

/// What an object makes of a directory's child.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Makes {
    /// The child is this file.
    File,
    /// The child is a directory and this object is its marker.
    Marker,
    /// The child is a directory this object is somewhere below.
    Below,
}

/// An object's name: its path less the namespace (`""` if it has none).
fn name_of(stat: &Stat) -> &str {
    stat.path.split_once('/').map_or("", |(_, name)| name)
}

/// Puts a listing in name order, as [`child`] needs it. A node answers in
/// that order already, and the sort then only checks it (one pass: the
/// standard sort finds a single run).
pub fn by_name(objects: &mut [Stat]) {
    objects.sort_by(|a, b| name_of(a).cmp(name_of(b)));
}

/// The child of the directory whose names start with `prefix` that object
/// `stat` makes, and how; `None` for an object outside it or its own marker.
fn child_of<'a>(prefix: &str, stat: &'a Stat) -> Option<(&'a str, Makes)> {
    let (_, name) = stat.path.split_once('/')?;
    let rest = name.strip_prefix(prefix)?;
    match rest.split_once('/') {
        None if !rest.is_empty() => Some((rest, Makes::File)),
        Some((child, "")) if !child.is_empty() => Some((child, Makes::Marker)),
        Some((child, _)) if !child.is_empty() => Some((child, Makes::Below)),
        _ => None, // this directory's own marker, or an empty segment
    }
}

/// Adds what `makes` says to what a child was found to be so far: a file
/// wins over a directory of the same name, a marker over a bare prefix.
fn found(entry: &mut Option<Entry>, makes: Makes, stat: &Stat) {
    match (makes, &entry) {
        (Makes::File, _) => *entry = Some(Entry::File(stat.clone())),
        (_, Some(Entry::File(_))) => {}
        (Makes::Marker, _) => *entry = Some(Entry::Directory(Some(stat.clone()))),
        (Makes::Below, None) => *entry = Some(Entry::Directory(None)),
        (Makes::Below, Some(Entry::Directory(_))) => {}
    }
}

/// The immediate children of directory `dir`, from the objects whose names
/// start with its prefix. A file and a directory of the same name: the file.
pub fn children(dir: &str, objects: &[Stat]) -> BTreeMap<String, Entry> {
    let prefix = prefix(dir);
    let mut entries: BTreeMap<String, Option<Entry>> = BTreeMap::new();
    for stat in objects {
        if let Some((name, makes)) = child_of(&prefix, stat) {
            found(entries.entry(name.to_owned()).or_default(), makes, stat);
        }
    }
    entries
        .into_iter()
        .filter_map(|(name, entry)| Some((name, entry?)))
        .collect()
}

/// What `name` is in directory `dir` (as [`children`] would say, without
/// building the whole listing: lookups are the hot path), from `objects` in
/// name order ([`by_name`]). Every object that makes the child has a name
/// that starts with the child's path, and in name order those are side by
/// side: a lookup reads only them, not the whole directory (`ls -l` of a
/// directory of n files looked at n² names).
pub fn child(dir: &str, name: &str, objects: &[Stat]) -> Option<Entry> {
    let prefix = prefix(dir);
    let path = format!("{prefix}{name}");
    let first = objects.partition_point(|stat| name_of(stat) < path.as_str());
    let mut entry = None;
    for stat in objects[first..]
        .iter()
        .take_while(|stat| name_of(stat).starts_with(path.as_str()))
    {
        match child_of(&prefix, stat) {
            Some((child, Makes::File)) if child == name => return Some(Entry::File(stat.clone())),
            Some((child, makes)) if child == name => found(&mut entry, makes, stat),
            _ => {}
        }
    }
    entry
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_renamed_path_keeps_its_inode_and_the_replaced_one_is_gone() {
        let mut inodes = Inodes::default();
        let lock = inodes.number(".git/config.lock");
        let config = inodes.number(".git/config");
        let deep = inodes.number("dir/a/b");
        let dir = inodes.number("dir");
        let sibling = inodes.number("dirt");
        inodes.rename(".git/config.lock", ".git/config");
        assert_eq!(inodes.path(lock), Some(".git/config"));
        assert_eq!(inodes.path(config), None, "the replaced file names nothing");
        assert_eq!(inodes.number(".git/config"), lock);
        assert_ne!(
            inodes.number(".git/config.lock"),
            lock,
            "a new file, a new inode"
        );

        inodes.rename("dir", "moved");
        assert_eq!(inodes.path(dir), Some("moved"));
        assert_eq!(inodes.path(deep), Some("moved/a/b"));
        assert_eq!(
            inodes.path(sibling),
            Some("dirt"),
            "only paths under dir/ move"
        );
    }

    pub(crate) fn stat(path: &str) -> Stat {
        Stat {
            path: path.to_owned(),
            version: 1,
            ..Stat::default()
        }
    }

    #[test]
    fn a_lookup_finds_what_the_listing_shows() {
        // Names that sort between a child and the names below it ('-' and
        // '.' come before '/'), a file and a directory of one name, markers.
        let mut objects: Vec<Stat> = [
            "ns/d/x", "ns/d-1", "ns/d.txt", "ns/d/", "ns/d/y/z", "ns/e", "ns/e/f", "ns/a/",
            "ns/d/y/", "ns/b/c/d",
        ]
        .iter()
        .map(|p| stat(p))
        .collect();
        by_name(&mut objects);
        for dir in ["", "a", "b", "b/c", "d", "d/y", "e"] {
            let listed = children(dir, &objects);
            for (name, entry) in &listed {
                let found = child(dir, name, &objects);
                assert_eq!(
                    format!("{found:?}"),
                    format!("{:?}", Some(entry)),
                    "{dir}/{name}"
                );
            }
            for absent in ["", "zz", "d/", "x/y"] {
                assert!(child(dir, absent, &objects).is_none(), "{dir}: {absent}");
            }
        }
        assert!(matches!(child("", "e", &objects), Some(Entry::File(_))));
        assert!(matches!(
            child("", "d", &objects),
            Some(Entry::Directory(Some(_)))
        ));
    }

    #[test]
    fn names_become_files_and_directories() {
        let mut objects: Vec<Stat> = [
            "ns/a.txt",
            "ns/docs/x",
            "ns/docs/y/z",
            "ns/empty/",
            "ns/docs/",
        ]
        .iter()
        .map(|p| stat(p))
        .collect();
        by_name(&mut objects);
        let root = children("", &objects);
        assert!(matches!(root["a.txt"], Entry::File(_)));
        assert!(matches!(&root["docs"], Entry::Directory(Some(m)) if m.path == "ns/docs/"));
        assert!(matches!(root["empty"], Entry::Directory(Some(_))));
        assert_eq!(root.len(), 3);
        let docs = children("docs", &objects);
        assert_eq!(docs.keys().collect::<Vec<_>>(), ["x", "y"]);
        assert!(children("empty", &objects).is_empty());
        assert!(matches!(child("", "a.txt", &objects), Some(Entry::File(_))));
        assert!(matches!(
            child("", "docs", &objects),
            Some(Entry::Directory(Some(_)))
        ));
        assert!(matches!(
            child("docs", "y", &objects),
            Some(Entry::Directory(None))
        ));
        assert!(child("docs", "z", &objects).is_none());
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("c"), "");
        assert_eq!(join("", "c"), "c");
        let mut inodes = Inodes::default();
        let a = inodes.number("a");
        assert_eq!(inodes.number("a"), a);
        assert_eq!(inodes.path(a), Some("a"));
        assert_eq!(inodes.path(ROOT), Some(""));
    }
}
