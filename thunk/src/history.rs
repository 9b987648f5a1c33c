//! How long each unit took before: the forcer's expectation of a thunk's run time, learned from the
//! reductions it has seen on this machine.
//!
//! A thunk the forcer has to run has no reduction of its own yet, so the expectation comes from the
//! same unit's earlier thunks: the same crate, crate types, target, optimization level and emit kinds,
//! compiled from older sources or against older dependencies. The forcer uses it to tell a straggler
//! (a run far past what the unit usually takes) from a long compile, and to order ready thunks by the
//! longest remaining path.
//!
//! The table is one small JSON file in the workdir, read when a forcer starts and merged back when it
//! ends: several processes may write it at once (a CI build's wrappers), so a write can lose another
//! process's newest figure, never corrupt the file, and a lost figure is only a worse guess.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::thunk::Thunk;

/// The run times of units, by [`unit_key`].
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    durations: Mutex<BTreeMap<String, u64>>,
    /// What this process learned, merged into the file by [`History::save`].
    learned: Mutex<BTreeMap<String, u64>>,
}

impl History {
    /// The table stored at `path` (empty when there is none, or it cannot be read).
    pub fn open(path: &Path) -> History {
        History { path: path.to_owned(), durations: Mutex::new(read(path)), learned: Mutex::new(BTreeMap::new()) }
    }

    /// An empty table that is never saved.
    pub fn in_memory() -> History {
        History { path: PathBuf::new(), durations: Mutex::default(), learned: Mutex::default() }
    }

    /// How long `thunk`'s unit took the last time it ran, in milliseconds.
    pub fn expected_ms(&self, thunk: &Thunk) -> Option<u64> {
        let key = unit_key(thunk)?;
        self.durations.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied()
    }

    /// Notes that `thunk` ran for `duration_ms` (in a reduction run now or taken from the store).
    pub fn record(&self, thunk: &Thunk, duration_ms: u64) {
        let Some(key) = unit_key(thunk) else { return };
        let known = self.durations.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), duration_ms);
        if known == Some(duration_ms) {
            // A cached reduction read again: nothing new to write.
            return;
        }
        self.learned.lock().unwrap_or_else(|e| e.into_inner()).insert(key, duration_ms);
    }

    /// Merges what this process learned into the file: read again, updated, replaced atomically.
    pub fn save(&self) -> io::Result<()> {
        let learned = std::mem::take(&mut *self.learned.lock().unwrap_or_else(|e| e.into_inner()));
        if learned.is_empty() || self.path.as_os_str().is_empty() {
            return Ok(());
        }
        let mut table = read(&self.path);
        table.extend(learned);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let temp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&temp, &table).map_err(io::Error::other)?;
        temp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

fn read(path: &Path) -> BTreeMap<String, u64> {
    std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

/// What stays the same across a unit's thunks while its sources and dependencies change: the crate,
/// its types, target, optimization level, emit kinds, whether it is a test harness, and the program.
/// `None` for a thunk that names no crate (not a rustc compile).
pub fn unit_key(thunk: &Thunk) -> Option<String> {
    let mut crate_name = None;
    let mut parts = Vec::new();
    let mut args = thunk.args.iter();
    while let Some(arg) = args.next() {
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || value.clone().or_else(|| args.next().cloned()).unwrap_or_default();
        match flag {
            "--crate-name" => crate_name = Some(value()),
            "--crate-type" | "--target" | "--emit" => parts.push(format!("{flag}={}", value())),
            "--test" => parts.push(flag.to_owned()),
            "-C" | "--codegen" => {
                let option = value();
                if option.starts_with("opt-level=") {
                    parts.push(option);
                }
            }
            _ => {}
        }
    }
    let program = thunk.program.0.as_str().rsplit('/').next().unwrap_or_default();
    Some(format!("{program} {} {}", crate_name?, parts.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thunk(args: &[&str]) -> Thunk {
        let mut thunk = crate::thunk::tests::sample();
        thunk.args = args.iter().map(|arg| arg.to_string()).collect();
        thunk
    }

    #[test]
    fn a_unit_is_its_crate_types_target_and_optimization_not_its_sources() {
        let old = thunk(&["--crate-name", "regex", "--crate-type", "lib", "src/lib.rs", "-C", "opt-level=3"]);
        let new = thunk(&["--crate-name", "regex", "--crate-type", "lib", "src/lib2.rs", "-C", "opt-level=3"]);
        assert_eq!(unit_key(&old), unit_key(&new));
        let debug = thunk(&["--crate-name", "regex", "--crate-type", "lib", "src/lib.rs"]);
        assert_ne!(unit_key(&old), unit_key(&debug));
        let test = thunk(&["--crate-name", "regex", "--test", "src/lib.rs", "-C", "opt-level=3"]);
        assert_ne!(unit_key(&old), unit_key(&test));
        let metadata = thunk(&["--crate-name=regex", "--emit=metadata", "src/lib.rs"]);
        assert_ne!(unit_key(&debug), unit_key(&metadata));
        assert_eq!(unit_key(&thunk(&["-vV"])), None);
    }

    #[test]
    fn learned_durations_survive_a_save_and_merge_with_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        let (a, b) = (thunk(&["--crate-name", "a"]), thunk(&["--crate-name", "b"]));
        let first = History::open(&path);
        let second = History::open(&path);
        first.record(&a, 1200);
        second.record(&b, 300);
        first.save().unwrap();
        second.save().unwrap();
        let read = History::open(&path);
        assert_eq!(read.expected_ms(&a), Some(1200));
        assert_eq!(read.expected_ms(&b), Some(300));

        std::fs::write(&path, b"not json").unwrap();
        assert_eq!(History::open(&path).expected_ms(&a), None, "a damaged table is only an empty one");
    }
}
