//! Thunks: one process run described completely — toolchain, program, args, env, every input and the
//! outputs it promises — and named by the blake3 hash of its canonical form.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::decode::{DecodeError, decode};
use crate::hash::Hash;
use crate::path::{SandboxPath, resolve_symlink};

/// The revision of the canonical thunk form. Every change to [`Thunk::canonical_bytes`] bumps it, which
/// renames every thunk (old cache entries are simply never hit again).
pub const THUNK_VERSION: u32 = 3;

/// Stands for the absolute path of the sandbox root in `args` and `env` values; the executor expands it.
/// Used where a tool insists on an absolute path (`CARGO_MANIFEST_DIR`, `OUT_DIR`, remap prefixes).
pub const SANDBOX_TOKEN: &str = "@SANDBOX@";

/// The longest timeout a thunk may ask for (a day): beyond that a number is surely a mistake.
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// One process run, described so completely that it can run anywhere the toolchain can be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thunk {
    /// The hash of the [`ToolchainManifest`](crate::manifest::ToolchainManifest) the executor puts
    /// under `_toolchain/` in the sandbox.
    pub toolchain: Hash,
    /// The program to run, relative to the sandbox root (usually `_toolchain/bin/rustc`).
    pub program: ProgramPath,
    /// Its arguments, `@SANDBOX@` expanded by the executor.
    pub args: Vec<String>,
    /// The working directory, relative to the sandbox root (`None`: the root itself). Cargo runs rustc
    /// in the workspace or package root with relative source paths, which rustc records as written.
    pub cwd: Option<SandboxPath>,
    /// Its whole environment: nothing else is inherited. `@SANDBOX@` in values is expanded.
    pub env: BTreeMap<String, String>,
    /// Every file the run may read, by sandbox path.
    pub inputs: BTreeMap<SandboxPath, Input>,
    /// The files the run promises to write; a missing one fails the reduction.
    pub outputs: BTreeSet<SandboxPath>,
    /// The run is killed, with its whole process group, after this many milliseconds.
    pub timeout_ms: u64,
    /// How much memory the run needs, so an engine can pick a worker size.
    pub memory: MemoryClass,
    /// Where it may run: anywhere, or only where its paths are the real ones.
    pub placement: Placement,
}

/// Where a thunk may run.
///
/// In a sandbox, `--remap-path-prefix` maps the paths rustc records (debug info, `file!()`, panics)
/// back to the real ones, but nothing maps a path the crate compiles in as a value:
/// `env!("CARGO_MANIFEST_DIR")` would hold the sandbox's directory. Such a thunk runs only in place,
/// on the machine whose paths it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Any engine: its outputs do not depend on where the sandbox is.
    Anywhere,
    /// Only in place (the local engine): the crate compiles in an absolute path from the environment.
    RealPaths,
}

/// The program path of a thunk: a [`SandboxPath`] that may also point into the toolchain directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramPath(pub SandboxPath);

impl Serialize for ProgramPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ProgramPath {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ProgramPath, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        SandboxPath::program(&text).map(ProgramPath).map_err(serde::de::Error::custom)
    }
}

/// Where the bytes of one input come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Input {
    /// A blob of the store.
    Blob {
        /// The blake3 hash of its bytes.
        hash: Hash,
        /// Its length in bytes.
        size: u64,
        /// Whether it is materialized with the executable bit.
        executable: bool,
    },
    /// An output of another thunk (`THUNK#OUTPUT`), known once that thunk has been forced.
    Link {
        /// The producing thunk.
        thunk: Hash,
        /// Which of its outputs.
        output: SandboxPath,
    },
    /// A symbolic link, whose target must resolve inside the sandbox.
    Symlink {
        /// The link's target, relative to the directory that holds the link.
        target: String,
    },
}

/// The memory an engine should give a thunk's worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryClass {
    /// Up to 2 GiB: most crates.
    Standard,
    /// Up to 10 GiB: large crates and links with heavy LTO.
    Large,
}

impl MemoryClass {
    /// The memory, in MiB, a worker of this class gets.
    pub fn mib(self) -> u32 {
        match self {
            MemoryClass::Standard => 2048,
            MemoryClass::Large => 10240,
        }
    }
}

/// The canonical form: field names and order are fixed by this struct, maps are `BTreeMap`s (sorted),
/// and serde_json writes compact output with one escaping rule, so equal thunks have equal bytes.
#[derive(Serialize)]
struct Canonical<'a> {
    // 1. What the bytes are and which revision of this form wrote them.
    kind: &'static str,
    version: u32,
    // 2. The toolchain by manifest hash: rustc, its libraries, std and the linker closure.
    toolchain: &'a Hash,
    // 3. What runs, in order: the program and every argument, and the directory it runs in.
    program: &'a ProgramPath,
    args: &'a [String],
    cwd: &'a Option<SandboxPath>,
    // 4. The complete environment, sorted by name.
    env: &'a BTreeMap<String, String>,
    // 5. Every input by sandbox path, sorted: blob (hash, size, mode), link to an output, or symlink.
    inputs: &'a BTreeMap<SandboxPath, Input>,
    // 6. The promised outputs, sorted.
    outputs: &'a BTreeSet<SandboxPath>,
    // 7. Limits: they change where and how long a thunk may run, so they are part of its name.
    timeout_ms: u64,
    memory: MemoryClass,
    // 8. Where it may run: a thunk that compiles in a real path gives other bytes in a sandbox.
    placement: Placement,
}

