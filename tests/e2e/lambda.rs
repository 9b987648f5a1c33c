//! The Lambda engine against the real local services of `scripts/dev-services`: the S3 server, and
//! cargo-lambda's emulator serving this checkout's `bootstrap` (the function's real executable).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_lambda::primitives::Blob;
use thunk::remote::{Invocation, InvocationResult, PROTOCOL_VERSION};
use thunk::thunk::{MemoryClass, ProgramPath};
use thunk::{Placement, SandboxPath, Thunk};

use crate::support::{Compare, DevServices, Project, dev_services};

/// A fresh bucket on the local S3 server, and the environment of a build that uses it and the
/// emulated function.
pub struct Cloud {
    services: &'static DevServices,
    store: String,
    dir: tempfile::TempDir,
}

impl Cloud {
    pub fn new() -> Cloud {
        let services = dev_services();
        let store = services.create_bucket("builds").to_string();
        Cloud { services, store, dir: tempfile::tempdir().unwrap() }
    }

    /// The directory in which the S3 server keeps this cloud's bucket (one file per object).
    pub fn bucket_dir(&self) -> std::path::PathBuf {
        let bucket = self.store.trim_start_matches("s3://").split('/').next().unwrap();
        self.services.data.join(bucket)
    }

    /// The secret key the S3 server accepts.
    pub fn secret_key(&self) -> &str {
        &self.services.secret_key
    }

    /// The environment of a build on a machine whose cache is `cache` (a new name: a fresh machine).
    pub fn env(&self, cache: &str) -> Vec<(String, String)> {
        let mut env = self.services.env(&self.services.endpoint);
        let cache = self.dir.path().join(cache).display().to_string();
        env.extend([
            ("LAMBDABUILD_STORE".to_owned(), self.store.clone()),
            ("LAMBDABUILD_CACHE_DIR".to_owned(), cache),
            ("AWS_ENDPOINT_URL_LAMBDA".to_owned(), self.services.lambda_endpoint.clone()),
            ("LAMBDABUILD_FUNCTION".to_owned(), self.services.function.clone()),
        ]);
        env
    }

    /// Invokes the function directly with `payload`, as the engine would, and reads its answer.
    fn invoke(&self, payload: &serde_json::Value) -> InvocationResult {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let config = self.services.sdk_config(&self.services.lambda_endpoint);
            let client = aws_sdk_lambda::Client::new(&config);
            let output = client
                .invoke()
                .function_name(&self.services.function)
                .payload(Blob::new(serde_json::to_vec(payload).unwrap()))
                .send()
                .await
                .unwrap();
            assert!(output.function_error().is_none(), "{output:?}");
            serde_json::from_slice(output.payload().unwrap().as_ref()).unwrap()
        })
    }
}

pub fn count(build: &crate::support::Build, path: &[&str]) -> u64 {
    let mut value = &build.summary;
    for key in path {
        value = &value[*key];
    }
    value.as_u64().unwrap_or_else(|| panic!("no {path:?} in {}", build.summary))
}

pub const ON_LAMBDA: &[&str] = &["--engine", "lambda=8", "--engine", "local=2"];

#[test]
fn the_workspace_built_on_lambda_links_byte_identical_to_plain_cargo() {
    let project = Project::fixture("workspace");
    let cloud = Cloud::new();
    let build =
        project.assert_matches_plain_cargo_on(&["--all-targets"], ON_LAMBDA, &cloud.env("laptop"), Compare::Linked);
    let on_lambda = count(&build, &["executed_on", "lambda"]);
    assert!(on_lambda >= 10, "{}", build.summary);
    let metadata_runs = count(&build, &["metadata_runs"]);
    assert!(count(&build, &["lambda", "invocations"]) >= on_lambda + metadata_runs, "{}", build.summary);
    assert_eq!(count(&build, &["fallbacks"]), 0, "{}", build.summary);
    // Build scripts and `util`, which compiles in env!("CARGO_MANIFEST_DIR"), ran here: in a sandbox
    // that path would be the sandbox's (the integration test, which checks it, passed above).
    assert!(count(&build, &["executed_on", "local"]) >= 3, "{}", build.summary);
    assert!(build.stderr.contains("on Lambda"), "{}", build.stderr);

    // What the function stored is shared: another machine with the same bucket runs nothing.
    std::fs::remove_dir_all(project.root.join("target/lambdabuild")).unwrap();
    let args = ["--all-targets", ON_LAMBDA[0], ON_LAMBDA[1], ON_LAMBDA[2], ON_LAMBDA[3]];
    let again = project.lambdabuild_with_env(&args, &cloud.env("ci-runner")).success();
    assert_eq!(count(&again, &["executed"]), 0, "{}", again.summary);
    assert_eq!(count(&again, &["lambda", "invocations"]), 0, "{}", again.summary);
}

