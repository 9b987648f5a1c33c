//! Writing real bytes where a placeholder (or an outdated file) stands, the way cargo needs them:
//! in place, so every hard link cargo made to the file sees the bytes, and with the file's old mtime,
//! so cargo's fingerprints, which compare mtimes, do not see a change.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `bytes` at `path`, keeping the inode and the mtime of the file already there (if any).
pub fn realize(path: &Path, bytes: &[u8], executable: bool) -> io::Result<()> {
    realize_with(path, executable, |file| file.write_all(bytes))
}

/// [`realize`] with the bytes of the file `source`, copied in the kernel (`copy_file_range`) without
/// passing through this process: a large output realized from the machine's decompressed-blob cache.
pub fn realize_copy(path: &Path, source: &Path, executable: bool) -> io::Result<()> {
    realize_with(path, executable, |file| io::copy(&mut fs::File::open(source)?, file).map(|_| ()))
}

fn realize_with(path: &Path, executable: bool, write: impl FnOnce(&mut fs::File) -> io::Result<()>) -> io::Result<()> {
    let previous = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            return Err(io::Error::other(format!("{} is a symlink; refusing to write through it", path.display())));
        }
        Ok(metadata) => Some(metadata.modified()?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    write(&mut file)?;
    file.set_permissions(fs::Permissions::from_mode(if executable { 0o755 } else { 0o644 }))?;
    if let Some(mtime) = previous {
        file.set_modified(mtime)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn keeps_hard_links_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let deps = dir.path().join("deps-app");
        fs::write(&deps, b"placeholder").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options().write(true).open(&deps).unwrap().set_modified(old).unwrap();
        let uplifted = dir.path().join("app");
        fs::hard_link(&deps, &uplifted).unwrap();

        realize(&deps, b"\x7fELF real", true).unwrap();
        assert_eq!(fs::read(&uplifted).unwrap(), b"\x7fELF real", "the hard link sees the bytes");
        let metadata = fs::metadata(&uplifted).unwrap();
        assert_eq!(metadata.modified().unwrap(), old);
        assert_eq!(metadata.permissions().mode() & 0o777, 0o755);

        let source = dir.path().join("source");
        fs::write(&source, b"\x7fELF copied").unwrap();
        realize_copy(&deps, &source, true).unwrap();
        assert_eq!(fs::read(&uplifted).unwrap(), b"\x7fELF copied");
        assert_eq!(fs::metadata(&uplifted).unwrap().modified().unwrap(), old);
    }
}
