//! `cargo lambdabuild` on fixture projects: every artifact byte-identical to plain cargo's, built in the
//! same place; the cache; pass-through; compile errors; `--dry-run` and `force`.

use std::fs;
use std::process::Command;

use crate::support::Project;

#[test]
fn a_workspace_with_every_kind_of_unit_matches_plain_cargo() {
    // Path deps, a proc-macro, a build script generating code, one compiling C with cc, include_str!
    // outside the package, cdylib + staticlib, unit and integration tests (run), an example.
    let project = Project::fixture("workspace");
    let build = project.assert_matches_plain_cargo(&["--all-targets"], &[]);
    assert!(build.count("thunks") > 15, "{}", build.summary);
    assert_eq!(build.count("passed_through"), 0, "{}", build.summary);
    let kinds = |suffix: &str| build.artifacts.iter().filter(|a| a.path.to_string_lossy().ends_with(suffix)).count();
    assert!(kinds(".so") >= 1 && kinds(".a") >= 1 && kinds(".rlib") >= 3, "{:#?}", build.artifacts);
    assert!(build.artifacts.iter().filter(|a| a.test).count() >= 6, "unit and integration test harnesses");

    let app = project.root.join("target/lambdabuild/debug/app");
    let output = Command::new(&app).output().unwrap();
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "hello, app 42 generated 42 56\nbuilt from app/src/main.rs\n"
    );
}

#[test]
fn release_matches_plain_cargo() {
    Project::fixture("workspace").assert_matches_plain_cargo(&["--release"], &[]);
}

#[test]
fn an_explicit_target_matches_plain_cargo() {
    let project = Project::fixture("workspace");
    let build = project.assert_matches_plain_cargo(&["--target", "x86_64-unknown-linux-gnu", "-p", "app"], &[]);
    assert!(build.artifacts.iter().any(|a| a.path.ends_with("target/lambdabuild/x86_64-unknown-linux-gnu/debug/app")));
}

#[test]
fn features_match_plain_cargo() {
    let project = Project::fixture("workspace");
    project.assert_matches_plain_cargo(&["-p", "util", "--features", "fancy", "--all-targets"], &[]);
}

#[test]
fn the_cache_runs_only_what_changed() {
    let project = Project::fixture("workspace");
    let first = project.lambdabuild(&["-p", "app"]).success();
    assert!(first.count("executed") >= 8, "{}", first.summary);
    assert_eq!(first.count("executed"), first.count("thunks"), "a cold store runs every thunk: {}", first.summary);

    let again = project.lambdabuild(&["-p", "app"]).success();
    assert_eq!((again.count("thunks"), again.count("executed")), (0, 0), "nothing changed: {}", again.summary);

    fs::remove_dir_all(project.root.join("target")).unwrap();
    let warm = project.lambdabuild(&["-p", "app"]).success();
    assert_eq!(warm.count("executed"), 0, "an empty target dir and a warm store: {}", warm.summary);
    assert_eq!(warm.count("cached"), first.count("thunks"), "{}", warm.summary);
    let output = Command::new(project.root.join("target/lambdabuild/debug/app")).output().unwrap();
    assert!(String::from_utf8(output.stdout).unwrap().starts_with("hello, app 42"));

    let lib = project.root.join("util/src/lib.rs");
    fs::write(&lib, fs::read_to_string(&lib).unwrap() + "\n// an edit\n").unwrap();
    let edited = project.lambdabuild(&["-p", "app"]).success();
    // util's rlib changed, so app relinks; nothing else runs.
    assert_eq!((edited.count("thunks"), edited.count("executed")), (2, 2), "{}", edited.summary);
}

#[test]
fn an_unknown_rustc_flag_passes_through_and_still_matches() {
    let project = Project::fixture("hello");
    let flags = [("RUSTFLAGS", "-C control-flow-guard=no")];
    let build = project.assert_matches_plain_cargo(&[], &flags);
    assert_eq!(build.summary["passed_through_reasons"]["an unknown -C codegen option"], 1, "{}", build.summary);
}

#[test]
fn a_compile_error_is_shown_and_leaves_no_placeholder() {
    let project = Project::fixture("hello");
    fs::write(project.root.join("src/main.rs"), "fn main() { println!(\"{}\", missing); }\n").unwrap();
    let build = project.lambdabuild(&[]);
    assert_eq!(build.code, Some(101), "{}", build.stderr);
    assert_eq!(build.summary["success"], false);
    assert!(build.stderr.contains("error[E0425]: cannot find value `missing` in this scope"), "{}", build.stderr);
    assert!(build.stderr.contains("error: could not compile `hello` due to 1 previous error"), "{}", build.stderr);
    assert!(!project.root.join("target/lambdabuild/debug/hello").exists(), "no placeholder pretends to be the binary");
}

