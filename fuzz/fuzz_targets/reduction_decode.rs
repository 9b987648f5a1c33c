//! The reduction decoder: any bytes decode or fail cleanly, and a decoded reduction encodes to bytes
//! that decode to it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thunk::Reduction;

fuzz_target!(|data: &[u8]| {
    if let Ok(reduction) = Reduction::decode(data, None) {
        let encoded = reduction.encode();
        let again = Reduction::decode(&encoded, Some(reduction.thunk)).expect("an encoded reduction decodes");
        assert_eq!(again.encode(), encoded);
    }
});
