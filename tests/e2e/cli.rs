//! The command line: help, naming the toolchain, describing every kind of object.

use std::collections::{BTreeMap, BTreeSet};

use thunk::exec::Executor;
use thunk::placeholder::Placeholder;
use thunk::thunk::{MemoryClass, ProgramPath};
use thunk::{Hash, Input, SandboxPath, Thunk};

use crate::support::Env;

#[test]
fn help_lists_the_subcommands() {
    let run = Env::new().lambdabuild(&["--help"]).success();
    assert!(run.stdout.starts_with("Build Rust projects"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Usage: cargo lambdabuild [OPTIONS]\n       cargo lambdabuild <COMMAND>"),
        "{}",
        run.stdout
    );
    for subcommand in ["build", "force", "describe", "toolchain"] {
        assert!(run.stdout.contains(&format!("\n  {subcommand} ")), "{subcommand} missing:\n{}", run.stdout);
    }
}

#[test]
fn naming_the_toolchain_twice_hashes_nothing_the_second_time() {
    let env = Env::new();
    let first = env.lambdabuild(&["toolchain", "--json"]).success();
    let first: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    assert!(first["files_hashed"].as_u64().unwrap() > 10, "{first}");
    let second = env.lambdabuild(&["toolchain", "--json"]).success();
    let second: serde_json::Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(second["hash"], first["hash"]);
    assert_eq!(second["files_hashed"], 0, "{second}");

    let human = env.lambdabuild(&["toolchain"]).success();
    let hash = first["hash"].as_str().unwrap();
    assert_eq!(human.stdout, format!("{hash}\n"));
    assert!(human.stderr.starts_with(&format!("       Named toolchain {} (rustc 1.", &hash[..12])), "{}", human.stderr);
    let quiet = env.lambdabuild(&["toolchain", "-q"]).success();
    assert_eq!(quiet.stderr, "");

    let described = env.lambdabuild(&["describe", hash]).success();
    assert!(described.stdout.starts_with(&format!("toolchain {hash}\n  release    rustc 1.")), "{}", described.stdout);
    assert!(described.stdout.contains("\n  files      bin/rustc "), "{}", described.stdout);
}

fn path(text: &str) -> SandboxPath {
    SandboxPath::new(text).unwrap()
}

#[tokio::test]
async fn describe_shows_thunks_placeholders_and_reductions() {
    let env = Env::new();
    let (store, workdir) = env.store();
    let toolchain = Hash::of(b"shell only");
    std::fs::create_dir_all(workdir.toolchain_dir(toolchain)).unwrap();
    let script = b"#!/bin/sh\necho built > out/result.txt\n";
    let script_hash = store.put_blob(script).await.unwrap();
    let thunk = Thunk {
        toolchain,
        program: ProgramPath(path("run.sh")),
        args: vec!["--flag".into()],
        cwd: None,
        env: BTreeMap::from([("LANG".into(), "C".into())]),
        inputs: BTreeMap::from([(
            path("run.sh"),
            Input::Blob { hash: script_hash, size: script.len() as u64, executable: true },
        )]),
        outputs: BTreeSet::from([path("out/result.txt")]),
        timeout_ms: 5000,
        memory: MemoryClass::Standard,
        placement: thunk::thunk::Placement::Anywhere,
    };
    let hash = store.put_thunk(&thunk).await.unwrap();

    let before = env.lambdabuild(&["describe", &hash.to_hex()]).success();
    let expected_head = format!(
        "thunk {hash}\n\
         \x20 toolchain  {toolchain} (manifest not in this store)\n\
         \x20 program    run.sh\n\
         \x20 args       --flag\n\
         \x20 env        LANG=C\n\
         \x20 inputs     run.sh  blob {}  38 B  executable\n\
         \x20 outputs    out/result.txt\n\
         \x20 limits     timeout 5 s, memory Standard (2048 MiB)\n\
         \x20 reduction  not forced yet\n",
        script_hash.short()
    );
    assert_eq!(before.stdout, expected_head);

    Executor::new(store.clone(), workdir, "local").execute(&thunk).await.unwrap();
    let placeholder_file = env.dir.path().join("result.txt");
    Placeholder { thunk: hash, output: path("out/result.txt") }.write(&placeholder_file, false).unwrap();
    let after = env.lambdabuild(&["describe", placeholder_file.to_str().unwrap()]).success();
    assert!(after.stdout.starts_with(&format!("placeholder for output `out/result.txt` of\nthunk {hash}\n")));
    assert!(after.stdout.contains("\n  reduction  success in "), "{}", after.stdout);
    assert!(after.stdout.contains("on local\n  produced   out/result.txt  "), "{}", after.stdout);

    let json = env.lambdabuild(&["describe", "--json", &hash.to_hex()]).success();
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["type"], "thunk");
    assert_eq!(json["thunk"]["program"], "run.sh");
    assert_eq!(json["reduction"]["status"]["kind"], "success");

    let reduction_file = env.dir.path().join("reduction.json");
    std::fs::write(&reduction_file, store.get_reduction(hash).await.unwrap().unwrap().encode()).unwrap();
    let reduction = env.lambdabuild(&["describe", reduction_file.to_str().unwrap()]).success();
    assert!(reduction.stdout.starts_with(&format!("reduction of thunk {hash}\n  reduction  success in ")));
    assert!(reduction.stdout.contains("\n  produced   out/result.txt  "), "{}", reduction.stdout);
}

