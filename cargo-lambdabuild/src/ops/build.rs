//! `cargo lambdabuild [build]`: model the build with cargo, force the graph, write the real artifacts.
//!
//! 1. Name the toolchain cargo will use and open a session for the wrappers.
//! 2. Run `cargo build` with `RUSTC_WRAPPER=rustc-model` into `<target-dir>/lambdabuild`: every unit
//!    becomes a thunk with placeholders (build scripts are forced on the way, because cargo runs them).
//! 3. Force the thunks behind every artifact cargo reported and write their real bytes over the
//!    placeholders (same inode, same mtime, so cargo's hard links and fingerprints hold). On the local
//!    engine forcing starts while cargo still reports the graph; on Lambda it starts once the model
//!    phase is over and the uploader has put the graph's inputs in the S3 store.
//! 4. Show rustc's diagnostics as cargo would, and a summary.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use cargo_metadata::Message;
use rustc_model::session::{Record, Session, SessionConfig};
use serde_json::json;
use thunk::force::{ForceError, Forced, Forcer};
use thunk::placeholder::Placeholder;
use thunk::reduction::Status;
use thunk::remote::RemoteEngine;
use thunk::toolchain::{name_local_toolchain, query_sysroot};
use thunk::{Hash, Store};

use crate::cli::{BuildArgs, ForceArgs, GlobalArgs};
use crate::cost::Cost;
use crate::engine::Engines;
use crate::engine::lambda::LambdaEngine;
use crate::shell::Shell;
use crate::upload::upload;

impl BuildArgs {
    /// The flags that go to `cargo build` as they are.
    fn cargo_flags(&self, global: &GlobalArgs) -> Vec<String> {
        let mut flags = Vec::new();
        let mut flag = |name: &str, on: bool| {
            if on {
                flags.push(name.to_owned());
            }
        };
        flag("--release", self.release);
        flag("--workspace", self.workspace);
        flag("--all-features", self.all_features);
        flag("--no-default-features", self.no_default_features);
        flag("--lib", self.lib);
        flag("--bins", self.bins);
        flag("--examples", self.examples);
        flag("--tests", self.tests);
        flag("--benches", self.benches);
        flag("--all-targets", self.all_targets);
        flag("--locked", self.locked);
        flag("--offline", self.offline);
        flag("--frozen", self.frozen);
        flag("--quiet", global.quiet);
        for _ in 0..global.verbose {
            flags.push("--verbose".into());
        }
        let mut valued = |name: &str, values: &[String]| {
            for value in values {
                flags.push(format!("{name}={value}"));
            }
        };
        valued("--profile", self.profile.as_slice());
        valued("--package", &self.package);
        valued("--exclude", &self.exclude);
        valued("--features", &self.features);
        valued("--bin", &self.bin);
        valued("--example", &self.example);
        valued("--test", &self.test);
        valued("--target", &self.target);
        if let Some(jobs) = self.jobs {
            flags.push(format!("--jobs={jobs}"));
        }
        if let Some(path) = &self.manifest_path {
            flags.push(format!("--manifest-path={}", path.display()));
        }
        flags
    }
}

/// Cargo, as cargo named itself when it ran this subcommand.
fn cargo_program() -> PathBuf {
    thunk::env::cargo().unwrap_or_else(|| PathBuf::from("cargo"))
}

/// The target directory cargo would use, from `cargo metadata`.
fn default_target_dir(args: &BuildArgs) -> anyhow::Result<PathBuf> {
    let mut command = cargo_metadata::MetadataCommand::new();
    command.cargo_path(cargo_program()).no_deps();
    if let Some(path) = &args.manifest_path {
        command.manifest_path(path);
    }
    let metadata = command.exec().context("cannot read the workspace with `cargo metadata`")?;
    Ok(metadata.target_directory.into_std_path_buf())
}

/// What the model phase produced.
pub struct Modelled {
    /// Cargo's JSON messages (printed again after forcing, for `--message-format=json`).
    messages: Vec<String>,
    /// The artifacts cargo reported that were placeholders when it reported them.
    roots: Vec<Root>,
    records: Vec<Record>,
    pub seconds: f64,
    /// The target directory the model built in (`<target>/lambdabuild`).
    target_dir: PathBuf,
    /// The session directory, removed when the build is done with it.
    _session: Option<tempfile::TempDir>,
}

impl Modelled {
    /// The thunks behind the artifacts that are still placeholders.
    pub fn root_thunks(&self) -> Vec<Hash> {
        let mut thunks: Vec<Hash> = self.roots.iter().map(|(_, placeholder, _)| placeholder.thunk).collect();
        thunks.sort();
        thunks.dedup();
        thunks
    }

    /// How many rustc calls became thunks.
    pub fn thunk_count(&self) -> usize {
        self.records.iter().filter(|r| matches!(r, Record::Thunk { .. })).count()
    }
}

