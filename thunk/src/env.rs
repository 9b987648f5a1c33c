//! The one module that reads the process environment (clippy's `disallowed_methods` keeps it that way),
//! so what reaches the product's decisions — and later a thunk's env — is decided in one place.
#![allow(clippy::disallowed_methods)]

use std::ffi::OsString;
use std::path::PathBuf;

/// Names the store: a directory or `s3://BUCKET/PREFIX`. Read by the command line parser, as the
/// default of `--store`.
pub const STORE_VAR: &str = "LAMBDABUILD_STORE";

/// The local store and cache directory, the default of `--cache-dir`.
pub const CACHE_DIR_VAR: &str = "LAMBDABUILD_CACHE_DIR";

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

/// The directory of the `cargo lambdabuild` session a wrapper belongs to, if any.
pub const SESSION_VAR: &str = "LAMBDABUILD_SESSION";

/// The session directory from the environment.
pub fn session_dir() -> Option<PathBuf> {
    std::env::var_os(SESSION_VAR).filter(|value| !value.is_empty()).map(PathBuf::from)
}

/// The whole environment of this process, for the model to choose from. Values that are not UTF-8
/// are left out: no thunk can carry them.
pub fn snapshot() -> std::collections::BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

/// The cargo that ran this subcommand (`CARGO`), to run the same one again.
pub fn cargo() -> Option<PathBuf> {
    std::env::var_os("CARGO").filter(|value| !value.is_empty()).map(PathBuf::from)
}

/// One variable of this process's environment, when it is set and UTF-8.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
