//! Running thunks somewhere else: the [`RemoteEngine`] the forcer hands thunks to, and the messages
//! between the engine's client and the Lambda function (one invocation runs one thunk).
//!
//! The function answers every invocation it understood with an [`InvocationResult`]: a reduction (a
//! compile error is a reduction too, with a failed status: final, not retried), or a failure that says
//! whether trying again can help (the store or the network failed: retryable) or not (the toolchain is
//! not in the store, the thunk is malformed: the forcer runs the thunk on the local engine instead).

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::hash::Hash;
use crate::path::SandboxPath;
use crate::reduction::{OutputFile, Reduction};
use crate::thunk::Thunk;

/// The revision of the invocation messages; the function refuses others. 2: `links`, `until` and
/// the `announced` answer (metadata runs).
pub const PROTOCOL_VERSION: u32 = 2;

/// Lambda refuses a synchronous request or response above 6 MB; the client keeps well under it.
pub const PAYLOAD_LIMIT: usize = 6_000_000;

/// A thunk whose canonical form is at most this large travels inside the invocation, which saves the
/// function one request to the store.
pub const INLINE_LIMIT: usize = 256 * 1024;

/// What the client sends: run this thunk against this store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invocation {
    /// Always [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The store, as `--store` names it (`s3://BUCKET/PREFIX`).
    pub store: String,
    /// The thunk's hash.
    pub thunk: Hash,
    /// The thunk's canonical form, when small (checked against `thunk` by the function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// The file each link input names, by input path, when the client knows it (else the function
    /// reads the producers' reductions): a consumer can then start on an rmeta that a metadata run
    /// stored before its producer's compile ended.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<SandboxPath, OutputFile>,
    /// Run only until rustc announces this output (a library's rmeta), store it and answer
    /// [`InvocationResult::Announced`]: a metadata run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<SandboxPath>,
}

impl Invocation {
    /// The invocation of `thunk`, inlined when small.
    pub fn new(store: &str, hash: Hash, thunk: &Thunk) -> Invocation {
        let canonical = thunk.canonical_bytes();
        let inline = (canonical.len() <= INLINE_LIMIT).then(|| String::from_utf8_lossy(&canonical).into_owned());
        Invocation {
            protocol: PROTOCOL_VERSION,
            store: store.to_owned(),
            thunk: hash,
            inline,
            links: BTreeMap::new(),
            until: None,
        }
    }
}

/// What the function answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case", deny_unknown_fields)]
pub enum InvocationResult {
    /// The thunk ran (or its reduction was already in the store); the reduction is stored.
    Reduced {
        /// The reduction (its output blobs are in the store).
        reduction: Box<Reduction>,
        /// Where the invocation's time went.
        timings: Timings,
    },
    /// A metadata run ended: the output it was run until, already in the store (no reduction).
    Announced {
        /// The output.
        output: SandboxPath,
        /// Its bytes' hash and size.
        file: OutputFile,
        /// Where the invocation's time went.
        timings: Timings,
    },
    /// No reduction: why, and whether another attempt may succeed.
    Failed {
        /// Whether the failure was of the infrastructure (store, network, disk), worth retrying.
        retryable: bool,
        /// One line a user can act on.
        message: String,
    },
}

/// Where one invocation's time went, in milliseconds, for the overhead the client reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    /// Obtaining the toolchain: 0 when warm, fetching and unpacking the layer when cold.
    pub toolchain_ms: u64,
    /// Whether this invocation unpacked the toolchain (a cold start of this function instance).
    pub cold: bool,
    /// The executor's own work: fetching the inputs the instance's cache lacked, preparing the
    /// sandbox, storing the outputs and the reduction.
    pub executor_ms: u64,
    /// The program itself (the reduction's `duration_ms`).
    pub run_ms: u64,
    /// Everything from receiving the invocation to answering it.
    pub total_ms: u64,
    /// Of `executor_ms`: obtaining the inputs (the rest is storing the outputs).
    #[serde(default)]
    pub fetch_ms: u64,
    /// The function instance that ran it (random, drawn when the instance starts): with `slot`, one
    /// row of the timeline.
    #[serde(default)]
    pub instance: u64,
    /// Which of the invocations the instance served at once this was (always 0 on Lambda, where an
    /// instance serves one at a time).
    #[serde(default)]
    pub slot: u32,
}

/// A thunk run by a remote engine: its reduction (already in the store), and where and how it ran.
#[derive(Debug, Clone)]
pub struct RemoteRun {
    /// The reduction.
    pub reduction: Reduction,
    /// The worker that ran it, as the timeline names it (`lambda 3f2a9c01`).
    pub worker: String,
    /// Where the time went, as the worker measured it.
    pub phases: crate::exec::Phases,
    /// Waiting on the engine beyond the worker's own time (the invocation's round trip, a cold start).
    pub overhead_ms: u64,
}

/// Why a remote engine returned no reduction.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// The infrastructure failed (a dropped connection, throttling, a dead instance): try again.
    #[error("{0}")]
    Retryable(String),
    /// Trying again will not help (the function cannot obtain the toolchain, the payload is too large):
    /// run the thunk on the local engine.
    #[error("{0}")]
    Final(String),
}

/// An engine that runs thunks on other machines, reading inputs from and writing outputs to the store.
#[async_trait::async_trait]
pub trait RemoteEngine: Send + Sync {
    /// The engine's name in summaries (`lambda`).
    fn name(&self) -> &str;

    /// Runs `thunk` (named `hash`) remotely and returns its reduction, already in the store. `links`
    /// names the file behind each link input when the caller knows them all (else it is empty).
    async fn run(
        &self,
        hash: Hash,
        thunk: &Thunk,
        links: &BTreeMap<SandboxPath, OutputFile>,
    ) -> Result<RemoteRun, RemoteError>;

    /// Runs `thunk` only until rustc announces `output` (its rmeta) and returns that file, already in
    /// the store: the same process as [`RemoteEngine::run`] up to that point, so the same bytes.
    async fn run_until(
        &self,
        hash: Hash,
        thunk: &Thunk,
        links: &BTreeMap<SandboxPath, OutputFile>,
        output: &SandboxPath,
    ) -> Result<OutputFile, RemoteError> {
        let _ = (hash, thunk, links, output);
        Err(RemoteError::Final(format!("{} has no metadata runs", self.name())))
    }

    /// What it has been billed for so far.
    fn usage(&self) -> Usage {
        Usage::default()
    }
}

/// What a remote engine has been billed for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Invocations that answered.
    pub invocations: u64,
    /// Their billed time in milliseconds (each rounded up to a millisecond, as Lambda bills).
    pub billed_ms: u64,
}
