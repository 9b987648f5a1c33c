//! The local store against real files: round trips, concurrent writers, and damaged objects.

mod support;

use std::fs;
use std::sync::Arc;

use support::Fixture;
use thunk::reduction::{BlobRef, Status};
use thunk::{Hash, LocalBackend, ObjectKey, Reduction, Store, StoreError};

#[tokio::test]
async fn objects_round_trip_compressed() {
    let fixture = Fixture::new();
    let bytes = "fn main() {}\n".repeat(1000).into_bytes();
    let hash = fixture.store.put_blob(&bytes).await.unwrap();
    assert_eq!(fixture.store.get_blob(hash).await.unwrap(), bytes);
    let on_disk = fs::read(fixture.store_root().join(ObjectKey::Blob(hash).path())).unwrap();
    assert!(on_disk.len() < bytes.len() / 10, "stored with zstd: {} bytes", on_disk.len());

    let thunk = fixture.script_thunk("true", &["out"]).await;
    let thunk_hash = fixture.store.put_thunk(&thunk).await.unwrap();
    assert_eq!(thunk_hash, thunk.hash());
    assert_eq!(fixture.store.get_thunk(thunk_hash).await.unwrap(), thunk);

    let blob = BlobRef { hash, size: bytes.len() as u64 };
    let reduction = Reduction::new(thunk_hash, Status::Success, blob, blob);
    assert_eq!(fixture.store.get_reduction(thunk_hash).await.unwrap(), None);
    fixture.store.put_reduction(&reduction).await.unwrap();
    assert_eq!(fixture.store.get_reduction(thunk_hash).await.unwrap(), Some(reduction));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_one_object_leave_it_whole() {
    let fixture = Fixture::new();
    let bytes: Vec<u8> = (0..4_000_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let hash = Hash::of(&bytes);
    // Separate store handles, as separate processes would have, all racing to write the same blob
    // while others read it.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Store::new(Arc::new(LocalBackend::open(&fixture.store_root()).unwrap()));
        let bytes = bytes.clone();
        tasks.push(tokio::spawn(async move {
            assert_eq!(store.put_blob(&bytes).await.unwrap(), hash);
            match store.get_blob(hash).await {
                Ok(read) => assert_eq!(read, bytes),
                Err(StoreError::Missing { .. }) => {}
                Err(other) => panic!("a reader saw a torn object: {other}"),
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(fixture.store.get_blob(hash).await.unwrap(), bytes);
    let leftovers: Vec<_> = fs::read_dir(fixture.store_root().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

#[tokio::test]
async fn a_blob_changed_on_disk_is_detected_on_read() {
    let fixture = Fixture::new();
    let hash = fixture.store.put_blob(b"the real bytes").await.unwrap();
    let file = fixture.store_root().join(ObjectKey::Blob(hash).path());
    fs::write(&file, zstd::bulk::compress(b"other bytes", 3).unwrap()).unwrap();
    let err = fixture.store.get_blob(hash).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("blobs/{hash}")) && message.contains(&Hash::of(b"other bytes").to_hex()),
        "{message}"
    );

    fs::write(&file, b"not zstd at all").unwrap();
    let err = fixture.store.get_blob(hash).await.unwrap_err();
    assert!(
        err.to_string().contains("is corrupt: its content hashes to nothing: it is not a valid zstd frame"),
        "{err}"
    );
}

#[tokio::test]
async fn objects_compressed_as_a_stream_or_in_several_frames_are_read() {
    let fixture = Fixture::new();
    let bytes = "fn main() {}\n".repeat(1000).into_bytes();
    let hash = fixture.store.put_blob(&bytes).await.unwrap();
    let file = fixture.store_root().join(ObjectKey::Blob(hash).path());
    // A streaming encoder states no size in the frame; one call cannot size the output for it.
    fs::write(&file, zstd::stream::encode_all(&bytes[..], 1).unwrap()).unwrap();
    assert_eq!(fixture.store.get_blob(hash).await.unwrap(), bytes);
    // Two frames, each stating its own size: the first alone would be taken for the whole object.
    let (head, tail) = bytes.split_at(5000);
    let mut frames = zstd::bulk::compress(head, 1).unwrap();
    frames.extend(zstd::bulk::compress(tail, 1).unwrap());
    fs::write(&file, frames).unwrap();
    assert_eq!(fixture.store.get_blob(hash).await.unwrap(), bytes);
}

#[tokio::test]
async fn a_missing_blob_names_its_hash() {
    let fixture = Fixture::new();
    let hash = Hash::of(b"never stored");
    let err = fixture.store.get_blob(hash).await.unwrap_err();
    assert_eq!(err.to_string(), format!("blobs/{hash} is not in the store ({})", fixture.store_root().display()));
}

#[tokio::test]
async fn damaged_thunks_and_reductions_are_refused() {
    let fixture = Fixture::new();
    let thunk = fixture.script_thunk("true", &["out"]).await;
    let hash = fixture.store.put_thunk(&thunk).await.unwrap();
    let thunk_file = fixture.store_root().join(ObjectKey::Thunk(hash).path());
    let bytes = thunk.canonical_bytes();
    fs::write(&thunk_file, zstd::bulk::compress(&bytes[..bytes.len() - 3], 3).unwrap()).unwrap();
    let err = fixture.store.get_thunk(hash).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "a truncated thunk no longer matches its name: {err}");

    // A reduction filed under the wrong thunk, and one truncated: both refused, neither trusted.
    let blob = BlobRef { hash: Hash::of(b""), size: 0 };
    let other = Reduction::new(Hash::of(b"another thunk"), Status::Success, blob, blob);
    let reduction_file = fixture.store_root().join(ObjectKey::Reduction(hash).path());
    fs::write(&reduction_file, zstd::bulk::compress(&other.encode(), 3).unwrap()).unwrap();
    let err = fixture.store.get_reduction(hash).await.unwrap_err();
    assert!(err.to_string().contains("is stored for thunk"), "{err}");
    let encoded = Reduction::new(hash, Status::Success, blob, blob).encode();
    fs::write(&reduction_file, zstd::bulk::compress(&encoded[..20], 3).unwrap()).unwrap();
    let err = fixture.store.get_reduction(hash).await.unwrap_err();
    assert!(err.to_string().contains("malformed reduction: EOF while parsing"), "{err}");
}

#[tokio::test]
async fn a_stored_thunk_with_an_escaping_path_is_refused_on_read() {
    let fixture = Fixture::new();
    let backend = LocalBackend::open(&fixture.store_root()).unwrap();
    let good = String::from_utf8(fixture.script_thunk("true", &["out"]).await.canonical_bytes()).unwrap();
    for (from, to, message) in [
        ("\"run.sh\":{", "\"../x\":{", "unsafe sandbox path `../x`: it has a `..` component"),
        ("\"run.sh\":{", "\"/etc/passwd\":{", "unsafe sandbox path `/etc/passwd`: it is absolute"),
        ("[\"out\"]", "[\"../../out\"]", "unsafe sandbox path `../../out`: it has a `..` component"),
    ] {
        // Filed under its true hash, as a hostile writer of a shared store could: the name checks out,
        // the content does not.
        let bytes = good.replacen(from, to, 1).into_bytes();
        let hash = Hash::of(&bytes);
        use thunk::store::Backend;
        backend.put(ObjectKey::Thunk(hash), zstd::bulk::compress(&bytes, 3).unwrap()).await.unwrap();
        let err = fixture.store.get_thunk(hash).await.unwrap_err();
        assert!(matches!(err, StoreError::Decode { .. }), "{err}");
        assert!(err.to_string().contains(message), "{err}");
    }
}

#[tokio::test]
async fn a_listing_shows_every_object_of_a_kind_and_nothing_else() {
    let fixture = Fixture::new();
    let first = fixture.store.put_blob(b"first").await.unwrap();
    let second = fixture.store.put_blob(b"second").await.unwrap();
    // A write in progress is a temporary file beside the objects: not an object.
    fs::write(fixture.store_root().join("blobs/.tmp-in-progress"), b"partial").unwrap();
    let backend = LocalBackend::open(&fixture.store_root()).unwrap();
    let page = thunk::store::Backend::list(&backend, "blobs", None).await.unwrap();
    let mut expected = vec![ObjectKey::Blob(first), ObjectKey::Blob(second)];
    expected.sort();
    assert_eq!(page.keys, expected);
    assert!(page.next.is_none());
    assert!(thunk::store::Backend::list(&backend, "thunks", None).await.unwrap().keys.is_empty());
}

#[test]
fn object_keys_parse_back_from_their_paths() {
    let hash = Hash::of(b"x");
    for key in [ObjectKey::Blob(hash), ObjectKey::Thunk(hash), ObjectKey::Reduction(hash), ObjectKey::Toolchain(hash)] {
        assert_eq!(ObjectKey::parse(&key.path()), Some(key));
        assert!(key.path().starts_with(key.kind()));
    }
    for bad in ["blobs/xyz", "toolchains/{hash}", "other/abc", "blobs", ""] {
        assert_eq!(ObjectKey::parse(bad), None, "{bad}");
    }
}