/// The decoding twin of [`Canonical`] (serde cannot combine `flatten` with `deny_unknown_fields`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(rename = "version")]
    _version: u32,
    toolchain: Hash,
    program: ProgramPath,
    args: Vec<String>,
    cwd: Option<SandboxPath>,
    env: BTreeMap<String, String>,
    inputs: BTreeMap<SandboxPath, Input>,
    outputs: BTreeSet<SandboxPath>,
    timeout_ms: u64,
    memory: MemoryClass,
    placement: Placement,
}

const KIND: &str = "thunk";

impl Thunk {
    /// The canonical bytes: what the store holds under `thunks/<hash>` and what [`Thunk::hash`] hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let canonical = Canonical {
            kind: KIND,
            version: THUNK_VERSION,
            toolchain: &self.toolchain,
            program: &self.program,
            args: &self.args,
            cwd: &self.cwd,
            env: &self.env,
            inputs: &self.inputs,
            outputs: &self.outputs,
            timeout_ms: self.timeout_ms,
            memory: self.memory,
            placement: self.placement,
        };
        serde_json::to_vec(&canonical).expect("a thunk always serializes")
    }

    /// The thunk's name: the hash of its canonical bytes.
    pub fn hash(&self) -> Hash {
        Hash::of(&self.canonical_bytes())
    }

    /// Reads a thunk, checking its version and every rule of the format.
    pub fn decode(bytes: &[u8]) -> Result<Thunk, DecodeError> {
        let wire: Wire = decode(bytes, "thunk", KIND, THUNK_VERSION)?;
        let thunk = Thunk {
            toolchain: wire.toolchain,
            program: wire.program,
            args: wire.args,
            cwd: wire.cwd,
            env: wire.env,
            inputs: wire.inputs,
            outputs: wire.outputs,
            timeout_ms: wire.timeout_ms,
            memory: wire.memory,
            placement: wire.placement,
        };
        thunk.validate()?;
        Ok(thunk)
    }

    /// Checks the rules that single fields cannot: inputs and outputs do not overlap, no path goes
    /// through another input, symlinks stay inside the sandbox, limits and env are sane.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |reason: String| Err(DecodeError::Invalid { what: "thunk", reason });
        for output in &self.outputs {
            if self.inputs.contains_key(output) {
                return invalid(format!("`{output}` is both an input and an output"));
            }
        }
        let all_paths = self.inputs.keys().chain(&self.outputs);
        for path in all_paths {
            for ancestor in path.ancestors() {
                if self.inputs.contains_key(ancestor) {
                    return invalid(format!("`{path}` lies under the input file or symlink `{ancestor}`"));
                }
                if self.outputs.contains(ancestor) {
                    return invalid(format!("`{path}` lies under the output `{ancestor}`"));
                }
            }
        }
        if let Some(cwd) = &self.cwd
            && (self.inputs.contains_key(cwd) || self.outputs.contains(cwd))
        {
            return invalid(format!("the working directory `{cwd}` is also a file"));
        }
        for (path, input) in &self.inputs {
            if let Input::Symlink { target } = input
                && resolve_symlink(path, target).is_none()
            {
                return invalid(format!("symlink `{path}` -> `{target}` points outside the sandbox"));
            }
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return invalid(format!("environment variable `{name}` has an unusable name or value"));
            }
        }
        if self.args.iter().any(|arg| arg.contains('\0')) {
            return invalid("an argument contains a NUL byte".into());
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return invalid(format!("timeout {} ms is outside 1 ms ..= 24 h", self.timeout_ms));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Thunk {
        let path = |p: &str| SandboxPath::new(p).unwrap();
        Thunk {
            toolchain: Hash::of(b"toolchain"),
            program: ProgramPath(SandboxPath::program("_toolchain/bin/rustc").unwrap()),
            args: vec!["--crate-name".into(), "demo".into(), "src/lib.rs".into()],
            cwd: Some(path("pkg")),
            env: BTreeMap::from([
                ("CARGO_PKG_NAME".into(), "demo".into()),
                ("CARGO_MANIFEST_DIR".into(), "@SANDBOX@/pkg".into()),
            ]),
            inputs: BTreeMap::from([
                (path("src/lib.rs"), Input::Blob { hash: Hash::of(b"pub fn f() {}"), size: 13, executable: false }),
                (path("deps/libdep.rmeta"), Input::Link { thunk: Hash::of(b"dep"), output: path("out/libdep.rmeta") }),
                (path("src/alias.rs"), Input::Symlink { target: "lib.rs".into() }),
            ]),
            outputs: BTreeSet::from([path("out/libdemo.rlib")]),
            timeout_ms: 600_000,
            memory: MemoryClass::Standard,
            placement: Placement::Anywhere,
        }
    }

    #[test]
    fn canonical_form_is_pinned() {
        let thunk = sample();
        let text = String::from_utf8(thunk.canonical_bytes()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"kind":"thunk","version":3,"#,
                r#""toolchain":"dd9765724d63cedb171573e96d87aad8c17ca281055f5b639c94761ea2da5c9e","#,
                r#""program":"_toolchain/bin/rustc","args":["--crate-name","demo","src/lib.rs"],"cwd":"pkg","#,
                r#""env":{"CARGO_MANIFEST_DIR":"@SANDBOX@/pkg","CARGO_PKG_NAME":"demo"},"#,
                r#""inputs":{"#,
                r#""deps/libdep.rmeta":{"kind":"link","#,
                r#""thunk":"f286bc69f76edf5946c3b4ef9035baeb30bb4568981070ea34026a2dc4528737","#,
                r#""output":"out/libdep.rmeta"},"#,
                r#""src/alias.rs":{"kind":"symlink","target":"lib.rs"},"#,
                r#""src/lib.rs":{"kind":"blob","#,
                r#""hash":"cfba826237a8e851634d422b8815010c7dbb5e225ef4a7af5ce44eda78c28268","#,
                r#""size":13,"executable":false}},"#,
                r#""outputs":["out/libdemo.rlib"],"timeout_ms":600000,"memory":"standard","placement":"anywhere"}"#,
            )
        );
        // The golden hash: if this changes, every cache entry in every store is orphaned. Bump
        // THUNK_VERSION when you mean it, and update this line.
        assert_eq!(thunk.hash().to_hex(), "8f1f3ba039d11cb5697945e2a2782c69b38615c35a31220f82868b9705698ed7");
    }

    #[test]
    fn decode_round_trips() {
        let thunk = sample();
        assert_eq!(Thunk::decode(&thunk.canonical_bytes()).unwrap(), thunk);
    }

    #[test]
    fn malformed_and_truncated_thunks_are_refused() {
        let bytes = sample().canonical_bytes();
        let truncated = Thunk::decode(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(truncated.to_string().starts_with("malformed thunk: EOF while parsing"), "{truncated}");
        let garbage = Thunk::decode(b"\x00\x01not json").unwrap_err();
        assert!(garbage.to_string().starts_with("malformed thunk: expected value"), "{garbage}");
        let text = String::from_utf8(bytes.clone()).unwrap();
        let extra = text.replacen("\"args\"", "\"surprise\":1,\"args\"", 1);
        let err = Thunk::decode(extra.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("unknown field `surprise`"), "{err}");
    }

    #[test]
    fn unknown_version_and_kind_are_named() {
        let text = String::from_utf8(sample().canonical_bytes()).unwrap();
        let future = text.replacen("\"version\":3", "\"version\":7", 1);
        let err = Thunk::decode(future.as_bytes()).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedVersion { found: 7, supported: 3, .. }), "{err}");
        assert!(err.to_string().contains("format version 7"), "{err}");
        let reduction = text.replacen("\"kind\":\"thunk\"", "\"kind\":\"reduction\"", 1);
        let err = Thunk::decode(reduction.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "expected a thunk, found a `reduction` object");
    }

    #[test]
    fn escaping_paths_are_refused_on_decode() {
        let text = String::from_utf8(sample().canonical_bytes()).unwrap();
        for (from, to, message) in [
            ("\"src/lib.rs\":{", "\"../x\":{", "unsafe sandbox path `../x`: it has a `..` component"),
            ("\"src/lib.rs\":{", "\"/etc/passwd\":{", "unsafe sandbox path `/etc/passwd`: it is absolute"),
            ("[\"out/libdemo.rlib\"]", "[\"../../out\"]", "unsafe sandbox path `../../out`"),
            ("\"target\":\"lib.rs\"", "\"target\":\"../../etc\"", "points outside the sandbox"),
            ("\"target\":\"lib.rs\"", "\"target\":\"/etc\"", "points outside the sandbox"),
        ] {
            let err = Thunk::decode(text.replacen(from, to, 1).as_bytes()).unwrap_err();
            assert!(err.to_string().contains(message), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn overlapping_paths_are_refused() {
        let mut thunk = sample();
        thunk.outputs.insert(SandboxPath::new("src/lib.rs").unwrap());
        assert!(thunk.validate().unwrap_err().to_string().contains("both an input and an output"));
        let mut thunk = sample();
        thunk.outputs.insert(SandboxPath::new("src/alias.rs/x").unwrap());
        assert!(thunk.validate().unwrap_err().to_string().contains("lies under the input"));
        let mut thunk = sample();
        thunk.timeout_ms = 0;
        assert!(thunk.validate().is_err());
    }
}
