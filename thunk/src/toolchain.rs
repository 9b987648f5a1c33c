//! Naming the local toolchain: which sysroot files a thunk needs, their manifest (hashed through the
//! persistent hash cache), and a materialized tree of exactly those files for the local executor.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::hash::Hash;
use crate::hashcache::StatKey;
use crate::manifest::{ToolchainFile, ToolchainManifest};
use crate::path::SandboxPath;
use crate::store::{Store, StoreError};
use crate::workdir::Workdir;

/// A toolchain of this machine, named and ready for the local executor.
#[derive(Debug, Clone)]
pub struct LocalToolchain {
    /// The manifest's hash: what thunks name.
    pub hash: Hash,
    /// Its files.
    pub manifest: ToolchainManifest,
    /// The materialized tree (a sysroot holding only the manifest's files).
    pub dir: PathBuf,
    /// How many files had to be read and hashed (0 when the hash cache knew them all).
    pub files_hashed: usize,
}

/// Why a toolchain could not be named.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    /// A file of the sysroot could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `rustc -vV` failed or printed something unexpected.
    #[error("cannot ask {rustc} for its version: {message}")]
    Probe {
        /// The rustc binary.
        rustc: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The directory does not look like a rustup-style sysroot.
    #[error(
        "{sysroot} is not a usable rustc sysroot: {missing} is missing (only rustup-style toolchains are supported)"
    )]
    NotASysroot {
        /// The directory.
        sysroot: PathBuf,
        /// The first file or directory not found.
        missing: String,
    },
    /// A sysroot file changed while it was being materialized.
    #[error("{path} changed while the toolchain was being copied; run again")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The manifest could not be stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sysroot of a rustc binary (`<sysroot>/bin/rustc`), following symlinks to the real file.
/// Cargo hands `RUSTC_WRAPPER` the real path; a rustup proxy on PATH must go through `rustc --print sysroot`.
pub fn sysroot_of(rustc: &Path) -> Result<PathBuf, ToolchainError> {
    let io_error = |source| ToolchainError::Io { path: rustc.to_owned(), source };
    let real = fs::canonicalize(rustc).map_err(io_error)?;
    real.parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .ok_or_else(|| ToolchainError::NotASysroot { sysroot: real.clone(), missing: "bin/".into() })
}

/// The sysroot of the `rustc` command (a path, or a name looked up on PATH — a rustup proxy works),
/// as `rustc --print sysroot` reports it when run in `dir` (rustup picks the toolchain from the
/// project directory's `rust-toolchain.toml`, as cargo will).
pub fn query_sysroot(rustc: &std::ffi::OsStr, dir: &Path) -> Result<PathBuf, ToolchainError> {
    let error = |message: String| ToolchainError::Probe { rustc: PathBuf::from(rustc), message };
    let output =
        Command::new(rustc).args(["--print", "sysroot"]).current_dir(dir).output().map_err(|e| error(e.to_string()))?;
    if !output.status.success() {
        return Err(error(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())));
    }
    let text = String::from_utf8(output.stdout).map_err(|_| error("its sysroot is not UTF-8".into()))?;
    Ok(PathBuf::from(text.trim_end_matches(['\n', '\r'])))
}

/// Names the toolchain of `sysroot` with std for its host (and `targets`), stores the manifest as a blob
/// and materializes its tree. A second call with an unchanged sysroot costs a `stat` per file.
pub async fn name_local_toolchain(
    sysroot: &Path,
    targets: &[String],
    workdir: &Workdir,
    store: &Store,
) -> Result<LocalToolchain, ToolchainError> {
    let rustc = sysroot.join("bin/rustc");
    let (host, release) = probe(&rustc)?;
    let mut all_targets = vec![host.clone()];
    all_targets.extend(targets.iter().filter(|t| **t != host).cloned());
    let files = select_files(sysroot, &host, &all_targets)?;

    let cache = workdir.hash_cache();
    let mut manifest = ToolchainManifest::new(host, release, all_targets);
    let mut stats = Vec::with_capacity(files.len());
    let mut files_hashed = 0;
    for relative in files {
        let path = sysroot.join(relative.as_str());
        let digest = cache.digest(&path).map_err(|source| ToolchainError::Io { path: path.clone(), source })?;
        manifest
            .files
            .insert(relative, ToolchainFile { hash: digest.hash, size: digest.size, executable: digest.executable });
        stats.push(digest.stat);
        files_hashed += usize::from(!digest.from_cache);
    }
    let manifest_bytes = manifest.canonical_bytes();
    let hash = store.put_blob(&manifest_bytes).await?;
    let dir = workdir.toolchain_dir(hash);
    if !dir.exists() {
        materialize(sysroot, &manifest, &stats, workdir, &dir)?;
    }
    Ok(LocalToolchain { hash, manifest, dir, files_hashed })
}