#[test]
fn a_compile_error_on_lambda_is_final_and_shown_as_cargo_shows_it() {
    let project = Project::fixture("hello");
    std::fs::write(project.root.join("src/main.rs"), "fn main() { let x: u32 = \"not a number\"; }\n").unwrap();
    let cloud = Cloud::new();
    let build = project.lambdabuild_with_env(&["--engine", "lambda=2"], &cloud.env("laptop"));
    assert_eq!(build.code, Some(101), "{}", build.stderr);
    assert!(build.stderr.contains("error[E0308]: mismatched types"), "{}", build.stderr);
    assert!(build.stderr.contains("could not compile `hello`"), "{}", build.stderr);
    // Ran once, on Lambda: a compile error is not an infrastructure failure to retry elsewhere.
    assert_eq!(count(&build, &["executed_on", "lambda"]), 1, "{}", build.summary);
    assert_eq!(count(&build, &["fallbacks"]), 0, "{}", build.summary);
}

#[test]
fn an_unreachable_lambda_is_retried_then_the_build_runs_locally() {
    let project = Project::fixture("workspace");
    let cloud = Cloud::new();
    let mut env = cloud.env("laptop");
    let closed = crate::support::closed_port_url();
    env.retain(|(name, _)| name != "AWS_ENDPOINT_URL_LAMBDA");
    env.push(("AWS_ENDPOINT_URL_LAMBDA".into(), closed));
    let build = project.lambdabuild_with_env(ON_LAMBDA, &env).success();
    assert_eq!(count(&build, &["executed_on", "lambda"]), 0, "{}", build.summary);
    assert!(count(&build, &["fallbacks"]) > 0, "{}", build.summary);
    assert!(build.stderr.contains("ran on the local engine instead of Lambda"), "{}", build.stderr);
    assert!(build.stderr.contains("after 4 attempts") || build.stderr.contains("in a row"), "{}", build.stderr);
    assert!(project.root.join("target/lambdabuild/debug/app").is_file());
}

/// A thunk whose toolchain no bucket has: the function opens the store and answers at once.
pub fn thunk_without_toolchain() -> Thunk {
    Thunk {
        toolchain: thunk::Hash::of(b"a toolchain never uploaded"),
        program: ProgramPath(SandboxPath::new("run.sh").unwrap()),
        args: Vec::new(),
        cwd: None,
        env: BTreeMap::new(),
        inputs: BTreeMap::new(),
        outputs: BTreeSet::from([SandboxPath::new("out.txt").unwrap()]),
        timeout_ms: 5000,
        memory: MemoryClass::Standard,
        placement: Placement::Anywhere,
    }
}

#[test]
fn the_function_refuses_what_it_cannot_run_with_a_final_answer() {
    let cloud = Cloud::new();
    let thunk = thunk_without_toolchain();
    let hash = thunk.hash();

    // Its toolchain was never uploaded to this bucket.
    let invocation = serde_json::to_value(Invocation::new(&cloud.store, hash, &thunk)).unwrap();
    let InvocationResult::Failed { retryable, message } = cloud.invoke(&invocation) else { panic!() };
    assert!(!retryable, "{message}");
    assert!(message.contains(&format!("toolchain {} is not in {}", thunk.toolchain, cloud.store)), "{message}");
    assert!(message.contains("cargo lambdabuild layer"), "{message}");

    // A toolchain object that is not a layer: the function, unpacking it as it downloads, refuses it.
    let mut broken = thunk_without_toolchain();
    broken.toolchain = thunk::Hash::of(b"a toolchain whose layer is damaged");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let garbage: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    runtime.block_on(cloud.store().backend().put(thunk::ObjectKey::Toolchain(broken.toolchain), garbage)).unwrap();
    let damaged = serde_json::to_value(Invocation::new(&cloud.store, broken.hash(), &broken)).unwrap();
    let InvocationResult::Failed { retryable, message } = cloud.invoke(&damaged) else { panic!() };
    assert!(!retryable, "{message}");
    assert!(message.contains(&format!("cannot use toolchain {}", broken.toolchain)), "{message}");

    // An inline thunk that is not the one named.
    let mut forged = invocation.clone();
    forged["thunk"] = serde_json::json!(thunk::Hash::of(b"another thunk"));
    let InvocationResult::Failed { retryable, message } = cloud.invoke(&forged) else { panic!() };
    assert!(!retryable && message.contains("is not thunk"), "{message}");

    // A client of another protocol revision.
    let mut future = invocation.clone();
    future["protocol"] = serde_json::json!(PROTOCOL_VERSION + 1);
    let InvocationResult::Failed { retryable, message } = cloud.invoke(&future) else { panic!() };
    assert!(!retryable && message.contains("cargo lambdabuild deploy"), "{message}");

    // A store the function cannot use.
    let mut local = invocation;
    local["store"] = serde_json::json!("/home/someone/.cache/lambdabuild");
    let InvocationResult::Failed { retryable, message } = cloud.invoke(&local) else { panic!() };
    assert!(!retryable && message.contains("s3://BUCKET/PREFIX"), "{message}");
}

