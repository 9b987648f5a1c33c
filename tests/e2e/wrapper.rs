//! `rustc-model` as cargo's `RUSTC_WRAPPER`: every call it does not model runs the real rustc.

use std::path::Path;
use std::process::Command;

/// Copies a fixture project from `tests/fixtures/` into `dest`.
fn copy_fixture(name: &str, dest: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
    let status = Command::new("cp").arg("-r").arg(&source).arg(dest).status().unwrap();
    assert!(status.success());
}

fn cargo_build(project: &Path, wrapper: Option<&str>, target_dir: &Path) -> Vec<u8> {
    let mut command = Command::new(env!("CARGO"));
    command
        .args(["build", "--quiet"])
        .current_dir(project)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_INCREMENTAL", "0")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER");
    if let Some(wrapper) = wrapper {
        command.env("RUSTC_WRAPPER", wrapper);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::read(target_dir.join("debug/hello")).unwrap()
}

#[test]
fn a_build_through_the_wrapper_equals_a_plain_build() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("hello");
    copy_fixture("hello", &project);
    let wrapped = cargo_build(&project, Some(env!("CARGO_BIN_EXE_rustc-model")), &dir.path().join("wrapped"));
    let plain = cargo_build(&project, None, &dir.path().join("plain"));
    assert!(wrapped == plain, "the binary built through rustc-model differs from plain cargo's");
    let run = Command::new(dir.path().join("wrapped/debug/hello")).output().unwrap();
    assert_eq!(String::from_utf8(run.stdout).unwrap(), "hello from hello\n");
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
