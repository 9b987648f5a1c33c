//! The executor on real processes: sandboxing, env, links, timeouts and refused inputs and outputs.

mod support;

use std::fs;
use std::process::Command;

use support::{Fixture, path};
use thunk::exec::ExecError;
use thunk::reduction::Status;
use thunk::thunk::SANDBOX_TOKEN;
use thunk::{Input, ObjectKey, StoreError};

#[tokio::test]
async fn runs_with_exactly_its_env_in_the_sandbox_and_stores_outputs() {
    let fixture = Fixture::new();
    let mut thunk = fixture
        .script_thunk(
            "mkdir -p out\n\
             cat \"$DATA_DIR/in.txt\" > out/copy.txt\n\
             env | sort > out/env.txt\n\
             pwd > out/pwd.txt\n\
             echo diagnostics >&2\n\
             echo '#!/bin/sh' > out/tool && chmod +x out/tool",
            &["out/copy.txt", "out/env.txt", "out/pwd.txt", "out/tool"],
        )
        .await;
    thunk.inputs.insert(path("data/in.txt"), fixture.blob(b"input bytes\n", false).await);
    thunk.env.insert("DATA_DIR".into(), format!("{SANDBOX_TOKEN}/data"));

    let reduction = fixture.executor.execute(&thunk).await.unwrap();
    assert_eq!(reduction.status, Status::Success);
    assert_eq!(reduction.engine, "local");
    let output = async |name: &str| {
        let file = reduction.outputs[&path(name)];
        String::from_utf8(fixture.store.get_blob(file.hash).await.unwrap()).unwrap()
    };
    assert_eq!(output("out/copy.txt").await, "input bytes\n");
    assert!(!reduction.outputs[&path("out/copy.txt")].executable);
    assert_eq!(output("out/tool").await, "#!/bin/sh\n");
    assert!(reduction.outputs[&path("out/tool")].executable, "the executable bit is recorded");

    let env = output("out/env.txt").await;
    let names: Vec<&str> = env.lines().map(|line| line.split('=').next().unwrap()).collect();
    // `sh` itself exports PWD; everything else is the thunk's: none of the test process's own
    // variables (HOME, CARGO_*, RUST_*) leak in.
    assert_eq!(names, ["DATA_DIR", "PATH", "PWD"], "{env}");
    let pwd = output("out/pwd.txt").await;
    assert!(pwd.trim_end().ends_with("/root"), "cwd is the sandbox root: {pwd}");
    assert!(env.contains(&format!("DATA_DIR={}/data", pwd.trim_end())), "@SANDBOX@ expanded: {env}");

    let stderr = fixture.store.get_blob(reduction.stderr.hash).await.unwrap();
    assert_eq!(stderr, b"diagnostics\n");
    assert_eq!(fixture.store.get_reduction(thunk.hash()).await.unwrap(), Some(reduction));
    assert_eq!(fixture.leftover_sandboxes(), 0, "the sandbox is removed after the run");
}

