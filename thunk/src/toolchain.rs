//! Naming the local toolchain: which sysroot files a thunk needs, their manifest (hashed through the
//! persistent hash cache), and a materialized tree of exactly those files for the local executor.
//!
//! The toolchain also carries a *linker closure* under `linker/`: the host's C compiler driver (`cc`,
//! which rustc links through), gcc's helpers and startup files, and the C library's development files,
//! at their host paths below `linker/`, and `linker/bin/cc`, a script that runs that driver with
//! `linker/` as its sysroot. In a sandbox the executor puts `linker/bin` first on PATH, so a binary
//! links with nothing from the machine it runs on (a Lambda function has no compiler), byte-identical
//! to linking on the host. In place, rustc keeps using the host's `cc`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::hash::Hash;
use crate::hashcache::{FileDigest, HashCache, StatKey};
use crate::manifest::{ToolchainFile, ToolchainManifest};
use crate::path::SandboxPath;
use crate::store::{Store, StoreError};
use crate::workdir::Workdir;

/// The PATH on which rustc finds its linker driver (`cc`); thunks carry it.
pub const LINKER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Where the linker closure lives in a toolchain tree.
pub const LINKER_DIR: &str = "linker";

/// Files of gcc's own directory a link may use: the linker, its helpers, startup files and libgcc.
const GCC_FILES: &[&str] = &[
    "collect2",
    "lto-wrapper",
    "liblto_plugin.so",
    "crtbegin.o",
    "crtbeginS.o",
    "crtbeginT.o",
    "crtend.o",
    "crtendS.o",
    "libgcc.a",
    "libgcc_eh.a",
    "libgcc_s.so",
];

/// Files of the C library a Rust program links against (`-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc`
/// and the startup files), where the multiarch library directories have them. The static C library
/// itself stays out: only `crt-static` builds need it.
const LIBC_FILES: &[&str] = &[
    "Scrt1.o",
    "crt1.o",
    "crti.o",
    "crtn.o",
    "libc.so",
    "libc.so.6",
    "libc_nonshared.a",
    "libm.so",
    "libm.so.6",
    "libmvec.so",
    "libmvec.so.1",
    "libgcc_s.so.1",
    "libutil.a",
    "libutil.so",
    "libutil.so.1",
    "librt.a",
    "librt.so",
    "librt.so.1",
    "libpthread.a",
    "libpthread.so",
    "libpthread.so.0",
    "libdl.a",
    "libdl.so",
    "libdl.so.2",
];

/// Where a file of the toolchain tree comes from.
enum Source {
    /// A file of this machine (of the sysroot, or of the linker closure).
    File(PathBuf),
    /// Written by cargo-lambdabuild: the linker driver's wrapper.
    Generated(Vec<u8>),
}

/// The files a sandbox links with, and the driver's wrapper.
struct LinkerClosure {
    /// `linker/<host path>` and the host file (symlinks resolved).
    files: Vec<(String, PathBuf)>,
    /// `linker/bin/cc`.
    wrapper: Vec<u8>,
}

