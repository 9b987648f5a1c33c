//! A load test of the Lambda path: a synthetic graph of small rustc thunks, forced on the function
//! with many invocations in flight, to see how the client's memory and time grow with the graph.
//!
//! ```text
//! LAMBDABUILD_STORE=s3://BUCKET/PREFIX LAMBDABUILD_FUNCTION=NAME cargo run --example load_graph -- \
//!     [--thunks 2000] [--in-flight 64]
//! ```
//!
//! The store, cache directory, function and AWS endpoints come from the settings, as for
//! `cargo lambdabuild build`. Each thunk runs the local toolchain's rustc on a source file of its own
//! (`--emit=metadata`: a type check, the lightest real compile) that reads an output of one or two
//! earlier thunks with `include_bytes!`, so the forcer walks a real graph, layer by layer. What it reads
//! is their dep-info, whose size does not grow along a chain: rustc keeps an included file in the
//! metadata, and through `--extern` it would need every crate below a dependency too. The sources
//! live in a new temporary directory named in every thunk, so no run finds another's reductions.
//!
//! Prints one JSON line: `thunks`, `succeeded`, `failed`, `fallbacks` (thunks Lambda did not run),
//! `invocations` (those that answered with a reduction), `in_flight`, `setup_ms` (naming, packing and
//! uploading), `elapsed_ms` (forcing), `setup_peak_rss_kib` and `peak_rss_kib`: this process's peak
//! resident memory before forcing (the toolchain layer is packed in memory) and while forcing (the
//! peak is reset in between).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use cargo_lambdabuild::config::{Given, Settings};
use cargo_lambdabuild::engine::lambda::LambdaEngine;
use clap::Parser;
use thunk::force::Forcer;
use thunk::remote::RemoteEngine;
use thunk::thunk::{MemoryClass, ProgramPath};
use thunk::toolchain::{name_local_toolchain, query_sysroot};
use thunk::{Hash, Input, Placement, SandboxPath, Store, Thunk};

#[derive(Parser)]
struct Args {
    /// Thunks in the graph.
    #[arg(long, default_value_t = 2000)]
    thunks: usize,
    /// Invocations in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
}

/// Thunks per layer: each links to the thunk `WIDTH` before it, so a layer's thunks are ready together.
/// Twice the default in-flight count, so that no slot waits for the last thunk of a layer.
const WIDTH: usize = 128;

/// Local slots, for thunks that fall back from Lambda (none should).
const LOCAL_SLOTS: usize = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let settings = Settings::resolve(&Given::default())?;
    let opened = cargo_lambdabuild::store::open_store(&settings, true).await?;
    let Some(url) = opened.remote.clone() else {
        bail!("the Lambda engine needs an S3 store: set LAMBDABUILD_STORE=s3://BUCKET/PREFIX");
    };
    let sysroot = query_sysroot("rustc".as_ref(), &std::env::current_dir()?)?;
    let toolchain = name_local_toolchain(&sysroot, &[], &opened.workdir, &opened.local)
        .await
        .with_context(|| format!("cannot name the toolchain at {}", sysroot.display()))?;
    let project = tempfile::Builder::new().prefix("lambdabuild-load-").tempdir()?;
    let thunks = write_graph(project.path(), toolchain.hash, args.thunks, &opened.local).await?;
    // As `cargo lambdabuild build` does before forcing on Lambda: the layer, the thunks and their
    // sources, read from where they are.
    cargo_lambdabuild::upload::upload(&opened.store, &opened.workdir, &thunks, true, settings.upload_jobs, false)
        .await?;
    let setup_ms = started.elapsed().as_millis() as u64;
    let setup_peak_rss_kib = peak_rss_kib()?;
    // Linux's reset of the high-water mark to the current resident size (proc(5), clear_refs).
    std::fs::write("/proc/self/clear_refs", "5").context("cannot reset the peak memory")?;

    let forcing = Instant::now();
    let engine = Arc::new(LambdaEngine::connect(&settings, &url).await);
    let forcer = Forcer::new(opened.store.clone(), opened.workdir.clone(), LOCAL_SLOTS)
        .with_remote(Arc::clone(&engine) as Arc<dyn RemoteEngine>, args.in_flight);
    forcer.prioritize(&thunks).await?;
    let mut forced = tokio::task::JoinSet::new();
    for thunk in &thunks {
        forced.spawn(forcer.force(*thunk));
    }
    let (mut succeeded, mut failed, mut fallbacks) = (0, 0, 0);
    let mut first_failure = None;
    while let Some(joined) = forced.join_next().await {
        match joined.context("a forcing task panicked")? {
            Ok(outcome) if outcome.reduction.succeeded() => {
                succeeded += 1;
                if let Some(reason) = outcome.fallback {
                    fallbacks += 1;
                    first_failure.get_or_insert(format!("ran locally: {reason}"));
                }
            }
            Ok(outcome) => {
                failed += 1;
                let stderr = opened.store.get_blob(outcome.reduction.stderr.hash).await.unwrap_or_default();
                first_failure.get_or_insert(format!("failed: {}", String::from_utf8_lossy(&stderr)));
            }
            Err(error) => {
                failed += 1;
                first_failure.get_or_insert(error.to_string());
            }
        }
    }
    let elapsed_ms = forcing.elapsed().as_millis() as u64;
    if let Some(failure) = first_failure {
        eprintln!("first problem: {failure}");
    }
    Ok(serde_json::json!({
        "thunks": thunks.len(),
        "succeeded": succeeded,
        "failed": failed,
        "fallbacks": fallbacks,
        "invocations": engine.usage().invocations,
        "in_flight": args.in_flight,
        "setup_ms": setup_ms,
        "elapsed_ms": elapsed_ms,
        "setup_peak_rss_kib": setup_peak_rss_kib,
        "peak_rss_kib": peak_rss_kib()?,
    }))
}

