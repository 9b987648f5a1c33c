//! `cargo lambdabuild`: build a Rust project as a graph of content-addressed thunks, forced on local
//! processes or on AWS Lambda. This binary parses the command line and hands each subcommand to `ops`.

mod cli;
mod ops;
mod shell;

use cargo_lambdabuild::{config, cost, engine, timings, upload};

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Cargo runs `cargo-lambdabuild lambdabuild ARGS…` for `cargo lambdabuild ARGS…`.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == "lambdabuild") {
        args.remove(1);
    }
    let mut cli = cli::Cli::parse_from(args);
    let shell = shell::Shell::new(&cli.global);
    if let Err(error) = cli.global.resolve() {
        shell.error(&format!("{error:#}"));
        return ExitCode::from(101);
    }
    match run(cli, &shell) {
        Ok(code) => code,
        Err(error) => {
            shell.error(&format!("{error:#}"));
            ExitCode::from(101)
        }
    }
}

fn run(cli: cli::Cli, shell: &shell::Shell) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cli::Cli { global, build, command } = cli;
    let forces = matches!(command, None | Some(cli::Command::Build(_)) | Some(cli::Command::Force(_)));
    let finished = runtime.block_on(async {
        let command = async {
            match command {
                None => ops::build::run(&global, build, shell).await,
                Some(cli::Command::Build(args)) => ops::build::run(&global, *args, shell).await,
                Some(cli::Command::Force(args)) => ops::build::force_paths(&global, args, shell).await,
                Some(cli::Command::Upload(args)) => ops::upload::run(&global, *args, shell).await,
                Some(cli::Command::Describe(args)) => {
                    ops::describe::run(&global, args, shell).await.map(|()| ExitCode::SUCCESS)
                }
                Some(cli::Command::Toolchain(args)) => {
                    ops::toolchain::run(&global, args, shell).await.map(|()| ExitCode::SUCCESS)
                }
                Some(cli::Command::Deploy(args)) => {
                    ops::deploy::run(&global, *args, shell).await.map(|()| ExitCode::SUCCESS)
                }
                Some(cli::Command::Stats(args)) => {
                    ops::stats::run(&global, args, shell).await.map(|()| ExitCode::SUCCESS)
                }
                Some(cli::Command::Predict(args)) => {
                    ops::predict::run(&global, args, shell).map(|()| ExitCode::SUCCESS)
                }
                Some(cli::Command::Layer(args)) => {
                    ops::layer::run(&global, args, shell).await.map(|()| ExitCode::SUCCESS)
                }
            }
        };
        if !forces {
            return command.await.map(Some);
        }
        tokio::select! {
            finished = command => finished.map(Some),
            () = interrupted() => Ok(None),
        }
    })?;
    if let Some(code) = finished {
        return Ok(code);
    }
    // Interrupted: the command's futures are dropped (a dropped run kills its program and puts back
    // the placeholders it was writing over); stop what detached tasks still run, then undo whatever
    // is left half done, as the next build would.
    thunk::exec::kill_running_programs();
    // What ran to the end is stored before the runtime stops (its storing goes on beside the build),
    // so that the rerun takes it from the store.
    runtime.block_on(thunk::force::finish_storing(std::time::Duration::from_secs(10)));
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    let undone = ops::open_workdir(&global).and_then(|workdir| Ok(workdir.journal().recover()?));
    if let Ok(undone) = undone
        && undone.entries > 0
    {
        shell.status(
            "Recovered",
            &format!("{} placeholders put back, {} partial files removed", undone.restored, undone.removed),
        );
    }
    shell.error("interrupted; what finished is in the store: run the same command again to resume");
    Ok(ExitCode::from(130))
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        // Without handlers the signals keep their default action, which stops the process anyway.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
