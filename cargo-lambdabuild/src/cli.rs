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

/// Options every subcommand takes. Each setting is a flag, else its variable, else the config file's
/// key of the same name, else the default (see `cargo_lambdabuild::config`).
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where thunks, blobs and reductions are kept: a directory, or s3://BUCKET/PREFIX (shared, with
    /// the cache directory in front of it) [config: store] [default: the cache directory]
    #[arg(long, global = true, value_name = "DIR|s3://BUCKET/PREFIX", env = thunk::env::STORE_VAR)]
    pub store: Option<String>,
    /// The local store, and the cache in front of an S3 store [config: cache-dir]
    /// [default: $XDG_CACHE_HOME/lambdabuild or ~/.cache/lambdabuild]
    #[arg(long, global = true, value_name = "DIR", env = thunk::env::CACHE_DIR_VAR)]
    pub cache_dir: Option<PathBuf>,
    /// Where thunks run: `local=N` (N processes on this machine), `lambda=N` (N invocations of the
    /// deployed function in flight; needs an S3 store); give both for Lambda with a local fallback
    /// [config: engine] [default: local=<cores>]
    #[arg(long, global = true, value_name = "ENGINE", env = "LAMBDABUILD_ENGINE", value_delimiter = ',')]
    pub engine: Vec<String>,
    /// The Lambda function `--engine lambda=N` invokes and `deploy` creates [config: function]
    /// [default: cargo-lambdabuild]
    #[arg(long, global = true, value_name = "NAME", env = "LAMBDABUILD_FUNCTION")]
    pub function: Option<String>,
    /// The AWS region of the bucket and the function [config: region] [default: AWS's configuration]
    #[arg(long, global = true, value_name = "REGION", env = "LAMBDABUILD_REGION")]
    pub region: Option<String>,
    /// Requests to an S3 store in flight at most (uploads, checks and downloads together)
    /// [config: upload-jobs] [default: 32]
    #[arg(long, global = true, value_name = "N", env = "LAMBDABUILD_UPLOAD_JOBS")]
    pub upload_jobs: Option<usize>,
    /// The config file [default: $XDG_CONFIG_HOME/lambdabuild/config.toml]
    #[arg(long, global = true, value_name = "FILE", env = "LAMBDABUILD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print less: errors only
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more detail
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Coloring of the output
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: ColorChoice,
    /// The settings, resolved from the flags above, the environment and the config file.
    #[arg(skip)]
    settings: Option<crate::config::Settings>,
}

impl GlobalArgs {
    /// Resolves the settings (flags, else variables, else the config file, else defaults).
    pub fn resolve(&mut self) -> anyhow::Result<()> {
        let given = crate::config::Given {
            store: self.store.clone(),
            cache_dir: self.cache_dir.clone(),
            engine: self.engine.clone(),
            function: self.function.clone(),
            region: self.region.clone(),
            upload_jobs: self.upload_jobs,
            config: self.config.clone(),
        };
        self.settings = Some(crate::config::Settings::resolve(&given)?);
        Ok(())
    }

    /// The resolved settings.
    pub fn settings(&self) -> &crate::config::Settings {
        self.settings.as_ref().expect("main resolves the settings before running a command")
    }
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
    /// Print the counters of the store since the last `stats --reset`: thunks executed by engine, cache
    /// hits, traffic, Lambda time and its estimated cost (CI-mode builds included)
    Stats(StatsArgs),
    /// Predict a recorded build's wall time and cost on N Lambda workers: replays the graph `--timings`
    /// saved through the forcer against a model of Lambda, beside the critical path (the limit)
    Predict(PredictArgs),
}

/// `cargo lambdabuild predict`: the scale-out model's parameters (defaults in its help).
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The graph a `--timings` build saved [default: target/lambdabuild-timings/graph.json]
    #[arg(value_name = "GRAPH")]
    pub graph: Option<PathBuf>,
    /// The numbers of workers (Lambda invocations in flight) to predict for
    #[arg(long, value_name = "N,…", value_delimiter = ',', default_value = "1,2,8,64,1000")]
    pub workers: Vec<usize>,
    /// One invocation's round trip beyond the function's own time, in ms [default: 34, measured on
    /// the emulator]
    #[arg(long, value_name = "MS")]
    pub invoke_ms: Option<u64>,
    /// A new instance's runtime start before it fetches the toolchain, in ms [default: 250]
    #[arg(long, value_name = "MS")]
    pub init_ms: Option<u64>,
    /// The packed toolchain each new instance fetches, in MB [default: 170]
    #[arg(long, value_name = "MB")]
    pub layer_mb: Option<u64>,
    /// Unpacking it, in ms; it overlaps the download, so only the longer of the two counts [default: 600]
    #[arg(long, value_name = "MS")]
    pub unpack_ms: Option<u64>,
    /// One instance's throughput to and from S3, in MB/s [default: 100]
    #[arg(long, value_name = "MB/S")]
    pub bandwidth: Option<u64>,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `cargo lambdabuild deploy`: flags, else variables, else the config file's `[deploy]` table.
#[derive(Debug, Args)]
pub struct DeployArgs {
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

/// `cargo lambdabuild stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Start the counters again from zero (after printing them)
    #[arg(long)]
    pub reset: bool,
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
    /// Write an HTML report of where and when each thunk ran (one row per Lambda instance or local
    /// slot), like `cargo build --timings`
    #[arg(long)]
    pub timings: bool,
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
}
