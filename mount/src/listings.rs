//! Recent listings of directories. A listing is kept for a second, or
//! until a change makes it wrong: a change to a file marks just that name
//! stale in its directory's listing (a lookup of it asks the node for that
//! object; every other name is still answered from the listing, so `tar -x`
//! does not list a directory again for each file it adds), and drops the
//! listings of the directories above, whose subdirectories it may change.
//!
//! A listing is by name prefix, so a directory's holds everything below it.
//! Where a directory's last listing was large, a name in it is looked up on
//! its own instead ([`Listings::is_large`]): `mkdir` or `chmod` of a
//! subdirectory of a big tree must not list the whole tree each time.
//!
//! What such a lookup finds (an object's stat, or that there is none) is
//! kept too, per name, under the same rules: a second, or until that very
//! name changes. A directory in a big tree is looked up many times in a row
//! (`tar -x` sets its times, owner and mode after filling it) and must not
//! cost two reads across the owners each time.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use p3_objectspace::object::Stat;

use crate::tree::parent;

/// How long a listing is trusted without a change event.
pub const LISTING_TTL: Duration = Duration::from_secs(1);

/// Records in a directory's listing above which names in it are looked up
/// one by one rather than by listing it again.
pub const LARGE_LISTING: usize = 256;

/// A directory's listing and the names in it changed since.
#[derive(Debug)]
struct Listing {
    at: Instant,
    objects: Arc<Vec<Stat>>,
    stale: HashSet<String>,
}

/// One object looked up on its own.
#[derive(Debug)]
enum Looked {
    /// A lookup is in flight (its ticket): its answer is kept only if the
    /// name did not change meanwhile.
    Asking(u64),
    /// What the node answered, and when.
    Answered { at: Instant, stat: Option<Stat> },
}

/// A listing in flight: its ticket, and the names in it that changed since
/// it was asked for.
#[derive(Debug)]
struct Asking {
    ticket: u64,
    stale: HashSet<String>,
}

/// Applies a change to object `name` (`a/b/` for a directory's marker) to
/// the listing of `dir`, whose changed names are `stale`: a file in it is
/// stale from then on; anything that may add or remove a subdirectory of it
/// makes the whole listing go (false).
fn survives(dir: &str, name: &str, stale: &mut HashSet<String>) -> bool {
    let file = (!name.ends_with('/')).then(|| parent(name));
    if Some(dir) == file {
        stale.insert(name.to_owned());
        return true;
    }
    let above = dir.is_empty() || name.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
    !above
}

/// Lookups kept at most; beyond this the expired ones are dropped.
const MAX_LOOKED: usize = 4096;

/// What the cache knows of a directory, for a lookup of one name in it.
#[derive(Debug)]
pub enum Known {
    /// Nothing fresh: list the directory.
    Nothing,
    /// The listing answers for the name.
    Listed(Arc<Vec<Stat>>),
    /// The name changed since the listing: ask for the object itself; the
    /// listing still answers whether a directory of that name exists.
    Stale(Arc<Vec<Stat>>),
}

/// Recent listings, by directory path (`""` for the root).
#[derive(Debug, Default)]
pub struct Listings {
    cached: HashMap<String, Listing>,
    /// Listings being asked for, by directory, with the names in them
    /// changed meanwhile (the answer may not show those changes).
    asking_lists: HashMap<String, Asking>,
    /// The directories whose last listing had more than [`LARGE_LISTING`]
    /// records (kept across changes: a tree does not shrink that fast).
    large: HashSet<String>,
    /// Objects looked up on their own, by name (`a/b`, or `a/b/` for a
    /// directory's marker).
    looked: HashMap<String, Looked>,
    tickets: u64,
}

impl Listings {
    fn fresh(&self, dir: &str) -> Option<&Listing> {
        self.cached
            .get(dir)
            .filter(|listing| listing.at.elapsed() < LISTING_TTL)
    }

    /// The listing of `dir`, if fresh with nothing stale in it.
    pub fn get(&self, dir: &str) -> Option<Arc<Vec<Stat>>> {
        self.fresh(dir)
            .filter(|listing| listing.stale.is_empty())
            .map(|listing| listing.objects.clone())
    }

    /// What is known of `name` (a path in the namespace) in directory `dir`.
    pub fn lookup(&self, dir: &str, name: &str) -> Known {
        match self.fresh(dir) {
            None => Known::Nothing,
            Some(listing) if listing.stale.contains(name) => Known::Stale(listing.objects.clone()),
            Some(listing) => Known::Listed(listing.objects.clone()),
        }
    }

