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
    runtime.block_on(async {
        match cli.command {
            None => ops::build::run(&cli.global, cli.build, shell).await,
            Some(cli::Command::Build(args)) => ops::build::run(&cli.global, *args, shell).await,
            Some(cli::Command::Force(args)) => ops::build::force_paths(&cli.global, args, shell).await,
            Some(cli::Command::Upload(args)) => ops::upload::run(&cli.global, *args, shell).await,
            Some(cli::Command::Describe(args)) => {
                ops::describe::run(&cli.global, args, shell).await.map(|()| ExitCode::SUCCESS)
            }
            Some(cli::Command::Toolchain(args)) => {
                ops::toolchain::run(&cli.global, args, shell).await.map(|()| ExitCode::SUCCESS)
            }
            Some(cli::Command::Deploy(args)) => {
                ops::deploy::run(&cli.global, *args, shell).await.map(|()| ExitCode::SUCCESS)
            }
            Some(cli::Command::Stats(args)) => {
                ops::stats::run(&cli.global, args, shell).await.map(|()| ExitCode::SUCCESS)
            }
            Some(cli::Command::Layer(args)) => {
                ops::layer::run(&cli.global, args, shell).await.map(|()| ExitCode::SUCCESS)
            }
        }
    })
}