pub async fn run(global: &GlobalArgs, args: BuildArgs, shell: &Shell) -> anyhow::Result<ExitCode> {
    let json = args.message_format.starts_with("json");
    if !matches!(args.message_format.as_str(), "human" | "short" | "json") {
        bail!("--message-format must be human, short or json");
    }
    let settings = global.settings();
    let engines = Engines::parse(&settings.engine)?;
    let opened = super::open_store(global).await?;
    let mut forcer = Forcer::new(opened.store.clone(), opened.workdir.clone(), engines.local);
    report_recovery(&forcer, shell);
    let lambda = match engines.lambda {
        Some(invocations) => {
            let Some(url) = &opened.remote else {
                bail!(
                    "--engine lambda=N needs a store the function can read: --store s3://BUCKET/PREFIX or \
                     LAMBDABUILD_STORE"
                );
            };
            let engine = Arc::new(LambdaEngine::connect(settings, url).await);
            forcer = forcer.with_remote(Arc::clone(&engine) as Arc<dyn RemoteEngine>, invocations).with_metadata_runs();
            Some(engine)
        }
        None => {
            // Every thunk runs here, in place: the next ones need not wait for one's outputs to be
            // compressed into the store.
            forcer = forcer.with_deferred_storing();
            None
        }
    };
    // On the local engine the forcer starts on each artifact as cargo reports it, while the model
    // phase goes on: on a machine with few cores, the model phase's single-threaded stretches would
    // otherwise idle them. Lambda needs the graph's inputs uploaded first.
    let early_forcer = (!args.dry_run && lambda.is_none()).then_some(&forcer);
    let modelled = model(global, &args, &opened, engines.local, early_forcer).await;
    if !matches!(modelled, Ok(Some(_))) {
        // What was forced early is kept for the next build.
        if let Err(error) = forcer.settle().await {
            shell.warning(&format!("{error}"));
        }
    }
    let Some(modelled) = modelled? else {
        return Ok(ExitCode::from(101));
    };
    let thunks = modelled.thunk_count();
    let passed_through = passed_through(&modelled.records);
    if args.dry_run {
        let roots = &modelled.roots;
        shell.status(
            "Modelled",
            &format!("{thunks} thunks, {} artifacts still placeholders, in {:.2}s", roots.len(), modelled.seconds),
        );
        return Ok(ExitCode::SUCCESS);
    }

    let force_started = Instant::now();
    let force_started_unix = std::time::SystemTime::now();
    if lambda.is_some() {
        let roots = modelled.root_thunks();
        let uploaded =
            upload(&opened.store, &opened.workdir, &roots, true, settings.upload_jobs, !global.quiet).await?;
        shell.status(
            "Uploaded",
            &format!(
                "{} of {} objects the graph needs ({:.1} MB)",
                uploaded.uploaded,
                uploaded.objects,
                uploaded.bytes as f64 / 1e6
            ),
        );
    }
    let remote_engine = lambda.clone().map(|engine| engine as Arc<dyn RemoteEngine>);
    let progress = ForceProgress::start(&forcer, &opened.store, remote_engine.clone(), settings, global.quiet);
    let report = force_and_write(&forcer, &opened.store, &modelled.roots, shell).await;
    progress.finish();
    // Durations only guide the next build's scheduling: failing to keep them fails nothing.
    let _ = forcer.save_history();
    let report = report?;
    let force_seconds = force_started.elapsed().as_secs_f64();
    // Build scripts were forced during the model phase, each by its own wrapper: a thunk counts once,
    // as executed if any forcer ran it.
    let mut forced: HashMap<Hash, bool> = report.forced.clone();
    for record in &modelled.records {
        if let Record::Thunk { forced: by_wrapper, .. } = record {
            for (hash, was_cached) in by_wrapper {
                let entry = forced.entry(*hash).or_insert(*was_cached);
                *entry &= *was_cached;
            }
        }
    }
    let executed = forced.values().filter(|cached| !**cached).count();
    let cached = forced.values().filter(|cached| **cached).count();
    // Build scripts and their dependencies ran locally, in the wrappers.
    let on_lambda = report.ran_on.get("lambda").copied().unwrap_or(0);
    let executed_on = json!({ "lambda": on_lambda, "local": executed - on_lambda });
    for (reason, count) in &report.fallbacks {
        let plural = if *count == 1 { "" } else { "s" };
        shell.warning(&format!("{count} thunk{plural} ran on the local engine instead of Lambda: {reason}"));
    }
    let lambda_stats = lambda.as_ref().map(|engine| LambdaStats::of(&engine.samples()));
    let tally = tally_of(&forced, &report, &opened.store, remote_engine.as_deref(), &passed_through);
    // The counters are a report: failing to keep them never fails a build.
    let _ = thunk::stats::Stats::of(&opened.workdir, &opened.store.describe()).record(&tally);
    let remote = lambda.is_some() || opened.remote.is_some();
    let cost = remote.then(|| Cost::of(&tally, settings.memory_mb, &settings.prices));
    let mut timings_report = None;
    if args.timings {
        let started_unix_s =
            force_started_unix.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let title = format!("{} — {}", project_name(&modelled), engines.describe());
        let mut summary = vec![("engine".to_owned(), engines.describe())];
        if let Some(cost) = &cost {
            summary.push(("estimated cost".to_owned(), cost.describe()));
        }
        let timeline = timeline(&forcer, &opened.store, title, started_unix_s, force_started, summary).await?;
        let path = write_timings(&modelled, &timeline)?;
        shell.status("Timing", &format!("report saved to {}", path.display()));
        let graph = recorded_graph(&forcer, &opened.store, &opened.dir).await?;
        let graph_path = path.with_file_name("graph.json");
        std::fs::write(&graph_path, serde_json::to_vec(&graph)?)
            .with_context(|| format!("cannot write {}", graph_path.display()))?;
        shell.verbose_note(&format!(
            "the build's graph is in {}: `cargo lambdabuild predict` replays it on N Lambda workers",
            graph_path.display()
        ));
        let bars: usize = timeline.workers.iter().map(|worker| worker.bars.len()).sum();
        timings_report = Some(json!({ "path": path, "workers": timeline.workers.len(), "bars": bars }));
    }

    if json {
        for line in &modelled.messages {
            shell.print(&format!("{line}\n"));
        }
        let summary = json!({
            "reason": "lambdabuild-finished",
            "success": report.failed.is_empty(),
            "thunks": thunks,
            "executed": executed,
            "cached": cached,
            "passed_through": passed_through.values().sum::<usize>(),
            "passed_through_reasons": passed_through,
            "executed_on": executed_on,
            "fallbacks": report.fallbacks.values().sum::<usize>(),
            "retried": forcer.retried(),
            "relaunched": forcer.relaunched(),
            "metadata_runs": forcer.metadata_runs(),
            "model_s": modelled.seconds,
            "force_s": force_seconds,
            "cost": cost,
            "timings": timings_report,
            "lambda": lambda_stats.map(|stats| json!({
                "invocations": stats.invocations,
                "cold_starts": stats.cold_starts,
                "cold_start_ms": stats.cold_start_ms,
                "overhead_ms_median": stats.median_ms,
                "overhead_ms_p95": stats.p95_ms,
            })),
        });
        shell.print(&format!("{summary}\n"));
    }
    let through = if passed_through.is_empty() {
        String::new()
    } else {
        let reasons: Vec<String> = passed_through.iter().map(|(reason, n)| format!("{n} × {reason}")).collect();
        format!(", {} passed through ({})", passed_through.values().sum::<usize>(), reasons.join(", "))
    };
    let executed_text = match &lambda {
        Some(_) => format!("{executed} executed ({on_lambda} on Lambda, {} locally)", executed - on_lambda),
        None => format!("{executed} executed"),
    };
    let line = format!(
        "{thunks} thunks: {executed_text}, {cached} cached{through}; model {:.2}s, force {:.2}s on {}",
        modelled.seconds,
        force_seconds,
        engines.describe()
    );
    if let Some(stats) = lambda_stats.filter(|stats| stats.invocations > 0) {
        shell.verbose_note(&format!(
            "Lambda: {} invocations, {} cold starts; overhead beyond the compiler's own time: median {} ms, p95 {} ms",
            stats.invocations, stats.cold_starts, stats.median_ms, stats.p95_ms
        ));
    }
    if forcer.relaunched() > 0 {
        let relaunched = forcer.relaunched();
        let plural = if relaunched == 1 { "" } else { "s" };
        shell.status(
            "Relaunched",
            &format!("{relaunched} straggler{plural}: run{plural} far past the expected time, launched again"),
        );
    }
    if let Some(cost) = &cost {
        shell.status("Cost", &cost.describe());
    }
    if report.failed.is_empty() {
        shell.status("Finished", &line);
        Ok(ExitCode::SUCCESS)
    } else {
        shell.status("Finished", &line);
        Ok(ExitCode::from(101))
    }
}

