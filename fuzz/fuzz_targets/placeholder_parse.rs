//! The placeholder parser: any file is a placeholder, not one, or a damaged one, never a panic; a
//! parsed placeholder written again parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thunk::placeholder::Placeholder;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(placeholder)) = Placeholder::parse(data) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("artifact");
        placeholder.write(&path, false).unwrap();
        let again = Placeholder::read(&path).unwrap().expect("a written placeholder reads back");
        assert_eq!(again, placeholder);
    }
});
