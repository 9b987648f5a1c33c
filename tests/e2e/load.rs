//! The Lambda path under load: 2,000 small thunks (rustc type-checks of one-line crates, each reading
//! an output of one or two earlier ones) forced through the emulator at 64 invocations in flight by
//! `cargo-lambdabuild/examples/load_graph.rs`, in a process of its own so that its peak memory is the
//! client's alone.

use std::process::Command;
use std::time::Instant;

use crate::faulty_lambda::FaultyFunction;
use crate::support::{dev_services, hygienic};

const THUNKS: u64 = 2000;
const IN_FLIGHT: u32 = 64;

/// The client's peak resident memory while forcing. Measured on 2 cores: 55 MiB at 2,000 thunks, and
/// growing with the graph by about 12 KiB a thunk from 30 MiB (36 MiB at 500, 42 at 1,000, 79 at
/// 4,000), whether 8 or 64 invocations are in flight (52 MiB for 2,000 at 8). The bound leaves room
/// for more allocator arenas on a machine with more cores, and fails if each thunk or invocation came
/// to cost a multiple of that (a copy of every output, say).
const FORCING_PEAK_BOUND_KIB: u64 = 128 * 1024;

/// The example, which `dev_services()` builds: `scripts/dev-services up` runs
/// `cargo build --workspace --all-targets`.
fn load_graph_example() -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_owned();
    let example = deps.parent().unwrap().join("examples/load_graph");
    assert!(example.is_file(), "{} is not built", example.display());
    example
}

#[test]
fn two_thousand_thunks_at_64_in_flight_keep_the_client_memory_bounded() {
    let services = dev_services();
    let function = FaultyFunction::start(IN_FLIGHT, &services.endpoint);
    let store = services.create_bucket("load").to_string();
    let cache = tempfile::tempdir().unwrap();
    let mut command = Command::new(load_graph_example());
    hygienic(&mut command)
        .args(["--thunks", &THUNKS.to_string(), "--in-flight", &IN_FLIGHT.to_string()])
        .envs(services.env(&services.endpoint))
        .env("LAMBDABUILD_STORE", &store)
        .env("LAMBDABUILD_CACHE_DIR", cache.path())
        .env("AWS_ENDPOINT_URL_LAMBDA", &services.lambda_endpoint)
        .env("LAMBDABUILD_FUNCTION", &function.name);
    let started = Instant::now();
    let output = command.output().unwrap();
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("load_graph: {report} (wall {:.1} s)", wall.as_secs_f64());
    let field = |name: &str| report[name].as_u64().unwrap_or_else(|| panic!("no {name} in {report}"));
    assert_eq!(field("thunks"), THUNKS, "{report}");
    assert_eq!((field("succeeded"), field("failed"), field("fallbacks")), (THUNKS, 0, 0), "{report}\n{stderr}");
    assert_eq!(field("invocations"), THUNKS, "{report}");
    assert_eq!(function.invocations(), THUNKS, "each thunk invoked once, as the function saw it");
    assert!(field("peak_rss_kib") < FORCING_PEAK_BOUND_KIB, "{report}");
}
