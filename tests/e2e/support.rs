//! Running the binaries under test with a private store, and normalising what they print.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use thunk::workdir::Workdir;
use thunk::{LocalBackend, Store};

/// A private store directory and the commands that use it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap() }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The same store, opened through the library, to set up objects for a test.
    pub fn store(&self) -> (Store, Workdir) {
        let backend = LocalBackend::open(&self.store_dir()).unwrap();
        (Store::new(Arc::new(backend)), Workdir::open(&self.store_dir()).unwrap())
    }

    /// `cargo-lambdabuild ARGS…` with this store, as cargo would run it for `cargo lambdabuild ARGS…`.
    pub fn lambdabuild(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
        command.arg("lambdabuild").args(args).env("LAMBDABUILD_STORE", self.store_dir()).env("NO_COLOR", "1");
        Run::of(command.output().unwrap(), self.dir.path())
    }
}

/// What a command did, with the temporary directory written as `[ROOT]`.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn of(output: Output, root: &Path) -> Run {
        let normalise =
            |bytes: Vec<u8>| String::from_utf8(bytes).unwrap().replace(&root.display().to_string(), "[ROOT]");
        Run { code: output.status.code(), stdout: normalise(output.stdout), stderr: normalise(output.stderr) }
    }

    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, Some(0), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn failure(self) -> Run {
        assert_eq!(self.code, Some(101), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}
