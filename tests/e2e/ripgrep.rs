//! The slow suite: ripgrep 15.1.0 from crates.io, with its own Cargo.lock, dev and --release, every
//! artifact byte-identical to plain cargo's; the built `rg` finds a pattern; and built on the emulated
//! Lambda, every linked artifact byte-identical. Skipped unless `LAMBDABUILD_SLOW_TESTS=1` (`.ci/run`
//! sets it).

use std::path::PathBuf;
use std::process::Command;

use crate::faults::{FailingCloud, ON_FAILING_LAMBDA};
use crate::lambda::{Cloud, ON_LAMBDA, count};
use crate::support::{Compare, Project, hygienic};

fn slow_tests_enabled() -> bool {
    #[allow(clippy::disallowed_methods)] // The test harness's own switch, not something a thunk reads.
    let enabled = std::env::var_os("LAMBDABUILD_SLOW_TESTS").is_some_and(|v| v == "1");
    if !enabled {
        eprintln!("skipped: set LAMBDABUILD_SLOW_TESTS=1 to build ripgrep");
    }
    enabled
}

/// ripgrep's published source, fetched through a throwaway package (no tool beyond cargo).
fn ripgrep_source(scratch: &std::path::Path) -> PathBuf {
    let fetcher = scratch.join("fetch-ripgrep");
    std::fs::create_dir_all(fetcher.join("src")).unwrap();
    std::fs::write(
        fetcher.join("Cargo.toml"),
        "[package]\nname = \"fetch-ripgrep\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nripgrep = \"=15.1.0\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(fetcher.join("src/lib.rs"), "").unwrap();
    // A bin-only crate is fetched but not resolved as a dependency, so look for it where cargo unpacks.
    let mut fetch = Command::new(env!("CARGO"));
    hygienic(&mut fetch).arg("fetch").current_dir(&fetcher);
    let output = fetch.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    #[allow(clippy::disallowed_methods)] // Where cargo keeps sources: the test's own business.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    for registry in std::fs::read_dir(cargo_home.join("registry/src")).unwrap() {
        let candidate = registry.unwrap().path().join("ripgrep-15.1.0");
        if candidate.join("Cargo.lock").exists() {
            return candidate;
        }
    }
    panic!("cargo fetch did not unpack ripgrep-15.1.0 under {}", cargo_home.display());
}

/// A copy of ripgrep's source in a project of its own.
fn ripgrep_project() -> Project {
    let project = Project::fixture("hello");
    let source = ripgrep_source(project.dir.path());
    let root = project.dir.path().join("ripgrep");
    let status = Command::new("cp").arg("-r").arg(&source).arg(&root).status().unwrap();
    assert!(status.success());
    Project { root, ..project }
}

#[test]
fn ripgrep_built_on_lambda_links_byte_identical() {
    if !slow_tests_enabled() {
        return;
    }
    let project = ripgrep_project();
    let cloud = Cloud::new();
    let engine: Vec<&str> = ON_LAMBDA.iter().copied().chain(["--timings"]).collect();
    let build = project.assert_matches_plain_cargo_on(&["--locked"], &engine, &cloud.env("laptop"), Compare::Linked);
    assert!(count(&build, &["executed_on", "lambda"]) >= 30, "{}", build.summary);
    assert_eq!(count(&build, &["fallbacks"]), 0, "{}", build.summary);
    assert_eq!(count(&build, &["passed_through"]), 0, "{}", build.summary);
    // Libraries' rmeta reached their consumers from metadata runs, before their compiles ended.
    eprintln!(
        "ripgrep on Lambda: {} metadata runs, force {} s",
        build.summary["metadata_runs"], build.summary["force_s"]
    );
    assert!(count(&build, &["metadata_runs"]) >= 1, "{}", build.summary);
    assert!(build.summary["cost"]["usd"].as_f64().unwrap() > 0.0, "{}", build.summary);
    assert!(count(&build, &["cost", "invocations"]) >= 30, "{}", build.summary);
    // The timeline: a row per Lambda instance (several, with 8 in flight), a bar per thunk run.
    let seen = crate::timings::assert_timeline_renders(&build, project.dir.path());
    assert!(seen["workers"].as_u64().unwrap() >= 2, "{seen}");
    assert!(seen["bars"].as_u64().unwrap() >= 30, "{seen}");
}

#[test]
fn ripgrep_builds_byte_identical_dev_and_release() {
    if !slow_tests_enabled() {
        return;
    }
    let project = ripgrep_project();

    for profile in [&["--locked"][..], &["--locked", "--release"][..]] {
        let build = project.assert_matches_plain_cargo(profile, &[]);
        assert!(build.count("thunks") >= 40, "{}", build.summary);
        assert_eq!(build.count("passed_through"), 0, "{}", build.summary);
    }

    let haystack = project.dir.path().join("haystack.txt");
    std::fs::write(&haystack, "one line\nthe needle is here\nanother line\n").unwrap();
    let rg = project.root.join("target/lambdabuild/release/rg");
    let output = Command::new(rg).arg("needle").arg(&haystack).output().unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "the needle is here\n");
}

#[test]
fn ripgrep_builds_byte_identical_while_a_tenth_of_s3_and_lambda_fails() {
    if !slow_tests_enabled() {
        return;
    }
    let project = ripgrep_project();
    let cloud = FailingCloud::new();
    // By kind: counted together, every tenth invocation once fell on a metadata run, whose fault is
    // only given up, and no full compile was retried.
    cloud.fail_a_tenth_of_each_kind();
    let build =
        project.assert_matches_plain_cargo_on(&["--locked"], ON_FAILING_LAMBDA, &cloud.env("laptop"), Compare::Linked);
    let (retried, relaunched) = (count(&build, &["retried"]), count(&build, &["relaunched"]));
    eprintln!(
        "ripgrep on a failing cloud: {} of {} S3 requests and {} of {} invocations failed; {retried} retried, \
         {relaunched} relaunched, {} fell back; force {:.1} s",
        cloud.s3.injected(),
        cloud.s3.total(),
        cloud.function.injected(),
        cloud.function.invocations(),
        count(&build, &["fallbacks"]),
        build.summary["force_s"].as_f64().unwrap_or_default(),
    );
    // Enough invocations for every kind of fault: a crash, a hang and a timeout, at least.
    assert!(cloud.function.injected() >= 3, "{} Lambda faults", cloud.function.injected());
    assert!(cloud.s3.injected() >= 50, "{} S3 faults", cloud.s3.injected());
    assert!(count(&build, &["executed_on", "lambda"]) >= 30, "{}", build.summary);
    assert_eq!(count(&build, &["fallbacks"]), 0, "{}", build.summary);
    // A failed full compile is retried, a hung one relaunched; a failed metadata run is only given up
    // (its consumers wait for the full compile), so the count of faults is an upper bound.
    assert!(retried + relaunched >= 1, "{}", build.summary);
}
