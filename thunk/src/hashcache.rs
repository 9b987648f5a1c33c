//! A persistent cache of file hashes keyed by path, size, mtime and inode, so that naming a 500 MB
//! toolchain, or a package's sources, a second time costs a `stat` per file instead of a re-hash.
//!
//! One small file per directory of hashed files (named by the hash of the directory's path) holds a
//! line per file; a directory the caller groups files under ([`HashCache::group_under`], a package's
//! root, the sysroot) holds the lines of every file below it. A process reads an entry once, and
//! writes what it learned when its cache is dropped (or [`HashCache::flush`]ed): a crate's sources
//! cost one file, not one per directory, which on ext4 soon after a `cargo clean` or `rm -rf` costs
//! more than the hashing (allocating an inode there scans past every recently deleted one). Entries are replaced
//! atomically by a rename after merging what is on disk, so concurrent writers never tear one; two
//! writers racing on one directory may drop each other's new lines, which only costs a re-hash.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::hash::Hash;
use crate::placeholder;

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
    /// Whether the file was a cargo-lambdabuild placeholder when it was hashed. The cache never
    /// keeps a placeholder's hash, so a digest from the cache is never one: a reader that must
    /// refuse placeholders need not open a file the cache knows.
    pub is_placeholder: bool,
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

/// The cache, in a directory of its own. Clones share what was read and learned; it is written
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct HashCache {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    directories: Mutex<HashMap<PathBuf, Directory>>,
    /// Directories whose files share one entry (see [`HashCache::group_under`]).
    groups: Mutex<Vec<PathBuf>>,
}

/// What is known of the files of one directory (or group), by their path relative to it: as read
/// from its entry, plus what this process hashed since (to be written).
#[derive(Debug)]
struct Directory {
    known: HashMap<OsString, (StatKey, Hash)>,
    learned: HashMap<OsString, (StatKey, Hash)>,
}

