//! One module per subcommand; each exposes `run`. Shared here: opening the store the user named.

pub mod build;
pub mod deploy;
pub mod describe;
pub mod layer;
pub mod predict;
pub mod stats;
pub mod toolchain;
pub mod upload;

pub use cargo_lambdabuild::store::OpenStore;

use crate::cli::GlobalArgs;

/// Opens the store the settings name, or the local store in the cache directory. An S3 store is
/// checked at once, so a missing bucket or refused credentials give one clear line.
pub async fn open_store(global: &GlobalArgs) -> anyhow::Result<OpenStore> {
    cargo_lambdabuild::store::open_store(global.settings(), true).await
}

/// The machine-local workdir of the store the settings name, opened without talking to a remote store.
pub fn open_workdir(global: &GlobalArgs) -> anyhow::Result<thunk::workdir::Workdir> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(cargo_lambdabuild::store::open_store(global.settings(), false))?.workdir)
}
