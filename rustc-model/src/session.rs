//! The session: what `cargo lambdabuild` tells every wrapper it starts (through `LAMBDABUILD_SESSION`,
//! a directory), and what each wrapper tells it back (one record file per rustc call).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thunk::Hash;

/// Written by `cargo lambdabuild` before it runs cargo.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionConfig {
    /// The local store directory (for an S3 store, its local cache).
    pub store: PathBuf,
    /// `s3://BUCKET/PREFIX` when the store is remote: build scripts are forced through it, so a
    /// reduction another machine stored is used here.
    #[serde(default)]
    pub remote: Option<String>,
    /// The sysroot of the rustc cargo will run.
    pub sysroot: PathBuf,
    /// That toolchain's hash (already named, so wrappers need not hash it again).
    pub toolchain: Hash,
    /// The target directory of the build; never part of a package's inputs.
    pub target_dir: PathBuf,
    /// Local slots a wrapper may use to force a build script's dependencies.
    pub slots: usize,
}

/// What one rustc call became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    /// A thunk with placeholders (a build script's thunk is forced at once).
    Thunk {
        /// The crate.
        crate_name: String,
        /// The thunk.
        thunk: Hash,
        /// Whether it was a build script, forced during the model phase.
        build_script: bool,
        /// For a build script: every thunk its wrapper forced (the script and its dependencies), and
        /// whether each came from the store.
        forced: Vec<(Hash, bool)>,
    },
    /// rustc ran for real.
    PassThrough {
        /// The crate.
        crate_name: String,
        /// Why the model did not thunk it.
        reason: String,
    },
}

/// A session directory.
#[derive(Debug, Clone)]
pub struct Session {
    /// The directory.
    pub dir: PathBuf,
    /// Its configuration.
    pub config: SessionConfig,
}

impl Session {
    /// Creates a session in `dir` (which must exist).
    pub fn create(dir: &Path, config: SessionConfig) -> io::Result<Session> {
        fs::create_dir_all(dir.join("records"))?;
        fs::write(dir.join("session.json"), serde_json::to_vec(&config)?)?;
        Ok(Session { dir: dir.to_owned(), config })
    }

    /// Opens the session in `dir`.
    pub fn open(dir: &Path) -> io::Result<Session> {
        let bytes = fs::read(dir.join("session.json"))?;
        let config = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
        Ok(Session { dir: dir.to_owned(), config })
    }

    /// Adds a record (one file per call, so concurrent wrappers never share a file).
    pub fn record(&self, record: &Record) -> io::Result<()> {
        let mut file =
            tempfile::Builder::new().prefix("call-").suffix(".json").tempfile_in(self.dir.join("records"))?;
        file.write_all(&serde_json::to_vec(record)?)?;
        file.keep().map_err(|e| e.error)?;
        Ok(())
    }

    /// Notes that the real file `path` will hold `output` of `thunk`, so that a later call can link
    /// it without reading the file (the forcer may be writing it at that very moment).
    pub fn index_output(&self, path: &Path, thunk: Hash, output: &thunk::SandboxPath) -> io::Result<()> {
        let dir = self.dir.join("outputs");
        fs::create_dir_all(&dir)?;
        let mut file = tempfile::NamedTempFile::new_in(&dir)?;
        writeln!(file, "{thunk} {output}")?;
        file.persist(dir.join(Hash::of(path.as_os_str().as_encoded_bytes()).to_hex())).map_err(|e| e.error)?;
        Ok(())
    }

    /// What [`Session::index_output`] noted for `path`.
    pub fn output_of(&self, path: &Path) -> Option<(Hash, thunk::SandboxPath)> {
        let entry = self.dir.join("outputs").join(Hash::of(path.as_os_str().as_encoded_bytes()).to_hex());
        let text = fs::read_to_string(entry).ok()?;
        let (thunk, output) = text.trim_end().split_once(' ')?;
        Some((thunk.parse().ok()?, thunk::SandboxPath::new(output).ok()?))
    }

    /// Every record so far.
    pub fn records(&self) -> io::Result<Vec<Record>> {
        let mut records = Vec::new();
        for entry in fs::read_dir(self.dir.join("records"))? {
            let bytes = fs::read(entry?.path())?;
            records.push(serde_json::from_slice(&bytes).map_err(io::Error::other)?);
        }
        Ok(records)
    }
}