#[tokio::test]
async fn links_take_the_output_of_a_forced_thunk() {
    let fixture = Fixture::new();
    let producer = fixture.script_thunk("echo produced > made.txt", &["made.txt"]).await;
    let mut consumer = fixture.script_thunk("cat in/made.txt > got.txt", &["got.txt"]).await;
    consumer.inputs.insert(path("in/made.txt"), Input::Link { thunk: producer.hash(), output: path("made.txt") });

    let err = fixture.executor.execute(&consumer).await.unwrap_err();
    assert!(matches!(err, ExecError::LinkNotForced { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("input `in/made.txt` is an output of thunk {}, which has not been forced yet", producer.hash())
    );
    assert_eq!(fixture.store.get_reduction(consumer.hash()).await.unwrap(), None);

    fixture.executor.execute(&producer).await.unwrap();
    let reduction = fixture.executor.execute(&consumer).await.unwrap();
    let got = reduction.outputs[&path("got.txt")];
    assert_eq!(fixture.store.get_blob(got.hash).await.unwrap(), b"produced\n");
}

#[tokio::test]
async fn a_compile_error_is_a_failed_reduction_with_its_stderr() {
    let fixture = Fixture::new();
    let thunk = fixture.script_thunk("echo 'error[E0425]: cannot find value' >&2\nexit 3", &["out"]).await;
    let reduction = fixture.executor.execute(&thunk).await.unwrap();
    assert_eq!(reduction.status, Status::Exit { code: 3 });
    assert!(reduction.outputs.is_empty());
    let stderr = fixture.store.get_blob(reduction.stderr.hash).await.unwrap();
    assert_eq!(stderr, b"error[E0425]: cannot find value\n");
}

#[tokio::test]
async fn a_missing_declared_output_fails_the_reduction() {
    let fixture = Fixture::new();
    let thunk = fixture.script_thunk("echo made > a.txt", &["a.txt", "b.txt"]).await;
    let reduction = fixture.executor.execute(&thunk).await.unwrap();
    assert_eq!(reduction.status, Status::MissingOutput { path: path("b.txt") });
    assert!(reduction.outputs.is_empty(), "a failed reduction lists no outputs");
}

#[tokio::test]
async fn a_thunk_past_its_timeout_is_killed_with_its_children() {
    let fixture = Fixture::new();
    // A background grandchild with a recognisable command line: it must die with the group.
    let marker = format!("{}.{}", 31, std::process::id());
    let mut thunk = fixture.script_thunk(&format!("sleep {marker} &\nsleep {marker}\n"), &["never"]).await;
    thunk.timeout_ms = 300;
    let err = fixture.executor.execute(&thunk).await.unwrap_err();
    assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("thunk {} ran past its timeout of 0.3 s and was killed with all its processes", thunk.hash())
    );
    assert_eq!(fixture.store.get_reduction(thunk.hash()).await.unwrap(), None, "no reduction for a timeout");
    let mut survivors = String::new();
    for _ in 0..50 {
        let pgrep = Command::new("pgrep").args(["-f", &format!("sleep {marker}")]).output().unwrap();
        survivors = String::from_utf8(pgrep.stdout).unwrap();
        if survivors.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(survivors, "", "processes of the timed-out thunk are still running");
}

#[tokio::test]
async fn escaping_symlink_inputs_are_refused_and_nothing_is_written() {
    let fixture = Fixture::new();
    // Lexically out of the sandbox: refused before anything runs.
    let mut thunk = fixture.script_thunk("cat leak > out", &["out"]).await;
    thunk.inputs.insert(path("leak"), Input::Symlink { target: "../../../../../../etc/passwd".into() });
    let err = fixture.executor.execute(&thunk).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid thunk: symlink `leak` -> `../../../../../../etc/passwd` points outside the sandbox"
    );

    // Lexically inside, but through another symlink it climbs out: caught once the links exist.
    let mut thunk = fixture.script_thunk("cat a/b/c/t/etc/passwd > out", &["out"]).await;
    thunk.inputs.insert(path("x/keep.txt"), fixture.blob(b"", false).await);
    thunk.inputs.insert(path("a/b/c/s"), Input::Symlink { target: "../../../x".into() });
    thunk.inputs.insert(path("a/b/c/t"), Input::Symlink { target: "s/../../..".into() });
    let err = fixture.executor.execute(&thunk).await.unwrap_err();
    assert!(matches!(err, ExecError::UnsafeInput { .. }), "{err}");
    assert!(err.to_string().starts_with("refused input `a/b/c/t`: the symlink resolves to"), "{err}");

    assert_eq!(fixture.store.get_reduction(thunk.hash()).await.unwrap(), None);
    assert_eq!(fixture.leftover_sandboxes(), 0);
}

#[tokio::test]
async fn outputs_that_leave_the_sandbox_are_refused() {
    let fixture = Fixture::new();
    let thunk = fixture.script_thunk("rmdir escape && ln -s /etc escape", &["escape/passwd"]).await;
    let err = fixture.executor.execute(&thunk).await.unwrap_err();
    assert!(err.to_string().starts_with("refused output `escape/passwd`: it resolves to /etc/passwd"), "{err}");
    assert_eq!(fixture.store.get_reduction(thunk.hash()).await.unwrap(), None);

    let thunk = fixture.script_thunk("ln -s /etc/passwd out", &["out"]).await;
    let err = fixture.executor.execute(&thunk).await.unwrap_err();
    assert_eq!(err.to_string(), "refused output `out`: it is a symlink, not a file");
    assert_eq!(fixture.store.get_reduction(thunk.hash()).await.unwrap(), None);
}

#[tokio::test]
async fn a_corrupt_or_missing_input_blob_stops_the_run() {
    let fixture = Fixture::new();
    let mut thunk = fixture.script_thunk("cat in > out", &["out"]).await;
    let input = fixture.blob(b"trusted bytes", false).await;
    let Input::Blob { hash, .. } = input else { unreachable!() };
    thunk.inputs.insert(path("in"), input);
    let blob_file = fixture.store_root().join(ObjectKey::Blob(hash).path());
    fs::write(&blob_file, zstd::bulk::compress(b"tampered bytes", 3).unwrap()).unwrap();
    let err = fixture.executor.execute(&thunk).await.unwrap_err();
    assert!(matches!(err, ExecError::Store(StoreError::Corrupt { .. })), "{err}");
    assert_eq!(fixture.store.get_reduction(thunk.hash()).await.unwrap(), None);

    fs::remove_file(&blob_file).unwrap();
    let err = fixture.executor.execute(&thunk).await.unwrap_err();
    assert!(err.to_string().starts_with(&format!("blobs/{hash} is not in the store")), "{err}");
    assert_eq!(fixture.leftover_sandboxes(), 0);
}

#[tokio::test]
async fn a_thunk_whose_toolchain_is_not_here_is_refused() {
    let fixture = Fixture::new();
    let mut thunk = fixture.script_thunk("true", &["out"]).await;
    thunk.toolchain = thunk::Hash::of(b"a toolchain this machine never named");
    let err = fixture.executor.execute(&thunk).await.unwrap_err();
    assert!(err.to_string().starts_with(&format!("toolchain {} is not available on this machine", thunk.toolchain)));
}
