//! Names of namespaces and objects, validated once where they enter the system
//! (CLI, API, peer messages) so everything behind that edge can trust them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest object name, in bytes.
pub const MAX_OBJECT_NAME: usize = 1024;
/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE: usize = 63;

/// Why a name was refused; each says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A namespace name outside `[a-z0-9][a-z0-9._-]{0,62}`.
    #[error("invalid namespace {0:?}: use 1-63 characters from a-z, 0-9, '.', '_', '-', starting with a letter or digit")]
    Namespace(String),
    /// An object name that is empty, too long, or contains NUL.
    #[error("invalid object name {0:?}: use 1-1024 bytes of UTF-8 without NUL")]
    Object(String),
    /// A path without the `/` between namespace and name.
    #[error("invalid object path {0:?}: expected NAMESPACE/NAME, e.g. global/readme.txt")]
    Path(String),
}

/// A namespace name such as `global` or `job-7f3a`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

impl Namespace {
    /// The namespace that always exists.
    pub const GLOBAL: &'static str = "global";

    /// Validates `name` as `[a-z0-9][a-z0-9._-]{0,62}`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let bytes = name.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if first_ok && rest_ok && bytes.len() <= MAX_NAMESPACE {
            Ok(Self(name.to_owned()))
        } else {
            Err(NameError::Namespace(name.to_owned()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An object's name inside its namespace: UTF-8, 1–1024 bytes, no NUL. It may
/// contain `/`, so names read like paths (`results/part-0001`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectName(String);

impl ObjectName {
    /// Validates an object name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() || name.len() > MAX_OBJECT_NAME || name.contains('\0') {
            Err(NameError::Object(name.to_owned()))
        } else {
            Ok(Self(name.to_owned()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A fully qualified object: `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectPath {
    /// The namespace.
    pub namespace: Namespace,
    /// The name inside it.
    pub name: ObjectName,
}

impl ObjectPath {
    /// Parses `NAMESPACE/NAME`; the namespace ends at the first `/`.
    pub fn parse(path: &str) -> Result<Self, NameError> {
        let (namespace, name) = path
            .split_once('/')
            .ok_or_else(|| NameError::Path(path.to_owned()))?;
        Ok(Self {
            namespace: Namespace::new(namespace)?,
            name: ObjectName::new(name)?,
        })
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl TryFrom<String> for Namespace {
    type Error = NameError;
    fn try_from(name: String) -> Result<Self, NameError> {
        Self::new(&name)
    }
}

impl From<Namespace> for String {
    fn from(ns: Namespace) -> String {
        ns.0
    }
}

impl TryFrom<String> for ObjectName {
    type Error = NameError;
    fn try_from(name: String) -> Result<Self, NameError> {
        Self::new(&name)
    }
}

impl From<ObjectName> for String {
    fn from(name: ObjectName) -> String {
        name.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_the_documented_pattern() {
        for good in ["global", "job-7f3a", "a", "0", "a.b_c-d", &"x".repeat(63)] {
            assert!(Namespace::new(good).is_ok(), "{good:?} should be valid");
        }
        for bad in [
            "",
            "Global",
            "-a",
            ".a",
            "_a",
            "a/b",
            "a b",
            "é",
            &"x".repeat(64),
            "a\0",
        ] {
            assert_eq!(
                Namespace::new(bad),
                Err(NameError::Namespace(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn object_names_are_utf8_without_nul_up_to_1024_bytes() {
        for good in [
            "a",
            "dir/sub/file.txt",
            "/leading",
            "ünïcode ✓",
            &"é".repeat(512),
        ] {
            assert!(ObjectName::new(good).is_ok(), "{good:?} should be valid");
        }
        for bad in ["", "a\0b", &"x".repeat(1025), &"é".repeat(513)] {
            assert!(ObjectName::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn paths_split_at_the_first_slash() {
        let path = ObjectPath::parse("global/results/part-1").unwrap();
        assert_eq!(path.namespace.as_str(), "global");
        assert_eq!(path.name.as_str(), "results/part-1");
        assert_eq!(path.to_string(), "global/results/part-1");
        assert!(matches!(
            ObjectPath::parse("global"),
            Err(NameError::Path(_))
        ));
        assert!(matches!(
            ObjectPath::parse("global/"),
            Err(NameError::Object(_))
        ));
        assert!(matches!(
            ObjectPath::parse("Bad/x"),
            Err(NameError::Namespace(_))
        ));
    }

    #[test]
    fn invalid_names_never_deserialize() {
        let mut buf = Vec::new();
        ciborium::into_writer(&"Not-Valid", &mut buf).unwrap();
        assert!(ciborium::from_reader::<Namespace, _>(buf.as_slice()).is_err());
        let mut buf = Vec::new();
        ciborium::into_writer(&ObjectPath::parse("global/x").unwrap(), &mut buf).unwrap();
        let back: ObjectPath = ciborium::from_reader(buf.as_slice()).unwrap();
        assert_eq!(back, ObjectPath::parse("global/x").unwrap());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn cbor_round_trip<T: Serialize + for<'de> Deserialize<'de>>(value: &T) -> T {
            let mut buf = Vec::new();
            ciborium::into_writer(value, &mut buf).unwrap();
            ciborium::from_reader(buf.as_slice()).unwrap()
        }

        proptest! {
            #[test]
            fn every_name_of_the_pattern_is_a_namespace(name in "[a-z0-9][a-z0-9._-]{0,62}") {
                let ns = Namespace::new(&name).unwrap();
                prop_assert_eq!(ns.as_str(), name.as_str());
                prop_assert_eq!(cbor_round_trip(&ns), ns);
            }

            #[test]
            fn anything_outside_the_pattern_is_refused(name in ".{0,70}") {
                let ok = name.len() <= MAX_NAMESPACE
                    && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
                prop_assert_eq!(Namespace::new(&name).is_ok(), ok);
            }

            #[test]
            fn object_names_are_any_utf8_without_nul(name in "[^\u{0}]{1,300}") {
                let valid = name.len() <= MAX_OBJECT_NAME;
                prop_assert_eq!(ObjectName::new(&name).is_ok(), valid);
                if valid {
                    let parsed = ObjectName::new(&name).unwrap();
                    prop_assert_eq!(cbor_round_trip(&parsed), parsed);
                }
                let with_nul = format!("{name}\0");
                prop_assert!(ObjectName::new(&with_nul).is_err());
            }

            #[test]
            fn paths_print_as_they_parse(ns in "[a-z0-9][a-z0-9._-]{0,20}", name in "[^\u{0}]{1,100}") {
                let text = format!("{ns}/{name}");
                let path = ObjectPath::parse(&text).unwrap();
                prop_assert_eq!(path.to_string(), text);
                prop_assert_eq!(path.name.as_str(), name.as_str());
            }
        }
    }
}