/// Says what the forcer undid of an interrupted build's writes, if anything.
pub fn report_recovery(forcer: &Forcer, shell: &Shell) {
    let recovered = forcer.recovered();
    if recovered.entries == 0 {
        return;
    }
    shell.status(
        "Recovered",
        &format!(
            "an interrupted build's writes: {} placeholders put back, {} partial files removed, {} programs stopped",
            recovered.restored, recovered.removed, recovered.killed
        ),
    );
}

fn passed_through(records: &[Record]) -> BTreeMap<String, usize> {
    let mut reasons = BTreeMap::new();
    for record in records {
        if let Record::PassThrough { reason, .. } = record {
            *reasons.entry(reason.clone()).or_insert(0) += 1;
        }
    }
    reasons
}

/// The model phase: names the toolchain, opens a session for the wrappers and runs cargo with them;
/// `None` when cargo failed (its errors are already on stderr). With a `forcer`, each artifact is
/// forced as soon as cargo reports it.
pub async fn model(
    global: &GlobalArgs,
    args: &BuildArgs,
    opened: &super::OpenStore,
    slots: usize,
    forcer: Option<&Forcer>,
) -> anyhow::Result<Option<Modelled>> {
    let started = Instant::now();
    let project_dir = match &args.manifest_path {
        Some(path) => path.parent().map(Path::to_owned).unwrap_or_default(),
        None => std::env::current_dir()?,
    };
    // Both come before cargo can start, and cost tens of milliseconds each: asked at the same time.
    let asked_target_dir = args.target_dir.is_none().then(|| {
        let args = args.clone();
        tokio::task::spawn_blocking(move || default_target_dir(&args))
    });
    let sysroot = query_sysroot(std::ffi::OsStr::new("rustc"), &project_dir)?;
    let target_dir = match (&args.target_dir, asked_target_dir) {
        (Some(dir), _) => std::path::absolute(dir)?,
        (None, Some(asked)) => asked.await??,
        (None, None) => default_target_dir(args)?,
    }
    .join("lambdabuild");

    let sessions = opened.dir.join("work/sessions");
    std::fs::create_dir_all(&sessions)?;
    let session_dir = tempfile::Builder::new().prefix("session-").tempdir_in(&sessions)?;
    // Cargo starts while the toolchain is named (a fifth of a second on a first build, as long as
    // cargo takes to reach its first compile); a wrapper that needs the session waits for it.
    let pending = Session::begin(session_dir.path())?;
    let open_session = async {
        // Named in the local store: the model phase never waits on a remote one.
        let toolchain = name_local_toolchain(&sysroot, &args.target, &opened.workdir, &opened.local)
            .await
            .with_context(|| format!("cannot name the toolchain at {}", sysroot.display()))?;
        let config = SessionConfig {
            store: opened.dir.clone(),
            remote: opened.remote.clone(),
            sysroot: sysroot.clone(),
            toolchain: toolchain.hash,
            target_dir: target_dir.clone(),
            slots,
        };
        anyhow::Ok(pending.finish(config)?)
    };
    let run = run_cargo(global, args, session_dir.path(), &target_dir, started, forcer);
    // Cargo first: `run_cargo` starts it before its first await, and naming the toolchain hashes on
    // this thread until it is done.
    let (modelled, session) = tokio::try_join!(run, open_session)?;
    let Some(modelled) = modelled else { return Ok(None) };
    Ok(Some(Modelled { records: session.records()?, _session: Some(session_dir), ..modelled }))
}

