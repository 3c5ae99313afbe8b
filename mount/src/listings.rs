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
    /// How many changes came in: a listing asked for before a change may
    /// not show it, and is not kept.
    generation: u64,
    /// The directories whose last listing had more than [`LARGE_LISTING`]
    /// records (kept across changes: a tree does not shrink that fast).
    large: HashSet<String>,
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

    /// Its generation now: pass it to [`Listings::put`] with a listing
    /// asked for after this.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Remembers the listing of `dir`, asked for at `generation`, unless a
    /// change came in since (it may not show it).
    pub fn put(&mut self, dir: &str, objects: Arc<Vec<Stat>>, generation: u64) {
        if objects.len() > LARGE_LISTING {
            self.large.insert(dir.to_owned());
        } else {
            self.large.remove(dir);
        }
        if generation == self.generation {
            let listing = Listing {
                at: Instant::now(),
                objects,
                stale: HashSet::new(),
            };
            self.cached.insert(dir.to_owned(), listing);
        }
    }

    /// Object `name` (a path in the namespace; `a/b/` for a directory's
    /// marker) changed: its name is stale in its directory's listing, and
    /// the listings above (and a marker's directory's) are dropped.
    pub fn forget(&mut self, name: &str) {
        self.generation += 1;
        let file = (!name.ends_with('/')).then(|| parent(name));
        self.cached.retain(|dir, listing| {
            if Some(dir.as_str()) == file {
                listing.stale.insert(name.to_owned());
                return true;
            }
            let above = dir.is_empty()
                || name
                    .strip_prefix(dir.as_str())
                    .is_some_and(|r| r.starts_with('/'));
            !above
        });
    }

    /// Forgets everything (changes of unknown extent, or a watch that was
    /// down).
    pub fn clear(&mut self) {
        self.cached.clear();
        self.generation += 1;
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
    fn a_listing_asked_for_before_a_change_is_not_kept() {
        let mut listings = Listings::default();
        let before = listings.generation();
        listings.forget("d/x");
        listings.put("d", listing(&["ns/d/old"]), before);
        assert!(listings.get("d").is_none(), "it may predate the change");
        let now = listings.generation();
        listings.put("d", listing(&["ns/d/new"]), now);
        assert_eq!(listings.get("d").map(|l| l.len()), Some(1));
    }

    #[test]
    fn a_changed_file_is_stale_in_its_directory_and_drops_the_ones_above() {
        let mut listings = Listings::default();
        for dir in ["", "a", "a/b", "a/bc", "z"] {
            let generation = listings.generation();
            listings.put(dir, listing(&["ns/a/b/f"]), generation);
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
    fn a_directory_whose_last_listing_was_large_stays_large_across_changes() {
        let mut listings = Listings::default();
        let many: Vec<String> = (0..=LARGE_LISTING)
            .map(|i| format!("ns/big/f{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        listings.put("big", listing(&many), listings.generation());
        listings.put("small", listing(&["ns/small/f"]), listings.generation());
        listings.forget("big/f0");
        listings.clear();
        assert!(listings.is_large("big"));
        assert!(!listings.is_large("small"));
        // Even a listing that came too late to keep says how large it is.
        listings.put("big", listing(&["ns/big/f"]), 0);
        assert!(!listings.is_large("big"));
    }
}
