//! Packing a toolchain into a layer and unpacking it safely.
//!
//! The archive is a tar of regular files only, zstd-compressed. Its first entry is the toolchain
//! manifest (`lambdabuild-toolchain.json`), then every file of the manifest in sorted order, with
//! zeroed mtimes, uid and gid, so the same toolchain always packs to the same bytes.
//!
//! Unpacking checks the manifest against the hash the layer is named by, then refuses any entry that is
//! not a regular file, whose path leaves the destination or is not in the manifest, that repeats, or
//! whose bytes or size differ from the manifest; the tree is built in a temporary directory and renamed
//! into place only when complete, so a tree that exists is whole and verified.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thunk::Hash;
use thunk::SandboxPath;
use thunk::hash::HashingReader;
use thunk::manifest::ToolchainManifest;

/// The name of the manifest entry, first in every layer.
pub const MANIFEST_ENTRY: &str = "lambdabuild-toolchain.json";

/// The manifest entry is small; anything larger is not a manifest.
const MAX_MANIFEST: u64 = 16 << 20;

/// Why a layer could not be packed or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// A file of the tree differs from the manifest (packing), or an entry from the manifest (unpacking).
    #[error("layer file `{path}` does not match the toolchain manifest: {reason}")]
    Mismatch {
        /// The file.
        path: String,
        /// How it differs.
        reason: String,
    },
    /// The archive breaks a rule of the layer format; nothing of it was installed.
    #[error("refused toolchain layer: {reason}")]
    Refused {
        /// The broken rule.
        reason: String,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> LayerError {
    let context = context.into();
    move |source| LayerError::Io { context, source }
}

/// What packing produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackStats {
    /// Files packed, the manifest included.
    pub files: usize,
    /// Their total size before compression.
    pub raw_bytes: u64,
}

/// How far back zstd's long-distance matching looks, as a power of two: 128 MiB, the most a decoder
/// accepts without being told (`ZSTD_WINDOWLOG_LIMIT_DEFAULT`), so any zstd can unpack a layer.
const LONG_WINDOW_LOG: u32 = 27;

/// Packs the files of `manifest`, read from the materialized `tree`, into `out` as tar + zstd at `level`,
/// with long-distance matching: a toolchain repeats itself across files far apart (the std rlibs for
/// each target, the LLVM inside rustc's driver and in libLLVM).
/// Every file is hashed as it is read: a tree that drifted from its manifest is an error, not a layer.
pub fn pack(manifest: &ToolchainManifest, tree: &Path, out: impl Write, level: i32) -> Result<PackStats, LayerError> {
    let mut encoder = zstd::Encoder::new(out, level).map_err(io_error("cannot start zstd"))?;
    encoder.long_distance_matching(true).map_err(io_error("cannot start zstd"))?;
    encoder.window_log(LONG_WINDOW_LOG).map_err(io_error("cannot start zstd"))?;
    let mut builder = tar::Builder::new(encoder);
    let manifest_bytes = manifest.canonical_bytes();
    append(&mut builder, MANIFEST_ENTRY, 0o644, manifest_bytes.len() as u64, &manifest_bytes[..])?;
    let mut stats = PackStats { files: 1, raw_bytes: manifest_bytes.len() as u64 };
    for (path, file) in &manifest.files {
        let source = path.under(tree);
        let reader = fs::File::open(&source).map_err(io_error(format!("cannot open {}", source.display())))?;
        let mut hashing = HashingReader::new(reader);
        let mode = if file.executable { 0o755 } else { 0o644 };
        append(&mut builder, path.as_str(), mode, file.size, &mut hashing)?;
        let actual = hashing.finish();
        if actual != (file.hash, file.size) {
            return Err(LayerError::Mismatch {
                path: path.to_string(),
                reason: format!("{} has {} bytes hashing to {}", source.display(), actual.1, actual.0),
            });
        }
        stats.files += 1;
        stats.raw_bytes += file.size;
    }
    let encoder = builder.into_inner().map_err(io_error("cannot finish the tar"))?;
    encoder.finish().map_err(io_error("cannot finish zstd"))?.flush().map_err(io_error("cannot write the layer"))?;
    Ok(stats)
}

fn append(
    builder: &mut tar::Builder<impl Write>,
    path: &str,
    mode: u32,
    size: u64,
    data: impl Read,
) -> Result<(), LayerError> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    // `append_data` writes a GNU long-name entry for paths over 100 bytes and fills the checksum.
    builder.append_data(&mut header, path, data).map_err(io_error(format!("cannot pack {path}")))
}