/// Interrupts cargo (as Ctrl-C would) if the build is abandoned while it runs: the build was
/// interrupted, and cargo, unless the signal came from the terminal, would not know.
struct InterruptOnDrop {
    pid: libc::pid_t,
    armed: bool,
}

impl InterruptOnDrop {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if self.armed {
            // SAFETY: kill(2) has no memory-safety preconditions; cargo is not reaped yet, so the id
            // is still its own.
            unsafe { libc::kill(self.pid, libc::SIGINT) };
        }
    }
}

/// Runs cargo with the wrapper; `None` when cargo failed (its errors are already on stderr). The
/// session's records are the caller's to read: the session may still be opening while cargo starts.
async fn run_cargo(
    global: &GlobalArgs,
    args: &BuildArgs,
    session_dir: &Path,
    target_dir: &Path,
    started: Instant,
    forcer: Option<&Forcer>,
) -> anyhow::Result<Option<Modelled>> {
    let wrapper = std::env::current_exe()?.with_file_name("rustc-model");
    if !wrapper.is_file() {
        bail!(
            "cannot find rustc-model beside {}; install both with `cargo install --path cargo-lambdabuild`",
            wrapper.display()
        );
    }
    let mut command = Command::new(cargo_program());
    command
        .arg("build")
        .args(args.cargo_flags(global))
        .arg("--message-format=json-render-diagnostics")
        .arg("--target-dir")
        .arg(target_dir)
        .env("RUSTC_WRAPPER", &wrapper)
        .env(thunk::env::SESSION_VAR, session_dir)
        .env("CARGO_INCREMENTAL", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().context("cannot run cargo")?;
    let interrupts = InterruptOnDrop { pid: child.id() as libc::pid_t, armed: true };
    let stdout = child.stdout.take().expect("piped");
    let (lines_in, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_in.send(line).is_err() {
                break;
            }
        }
    });
    let mut messages = Vec::new();
    let mut roots = Vec::new();
    let mut started_thunks = Vec::new();
    let mut prioritized = Instant::now();
    while let Some(line) = lines.recv().await {
        if let Ok(Message::CompilerArtifact(artifact)) = serde_json::from_str::<Message>(&line) {
            let executable = artifact.executable.as_ref().map(|p| p.clone().into_std_path_buf());
            for file in artifact.filenames {
                let file = file.into_std_path_buf();
                let Ok(Some(placeholder)) = Placeholder::read(&file) else { continue };
                let is_executable = executable.as_ref() == Some(&file);
                if let Some(forcer) = forcer
                    && !started_thunks.contains(&placeholder.thunk)
                {
                    started_thunks.push(placeholder.thunk);
                    // Detached: the outcome stays in the forcer, and `force_and_write` waits for it.
                    drop(tokio::spawn(forcer.force(placeholder.thunk)));
                }
                roots.push((file, placeholder, is_executable));
            }
            // What waits is ordered by the graph known so far; a few times a second is plenty.
            if let Some(forcer) = forcer
                && prioritized.elapsed() > std::time::Duration::from_millis(200)
            {
                forcer.prioritize(&started_thunks).await?;
                prioritized = Instant::now();
            }
        }
        messages.push(line);
    }
    let _ = reader.join();
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    interrupts.disarm();
    if !status.success() {
        return Ok(None);
    }
    Ok(Some(Modelled {
        messages,
        roots,
        records: Vec::new(),
        seconds: started.elapsed().as_secs_f64(),
        target_dir: target_dir.to_owned(),
        _session: None,
    }))
}

/// An artifact path, the placeholder that stood there, and whether cargo calls it the executable.
type Root = (PathBuf, Placeholder, bool);

