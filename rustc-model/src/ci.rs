//! CI mode: `RUSTC_WRAPPER=rustc-model cargo build|test|run`, with no `cargo lambdabuild` around it.
//!
//! Cargo runs what it builds (build scripts, tests, `cargo run`) as soon as the compile returns, so each
//! unit the model understands is forced before the wrapper returns: its thunk goes to the store, a
//! stored reduction is used when there is one (this machine's or, with an S3 store, any machine's),
//! else it runs — in place on this machine, or on Lambda — and its real outputs are written where cargo
//! expects them. Everything cargo reads is real bytes; no placeholder is ever written. rustc's messages
//! are replayed to cargo as rustc printed them, so cargo renders diagnostics and counts warnings as
//! usual. What the model does not take runs the real rustc, and is counted.
//!
//! The store and the engine come from the configuration ([`CiSetup`], implemented by the binary, which
//! knows the config file and the Lambda client). Each process adds its tally to the store's counters
//! (`cargo lambdabuild stats`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use thunk::force::Forcer;
use thunk::reduction::Status;
use thunk::remote::RemoteEngine;
use thunk::stats::{Stats, Tally};
use thunk::workdir::Workdir;
use thunk::{Hash, Store};

use crate::args::{Call, Emit, Parsed};
use crate::model::{self, Context, ModelError};

/// What the configuration names: the store, and the remote engine if there is one.
pub struct CiStores {
    /// The store thunks are forced through (S3 with the local store in front, or the local store).
    pub store: Store,
    /// The local store, where the model writes thunks.
    pub local: Store,
    /// The machine-local working directory.
    pub workdir: Workdir,
    /// The remote engine, and what puts a thunk's inputs in the remote store before it runs there.
    pub remote: Option<(Arc<dyn RemoteEngine>, Arc<dyn Uploader>)>,
}

/// Opens what the configuration names; implemented by the `rustc-model` binary.
#[async_trait::async_trait]
pub trait CiSetup: Send + Sync {
    /// The store and engine, or one line saying what is wrong with the configuration.
    async fn open(&self) -> Result<CiStores, String>;
}

/// Puts what a thunk needs (its closure's inputs, thunks and toolchain) in the remote store.
#[async_trait::async_trait]
pub trait Uploader: Send + Sync {
    /// Uploads what `thunk` needs that the remote store lacks.
    async fn upload(&self, stores: &CiStores, thunk: Hash) -> Result<(), String>;
}

/// Handles one rustc call in CI mode: `parsed` is what [`args::parse`] made of a call cargo made for a
/// crate (probes have already run for real).
pub fn run(setup: &dyn CiSetup, rustc: &OsString, args: &[OsString], parsed: Parsed) -> ExitCode {
    let call = match parsed {
        Parsed::Probe => return crate::pass_through(rustc, args),
        Parsed::PassThrough(reason) => return run_for_real(setup, rustc, args, reason),
        Parsed::Unit(call) => call,
    };
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let (stores, outcome) = match runtime.block_on(async {
        let stores = setup.open().await?;
        let outcome = force_unit(&stores, Path::new(rustc), &call).await;
        Ok::<_, String>((stores, outcome))
    }) {
        Ok(opened) => opened,
        Err(message) => {
            eprintln!("error: rustc-model: {message}");
            return ExitCode::from(101);
        }
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // The model failing never fails the build: rustc can still do it.
            if !matches!(error, ModelError::PassThrough(_)) {
                eprintln!("warning: rustc-model: {error}; running rustc for `{}` directly", call.crate_name);
            }
            record(&stores, &Tally { passed_through: 1, ..Tally::default() });
            crate::pass_through(rustc, args)
        }
    }
}

/// A call the model does not take: counted, then run for real (its dependencies are real already).
fn run_for_real(setup: &dyn CiSetup, rustc: &OsString, args: &[OsString], reason: &str) -> ExitCode {
    if thunk::env::var("LAMBDABUILD_VERBOSE").is_some() {
        eprintln!("note: rustc-model: running rustc for real: {reason}");
    }
    if let Ok(runtime) = crate::runtime()
        && let Ok(stores) = runtime.block_on(setup.open())
    {
        record(&stores, &Tally { passed_through: 1, ..Tally::default() });
    }
    crate::pass_through(rustc, args)
}

fn record(stores: &CiStores, tally: &Tally) {
    // The counters are a report: failing to keep them never fails a build.
    let _ = Stats::of(&stores.workdir, &stores.store.describe()).record(tally);
}