fn probe(rustc: &Path) -> Result<(String, String), ToolchainError> {
    let error = |message: String| ToolchainError::Probe { rustc: rustc.to_owned(), message };
    let output = Command::new(rustc).arg("-vV").output().map_err(|e| error(e.to_string()))?;
    if !output.status.success() {
        return Err(error(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let release = text.lines().next().unwrap_or_default().trim().to_owned();
    let host = text
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .ok_or_else(|| error("its output has no `host:` line".into()))?;
    Ok((host.trim().to_owned(), release))
}

/// The files rustc needs to compile and link for `targets` on `host`: rustc, its driver and LLVM, std
/// for each target, and rust-lld with its gcc-ld shims. Sanitizer runtimes, docs and tools stay out.
fn select_files(sysroot: &Path, host: &str, targets: &[String]) -> Result<Vec<SandboxPath>, ToolchainError> {
    let mut files = vec!["bin/rustc".to_owned()];
    let lib = sysroot.join("lib");
    for entry in read_dir(&lib)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let wanted = name.starts_with("librustc_driver-") || name.starts_with("libLLVM");
        if wanted && entry.file_type().map_err(|source| ToolchainError::Io { path: entry.path(), source })?.is_file() {
            files.push(format!("lib/{name}"));
        }
    }
    for target in targets {
        let dir = format!("lib/rustlib/{target}/lib");
        walk(sysroot, &dir, &mut files, &|name| !(name.starts_with("librustc-") && name.contains("_rt.")))?;
    }
    let host_bin = format!("lib/rustlib/{host}/bin");
    for tool in ["rust-lld", "rust-objcopy"] {
        if sysroot.join(&host_bin).join(tool).is_file() {
            files.push(format!("{host_bin}/{tool}"));
        }
    }
    walk(sysroot, &format!("{host_bin}/gcc-ld"), &mut files, &|_| true)?;

    for required in ["bin/rustc", &format!("lib/rustlib/{host}/lib")] {
        if !sysroot.join(required).exists() {
            return Err(ToolchainError::NotASysroot { sysroot: sysroot.to_owned(), missing: required.into() });
        }
    }
    if !files.iter().any(|f| f.starts_with("lib/librustc_driver-")) {
        return Err(ToolchainError::NotASysroot {
            sysroot: sysroot.to_owned(),
            missing: "lib/librustc_driver-*.so".into(),
        });
    }
    files.sort();
    files
        .into_iter()
        .map(|f| {
            SandboxPath::new(&f)
                .map_err(|e| ToolchainError::NotASysroot { sysroot: sysroot.to_owned(), missing: e.to_string() })
        })
        .collect()
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, ToolchainError> {
    let io_error = |source| ToolchainError::Io { path: dir.to_owned(), source };
    fs::read_dir(dir).map_err(io_error)?.collect::<Result<Vec<_>, _>>().map_err(io_error)
}

fn walk(
    sysroot: &Path,
    relative: &str,
    files: &mut Vec<String>,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(), ToolchainError> {
    let dir = sysroot.join(relative);
    if !dir.exists() {
        return Err(ToolchainError::NotASysroot { sysroot: sysroot.to_owned(), missing: relative.into() });
    }
    for entry in read_dir(&dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{relative}/{name}");
        let metadata =
            fs::metadata(entry.path()).map_err(|source| ToolchainError::Io { path: entry.path(), source })?;
        if metadata.is_dir() {
            walk(sysroot, &path, files, keep)?;
        } else if metadata.is_file() && keep(&name) {
            files.push(path);
        }
    }
    Ok(())
}

/// Builds the tree in a temporary directory and renames it into place, so a tree that exists is whole.
/// Files are hard links into the sysroot where the filesystem allows (checked to be the very inode that
/// was hashed), copies otherwise (hashed again).
fn materialize(
    sysroot: &Path,
    manifest: &ToolchainManifest,
    stats: &[StatKey],
    workdir: &Workdir,
    dir: &Path,
) -> Result<(), ToolchainError> {
    let parent = workdir.toolchains_dir();
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ToolchainError::Io { path, source }
    };
    let temp = tempfile::Builder::new().prefix(".tmp-").tempdir_in(&parent).map_err(io_error(&parent))?;
    for ((relative, file), stat) in manifest.files.iter().zip(stats) {
        let source = sysroot.join(relative.as_str());
        let target = temp.path().join(relative.as_str());
        let target_dir = target.parent().expect("toolchain files live in directories");
        fs::create_dir_all(target_dir).map_err(io_error(target_dir))?;
        let verified = if fs::hard_link(&source, &target).is_ok() {
            fs::metadata(&target).map(|m| StatKey::of(&m) == *stat).map_err(io_error(&target))?
        } else {
            fs::copy(&source, &target).map_err(io_error(&source))?;
            Hash::of_file(&target).map_err(io_error(&target))?.0 == file.hash
        };
        if !verified {
            return Err(ToolchainError::Changed { path: source });
        }
    }
    let temp = temp.keep();
    if let Err(error) = fs::rename(&temp, dir) {
        let _ = fs::remove_dir_all(&temp);
        // Another process finished the same tree first: theirs is as good as ours.
        if !dir.exists() {
            return Err(ToolchainError::Io { path: dir.to_owned(), source: error });
        }
    }
    Ok(())
}