/// The artifacts that are still placeholders, with what stands behind each.
fn roots(artifacts: &[(PathBuf, bool)]) -> Vec<Root> {
    artifacts
        .iter()
        .filter_map(|(path, executable)| {
            Placeholder::read(path).ok().flatten().map(|placeholder| (path.clone(), placeholder, *executable))
        })
        .collect()
}

struct ForceReport {
    executed: usize,
    cached: usize,
    /// Every thunk forced, and whether it came from the store.
    forced: HashMap<Hash, bool>,
    /// Thunks executed, by the engine that ran them.
    ran_on: BTreeMap<String, usize>,
    /// Why thunks ran locally instead of on the remote engine, with how many did.
    fallbacks: BTreeMap<String, usize>,
    failed: Vec<Hash>,
}

/// What the Lambda engine's invocations cost beyond the compiler's own time.
#[derive(Debug, Clone, Copy)]
struct LambdaStats {
    invocations: usize,
    cold_starts: usize,
    /// The longest time an instance took to fetch and unpack the toolchain.
    cold_start_ms: u64,
    median_ms: u64,
    p95_ms: u64,
}

impl LambdaStats {
    fn of(samples: &[crate::engine::lambda::Sample]) -> LambdaStats {
        let mut overheads: Vec<u64> = samples.iter().map(|sample| sample.overhead_ms()).collect();
        overheads.sort_unstable();
        let at = |quantile: f64| {
            let index = ((overheads.len() as f64 * quantile).ceil() as usize).saturating_sub(1);
            overheads.get(index).copied().unwrap_or(0)
        };
        LambdaStats {
            invocations: samples.len(),
            cold_starts: samples.iter().filter(|sample| sample.cold).count(),
            cold_start_ms: samples.iter().filter(|s| s.cold).map(|s| s.toolchain_ms).max().unwrap_or(0),
            median_ms: at(0.5),
            p95_ms: at(0.95),
        }
    }
}

/// Forces every placeholder among `artifacts`, prints diagnostics, writes the real bytes.
async fn force_and_write(forcer: &Forcer, store: &Store, roots: &[Root], shell: &Shell) -> anyhow::Result<ForceReport> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut unique: Vec<Hash> = roots.iter().map(|(_, p, _)| p.thunk).collect();
    unique.sort();
    unique.dedup();
    forcer.prioritize(&unique).await?;
    for thunk in unique {
        tasks.spawn(forcer.force(thunk));
    }
    while tasks.join_next().await.is_some() {}
    forcer.settle().await?;

    let outcomes = forcer.outcomes();
    let mut report = ForceReport {
        executed: 0,
        cached: 0,
        forced: HashMap::new(),
        ran_on: BTreeMap::new(),
        fallbacks: BTreeMap::new(),
        failed: Vec::new(),
    };
    let by_hash: HashMap<Hash, Result<Forced, Arc<ForceError>>> = outcomes.into_iter().collect();
    let mut ordered: Vec<(&Hash, &Result<Forced, Arc<ForceError>>)> = by_hash.iter().collect();
    ordered.sort_by_key(|(hash, _)| **hash);
    for (hash, outcome) in ordered {
        match outcome {
            Ok(forced) => {
                report.forced.insert(*hash, forced.cached);
                if forced.cached {
                    report.cached += 1;
                } else {
                    report.executed += 1;
                    *report.ran_on.entry(forced.reduction.engine.clone()).or_default() += 1;
                }
                if let Some(reason) = &forced.fallback {
                    *report.fallbacks.entry(reason.clone()).or_default() += 1;
                }
                for file in &forced.undeclared {
                    shell.verbose_note(&format!(
                        "thunk {} read {}, which it does not declare; its result is not cached",
                        hash.short(),
                        file.display()
                    ));
                }
                show_diagnostics(store, *hash, forced, shell).await?;
                if !forced.reduction.succeeded() {
                    report.failed.push(*hash);
                }
            }
            Err(error) => {
                if !matches!(**error, ForceError::DependencyFailed { .. }) {
                    shell.error(&format!("{error}"));
                    report.failed.push(*hash);
                }
            }
        }
    }

    for (path, placeholder, executable) in roots {
        match by_hash.get(&placeholder.thunk) {
            Some(Ok(forced)) if forced.reduction.succeeded() => {
                let file =
                    forced.reduction.outputs.get(&placeholder.output).with_context(|| {
                        format!("thunk {} did not produce {}", placeholder.thunk, placeholder.output)
                    })?;
                // rustc, run in place, wrote most roots itself (and the hard links cargo made to them
                // see its bytes): a file already right is left alone, not rewritten from the store.
                if forcer.knows(path, file.hash) || thunk::Hash::of_file(path).is_ok_and(|(hash, _)| hash == file.hash)
                {
                    continue;
                }
                // The local engine left the bytes at the output's own path (the file in deps/ that
                // cargo uplifts from): copy them from there when they are right, else from the store.
                let produced = Path::new("/").join(placeholder.output.as_str());
                let bytes = match std::fs::read(&produced) {
                    Ok(bytes) if produced != *path && Hash::of(&bytes) == file.hash => bytes,
                    _ => store.get_blob(file.hash).await?,
                };
                let pending = forcer.journal().begin([path.clone()]).context("cannot write the journal")?;
                thunk::realize::realize(path, &bytes, file.executable || *executable)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                pending.commit().context("cannot write the journal")?;
            }
            _ => {
                // No placeholder may pretend to be a built file: cargo rebuilds what is missing.
                let _ = std::fs::remove_file(path);
            }
        }
    }
    Ok(report)
}