/// Unpacks the layer named `expected` from `reader` into `dest` (which must not exist yet) and returns its
/// manifest. On any error nothing is left at `dest`.
pub fn unpack(reader: impl Read, expected: Hash, dest: &Path) -> Result<ToolchainManifest, LayerError> {
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error(format!("cannot create {}", parent.display())))?;
    let temp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(io_error(format!("cannot create a directory in {}", parent.display())))?;
    let manifest = unpack_into(reader, expected, temp.path())?;
    let temp: PathBuf = temp.keep();
    fs::rename(&temp, dest).map_err(|e| {
        let _ = fs::remove_dir_all(&temp);
        io_error(format!("cannot move the toolchain into {}", dest.display()))(e)
    })?;
    Ok(manifest)
}

fn refuse(reason: String) -> LayerError {
    LayerError::Refused { reason }
}

fn unpack_into(reader: impl Read, expected: Hash, root: &Path) -> Result<ToolchainManifest, LayerError> {
    let decoder = zstd::Decoder::new(reader).map_err(io_error("cannot start zstd"))?;
    let mut archive = tar::Archive::new(decoder);
    let entries = archive.entries().map_err(io_error("cannot read the layer"))?;
    let mut manifest = None;
    let mut seen = BTreeSet::new();
    for entry in entries {
        let mut entry = entry.map_err(io_error("cannot read the layer"))?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(refuse(format!(
                "entry `{raw_path}` is a {:?}, not a regular file (layers hold only files)",
                entry.header().entry_type()
            )));
        }
        let Some(manifest) = &manifest else {
            if raw_path != MANIFEST_ENTRY || entry.size() > MAX_MANIFEST {
                return Err(refuse(format!("the first entry is `{raw_path}`, not the toolchain manifest")));
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(io_error("cannot read the manifest"))?;
            let actual = Hash::of(&bytes);
            if actual != expected {
                return Err(refuse(format!("its manifest hashes to {actual}, but the layer was named {expected}")));
            }
            manifest = Some(ToolchainManifest::decode(&bytes).map_err(|e| refuse(e.to_string()))?);
            continue;
        };
        let path = SandboxPath::new(&raw_path).map_err(|e| refuse(format!("entry {e}")))?;
        let Some(file) = manifest.files.get(&path) else {
            return Err(refuse(format!("entry `{path}` is not in the toolchain manifest")));
        };
        if !seen.insert(path.clone()) {
            return Err(refuse(format!("entry `{path}` appears twice")));
        }
        let target = path.under(root);
        create_parents(root, &path)?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(io_error(format!("cannot create {}", target.display())))?;
        let mut hashing = HashingReader::new(&mut entry);
        io::copy(&mut hashing, &mut out).map_err(io_error(format!("cannot unpack {path}")))?;
        let (hash, size) = hashing.finish();
        if (hash, size) != (file.hash, file.size) {
            return Err(LayerError::Mismatch {
                path: path.to_string(),
                reason: format!("{size} bytes hashing to {hash}"),
            });
        }
        let mode = if file.executable { 0o755 } else { 0o644 };
        out.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_error(format!("cannot chmod {path}")))?;
    }
    let manifest = manifest.ok_or_else(|| refuse("it is empty".into()))?;
    if let Some(missing) = manifest.files.keys().find(|path| !seen.contains(*path)) {
        return Err(refuse(format!("`{missing}` of the manifest is not in it")));
    }
    Ok(manifest)
}