/// Writes the sources of `count` thunks under `project` and stores the thunks in `local`; returns
/// their hashes. Thunk `i` reads the output of thunk `i - WIDTH` and, for every other one, of a thunk
/// further back, so the graph has `count / WIDTH` layers and links that skip some.
async fn write_graph(project: &Path, toolchain: Hash, count: usize, local: &Store) -> anyhow::Result<Vec<Hash>> {
    // Thunks name files by their real path without the leading `/` (see ARCHITECTURE.md, "Mirror
    // layout"), so the local engine could run a thunk that falls back, in place.
    let dir = project.to_str().context("the temporary directory's path is not UTF-8")?.trim_start_matches('/');
    std::fs::create_dir_all(project.join("src"))?;
    std::fs::create_dir_all(project.join("out"))?;
    let path = |relative: &str| SandboxPath::new(&format!("{dir}/{relative}"));
    let mut hashes: Vec<Hash> = Vec::with_capacity(count);
    for i in 0..count {
        let mut dependencies = Vec::new();
        if i >= WIDTH {
            dependencies.push(i - WIDTH);
        }
        if i >= 2 * WIDTH && i % 2 == 0 {
            dependencies.push(i * 7919 % (i - WIDTH));
        }
        let dep_info = |n: usize| format!("out/t{n}.d");
        let rmeta = format!("out/libt{i}.rmeta");
        let sizes: String =
            dependencies.iter().map(|d| format!("include_bytes!(\"../{}\").len() + ", dep_info(*d))).collect();
        let source = format!("pub const N: usize = {sizes}{i};\n");
        std::fs::write(project.join(format!("src/t{i}.rs")), &source)?;
        let args = vec![
            format!("--crate-name=t{i}"),
            "--edition=2021".to_owned(),
            "--crate-type=lib".to_owned(),
            format!("--emit=metadata={rmeta},dep-info={}", dep_info(i)),
            format!("src/t{i}.rs"),
        ];
        let mut inputs = BTreeMap::from([(
            path(&format!("src/t{i}.rs"))?,
            Input::Blob { hash: Hash::of(source.as_bytes()), size: source.len() as u64, executable: false },
        )]);
        for d in dependencies {
            inputs.insert(path(&dep_info(d))?, Input::Link { thunk: hashes[d], output: path(&dep_info(d))? });
        }
        let thunk = Thunk {
            toolchain,
            program: ProgramPath(SandboxPath::program("_toolchain/bin/rustc")?),
            args,
            cwd: Some(SandboxPath::new(dir)?),
            env: BTreeMap::new(),
            inputs,
            outputs: BTreeSet::from([path(&rmeta)?, path(&dep_info(i))?]),
            timeout_ms: 120_000,
            memory: MemoryClass::Standard,
            placement: Placement::Anywhere,
        };
        hashes.push(local.put_thunk(&thunk).await?);
    }
    Ok(hashes)
}

/// This process's peak resident memory, in KiB (`VmHWM`).
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}