    /// Whether `dir`'s last listing was large: look names in it up one by one.
    pub fn is_large(&self, dir: &str) -> bool {
        self.large.contains(dir)
    }

    /// A listing of `dir` is being asked for: pass the ticket to
    /// [`Listings::put`] with the answer.
    pub fn asking_list(&mut self, dir: &str) -> u64 {
        self.tickets += 1;
        let asking = Asking {
            ticket: self.tickets,
            stale: HashSet::new(),
        };
        self.asking_lists.insert(dir.to_owned(), asking);
        self.tickets
    }

    /// Remembers the listing of `dir` asked for with `ticket`, with the
    /// names in it that changed meanwhile marked stale; not at all if a
    /// change meanwhile may have added or removed a subdirectory of it.
    pub fn put(&mut self, dir: &str, objects: Arc<Vec<Stat>>, ticket: u64) {
        if objects.len() > LARGE_LISTING {
            self.large.insert(dir.to_owned());
        } else {
            self.large.remove(dir);
        }
        let Some(asking) = self.asking_lists.remove(dir) else {
            return;
        };
        if asking.ticket != ticket {
            self.asking_lists.insert(dir.to_owned(), asking);
            return;
        }
        let listing = Listing {
            at: Instant::now(),
            objects,
            stale: asking.stale,
        };
        self.cached.insert(dir.to_owned(), listing);
    }

    /// What a recent lookup of object `name` found (`Some(None)`: that it
    /// does not exist), if it is still to be trusted.
    pub fn looked_up(&self, name: &str) -> Option<Option<Stat>> {
        match self.looked.get(name)? {
            Looked::Answered { at, stat } if at.elapsed() < LISTING_TTL => Some(stat.clone()),
            _ => None,
        }
    }

    /// A lookup of object `name` starts: pass the ticket to
    /// [`Listings::answered`] with what it finds.
    pub fn asking(&mut self, name: &str) -> u64 {
        if self.looked.len() >= MAX_LOOKED {
            self.looked.retain(|_, looked| match looked {
                Looked::Answered { at, .. } => at.elapsed() < LISTING_TTL,
                Looked::Asking(_) => true,
            });
        }
        self.tickets += 1;
        self.looked
            .insert(name.to_owned(), Looked::Asking(self.tickets));
        self.tickets
    }

    /// Keeps what the lookup with `ticket` found, unless `name` changed
    /// since it was asked for (then it may predate the change).
    pub fn answered(&mut self, name: &str, ticket: u64, stat: Option<Stat>) {
        if let Some(looked) = self.looked.get_mut(name) {
            if matches!(looked, Looked::Asking(t) if *t == ticket) {
                *looked = Looked::Answered {
                    at: Instant::now(),
                    stat,
                };
            }
        }
    }

    /// The watch saw object `name` written at `version`: as
    /// [`Listings::forget`], except that a lookup that already found that
    /// version or a later one (this mount's own write, announced after it
    /// looked) stays.
    pub fn written(&mut self, name: &str, version: u64) {
        let current = matches!(
            self.looked.get(name),
            Some(Looked::Answered { stat: Some(stat), .. }) if stat.version >= version
        );
        let kept = current.then(|| self.looked.remove(name)).flatten();
        self.forget(name);
        if let Some(kept) = kept {
            self.looked.insert(name.to_owned(), kept);
        }
    }

    /// Object `name` (a path in the namespace; `a/b/` for a directory's
    /// marker) changed: its name is stale in its directory's listing, the
    /// listings above (and a marker's directory's) are dropped, and so is
    /// what a lookup of it found.
    pub fn forget(&mut self, name: &str) {
        self.looked.remove(name);
        self.cached
            .retain(|dir, listing| survives(dir, name, &mut listing.stale));
        self.asking_lists
            .retain(|dir, asking| survives(dir, name, &mut asking.stale));
    }

