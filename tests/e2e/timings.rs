//! `--timings`: the per-worker HTML report renders in headless Chromium (Debian's, installed by
//! `scripts/dev-services up`) with one row per worker and one bar per thunk the build ran.

use std::path::Path;
use std::process::Command;

use crate::support::{Build, Project};

/// Renders the report the build wrote with `scripts/check-timeline` and checks what Chromium shows
/// against what the build says it drew.
pub fn assert_timeline_renders(build: &Build, dir: &Path) -> serde_json::Value {
    let report = &build.summary["timings"];
    let path = report["path"].as_str().unwrap_or_else(|| panic!("no timings in {}", build.summary));
    let png = dir.join("timeline.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check-timeline");
    let output = Command::new(script).arg(path).arg(&png).output().unwrap();
    assert!(output.status.success(), "check-timeline failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["workers"], report["workers"], "one row per worker: {seen} vs {report}");
    assert_eq!(seen["bars"], report["bars"], "one bar per thunk: {seen} vs {report}");
    assert!(seen["critical"].as_u64().unwrap() >= 1, "the critical path is highlighted: {seen}");
    let bars = report["bars"].as_u64().unwrap();
    assert_eq!(seen["slowest_rows"].as_u64().unwrap(), bars.min(20), "{seen}");
    assert!(seen["screenshot_bytes"].as_u64().unwrap() > 10_000, "a screenshot with something on it: {seen}");
    seen
}

#[test]
fn the_timeline_of_a_local_build_renders_a_row_per_slot_and_a_bar_per_thunk() {
    let project = Project::fixture("workspace");
    let build = project.lambdabuild(&["--all-targets", "--timings", "--engine", "local=2"]).success();
    let seen = assert_timeline_renders(&build, project.dir.path());
    assert!(seen["bars"].as_u64().unwrap() >= 10, "{seen}");
    assert!((1..=2).contains(&seen["workers"].as_u64().unwrap()), "local=2 has at most two rows: {seen}");
    let html = std::fs::read_to_string(build.summary["timings"]["path"].as_str().unwrap()).unwrap();
    assert!(!html.contains("http"), "the report opens without a network");
}

#[test]
fn the_recorded_graph_predicts_wall_time_and_cost_on_n_lambda_workers() {
    let project = Project::fixture("workspace");
    let build = project.lambdabuild(&["--all-targets", "--timings", "--engine", "local=2"]).success();
    let graph_path = Path::new(build.summary["timings"]["path"].as_str().unwrap()).with_file_name("graph.json");
    let graph: serde_json::Value = serde_json::from_slice(&std::fs::read(&graph_path).unwrap()).unwrap();
    let thunks = graph["thunks"].as_array().unwrap();
    assert!(thunks.len() >= 10, "every thunk the forcer forced: {}", thunks.len());
    assert!(thunks.iter().any(|node| !node["producers"].as_array().unwrap().is_empty()), "with its links");
    // What travels to and from the function: blobs as the store keeps them, compressed.
    let sum = |field: &str| thunks.iter().map(|node| node[field].as_u64().unwrap()).sum::<u64>();
    assert!(sum("output_stored_bytes") < sum("output_bytes"), "{graph}");
    assert!(sum("input_stored_bytes") < sum("input_bytes") && sum("input_stored_bytes") > 0, "{graph}");

    let mut predict = Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
    crate::support::hygienic(&mut predict)
        .args(["lambdabuild", "predict", "--json", "--workers", "1,4,1000"])
        .arg(&graph_path);
    let output = predict.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let prediction: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let critical = prediction["critical_path_s"].as_f64().unwrap();
    let compile = prediction["compile_s"].as_f64().unwrap();
    let rows = prediction["rows"].as_array().unwrap();
    let predicted: Vec<f64> = rows.iter().map(|row| row["predicted_s"].as_f64().unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert!(critical > 0.0 && critical <= compile, "{prediction}");
    // One worker runs every compile in turn; more never do worse (beyond a few milliseconds: with
    // more workers, a thunk may start at once on a cold instance rather than wait for a warm one);
    // none beats the critical path.
    assert!(predicted[0] >= compile, "{prediction}");
    assert!(predicted[0] >= predicted[1] && predicted[1] >= predicted[2] - 0.05, "{prediction}");
    assert!(predicted[2] >= critical, "{prediction}");
    assert!(rows.iter().all(|row| row["cost_usd"].as_f64().unwrap() > 0.0), "{prediction}");
    assert_eq!(rows[0]["invocations"].as_u64().unwrap(), thunks.len() as u64);
}