/// The linker closure of this machine: `linker/…` paths with their host files, and the wrapper. `None`
/// when there is no `cc` or it does not look like gcc (the toolchain then has no closure, and a
/// sandbox links with whatever `cc` it finds).
fn linker_closure() -> Option<LinkerClosure> {
    let cc = LINKER_PATH.split(':').map(|dir| Path::new(dir).join("cc")).find(|path| path.is_file())?;
    let driver = fs::canonicalize(&cc).ok()?;
    let ask = |flag: &str| -> Option<String> {
        let output = Command::new(&driver).arg(flag).output().ok()?;
        let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
        (output.status.success() && !text.is_empty()).then_some(text)
    };
    let gcc_dir = PathBuf::from(ask("-print-libgcc-file-name")?).parent()?.to_owned();
    let multiarch = ask("-print-multiarch")?;
    let mut wanted: Vec<PathBuf> = vec![driver.clone()];
    wanted.extend(GCC_FILES.iter().map(|name| gcc_dir.join(name)));
    for dir in [format!("/usr/lib/{multiarch}"), format!("/lib/{multiarch}")] {
        wanted.extend(LIBC_FILES.iter().map(|name| Path::new(&dir).join(name)));
    }
    let mut files = std::collections::BTreeMap::new();
    while let Some(path) = wanted.pop() {
        let Ok(real) = fs::canonicalize(&path) else { continue };
        if !real.is_file() || !path.is_absolute() {
            continue;
        }
        let relative = format!("{LINKER_DIR}{}", path.display());
        if files.contains_key(&relative) {
            continue;
        }
        // A linker script names other files by absolute path, resolved inside the sysroot.
        if let Ok(text) = fs::read_to_string(&real)
            && text.contains("GROUP")
        {
            wanted.extend(text.split_whitespace().filter(|word| word.starts_with('/')).map(PathBuf::from));
        }
        files.insert(relative, real);
    }
    let wrapper = format!(
        "#!/bin/sh\n\
         # cargo-lambdabuild: the linker driver of this toolchain, with the toolchain's linker/ as sysroot.\n\
         here=$(dirname \"$0\")\n\
         exec \"$here/..{}\" --sysroot=\"$here/..\" \"$@\"\n",
        driver.display()
    );
    Some(LinkerClosure { files: files.into_iter().collect(), wrapper: wrapper.into_bytes() })
}

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
    let mut sources: Vec<(SandboxPath, Source)> = select_files(sysroot, &host, &all_targets)?
        .into_iter()
        .map(|relative| {
            let path = sysroot.join(relative.as_str());
            (relative, Source::File(path))
        })
        .collect();
    if let Some(LinkerClosure { files, wrapper }) = linker_closure() {
        let named = |relative: &str| {
            SandboxPath::new(relative)
                .map_err(|e| ToolchainError::NotASysroot { sysroot: sysroot.to_owned(), missing: e.to_string() })
        };
        for (relative, path) in files {
            sources.push((named(&relative)?, Source::File(path)));
        }
        sources.push((named(&format!("{LINKER_DIR}/bin/cc"))?, Source::Generated(wrapper)));
    }

    let cache = workdir.hash_cache();
    cache.group_under(sysroot);
    let mut manifest = ToolchainManifest::new(host, release, all_targets);
    let mut stats = BTreeMap::new();
    let mut files_hashed = 0;
    let paths: Vec<&Path> = sources
        .iter()
        .filter_map(|(_, source)| match source {
            Source::File(path) => Some(path.as_path()),
            Source::Generated(_) => None,
        })
        .collect();
    let mut digests = digest_in_parallel(&cache, &paths).into_iter();
    for (relative, source) in &sources {
        let file = match source {
            Source::File(path) => {
                let digest = digests.next().expect("a digest per file");
                let digest = digest.map_err(|source| ToolchainError::Io { path: path.clone(), source })?;
                stats.insert(relative.clone(), digest.stat);
                files_hashed += usize::from(!digest.from_cache);
                ToolchainFile { hash: digest.hash, size: digest.size, executable: digest.executable }
            }
            Source::Generated(bytes) => {
                ToolchainFile { hash: Hash::of(bytes), size: bytes.len() as u64, executable: true }
            }
        };
        manifest.files.insert(relative.clone(), file);
    }
    let manifest_bytes = manifest.canonical_bytes();
    let hash = store.put_blob(&manifest_bytes).await?;
    let dir = workdir.toolchain_dir(hash);
    if !dir.exists() {
        materialize(&sources, &manifest, &stats, workdir, &dir)?;
    }
    Ok(LocalToolchain { hash, manifest, dir, files_hashed })
}

/// The digests of `paths`, in their order, hashed on every core: on a machine's first build the
/// sysroot's 500 MB are hashed before cargo can start, and two cores halve that wait.
fn digest_in_parallel(cache: &HashCache, paths: &[&Path]) -> Vec<io::Result<FileDigest>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Largest first, so that the big libraries do not all land on one thread at the end.
    let mut order: Vec<usize> = (0..paths.len()).collect();
    order.sort_by_key(|&index| std::cmp::Reverse(fs::metadata(paths[index]).map(|m| m.len()).unwrap_or(0)));
    let results: Vec<Mutex<Option<io::Result<FileDigest>>>> = paths.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(&index) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    *results[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(cache.digest(paths[index]));
                }
            });
        }
    });
    results
        .into_iter()
        .map(|result| result.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every file was taken"))
        .collect()
}

