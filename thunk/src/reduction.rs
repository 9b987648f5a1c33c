//! Reductions: what forcing a thunk produced. Stored under `reductions/<thunk-hash>`, written only after
//! every blob it names is in the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decode::{DecodeError, decode};
use crate::hash::Hash;
use crate::path::SandboxPath;

/// The revision of the reduction format.
pub const REDUCTION_VERSION: u32 = 1;

const KIND: &str = "reduction";

/// The outcome of running one thunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reduction {
    /// Always `"reduction"`.
    pub kind: String,
    /// Always [`REDUCTION_VERSION`].
    pub version: u32,
    /// The thunk this is the outcome of.
    pub thunk: Hash,
    /// Whether the run succeeded.
    pub status: Status,
    /// Every output, by sandbox path (empty unless the run succeeded).
    pub outputs: BTreeMap<SandboxPath, OutputFile>,
    /// What the program wrote to stdout, as a blob.
    pub stdout: BlobRef,
    /// What the program wrote to stderr (rustc's diagnostics), as a blob.
    pub stderr: BlobRef,
    /// Wall time of the run, without materializing inputs or storing outputs.
    pub duration_ms: u64,
    /// The largest resident set of the program and its waited-for children, in KiB.
    pub peak_memory_kib: u64,
    /// Which engine ran it (`local`, `lambda`), for statistics.
    pub engine: String,
}

/// Whether a run succeeded. Only deterministic outcomes are recorded: a run killed by a signal or a
/// timeout leaves no reduction behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Status {
    /// Exit code 0 and every declared output written.
    Success,
    /// The program exited with a non-zero code (a compile error).
    Exit {
        /// The exit code.
        code: i32,
    },
    /// The program exited 0 but did not write a declared output.
    MissingOutput {
        /// The first missing output.
        path: SandboxPath,
    },
}

/// One output of a successful run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputFile {
    /// The blob holding its bytes.
    pub hash: Hash,
    /// Its length in bytes.
    pub size: u64,
    /// Whether it was written with the executable bit.
    pub executable: bool,
}

/// A blob with its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRef {
    /// The blob's hash.
    pub hash: Hash,
    /// Its length in bytes.
    pub size: u64,
}

impl Reduction {
    /// Whether the run succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == Status::Success
    }

    /// The JSON the store holds.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reduction always serializes")
    }

    /// Reads a reduction, checking its version and that it belongs to `thunk` when given.
    pub fn decode(bytes: &[u8], thunk: Option<Hash>) -> Result<Reduction, DecodeError> {
        let reduction: Reduction = decode(bytes, "reduction", KIND, REDUCTION_VERSION)?;
        if let Some(expected) = thunk
            && reduction.thunk != expected
        {
            return Err(DecodeError::Invalid {
                what: "reduction",
                reason: format!("it is stored for thunk {expected} but records thunk {}", reduction.thunk),
            });
        }
        if !reduction.succeeded() && !reduction.outputs.is_empty() {
            return Err(DecodeError::Invalid { what: "reduction", reason: "a failed run lists outputs".into() });
        }
        Ok(reduction)
    }

    /// A reduction with the fixed `kind` and `version` filled in.
    pub fn new(thunk: Hash, status: Status, stdout: BlobRef, stderr: BlobRef) -> Reduction {
        Reduction {
            kind: KIND.into(),
            version: REDUCTION_VERSION,
            thunk,
            status,
            outputs: BTreeMap::new(),
            stdout,
            stderr,
            duration_ms: 0,
            peak_memory_kib: 0,
            engine: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Reduction {
        let blob = BlobRef { hash: Hash::of(b""), size: 0 };
        let mut reduction = Reduction::new(Hash::of(b"thunk"), Status::Success, blob, blob);
        reduction.outputs.insert(
            SandboxPath::new("out/main").unwrap(),
            OutputFile { hash: Hash::of(b"elf"), size: 3, executable: true },
        );
        reduction
    }

    #[test]
    fn round_trips_and_checks_its_thunk() {
        let reduction = sample();
        let bytes = reduction.encode();
        assert_eq!(Reduction::decode(&bytes, Some(Hash::of(b"thunk"))).unwrap(), reduction);
        let err = Reduction::decode(&bytes, Some(Hash::of(b"other"))).unwrap_err();
        assert!(err.to_string().contains("is stored for thunk"), "{err}");
    }

    #[test]
    fn malformed_reductions_are_refused() {
        let bytes = sample().encode();
        let err = Reduction::decode(&bytes[..bytes.len() - 1], None).unwrap_err();
        assert!(err.to_string().starts_with("malformed reduction: EOF while parsing"), "{err}");
        let text = String::from_utf8(bytes).unwrap();
        let err = Reduction::decode(text.replace("\"version\":1", "\"version\":2").as_bytes(), None).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedVersion { found: 2, .. }), "{err}");
        let failed = text.replace("{\"kind\":\"success\"}", "{\"kind\":\"exit\",\"code\":1}");
        let err = Reduction::decode(failed.as_bytes(), None).unwrap_err();
        assert!(err.to_string().contains("a failed run lists outputs"), "{err}");
        let escaping = text.replace("\"out/main\"", "\"../main\"");
        let err = Reduction::decode(escaping.as_bytes(), None).unwrap_err();
        assert!(err.to_string().contains("`..` component"), "{err}");
    }
}
