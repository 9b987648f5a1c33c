//! `cargo lambdabuild stats`: the counters of the current store since the last `--reset`, added to by
//! every `cargo lambdabuild` build and every CI-mode wrapper on this machine (see `thunk::stats`).

use serde_json::json;
use thunk::stats::Stats;

use crate::cli::{GlobalArgs, StatsArgs};
use crate::cost::Cost;
use crate::shell::Shell;

pub async fn run(global: &GlobalArgs, args: StatsArgs, shell: &Shell) -> anyhow::Result<()> {
    // The counters are local: no request to an S3 store is needed to read them.
    let settings = global.settings();
    let opened = cargo_lambdabuild::store::open_store(settings, false).await?;
    let store = opened.store.describe();
    let stats = Stats::of(&opened.workdir, &store);
    let (tally, since) = stats.read()?;
    let cost = Cost::of(&tally, settings.memory_mb, &settings.prices);
    if args.json {
        let value = json!({
            "store": store,
            "since": since,
            "executed": tally.executed,
            "executed_total": tally.executed_total(),
            "cached": tally.cached,
            "passed_through": tally.passed_through,
            "failed": tally.failed,
            "traffic": tally.traffic,
            "lambda": { "invocations": tally.lambda_invocations, "billed_ms": tally.lambda_billed_ms },
            "cost": cost,
        });
        shell.print(&format!("{value}\n"));
    } else {
        let since = match since {
            Some(seconds) => format!("since {}", crate::timings::utc_date_time(seconds)),
            None => "since the store was first used".to_owned(),
        };
        shell.print(&format!("store {store}, {since}\n"));
        let engines: Vec<String> = tally.executed.iter().map(|(engine, n)| format!("{n} on {engine}")).collect();
        let engines = if engines.is_empty() { String::new() } else { format!(" ({})", engines.join(", ")) };
        shell.print(&format!("  executed        {}{engines}\n", tally.executed_total()));
        shell.print(&format!("  cache hits      {}\n", tally.cached));
        shell.print(&format!("  passed through  {}\n", tally.passed_through));
        shell.print(&format!("  failed          {}\n", tally.failed));
        shell.print(&format!(
            "  traffic         {} PUT / {:.1} MB up, {} GET / {:.1} MB down\n",
            tally.traffic.put_requests,
            tally.traffic.bytes_up as f64 / 1e6,
            tally.traffic.get_requests,
            tally.traffic.bytes_down as f64 / 1e6
        ));
        shell.print(&format!("  cost            {}\n", cost.describe()));
    }
    if args.reset {
        stats.reset()?;
        shell.status("Reset", "the counters of this store");
    }
    Ok(())
}
