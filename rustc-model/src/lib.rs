//! `rustc-model`: the `RUSTC_WRAPPER` that turns cargo's rustc calls into thunks.
//!
//! Cargo runs `$RUSTC_WRAPPER /path/to/rustc ARGS…`. Inside a `cargo lambdabuild` session (the
//! `LAMBDABUILD_SESSION` variable names its directory) each call is classified ([`args`]):
//!
//! - a probe (`-vV`, `--print`, source on stdin) runs the real rustc;
//! - a crate the model understands becomes a thunk ([`model`]) with placeholders at its outputs, a
//!   dep-info listing every file of the package, and the artifact notifications cargo waits for; a
//!   build script is also forced at once, because cargo runs it next;
//! - anything else runs the real rustc, after its dependencies are made real, with a reason recorded for
//!   the build summary. An unknown flag can never produce a wrong build.
//!
//! Outside a session the wrapper runs in CI mode ([`ci`]): each unit is forced before it returns.
#![deny(missing_docs)]

pub mod args;
pub mod ci;
pub mod model;
pub mod scan;
pub mod session;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use thunk::force::Forcer;
use thunk::placeholder::Placeholder;
use thunk::reduction::Status;
use thunk::toolchain::{name_local_toolchain, sysroot_of};
use thunk::workdir::Workdir;
use thunk::{Hash, Input, LocalBackend, Store};

use crate::args::{Call, Emit, Parsed};
use crate::model::{Context, ModelError, Modelled};
use crate::session::{Record, Session};

/// Runs the wrapper on this process's arguments: in a `cargo lambdabuild` session when there is one,
/// else in CI mode with the store and engine `ci` opens ([`ci`]), unless `LAMBDABUILD_WRAPPER=off`.
pub fn main(ci: &dyn ci::CiSetup) -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(rustc) = args.next() else {
        eprintln!("error: rustc-model is a RUSTC_WRAPPER: cargo runs it as `rustc-model RUSTC ARGS…`");
        return ExitCode::from(101);
    };
    let args: Vec<OsString> = args.collect();
    let session_dir = thunk::env::session_dir();
    if session_dir.is_none() && thunk::env::var("LAMBDABUILD_WRAPPER").is_some_and(|value| value == "off") {
        return pass_through(&rustc, &args);
    }
    let Some(text_args) = args.iter().map(|a| a.to_str().map(str::to_owned)).collect::<Option<Vec<String>>>() else {
        return pass_through(&rustc, &args);
    };
    // Cargo sets CARGO_CRATE_NAME for the crates it compiles; a build script probing the compiler
    // (anyhow, proc-macro2, autocfg) runs rustc with the script's environment, which lacks it. A probe
    // must really compile: its success or failure is the answer the script wants.
    if thunk::env::var("CARGO_CRATE_NAME").is_none() {
        return pass_through(&rustc, &args);
    }
    let parsed = args::parse(&text_args);
    if parsed == Parsed::Probe {
        return pass_through(&rustc, &args);
    }
    let Some(session_dir) = session_dir else {
        return ci::run(ci, &rustc, &args, parsed);
    };
    let session = match Session::open(&session_dir) {
        Ok(session) => session,
        Err(error) => {
            eprintln!("error: rustc-model: cannot open the session {}: {error}", session_dir.display());
            return ExitCode::from(101);
        }
    };
    let call = match parsed {
        Parsed::Probe => return pass_through(&rustc, &args),
        Parsed::PassThrough(reason) => {
            let crate_name = crate_name_of(&text_args);
            return run_for_real(&session, &rustc, &args, &crate_name, reason.to_owned(), &text_args);
        }
        Parsed::Unit(call) => call,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(model_call(&session, Path::new(&rustc), &call)) {
        Ok(code) => code,
        Err(ModelError::PassThrough(reason)) => {
            run_for_real(&session, &rustc, &args, &call.crate_name, reason.to_owned(), &text_args)
        }
        Err(error) => {
            // A failure of the model is never allowed to fail the build: rustc can still do it.
            eprintln!("warning: rustc-model: {error:#}; running rustc for `{}` directly", call.crate_name);
            run_for_real(&session, &rustc, &args, &call.crate_name, format!("the model failed: {error}"), &text_args)
        }
    }
}

/// The single-threaded runtime a wrapper's async work runs on, or the exit code when there is none.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| {
        eprintln!("error: rustc-model: cannot start: {error}");
        ExitCode::from(101)
    })
}

fn crate_name_of(args: &[String]) -> String {
    let position = args.iter().position(|a| a == "--crate-name");
    position.and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| "?".into())
}

struct Opened {
    /// The local store: the model writes thunks here, never waiting on a remote store.
    store: Store,
    workdir: Workdir,
}

