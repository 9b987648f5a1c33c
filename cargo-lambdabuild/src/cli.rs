//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build Rust projects as a graph of content-addressed thunks, forced locally or on AWS Lambda.
#[derive(Debug, Parser)]
#[command(name = "cargo-lambdabuild", bin_name = "cargo lambdabuild", version, about, long_about = None)]
#[command(arg_required_else_help = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where thunks, blobs and reductions are kept: a directory
    /// [default: $XDG_CACHE_HOME/lambdabuild or ~/.cache/lambdabuild]
    #[arg(long, global = true, value_name = "DIR", env = thunk::env::STORE_VAR)]
    pub store: Option<PathBuf>,
    /// Print less: errors only
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more detail
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Coloring of the output
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: ColorChoice,
}

/// When to use colours, as in cargo.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ColorChoice {
    /// When stderr is a terminal
    Auto,
    /// Always
    Always,
    /// Never
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a thunk, placeholder, reduction or toolchain in readable form
    Describe(DescribeArgs),
    /// Name the local rustc toolchain: hash its files, store its manifest, prepare it for the executor
    Toolchain(ToolchainArgs),
}

/// `cargo lambdabuild describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// A placeholder or object file, or the hash of a thunk, reduction or blob in the store
    #[arg(value_name = "PATH|HASH")]
    pub target: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `cargo lambdabuild toolchain`.
#[derive(Debug, Args)]
pub struct ToolchainArgs {
    /// The rustc to name [default: `rustc` on PATH, through rustup if that is what it is]
    #[arg(long, value_name = "PATH")]
    pub rustc: Option<PathBuf>,
    /// Also include the standard library for this target (repeatable); it must be installed
    #[arg(long = "target", value_name = "TRIPLE")]
    pub targets: Vec<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}
