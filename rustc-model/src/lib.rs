//! `rustc-model`: the `RUSTC_WRAPPER` that turns cargo's rustc calls into thunks.
//!
//! Cargo runs `$RUSTC_WRAPPER /path/to/rustc ARGS…`. Every call the model does not fully understand runs
//! the real rustc unchanged, so a build through the wrapper is never wrong. In this version the model
//! classifies nothing yet: every call is passed through, which makes `RUSTC_WRAPPER=rustc-model`
//! behave exactly like no wrapper at all.
#![deny(missing_docs)]

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// Runs the wrapper on this process's arguments.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(rustc) = args.next() else {
        eprintln!("error: rustc-model is a RUSTC_WRAPPER: cargo runs it as `rustc-model RUSTC ARGS…`");
        return ExitCode::from(101);
    };
    let args: Vec<OsString> = args.collect();
    pass_through(&rustc, &args)
}

/// Replaces this process with the real rustc; returns only if it could not be started.
fn pass_through(rustc: &OsString, args: &[OsString]) -> ExitCode {
    let error = Command::new(rustc).args(args).exec();
    eprintln!("error: rustc-model: cannot run `{}`: {error}", rustc.to_string_lossy());
    ExitCode::from(101)
}