#[test]
fn dry_run_leaves_placeholders_that_force_builds() {
    let project = Project::fixture("hello");
    let build = project.lambdabuild(&["--dry-run"]);
    assert_eq!(build.code, Some(0), "{}", build.stderr);
    let bin = project.root.join("target/lambdabuild/debug/hello");
    let run = Command::new(&bin).output().unwrap();
    assert_eq!(run.status.code(), Some(101));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("run `cargo lambdabuild force"),
        "the placeholder names the fix"
    );

    let mut force = Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
    crate::support::hygienic(&mut force)
        .args(["lambdabuild", "force"])
        .arg(&bin)
        .env("LAMBDABUILD_STORE", project.store());
    let forced = force.output().unwrap();
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    let run = Command::new(&bin).output().unwrap();
    assert_eq!(String::from_utf8(run.stdout).unwrap(), "hello from hello\n");
}

#[test]
fn warnings_are_shown_as_cargo_shows_them() {
    let project = Project::fixture("hello");
    fs::write(project.root.join("src/main.rs"), "fn main() {\n    let unused = 1;\n    println!(\"hi\");\n}\n")
        .unwrap();
    let build = project.lambdabuild(&[]).success();
    assert!(build.stderr.contains("warning: unused variable: `unused`"), "{}", build.stderr);
    assert!(build.stderr.contains("--> src/main.rs:2:9"), "rustc's rendering, with the real path: {}", build.stderr);
    assert!(build.stderr.contains("warning: `hello` generated 1 warning"), "{}", build.stderr);
}

#[test]
fn a_damaged_output_blob_is_refused_and_deleting_it_rebuilds_it() {
    let project = Project::fixture("hello");
    let first = project.lambdabuild(&[]).success();
    let built = first.artifact_hashes();
    // The largest blob is the binary.
    let blobs = project.store().join("blobs");
    let largest = fs::read_dir(&blobs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .max_by_key(|path| fs::metadata(path).unwrap().len())
        .unwrap();
    fs::write(&largest, zstd::bulk::compress(b"not the binary", 1).unwrap()).unwrap();
    fs::remove_dir_all(project.root.join("target")).unwrap();

    let refused = project.lambdabuild(&[]);
    assert_ne!(refused.code, Some(0), "{}", refused.stderr);
    assert!(refused.stderr.contains("is corrupt") && refused.stderr.contains("delete it"), "{}", refused.stderr);

    // As the message says: delete it and run again.
    fs::remove_file(&largest).unwrap();
    let rebuilt = project.lambdabuild(&[]).success();
    assert!(rebuilt.count("executed") >= 1, "{}", rebuilt.summary);
    assert_eq!(rebuilt.artifact_hashes(), built);
    assert!(largest.exists(), "the blob is stored again");
}

#[test]
fn the_progress_bar_shows_on_a_terminal_only() {
    let project = Project::fixture("workspace");
    // Piped stderr, as in CI logs: no bar.
    let piped = project.lambdabuild(&["--engine", "local=1"]).success();
    assert!(!piped.stderr.contains("Building ["), "{}", piped.stderr);

    // On a terminal (script(1) gives the build one), from a cold store so there is work to show.
    let run_on_a_terminal = |args: &str, store: &str| {
        std::fs::remove_dir_all(project.root.join("target")).unwrap();
        let command = format!("{} lambdabuild build --all-targets {args}", env!("CARGO_BIN_EXE_cargo-lambdabuild"));
        let mut script = Command::new("script");
        crate::support::hygienic(&mut script)
            .args(["-qec", &command, "/dev/null"])
            .current_dir(&project.root)
            .env("LAMBDABUILD_STORE", project.dir.path().join(store));
        let output = script.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let shown = run_on_a_terminal("--engine local=1", "store-shown");
    assert!(shown.contains("Building ["), "{shown}");
    assert!(shown.contains(" running, ") && shown.contains(" queued"), "{shown}");
    let quiet = run_on_a_terminal("--engine local=1 -q", "store-quiet");
    assert!(!quiet.contains("Building ["), "-q shows no bar: {quiet}");
}