/// Models the call, forces its thunk, replays rustc's messages and writes the real outputs.
async fn force_unit(stores: &CiStores, rustc: &Path, call: &Call) -> Result<ExitCode, ModelError> {
    let sysroot =
        thunk::toolchain::sysroot_of(rustc).map_err(|_| ModelError::PassThrough("a rustc outside a sysroot"))?;
    let toolchain = thunk::toolchain::remembered_local_toolchain(&sysroot, &stores.workdir, &stores.local)
        .await
        .map_err(|_| ModelError::PassThrough("a rustc whose toolchain cannot be named"))?;
    let cwd = std::env::current_dir().map_err(|source| ModelError::Io { path: ".".into(), source })?;
    let out_dir = if call.out_dir.is_absolute() { call.out_dir.clone() } else { cwd.join(&call.out_dir) };
    let target_dir =
        target_dir_of(&out_dir).ok_or(ModelError::PassThrough("an output directory outside a cargo target dir"))?;
    let env = thunk::env::snapshot();
    let context = Context {
        cwd: &cwd,
        env: &env,
        store: &stores.local,
        workdir: &stores.workdir,
        toolchain,
        target_dir: &target_dir,
        session: None,
    };
    let modelled = model::model(call, &context).await?;

    let mut forcer = Forcer::with_jobserver(stores.store.clone(), stores.workdir.clone(), cargo_jobserver());
    if let Some((engine, uploader)) = &stores.remote {
        uploader.upload(stores, modelled.hash).await.map_err(ModelError::Remote)?;
        forcer = forcer.with_remote(Arc::clone(engine), 1);
    }
    let forced = forcer.force(modelled.hash).await;
    // Durations only guide later scheduling: failing to keep them fails nothing.
    let _ = forcer.save_history();
    let mut tally = Tally::default();
    for (hash, outcome) in forcer.outcomes() {
        match outcome {
            // A dependency's reduction read on the way is not a hit of this call: its own call counted it.
            Ok(forced) if forced.cached => tally.cached += u64::from(hash == modelled.hash),
            Ok(forced) => {
                *tally.executed.entry(forced.reduction.engine.clone()).or_default() += 1;
                tally.failed += u64::from(!forced.reduction.succeeded());
            }
            Err(_) => {}
        }
    }
    if let Some((engine, _)) = &stores.remote {
        let usage = engine.usage();
        (tally.lambda_invocations, tally.lambda_billed_ms) = (usage.invocations, usage.billed_ms);
    }
    tally.traffic = stores.store.traffic();
    record(stores, &tally);
    let forced = match forced {
        Ok(forced) => forced,
        Err(error) => {
            eprintln!("error: rustc-model: cannot build `{}`: {error}", call.crate_name);
            return Ok(ExitCode::from(101));
        }
    };
    if let Some(reason) = &forced.fallback {
        eprintln!("warning: rustc-model: `{}` ran on this machine instead of Lambda: {reason}", call.crate_name);
    }

    let stderr = stores.store.get_blob(forced.reduction.stderr.hash).await?;
    replay(&stderr);
    let stdout = stores.store.get_blob(forced.reduction.stdout.hash).await?;
    if !stdout.is_empty() {
        use std::io::Write;
        let _ = std::io::stdout().write_all(&stdout);
    }
    match &forced.reduction.status {
        Status::Success => {}
        Status::Exit { code } => return Ok(ExitCode::from(u8::try_from(*code).unwrap_or(1))),
        Status::MissingOutput { path } => {
            eprintln!("error: rustc-model: rustc did not write `{path}`");
            return Ok(ExitCode::from(101));
        }
    }
    crate::realize_outputs(&stores.store, &stores.workdir, modelled.hash, &forced.reduction).await?;
    // The model's dep-info, whatever engine ran rustc: a sandbox's has the sandbox's paths, and one
    // rule for every engine keeps cargo's fingerprints the same whichever ran the unit.
    for (path, _, emit) in &modelled.outputs {
        if *emit == Emit::DepInfo {
            std::fs::write(path, model::placeholder_dep_info(&modelled))
                .map_err(|source| ModelError::Io { path: path.clone(), source })?;
        }
    }
    if call.artifact_notifications {
        for (path, _, emit) in &modelled.outputs {
            eprintln!("{}", crate::artifact_notification(path, *emit));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints what rustc printed, but for its artifact notifications: those name the paths the program
/// wrote, which on a remote engine were the sandbox's; the wrapper sends its own once the real files
/// are in place.
fn replay(stderr: &[u8]) {
    use std::io::Write;
    let text = String::from_utf8_lossy(stderr);
    let mut out = std::io::stderr().lock();
    for line in text.split_inclusive('\n') {
        if line.starts_with("{\"$message_type\":\"artifact\"") {
            continue;
        }
        let _ = out.write_all(line.as_bytes());
    }
}

/// The cargo target directory an output directory is in: the nearest ancestor holding the
/// `CACHEDIR.TAG` cargo writes at the top of every target dir.
fn target_dir_of(out_dir: &Path) -> Option<PathBuf> {
    out_dir.ancestors().find(|dir| dir.join("CACHEDIR.TAG").is_file()).map(Path::to_owned)
}

/// The jobserver cargo handed this process, so that rustc's extra threads share cargo's `-j`.
fn cargo_jobserver() -> Option<jobserver::Client> {
    // SAFETY: called once, early, before this process opens other descriptors that could be mistaken
    // for the jobserver's (the function's documented requirement).
    unsafe { jobserver::Client::from_env() }
}
