//! `cargo lambdabuild predict`: the scale-out model (`cargo_lambdabuild::scaleout`) on a recorded
//! build, for several numbers of workers, beside the critical path.

use anyhow::Context;
use cargo_lambdabuild::scaleout::{GRAPH_VERSION, Graph, LambdaModel, predict, reads_graph_version};
use serde_json::json;

use crate::cli::{GlobalArgs, PredictArgs};
use crate::shell::Shell;

pub fn run(global: &GlobalArgs, args: PredictArgs, shell: &Shell) -> anyhow::Result<()> {
    let path = args.graph.clone().unwrap_or_else(|| "target/lambdabuild-timings/graph.json".into());
    let text = std::fs::read(&path).with_context(|| {
        format!("cannot read {}: build with `cargo lambdabuild --timings` first, or name the graph", path.display())
    })?;
    let graph: Graph = serde_json::from_slice(&text).with_context(|| format!("{} is not a graph", path.display()))?;
    anyhow::ensure!(
        reads_graph_version(graph.version),
        "{} has version {} of the graph format; this cargo-lambdabuild reads versions 1 to {GRAPH_VERSION}: build again",
        path.display(),
        graph.version
    );
    let defaults = LambdaModel::default();
    let model = LambdaModel {
        invoke_ms: args.invoke_ms.unwrap_or(defaults.invoke_ms),
        init_ms: args.init_ms.unwrap_or(defaults.init_ms),
        layer_bytes: args.layer_mb.map_or(defaults.layer_bytes, |mb| mb * 1_000_000),
        unpack_ms: args.unpack_ms.unwrap_or(defaults.unpack_ms),
        bandwidth_bytes_per_s: args.bandwidth.map_or(defaults.bandwidth_bytes_per_s, |mb| mb * 1_000_000),
        memory_mb: global.settings().memory_mb,
        ..defaults
    };
    let critical_ms = graph.critical_path_ms();
    let mut rows = Vec::new();
    for workers in &args.workers {
        rows.push(predict(&graph, &model, *workers, &global.settings().prices)?);
    }
    let ratio = |makespan_ms: u64| makespan_ms as f64 / critical_ms.max(1) as f64;
    if args.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|row| {
                json!({
                    "workers": row.workers,
                    "predicted_s": row.makespan_ms as f64 / 1000.0,
                    "ratio_to_critical_path": ratio(row.makespan_ms),
                    "cold_starts": row.cold_starts,
                    "invocations": row.invocations,
                    "billed_s": row.billed_ms as f64 / 1000.0,
                    "cost_usd": row.cost_usd,
                })
            })
            .collect();
        let total_ms: u64 = graph.thunks.iter().map(|node| node.duration_ms).sum();
        let value = json!({
            "thunks": graph.thunks.len(),
            "compile_s": total_ms as f64 / 1000.0,
            "critical_path_s": critical_ms as f64 / 1000.0,
            "model": model,
            "rows": rows,
        });
        shell.print(&format!("{value}\n"));
        return Ok(());
    }
    shell.print(&format!(
        "{} thunks; critical path {:.1} s (the longest chain of compiles: no number of workers does better)\n",
        graph.thunks.len(),
        critical_ms as f64 / 1000.0
    ));
    shell.print(&format!(
        "{:>8}  {:>11}  {:>15}  {:>11}  {:>9}\n",
        "workers", "predicted", "× critical path", "cold starts", "cost"
    ));
    for row in &rows {
        shell.print(&format!(
            "{:>8}  {:>9.1} s  {:>15.2}  {:>11}  {:>9}\n",
            row.workers,
            row.makespan_ms as f64 / 1000.0,
            ratio(row.makespan_ms),
            row.cold_starts,
            format!("${:.4}", row.cost_usd)
        ));
    }
    Ok(())
}
