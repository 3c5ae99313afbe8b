//! Names: `Namespace::new`, `ObjectName::new`, `ObjectPath::parse` on text
//! (from the CLI, the API and the mount), and the same types decoded from
//! CBOR (from peers). A valid name parses back from its display.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3_fuzz::decode_checked;
use p3_objectspace::{Namespace, ObjectName, ObjectPath};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ns) = Namespace::new(text) {
            assert_eq!(Namespace::new(ns.as_str()).as_ref(), Ok(&ns));
        }
        if let Ok(name) = ObjectName::new(text) {
            assert_eq!(ObjectName::new(name.as_str()).as_ref(), Ok(&name));
        }
        if let Ok(path) = ObjectPath::parse(text) {
            assert_eq!(path.to_string(), text);
            assert_eq!(ObjectPath::parse(&path.to_string()).as_ref(), Ok(&path));
        }
    }
    let _ = decode_checked::<Namespace>(data);
    let _ = decode_checked::<ObjectName>(data);
    let _ = decode_checked::<ObjectPath>(data);
});
