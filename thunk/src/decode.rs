//! Decoding IR objects: one error type for thunks, reductions and manifests, and the shared header check
//! (`kind` and `version`) that runs before the full parse so an old or foreign object gets a clear error.

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why bytes could not be read as an IR object.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, truncated, or a field of the wrong shape.
    #[error("malformed {what}: {source}")]
    Json {
        /// What was being decoded (`thunk`, `reduction`, `toolchain manifest`).
        what: &'static str,
        /// serde_json's message, with line and column.
        source: serde_json::Error,
    },
    /// A well-formed object of another kind (a reduction where a thunk was expected, …).
    #[error("expected a {expected}, found a `{found}` object")]
    WrongKind {
        /// The kind asked for.
        expected: &'static str,
        /// The `kind` field found.
        found: String,
    },
    /// An object written by another version of cargo-lambdabuild.
    #[error(
        "{what} has format version {found}, but this cargo-lambdabuild reads version {supported}; \
         use the same cargo-lambdabuild version that wrote it, or rebuild to write it anew"
    )]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version in the object.
        found: u64,
        /// The only version this build understands.
        supported: u32,
    },
    /// Well-formed, but breaks a rule of the format (overlapping paths, an escaping symlink, …).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// The broken rule.
        reason: String,
    },
}

#[derive(Deserialize)]
struct Header {
    kind: Option<String>,
    version: Option<u64>,
}

/// Checks the `kind` and `version` fields, then parses the whole object.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    kind: &'static str,
    version: u32,
) -> Result<T, DecodeError> {
    let json = |source| DecodeError::Json { what, source };
    let header: Header = serde_json::from_slice(bytes).map_err(json)?;
    match header.kind.as_deref() {
        Some(found) if found == kind => {}
        Some(found) => {
            return Err(DecodeError::WrongKind { expected: what, found: found.chars().take(40).collect() });
        }
        None => {
            return Err(DecodeError::Invalid { what, reason: "the `kind` field is missing".into() });
        }
    }
    match header.version {
        Some(found) if found == u64::from(version) => {}
        Some(found) => {
            return Err(DecodeError::UnsupportedVersion { what, found, supported: version });
        }
        None => {
            return Err(DecodeError::Invalid { what, reason: "the `version` field is missing".into() });
        }
    }
    serde_json::from_slice(bytes).map_err(json)
}
