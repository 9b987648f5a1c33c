//! A persistent cache of file hashes keyed by path, size, mtime and inode, so that naming a 500 MB
//! toolchain, or a package's sources, a second time costs a `stat` per file instead of a re-hash.
//!
//! One small file per entry (named by the hash of the path) keeps concurrent writers from different
//! processes out of each other's way: each entry is replaced atomically by a rename.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::hash::Hash;

/// A file whose mtime is this close to now is hashed but not cached: it may still be changing within the
/// same mtime tick (git's "racy clean" problem).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The hash, size and mode of a file, as of when it was last hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    /// The blake3 hash of its bytes.
    pub hash: Hash,
    /// Its length in bytes.
    pub size: u64,
    /// Whether its owner may execute it.
    pub executable: bool,
    /// The stat data this digest was checked against.
    pub stat: StatKey,
    /// Whether the hash came from the cache (`false`: the file was read and hashed).
    pub from_cache: bool,
}

/// What must be unchanged for a cached hash to still be right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatKey {
    size: u64,
    mtime_s: i64,
    mtime_ns: i64,
    dev: u64,
    ino: u64,
}

impl StatKey {
    /// The key of `metadata`.
    pub fn of(metadata: &fs::Metadata) -> StatKey {
        StatKey {
            size: metadata.size(),
            mtime_s: metadata.mtime(),
            mtime_ns: metadata.mtime_nsec(),
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

/// The cache, in a directory of its own.
#[derive(Debug, Clone)]
pub struct HashCache {
    dir: PathBuf,
}

impl HashCache {
    /// A cache whose entries live in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> HashCache {
        HashCache { dir }
    }

    /// The digest of the file at `path` (absolute), from the cache when its stat data is unchanged.
    pub fn digest(&self, path: &Path) -> io::Result<FileDigest> {
        let entry = self.dir.join(Hash::of(path.as_os_str().as_encoded_bytes()).to_hex());
        let metadata = fs::metadata(path)?;
        let stat = StatKey::of(&metadata);
        let executable = metadata.permissions().mode() & 0o100 != 0;
        if let Some(hash) = read_entry(&entry, stat) {
            return Ok(FileDigest { hash, size: stat.size, executable, stat, from_cache: true });
        }
        // Hash, then check nothing changed meanwhile; a file being rewritten is hashed again.
        for _ in 0..3 {
            let before = StatKey::of(&fs::metadata(path)?);
            let (hash, size) = Hash::of_file(path)?;
            let after_metadata = fs::metadata(path)?;
            let after = StatKey::of(&after_metadata);
            if before == after && size == after.size {
                let modified = after_metadata.modified()?;
                let settled = SystemTime::now().duration_since(modified).is_ok_and(|age| age >= RACY_WINDOW);
                if settled {
                    // A failed write only costs a re-hash next time.
                    let _ = self.write_entry(&entry, after, hash);
                }
                let executable = after_metadata.permissions().mode() & 0o100 != 0;
                return Ok(FileDigest { hash, size, executable, stat: after, from_cache: false });
            }
        }
        Err(io::Error::other(format!("{} kept changing while it was being hashed", path.display())))
    }

    fn write_entry(&self, entry: &Path, stat: StatKey, hash: Hash) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(&self.dir)?;
        let StatKey { size, mtime_s, mtime_ns, dev, ino } = stat;
        writeln!(temp, "v1 {size} {mtime_s} {mtime_ns} {dev} {ino} {hash}")?;
        temp.persist(entry).map_err(|e| e.error)?;
        Ok(())
    }
}

fn read_entry(entry: &Path, stat: StatKey) -> Option<Hash> {
    let text = fs::read_to_string(entry).ok()?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [version, size, mtime_s, mtime_ns, dev, ino, hash] = fields[..] else {
        return None;
    };
    let cached = StatKey {
        size: size.parse().ok()?,
        mtime_s: mtime_s.parse().ok()?,
        mtime_ns: mtime_ns.parse().ok()?,
        dev: dev.parse().ok()?,
        ino: ino.parse().ok()?,
    };
    (version == "v1" && cached == stat).then(|| hash.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache and a file `f` holding `bytes`, last modified `age` seconds ago.
    fn setup(bytes: &[u8], age_seconds: u64) -> (tempfile::TempDir, HashCache, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cache = HashCache::new(dir.path().join("cache"));
        let file = dir.path().join("f");
        fs::write(&file, bytes).unwrap();
        if age_seconds > 0 {
            age(&file, age_seconds);
        }
        (dir, cache, file)
    }

    fn age(path: &Path, seconds: u64) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(seconds)).unwrap();
    }

    #[test]
    fn cached_digest_follows_changes() {
        let (dir, cache, file) = setup(b"one", 60);
        assert_eq!(cache.digest(&file).unwrap().hash, Hash::of(b"one"));
        assert_eq!(fs::read_dir(dir.path().join("cache")).unwrap().count(), 1);
        // Same size, new content and mtime: the entry no longer matches.
        fs::write(&file, b"two").unwrap();
        age(&file, 30);
        assert_eq!(cache.digest(&file).unwrap().hash, Hash::of(b"two"));
    }

    #[test]
    fn a_stale_entry_is_never_trusted() {
        let (dir, cache, file) = setup(b"one", 60);
        cache.digest(&file).unwrap();
        // Rewrite the entry to claim another hash for a different mtime: it must be ignored.
        let entry = fs::read_dir(dir.path().join("cache")).unwrap().next().unwrap().unwrap().path();
        let text = fs::read_to_string(&entry).unwrap();
        let mut fields: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        fields[2] = "1".into();
        fields[6] = Hash::of(b"lie").to_hex();
        fs::write(&entry, fields.join(" ")).unwrap();
        assert_eq!(cache.digest(&file).unwrap().hash, Hash::of(b"one"));
    }

    #[test]
    fn recent_files_are_not_cached() {
        let (dir, cache, file) = setup(b"fresh", 0);
        assert_eq!(cache.digest(&file).unwrap().hash, Hash::of(b"fresh"));
        assert!(!dir.path().join("cache").exists());
    }
}