    /// Forgets everything (changes of unknown extent, or a watch that was
    /// down).
    pub fn clear(&mut self) {
        self.cached.clear();
        self.looked.clear();
        self.asking_lists.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::tests::stat;

    fn listing(names: &[&str]) -> Arc<Vec<Stat>> {
        Arc::new(names.iter().map(|n| stat(n)).collect())
    }

    #[test]
    fn a_listing_asked_for_before_a_change_keeps_it_stale_or_is_not_kept() {
        let mut listings = Listings::default();
        // A file in it changed while it was asked for: only that name is
        // not trusted; another directory's change does not matter.
        let ticket = listings.asking_list("d");
        listings.forget("d/x");
        listings.forget("e/y");
        listings.put("d", listing(&["ns/d/x", "ns/d/y"]), ticket);
        assert!(matches!(listings.lookup("d", "d/x"), Known::Stale(_)));
        assert!(matches!(listings.lookup("d", "d/y"), Known::Listed(_)));
        // Something below a subdirectory changed: the subdirectory may have
        // come or gone, so the listing is not kept.
        let ticket = listings.asking_list("d");
        listings.forget("d/sub/z");
        listings.put("d", listing(&["ns/d/old"]), ticket);
        assert!(matches!(listings.lookup("d", "d/old"), Known::Nothing));
        let ticket = listings.asking_list("d");
        listings.clear();
        listings.put("d", listing(&["ns/d/old"]), ticket);
        assert!(listings.get("d").is_none(), "asked for before a clear");
        let ticket = listings.asking_list("d");
        listings.put("d", listing(&["ns/d/new"]), ticket);
        assert_eq!(listings.get("d").map(|l| l.len()), Some(1));
    }

    #[test]
    fn a_changed_file_is_stale_in_its_directory_and_drops_the_ones_above() {
        let mut listings = Listings::default();
        for dir in ["", "a", "a/b", "a/bc", "z"] {
            let ticket = listings.asking_list(dir);
            listings.put(dir, listing(&["ns/a/b/f"]), ticket);
        }
        listings.forget("a/b/new");
        assert!(matches!(listings.lookup("a/b", "a/b/new"), Known::Stale(_)));
        assert!(matches!(listings.lookup("a/b", "a/b/f"), Known::Listed(_)));
        assert!(listings.get("a/b").is_none(), "a readdir lists it again");
        assert!(matches!(listings.lookup("a", "a/b"), Known::Nothing));
        assert!(matches!(listings.lookup("", "a"), Known::Nothing));
        assert!(listings.get("a/bc").is_some(), "a sibling is not above it");
        assert!(listings.get("z").is_some());

        // A directory's marker: its attributes are in the listing above it;
        // that goes, and the directory's own with it.
        listings.forget("a/bc/");
        assert!(listings.get("a/bc").is_none());
        listings.clear();
        assert!(listings.get("z").is_none());
    }

    #[test]
    fn a_lookup_is_kept_until_its_name_changes_and_not_if_it_changed_while_asked() {
        let mut listings = Listings::default();
        let ticket = listings.asking("d/");
        assert_eq!(listings.looked_up("d/"), None, "in flight is not known");
        listings.answered("d/", ticket, Some(stat("ns/d/")));
        assert!(matches!(listings.looked_up("d/"), Some(Some(_))));
        let ticket = listings.asking("d");
        listings.answered("d", ticket, None);
        assert_eq!(listings.looked_up("d"), Some(None), "known absent");

        // Changes to other names, even below it, leave it.
        listings.forget("d/f");
        listings.forget("e");
        assert!(matches!(listings.looked_up("d/"), Some(Some(_))));
        listings.forget("d/");
        assert_eq!(listings.looked_up("d/"), None);

        // A change while the lookup was in flight: its answer may predate it.
        let ticket = listings.asking("d/");
        listings.forget("d/");
        listings.answered("d/", ticket, Some(stat("ns/d/")));
        assert_eq!(listings.looked_up("d/"), None);

        // The watch announcing a version the lookup already found keeps it;
        // a newer one does not.
        let mut found = stat("ns/d/");
        found.version = 3;
        let ticket = listings.asking("d/");
        listings.answered("d/", ticket, Some(found));
        listings.written("d/", 3);
        assert!(matches!(listings.looked_up("d/"), Some(Some(s)) if s.version == 3));
        listings.written("d/", 4);
        assert_eq!(listings.looked_up("d/"), None);
        let ticket = listings.asking("d");
        listings.answered("d", ticket, None);
        listings.written("d", 1);
        assert_eq!(listings.looked_up("d"), None, "it exists now");

        listings.clear();
        assert_eq!(listings.looked_up("d/f"), None);
    }

    #[test]
    fn a_directory_whose_last_listing_was_large_stays_large_across_changes() {
        let mut listings = Listings::default();
        let many: Vec<String> = (0..=LARGE_LISTING)
            .map(|i| format!("ns/big/f{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let ticket = listings.asking_list("big");
        listings.put("big", listing(&many), ticket);
        let ticket = listings.asking_list("small");
        listings.put("small", listing(&["ns/small/f"]), ticket);
        listings.forget("big/f0");
        listings.clear();
        assert!(listings.is_large("big"));
        assert!(!listings.is_large("small"));
        // Even a listing that came too late to keep says how large it is.
        listings.put("big", listing(&["ns/big/f"]), 0);
        assert!(!listings.is_large("big"));
    }
}
