//! The local backend: one file per object under a directory, written by temp file + rename so that
//! several processes writing the same object never leave a torn one.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Backend, ListPage, ObjectKey};

/// A store directory with `blobs/ thunks/ reductions/ toolchains/`.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

const DIRS: [&str; 4] = ["blobs", "thunks", "reductions", "toolchains"];

impl LocalBackend {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> io::Result<LocalBackend> {
        for dir in DIRS {
            fs::create_dir_all(root.join(dir))
                .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", root.join(dir).display())))?;
        }
        Ok(LocalBackend { root: root.to_owned() })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `key` lives on disk.
    pub fn path_of(&self, key: ObjectKey) -> PathBuf {
        self.root.join(key.path())
    }
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    async fn get(&self, key: ObjectKey) -> io::Result<Option<Vec<u8>>> {
        let path = self.path_of(key);
        tokio::task::spawn_blocking(move || match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await?
    }

    async fn put(&self, key: ObjectKey, bytes: Vec<u8>) -> io::Result<()> {
        let path = self.path_of(key);
        tokio::task::spawn_blocking(move || {
            let dir = path.parent().expect("object paths have a directory");
            let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
            temp.write_all(&bytes)?;
            // rename(2) replaces atomically: concurrent writers of one object each rename a complete file.
            // No fsync: after a power loss a torn object fails verification on read and is rebuilt.
            temp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })
        .await?
    }

    async fn has(&self, key: ObjectKey) -> io::Result<bool> {
        let path = self.path_of(key);
        tokio::task::spawn_blocking(move || path.try_exists()).await?
    }

    async fn list(&self, kind: &str, _from: Option<String>) -> io::Result<ListPage> {
        let dir = self.root.join(kind);
        let kind = kind.to_owned();
        // One page: a directory listing is one system call away whatever its size.
        tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            for entry in fs::read_dir(&dir)? {
                let name = entry?.file_name();
                // Temporary files of writes in progress are not objects.
                if let Some(key) = name.to_str().and_then(|name| ObjectKey::parse(&format!("{kind}/{name}"))) {
                    keys.push(key);
                }
            }
            keys.sort();
            Ok(ListPage { keys, next: None })
        })
        .await?
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}
