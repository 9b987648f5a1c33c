//! Opening the store the settings name: a directory, or S3 with the cache directory in front.

use std::path::PathBuf;

use anyhow::Context;
use store_s3::{S3Options, StoreSpec};
use thunk::Store;
use thunk::workdir::Workdir;

use crate::config::Settings;

/// The store and the machine-local workdir beside it.
pub struct OpenStore {
    /// The store: local, or S3 with the local cache in front.
    pub store: Store,
    /// The local store alone.
    pub local: Store,
    /// The machine-local working directory.
    pub workdir: Workdir,
    /// The local store's directory (for an S3 store, its cache).
    pub dir: PathBuf,
    /// `s3://…` when the store is remote: the wrappers open it too.
    pub remote: Option<String>,
}

/// Opens the store the settings name, or the local store in the cache directory. With `check`, an S3
/// store is checked at once, so a missing bucket or refused credentials give one clear line.
pub async fn open_store(settings: &Settings, check: bool) -> anyhow::Result<OpenStore> {
    let absolute = |dir: PathBuf| -> anyhow::Result<PathBuf> {
        Ok(if dir.is_absolute() { dir } else { std::env::current_dir()?.join(dir) })
    };
    let cache_dir = match &settings.cache_dir {
        Some(dir) => dir.clone(),
        None => thunk::env::default_store_dir()
            .context("cannot find a cache directory: set HOME or XDG_CACHE_HOME, or pass --cache-dir DIR")?,
    };
    let spec = match &settings.store {
        Some(text) => StoreSpec::parse(text)?,
        None => StoreSpec::Local(cache_dir.clone()),
    };
    let spec = match spec {
        StoreSpec::Local(dir) => StoreSpec::Local(absolute(dir)?),
        remote => remote,
    };
    let options =
        S3Options { concurrency: settings.upload_jobs, region: settings.region.clone(), ..S3Options::default() };
    let opened = store_s3::open_store(&spec, &absolute(cache_dir)?, options, check).await?;
    Ok(OpenStore {
        store: opened.store,
        local: opened.local,
        workdir: opened.workdir,
        dir: opened.local_dir,
        remote: spec.remote_url(),
    })
}
