//! CI mode: `RUSTC_WRAPPER=rustc-model cargo …` with no `cargo lambdabuild` around it. Each unit is
//! forced before the wrapper returns, so cargo runs real build scripts and real tests; a second run
//! from an empty target dir with the same store executes nothing; the artifacts are plain cargo's.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lambda::Cloud;
use crate::support::{Artifact, Compare, Project, artifacts_of, hygienic};

/// One `cargo` run through the wrapper.
struct CiRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    artifacts: Vec<Artifact>,
}

impl CiRun {
    #[track_caller]
    fn success(self) -> CiRun {
        assert_eq!(self.code, Some(0), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// `RUSTC_WRAPPER=rustc-model cargo ARGS… --message-format=json` in `project`, building into
/// `target/lambdabuild` (where plain cargo builds for the comparison).
fn ci_cargo(project: &Project, args: &[&str], env: &[(String, String)]) -> CiRun {
    let mut command = Command::new(env!("CARGO"));
    hygienic(&mut command)
        .args(args)
        .args(["--message-format=json", "--target-dir", "target/lambdabuild"])
        .current_dir(&project.root)
        .env("RUSTC_WRAPPER", env!("CARGO_BIN_EXE_rustc-model"))
        .env("CARGO_INCREMENTAL", "0")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let output = command.output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    CiRun {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        artifacts: artifacts_of(&stdout),
        stdout,
    }
}

/// `cargo lambdabuild stats --json` (and `--reset` after) with the same settings.
fn stats(env: &[(String, String)], reset: bool) -> serde_json::Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
    hygienic(&mut command)
        .args(["lambdabuild", "stats", "--json"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if reset {
        command.arg("--reset");
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The artifacts' bytes, to compare with a later build.
fn contents(artifacts: &[Artifact], compare: Compare) -> Vec<(PathBuf, Vec<u8>)> {
    let mut contents: Vec<(PathBuf, Vec<u8>)> = artifacts
        .iter()
        .filter(|a| compare == Compare::Everything || !a.metadata)
        .map(|a| (a.path.clone(), std::fs::read(&a.path).unwrap()))
        .collect();
    contents.sort();
    contents.dedup();
    contents
}

/// Builds the tests with plain cargo in the same target dir and checks `ours` are its bytes.
fn assert_plain_cargo_agrees(project: &Project, args: &[&str], ours: &[(PathBuf, Vec<u8>)]) {
    std::fs::remove_dir_all(project.root.join("target/lambdabuild")).unwrap();
    let theirs = project.plain_cargo_command(args);
    assert!(!ours.is_empty());
    let theirs: Vec<&PathBuf> = theirs.iter().map(|a| &a.path).collect();
    let differing: Vec<String> = ours
        .iter()
        .filter(|(path, bytes)| !theirs.contains(&path) || std::fs::read(path).unwrap() != *bytes)
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(differing.is_empty(), "artifacts that differ from plain cargo's: {differing:#?}");
}

/// The tests cargo ran and how they ended, from `cargo test`'s output.
fn test_results(run: &CiRun) -> Vec<String> {
    // Without the time each took, which varies.
    let result = |line: &str| line.split("; finished in").next().unwrap_or(line).to_owned();
    run.stdout.lines().filter(|line| line.starts_with("test result:")).map(result).collect()
}

#[test]
fn cargo_test_through_the_wrapper_runs_the_tests_and_a_warm_store_runs_nothing() {
    let project = Project::fixture("workspace");
    let env = vec![("LAMBDABUILD_CACHE_DIR".to_owned(), project.store().display().to_string())];
    let first = ci_cargo(&project, &["test"], &env).success();
    let results = test_results(&first);
    assert!(results.iter().filter(|line| line.starts_with("test result: ok. 1 passed")).count() >= 2, "{results:#?}");
    assert!(first.stdout.contains("test greets_from_an_integration_test ... ok"), "{}", first.stdout);
    let counted = stats(&env, true);
    assert!(counted["executed"]["local"].as_u64().unwrap() >= 15, "{counted}");
    assert_eq!(counted["passed_through"], 0, "{counted}");

    std::fs::remove_dir_all(project.root.join("target")).unwrap();
    let again = ci_cargo(&project, &["test"], &env).success();
    assert_eq!(test_results(&again), results, "the same tests, the same results");
    let counted = stats(&env, false);
    assert_eq!(counted["executed_total"], 0, "an empty target dir and a warm store: {counted}");
    assert!(counted["cached"].as_u64().unwrap() >= 15, "{counted}");

    let ours = contents(&again.artifacts, Compare::Everything);
    assert_plain_cargo_agrees(&project, &["test", "--no-run"], &ours);
}

#[test]
fn a_compile_error_in_ci_mode_is_cargo_s_usual_error() {
    let project = Project::fixture("hello");
    std::fs::write(project.root.join("src/main.rs"), "fn main() { let x: u32 = \"not a number\"; }\n").unwrap();
    let env = vec![("LAMBDABUILD_CACHE_DIR".to_owned(), project.store().display().to_string())];
    let run = ci_cargo(&project, &["build"], &env);
    assert_eq!(run.code, Some(101), "{}", run.stderr);
    assert!(run.stdout.contains("mismatched types"), "rustc's diagnostic reaches cargo: {}", run.stdout);
    assert!(run.stderr.contains("could not compile `hello`"), "{}", run.stderr);
    // Twice: the failed reduction is cached, and replayed the same way.
    let again = ci_cargo(&project, &["build"], &env);
    assert_eq!(again.code, Some(101));
    assert!(again.stdout.contains("mismatched types"));
}

#[test]
fn cargo_test_through_the_wrapper_on_lambda_matches_plain_cargo() {
    let cloud = Cloud::new();
    let project = Project::fixture("workspace");
    let mut env = cloud.env("machine-a");
    env.push(("LAMBDABUILD_ENGINE".to_owned(), "lambda=8,local=2".to_owned()));
    // Cargo's own -j bounds the wrappers, so the invocations in flight.
    let first = ci_cargo(&project, &["test", "-j", "8"], &env).success();
    let results = test_results(&first);
    assert!(results.iter().filter(|line| line.starts_with("test result: ok. 1 passed")).count() >= 2, "{results:#?}");
    let counted = stats(&env, false);
    // A unit passed through on this machine has no reduction, so the other machine would run it.
    assert_eq!(counted["passed_through"], 0, "{counted}\n{}", first.stderr);
    assert!(counted["executed"]["lambda"].as_u64().unwrap_or(0) >= 8, "units ran on Lambda: {counted}");
    assert!(counted["lambda"]["invocations"].as_u64().unwrap() >= 8, "{counted}");
    assert!(counted["cost"]["usd"].as_f64().unwrap() > 0.0, "{counted}");

    // Another machine: its own cache, the same bucket, an empty target dir.
    std::fs::remove_dir_all(project.root.join("target")).unwrap();
    let mut other = cloud.env("machine-b");
    other.push(("LAMBDABUILD_ENGINE".to_owned(), "lambda=8,local=2".to_owned()));
    let again = ci_cargo(&project, &["test", "-j", "8"], &other).success();
    assert_eq!(test_results(&again), results);
    let counted = stats(&other, false);
    assert_eq!(counted["executed_total"], 0, "everything came from the shared store: {counted}\n{}", again.stderr);
    assert_eq!(counted["passed_through"], 0, "{counted}\n{}", again.stderr);

    let ours = contents(&again.artifacts, Compare::Linked);
    assert_plain_cargo_agrees(&project, &["test", "--no-run"], &ours);
}

#[test]
fn the_wrapper_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let project = Project::fixture("hello");
    let env = vec![
        ("LAMBDABUILD_CACHE_DIR".to_owned(), dir.path().join("cache").display().to_string()),
        ("LAMBDABUILD_WRAPPER".to_owned(), "off".to_owned()),
    ];
    ci_cargo(&project, &["build"], &env).success();
    assert!(!dir.path().join("cache").exists(), "off means plain rustc, no store");
    assert!(Path::new(&project.root.join("target/lambdabuild/debug/hello")).is_file());
}

#[test]
fn run_by_hand_it_explains_itself() {
    let output = Command::new(env!("CARGO_BIN_EXE_rustc-model")).output().unwrap();
    assert_eq!(output.status.code(), Some(101));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "error: rustc-model is a RUSTC_WRAPPER: cargo runs it as `rustc-model RUSTC ARGS…`\n"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_rustc-model")).arg("/nonexistent/rustc").output().unwrap();
    assert_eq!(output.status.code(), Some(101));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "error: rustc-model: cannot run `/nonexistent/rustc`: No such file or directory (os error 2)\n"
    );
}
