//! Toolchain manifests: every file of the toolchain a thunk runs with, by path relative to the sysroot,
//! with its hash and mode. A thunk names its toolchain by the manifest's hash; the manifest itself is a
//! blob of the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decode::{DecodeError, decode};
use crate::hash::Hash;
use crate::path::SandboxPath;

/// The revision of the manifest format.
pub const TOOLCHAIN_VERSION: u32 = 1;

const KIND: &str = "toolchain";

/// The files of one toolchain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolchainManifest {
    /// Always `"toolchain"`.
    pub kind: String,
    /// Always [`TOOLCHAIN_VERSION`].
    pub version: u32,
    /// The host triple rustc runs on (`x86_64-unknown-linux-gnu`).
    pub host: String,
    /// rustc's own version line (`rustc 1.95.0 (59807616e 2026-04-14)`), for humans.
    pub release: String,
    /// The targets whose standard library is included.
    pub targets: Vec<String>,
    /// Every file, by path relative to the sysroot.
    pub files: BTreeMap<SandboxPath, ToolchainFile>,
}

/// One file of a toolchain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolchainFile {
    /// The blake3 hash of its bytes.
    pub hash: Hash,
    /// Its length in bytes.
    pub size: u64,
    /// Whether it has the executable bit.
    pub executable: bool,
}

impl ToolchainManifest {
    /// A manifest with the fixed `kind` and `version` filled in.
    pub fn new(host: String, release: String, targets: Vec<String>) -> ToolchainManifest {
        ToolchainManifest {
            kind: KIND.into(),
            version: TOOLCHAIN_VERSION,
            host,
            release,
            targets,
            files: BTreeMap::new(),
        }
    }

    /// The canonical bytes (the fields in declaration order, maps sorted): what is stored and hashed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serializes")
    }

    /// The toolchain's name.
    pub fn hash(&self) -> Hash {
        Hash::of(&self.canonical_bytes())
    }

    /// Reads a manifest.
    pub fn decode(bytes: &[u8]) -> Result<ToolchainManifest, DecodeError> {
        decode(bytes, "toolchain manifest", KIND, TOOLCHAIN_VERSION)
    }

    /// The total size of its files, in bytes.
    pub fn total_size(&self) -> u64 {
        self.files.values().map(|file| file.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_escaping_paths() {
        let mut manifest = ToolchainManifest::new("x86_64-unknown-linux-gnu".into(), "rustc 1".into(), vec![]);
        manifest.files.insert(
            SandboxPath::new("bin/rustc").unwrap(),
            ToolchainFile { hash: Hash::of(b"rustc"), size: 5, executable: true },
        );
        let bytes = manifest.canonical_bytes();
        assert_eq!(ToolchainManifest::decode(&bytes).unwrap(), manifest);
        let text = String::from_utf8(bytes).unwrap().replace("bin/rustc", "../bin/rustc");
        assert!(ToolchainManifest::decode(text.as_bytes()).is_err());
    }
}