/// Creates the directories above `path`; only real directories made here are gone through.
fn create_parents(root: &Path, path: &SandboxPath) -> Result<(), LayerError> {
    for ancestor in path.ancestors() {
        let dir = root.join(ancestor);
        match fs::symlink_metadata(&dir) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return Err(refuse(format!("`{ancestor}` is both a file and a directory"))),
            Err(_) => fs::create_dir(&dir).map_err(io_error(format!("cannot create {}", dir.display())))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use thunk::manifest::ToolchainFile;

    const LONG: &str =
        "lib/rustlib/x86_64-unknown-linux-gnu/lib/a-path-longer-than-the-hundred-bytes-of-a-plain-tar-header.rlib";

    struct Tree {
        dir: tempfile::TempDir,
        manifest: ToolchainManifest,
    }

    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = ToolchainManifest::new("x86_64-unknown-linux-gnu".into(), "rustc test".into(), vec![]);
        for (path, bytes, executable) in [
            ("bin/rustc", &b"\x7fELF rustc"[..], true),
            ("lib/librustc_driver-1.so", b"driver", false),
            (LONG, b"std", false),
        ] {
            let file = dir.path().join("tree").join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(&file, bytes).unwrap();
            let hash = Hash::of(bytes);
            manifest
                .files
                .insert(SandboxPath::new(path).unwrap(), ToolchainFile { hash, size: bytes.len() as u64, executable });
        }
        Tree { dir, manifest }
    }

    fn packed(tree: &Tree) -> Vec<u8> {
        let mut bytes = Vec::new();
        pack(&tree.manifest, &tree.dir.path().join("tree"), &mut bytes, 3).unwrap();
        bytes
    }

    /// A layer with arbitrary entries after a valid manifest entry, built without the tar crate's checks.
    fn crafted(tree: &Tree, entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let manifest = tree.manifest.canonical_bytes();
        let mut all = vec![(MANIFEST_ENTRY, tar::EntryType::Regular, &manifest[..])];
        all.extend_from_slice(entries);
        for (path, kind, data) in all {
            let mut header = tar::Header::new_gnu();
            header.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(kind);
            if kind == tar::EntryType::Symlink {
                header.set_link_name("/etc").unwrap();
            }
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        zstd::encode_all(&builder.into_inner().unwrap()[..], 3).unwrap()
    }

    #[test]
    fn packs_deterministically_and_unpacks_the_same_tree() {
        let tree = tree();
        let bytes = packed(&tree);
        assert_eq!(bytes, packed(&tree), "the same toolchain packs to the same bytes");
        let dest = tree.dir.path().join("unpacked");
        let manifest = unpack(&bytes[..], tree.manifest.hash(), &dest).unwrap();
        assert_eq!(manifest, tree.manifest);
        for (path, file) in &manifest.files {
            let unpacked = path.under(&dest);
            assert_eq!(Hash::of(&fs::read(&unpacked).unwrap()), file.hash);
            let mode = fs::metadata(&unpacked).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, if file.executable { 0o755 } else { 0o644 }, "{path}");
        }
    }

    #[test]
    fn packing_a_tree_that_drifted_from_its_manifest_fails() {
        let tree = tree();
        fs::write(tree.dir.path().join("tree/bin/rustc"), b"\x7fELF other").unwrap();
        let err = pack(&tree.manifest, &tree.dir.path().join("tree"), Vec::new(), 3).unwrap_err();
        assert!(err.to_string().starts_with("layer file `bin/rustc` does not match the toolchain manifest"), "{err}");
    }

    #[track_caller]
    fn assert_refused(tree: &Tree, layer: &[u8], expected: &str) {
        let dest = tree.dir.path().join("unpacked");
        let err = unpack(layer, tree.manifest.hash(), &dest).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
        assert!(!dest.exists(), "nothing is installed from a refused layer");
        let leftovers: Vec<_> = fs::read_dir(tree.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, ["tree"], "nothing is left beside it either");
    }

    #[test]
    fn entries_that_escape_are_refused() {
        let tree = tree();
        let regular = tar::EntryType::Regular;
        assert_refused(&tree, &crafted(&tree, &[("../evil", regular, b"x")]), "entry unsafe sandbox path `../evil`");
        assert_refused(&tree, &crafted(&tree, &[("/etc/evil", regular, b"x")]), "it is absolute");
        let symlink = tar::EntryType::Symlink;
        assert_refused(
            &tree,
            &crafted(&tree, &[("bin", symlink, b"")]),
            "entry `bin` is a Symlink, not a regular file",
        );
        let hard = tar::EntryType::Link;
        assert_refused(&tree, &crafted(&tree, &[("bin/rustc", hard, b"")]), "is a Link, not a regular file");
    }

    #[test]
    fn entries_that_differ_from_the_manifest_are_refused() {
        let tree = tree();
        let regular = tar::EntryType::Regular;
        assert_refused(&tree, &crafted(&tree, &[("bin/rustc", regular, b"\x7fELF other")]), "does not match");
        assert_refused(
            &tree,
            &crafted(&tree, &[("bin/extra", regular, b"x")]),
            "`bin/extra` is not in the toolchain manifest",
        );
        let twice = [("bin/rustc", regular, &b"\x7fELF rustc"[..]), ("bin/rustc", regular, b"\x7fELF rustc")];
        assert_refused(&tree, &crafted(&tree, &twice), "entry `bin/rustc` appears twice");
        assert_refused(&tree, &crafted(&tree, &[]), "of the manifest is not in it");
        let err = unpack(&packed(&tree)[..], Hash::of(b"another toolchain"), &tree.dir.path().join("x")).unwrap_err();
        assert!(err.to_string().contains("but the layer was named"), "{err}");
    }
}