/// Prints what rustc said for one thunk, rendered as cargo renders it.
async fn show_diagnostics(store: &Store, hash: Hash, forced: &Forced, shell: &Shell) -> anyhow::Result<()> {
    let stderr = store.get_blob(forced.reduction.stderr.hash).await?;
    let text = String::from_utf8_lossy(&stderr);
    let thunk = store.get_thunk(hash).await?;
    let crate_name = thunk.args.iter().position(|a| a == "--crate-name").and_then(|i| thunk.args.get(i + 1));
    let crate_name = crate_name.map_or("?", String::as_str);
    let (mut errors, mut warnings) = (0, 0);
    for line in text.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            if !line.trim().is_empty() {
                shell.raw_stderr(&format!("{line}\n"));
            }
            continue;
        };
        if message.get("$message_type").and_then(|t| t.as_str()) != Some("diagnostic") {
            continue;
        }
        let text = message.get("message").and_then(|m| m.as_str()).unwrap_or_default();
        // rustc's own tallies; cargo drops them and prints its own line.
        if text.starts_with("aborting due to")
            || text.ends_with("warning emitted")
            || text.ends_with("warnings emitted")
        {
            continue;
        }
        match message.get("level").and_then(|l| l.as_str()) {
            Some("error") => errors += 1,
            Some("warning") => warnings += 1,
            _ => {}
        }
        if let Some(rendered) = message.get("rendered").and_then(|r| r.as_str()) {
            shell.raw_stderr(rendered);
        }
    }
    match &forced.reduction.status {
        Status::Success if warnings > 0 => {
            let plural = if warnings == 1 { "" } else { "s" };
            shell.warning(&format!("`{crate_name}` generated {warnings} warning{plural}"));
        }
        Status::Success => {}
        Status::Exit { .. } => {
            let plural = if errors == 1 { "" } else { "s" };
            shell.error(&format!("could not compile `{crate_name}` due to {errors} previous error{plural}"));
        }
        Status::MissingOutput { path } => {
            shell.error(&format!("could not compile `{crate_name}`: rustc did not write `{path}`"));
        }
    }
    Ok(())
}

/// `cargo lambdabuild force PATH…`.
pub async fn force_paths(global: &GlobalArgs, args: ForceArgs, shell: &Shell) -> anyhow::Result<ExitCode> {
    let engines = Engines::parse(&global.settings().engine)?;
    if engines.lambda.is_some() {
        bail!("`cargo lambdabuild force` runs on the local engine; build with `--engine lambda=N` instead");
    }
    let slots = engines.local;
    let opened = super::open_store(global).await?;
    let mut artifacts = Vec::new();
    for path in &args.paths {
        match Placeholder::read(path).with_context(|| format!("cannot read {}", path.display()))? {
            Some(_) => artifacts.push((path.clone(), false)),
            None => shell.status("Fresh", &format!("{} is already built", path.display())),
        }
    }
    let forcer = Forcer::new(opened.store.clone(), opened.workdir.clone(), slots).with_deferred_storing();
    report_recovery(&forcer, shell);
    let report = force_and_write(&forcer, &opened.store, &roots(&artifacts), shell).await?;
    shell.status("Forced", &format!("{} executed, {} cached", report.executed, report.cached));
    Ok(if report.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(101) })
}

/// What this build adds to the store's counters: each thunk once (a build script's wrapper counts
/// its own as run locally), the traffic with the remote store, and Lambda's billed time.
fn tally_of(
    forced: &HashMap<Hash, bool>,
    report: &ForceReport,
    store: &Store,
    remote: Option<&dyn RemoteEngine>,
    passed_through: &BTreeMap<String, usize>,
) -> thunk::stats::Tally {
    let mut tally = thunk::stats::Tally {
        cached: forced.values().filter(|cached| **cached).count() as u64,
        passed_through: passed_through.values().sum::<usize>() as u64,
        failed: report.failed.len() as u64,
        traffic: store.traffic(),
        ..thunk::stats::Tally::default()
    };
    let executed = forced.values().filter(|cached| !**cached).count() as u64;
    let mut elsewhere = 0;
    for (engine, count) in &report.ran_on {
        if engine != "local" {
            tally.executed.insert(engine.clone(), *count as u64);
            elsewhere += *count as u64;
        }
    }
    if executed > elsewhere {
        tally.executed.insert("local".to_owned(), executed - elsewhere);
    }
    if let Some(remote) = remote {
        let usage = remote.usage();
        (tally.lambda_invocations, tally.lambda_billed_ms) = (usage.invocations, usage.billed_ms);
    }
    tally
}

