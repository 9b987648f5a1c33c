//! Machine-local state beside the local store: never shared, always safe to delete.
//!
//! ```text
//! <store>/work/raw/<hash>[.x]     decompressed, verified blobs, hard-linked into sandboxes
//! <store>/work/toolchains/<hash>  materialized toolchain trees (hard links into the sysroot)
//! <store>/work/hashcache/         the stat-keyed hash cache
//! <store>/work/sandboxes/         one directory per running thunk
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::hash::Hash;
use crate::hashcache::HashCache;

/// The machine-local working directory.
#[derive(Debug, Clone)]
pub struct Workdir {
    root: PathBuf,
}

impl Workdir {
    /// Opens (creating if needed) the working directory of the local store at `store_root`.
    pub fn open(store_root: &Path) -> io::Result<Workdir> {
        let workdir = Workdir { root: store_root.join("work") };
        for dir in [workdir.raw_dir(), workdir.toolchains_dir(), workdir.sandboxes_dir()] {
            fs::create_dir_all(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))?;
        }
        Ok(workdir)
    }

    /// Decompressed blobs, one file per hash and mode.
    pub fn raw_dir(&self) -> PathBuf {
        self.root.join("raw")
    }

    /// Materialized toolchain trees.
    pub fn toolchains_dir(&self) -> PathBuf {
        self.root.join("toolchains")
    }

    /// Where the tree of toolchain `hash` lives once materialized.
    pub fn toolchain_dir(&self, hash: Hash) -> PathBuf {
        self.toolchains_dir().join(hash.to_hex())
    }

    /// Sandboxes of running thunks.
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// The hash cache.
    pub fn hash_cache(&self) -> HashCache {
        HashCache::new(self.root.join("hashcache"))
    }
}
