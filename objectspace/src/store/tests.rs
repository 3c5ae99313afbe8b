use super::*;
use crate::blob::Chunker;

fn open(dir: &std::path::Path, cache: u64) -> Store {
    let cfs: Vec<&str> = COLUMN_FAMILIES.to_vec();
    Store::open(Database::open(dir, &cfs).unwrap(), cache).unwrap()
}

fn put_blob(store: &Store, bytes: &[u8]) -> (BlobHash, Pin) {
    let mut writer = store.writer();
    let mut chunker = Chunker::new();
    chunker
        .push(bytes, |h, c| writer.write_chunk(h, c))
        .unwrap();
    let (hash, manifest) = chunker.finish(|h, c| writer.write_chunk(h, c)).unwrap();
    let pin = writer.commit(hash, manifest).unwrap();
    (hash, pin)
}

fn record(name: &str, version: u64, blob: Option<BlobHash>) -> ObjectRecord {
    ObjectRecord {
        ns: Namespace::new("global").unwrap(),
        name: ObjectName::new(name).unwrap(),
        version,
        ns_incarnation: 0,
        blob,
        size: 0,
        type_tag: String::new(),
        meta: Default::default(),
        created_ms: 1,
        modified_ms: 1,
        expires_ms: None,
        volatile: false,
        epoch: 0,
        signature: None,
    }
}

fn read_back(store: &Store, hash: &BlobHash) -> Vec<u8> {
    let manifest = store.manifest(hash).unwrap().unwrap();
    manifest
        .chunks()
        .iter()
        .flat_map(|c| store.chunk(c).unwrap().unwrap())
        .collect()
}

#[test]
fn records_and_blobs_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..3 * crate::blob::CHUNK_SIZE + 5)
        .map(|i| i as u8)
        .collect();
    let hash = {
        let store = open(dir.path(), 1 << 30);
        let (hash, _pin) = put_blob(&store, &data);
        store.put_record(&record("a/b", 1, Some(hash))).unwrap();
        hash
    };
    let store = open(dir.path(), 1 << 30);
    let got = store
        .record(
            &Namespace::new("global").unwrap(),
            &ObjectName::new("a/b").unwrap(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(got.blob, Some(hash));
    assert_eq!(read_back(&store, &hash), data);
}

#[test]
fn unreferenced_blobs_are_evicted_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 2500);
    let (a, pin_a) = put_blob(&store, &[1u8; 1000]);
    let (b, pin_b) = put_blob(&store, &[2u8; 1000]);
    drop((pin_a, pin_b));
    store.touch(&a); // b is now the oldest
    let (c, _pin_c) = put_blob(&store, &[3u8; 1000]);
    assert!(store.has_blob(&a).unwrap());
    assert!(
        !store.has_blob(&b).unwrap(),
        "least recently used goes first"
    );
    assert!(store.has_blob(&c).unwrap());
    assert!(store.cached_bytes() <= 2500);
    assert_eq!(store.take_evicted(), vec![b]);
    assert!(store.chunk(&BlobHash::of(&[2u8; 1000])).unwrap().is_none());
}

#[test]
fn referenced_and_pinned_blobs_are_never_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 0);
    let (a, pin) = put_blob(&store, b"owned value");
    store.put_record(&record("x", 1, Some(a))).unwrap();
    drop(pin);
    let (_b, _pinned) = put_blob(&store, b"pinned value");
    assert!(store.has_blob(&a).unwrap());
    assert!(store.has_blob(&_b).unwrap());
    // Replacing the record releases the old blob to the (zero-sized) cache.
    store.put_record(&record("x", 2, None)).unwrap();
    assert!(!store.has_blob(&a).unwrap());
}

#[test]
fn shared_chunks_outlive_an_abandoned_upload() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 30);
    let (hash, _pin) = put_blob(&store, b"shared");
    let mut abandoned = store.writer();
    abandoned
        .write_chunk(BlobHash::of(b"shared"), b"shared")
        .unwrap();
    abandoned
        .write_chunk(BlobHash::of(b"other"), b"other")
        .unwrap();
    drop(abandoned);
    assert_eq!(read_back(&store, &hash), b"shared");
    assert!(store.chunk(&BlobHash::of(b"other")).unwrap().is_none());
}

#[test]
fn listing_is_by_namespace_and_prefix_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 30);
    for name in ["dir/b", "dir/a", "dir2/c", "other"] {
        store.put_record(&record(name, 1, None)).unwrap();
    }
    let ns = Namespace::new("global").unwrap();
    let names = |records: Vec<ObjectRecord>| -> Vec<String> {
        records.into_iter().map(|r| r.name.to_string()).collect()
    };
    assert_eq!(
        names(store.list(&ns, "dir/", None, 10).unwrap()),
        ["dir/a", "dir/b"]
    );
    let after = ObjectName::new("dir/a").unwrap();
    assert_eq!(
        names(store.list(&ns, "dir", Some(&after), 10).unwrap()),
        ["dir/b", "dir2/c"]
    );
    assert!(store
        .list(&Namespace::new("glob").unwrap(), "", None, 10)
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_small_value_stored_with_its_record_is_counted_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let value = b"a small value".as_slice();
    let hash = BlobHash::of(value);
    {
        // Zero cache: a value no record uses is gone at once.
        let store = open(dir.path(), 0);
        // An upload in progress holds the same chunk...
        let mut upload = store.writer();
        upload.write_chunk(hash, value).unwrap();
        store
            .put_record_with_value(&record("x", 1, Some(hash)), value)
            .await
            .unwrap();
        // ...and gives it back: the record's blob keeps it.
        drop(upload);
        // A second record of the same value only counts.
        store
            .put_record_with_value(&record("y", 1, Some(hash)), value)
            .await
            .unwrap();
    }
    let store = open(dir.path(), 0);
    assert_eq!(read_back(&store, &hash), value, "durable across reopen");
    store.put_record(&record("x", 2, None)).unwrap();
    assert!(store.has_blob(&hash).unwrap(), "y still uses it");
    store.put_record(&record("y", 2, None)).unwrap();
    assert!(!store.has_blob(&hash).unwrap());
    assert!(store.chunk(&hash).unwrap().is_none(), "its chunk went too");
}

#[tokio::test]
async fn the_empty_value_is_stored_with_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 0);
    let hash = BlobHash::of(b"");
    store
        .put_record_with_value(&record("empty", 1, Some(hash)), b"")
        .await
        .unwrap();
    assert_eq!(store.manifest(&hash).unwrap().unwrap().size(), 0);
    assert_eq!(read_back(&store, &hash), b"");
}
