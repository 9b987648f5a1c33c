//! The one module that reads the process environment (clippy's `disallowed_methods` keeps it that way),
//! so what reaches the product's decisions — and later a thunk's env — is decided in one place.
#![allow(clippy::disallowed_methods)]

use std::ffi::OsString;
use std::path::PathBuf;

/// Names the store: a directory today (`s3://BUCKET/PREFIX` once the S3 store exists). Read by the
/// command line parser, as the default of `--store`.
pub const STORE_VAR: &str = "LAMBDABUILD_STORE";

/// The default local store: `$XDG_CACHE_HOME/lambdabuild`, else `~/.cache/lambdabuild`.
pub fn default_store_dir() -> Option<PathBuf> {
    let absolute = |value: OsString| Some(PathBuf::from(value)).filter(|path| path.is_absolute());
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").and_then(absolute) {
        return Some(cache.join("lambdabuild"));
    }
    std::env::var_os("HOME").and_then(absolute).map(|home| home.join(".cache").join("lambdabuild"))
}

/// The `PATH` of this process, to find programs such as `rustc`.
pub fn search_path() -> Option<OsString> {
    std::env::var_os("PATH")
}
