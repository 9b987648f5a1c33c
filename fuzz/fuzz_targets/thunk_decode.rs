//! The thunk decoder: any bytes decode to a valid thunk or an error, and a decoded thunk's canonical
//! form decodes to the same thunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thunk::Thunk;

fuzz_target!(|data: &[u8]| {
    if let Ok(thunk) = Thunk::decode(data) {
        let canonical = thunk.canonical_bytes();
        let again = Thunk::decode(&canonical).expect("a canonical form decodes");
        assert_eq!(again.canonical_bytes(), canonical, "the canonical form is a fixed point");
    }
});