fn open(session: &Session) -> Result<Opened, ModelError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ModelError::Io { path, source }
    };
    let backend = LocalBackend::open(&session.config.store).map_err(io(&session.config.store))?;
    let workdir = Workdir::open(&session.config.store).map_err(io(&session.config.store))?;
    Ok(Opened { store: Store::new(Arc::new(backend)), workdir })
}

/// The store thunks are forced through: the session's remote store (with the local one in front) when
/// it has one, so that reductions other machines stored are used.
async fn forcing_store(session: &Session, local: &Store) -> Result<Store, ModelError> {
    let Some(remote) = &session.config.remote else {
        return Ok(local.clone());
    };
    let spec = store_s3::StoreSpec::parse(remote).map_err(|e| ModelError::Remote(e.to_string()))?;
    let opened = store_s3::open_store(&spec, &session.config.store, store_s3::S3Options::default(), false)
        .await
        .map_err(|e| ModelError::Remote(e.to_string()))?;
    Ok(opened.store)
}

async fn model_call(session: &Session, rustc: &Path, call: &Call) -> Result<ExitCode, ModelError> {
    let Opened { store, workdir } = open(session)?;
    let sysroot = sysroot_of(rustc).map_err(|_| ModelError::PassThrough("a rustc outside a sysroot"))?;
    let toolchain = if sysroot == session.config.sysroot {
        session.config.toolchain
    } else {
        name_local_toolchain(&sysroot, &[], &workdir, &store)
            .await
            .map_err(|_| ModelError::PassThrough("a rustc whose toolchain cannot be named"))?
            .hash
    };
    let cwd = std::env::current_dir().map_err(|source| ModelError::Io { path: ".".into(), source })?;
    let env = thunk::env::snapshot();
    let context = Context {
        cwd: &cwd,
        env: &env,
        store: &store,
        workdir: &workdir,
        toolchain,
        target_dir: &session.config.target_dir,
        session: Some(session),
    };
    let modelled = model::model(call, &context).await?;
    for (path, output, _) in &modelled.outputs {
        let _ = session.index_output(path, modelled.hash, output);
    }
    if call.is_build_script() {
        let store = forcing_store(session, &store).await?;
        return force_build_script(session, &store, &workdir, call, &modelled).await;
    }
    let record = Record::Thunk {
        crate_name: call.crate_name.clone(),
        thunk: modelled.hash,
        build_script: false,
        forced: Vec::new(),
    };
    let _ = session.record(&record);
    write_placeholders(&modelled)?;
    if call.artifact_notifications {
        for (path, _, emit) in &modelled.outputs {
            eprintln!("{}", artifact_notification(path, *emit));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// rustc's own artifact message, which cargo waits for (the rmeta one unblocks dependents).
pub(crate) fn artifact_notification(path: &Path, emit: Emit) -> String {
    let emit = match emit {
        Emit::DepInfo => "dep-info",
        Emit::Metadata => "metadata",
        Emit::Link => "link",
    };
    serde_json::json!({ "$message_type": "artifact", "artifact": path, "emit": emit }).to_string()
}

fn write_placeholders(modelled: &Modelled) -> Result<(), ModelError> {
    for (path, sandbox, emit) in &modelled.outputs {
        let io = |source| ModelError::Io { path: path.clone(), source };
        if *emit == Emit::DepInfo {
            std::fs::write(path, model::placeholder_dep_info(modelled)).map_err(io)?;
            continue;
        }
        let executable =
            *emit == Emit::Link && !sandbox.as_str().ends_with(".rlib") && !sandbox.as_str().ends_with(".a");
        let placeholder = Placeholder { thunk: modelled.hash, output: sandbox.clone() };
        placeholder
            .write(path, executable)
            .map_err(|e| ModelError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
    }
    Ok(())
}

/// Cargo runs a build script as soon as its compile returns, so it is forced now, with everything it
/// links, and its real outputs written. rustc's own messages go to cargo as rustc would send them.
async fn force_build_script(
    session: &Session,
    store: &Store,
    workdir: &Workdir,
    call: &Call,
    modelled: &Modelled,
) -> Result<ExitCode, ModelError> {
    // Slots of its own, not tokens of the jobserver cargo hands this wrapper: cargo keeps its tokens
    // while jobs are queued, and its queued jobs are mostly wrappers that take milliseconds, so a
    // build script's dependencies forced on cargo's tokens ran one at a time (mdbook's model phase:
    // 5.1 s → 6.8 s, medians of 3). Handing the forcer's jobserver to cargo was worse still: the forcer
    // lost its second core to cargo's queue (model phase 25 s → 106 s, same wall time).
    let forcer = Forcer::new(store.clone(), workdir.clone(), session.config.slots);
    let forced = match forcer.force(modelled.hash).await {
        Ok(forced) => forced,
        Err(error) => {
            eprintln!("error: cannot build the build script: {error}");
            return Ok(ExitCode::from(101));
        }
    };
    let forced_here = forcer
        .outcomes()
        .into_iter()
        .filter_map(|(hash, outcome)| outcome.ok().map(|forced| (hash, forced.cached)))
        .collect();
    let record = Record::Thunk {
        crate_name: call.crate_name.clone(),
        thunk: modelled.hash,
        build_script: true,
        forced: forced_here,
    };
    let _ = session.record(&record);
    let stderr = store.get_blob(forced.reduction.stderr.hash).await?;
    eprint!("{}", String::from_utf8_lossy(&stderr));
    match &forced.reduction.status {
        Status::Success => {}
        Status::Exit { code } => return Ok(ExitCode::from(u8::try_from(*code).unwrap_or(1))),
        Status::MissingOutput { path } => {
            eprintln!("error: rustc did not write `{path}`");
            return Ok(ExitCode::from(101));
        }
    }
    realize_outputs(store, workdir, modelled.hash, &forced.reduction).await?;
    Ok(ExitCode::SUCCESS)
}

/// Writes every output of a forced thunk at its real path, unless it is already there.
pub(crate) async fn realize_outputs(
    store: &Store,
    workdir: &Workdir,
    thunk: Hash,
    reduction: &thunk::Reduction,
) -> Result<(), ModelError> {
    let executor = thunk::exec::Executor::new(store.clone(), workdir.clone(), "local");
    for (output, file) in &reduction.outputs {
        executor.realize_output(thunk, output, file).await.map_err(|error| ModelError::Io {
            path: Path::new("/").join(output.as_str()),
            source: std::io::Error::other(error.to_string()),
        })?;
    }
    Ok(())
}

/// Runs the real rustc for a call the model does not take, after forcing and writing out every
/// dependency that is still a placeholder (rustc needs their bytes).
fn run_for_real(
    session: &Session,
    rustc: &OsString,
    args: &[OsString],
    crate_name: &str,
    reason: String,
    text_args: &[String],
) -> ExitCode {
    let _ = session.record(&Record::PassThrough { crate_name: crate_name.to_owned(), reason });
    if let Err(error) = make_dependencies_real(session, &args::extern_paths(text_args)) {
        eprintln!("error: rustc-model: cannot build the dependencies of `{crate_name}`: {error:#}");
        return ExitCode::from(101);
    }
    pass_through(rustc, args)
}

fn make_dependencies_real(session: &Session, externs: &[PathBuf]) -> Result<(), ModelError> {
    let placeholders: Vec<(PathBuf, Placeholder)> =
        externs.iter().filter_map(|path| Placeholder::read(path).ok().flatten().map(|p| (path.clone(), p))).collect();
    if placeholders.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ModelError::Io { path: ".".into(), source })?;
    runtime.block_on(async {
        let Opened { store, workdir } = open(session)?;
        let store = forcing_store(session, &store).await?;
        let forcer = Forcer::new(store.clone(), workdir.clone(), session.config.slots);
        let mut thunks: Vec<Hash> = placeholders.iter().map(|(_, p)| p.thunk).collect();
        for (_, placeholder) in &placeholders {
            let producer = store.get_thunk(placeholder.thunk).await?;
            thunks.extend(producer.inputs.values().filter_map(|input| match input {
                Input::Link { thunk, .. } => Some(*thunk),
                _ => None,
            }));
        }
        thunks.sort();
        thunks.dedup();
        for thunk in thunks {
            let forced = forcer.force(thunk).await.map_err(|e| ModelError::Io {
                path: PathBuf::from(thunk.to_hex()),
                source: std::io::Error::other(e.to_string()),
            })?;
            if !forced.reduction.succeeded() {
                let stderr = store.get_blob(forced.reduction.stderr.hash).await?;
                eprint!("{}", String::from_utf8_lossy(&stderr));
                return Err(ModelError::Io {
                    path: PathBuf::from(format!("thunk {thunk}")),
                    source: std::io::Error::other("this dependency failed to compile"),
                });
            }
            realize_outputs(&store, &workdir, thunk, &forced.reduction).await?;
        }
        Ok(())
    })
}

/// Replaces this process with the real rustc; returns only if it could not be started.
pub(crate) fn pass_through(rustc: &OsString, args: &[OsString]) -> ExitCode {
    let error = Command::new(rustc).args(args).exec();
    eprintln!("error: rustc-model: cannot run `{}`: {error}", rustc.to_string_lossy());
    ExitCode::from(101)
}
