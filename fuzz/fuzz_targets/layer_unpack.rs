//! The layer unpacker on hostile tars: whatever the entries (`../`, absolute paths, links, devices,
//! duplicates, truncation), nothing is written outside the destination, and a refused layer leaves
//! nothing behind. The input is the tar itself (compressed here, so the fuzzer mutates its structure);
//! the layer is named by the hash of its first entry, as a layer that names itself would be, so the
//! fuzzer gets past the manifest check to the entries.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use thunk::Hash;

fuzz_target!(|data: &[u8]| {
    let mut first = Vec::new();
    if let Ok(mut entries) = tar::Archive::new(data).entries()
        && let Some(Ok(mut entry)) = entries.next()
    {
        let _ = entry.by_ref().take(1 << 20).read_to_end(&mut first);
    }
    let Ok(compressed) = zstd::bulk::compress(data, 1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("layer");
    let result = runtime_layer::layer::unpack(compressed.as_slice(), Hash::of(&first), &dest);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    match result {
        Ok(_) => {
            assert_eq!(left, vec![std::ffi::OsString::from("layer")], "only the layer: {left:?}");
            for entry in walk(&dest) {
                let metadata = std::fs::symlink_metadata(&entry).unwrap();
                assert!(metadata.is_file() || metadata.is_dir(), "{entry:?} is neither a file nor a directory");
            }
        }
        Err(_) => assert!(left.is_empty(), "a refused layer leaves nothing: {left:?}"),
    }
});

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}
