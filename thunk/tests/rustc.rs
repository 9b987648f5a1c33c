//! The executor running the real rustc of this machine, from a named toolchain, on hand-built thunks:
//! a lib and a bin that links it must come out byte-identical to running rustc directly.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Fixture, path};
use thunk::reduction::Status;
use thunk::thunk::{MemoryClass, ProgramPath, SANDBOX_TOKEN};
use thunk::toolchain::{name_local_toolchain, sysroot_of};
use thunk::{Input, SandboxPath, Thunk};

const LIB_RS: &str = "pub fn greeting() -> &'static str { \"hello from a thunk\" }\n\
                      pub fn here() -> &'static str { file!() }\n";
const MAIN_RS: &str = "fn main() { println!(\"{} ({})\", greeting::greeting(), greeting::here()); }\n";
/// Where the project "is" for the outputs: both builds map their real directory here.
const REMAP_TO: &str = "/home/dev/greeting";

fn sysroot() -> PathBuf {
    let output = Command::new("rustc").args(["--print", "sysroot"]).output().unwrap();
    assert!(output.status.success());
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

const LIB_ARGS: &[&str] = &[
    "--crate-name=greeting",
    "--edition=2021",
    "--crate-type=lib",
    "--emit=dep-info,metadata,link",
    "-Cdebuginfo=2",
    "src/lib.rs",
    "--out-dir=out",
];

const BIN_ARGS: &[&str] = &[
    "--crate-name=main",
    "--edition=2021",
    "--crate-type=bin",
    "-Cdebuginfo=2",
    "src/main.rs",
    "--out-dir=out",
    "--extern=greeting=deps/libgreeting.rlib",
    "-Ldependency=deps",
];

/// `args` plus the remap of `remap_from` (the sandbox token, or the real project directory).
fn with_remap(args: &[&str], remap_from: &str) -> Vec<String> {
    let remap = format!("--remap-path-prefix={remap_from}={REMAP_TO}");
    args.iter().map(|arg| arg.to_string()).chain([remap]).collect()
}

fn run_rustc(rustc: &Path, cwd: &Path, args: &[String]) {
    let output = Command::new(rustc).args(args).current_dir(cwd).env("PATH", "/usr/bin:/bin").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn real_rustc_in_a_sandbox_matches_rustc_run_directly() {
    let fixture = Fixture::new();
    let sysroot = sysroot();
    let toolchain = name_local_toolchain(&sysroot, &[], &fixture.workdir, &fixture.store).await.unwrap();
    assert!(toolchain.manifest.files.contains_key(&path("bin/rustc")));
    assert!(toolchain.manifest.files.keys().any(|f| f.as_str().starts_with("lib/librustc_driver-")));
    assert!(toolchain.files_hashed > 0);
    // Naming it again reads nothing: every file is known to the hash cache by its stat data.
    let again = name_local_toolchain(&sysroot, &[], &fixture.workdir, &fixture.store).await.unwrap();
    assert_eq!((again.hash, again.files_hashed), (toolchain.hash, 0));
    assert_eq!(sysroot_of(&sysroot.join("bin/rustc")).unwrap(), fs::canonicalize(&sysroot).unwrap());

    let base = |outputs: &[&str], args: Vec<String>| Thunk {
        toolchain: toolchain.hash,
        program: ProgramPath(SandboxPath::program("_toolchain/bin/rustc").unwrap()),
        args,
        cwd: None,
        // rustc finds `cc` for linking on PATH; nothing else of this process reaches it.
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        inputs: BTreeMap::new(),
        outputs: outputs.iter().map(|o| path(o)).collect::<BTreeSet<_>>(),
        timeout_ms: 120_000,
        memory: MemoryClass::Standard,
        placement: thunk::thunk::Placement::Anywhere,
    };
    let mut lib =
        base(&["out/libgreeting.rlib", "out/libgreeting.rmeta", "out/greeting.d"], with_remap(LIB_ARGS, SANDBOX_TOKEN));
    lib.inputs.insert(path("src/lib.rs"), fixture.blob(LIB_RS.as_bytes(), false).await);
    let lib_reduction = fixture.executor.execute(&lib).await.unwrap();
    assert_eq!(lib_reduction.status, Status::Success, "{}", stderr(&fixture, &lib_reduction).await);

    let mut bin = base(&["out/main"], with_remap(BIN_ARGS, SANDBOX_TOKEN));
    bin.inputs.insert(path("src/main.rs"), fixture.blob(MAIN_RS.as_bytes(), false).await);
    bin.inputs
        .insert(path("deps/libgreeting.rlib"), Input::Link { thunk: lib.hash(), output: path("out/libgreeting.rlib") });
    let bin_reduction = fixture.executor.execute(&bin).await.unwrap();
    assert_eq!(bin_reduction.status, Status::Success, "{}", stderr(&fixture, &bin_reduction).await);
    assert!(bin_reduction.outputs[&path("out/main")].executable);
    assert!(bin_reduction.peak_memory_kib > 10_000, "rustc's peak memory is recorded");

    // The reference: the same rustc, run directly in a real project directory with the same remap.
    let project = fixture.dir.path().join("project");
    fs::create_dir_all(project.join("src")).unwrap();
    fs::create_dir_all(project.join("deps")).unwrap();
    fs::create_dir_all(project.join("out")).unwrap();
    fs::write(project.join("src/lib.rs"), LIB_RS).unwrap();
    fs::write(project.join("src/main.rs"), MAIN_RS).unwrap();
    let rustc = sysroot.join("bin/rustc");
    let project_text = project.to_str().unwrap();
    run_rustc(&rustc, &project, &with_remap(LIB_ARGS, project_text));
    fs::copy(project.join("out/libgreeting.rlib"), project.join("deps/libgreeting.rlib")).unwrap();
    run_rustc(&rustc, &project, &with_remap(BIN_ARGS, project_text));

    for (reduction, output) in [
        (&lib_reduction, "out/libgreeting.rlib"),
        (&lib_reduction, "out/libgreeting.rmeta"),
        (&lib_reduction, "out/greeting.d"),
        (&bin_reduction, "out/main"),
    ] {
        let from_thunk = fixture.store.get_blob(reduction.outputs[&path(output)].hash).await.unwrap();
        let direct = fs::read(project.join(output)).unwrap();
        assert!(from_thunk == direct, "{output} differs between the sandbox and a direct rustc run");
    }
    let run = Command::new(project.join("out/main")).output().unwrap();
    assert_eq!(String::from_utf8(run.stdout).unwrap(), "hello from a thunk (src/lib.rs)\n");
}

async fn stderr(fixture: &Fixture, reduction: &thunk::Reduction) -> String {
    String::from_utf8_lossy(&fixture.store.get_blob(reduction.stderr.hash).await.unwrap()).into_owned()
}