/// The hash of the toolchain of `sysroot` (host std only), named once and then remembered while the
/// files that would change it keep their identity: rustc, the sysroot's library directories and the C
/// compiler driver on the linker's PATH. A CI-mode wrapper runs once per rustc call, and naming the
/// toolchain afresh (running `rustc -vV` and the gcc driver, a `stat` per file) would cost most of the
/// wrapper's time on a cache hit.
pub async fn remembered_local_toolchain(
    sysroot: &Path,
    workdir: &Workdir,
    store: &Store,
) -> Result<Hash, ToolchainError> {
    use std::os::unix::fs::MetadataExt;
    let mut key = String::new();
    let cc = LINKER_PATH.split(':').map(|dir| Path::new(dir).join("cc")).find(|path| path.is_file());
    let driver = cc.and_then(|cc| fs::canonicalize(cc).ok());
    let rustlib = sysroot.join("lib/rustlib");
    for path in
        [Some(sysroot.join("bin/rustc")), Some(sysroot.join("lib")), Some(rustlib), driver].into_iter().flatten()
    {
        let metadata = fs::metadata(&path).map_err(|source| ToolchainError::Io { path: path.clone(), source })?;
        let (device, inode, size, mtime) = (metadata.dev(), metadata.ino(), metadata.size(), metadata.mtime_nsec());
        key.push_str(&format!("{} {device} {inode} {size} {} {mtime}\n", path.display(), metadata.mtime()));
    }
    let memo = workdir.toolchains_dir().join("named").join(Hash::of(key.as_bytes()).to_hex());
    if let Some(hash) = fs::read_to_string(&memo).ok().and_then(|text| text.trim().parse::<Hash>().ok())
        && workdir.toolchain_dir(hash).is_dir()
        && store.has(crate::ObjectKey::Blob(hash)).await.unwrap_or(false)
    {
        return Ok(hash);
    }
    let named = name_local_toolchain(sysroot, &[], workdir, store).await?;
    // Only a shortcut: failing to keep it costs the next call the naming again.
    if let Some(dir) = memo.parent()
        && fs::create_dir_all(dir).is_ok()
        && let Ok(mut file) = tempfile::NamedTempFile::new_in(dir)
        && std::io::Write::write_all(&mut file, named.hash.to_hex().as_bytes()).is_ok()
    {
        let _ = file.persist(&memo);
    }
    Ok(named.hash)
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
/// Files are hard links to their source where the filesystem allows (checked to be the very inode that
/// was hashed), copies otherwise (hashed again); generated files are written.
fn materialize(
    sources: &[(SandboxPath, Source)],
    manifest: &ToolchainManifest,
    stats: &BTreeMap<SandboxPath, StatKey>,
    workdir: &Workdir,
    dir: &Path,
) -> Result<(), ToolchainError> {
    let parent = workdir.toolchains_dir();
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ToolchainError::Io { path, source }
    };
    let temp = tempfile::Builder::new().prefix(".tmp-").tempdir_in(&parent).map_err(io_error(&parent))?;
    for (relative, source) in sources {
        let file = &manifest.files[relative];
        let target = temp.path().join(relative.as_str());
        let target_dir = target.parent().expect("toolchain files live in directories");
        fs::create_dir_all(target_dir).map_err(io_error(target_dir))?;
        let verified = match source {
            Source::File(source) if fs::hard_link(source, &target).is_ok() => fs::metadata(&target)
                .map(|m| Some(StatKey::of(&m)) == stats.get(relative).copied())
                .map_err(io_error(&target))?,
            Source::File(source) => {
                fs::copy(source, &target).map_err(io_error(source))?;
                Hash::of_file(&target).map_err(io_error(&target))?.0 == file.hash
            }
            Source::Generated(bytes) => {
                fs::write(&target, bytes).map_err(io_error(&target))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).map_err(io_error(&target))?;
                true
            }
        };
        if !verified {
            let path = match source {
                Source::File(path) => path.clone(),
                Source::Generated(_) => target,
            };
            return Err(ToolchainError::Changed { path });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hashed_in_parallel_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        // Sizes out of order, so that taking the largest first reorders the work.
        let files: Vec<(PathBuf, Vec<u8>)> =
            (0..24).map(|n| (dir.path().join(format!("f{n}")), vec![n as u8; (n * 7919) % 50_000])).collect();
        for (path, bytes) in &files {
            fs::write(path, bytes).unwrap();
        }
        let paths: Vec<&Path> = files.iter().map(|(path, _)| path.as_path()).collect();
        let cache = HashCache::new(dir.path().join("cache"));
        let digests = digest_in_parallel(&cache, &paths);
        assert_eq!(digests.len(), files.len());
        for ((_, bytes), digest) in files.iter().zip(digests) {
            assert_eq!(digest.unwrap().hash, Hash::of(bytes));
        }
        let missing = digest_in_parallel(&cache, &[&dir.path().join("missing")]);
        assert!(missing[0].is_err());
    }
}
