//! The rustc command-line parser: any argument list is a unit, a probe or a pass-through, never a
//! panic; a unit's outputs are named under its out-dir.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustc_model::args::{Parsed, parse};

fuzz_target!(|data: &[u8]| {
    // Arguments separated by NUL, as `/proc/PID/cmdline` has them.
    let args: Vec<String> =
        data.split(|byte| *byte == 0).map(|arg| String::from_utf8_lossy(arg).into_owned()).collect();
    if let Parsed::Unit(call) = parse(&args) {
        for (path, _) in call.outputs() {
            assert!(path.starts_with(&call.out_dir), "{path:?} outside {:?}", call.out_dir);
        }
    }
});