/// The progress bar of the force phase: thunks done, running and queued, bytes to and from the
/// store, elapsed time and the cost so far. Hidden with `-q`, and (indicatif's rule) when stderr is
/// not a terminal.
struct ForceProgress {
    bar: indicatif::ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl ForceProgress {
    fn start(
        forcer: &Forcer,
        store: &Store,
        remote: Option<Arc<dyn RemoteEngine>>,
        settings: &cargo_lambdabuild::config::Settings,
        quiet: bool,
    ) -> ForceProgress {
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr())
        };
        let style = indicatif::ProgressStyle::with_template("    Building [{bar:27}] {pos}/{len}: {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        let (forcer, store, bar_handle) = (forcer.clone(), store.clone(), bar.clone());
        let (memory_mb, prices, priced) =
            (settings.memory_mb, settings.prices, remote.is_some() || store.local_cache().is_some());
        let ticker = tokio::spawn(async move {
            loop {
                let progress = forcer.progress();
                let traffic = store.traffic();
                bar_handle.set_length((progress.done + progress.running + progress.queued) as u64);
                bar_handle.set_position(progress.done as u64);
                let mut message = format!("{} running, {} queued", progress.running, progress.queued);
                if priced {
                    let mut tally = thunk::stats::Tally { traffic, ..thunk::stats::Tally::default() };
                    if let Some(remote) = &remote {
                        let usage = remote.usage();
                        (tally.lambda_invocations, tally.lambda_billed_ms) = (usage.invocations, usage.billed_ms);
                    }
                    let cost = Cost::of(&tally, memory_mb, &prices);
                    message.push_str(&format!(
                        ", ↑ {:.1} MB ↓ {:.1} MB, ${:.4}",
                        traffic.bytes_up as f64 / 1e6,
                        traffic.bytes_down as f64 / 1e6,
                        cost.usd
                    ));
                }
                bar_handle.set_message(message);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        ForceProgress { bar, ticker }
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// The name of what was built, for the report's title: the package of the last root.
fn project_name(modelled: &Modelled) -> String {
    modelled
        .messages
        .iter()
        .rev()
        .find_map(|line| match serde_json::from_str::<Message>(line) {
            Ok(Message::CompilerArtifact(artifact)) => Some(artifact.target.name.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "build".to_owned())
}

/// The timeline of what this build's forcer ran: a row per worker, a bar per thunk, and the critical
/// path — from the thunk that ended last, back through the producer of each that ended last.
async fn timeline(
    forcer: &Forcer,
    store: &Store,
    title: String,
    started_unix_s: u64,
    force_started: Instant,
    summary: Vec<(String, String)>,
) -> anyhow::Result<crate::timings::Timeline> {
    let runs = forcer.runs();
    // On the local engine forcing starts while cargo still models the build: the report starts with
    // the first run, or with the force phase if nothing ran before it.
    let force_phase = force_started.saturating_duration_since(forcer.origin());
    let origin = runs.iter().map(|run| run.start).min().unwrap_or(force_phase).min(force_phase);
    let at = |duration: std::time::Duration| duration.saturating_sub(origin).as_millis() as u64;
    let by_thunk: HashMap<Hash, &thunk::force::Run> = runs.iter().map(|run| (run.thunk, run)).collect();
    let mut links: HashMap<Hash, Vec<Hash>> = HashMap::new();
    let mut names: HashMap<Hash, (String, String)> = HashMap::new();
    for run in &runs {
        let thunk = store.get_thunk(run.thunk).await?;
        let mut producers: Vec<Hash> = thunk
            .inputs
            .values()
            .filter_map(|input| match input {
                thunk::Input::Link { thunk, .. } => Some(*thunk),
                _ => None,
            })
            .collect();
        producers.sort();
        producers.dedup();
        links.insert(run.thunk, producers);
        names.insert(run.thunk, crate_and_kind(&thunk.args));
    }
    let mut critical = std::collections::HashSet::new();
    let mut next = runs.iter().max_by_key(|run| run.end).map(|run| run.thunk);
    while let Some(hash) = next {
        critical.insert(hash);
        next = links
            .get(&hash)
            .into_iter()
            .flatten()
            .filter_map(|producer| by_thunk.get(producer))
            .max_by_key(|run| run.end)
            .map(|run| run.thunk);
    }
    let mut workers: BTreeMap<String, Vec<crate::timings::Bar>> = BTreeMap::new();
    for run in &runs {
        let (crate_name, kind) = names.remove(&run.thunk).unwrap_or_default();
        workers.entry(run.worker.clone()).or_default().push(crate::timings::Bar {
            thunk: run.thunk.to_hex()[..12].to_owned(),
            crate_name,
            kind,
            start_ms: at(run.start),
            fetch_ms: run.phases.fetch_ms,
            run_ms: run.phases.run_ms,
            upload_ms: run.phases.store_ms,
            critical: critical.contains(&run.thunk),
        });
    }
    // Lambda instances first, then local slots in order.
    let mut workers: Vec<crate::timings::Worker> =
        workers.into_iter().map(|(name, bars)| crate::timings::Worker { name, bars }).collect();
    workers.sort_by_key(|worker| {
        let local = worker.name.strip_prefix("local ").and_then(|n| n.parse::<u64>().ok());
        (local.is_some(), local.unwrap_or(0), worker.name.clone())
    });
    let started_unix_s = started_unix_s.saturating_sub((force_phase - origin).as_secs());
    Ok(crate::timings::Timeline {
        title,
        started_unix_s,
        wall_ms: forcer.origin().elapsed().saturating_sub(origin).as_millis() as u64,
        workers,
        summary,
    })
}

/// A thunk's crate and what it builds, from rustc's arguments.
/// The graph this build forced, with each thunk's run time and bytes in and out, for the scale-out
/// model (`cargo lambdabuild predict`). Thunks taken from the store count with the time they took
/// when they ran.
async fn recorded_graph(
    forcer: &Forcer,
    store: &Store,
    local_dir: &Path,
) -> anyhow::Result<cargo_lambdabuild::scaleout::Graph> {
    // What a blob weighs as the store keeps it (compressed); its raw size when this machine's copy of
    // the store does not hold it (a source file, which the uploader sends only for remote runs).
    let stored = |hash: Hash, raw: u64| {
        std::fs::metadata(local_dir.join(thunk::ObjectKey::Blob(hash).path())).map_or(raw, |metadata| metadata.len())
    };
    let reductions: HashMap<Hash, Arc<thunk::Reduction>> = forcer
        .outcomes()
        .into_iter()
        .filter_map(|(hash, outcome)| outcome.ok().map(|forced| (hash, forced.reduction)))
        .filter(|(_, reduction)| reduction.succeeded())
        .collect();
    // When rustc announced each library's rmeta, from the runs in place.
    let metadata_ms: HashMap<Hash, u64> =
        forcer.runs().iter().filter_map(|run| run.metadata_ms.map(|ms| (run.thunk, ms))).collect();
    let mut nodes = Vec::new();
    for (hash, reduction) in &reductions {
        let thunk = store.get_thunk(*hash).await?;
        let mut producers = Vec::new();
        // Producers read for their rmeta, and for anything else.
        let (mut for_metadata, mut for_more) = (Vec::new(), Vec::new());
        let (mut input_bytes, mut input_stored_bytes) = (0, 0);
        for input in thunk.inputs.values() {
            match input {
                thunk::Input::Blob { hash, size, .. } => {
                    input_bytes += size;
                    input_stored_bytes += stored(*hash, *size);
                }
                thunk::Input::Link { thunk: producer, output } => {
                    producers.push(*producer);
                    if output.as_str().ends_with(".rmeta") {
                        for_metadata.push(*producer);
                    } else {
                        for_more.push(*producer);
                    }
                    if let Some(file) = reductions.get(producer).and_then(|r| r.outputs.get(output)) {
                        input_bytes += file.size;
                        input_stored_bytes += stored(file.hash, file.size);
                    }
                }
                thunk::Input::Symlink { .. } => {}
            }
        }
        producers.sort();
        producers.dedup();
        let mut metadata_producers: Vec<Hash> =
            for_metadata.into_iter().filter(|producer| !for_more.contains(producer)).collect();
        metadata_producers.sort();
        metadata_producers.dedup();
        let rmeta = reduction.outputs.iter().find(|(output, _)| output.as_str().ends_with(".rmeta"));
        let metadata = match (metadata_ms.get(hash), rmeta) {
            (Some(ms), Some((_, file))) => Some(cargo_lambdabuild::scaleout::Metadata {
                ms: *ms,
                bytes: file.size,
                stored_bytes: stored(file.hash, file.size),
            }),
            _ => None,
        };
        let (crate_name, kind) = crate_and_kind(&thunk.args);
        nodes.push(cargo_lambdabuild::scaleout::Node {
            thunk: *hash,
            name: format!("{crate_name} {kind}"),
            producers,
            duration_ms: reduction.duration_ms,
            inputs: thunk.inputs.len() as u64,
            input_bytes,
            outputs: reduction.outputs.len() as u64,
            output_bytes: reduction.outputs.values().map(|file| file.size).sum(),
            input_stored_bytes: Some(input_stored_bytes),
            output_stored_bytes: Some(reduction.outputs.values().map(|file| stored(file.hash, file.size)).sum()),
            metadata,
            metadata_producers,
        });
    }
    nodes.sort_by_key(|node| node.thunk);
    Ok(cargo_lambdabuild::scaleout::Graph { version: cargo_lambdabuild::scaleout::GRAPH_VERSION, thunks: nodes })
}

fn crate_and_kind(args: &[String]) -> (String, String) {
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let crate_name = value("--crate-name").unwrap_or_else(|| "?".to_owned());
    let kind = if crate_name.starts_with("build_script_") {
        "build-script".to_owned()
    } else if args.iter().any(|a| a == "--test") {
        "test".to_owned()
    } else {
        value("--crate-type").unwrap_or_else(|| "lib".to_owned())
    };
    (crate_name, kind)
}

/// Writes the report as cargo writes its own: a timestamped file and `lambdabuild-timing.html`, the
/// latest, in `<target>/lambdabuild-timings/`.
fn write_timings(modelled: &Modelled, timeline: &crate::timings::Timeline) -> anyhow::Result<PathBuf> {
    let dir = modelled.target_dir.parent().unwrap_or(&modelled.target_dir).join("lambdabuild-timings");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let html = crate::timings::render(timeline);
    let stamp = crate::timings::utc_date_time(timeline.started_unix_s).replace([' ', ':'], "-").replace("-UTC", "");
    let stamped = dir.join(format!("lambdabuild-timing-{stamp}.html"));
    std::fs::write(&stamped, &html).with_context(|| format!("cannot write {}", stamped.display()))?;
    let latest = dir.join("lambdabuild-timing.html");
    std::fs::write(&latest, &html).with_context(|| format!("cannot write {}", latest.display()))?;
    Ok(latest)
}