#[test]
fn describe_explains_what_it_cannot_find() {
    let env = Env::new();
    let missing = Hash::of(b"nothing");
    let run = env.lambdabuild(&["describe", &missing.to_hex()]).failure();
    assert_eq!(run.stderr, format!("error: no thunk, reduction or blob named {missing} in the store [ROOT]/store\n"));
    let run = env.lambdabuild(&["describe", "not-a-hash"]).failure();
    assert_eq!(
        run.stderr,
        "error: `not-a-hash` is neither a file nor a hash (64 hex digits) of an object in the store\n"
    );

    let damaged = env.dir.path().join("thunk.json");
    std::fs::write(&damaged, br#"{"kind":"thunk","version":1,"toolchain":"#).unwrap();
    let run = env.lambdabuild(&["describe", damaged.to_str().unwrap()]).failure();
    assert_eq!(
        run.stderr,
        "error: cannot describe [ROOT]/thunk.json: it is damaged JSON: EOF while parsing a value at line 1 column 40\n"
    );
    std::fs::write(&damaged, b"\x7fELF\x02\x01").unwrap();
    let run = env.lambdabuild(&["describe", damaged.to_str().unwrap()]).failure();
    assert_eq!(
        run.stderr,
        "error: [ROOT]/thunk.json is not a placeholder, thunk, reduction or toolchain manifest of cargo-lambdabuild\n"
    );

    std::fs::write(&damaged, br#"{"kind":"thunk","version":9}"#).unwrap();
    let run = env.lambdabuild(&["describe", damaged.to_str().unwrap()]).failure();
    assert_eq!(
        run.stderr,
        "error: cannot describe [ROOT]/thunk.json: thunk has format version 9, but this cargo-lambdabuild \
         reads version 3; use the same cargo-lambdabuild version that wrote it, or rebuild to write it anew\n"
    );
}

/// `cargo lambdabuild stats --json` with exactly these settings, in `dir`.
fn stats_with(dir: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> serde_json::Value {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
    crate::support::hygienic(&mut command)
        .args(["lambdabuild", "stats", "--json"])
        .args(args)
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("LAMBDABUILD_CACHE_DIR", dir.join("cache"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::create_dir_all(dir.path().join("config/lambdabuild")).unwrap();
    let config = format!("store = \"{}\"\n[prices]\nlambda-request = 1.0\n", path("from-file"));
    std::fs::write(dir.path().join("config/lambdabuild/config.toml"), config).unwrap();

    assert_eq!(stats_with(dir.path(), &[], &[])["store"], path("from-file"));
    let variable = [("LAMBDABUILD_STORE", path("from-variable"))];
    assert_eq!(stats_with(dir.path(), &[], &variable)["store"], path("from-variable"));
    let flag = ["--store", &path("from-flag")];
    assert_eq!(stats_with(dir.path(), &flag, &variable)["store"], path("from-flag"));

    // LAMBDABUILD_CONFIG names another file; a file that is named but missing is an error.
    std::fs::write(dir.path().join("other.toml"), format!("store = \"{}\"\n", path("from-other"))).unwrap();
    let other = [("LAMBDABUILD_CONFIG", path("other.toml"))];
    assert_eq!(stats_with(dir.path(), &[], &other)["store"], path("from-other"));
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
    let output = crate::support::hygienic(&mut command)
        .args(["lambdabuild", "stats", "--config", &path("missing.toml")])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(101));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml does not exist"));

    // A misspelt key is an error that names the file, not a silent default.
    std::fs::write(dir.path().join("config/lambdabuild/config.toml"), "stor = \"x\"\n").unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
    let output = crate::support::hygienic(&mut command)
        .args(["lambdabuild", "stats"])
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(101));
    assert!(String::from_utf8_lossy(&output.stderr).contains("config.toml is not a valid config file"));
}
