//! Paths inside a sandbox. Every path a thunk names is checked here, once, when it is parsed:
//! a `SandboxPath` can never be absolute, contain `..`, or point into the executor's toolchain directory.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The directory of the sandbox where the executor puts the thunk's toolchain. Thunk inputs and outputs
/// may not live under it; the program may (`_toolchain/bin/rustc`).
pub const TOOLCHAIN_DIR: &str = "_toolchain";

/// A relative path that stays inside the sandbox: no leading `/`, no `.`, `..` or empty components.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SandboxPath(String);

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsafe sandbox path `{path}`: {reason}")]
pub struct PathError {
    /// The refused path (cut to 200 characters).
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl SandboxPath {
    /// Parses a path for a thunk input or output.
    pub fn new(path: &str) -> Result<SandboxPath, PathError> {
        let checked = SandboxPath::program(path)?;
        if checked.components().next() == Some(TOOLCHAIN_DIR) {
            return Err(refuse(path, "the toolchain directory is reserved for the executor"));
        }
        Ok(checked)
    }

    /// Parses the program path of a thunk, which may also point into the toolchain directory.
    pub fn program(path: &str) -> Result<SandboxPath, PathError> {
        if path.is_empty() {
            return Err(refuse(path, "it is empty"));
        }
        if path.starts_with('/') {
            return Err(refuse(path, "it is absolute"));
        }
        // A line break in a path would break every line-based format that names it (a placeholder is
        // a shell script naming its output in a comment); no build needs one.
        let printable_ascii = path.bytes().all(|byte| (0x20..0x7f).contains(&byte));
        if !printable_ascii && path.chars().any(char::is_control) {
            return Err(refuse(path, "it contains a control character (NUL, a line break, …)"));
        }
        for component in path.split('/') {
            match component {
                "" => {
                    return Err(refuse(path, "it has an empty component (`//` or a trailing `/`)"));
                }
                "." => return Err(refuse(path, "it has a `.` component")),
                ".." => return Err(refuse(path, "it has a `..` component")),
                _ => {}
            }
        }
        Ok(SandboxPath(path.to_owned()))
    }

    /// The path as written in thunks.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, first to last.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The proper prefixes of this path (`a`, `a/b` for `a/b/c`), shortest first.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(|(i, _)| &self.0[..i])
    }

    /// This path under the sandbox root `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }
}

/// Resolves a symlink's `target`, written in a link at `link`, lexically against the sandbox root.
/// Returns `None` when the target is absolute or climbs out of the sandbox.
pub fn resolve_symlink(link: &SandboxPath, target: &str) -> Option<SandboxPath> {
    if target.starts_with('/') || target.is_empty() {
        return None;
    }
    let mut stack: Vec<&str> = link.components().collect();
    stack.pop();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            other => stack.push(other),
        }
    }
    if stack.is_empty() {
        return None;
    }
    SandboxPath::new(&stack.join("/")).ok()
}

/// `a/b/../c` → `a/c`, without asking the filesystem (rustc writes `src/../README.md` as given).
pub fn lexical(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal
}

fn refuse(path: &str, reason: &'static str) -> PathError {
    PathError { path: path.chars().take(200).collect(), reason }
}

/// Lets a map or set of paths be searched with a `&str` (an ancestor of a path, say) without
/// checking and copying it into a `SandboxPath` first. `SandboxPath` orders and hashes as its text.
impl std::borrow::Borrow<str> for SandboxPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SandboxPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for SandboxPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SandboxPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SandboxPath, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        SandboxPath::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        let path = SandboxPath::new("src/lib.rs").unwrap();
        assert_eq!(path.ancestors().collect::<Vec<_>>(), ["src"]);
        assert!(SandboxPath::program("_toolchain/bin/rustc").is_ok());
    }

    #[test]
    fn refuses_paths_that_leave_the_sandbox() {
        for (path, reason) in [
            ("../x", "it has a `..` component"),
            ("a/../../x", "it has a `..` component"),
            ("/etc/passwd", "it is absolute"),
            ("", "it is empty"),
            ("a//b", "it has an empty component (`//` or a trailing `/`)"),
            ("a/", "it has an empty component (`//` or a trailing `/`)"),
            ("./a", "it has a `.` component"),
            ("a\0b", "it contains a control character (NUL, a line break, …)"),
            // Found by fuzz/fuzz_targets/placeholder_parse.rs: a trailing `\r` did not survive a
            // placeholder written and read again, and a `\n` would add a line to its script.
            ("deps/app\r", "it contains a control character (NUL, a line break, …)"),
            ("deps/app\necho pwned", "it contains a control character (NUL, a line break, …)"),
            ("_toolchain/bin/rustc", "the toolchain directory is reserved for the executor"),
        ] {
            assert_eq!(SandboxPath::new(path).unwrap_err().reason, reason, "{path}");
        }
    }

    #[test]
    fn symlink_targets_resolve_lexically() {
        let link = SandboxPath::new("a/b/link").unwrap();
        assert_eq!(resolve_symlink(&link, "../c").unwrap().as_str(), "a/c");
        assert_eq!(resolve_symlink(&link, "./d/e").unwrap().as_str(), "a/b/d/e");
        assert_eq!(resolve_symlink(&link, "../../../etc/passwd"), None);
        assert_eq!(resolve_symlink(&link, "/etc/passwd"), None);
        assert_eq!(resolve_symlink(&link, "../.."), None);
        assert_eq!(resolve_symlink(&link, "../../_toolchain/bin/rustc"), None);
    }
}
