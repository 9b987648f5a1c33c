//! The session: what `cargo lambdabuild` tells every wrapper it starts (through `LAMBDABUILD_SESSION`,
//! a directory), and what each wrapper tells it back (a line per rustc call).
//!
//! Cargo starts before the session's configuration exists: naming the toolchain (hashing half a
//! gigabyte on a first build) overlaps cargo's own start-up. `cargo lambdabuild` holds an exclusive
//! `flock` on `session.lock` from before it starts cargo until `session.json` is in place, and a
//! wrapper that finds no `session.json` waits on that lock (cargo's probes never open the session).
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

/// Written by `cargo lambdabuild` once the toolchain is named, while cargo starts.
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

/// The configuration, [`SessionConfig`] as JSON.
const CONFIG: &str = "session.json";
/// Held (`flock`, exclusive) by `cargo lambdabuild` until the configuration is written.
const OPENING: &str = "session.lock";
/// The records, a JSON object a line.
const RECORDS: &str = "records.jsonl";
/// The output index, a line `PATH_HASH THUNK OUTPUT` per output.
const OUTPUTS: &str = "outputs.txt";

impl Session {
    /// Starts a session in `dir` (which must exist): until [`PendingSession::finish`], wrappers that
    /// open it wait.
    pub fn begin(dir: &Path) -> io::Result<PendingSession> {
        let lock = fs::File::create(dir.join(OPENING))?;
        lock.lock()?;
        Ok(PendingSession { dir: dir.to_owned(), _lock: lock })
    }

    /// Opens the session in `dir`, waiting while `cargo lambdabuild` is still writing it.
    pub fn open(dir: &Path) -> io::Result<Session> {
        let path = dir.join(CONFIG);
        let bytes = match fs::read(&path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let lock = fs::File::open(dir.join(OPENING))?;
                lock.lock_shared()?;
                fs::read(&path).map_err(|error| match error.kind() {
                    io::ErrorKind::NotFound => io::Error::other(
                        "`cargo lambdabuild` stopped before it finished the session (its own error says why)",
                    ),
                    _ => error,
                })?
            }
            read => read?,
        };
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

/// A session whose configuration is not written yet; dropping it unwritten lets the waiting wrappers
/// fail rather than wait forever.
#[derive(Debug)]
pub struct PendingSession {
    dir: PathBuf,
    _lock: fs::File,
}

impl PendingSession {
    /// Writes the configuration (whole, by a rename) and lets the waiting wrappers in.
    pub fn finish(self, config: SessionConfig) -> io::Result<Session> {
        let partial = self.dir.join("session.json.partial");
        fs::write(&partial, serde_json::to_vec(&config)?)?;
        fs::rename(&partial, self.dir.join(CONFIG))?;
        Ok(Session { dir: self.dir, config, outputs: Default::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> SessionConfig {
        SessionConfig {
            store: dir.join("store"),
            remote: None,
            sysroot: dir.join("sysroot"),
            toolchain: Hash::of(b"toolchain"),
            target_dir: dir.join("target"),
            slots: 2,
        }
    }

    fn session() -> (tempfile::TempDir, Session) {
        let dir = tempfile::tempdir().unwrap();
        let session = Session::begin(dir.path()).unwrap().finish(config(dir.path())).unwrap();
        (dir, session)
    }

    #[test]
    fn a_wrapper_started_before_the_session_is_finished_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let pending = Session::begin(dir.path()).unwrap();
        let (opened_in, opened) = std::sync::mpsc::channel();
        let wrapper = {
            let dir = dir.path().to_owned();
            std::thread::spawn(move || opened_in.send(Session::open(&dir).map(|s| s.config.toolchain)).unwrap())
        };
        // Still waiting a while later: the configuration is not there yet.
        assert!(opened.recv_timeout(std::time::Duration::from_millis(200)).is_err());
        pending.finish(config(dir.path())).unwrap();
        let toolchain = opened.recv_timeout(std::time::Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(toolchain, Hash::of(b"toolchain"));
        wrapper.join().unwrap();
    }

    #[test]
    fn a_session_abandoned_before_it_was_finished_fails_its_wrappers() {
        let dir = tempfile::tempdir().unwrap();
        let pending = Session::begin(dir.path()).unwrap();
        let wrapper = {
            let dir = dir.path().to_owned();
            std::thread::spawn(move || Session::open(&dir).map(|_| ()))
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(pending);
        let error = wrapper.join().unwrap().unwrap_err();
        assert!(error.to_string().contains("stopped before it finished the session"), "{error}");
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
