//! POSIX attributes of files kept with their objects, so `chmod`, `chown`,
//! `touch -d`, `tar -x`, `cp -p` and `rsync -a` work: mode bits, owner and
//! group as numbers, modification and access times as `SECONDS.NANOSECONDS`
//! text (a metadata number is an f64, too coarse for nanoseconds), all under
//! `posix.` in the object's metadata, where `p3ctl stat` shows them.
//!
//! A file without them (written with `p3ctl put`) has the mount's defaults.
//! The change time is the time of the object's current version, so every
//! change of content or attributes moves it, as on a local disk. Symbolic
//! links are objects of type [`SYMLINK_TYPE`] whose value is the target.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p3_objectspace::object::{MetaValue, Metadata};

/// Permission bits (with setuid, setgid and sticky): `0o7777` at most.
pub const MODE: &str = "posix.mode";
/// Owner's user id.
pub const UID: &str = "posix.uid";
/// Group id.
pub const GID: &str = "posix.gid";
/// Modification time, when it was set explicitly (else the version's time).
pub const MTIME: &str = "posix.mtime";
/// Access time, when it was set explicitly (else the modification time).
pub const ATIME: &str = "posix.atime";
/// The type of an object that is a symbolic link; its value is the target.
pub const SYMLINK_TYPE: &str = "inode/symlink";

/// Attributes to set on a file (`None`: keep).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New access time.
    pub atime: Option<SystemTime>,
    /// New modification time.
    pub mtime: Option<SystemTime>,
}

impl Change {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Change::default()
    }

    /// Writes the changed attributes into `meta`.
    pub fn apply(&self, meta: &mut Metadata) {
        let number = |n: u32| MetaValue::Num(f64::from(n));
        if let Some(mode) = self.mode {
            meta.insert(MODE.into(), number(mode & 0o7777));
        }
        if let Some(uid) = self.uid {
            meta.insert(UID.into(), number(uid));
        }
        if let Some(gid) = self.gid {
            meta.insert(GID.into(), number(gid));
        }
        if let Some(atime) = self.atime {
            meta.insert(ATIME.into(), MetaValue::Str(format_time(atime)));
        }
        if let Some(mtime) = self.mtime {
            meta.insert(MTIME.into(), MetaValue::Str(format_time(mtime)));
        }
    }

    /// Adds `later`'s changes over these.
    pub fn merge(&mut self, later: &Change) {
        self.mode = later.mode.or(self.mode);
        self.uid = later.uid.or(self.uid);
        self.gid = later.gid.or(self.gid);
        self.atime = later.atime.or(self.atime);
        self.mtime = later.mtime.or(self.mtime);
    }
}

/// New content: its time is the new version's, so explicit times are dropped.
pub fn content_changed(meta: &mut Metadata) {
    meta.remove(MTIME);
    meta.remove(ATIME);
}

/// The attributes stored in `meta`; what is missing or malformed is `None`.
pub fn read(meta: &Metadata) -> Change {
    let number = |key: &str| match meta.get(key) {
        Some(MetaValue::Num(n)) if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(n) => {
            Some(*n as u32)
        }
        _ => None,
    };
    let time = |key: &str| match meta.get(key) {
        Some(MetaValue::Str(text)) => parse_time(text),
        _ => None,
    };
    Change {
        mode: number(MODE).map(|m| m & 0o7777),
        uid: number(UID),
        gid: number(GID),
        atime: time(ATIME),
        mtime: time(MTIME),
    }
}

/// `SECONDS.NANOSECONDS` since the Unix epoch, negative before it.
pub fn format_time(time: SystemTime) -> String {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            format!("-{}.{:09}", d.as_secs(), d.subsec_nanos())
        }
    }
}

/// The inverse of [`format_time`]; `None` for anything else.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, nanos) = text.split_once('.')?;
    if nanos.len() != 9
        || !secs
            .bytes()
            .chain(nanos.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let d = Duration::new(secs.parse().ok()?, nanos.parse().ok()?);
    if negative {
        UNIX_EPOCH.checked_sub(d)
    } else {
        UNIX_EPOCH.checked_add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_nanosecond_on_both_sides_of_the_epoch() {
        for time in [
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            UNIX_EPOCH,
            UNIX_EPOCH - Duration::new(86_400 * 365, 5),
        ] {
            assert_eq!(parse_time(&format_time(time)), Some(time));
        }
        assert_eq!(format_time(UNIX_EPOCH + Duration::new(7, 5)), "7.000000005");
        for bad in [
            "",
            "7",
            "7.5",
            "x.000000000",
            "7.00000000x",
            "--1.000000000",
            "+7.000000000",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn changes_are_stored_read_back_and_merged() {
        let mut meta = Metadata::new();
        meta.insert("colour".into(), MetaValue::Str("red".into()));
        let mtime = UNIX_EPOCH + Duration::new(1_000_000_000, 1);
        let change = Change {
            mode: Some(0o100755),
            uid: Some(1000),
            gid: Some(0),
            atime: None,
            mtime: Some(mtime),
        };
        change.apply(&mut meta);
        let read_back = read(&meta);
        assert_eq!(read_back.mode, Some(0o755), "only permission bits are kept");
        assert_eq!((read_back.uid, read_back.gid), (Some(1000), Some(0)));
        assert_eq!((read_back.mtime, read_back.atime), (Some(mtime), None));
        assert_eq!(meta.get("colour"), Some(&MetaValue::Str("red".into())));

        content_changed(&mut meta);
        assert_eq!(
            read(&meta).mtime,
            None,
            "new content has the version's time"
        );
        assert_eq!(read(&meta).mode, Some(0o755), "and keeps its mode");

        let mut first = Change {
            mode: Some(0o600),
            uid: Some(1),
            ..Change::default()
        };
        first.merge(&Change {
            mode: Some(0o644),
            gid: Some(2),
            ..Change::default()
        });
        assert_eq!(
            (first.mode, first.uid, first.gid),
            (Some(0o644), Some(1), Some(2))
        );
        assert!(Change::default().is_empty() && !first.is_empty());
    }

    #[test]
    fn malformed_attributes_are_ignored() {
        let mut meta = Metadata::new();
        meta.insert(MODE.into(), MetaValue::Num(-1.0));
        meta.insert(UID.into(), MetaValue::Num(1.5));
        meta.insert(GID.into(), MetaValue::Str("root".into()));
        meta.insert(MTIME.into(), MetaValue::Num(5.0));
        meta.insert(ATIME.into(), MetaValue::Str("yesterday".into()));
        assert!(read(&meta).is_empty());
    }
}
