//! What the wrapper's CI mode (`RUSTC_WRAPPER=rustc-model cargo …`, see `rustc_model::ci`) opens:
//! the store and engine of the settings — `LAMBDABUILD_*` variables, else the config file, else the
//! local store and engine — and, for the Lambda engine, the uploader that puts a thunk's inputs in the
//! S3 store before it is invoked.

use std::sync::Arc;

use rustc_model::ci::{CiSetup, CiStores, Uploader};
use thunk::Hash;
use thunk::remote::RemoteEngine;

use crate::config::{Given, Settings};
use crate::engine::Engines;
use crate::engine::lambda::LambdaEngine;

/// The settings of this process's environment and config file.
pub struct FromSettings;

#[async_trait::async_trait]
impl CiSetup for FromSettings {
    async fn open(&self) -> Result<CiStores, String> {
        let settings = Settings::resolve(&Given::default()).map_err(|e| format!("{e:#}"))?;
        let engines = Engines::parse(&settings.engine).map_err(|e| format!("{e:#}"))?;
        let opened = crate::store::open_store(&settings, false).await.map_err(|e| format!("{e:#}"))?;
        let remote = match (engines.lambda, &opened.remote) {
            (None, _) => None,
            (Some(_), None) => {
                return Err("the Lambda engine needs an S3 store: set LAMBDABUILD_STORE=s3://BUCKET/PREFIX or \
                            `store` in the config file"
                    .into());
            }
            (Some(_), Some(url)) => {
                let engine: Arc<dyn RemoteEngine> = Arc::new(LambdaEngine::connect(&settings, url).await);
                let uploader: Arc<dyn Uploader> = Arc::new(GraphUploader { jobs: settings.upload_jobs });
                Some((engine, uploader))
            }
        };
        Ok(CiStores { store: opened.store, local: opened.local, workdir: opened.workdir, remote })
    }
}

/// Uploads a thunk's graph (and the packed toolchain, once) as `cargo lambdabuild` does before forcing.
struct GraphUploader {
    jobs: usize,
}

#[async_trait::async_trait]
impl Uploader for GraphUploader {
    async fn upload(&self, stores: &CiStores, thunk: Hash) -> Result<(), String> {
        crate::upload::upload(&stores.store, &stores.workdir, &[thunk], true, self.jobs, false)
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot upload what `{thunk}` needs: {e:#}"))
    }
}
