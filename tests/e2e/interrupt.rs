//! Stopping a build in the middle: Ctrl-C stops it cleanly, `kill -9` leaves nothing a rerun trusts
//! wrongly, and the rerun resumes from the store. The `gated` fixture holds `app`'s compile until the
//! test creates `gate-open`, so the build is stopped exactly while rustc runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use thunk::placeholder::Placeholder;

use crate::support::Project;

/// Starts `cargo lambdabuild` on the local engine and waits until rustc compiles `app`; returns the
/// client and rustc's pid.
fn start_until_app_compiles(project: &Project) -> (Child, i32) {
    let mut child = project.lambdabuild_command(&[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(pid) = rustc_compiling(&project.root, "app") {
            return (child, pid);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the build ended ({status}) before app's compile started");
        }
        assert!(Instant::now() < deadline, "app's compile did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of a rustc (not the wrapper) compiling `crate_name` of the project at `root`.
fn rustc_compiling(root: &Path, crate_name: &str) -> Option<i32> {
    let root = root.to_str().unwrap();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else { continue };
        if exe.file_name().is_none_or(|name| name != "rustc") {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let names_crate = args.windows(2).any(|pair| pair[0] == "--crate-name" && pair[1] == crate_name);
        if names_crate && args.iter().any(|arg| arg.contains(root)) {
            return Some(pid);
        }
    }
    None
}

fn alive(pid: i32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[track_caller]
fn assert_stops(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "rustc (pid {pid}) still runs after its build was stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn journal_entries(project: &Project) -> usize {
    let dir = project.store().join("work/writing");
    std::fs::read_dir(dir)
        .map_or(0, |entries| entries.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "entry")).count())
}

/// app's output in deps/, the file cargo uplifts to `debug/app`.
fn app_in_deps(project: &Project) -> PathBuf {
    let deps = project.root.join("target/lambdabuild/debug/deps");
    std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("app-") && path.extension().is_none()
        })
        .expect("app's output in deps/")
}

#[test]
fn ctrl_c_stops_the_build_and_its_compiles_and_a_rerun_resumes_from_the_store() {
    let project = Project::fixture("gated");
    let (client, rustc) = start_until_app_compiles(&project);
    // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet.
    unsafe { libc::kill(client.id() as i32, libc::SIGINT) };
    let output = client.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("error: interrupted; what finished is in the store"), "{stderr}");
    assert_stops(rustc);
    // Nothing half done is left: app is still a placeholder, and no write is pending.
    assert!(Placeholder::read(&project.root.join("target/lambdabuild/debug/app")).unwrap().is_some());
    assert_eq!(journal_entries(&project), 0);

    std::fs::write(project.root.join("gate-open"), b"").unwrap();
    let build = project.assert_matches_plain_cargo(&[], &[]);
    // gate and util were built before the interruption and are not built again.
    assert!(build.count("cached") >= 2, "{}", build.summary);
    assert_eq!(build.count("executed"), 1, "only app: {}", build.summary);
}

#[test]
fn a_client_killed_mid_build_leaves_nothing_a_rerun_trusts_wrongly() {
    let project = Project::fixture("gated");
    let (mut client, rustc) = start_until_app_compiles(&project);
    client.kill().unwrap();
    client.wait().unwrap();
    // Nothing of the client ran: the compile dies with it all the same.
    assert_stops(rustc);
    // What a writer killed halfway leaves: neither the placeholder nor the real bytes. The killed
    // client's journal entry still names the file.
    assert_eq!(journal_entries(&project), 1);
    std::fs::write(app_in_deps(&project), b"\x7fELF, the first half of a binary").unwrap();

    std::fs::write(project.root.join("gate-open"), b"").unwrap();
    let build = project.assert_matches_plain_cargo(&[], &[]);
    assert!(build.stderr.contains("Recovered"), "{}", build.stderr);
    assert_eq!(journal_entries(&project), 0);
}
