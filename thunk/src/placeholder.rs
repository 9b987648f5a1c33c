//! Placeholders: the small files the model leaves where an output will be, until it is forced.
//!
//! A placeholder is a shell script, so that running one (a test binary, a build script) fails with a
//! message that names the fix instead of `Exec format error`:
//!
//! ```text
//! #!/bin/sh
//! # lambdabuild-placeholder v1
//! # thunk 3f…(64 hex digits)
//! # output out/libdemo.rlib
//! echo "error: $0 is a cargo-lambdabuild placeholder, not a built file; run \`cargo lambdabuild force $0\`" >&2
//! exit 101
//! ```
//!
//! The magic is the first two lines (a shebang has to come first); the two lines after them name the thunk
//! and the output.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::hash::Hash;
use crate::path::SandboxPath;

/// The first bytes of every placeholder.
pub const MAGIC: &str = "#!/bin/sh\n# lambdabuild-placeholder v1\n";

/// No placeholder is longer than this; reading stops here.
pub const MAX_LEN: u64 = 4096;

/// Which output of which thunk a placeholder stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// The thunk that produces the real file.
    pub thunk: Hash,
    /// Which of its outputs.
    pub output: SandboxPath,
}

/// A placeholder could not be read or written, or was found where real bytes were needed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceholderError {
    /// A file started like a placeholder but the rest is damaged.
    #[error("{path} is a damaged cargo-lambdabuild placeholder ({reason}); delete it and rebuild")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Real bytes were needed, but the file is still a placeholder.
    #[error(
        "{path} is a cargo-lambdabuild placeholder, not a built file; \
         run `cargo lambdabuild force {path}` to build it"
    )]
    NotForced {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("cannot access placeholder {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl Placeholder {
    /// The placeholder's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        format!(
            "{MAGIC}# thunk {}\n# output {}\n\
             echo \"error: $0 is a cargo-lambdabuild placeholder, not a built file; \
             run \\`cargo lambdabuild force $0\\`\" >&2\nexit 101\n",
            self.thunk, self.output
        )
        .into_bytes()
    }

    /// Parses `bytes`: `Ok(None)` when they are not a placeholder at all.
    pub fn parse(bytes: &[u8]) -> Result<Option<Placeholder>, String> {
        let Some(rest) = bytes.strip_prefix(MAGIC.as_bytes()) else {
            return Ok(None);
        };
        let text = std::str::from_utf8(rest).map_err(|_| "it is not UTF-8".to_owned())?;
        let mut lines = text.lines();
        let thunk = lines
            .next()
            .and_then(|line| line.strip_prefix("# thunk "))
            .ok_or("the `# thunk` line is missing")?
            .parse::<Hash>()
            .map_err(|e| e.to_string())?;
        let output =
            lines.next().and_then(|line| line.strip_prefix("# output ")).ok_or("the `# output` line is missing")?;
        let output = SandboxPath::new(output).map_err(|e| e.to_string())?;
        Ok(Some(Placeholder { thunk, output }))
    }

    /// Reads the file at `path`: `Ok(None)` when it is not a placeholder.
    pub fn read(path: &Path) -> Result<Option<Placeholder>, PlaceholderError> {
        let io_error = |source| PlaceholderError::Io { path: path.to_owned(), source };
        let mut head = Vec::new();
        fs::File::open(path).and_then(|file| file.take(MAX_LEN).read_to_end(&mut head)).map_err(io_error)?;
        Placeholder::parse(&head).map_err(|reason| PlaceholderError::Malformed { path: path.to_owned(), reason })
    }

    /// Writes the placeholder at `path` atomically, with mode 0755 for executables and 0644 otherwise.
    pub fn write(&self, path: &Path, executable: bool) -> Result<(), PlaceholderError> {
        let io_error = |source| PlaceholderError::Io { path: path.to_owned(), source };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io_error)?;
        temp.write_all(&self.to_bytes()).map_err(io_error)?;
        let mode = if executable { 0o755 } else { 0o644 };
        temp.as_file().set_permissions(fs::Permissions::from_mode(mode)).map_err(io_error)?;
        temp.persist(path).map_err(|e| io_error(e.error))?;
        Ok(())
    }
}

/// Whether `bytes` begin as every placeholder does (well-formed or not): what [`Placeholder::parse`]
/// does not answer with `Ok(None)`.
pub fn starts_as_placeholder(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC.as_bytes())
}

/// Fails with a message naming `cargo lambdabuild force` when `path` is a placeholder; every reader of
/// a user's file whose bytes matter calls this first.
pub fn refuse_placeholder(path: &Path) -> Result<(), PlaceholderError> {
    match Placeholder::read(path)? {
        Some(_) => Err(PlaceholderError::NotForced { path: path.to_owned() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Placeholder {
        Placeholder { thunk: Hash::of(b"t"), output: SandboxPath::new("out/demo").unwrap() }
    }

    #[test]
    fn write_read_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo");
        sample().write(&path, true).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(Placeholder::read(&path).unwrap(), Some(sample()));
        let err = refuse_placeholder(&path).unwrap_err().to_string();
        assert!(err.ends_with(&format!("run `cargo lambdabuild force {}` to build it", path.display())), "{err}");
    }

    #[test]
    fn running_a_placeholder_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo");
        sample().write(&path, true).unwrap();
        let output = std::process::Command::new(&path).output().unwrap();
        assert_eq!(output.status.code(), Some(101));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(
            stderr.trim(),
            format!(
                "error: {0} is a cargo-lambdabuild placeholder, not a built file; run `cargo lambdabuild force {0}`",
                path.display()
            )
        );
    }

    #[test]
    fn other_files_are_not_placeholders_and_damaged_ones_are_errors() {
        assert_eq!(Placeholder::parse(b"\x7fELF..."), Ok(None));
        assert_eq!(Placeholder::parse(b"#!/bin/sh\necho hi\n"), Ok(None));
        let bytes = sample().to_bytes();
        let damaged = &bytes[..MAGIC.len() + 20];
        assert!(Placeholder::parse(damaged).unwrap_err().contains("is not a blake3 hash"));
        let text = String::from_utf8(bytes).unwrap().replace("out/demo", "../demo");
        assert!(Placeholder::parse(text.as_bytes()).unwrap_err().contains("`..` component"));
    }
}