impl HashCache {
    /// A cache whose entries live in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> HashCache {
        let shared = Shared { dir, directories: Mutex::default(), groups: Mutex::default() };
        HashCache { shared: Arc::new(shared) }
    }

    /// Keeps the hashes of every file below `root` (absolute) in one entry, in this cache and its
    /// clones: for a tree read as a whole, such as a package's sources. Where groups nest, the
    /// innermost wins.
    pub fn group_under(&self, root: &Path) {
        let mut groups = self.shared.groups.lock().unwrap_or_else(|e| e.into_inner());
        if !groups.iter().any(|group| group == root) {
            groups.push(root.to_owned());
            // Innermost first, so that the first match is the deepest.
            groups.sort_by_key(|group| std::cmp::Reverse(group.components().count()));
        }
    }

    /// The digest of the file at `path` (absolute), from the cache when its stat data is unchanged.
    pub fn digest(&self, path: &Path) -> io::Result<FileDigest> {
        let (parent, name) = self.split(path)?;
        let (parent, name) = (parent.as_path(), name.as_os_str());
        let metadata = fs::metadata(path)?;
        let stat = StatKey::of(&metadata);
        let executable = metadata.permissions().mode() & 0o100 != 0;
        if let Some(hash) = self.cached(parent, name, stat) {
            let from_cache = true;
            return Ok(FileDigest { hash, size: stat.size, executable, stat, from_cache, is_placeholder: false });
        }
        // A file small enough to be a placeholder is read whole, to tell.
        if stat.size <= placeholder::MAX_LEN {
            return self.read(path).map(|(digest, _)| digest);
        }
        // Hash, then check nothing changed meanwhile; a file being rewritten is hashed again.
        for _ in 0..3 {
            let before = StatKey::of(&fs::metadata(path)?);
            let (hash, size) = Hash::of_file(path)?;
            let after_metadata = fs::metadata(path)?;
            let after = StatKey::of(&after_metadata);
            if before == after && size == after.size {
                if settled(&after_metadata)? {
                    self.learn(parent, name, after, hash);
                }
                let executable = after_metadata.permissions().mode() & 0o100 != 0;
                let is_placeholder = false;
                return Ok(FileDigest { hash, size, executable, stat: after, from_cache: false, is_placeholder });
            }
        }
        Err(io::Error::other(format!("{} kept changing while it was being hashed", path.display())))
    }

    /// The bytes of the file at `path` with their digest, which is cached as [`HashCache::digest`]
    /// caches it. For a file the caller reads anyway (the model scans every Rust source), one read
    /// instead of one to hash and one to use; hashing bytes in memory costs less than a `stat`.
    pub fn read(&self, path: &Path) -> io::Result<(FileDigest, Vec<u8>)> {
        use std::io::Read;
        let (parent, name) = self.split(path)?;
        let (parent, name) = (parent.as_path(), name.as_os_str());
        for _ in 0..3 {
            let mut file = fs::File::open(path)?;
            let before = file.metadata()?;
            let mut bytes = Vec::with_capacity(before.len() as usize);
            file.read_to_end(&mut bytes)?;
            let after = file.metadata()?;
            let stat = StatKey::of(&after);
            if StatKey::of(&before) == stat && stat.size == bytes.len() as u64 {
                let hash = Hash::of(&bytes);
                let settled = SystemTime::now().duration_since(after.modified()?).is_ok_and(|age| age >= RACY_WINDOW);
                let is_placeholder = placeholder::starts_as_placeholder(&bytes);
                if settled && !is_placeholder && self.cached(parent, name, stat) != Some(hash) {
                    self.learn(parent, name, stat, hash);
                }
                let executable = after.permissions().mode() & 0o100 != 0;
                let digest = FileDigest { hash, size: stat.size, executable, stat, from_cache: false, is_placeholder };
                return Ok((digest, bytes));
            }
        }
        Err(io::Error::other(format!("{} kept changing while it was being read", path.display())))
    }

    /// The entry a file's hash is kept in (its group, else its directory) and its name there.
    fn split(&self, path: &Path) -> io::Result<(PathBuf, OsString)> {
        let groups = self.shared.groups.lock().unwrap_or_else(|e| e.into_inner());
        for group in groups.iter() {
            if let Ok(relative) = path.strip_prefix(group)
                && relative.file_name().is_some()
            {
                return Ok((group.clone(), relative.as_os_str().to_owned()));
            }
        }
        let (parent, name) = split(path)?;
        Ok((parent.to_owned(), name.to_owned()))
    }

    fn learn(&self, parent: &Path, name: &std::ffi::OsStr, stat: StatKey, hash: Hash) {
        // A name with a newline cannot be a line of an entry; that file is hashed every time.
        if !name.as_bytes().contains(&b'\n') {
            self.in_directory(parent, |directory| directory.learned.insert(name.to_owned(), (stat, hash)));
        }
    }

    /// Writes what was learned since the last flush. A failed write only costs re-hashing later.
    pub fn flush(&self) {
        self.shared.flush();
    }

    fn cached(&self, parent: &Path, name: &std::ffi::OsStr, stat: StatKey) -> Option<Hash> {
        self.in_directory(parent, |directory| {
            let (cached, hash) = directory.learned.get(name).or_else(|| directory.known.get(name))?;
            (*cached == stat).then_some(*hash)
        })
    }

    /// Runs `f` on what is known of `parent`, reading its entry the first time.
    fn in_directory<R>(&self, parent: &Path, f: impl FnOnce(&mut Directory) -> R) -> R {
        let mut directories = self.shared.lock();
        let directory = directories.entry(parent.to_owned()).or_insert_with(|| Directory {
            known: read_entry(&self.shared.entry_path(parent)),
            learned: HashMap::new(),
        });
        f(directory)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Directory>> {
        self.directories.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry_path(&self, directory: &Path) -> PathBuf {
        self.dir.join(Hash::of(directory.as_os_str().as_bytes()).to_hex())
    }

    fn flush(&self) {
        let mut directories = self.lock();
        for (path, directory) in directories.iter_mut() {
            if directory.learned.is_empty() {
                continue;
            }
            let entry = self.entry_path(path);
            // Another process may have written lines since this one read the entry: keep them.
            let mut lines = read_entry(&entry);
            lines.extend(directory.learned.drain());
            let _ = write_entry(&self.dir, &entry, &lines);
            directory.known = lines;
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The directory and name of the file at `path`, which cache entries are keyed by.
fn split(path: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(io::Error::other(format!("{} is not a file's path", path.display()))),
    }
}

/// Whether a file last modified as `metadata` says is old enough to cache (see [`RACY_WINDOW`]).
fn settled(metadata: &fs::Metadata) -> io::Result<bool> {
    Ok(SystemTime::now().duration_since(metadata.modified()?).is_ok_and(|age| age >= RACY_WINDOW))
}

/// An entry's lines: `v3 SIZE MTIME_S MTIME_NS DEV INO HASH NAME` (the name last: it may hold spaces).
fn write_entry(dir: &Path, entry: &Path, lines: &HashMap<OsString, (StatKey, Hash)>) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut text = Vec::new();
    for (name, (StatKey { size, mtime_s, mtime_ns, dev, ino }, hash)) in lines {
        write!(text, "v3 {size} {mtime_s} {mtime_ns} {dev} {ino} {hash} ")?;
        text.extend_from_slice(name.as_bytes());
        text.push(b'\n');
    }
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(&text)?;
    temp.persist(entry).map_err(|e| e.error)?;
    Ok(())
}

/// The lines of an entry that parse; a damaged line is skipped (that file is hashed again).
fn read_entry(entry: &Path) -> HashMap<OsString, (StatKey, Hash)> {
    let Ok(bytes) = fs::read(entry) else { return HashMap::new() };
    bytes.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<(OsString, (StatKey, Hash))> {
    let mut fields = line.splitn(8, |&b| b == b' ');
    let mut next = || std::str::from_utf8(fields.next()?).ok();
    // v2 lines may hold a placeholder's hash, which v3 never does (see `FileDigest::is_placeholder`).
    if next()? != "v3" {
        return None;
    }
    let stat = StatKey {
        size: next()?.parse().ok()?,
        mtime_s: next()?.parse().ok()?,
        mtime_ns: next()?.parse().ok()?,
        dev: next()?.parse().ok()?,
        ino: next()?.parse().ok()?,
    };
    let hash = next()?.parse().ok()?;
    let name = fields.next().filter(|name| !name.is_empty())?;
    Some((OsString::from_vec(name.to_vec()), (stat, hash)))
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
        cache.flush();
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
        drop(cache);
        // Rewrite the entry to claim another hash for a different mtime: it must be ignored.
        let entry = fs::read_dir(dir.path().join("cache")).unwrap().next().unwrap().unwrap().path();
        let text = fs::read_to_string(&entry).unwrap();
        let mut fields: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        fields[2] = "1".into();
        fields[6] = Hash::of(b"lie").to_hex();
        fs::write(&entry, fields.join(" ")).unwrap();
        let cache = HashCache::new(dir.path().join("cache"));
        assert_eq!(cache.digest(&file).unwrap().hash, Hash::of(b"one"));
    }

    #[test]
    fn recent_files_are_not_cached() {
        let (dir, cache, file) = setup(b"fresh", 0);
        assert_eq!(cache.digest(&file).unwrap().hash, Hash::of(b"fresh"));
        cache.flush();
        assert!(!dir.path().join("cache").exists());
    }

    #[test]
    fn a_directory_is_one_entry_and_its_writers_merge() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b with spaces"));
        for file in [&a, &b] {
            fs::write(file, file.to_str().unwrap()).unwrap();
            age(file, 60);
        }
        let entries = dir.path().join("cache");
        let (first, second) = (HashCache::new(entries.clone()), HashCache::new(entries.clone()));
        assert!(!first.digest(&a).unwrap().from_cache);
        assert!(!second.digest(&b).unwrap().from_cache);
        drop(first);
        drop(second);
        assert_eq!(fs::read_dir(&entries).unwrap().count(), 1);
        let third = HashCache::new(entries);
        assert!(third.digest(&a).unwrap().from_cache);
        assert!(third.digest(&b).unwrap().from_cache);
    }

    #[test]
    fn a_read_file_is_hashed_and_cached() {
        let (dir, cache, file) = setup(b"fn main() {}", 60);
        let (digest, bytes) = cache.read(&file).unwrap();
        assert_eq!((digest.hash, digest.size, bytes.as_slice()), (Hash::of(b"fn main() {}"), 12, &b"fn main() {}"[..]));
        drop(cache);
        assert!(HashCache::new(dir.path().join("cache")).digest(&file).unwrap().from_cache);
    }

    #[test]
    fn a_group_is_one_entry_for_every_file_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let package = dir.path().join("package");
        let files = [package.join("Cargo.toml"), package.join("src/lib.rs"), package.join("src/a b/mod.rs")];
        for file in &files {
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, file.to_str().unwrap()).unwrap();
            age(file, 60);
        }
        let entries = dir.path().join("cache");
        let cache = HashCache::new(entries.clone());
        cache.group_under(&package);
        for file in &files {
            assert!(!cache.digest(file).unwrap().from_cache);
        }
        drop(cache);
        assert_eq!(fs::read_dir(&entries).unwrap().count(), 1, "three directories, one entry");
        let again = HashCache::new(entries.clone());
        again.group_under(&package);
        for file in &files {
            let digest = again.digest(file).unwrap();
            assert!(digest.from_cache);
            assert_eq!(digest.hash, Hash::of(file.to_str().unwrap().as_bytes()));
        }
        // Without the group the same files are looked up by directory: hashed again, never confused.
        let ungrouped = HashCache::new(entries);
        assert!(!ungrouped.digest(&files[2]).unwrap().from_cache);
    }

    #[test]
    fn a_placeholder_is_hashed_but_never_cached() {
        let dir = tempfile::tempdir().unwrap();
        let (placeholder, source) = (dir.path().join("lib.rs"), dir.path().join("main.rs"));
        let output = crate::SandboxPath::new("t/libx.rlib").unwrap();
        crate::placeholder::Placeholder { thunk: Hash::of(b"t"), output }.write(&placeholder, false).unwrap();
        fs::write(&source, "fn main() {}").unwrap();
        age(&placeholder, 60);
        age(&source, 60);
        let entries = dir.path().join("cache");
        let cache = HashCache::new(entries.clone());
        assert!(cache.digest(&placeholder).unwrap().is_placeholder);
        assert!(cache.read(&placeholder).unwrap().0.is_placeholder);
        assert!(!cache.digest(&source).unwrap().is_placeholder);
        drop(cache);
        // So a digest from the cache is never a placeholder's, and readers need not look again.
        let again = HashCache::new(entries);
        let digest = again.digest(&placeholder).unwrap();
        assert!(!digest.from_cache && digest.is_placeholder);
        assert!(again.digest(&source).unwrap().from_cache);
    }
}
