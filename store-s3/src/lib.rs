//! The S3 side of the store, kept out of the crates that do not talk to AWS.
//!
//! [`S3Backend`] implements [`thunk::store::Backend`] over one bucket and prefix, with the standard AWS
//! configuration (credential chain, region, `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_S3`), so the same binary
//! talks to AWS, R2, MinIO or a local test server. [`open_store`] turns what the user named
//! (`--store DIR` or `--store s3://BUCKET/PREFIX`) into a [`Store`]: a remote store always gets the
//! local store in front of it as a cache.
#![deny(missing_docs)]

mod error;
mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{causes, describe_sdk_error};
pub use s3::{S3Backend, S3Location, S3Options};
use thunk::workdir::Workdir;
use thunk::{LocalBackend, Store};

/// Where objects live, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// A directory on this machine.
    Local(PathBuf),
    /// An S3 bucket and prefix.
    S3(S3Location),
}

impl StoreSpec {
    /// Parses `s3://BUCKET[/PREFIX]`, or takes anything else as a directory.
    pub fn parse(text: &str) -> Result<StoreSpec, OpenError> {
        if let Some(rest) = text.strip_prefix("s3://") {
            return S3Location::parse(rest).map(StoreSpec::S3);
        }
        if text.contains("://") {
            return Err(OpenError::Unsupported { spec: text.to_owned() });
        }
        Ok(StoreSpec::Local(PathBuf::from(text)))
    }

    /// The name a session passes on to the wrappers: `s3://…` for a remote store.
    pub fn remote_url(&self) -> Option<String> {
        match self {
            StoreSpec::Local(_) => None,
            StoreSpec::S3(location) => Some(location.to_string()),
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A scheme this version does not know.
    #[error("the store `{spec}` is neither a directory nor s3://BUCKET/PREFIX")]
    Unsupported {
        /// What the user wrote.
        spec: String,
    },
    /// `s3://` without a usable bucket.
    #[error("the store `s3://{spec}` names no valid bucket: write s3://BUCKET/PREFIX")]
    BadBucket {
        /// What followed `s3://`.
        spec: String,
    },
    /// The local store or cache directory could not be opened.
    #[error("cannot open the local store at {path}: {source}")]
    Local {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bucket cannot be used (missing, credentials refused, unreachable).
    #[error("{0}")]
    Remote(String),
}

/// A store opened for use, with the machine-local directory beside its local part.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The store: local, or remote with the local cache in front.
    pub store: Store,
    /// The local store alone (what the model writes thunks to: a wrapper never waits on the network).
    pub local: Store,
    /// The machine-local workdir.
    pub workdir: Workdir,
    /// The local store's directory (the whole store, or the remote store's cache).
    pub local_dir: PathBuf,
}

/// Opens the store named by `spec`; `cache_dir` is the local store (for a remote store, its cache).
/// A remote store is checked first (`check`): a missing bucket or refused credentials are reported
/// here in one line, not on the first object.
pub async fn open_store(
    spec: &StoreSpec,
    cache_dir: &Path,
    options: S3Options,
    check: bool,
) -> Result<Opened, OpenError> {
    let local_dir = match spec {
        StoreSpec::Local(dir) => dir.clone(),
        StoreSpec::S3(_) => cache_dir.to_owned(),
    };
    let local_error = |source| OpenError::Local { path: local_dir.clone(), source };
    let local_backend = LocalBackend::open(&local_dir).map_err(local_error)?;
    let workdir = Workdir::open(&local_dir).map_err(local_error)?;
    let local = Store::new(Arc::new(local_backend.clone()));
    let store = match spec {
        StoreSpec::Local(_) => local.clone(),
        StoreSpec::S3(location) => {
            let backend = S3Backend::connect(location.clone(), options).await;
            if check {
                backend.check().await.map_err(|e| OpenError::Remote(e.to_string()))?;
            }
            let known = workdir.known_objects(&location.to_string());
            Store::cached(Arc::new(backend), local_backend, known)
        }
    };
    Ok(Opened { store, local, workdir, local_dir })
}
