//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build Rust projects as a graph of content-addressed thunks, forced locally or on AWS Lambda.
#[derive(Debug, Parser)]
#[command(name = "cargo-lambdabuild", bin_name = "cargo lambdabuild", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand, `cargo lambdabuild` builds: it takes `cargo build`'s flags.
    #[command(flatten)]
    pub build: BuildArgs,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where thunks, blobs and reductions are kept: a directory, or s3://BUCKET/PREFIX (shared, with
    /// the cache directory in front of it) [default: the cache directory]
    #[arg(long, global = true, value_name = "DIR|s3://BUCKET/PREFIX", env = thunk::env::STORE_VAR)]
    pub store: Option<String>,
    /// The local store, and the cache in front of an S3 store
    /// [default: $XDG_CACHE_HOME/lambdabuild or ~/.cache/lambdabuild]
    #[arg(long, global = true, value_name = "DIR", env = thunk::env::CACHE_DIR_VAR)]
    pub cache_dir: Option<PathBuf>,
    /// Requests to an S3 store in flight at most (uploads, checks and downloads together)
    #[arg(long, global = true, value_name = "N", default_value_t = 32, env = "LAMBDABUILD_UPLOAD_JOBS")]
    pub upload_jobs: usize,
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
    /// Build like `cargo build`, as a graph of thunks forced on an engine (the default subcommand)
    Build(Box<BuildArgs>),
    /// Build the real files behind placeholders
    Force(ForceArgs),
    /// Model the build like `build --dry-run`, then upload everything its graph needs to the store
    /// (an S3 store), as a remote engine needs it
    Upload(Box<UploadArgs>),
    /// Show a thunk, placeholder, reduction or toolchain in readable form
    Describe(DescribeArgs),
    /// Name the local rustc toolchain: hash its files, store its manifest, prepare it for the executor
    Toolchain(ToolchainArgs),
    /// Pack the local toolchain into the layer the Lambda function unpacks, and put it in the store
    Layer(ToolchainArgs),
    /// Create or update the Lambda function `--engine lambda=N` invokes, and print its role's policy
    Deploy(Box<DeployArgs>),
}

/// `cargo lambdabuild deploy`: flags, else variables, else the config file's `[deploy]` table.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The function's name
    #[arg(long, value_name = "NAME", env = "LAMBDABUILD_FUNCTION", default_value = crate::engine::lambda::DEFAULT_FUNCTION)]
    pub function: String,
    /// The IAM role the function runs as (needed to create it); see --policy-only for what it needs
    #[arg(long, value_name = "ARN", env = "LAMBDABUILD_ROLE")]
    pub role: Option<String>,
    /// Memory in MB (Lambda gives CPU in proportion: about 2 vCPUs at 3008) [default: 3008]
    #[arg(long, value_name = "MB", env = "LAMBDABUILD_MEMORY_MB")]
    pub memory: Option<u32>,
    /// Ephemeral storage (/tmp) in MB: the unpacked toolchain and a cache of blobs [default: 4096]
    #[arg(long, value_name = "MB", env = "LAMBDABUILD_EPHEMERAL_STORAGE_MB")]
    pub ephemeral_storage: Option<u32>,
    /// Timeout of one invocation (one thunk), in seconds [default: 900]
    #[arg(long, value_name = "SECONDS", env = "LAMBDABUILD_TIMEOUT_S")]
    pub timeout: Option<u32>,
    /// x86_64 or arm64: must be this machine's, whose toolchain the function runs [default: this machine's]
    #[arg(long, value_name = "ARCH")]
    pub architecture: Option<String>,
    /// The function's executable [default: lambdabuild-bootstrap beside this program]
    #[arg(long, value_name = "PATH")]
    pub bootstrap: Option<PathBuf>,
    /// The config file [default: $XDG_CONFIG_HOME/lambdabuild/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also pack the standard library for this target (repeatable)
    #[arg(long = "target", value_name = "TRIPLE")]
    pub targets: Vec<String>,
    /// Only print the IAM policy the function's role needs, and change nothing
    #[arg(long)]
    pub policy_only: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
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

