//! One module per subcommand; each exposes `run`. Shared here: opening the store the user named.

pub mod build;
pub mod describe;
pub mod toolchain;

use std::sync::Arc;

use anyhow::{Context, bail};
use thunk::workdir::Workdir;
use thunk::{LocalBackend, Store};

use crate::cli::GlobalArgs;

/// The store and the machine-local workdir beside it.
pub struct OpenStore {
    pub store: Store,
    pub workdir: Workdir,
    /// The store's directory.
    pub dir: std::path::PathBuf,
}

/// Opens the store named by `--store` / `LAMBDABUILD_STORE`, or the default under the user's cache dir.
pub fn open_store(global: &GlobalArgs) -> anyhow::Result<OpenStore> {
    let dir = match &global.store {
        Some(dir) => dir.clone(),
        None => thunk::env::default_store_dir()
            .context("cannot find a cache directory for the store: set HOME or XDG_CACHE_HOME, or pass --store DIR")?,
    };
    if dir.to_str().is_some_and(|text| text.contains("://")) {
        bail!("the store `{}` is not a directory; only local directory stores are supported so far", dir.display());
    }
    let dir = if dir.is_absolute() { dir } else { std::env::current_dir()?.join(dir) };
    let backend = LocalBackend::open(&dir).with_context(|| format!("cannot open the store at {}", dir.display()))?;
    let workdir = Workdir::open(&dir).with_context(|| format!("cannot open the store at {}", dir.display()))?;
    Ok(OpenStore { store: Store::new(Arc::new(backend)), workdir, dir })
}
