//! Machine-local state beside the local store: never shared, always safe to delete.
//!
//! ```text
//! <store>/work/raw/<hash>[.x]     decompressed, verified blobs, hard-linked into sandboxes
//! <store>/work/toolchains/<hash>  materialized toolchain trees (hard links into the sysroot)
//! <store>/work/hashcache/         the stat-keyed hash cache
//! <store>/work/sandboxes/         one directory per running thunk
//! <store>/work/locks/<name>       flock(2) files: one process runs a thunk (or packs a toolchain), the others wait
//! <store>/work/realized/          which thunk output a real file in a target dir holds
//! <store>/work/remote/<url-hash>.known  the objects a remote store is known to hold
//! <store>/work/stats/<store>.jsonl       the store's counters since the last reset
//! <store>/work/writing/*.entry  writes into target dirs under way (see [`crate::journal`])
//! <store>/work/history.json       how long each unit took before (see [`crate::history`])
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

/// An exclusive `flock(2)` lock from [`Workdir::lock`], held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: fs::File,
}

impl Workdir {
    /// Opens (creating if needed) the working directory of the local store at `store_root`.
    pub fn open(store_root: &Path) -> io::Result<Workdir> {
        let workdir = Workdir { root: store_root.join("work") };
        for dir in [workdir.raw_dir(), workdir.toolchains_dir(), workdir.sandboxes_dir(), workdir.locks_dir()] {
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

    /// The counters of each store used on this machine (see [`crate::stats`]).
    pub fn stats_dir(&self) -> PathBuf {
        self.root.join("stats")
    }

    /// The journal of writes into target dirs.
    pub fn journal(&self) -> crate::journal::Journal {
        crate::journal::Journal::new(self.root.join("writing"))
    }

    /// How long each unit took before.
    pub fn history_path(&self) -> PathBuf {
        self.root.join("history.json")
    }

    /// One lock file per thunk, so that processes forcing the same thunk run it once.
    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Waits for the exclusive lock `name` in [`Workdir::locks_dir`], shared by every process using
    /// this workdir; released when dropped, or when the process dies. Blocks: call it off the runtime.
    pub fn lock(&self, name: &str) -> io::Result<Lock> {
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(self.locks_dir().join(name))?;
        loop {
            match file.lock() {
                Ok(()) => return Ok(Lock { _file: file }),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Which thunk output each real file holds, so that a file the forcer wrote can be linked again.
    pub fn realized_dir(&self) -> PathBuf {
        self.root.join("realized")
    }

    /// Records that `path` now holds `output` of `thunk`, with bytes `hash`.
    pub fn record_realized(&self, path: &Path, thunk: Hash, output: &crate::SandboxPath, hash: Hash) -> io::Result<()> {
        use std::io::Write;
        let dir = self.realized_dir();
        fs::create_dir_all(&dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(&dir)?;
        writeln!(temp, "{thunk} {hash} {output}")?;
        temp.persist(dir.join(Hash::of(path.as_os_str().as_encoded_bytes()).to_hex())).map_err(|e| e.error)?;
        Ok(())
    }

    /// What [`Workdir::record_realized`] recorded for `path`: the thunk, the bytes' hash and the output.
    pub fn realized(&self, path: &Path) -> Option<(Hash, Hash, crate::SandboxPath)> {
        let entry = self.realized_dir().join(Hash::of(path.as_os_str().as_encoded_bytes()).to_hex());
        let text = fs::read_to_string(entry).ok()?;
        let mut fields = text.trim_end().splitn(3, ' ');
        let thunk = fields.next()?.parse().ok()?;
        let hash = fields.next()?.parse().ok()?;
        let output = crate::SandboxPath::new(fields.next()?).ok()?;
        Some((thunk, hash, output))
    }

    /// What the remote store named `url` is known to hold (see [`crate::store::KnownObjects`]).
    pub fn known_objects(&self, url: &str) -> crate::store::KnownObjects {
        let name = Hash::of(url.as_bytes()).to_hex();
        crate::store::KnownObjects::open(&self.root.join("remote").join(format!("{name}.known")))
    }

    /// The hash cache.
    pub fn hash_cache(&self) -> HashCache {
        HashCache::new(self.root.join("hashcache"))
    }
}
