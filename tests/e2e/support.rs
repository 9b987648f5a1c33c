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

/// A copy of a fixture project in a temporary directory, with a private store.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// The project's root (the copy of the fixture).
    pub root: PathBuf,
}

/// Cargo and the binaries under test run without anything of the outer cargo that could change a build.
pub fn hygienic(command: &mut Command) -> &mut Command {
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "LAMBDABUILD_SESSION",
        "CARGO_INCREMENTAL",
    ] {
        command.env_remove(var);
    }
    command.env("NO_COLOR", "1").env("CARGO_TERM_COLOR", "never")
}

/// One artifact cargo reported.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub path: PathBuf,
    /// A test harness (from `--tests`/`--all-targets`).
    pub test: bool,
    /// The executable, for bins, tests and examples.
    pub executable: bool,
}

/// What `cargo lambdabuild` did.
pub struct Build {
    pub code: Option<i32>,
    pub stderr: String,
    pub artifacts: Vec<Artifact>,
    /// The final `lambdabuild-finished` object.
    pub summary: serde_json::Value,
}

impl Build {
    #[track_caller]
    pub fn success(self) -> Build {
        assert_eq!(self.code, Some(0), "stderr:\n{}", self.stderr);
        assert_eq!(self.summary["success"], true, "{}", self.summary);
        self
    }

    pub fn count(&self, field: &str) -> u64 {
        self.summary[field].as_u64().unwrap_or_else(|| panic!("no {field} in {}", self.summary))
    }
}

fn artifacts_of(stdout: &str) -> Vec<Artifact> {
    let mut artifacts = Vec::new();
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let executable = message["executable"].as_str().map(PathBuf::from);
        for file in message["filenames"].as_array().unwrap() {
            let path = PathBuf::from(file.as_str().unwrap());
            artifacts.push(Artifact {
                test: message["profile"]["test"] == true,
                executable: executable.as_ref() == Some(&path),
                path,
            });
        }
    }
    artifacts
}

impl Project {
    /// Copies `tests/fixtures/NAME`.
    pub fn fixture(name: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
        let status = Command::new("cp").arg("-r").arg(&source).arg(dir.path()).status().unwrap();
        assert!(status.success());
        let root = dir.path().join(name);
        Project { dir, root }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn lambdabuild_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
        hygienic(&mut command)
            .arg("lambdabuild")
            .arg("build")
            .arg("--message-format=json")
            .args(args)
            .current_dir(&self.root)
            .env("LAMBDABUILD_STORE", self.store());
        command
    }

    /// `cargo lambdabuild build --message-format=json ARGS…`.
    pub fn lambdabuild(&self, args: &[&str]) -> Build {
        self.lambdabuild_with(args, &[])
    }

    /// The same, with extra environment variables.
    pub fn lambdabuild_with(&self, args: &[&str], env: &[(&str, &str)]) -> Build {
        let mut command = self.lambdabuild_command(args);
        command.envs(env.iter().copied());
        let output = command.output().unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let summary = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|message| message["reason"] == "lambdabuild-finished")
            .unwrap_or(serde_json::Value::Null);
        Build {
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            artifacts: artifacts_of(&stdout),
            summary,
        }
    }

    /// Plain `CARGO_INCREMENTAL=0 cargo build ARGS…` into the same target dir, as the reference.
    pub fn plain_cargo(&self, args: &[&str], env: &[(&str, &str)]) -> Vec<Artifact> {
        let mut command = Command::new(env!("CARGO"));
        hygienic(&mut command)
            .args(["build", "--message-format=json", "--target-dir", "target/lambdabuild"])
            .args(args)
            .current_dir(&self.root)
            .env("CARGO_INCREMENTAL", "0")
            .envs(env.iter().copied());
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        artifacts_of(&String::from_utf8(output.stdout).unwrap())
    }

    /// Builds with `cargo lambdabuild`, runs every test harness it built, then builds the same with
    /// plain cargo in the same target dir and checks every artifact is byte-identical.
    pub fn assert_matches_plain_cargo(&self, args: &[&str], env: &[(&str, &str)]) -> Build {
        let build = self.lambdabuild_with(args, env).success();
        assert!(!build.artifacts.is_empty(), "cargo reported no artifact");
        for artifact in build.artifacts.iter().filter(|a| a.test && a.executable) {
            let output = Command::new(&artifact.path).output().unwrap();
            assert!(
                output.status.success(),
                "{} failed:\n{}",
                artifact.path.display(),
                String::from_utf8_lossy(&output.stdout)
            );
        }
        let ours: Vec<(PathBuf, Vec<u8>)> =
            build.artifacts.iter().map(|a| (a.path.clone(), std::fs::read(&a.path).unwrap())).collect();
        std::fs::remove_dir_all(self.root.join("target/lambdabuild")).unwrap();
        let theirs = self.plain_cargo(args, env);
        let mut our_paths: Vec<&PathBuf> = ours.iter().map(|(p, _)| p).collect();
        let mut their_paths: Vec<&PathBuf> = theirs.iter().map(|a| &a.path).collect();
        our_paths.sort();
        their_paths.sort();
        assert_eq!(our_paths, their_paths, "the same artifacts");
        let differing: Vec<String> = ours
            .iter()
            .filter(|(path, bytes)| std::fs::read(path).unwrap() != *bytes)
            .map(|(path, _)| path.display().to_string())
            .collect();
        assert!(differing.is_empty(), "artifacts that differ from plain cargo's: {differing:#?}");
        build
    }
}
