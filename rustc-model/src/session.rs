//! The session: what `cargo lambdabuild` tells every wrapper it starts (through `LAMBDABUILD_SESSION`,
//! a directory), and what each wrapper tells it back (a line per rustc call).
//!
//! Wrappers report by appending one line, in one `write`, to a shared file (`O_APPEND`: concurrent
//! appends land whole, one after another), not by creating a file each: creating files is what costs
//! most on ext4 right after a `cargo clean` (an inode allocation scans past every recently deleted
//! inode), and a build makes a thousand such reports.

use std::collections::HashMap;
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
    /// The output index as last read: `THUNK OUTPUT` by the hash of the output's path, in hex (see
    /// [`Session::output_of`]). Lines are parsed when looked up: a call looks up a few dozen of a
    /// build's thousand.
    outputs: std::sync::Arc<std::sync::Mutex<HashMap<String, String>>>,
}

/// The records, a JSON object a line.
const RECORDS: &str = "records.jsonl";
/// The output index, a line `PATH_HASH THUNK OUTPUT` per output.
const OUTPUTS: &str = "outputs.txt";

impl Session {
    /// Creates a session in `dir` (which must exist).
    pub fn create(dir: &Path, config: SessionConfig) -> io::Result<Session> {
        fs::write(dir.join("session.json"), serde_json::to_vec(&config)?)?;
        Ok(Session { dir: dir.to_owned(), config, outputs: Default::default() })
    }

    /// Opens the session in `dir`.
    pub fn open(dir: &Path) -> io::Result<Session> {
        let bytes = fs::read(dir.join("session.json"))?;
        let config = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
        Ok(Session { dir: dir.to_owned(), config, outputs: Default::default() })
    }

    /// Adds a record.
    pub fn record(&self, record: &Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        self.append(RECORDS, &line)
    }

    /// Notes that the real file `path` will hold `output` of `thunk`, so that a later call can link
    /// it without reading the file (the forcer may be writing it at that very moment).
    pub fn index_output(&self, path: &Path, thunk: Hash, output: &thunk::SandboxPath) -> io::Result<()> {
        let line = format!("{} {thunk} {output}\n", Hash::of(path.as_os_str().as_encoded_bytes()));
        self.append(OUTPUTS, line.as_bytes())
    }

    /// Appends `line` to the session's file `name` in a single write.
    fn append(&self, name: &str, line: &[u8]) -> io::Result<()> {
        let mut file = fs::OpenOptions::new().append(true).create(true).open(self.dir.join(name))?;
        let written = file.write(line)?;
        if written != line.len() {
            return Err(io::Error::other(format!("a short write to {}", self.dir.join(name).display())));
        }
        Ok(())
    }

    /// What [`Session::index_output`] noted for `path`: the latest line as of when this process read
    /// the index.
    pub fn output_of(&self, path: &Path) -> Option<(Hash, thunk::SandboxPath)> {
        let key = Hash::of(path.as_os_str().as_encoded_bytes()).to_hex();
        let mut outputs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
        if !outputs.contains_key(&key) {
            // Read once per process, and again only for a path noted since.
            let text = fs::read_to_string(self.dir.join(OUTPUTS)).ok()?;
            for line in text.lines() {
                if let Some((path, rest)) = line.split_once(' ') {
                    outputs.insert(path.to_owned(), rest.to_owned());
                }
            }
        }
        let (thunk, output) = outputs.get(&key)?.split_once(' ')?;
        Some((thunk.parse().ok()?, thunk::SandboxPath::new(output).ok()?))
    }

    /// Every record so far.
    pub fn records(&self) -> io::Result<Vec<Record>> {
        let text = match fs::read(self.dir.join(RECORDS)) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        text.split(|&byte| byte == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).map_err(io::Error::other))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> (tempfile::TempDir, Session) {
        let dir = tempfile::tempdir().unwrap();
        let config = SessionConfig {
            store: dir.path().join("store"),
            remote: None,
            sysroot: dir.path().join("sysroot"),
            toolchain: Hash::of(b"toolchain"),
            target_dir: dir.path().join("target"),
            slots: 2,
        };
        let session = Session::create(dir.path(), config).unwrap();
        (dir, session)
    }

    #[test]
    fn records_from_concurrent_wrappers_all_arrive_whole() {
        let (dir, session) = session();
        assert!(session.records().unwrap().is_empty());
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let session = Session::open(dir.path()).unwrap();
                std::thread::spawn(move || {
                    for call in 0..50 {
                        let record =
                            Record::PassThrough { crate_name: format!("c{writer}_{call}"), reason: "x".repeat(300) };
                        session.record(&record).unwrap();
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|writer| writer.join().unwrap());
        let records = session.records().unwrap();
        assert_eq!(records.len(), 400);
        assert!(records.contains(&Record::PassThrough { crate_name: "c7_49".into(), reason: "x".repeat(300) }));
    }

    #[test]
    fn an_output_noted_after_the_index_was_read_is_found() {
        let (dir, session) = session();
        let output = thunk::SandboxPath::new("out/libfoo.rlib").unwrap();
        let reader = Session::open(dir.path()).unwrap();
        assert_eq!(reader.output_of(Path::new("/t/libfoo.rlib")), None);
        session.index_output(Path::new("/t/libfoo.rlib"), Hash::of(b"a"), &output).unwrap();
        session.index_output(Path::new("/t/libbar.rlib"), Hash::of(b"b"), &output).unwrap();
        assert_eq!(reader.output_of(Path::new("/t/libbar.rlib")), Some((Hash::of(b"b"), output.clone())));
        assert_eq!(reader.output_of(Path::new("/t/libfoo.rlib")), Some((Hash::of(b"a"), output)));
    }
}