impl Cloud {
    /// `cargo lambdabuild layer --json` on the machine whose cache is `cache`.
    fn layer(&self, cache: &str) -> serde_json::Value {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
        crate::support::hygienic(&mut command).args(["lambdabuild", "layer", "--json"]).envs(self.env(cache));
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    }

    /// The bucket as a store, straight to the server.
    fn store(&self) -> thunk::Store {
        let location = store_s3::S3Location::parse(self.store.strip_prefix("s3://").unwrap()).unwrap();
        let config = self.services.sdk_config(&self.services.endpoint);
        let backend = store_s3::S3Backend::with_config(location, store_s3::S3Options::default(), &config);
        thunk::Store::new(std::sync::Arc::new(backend))
    }
}

#[test]
fn the_function_has_no_compiler_of_its_host_and_links_with_the_layer() {
    let cloud = Cloud::new();
    assert!(cloud.services.function_hermetic, "dev-services could not run the function in bubblewrap");
    let toolchain: thunk::Hash = cloud.layer("laptop")["hash"].as_str().unwrap().parse().unwrap();
    let sysroot = std::process::Command::new("rustc").args(["--print", "sysroot"]).output().unwrap().stdout;
    let sysroot = String::from_utf8(sysroot).unwrap().trim().to_owned();
    // What the function's thunks see of the machine it runs on.
    let probe = format!(
        "#!/bin/sh
{{
         if /usr/bin/cc --version >/dev/null 2>&1; then echo 'host cc: runs'; else echo 'host cc: unusable'; fi
         if [ -z \"$(ls -A /usr/lib/gcc)\" ]; then echo 'gcc: hidden'; else echo 'gcc: present'; fi
         if [ -s /usr/lib/x86_64-linux-gnu/crti.o ]; then echo 'crti.o: present'; else echo 'crti.o: hidden'; fi
         if [ -e {sysroot}/bin/rustc ]; then echo 'rustup: present'; else echo 'rustup: hidden'; fi
         echo \"cc on PATH: $(command -v cc | sed 's|.*/_toolchain/|_toolchain/|')\"
         }} > out.txt
"
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = cloud.store();
    let script = runtime.block_on(store.put_blob(probe.as_bytes())).unwrap();
    let thunk = Thunk {
        toolchain,
        program: ProgramPath(SandboxPath::new("probe.sh").unwrap()),
        args: Vec::new(),
        cwd: None,
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        inputs: BTreeMap::from([(
            SandboxPath::new("probe.sh").unwrap(),
            thunk::Input::Blob { hash: script, size: probe.len() as u64, executable: true },
        )]),
        outputs: BTreeSet::from([SandboxPath::new("out.txt").unwrap()]),
        timeout_ms: 10_000,
        memory: MemoryClass::Standard,
        placement: Placement::Anywhere,
    };
    let invocation = serde_json::to_value(Invocation::new(&cloud.store, thunk.hash(), &thunk)).unwrap();
    let InvocationResult::Reduced { reduction, .. } = cloud.invoke(&invocation) else { panic!("not reduced") };
    assert!(reduction.succeeded(), "{reduction:?}");
    let out = reduction.outputs[&SandboxPath::new("out.txt").unwrap()];
    let seen = String::from_utf8(runtime.block_on(store.get_blob(out.hash)).unwrap()).unwrap();
    assert_eq!(
        seen,
        "host cc: unusable\ngcc: hidden\ncrti.o: hidden\nrustup: hidden\ncc on PATH: _toolchain/linker/bin/cc\n"
    );
    // There, the fixture workspace's bins, tests, cdylib and staticlib link byte-identical to plain
    // cargo's: `the_workspace_built_on_lambda_links_byte_identical_to_plain_cargo`.
}

#[test]
fn the_layer_is_packed_deterministically_and_uploaded_once() {
    let cloud = Cloud::new();
    let layer = |cache: &str| cloud.layer(cache);
    let first = layer("laptop");
    let key = first["key"].as_str().unwrap();
    let size = first["size"].as_u64().unwrap();
    assert!(first["uploaded_bytes"].as_u64().unwrap() > size, "the layer and its manifest: {first}");
    let (bucket, prefix) = cloud.store.strip_prefix("s3://").unwrap().split_once('/').unwrap();
    let object = cloud.services.data.join(bucket).join(prefix).join(key);
    assert_eq!(std::fs::metadata(&object).unwrap().len(), size, "{}", object.display());
    // The manifest names rustc, the driver, std and the linker the function needs.
    let files = first["files"].as_u64().unwrap();
    assert!(files > 10, "{first}");

    // Another machine packs the same bytes (the layer is deterministic) and sends nothing.
    let second = layer("ci-runner");
    assert_eq!(second["hash"], first["hash"]);
    assert_eq!(second["uploaded_bytes"].as_u64(), Some(0), "{second}");
}
