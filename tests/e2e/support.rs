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
        "CARGO_INCREMENTAL",
    ] {
        command.env_remove(var);
    }
    // `eval "$(scripts/dev-services up)"` (as `.ci/run` does) exports the store, the function, the
    // endpoints and credentials, and a user may have deploy settings: a test names what it uses itself.
    #[allow(clippy::disallowed_methods)] // The test harness's own environment, not a thunk's.
    let inherited = std::env::vars_os();
    for (name, _) in inherited {
        let name = name.to_string_lossy();
        if name.starts_with("LAMBDABUILD_") || name.starts_with("AWS_") {
            command.env_remove(name.as_ref());
        }
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
    /// Read only by rustc: an rlib, an rmeta or a proc-macro library. Built in a sandbox, their
    /// metadata records that rustc's paths were remapped, so they differ from a plain build's.
    pub metadata: bool,
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

    /// Every artifact's path and the hash of its bytes.
    pub fn artifact_hashes(&self) -> std::collections::BTreeMap<PathBuf, thunk::Hash> {
        self.artifacts.iter().map(|a| (a.path.clone(), thunk::Hash::of(&std::fs::read(&a.path).unwrap()))).collect()
    }
}

pub fn artifacts_of(stdout: &str) -> Vec<Artifact> {
    let mut artifacts = Vec::new();
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let executable = message["executable"].as_str().map(PathBuf::from);
        for file in message["filenames"].as_array().unwrap() {
            let path = PathBuf::from(file.as_str().unwrap());
            let proc_macro = message["target"]["kind"].as_array().unwrap().iter().any(|kind| kind == "proc-macro");
            let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
            artifacts.push(Artifact {
                test: message["profile"]["test"] == true,
                executable: executable.as_ref() == Some(&path),
                metadata: proc_macro || extension == "rlib" || extension == "rmeta",
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
        let owned: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.lambdabuild_with_env(args, &owned)
    }

    /// The same, with extra environment variables given as owned pairs.
    pub fn lambdabuild_with_env(&self, args: &[&str], env: &[(String, String)]) -> Build {
        let mut command = self.lambdabuild_command(args);
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
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
        let args: Vec<&str> = std::iter::once("build").chain(args.iter().copied()).collect();
        self.plain_cargo_with(&args, env)
    }

    /// Plain `CARGO_INCREMENTAL=0 cargo ARGS…` (a command and its flags) into the same target dir.
    pub fn plain_cargo_command(&self, args: &[&str]) -> Vec<Artifact> {
        self.plain_cargo_with(args, &[])
    }

    fn plain_cargo_with(&self, args: &[&str], env: &[(&str, &str)]) -> Vec<Artifact> {
        let mut command = Command::new(env!("CARGO"));
        hygienic(&mut command)
            .args(args)
            .args(["--message-format=json", "--target-dir", "target/lambdabuild"])
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
        let owned: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.assert_matches_plain_cargo_on(args, &[], &owned, Compare::Everything)
    }

    /// The same, with `engine_args` for `cargo lambdabuild` only and `env` for both; with
    /// [`Compare::Linked`], artifacts that only rustc reads (see [`Artifact::metadata`]) are left out.
    pub fn assert_matches_plain_cargo_on(
        &self,
        args: &[&str],
        engine_args: &[&str],
        env: &[(String, String)],
        compare: Compare,
    ) -> Build {
        let all_args: Vec<&str> = args.iter().chain(engine_args).copied().collect();
        let build = self.lambdabuild_with_env(&all_args, env).success();
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
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let theirs = self.plain_cargo(args, &env);
        let mut our_paths: Vec<&PathBuf> = ours.iter().map(|(p, _)| p).collect();
        let mut their_paths: Vec<&PathBuf> = theirs.iter().map(|a| &a.path).collect();
        our_paths.sort();
        their_paths.sort();
        assert_eq!(our_paths, their_paths, "the same artifacts");
        let compared: Vec<&(PathBuf, Vec<u8>)> = ours
            .iter()
            .zip(&build.artifacts)
            .filter(|(_, artifact)| compare == Compare::Everything || !artifact.metadata)
            .map(|(ours, _)| ours)
            .collect();
        assert!(!compared.is_empty(), "no artifact to compare");
        let differing: Vec<String> = compared
            .iter()
            .filter(|(path, bytes)| std::fs::read(path).unwrap() != *bytes)
            .map(|(path, _)| path.display().to_string())
            .collect();
        assert!(differing.is_empty(), "artifacts that differ from plain cargo's: {differing:#?}");
        build
    }
}

/// Which artifacts must be byte-identical to plain cargo's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Every one (the local engine runs rustc in place, exactly as cargo does).
    Everything,
    /// Every one but those only rustc reads (a remote engine runs rustc in a sandbox).
    Linked,
}

/// The local services of `scripts/dev-services` (started here when `.ci/run` has not started them):
/// the S3 server, and the Lambda emulator serving this checkout's function.
pub struct DevServices {
    /// The S3 server, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    /// Where the server keeps buckets (one directory each) and objects (one file each).
    pub data: PathBuf,
    /// The Lambda emulator, `http://127.0.0.1:PORT`.
    pub lambda_endpoint: String,
    /// The function's name there.
    pub function: String,
    /// Whether the function runs in bubblewrap, without the host's compiler and toolchains.
    pub function_hermetic: bool,
    /// moto's server, for the Lambda control plane.
    pub moto_endpoint: String,
}

/// The services, shared by every test of this process.
pub fn dev_services() -> &'static DevServices {
    static SERVER: std::sync::OnceLock<DevServices> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dev-services");
        let output = Command::new(&script).arg("up").output().unwrap();
        assert!(output.status.success(), "dev-services up failed:\n{}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8(output.stdout).unwrap();
        let exports: std::collections::HashMap<&str, &str> =
            stdout.lines().filter_map(|line| line.strip_prefix("export ")?.split_once('=')).collect();
        let get =
            |name: &str| exports.get(name).unwrap_or_else(|| panic!("dev-services up printed no {name}")).to_string();
        DevServices {
            endpoint: get("AWS_ENDPOINT_URL"),
            access_key: get("AWS_ACCESS_KEY_ID"),
            secret_key: get("AWS_SECRET_ACCESS_KEY"),
            data: PathBuf::from(get("LAMBDABUILD_DEV_S3_DATA")),
            lambda_endpoint: get("AWS_ENDPOINT_URL_LAMBDA"),
            function: get("LAMBDABUILD_FUNCTION"),
            function_hermetic: get("LAMBDABUILD_DEV_FUNCTION_HERMETIC") == "1",
            moto_endpoint: get("LAMBDABUILD_DEV_MOTO_ENDPOINT"),
        }
    })
}

impl DevServices {
    /// A new, empty bucket, and a location under `prefix` in it.
    pub fn create_bucket(&self, prefix: &str) -> store_s3::S3Location {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let bucket = format!("test-{}-{number}", std::process::id());
        // s3s-fs keeps a bucket as a directory of its data directory.
        std::fs::create_dir_all(self.data.join(&bucket)).unwrap();
        store_s3::S3Location::parse(&format!("{bucket}/{prefix}")).unwrap()
    }

    /// The environment of a process that talks to this server at `endpoint` (the server, or a proxy
    /// in front of it).
    pub fn env(&self, endpoint: &str) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", &self.access_key),
            ("AWS_SECRET_ACCESS_KEY", &self.secret_key),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            // Nothing of the machine's own AWS setup may leak in.
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
    }

    /// The same, as an SDK configuration for the library.
    pub fn sdk_config(&self, endpoint: &str) -> aws_config::SdkConfig {
        let credentials = aws_sdk_s3::config::Credentials::new(&self.access_key, &self.secret_key, None, None, "test");
        aws_config::SdkConfig::builder()
            .endpoint_url(endpoint)
            .region(aws_sdk_s3::config::Region::from_static("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(credentials))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build()
    }
}

/// A URL on which nothing listens.
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}