/// `cargo lambdabuild toolchain` and `cargo lambdabuild layer`.
#[derive(Debug, Args)]
pub struct ToolchainArgs {
    /// The rustc to name (and pack) [default: `rustc` on PATH, through rustup if that is what it is]
    #[arg(long, value_name = "PATH")]
    pub rustc: Option<PathBuf>,
    /// Also include the standard library for this target (repeatable); it must be installed
    #[arg(long = "target", value_name = "TRIPLE")]
    pub targets: Vec<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `cargo lambdabuild [build]`: cargo build's flags, and the engine.
#[derive(Debug, Clone, Default, Args)]
pub struct BuildArgs {
    /// Build with the release profile
    #[arg(short, long)]
    pub release: bool,
    /// Build with the given profile
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Package(s) to build
    #[arg(short, long, value_name = "SPEC")]
    pub package: Vec<String>,
    /// Build all packages in the workspace
    #[arg(long)]
    pub workspace: bool,
    /// Exclude packages from the build
    #[arg(long, value_name = "SPEC")]
    pub exclude: Vec<String>,
    /// Space or comma separated list of features to activate
    #[arg(short = 'F', long, value_name = "FEATURES")]
    pub features: Vec<String>,
    /// Activate all available features
    #[arg(long)]
    pub all_features: bool,
    /// Do not activate the `default` feature
    #[arg(long)]
    pub no_default_features: bool,
    /// Build only this package's library
    #[arg(long)]
    pub lib: bool,
    /// Build only the specified binary
    #[arg(long, value_name = "NAME")]
    pub bin: Vec<String>,
    /// Build all binaries
    #[arg(long)]
    pub bins: bool,
    /// Build only the specified example
    #[arg(long, value_name = "NAME")]
    pub example: Vec<String>,
    /// Build all examples
    #[arg(long)]
    pub examples: bool,
    /// Build only the specified test target
    #[arg(long, value_name = "NAME")]
    pub test: Vec<String>,
    /// Build all targets that have `test = true` set
    #[arg(long)]
    pub tests: bool,
    /// Build all benches
    #[arg(long)]
    pub benches: bool,
    /// Build all targets
    #[arg(long)]
    pub all_targets: bool,
    /// Build for the target triple
    #[arg(long, value_name = "TRIPLE")]
    pub target: Vec<String>,
    /// Path to Cargo.toml
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Directory for all generated artifacts (lambdabuild builds in its `lambdabuild/` subdirectory)
    #[arg(long, value_name = "DIRECTORY")]
    pub target_dir: Option<PathBuf>,
    /// Assert that `Cargo.lock` will remain unchanged
    #[arg(long)]
    pub locked: bool,
    /// Run without accessing the network
    #[arg(long)]
    pub offline: bool,
    /// Equivalent to specifying both --locked and --offline
    #[arg(long)]
    pub frozen: bool,
    /// Number of parallel jobs cargo runs while modelling the build
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<u32>,
    /// Error format: human, or json (cargo's messages with real paths, then a `lambdabuild-finished` line)
    #[arg(long, value_name = "FMT", default_value = "human")]
    pub message_format: String,
    /// Where thunks run: `local=N` (N processes on this machine), `lambda=N` (N invocations of the
    /// deployed function in flight; needs an S3 store); give both for Lambda with a local fallback
    /// [default: local=<cores>]
    #[arg(long, value_name = "ENGINE")]
    pub engine: Vec<String>,
    /// The Lambda function `--engine lambda=N` invokes
    #[arg(long, value_name = "NAME", env = "LAMBDABUILD_FUNCTION", default_value = crate::engine::lambda::DEFAULT_FUNCTION)]
    pub function: String,
    /// Stop after the model phase and report the graph's size
    #[arg(long)]
    pub dry_run: bool,
}

/// `cargo lambdabuild upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Leave the packed toolchain out (a remote engine needs it once per toolchain)
    #[arg(long)]
    pub without_toolchain: bool,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// `cargo lambdabuild force`.
#[derive(Debug, Args)]
pub struct ForceArgs {
    /// Placeholder files to build for real
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Where thunks run: `local=N` [default: local=<cores>]
    #[arg(long, value_name = "ENGINE")]
    pub engine: Vec<String>,
}
