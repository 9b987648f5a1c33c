//! What a remote store is known to hold: an append-only list of object keys on this machine, so that
//! an object uploaded (or seen) once is never checked again. Objects are immutable under their names,
//! so the list only grows; if the remote loses objects behind its back, deleting the file (it lives in
//! the workdir) makes every object be checked again.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::ObjectKey;

/// The keys a remote store is known to hold, read from and appended to one file.
#[derive(Debug)]
pub struct KnownObjects {
    path: PathBuf,
    /// Loaded on first use: a wrapper that never asks pays nothing.
    keys: Mutex<Option<HashSet<String>>>,
}

impl KnownObjects {
    /// The list kept in `path` (created on the first insert).
    pub fn open(path: &Path) -> KnownObjects {
        KnownObjects { path: path.to_owned(), keys: Mutex::new(None) }
    }

    /// Whether the remote is known to hold `key`.
    pub fn contains(&self, key: ObjectKey) -> bool {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get_or_insert_with(|| self.load()).contains(&key.path())
    }

    /// Records that the remote holds `key`. Failing to record only costs a check later.
    pub fn insert(&self, key: ObjectKey) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.get_or_insert_with(|| self.load()).insert(key.path()) {
            let _ = self.append(&key.path());
        }
    }

    fn load(&self) -> HashSet<String> {
        // A torn last line (a crash mid-append) is just not a key.
        fs::read_to_string(&self.path)
            .map(|text| text.lines().filter(|line| ObjectKey::parse(line).is_some()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn append(&self, key: &str) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        // One write(2) per line with O_APPEND: lines from several processes never interleave.
        let mut file = fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        file.write_all(format!("{key}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hash;

    #[test]
    fn keys_survive_a_reopen_and_torn_lines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remote/known");
        let blob = ObjectKey::Blob(Hash::of(b"a"));
        let thunk = ObjectKey::Thunk(Hash::of(b"b"));
        let known = KnownObjects::open(&path);
        assert!(!known.contains(blob));
        known.insert(blob);
        known.insert(blob);
        assert!(known.contains(blob));
        fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"thunks/12").unwrap();

        let again = KnownObjects::open(&path);
        assert!(again.contains(blob));
        assert!(!again.contains(thunk));
        assert_eq!(fs::read_to_string(&path).unwrap().matches("blobs/").count(), 1);
    }
}
