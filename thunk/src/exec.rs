//! The executor: runs one thunk in a fresh sandbox directory and records what it produced.
//!
//! 1. Make `sandboxes/thunk-XXXX/root/` and link `_toolchain` to the materialized toolchain tree.
//! 2. Materialize every input, and the directories of every declared output: blobs are hard-linked from a cache of decompressed, verified blobs
//!    (copied where hard links fail), links are looked up in the producer's reduction, symlinks are made
//!    and then checked to resolve inside the sandbox.
//! 3. Run the program with exactly the thunk's env (nothing inherited), cwd at the thunk's `cwd`, stdin
//!    closed, stdout and stderr to files, in a process group of its own that is killed whole on timeout,
//!    on cancellation, and after the program exits (so no stray child outlives its thunk).
//! 4. Store stdout, stderr and every declared output as blobs — outputs must be regular files inside the
//!    sandbox — and only then the reduction.
//!
//! A run killed by a signal or the timeout writes no reduction: only deterministic outcomes are cached.
//! This module is the one place that starts thunk processes (the wrapper's pass-through is the other
//! place a child process starts, and it runs the user's own rustc, not a thunk).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::decode::DecodeError;
use crate::hash::Hash;
use crate::path::{SandboxPath, TOOLCHAIN_DIR};
use crate::reduction::{BlobRef, OutputFile, Reduction, Status};
use crate::store::{Store, StoreError};
use crate::thunk::{Input, SANDBOX_TOKEN, Thunk};
use crate::workdir::Workdir;

/// Files of the decompressed-blob cache carry this mtime; any other mtime means something wrote to the
/// file through a hard link, and it is fetched again instead of trusted.
const RAW_MTIME: Duration = Duration::from_secs(1);

/// Why a thunk could not be run to a reduction.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The thunk breaks a rule of the format.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    /// The store failed, or holds a corrupt or missing object.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The toolchain the thunk names is not on this machine.
    #[error(
        "toolchain {hash} is not available on this machine; name it with that rustc first \
         (`cargo lambdabuild toolchain --rustc PATH`)"
    )]
    ToolchainUnavailable {
        /// The toolchain.
        hash: Hash,
    },
    /// An input links to the output of a thunk that has not been forced.
    #[error("input `{input}` is an output of thunk {thunk}, which has not been forced yet")]
    LinkNotForced {
        /// The input.
        input: SandboxPath,
        /// The producer.
        thunk: Hash,
    },
    /// An input links to the output of a thunk whose run failed.
    #[error("input `{input}` is an output of thunk {thunk}, whose run failed")]
    LinkFailed {
        /// The input.
        input: SandboxPath,
        /// The producer.
        thunk: Hash,
    },
    /// An input links to an output its producer does not have.
    #[error("input `{input}` names output `{output}` of thunk {thunk}, which it did not produce")]
    LinkMissingOutput {
        /// The input.
        input: SandboxPath,
        /// The producer.
        thunk: Hash,
        /// The output asked for.
        output: SandboxPath,
    },
    /// An input file is not what the thunk says it is (edited since the graph was made).
    #[error("{path} changed after the build graph was made; run the build again")]
    InputChanged {
        /// The file.
        path: PathBuf,
    },
    /// A blob's size differs from what the thunk says.
    #[error("input `{input}`: blob {hash} has {actual} bytes, but the thunk says {expected}")]
    SizeMismatch {
        /// The input.
        input: SandboxPath,
        /// The blob.
        hash: Hash,
        /// The size in the thunk.
        expected: u64,
        /// The size in the store.
        actual: u64,
    },
    /// An input would be written outside the sandbox.
    #[error("refused input `{path}`: {reason}")]
    UnsafeInput {
        /// The input.
        path: SandboxPath,
        /// Why.
        reason: String,
    },
    /// An output is not a regular file inside the sandbox.
    #[error("refused output `{path}`: {reason}")]
    UnsafeOutput {
        /// The output.
        path: SandboxPath,
        /// Why.
        reason: String,
    },
    /// The program could not be started.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// The program path in the sandbox.
        program: SandboxPath,
        /// The OS error.
        source: io::Error,
    },
    /// The run took longer than the thunk's timeout; its process group was killed.
    #[error("thunk {thunk} ran past its timeout of {:.1} s and was killed with all its processes", *.timeout_ms as f64 / 1000.0)]
    Timeout {
        /// The thunk.
        thunk: Hash,
        /// Its timeout.
        timeout_ms: u64,
    },
    /// The program was killed by a signal.
    #[error("thunk {thunk} was killed by signal {signal}")]
    Killed {
        /// The thunk.
        thunk: Hash,
        /// The signal number.
        signal: i32,
    },
    /// The sandbox could not be prepared or read.
    #[error("sandbox: {context}: {source}")]
    Sandbox {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

fn sandbox_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ExecError {
    let context = context.into();
    move |source| ExecError::Sandbox { context, source }
}

/// The argument that maps sandbox paths back to real ones: the model adds it to every rustc thunk. The
/// target is `/`, not empty: rustc joins the rest of the path onto it, and an empty target would leave
/// `home/me/app` relative where a plain build has `/home/me/app`. With it, a binary linked in a sandbox
/// is byte-identical to cargo's; an rlib's metadata still records that its paths were remapped. In
/// place it would map nothing and only change rustc's metadata, so [`Executor::execute_in_place`]
/// drops it.
pub const MIRROR_REMAP: &str = "--remap-path-prefix=@SANDBOX@=/";

/// A thunk run in place, and the files its dep-info says it read that it did not declare.
pub struct InPlace {
    /// The outcome; stored only when `undeclared` is empty.
    pub reduction: Reduction,
    /// Where the time went.
    pub phases: Phases,
    /// Files rustc read that are not inputs of the thunk: the outputs are right for this machine, but
    /// the thunk does not name all it depends on, so its reduction is not cached.
    pub undeclared: Vec<PathBuf>,
    /// What is left once the outputs are hashed: storing their blobs, then the reduction. Until it is
    /// done the reduction is known only to this process; see
    /// [`crate::force::Forcer::with_deferred_storing`].
    pub persist: Persist,
}

impl std::fmt::Debug for InPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InPlace")
            .field("reduction", &self.reduction)
            .field("phases", &self.phases)
            .field("undeclared", &self.undeclared)
            .finish_non_exhaustive()
    }
}

/// Storing what a run in place wrote (see [`InPlace::persist`]).
pub type Persist = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ExecError>> + Send>>;

/// Files this executor wrote or checked, by device and inode, with what they held then: a file it
/// knows is not read again to learn its hash (a dependency's rlib is checked by every crate that links
/// to it; cargo's hard link to an artifact in `deps/` is the same file).
#[derive(Debug, Default)]
struct KnownFiles(Mutex<HashMap<(u64, u64), (FileStamp, Hash)>>);

/// What changes when a file is written: its size, mtime and ctime (the last also on `set_modified`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(metadata: &fs::Metadata) -> ((u64, u64), FileStamp) {
        let ns = |seconds: i64, nanos: i64| i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
        let stamp = FileStamp {
            size: metadata.len(),
            mtime_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            ctime_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
        };
        ((metadata.dev(), metadata.ino()), stamp)
    }
}

impl KnownFiles {
    /// Notes that `path`, as it is now, holds bytes `hash`.
    fn note(&self, path: &Path, hash: Hash) {
        if let Ok(metadata) = fs::metadata(path) {
            let (id, stamp) = FileStamp::of(&metadata);
            self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (stamp, hash));
        }
    }

    /// Whether `path` still holds what it held when noted, and that was `hash`.
    fn holds(&self, path: &Path, hash: Hash) -> bool {
        let Ok(metadata) = fs::metadata(path) else { return false };
        let (id, stamp) = FileStamp::of(&metadata);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&id) == Some(&(stamp, hash))
    }
}

/// Where one execution's time went, in milliseconds: for the timeline of `--timings`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Phases {
    /// Obtaining the inputs: fetching what the cache lacks, writing links, preparing the sandbox.
    pub fetch_ms: u64,
    /// The program itself.
    pub run_ms: u64,
    /// Storing the outputs, the captured streams and the reduction.
    pub store_ms: u64,
}

impl Phases {
    fn measured(started: Instant, run_started: Instant, run_ms: u64) -> Phases {
        let fetch_ms = run_started.duration_since(started).as_millis() as u64;
        let total_ms = started.elapsed().as_millis() as u64;
        Phases { fetch_ms, run_ms, store_ms: total_ms.saturating_sub(fetch_ms + run_ms) }
    }
}

/// Outputs at least this large are realized from the decompressed-blob cache.
const RAW_REALIZE_MIN: u64 = 1 << 20;

/// Blob inputs fetched at once when a sandbox is materialized.
const PREFETCH_JOBS: usize = 32;

/// Runs thunks on this machine.
#[derive(Debug, Clone)]
pub struct Executor {
    store: Store,
    workdir: Workdir,
    engine: String,
    /// Handed to every program, as cargo hands its jobserver to rustc, so that rustc's codegen threads
    /// share the machine with the other thunks instead of each taking every core.
    jobserver: Option<jobserver::Client>,
    known: Arc<KnownFiles>,
    /// Set when [`InPlace::persist`] reads and compresses at idle priority ([`crate::background`]):
    /// only while no one waits for it, so until the value turns `true`.
    persist_in_background: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Executor {
    /// An executor reading and writing `store`, working in `workdir`, that signs its reductions `engine`.
    pub fn new(store: Store, workdir: Workdir, engine: impl Into<String>) -> Executor {
        Executor {
            store,
            workdir,
            engine: engine.into(),
            jobserver: None,
            known: Arc::default(),
            persist_in_background: None,
        }
    }

    /// The same executor, reading and compressing what [`InPlace::persist`] stores at idle priority,
    /// for a caller that runs the next compiles before awaiting it, until `hurry` turns `true`.
    pub fn with_persist_in_background(mut self, hurry: tokio::sync::watch::Receiver<bool>) -> Executor {
        self.persist_in_background = Some(hurry);
        self
    }

    /// The same executor, handing `client` to the programs it runs.
    pub fn with_jobserver(mut self, client: jobserver::Client) -> Executor {
        self.jobserver = Some(client);
        self
    }

    /// Runs `thunk` and stores its outputs and then its reduction. A compile error is an `Ok` reduction
    /// with a failed status; `Err` means no reduction was written.
    pub async fn execute(&self, thunk: &Thunk) -> Result<Reduction, ExecError> {
        self.execute_phased(thunk).await.map(|(reduction, _)| reduction)
    }

    /// [`Executor::execute`], telling where the time went.
    pub async fn execute_phased(&self, thunk: &Thunk) -> Result<(Reduction, Phases), ExecError> {
        match self.execute_given(thunk, &Given::default()).await? {
            Ran::Reduced(reduction, phases) => Ok((reduction, phases)),
            Ran::Announced(output, ..) => unreachable!("{output} was announced to a run not given `until`"),
        }
    }

    /// [`Executor::execute_phased`] with what the caller knows: the files behind the link inputs, and
    /// for a metadata run, the output to stop at.
    pub async fn execute_given(&self, thunk: &Thunk, given: &Given) -> Result<Ran, ExecError> {
        let started = Instant::now();
        thunk.validate()?;
        let hash = thunk.hash();
        let toolchain = self.workdir.toolchain_dir(thunk.toolchain);
        if !toolchain.is_dir() {
            return Err(ExecError::ToolchainUnavailable { hash: thunk.toolchain });
        }
        let sandboxes = self.workdir.sandboxes_dir();
        let sandbox = tempfile::Builder::new()
            .prefix("thunk-")
            .tempdir_in(&sandboxes)
            .map_err(sandbox_error(format!("cannot create a directory in {}", sandboxes.display())))?;
        let root = sandbox.path().join("root");
        fs::create_dir(&root).map_err(sandbox_error("cannot create the root"))?;
        std::os::unix::fs::symlink(&toolchain, root.join(TOOLCHAIN_DIR))
            .map_err(sandbox_error("cannot link the toolchain"))?;

        self.materialize(thunk, &root, &given.links).await?;
        // Tools expect the directories they write into to exist, as cargo creates `--out-dir` for rustc.
        for output in &thunk.outputs {
            make_parents(&root, output)?;
        }
        if let Some(cwd) = &thunk.cwd {
            make_parents(&root, cwd)?;
            let dir = cwd.under(&root);
            if !dir.is_dir() {
                fs::create_dir(&dir).map_err(sandbox_error(format!("cannot create the working directory `{cwd}`")))?;
            }
        }
        let root_text = root.to_str().ok_or_else(|| ExecError::Sandbox {
            context: format!("the sandbox path {} is not UTF-8", root.display()),
            source: io::ErrorKind::InvalidInput.into(),
        })?;
        let cwd = thunk.cwd.as_ref().map_or_else(|| root.clone(), |cwd| cwd.under(&root));
        let mut launch = Launch::new(thunk, root_text, thunk.program.0.under(&root), cwd, sandbox.path());
        // The toolchain's own linker driver comes first: a bin links with the toolchain's linker
        // closure, never with what this machine may or may not have.
        let linker = Path::new(TOOLCHAIN_DIR).join(crate::toolchain::LINKER_DIR).join("bin");
        if toolchain.join(crate::toolchain::LINKER_DIR).join("bin/cc").is_file() {
            let linker = root.join(linker).display().to_string();
            match launch.env.iter_mut().find(|(name, _)| name == "PATH") {
                Some((_, path)) => *path = format!("{linker}:{path}"),
                None => launch.env.push(("PATH".into(), linker)),
            }
        }
        // A metadata run: stop once rustc says the output is written.
        let announced = Arc::new(Mutex::new(None));
        if let Some(until) = &given.until {
            let stop = Arc::new(tokio::sync::Notify::new());
            let (until, seen, root_prefix) = (until.clone(), Arc::clone(&announced), format!("{root_text}/"));
            let stopping = Arc::clone(&stop);
            launch.on_stderr_line = Some(Arc::new(move |line: &str| {
                if announced_path(line, &root_prefix).as_ref() == Some(&until) {
                    *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(until.clone());
                    stopping.notify_one();
                }
            }));
            launch.stop = Some(stop);
        }
        let run_started = Instant::now();
        let run = run(thunk, hash, launch).await?;
        let announced = announced.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (true, Some(output)) = (run.stopped, announced) {
            let real_root = fs::canonicalize(&root).map_err(sandbox_error("cannot resolve the root"))?;
            let file = self.store_output(&output, &root, &real_root).await?.ok_or_else(|| ExecError::Sandbox {
                context: format!("rustc announced {output}, which is not there"),
                source: io::ErrorKind::NotFound.into(),
            })?;
            let phases = Phases::measured(started, run_started, run.duration.as_millis() as u64);
            return Ok(Ran::Announced(output, file, phases));
        }

        // Everything is stored at once: with a remote store each blob costs a round trip or two.
        let joined = |e: tokio::task::JoinError| ExecError::Sandbox {
            context: "storing the outputs".into(),
            source: io::Error::other(e),
        };
        let captured = {
            let (this, dir) = (self.clone(), sandbox.path().to_owned());
            tokio::spawn(async move { this.store_captured(&dir).await })
        };
        let mut status = run.status();
        let mut outputs = BTreeMap::new();
        if status == Status::Success {
            let real_root = fs::canonicalize(&root).map_err(sandbox_error("cannot resolve the root"))?;
            let mut tasks = tokio::task::JoinSet::new();
            for output in &thunk.outputs {
                let (this, output, root, real_root) = (self.clone(), output.clone(), root.clone(), real_root.clone());
                tasks.spawn(async move {
                    let file = this.store_output(&output, &root, &real_root).await;
                    (output, file)
                });
            }
            let mut missing = BTreeSet::new();
            while let Some(done) = tasks.join_next().await {
                let (output, file) = done.map_err(joined)?;
                match file? {
                    Some(file) => {
                        outputs.insert(output, file);
                    }
                    None => {
                        missing.insert(output);
                    }
                }
            }
            if let Some(path) = missing.pop_first() {
                status = Status::MissingOutput { path };
                outputs.clear();
            }
        }
        let (stdout, stderr) = captured.await.map_err(joined)??;
        let reduction = self.reduction(hash, status, outputs, stdout, stderr, &run);
        // Last: every blob the reduction names is already in the store.
        self.store.put_reduction(&reduction).await?;
        let phases = Phases::measured(started, run_started, reduction.duration_ms);
        Ok(Ran::Reduced(reduction, phases))
    }

    /// Runs `thunk` where its files really are: the sandbox root stands for `/`, so the sandbox path
    /// `home/me/app/src/main.rs` is `/home/me/app/src/main.rs`. This is how the local engine runs rustc:
    /// paths, `env!("CARGO_MANIFEST_DIR")` and rustc's metadata come out exactly as in a plain cargo
    /// build. Blob inputs must already hold their bytes (checked through the hash cache); link inputs are
    /// written in place from the producer's reduction in `producers` (or the store) when they differ.
    /// Outputs keep the mtime of the placeholders they replace. The dep-info rustc writes is checked
    /// against the declared inputs: a run that read anything else is not cached.
    pub async fn execute_in_place(
        &self,
        thunk: &Thunk,
        ready: &std::collections::HashMap<(Hash, SandboxPath), OutputFile>,
        early: Option<EarlyOutput>,
    ) -> Result<InPlace, ExecError> {
        let started = Instant::now();
        thunk.validate()?;
        let hash = thunk.hash();
        let toolchain = self.workdir.toolchain_dir(thunk.toolchain);
        if !toolchain.is_dir() {
            return Err(ExecError::ToolchainUnavailable { hash: thunk.toolchain });
        }
        let real = |path: &SandboxPath| Path::new("/").join(path.as_str());
        let cache = self.workdir.hash_cache();
        // The model keeps the hashes of a package's files in one entry (it groups them under the
        // package's directory); checking them under the same grouping finds them there, where
        // looking them up by directory would hash every source again and write an entry per directory.
        if let Some(package) =
            thunk.env.get("CARGO_MANIFEST_DIR").map(|dir| PathBuf::from(dir.replace(SANDBOX_TOKEN, "")))
            && package.is_absolute()
        {
            cache.group_under(&package);
        }
        for (path, input) in &thunk.inputs {
            let file = real(path);
            match input {
                Input::Blob { hash: expected, size, .. } => {
                    let digest =
                        cache.digest(&file).map_err(sandbox_error(format!("cannot read input {}", file.display())))?;
                    if digest.hash != *expected || digest.size != *size {
                        return Err(ExecError::InputChanged { path: file });
                    }
                }
                Input::Link { thunk: producer, output } => {
                    let produced =
                        match ready.get(&(*producer, output.clone())) {
                            Some(file) => *file,
                            None => {
                                let reduction = self.store.get_reduction(*producer).await?.ok_or_else(|| {
                                    ExecError::LinkNotForced { input: path.clone(), thunk: *producer }
                                })?;
                                if !reduction.succeeded() {
                                    return Err(ExecError::LinkFailed { input: path.clone(), thunk: *producer });
                                }
                                *reduction.outputs.get(output).ok_or_else(|| ExecError::LinkMissingOutput {
                                    input: path.clone(),
                                    thunk: *producer,
                                    output: output.clone(),
                                })?
                            }
                        };
                    let produced = &produced;
                    self.realize_output(*producer, output, produced).await?;
                }
                Input::Symlink { target } => {
                    if fs::read_link(&file).ok().as_deref() != Some(Path::new(target)) {
                        return Err(ExecError::InputChanged { path: file });
                    }
                }
            }
        }
        let mut previous_mtimes = Vec::new();
        for output in &thunk.outputs {
            let file = real(output);
            if let Some(dir) = file.parent() {
                fs::create_dir_all(dir).map_err(sandbox_error(format!("cannot create {}", dir.display())))?;
            }
            previous_mtimes.push(fs::metadata(&file).and_then(|m| m.modified()).ok());
        }
        // rustc writes over the placeholders itself: until it is done and its outputs are hashed, a
        // journal entry can put them back (see `crate::journal`).
        let pending = self
            .workdir
            .journal()
            .begin(thunk.outputs.iter().map(real))
            .map_err(sandbox_error("cannot write the journal entry"))?;
        let pending = Arc::new(Mutex::new(Some(pending)));
        let sandboxes = self.workdir.sandboxes_dir();
        let capture = tempfile::Builder::new()
            .prefix("in-place-")
            .tempdir_in(&sandboxes)
            .map_err(sandbox_error(format!("cannot create a directory in {}", sandboxes.display())))?;
        let program = match thunk.program.0.as_str().strip_prefix("_toolchain/") {
            Some(rest) => toolchain.join(rest),
            None => real(&thunk.program.0),
        };
        let cwd = thunk.cwd.as_ref().map_or_else(|| PathBuf::from("/"), real);
        let mut launch = Launch::new(thunk, "", program, cwd.clone(), capture.path());
        let dropped_remap = MIRROR_REMAP.replace(SANDBOX_TOKEN, "");
        launch.args.retain(|arg| *arg != dropped_remap);
        launch.jobserver = self.jobserver.clone();
        let noting = Arc::clone(&pending);
        launch.on_spawn = Some(Box::new(move |pid| {
            if let Some(pending) = noting.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                let _ = pending.note_process_group(pid);
            }
        }));
        if let Some(early) = early {
            let outputs = thunk.outputs.clone();
            launch.on_stderr_line = Some(Arc::new(move |line: &str| {
                if let Some((output, file)) = announced_metadata(line, &outputs) {
                    early(output, file);
                }
            }));
        }
        let run_started = Instant::now();
        let run = run(thunk, hash, launch).await?;

        let (stdout, stderr) = self.store_captured(capture.path()).await?;
        let mut status = run.status();
        let mut outputs = std::collections::BTreeMap::new();
        let mut undeclared = Vec::new();
        // Only hashed here: the thunks waiting for these outputs read them where they are, so storing
        // them (compressing a large rlib takes a while) is left to `persist`.
        let mut to_store = Vec::new();
        if status == Status::Success {
            for (output, previous) in thunk.outputs.iter().zip(previous_mtimes) {
                let file = real(output);
                let metadata = match fs::symlink_metadata(&file) {
                    Ok(metadata) if metadata.is_file() => metadata,
                    Ok(_) => {
                        return Err(ExecError::UnsafeOutput {
                            path: output.clone(),
                            reason: "it is not a regular file".into(),
                        });
                    }
                    Err(_) => {
                        status = Status::MissingOutput { path: output.clone() };
                        outputs.clear();
                        to_store.clear();
                        break;
                    }
                };
                if output.as_str().ends_with(".d") {
                    undeclared.extend(undeclared_reads(&file, &cwd, thunk));
                }
                let (digest, size) = hash_file(&file).await?;
                if let Some(mtime) = previous {
                    let _ = fs::File::options().write(true).open(&file).and_then(|f| f.set_modified(mtime));
                }
                self.known.note(&file, digest);
                let executable = metadata.permissions().mode() & 0o100 != 0;
                let _ = self.workdir.record_realized(&file, hash, output, digest);
                outputs.insert(output.clone(), OutputFile { hash: digest, size, executable });
                to_store.push((file, digest));
            }
        }
        let reduction = self.reduction(hash, status, outputs, stdout, stderr, &run);
        let pending = pending.lock().unwrap_or_else(|e| e.into_inner()).take();
        if reduction.status == Status::Success
            && let Some(pending) = pending
        {
            // The outputs are whole and hashed: from here on they are rustc's, stored or not (a build
            // that dies before storing them leaves right files that the next build runs again for
            // want of a reduction). A failed compile's entry, dropped, puts the placeholders back.
            pending.commit().map_err(sandbox_error("cannot remove the journal entry"))?;
        }
        let persist: Persist = {
            let (this, reduction, cacheable) = (self.clone(), reduction.clone(), undeclared.is_empty());
            Box::pin(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for (file, expected) in to_store {
                    let this = this.clone();
                    tasks.spawn(async move { this.store_output_in_place(file, expected).await });
                }
                while let Some(stored) = tasks.join_next().await {
                    stored.map_err(|e| ExecError::Sandbox {
                        context: "storing the outputs".into(),
                        source: io::Error::other(e),
                    })??;
                }
                if cacheable {
                    this.store.put_reduction(&reduction).await?;
                }
                Ok(())
            })
        };
        let phases = Phases::measured(started, run_started, reduction.duration_ms);
        Ok(InPlace { reduction, phases, undeclared, persist })
    }

    async fn materialize(
        &self,
        thunk: &Thunk,
        root: &Path,
        given: &BTreeMap<SandboxPath, OutputFile>,
    ) -> Result<(), ExecError> {
        let links = if given.is_empty() { self.resolve_links(thunk).await? } else { given.clone() };
        for (path, input) in &thunk.inputs {
            if let Input::Link { thunk: producer, .. } = input
                && !links.contains_key(path)
            {
                return Err(ExecError::LinkNotForced { input: path.clone(), thunk: *producer });
            }
        }
        self.prefetch(thunk, &links).await?;
        let mut symlinks = Vec::new();
        for (path, input) in &thunk.inputs {
            make_parents(root, path)?;
            let dest = path.under(root);
            match input {
                Input::Blob { hash, size, executable } => {
                    self.place_blob(path, *hash, *size, *executable, &dest).await?
                }
                Input::Link { .. } => {
                    let file = links[path];
                    self.place_blob(path, file.hash, file.size, file.executable, &dest).await?;
                }
                Input::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &dest)
                        .map_err(sandbox_error(format!("cannot create symlink `{path}`")))?;
                    symlinks.push(path);
                }
            }
        }
        // The lexical check of the thunk cannot see symlinks that go through other symlinks: check where
        // each one really leads now that all are in place.
        let real_root = fs::canonicalize(root).map_err(sandbox_error("cannot resolve the root"))?;
        for link in symlinks {
            if let Ok(real) = fs::canonicalize(link.under(root))
                && !real.starts_with(&real_root)
            {
                return Err(ExecError::UnsafeInput {
                    path: link.clone(),
                    reason: format!("the symlink resolves to {}, outside the sandbox", real.display()),
                });
            }
        }
        Ok(())
    }

    /// The file behind every link input, from its producer's reduction. The reductions are read at
    /// once, each once: a crate links to dozens of producers, and a remote store answers each read in
    /// milliseconds.
    async fn resolve_links(&self, thunk: &Thunk) -> Result<BTreeMap<SandboxPath, OutputFile>, ExecError> {
        let producers: BTreeSet<Hash> = thunk
            .inputs
            .values()
            .filter_map(|input| match input {
                Input::Link { thunk, .. } => Some(*thunk),
                _ => None,
            })
            .collect();
        let limit = Arc::new(tokio::sync::Semaphore::new(PREFETCH_JOBS));
        let mut tasks = tokio::task::JoinSet::new();
        for producer in producers {
            let (store, limit) = (self.store.clone(), Arc::clone(&limit));
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (producer, store.get_reduction(producer).await)
            });
        }
        let mut reductions = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (producer, reduction) = joined.map_err(|e| ExecError::Sandbox {
                context: "reading the reductions of linked thunks".into(),
                source: io::Error::other(e),
            })?;
            reductions.insert(producer, reduction?);
        }
        let mut links = BTreeMap::new();
        for (path, input) in &thunk.inputs {
            let Input::Link { thunk: producer, output } = input else { continue };
            let reduction = reductions[producer]
                .as_ref()
                .ok_or_else(|| ExecError::LinkNotForced { input: path.clone(), thunk: *producer })?;
            if !reduction.succeeded() {
                return Err(ExecError::LinkFailed { input: path.clone(), thunk: *producer });
            }
            let file = reduction.outputs.get(output).ok_or_else(|| ExecError::LinkMissingOutput {
                input: path.clone(),
                thunk: *producer,
                output: output.clone(),
            })?;
            links.insert(path.clone(), *file);
        }
        Ok(links)
    }

    /// Fetches every blob input the local cache lacks, [`PREFETCH_JOBS`] at a time (a remote store
    /// answers each request in milliseconds; one at a time, a crate with many inputs would wait
    /// seconds). Materializing then finds them all in the cache.
    async fn prefetch(&self, thunk: &Thunk, links: &BTreeMap<SandboxPath, OutputFile>) -> Result<(), ExecError> {
        let mut wanted = Vec::new();
        for (path, input) in &thunk.inputs {
            match input {
                Input::Blob { hash, size, executable } => wanted.push((path.clone(), *hash, *size, *executable)),
                Input::Link { .. } => {
                    let file = links[path];
                    wanted.push((path.clone(), file.hash, file.size, file.executable));
                }
                Input::Symlink { .. } => {}
            }
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(PREFETCH_JOBS));
        let mut tasks = tokio::task::JoinSet::new();
        for (path, hash, size, executable) in wanted {
            let (this, limit) = (self.clone(), Arc::clone(&limit));
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                this.raw_blob(&path, hash, size, executable).await.map(drop)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined
                .map_err(|e| ExecError::Sandbox { context: "fetching inputs".into(), source: io::Error::other(e) })??;
        }
        Ok(())
    }

    async fn place_blob(
        &self,
        path: &SandboxPath,
        hash: Hash,
        size: u64,
        executable: bool,
        dest: &Path,
    ) -> Result<(), ExecError> {
        let raw = self.raw_blob(path, hash, size, executable).await?;
        if fs::hard_link(&raw, dest).is_err() {
            fs::copy(&raw, dest).map_err(sandbox_error(format!("cannot copy input `{path}`")))?;
        }
        Ok(())
    }

    /// The decompressed blob in the machine-local cache, fetched and verified on first use.
    async fn raw_blob(
        &self,
        input: &SandboxPath,
        hash: Hash,
        size: u64,
        executable: bool,
    ) -> Result<PathBuf, ExecError> {
        let name = if executable { format!("{hash}.x") } else { hash.to_hex() };
        let raw = self.workdir.raw_dir().join(name);
        let intact =
            |m: fs::Metadata| m.len() == size && m.mtime() == RAW_MTIME.as_secs() as i64 && m.mtime_nsec() == 0;
        if fs::metadata(&raw).is_ok_and(intact) {
            return Ok(raw);
        }
        let bytes = self.store.get_blob(hash).await?;
        if bytes.len() as u64 != size {
            return Err(ExecError::SizeMismatch {
                input: input.clone(),
                hash,
                expected: size,
                actual: bytes.len() as u64,
            });
        }
        let write = || -> io::Result<()> {
            let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(self.workdir.raw_dir())?;
            temp.write_all(&bytes)?;
            temp.as_file().set_modified(SystemTime::UNIX_EPOCH + RAW_MTIME)?;
            let mode = if executable { 0o555 } else { 0o444 };
            temp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
            temp.persist(&raw).map_err(|e| e.error)?;
            Ok(())
        };
        write().map_err(sandbox_error(format!("cannot cache blob {hash}")))?;
        Ok(raw)
    }

    /// Makes the real path of `output` (of `thunk`) hold its bytes, writing them from the store only
    /// when the file there is not already right, and records which output the file now holds.
    pub async fn realize_output(&self, thunk: Hash, output: &SandboxPath, file: &OutputFile) -> Result<(), ExecError> {
        let path = Path::new("/").join(output.as_str());
        if self.known.holds(&path, file.hash) {
            return Ok(());
        }
        if self.workdir.hash_cache().digest(&path).is_ok_and(|digest| digest.hash == file.hash) {
            self.known.note(&path, file.hash);
            return Ok(());
        }
        let pending =
            self.workdir.journal().begin([path.clone()]).map_err(sandbox_error("cannot write the journal entry"))?;
        let written = if file.size >= RAW_REALIZE_MIN {
            // Decompressed and verified once into the machine's cache, then copied in the kernel: a
            // release binary of tens of MB is realized again on every CI run from an empty target dir.
            let raw = self.raw_blob(output, file.hash, file.size, file.executable).await?;
            crate::realize::realize_copy(&path, &raw, file.executable)
        } else {
            let bytes = self.store.get_blob(file.hash).await?;
            crate::realize::realize(&path, &bytes, file.executable)
        };
        written.map_err(sandbox_error(format!("cannot write {}", path.display())))?;
        pending.commit().map_err(sandbox_error("cannot remove the journal entry"))?;
        let _ = self.workdir.record_realized(&path, thunk, output, file.hash);
        self.known.note(&path, file.hash);
        Ok(())
    }

    /// Whether `path` holds bytes `hash` as this executor last wrote or checked it; `false` when it
    /// does not know (the caller hashes the file).
    pub fn knows(&self, path: &Path, hash: Hash) -> bool {
        self.known.holds(path, hash)
    }

    /// Stores what the program wrote to stdout and stderr (captured in `dir`).
    async fn store_captured(&self, dir: &Path) -> Result<(BlobRef, BlobRef), ExecError> {
        Ok((self.store_file(&dir.join("stdout")).await?, self.store_file(&dir.join("stderr")).await?))
    }

    /// The reduction of a run, signed by this executor's engine.
    fn reduction(
        &self,
        hash: Hash,
        status: Status,
        outputs: std::collections::BTreeMap<SandboxPath, OutputFile>,
        stdout: BlobRef,
        stderr: BlobRef,
        run: &RunResult,
    ) -> Reduction {
        let mut reduction = Reduction::new(hash, status, stdout, stderr);
        reduction.outputs = outputs;
        reduction.duration_ms = run.duration.as_millis() as u64;
        reduction.peak_memory_kib = run.peak_memory_kib;
        reduction.engine = self.engine.clone();
        reduction
    }

    async fn store_file(&self, path: &Path) -> Result<BlobRef, ExecError> {
        let owned = path.to_owned();
        let bytes = tokio::task::spawn_blocking(move || fs::read(owned))
            .await
            .map_err(io::Error::other)
            .and_then(|read| read)
            .map_err(sandbox_error(format!("cannot read {}", path.display())))?;
        let (hash, size) = self.store.put_blob_vec(bytes).await?;
        Ok(BlobRef { hash, size })
    }

    /// Stores an output a run in place wrote and hashed as `expected`, unless the store has it.
    async fn store_output_in_place(&self, file: PathBuf, expected: Hash) -> Result<(), ExecError> {
        let key = crate::store::ObjectKey::Blob(expected);
        if self.store.complete(key).await? {
            return Ok(());
        }
        let read_and_compress = {
            let file = file.clone();
            move || {
                let bytes = fs::read(&file)?;
                Ok::<_, io::Error>((Hash::of(&bytes), crate::store::compress(&bytes)?))
            }
        };
        let compressed = match &self.persist_in_background {
            Some(hurry) => {
                let mut hurry = hurry.clone();
                let hurried = async move {
                    if hurry.wait_for(|hurried| *hurried).await.is_err() {
                        // A forcer gone without hurrying has no one waiting: stay idle.
                        std::future::pending::<()>().await;
                    }
                };
                crate::background::run(read_and_compress, hurried).await
            }
            None => {
                tokio::task::spawn_blocking(read_and_compress).await.map_err(io::Error::other).and_then(|done| done)
            }
        };
        let (hash, compressed) = compressed.map_err(sandbox_error(format!("cannot store {}", file.display())))?;
        if hash != expected {
            return Err(ExecError::Sandbox {
                context: format!("{} changed while it was being stored", file.display()),
                source: io::ErrorKind::InvalidData.into(),
            });
        }
        self.store.put_object(key, compressed).await?;
        Ok(())
    }

    /// Stores one declared output; `None` when the program did not write it.
    async fn store_output(
        &self,
        output: &SandboxPath,
        root: &Path,
        real_root: &Path,
    ) -> Result<Option<OutputFile>, ExecError> {
        let path = output.under(root);
        let unsafe_output = |reason: String| ExecError::UnsafeOutput { path: output.clone(), reason };
        let metadata = match fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Ok(None);
            }
            Err(e) => {
                return Err(sandbox_error(format!("cannot inspect output `{output}`"))(e));
            }
        };
        if metadata.file_type().is_symlink() {
            return Err(unsafe_output("it is a symlink, not a file".into()));
        }
        if !metadata.is_file() {
            return Err(unsafe_output("it is not a regular file".into()));
        }
        let real = fs::canonicalize(&path).map_err(sandbox_error(format!("cannot resolve output `{output}`")))?;
        if !real.starts_with(real_root) {
            return Err(unsafe_output(format!(
                "it resolves to {} through a symlink, outside the sandbox",
                real.display()
            )));
        }
        let stored = self.store_file(&real).await?;
        let executable = metadata.permissions().mode() & 0o100 != 0;
        Ok(Some(OutputFile { hash: stored.hash, size: stored.size, executable }))
    }
}

/// The hash and size of a file, read on a blocking thread.
async fn hash_file(path: &Path) -> Result<(Hash, u64), ExecError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || Hash::of_file(&owned))
        .await
        .map_err(io::Error::other)
        .and_then(|hashed| hashed)
        .map_err(sandbox_error(format!("cannot read {}", path.display())))
}

/// The files a rustc dep-info lists as read that are not inputs of `thunk` (paths resolved against the
/// run's `cwd`). rustc lists every source file and every `include_*!` file it read.
fn undeclared_reads(dep_info: &Path, cwd: &Path, thunk: &Thunk) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string(dep_info) else {
        return vec![dep_info.to_owned()];
    };
    let declared: std::collections::HashSet<PathBuf> =
        thunk.inputs.keys().map(|path| Path::new("/").join(path.as_str())).collect();
    let mut undeclared = Vec::new();
    for line in text.lines() {
        // `file:` lines with nothing after the colon name each dependency once.
        let Some(file) = line.strip_suffix(':') else { continue };
        if line.starts_with('#') || file.contains(": ") {
            continue;
        }
        let file = file.replace("\\ ", " ");
        let path = crate::path::lexical(&cwd.join(&file));
        if !declared.contains(&path) {
            undeclared.push(path);
        }
    }
    undeclared
}

/// rustc's `{"$message_type":"artifact","artifact":PATH,"emit":"metadata"}` for a declared output, with
/// the bytes the file holds now (rustc has finished writing it when it says so).
fn announced_metadata(
    line: &str,
    outputs: &std::collections::BTreeSet<SandboxPath>,
) -> Option<(SandboxPath, OutputFile)> {
    if !line.contains("\"emit\":\"metadata\"") {
        return None;
    }
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    let path = message.get("artifact")?.as_str()?;
    let output = SandboxPath::new(path.strip_prefix('/')?).ok()?;
    if !outputs.contains(&output) {
        return None;
    }
    let (hash, size) = Hash::of_file(Path::new(path)).ok()?;
    Some((output, OutputFile { hash, size, executable: false }))
}

/// Creates the directories above `path`, refusing to go through anything that is not a real directory.
fn make_parents(root: &Path, path: &SandboxPath) -> Result<(), ExecError> {
    for ancestor in path.ancestors() {
        let dir = root.join(ancestor);
        match fs::symlink_metadata(&dir) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(ExecError::UnsafeInput {
                    path: path.clone(),
                    reason: format!("`{ancestor}` is a file or symlink, not a directory"),
                });
            }
            Err(_) => fs::create_dir(&dir).map_err(sandbox_error(format!("cannot create directory `{ancestor}`")))?,
        }
    }
    Ok(())
}

struct RunResult {
    exit_code: i32,
    duration: Duration,
    peak_memory_kib: u64,
    /// Stopped on purpose (a metadata run), not finished.
    stopped: bool,
}

impl RunResult {
    /// Success or a compile error; a missing output is found later.
    fn status(&self) -> Status {
        match self.exit_code {
            0 => Status::Success,
            code => Status::Exit { code },
        }
    }
}

/// One process to start: everything already expanded to real paths.
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    /// Where `stdout` and `stderr` are written.
    capture_dir: PathBuf,
    /// Called with each line of stderr as the program writes it (rustc's artifact notifications).
    on_stderr_line: Option<StderrWatcher>,
    /// The jobserver the program may take extra threads from (not part of the thunk: it only paces).
    jobserver: Option<jobserver::Client>,
    /// Called with the program's process group once it runs.
    on_spawn: Option<Box<dyn FnOnce(libc::pid_t) + Send>>,
    /// Stops the program when notified (a metadata run, once the metadata is written).
    stop: Option<Arc<tokio::sync::Notify>>,
}

/// What a sandboxed run is given beyond its thunk (see [`Executor::execute_given`]).
#[derive(Debug, Clone, Default)]
pub struct Given {
    /// The file behind each link input, by input path; empty: read from the producers' reductions.
    pub links: BTreeMap<SandboxPath, OutputFile>,
    /// Stop once rustc announces this output (a metadata run): it is stored, and no reduction is.
    pub until: Option<SandboxPath>,
}

/// How a sandboxed run ended.
#[derive(Debug)]
pub enum Ran {
    /// It ran to the end: its reduction, stored.
    Reduced(Reduction, Phases),
    /// A metadata run stopped once its output was announced: the output, stored.
    Announced(SandboxPath, OutputFile, Phases),
}

/// The output a rustc artifact notification names, for a run whose sandbox root is `root_prefix`
/// (with its trailing slash).
fn announced_path(line: &str, root_prefix: &str) -> Option<SandboxPath> {
    if !line.contains("\"artifact\"") {
        return None;
    }
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    let path = message.get("artifact")?.as_str()?;
    SandboxPath::new(path.strip_prefix(root_prefix)?).ok()
}

/// A callback for each line a program writes on stderr, while it runs.
pub type StderrWatcher = Arc<dyn Fn(&str) + Send + Sync>;

/// An output that became ready before its thunk finished (rustc's rmeta, announced on stderr), so that
/// thunks needing only it can start: cargo's pipelining, for the forcer.
pub type EarlyOutput = Arc<dyn Fn(SandboxPath, OutputFile) + Send + Sync>;

impl Launch {
    /// The thunk's process with `@SANDBOX@` standing for `root` (the empty string in place).
    fn new(thunk: &Thunk, root_text: &str, program: PathBuf, cwd: PathBuf, capture_dir: &Path) -> Launch {
        let expand = |text: &String| text.replace(SANDBOX_TOKEN, root_text);
        Launch {
            program,
            args: thunk.args.iter().map(expand).collect(),
            env: thunk.env.iter().map(|(name, value)| (name.clone(), expand(value))).collect(),
            cwd,
            capture_dir: capture_dir.to_owned(),
            on_stderr_line: None,
            jobserver: None,
            on_spawn: None,
            stop: None,
        }
    }
}

async fn run(thunk: &Thunk, hash: Hash, launch: Launch) -> Result<RunResult, ExecError> {
    let stdout = fs::File::create(launch.capture_dir.join("stdout")).map_err(sandbox_error("cannot create stdout"))?;
    let mut stderr =
        fs::File::create(launch.capture_dir.join("stderr")).map_err(sandbox_error("cannot create stderr"))?;
    let watcher = launch.on_stderr_line.clone();
    let stderr_stdio = match &watcher {
        Some(_) => Stdio::piped(),
        None => Stdio::from(stderr.try_clone().map_err(sandbox_error("cannot open stderr"))?),
    };
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env)
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr_stdio)
        .process_group(0);
    if let Some(client) = &launch.jobserver {
        client.configure(&mut command);
    }
    die_with_this_process(&mut command);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|source| ExecError::Spawn { program: thunk.program.0.clone(), source })?;
    // With a watcher, a thread copies stderr to its file line by line and shows each line to the
    // watcher; it ends when the process group is gone and the pipe closes.
    let copier = match (watcher, child.stderr.take()) {
        (Some(watcher), Some(pipe)) => Some(std::thread::spawn(move || {
            use std::io::BufRead;
            let mut reader = io::BufReader::new(pipe);
            let mut line = Vec::new();
            while let Ok(n) = reader.read_until(b'\n', &mut line) {
                if n == 0 {
                    break;
                }
                let _ = stderr.write_all(&line);
                if let Ok(text) = std::str::from_utf8(&line) {
                    watcher(text);
                }
                line.clear();
            }
        })),
        _ => None,
    };
    let group = ProcessGroup::started(child.id() as libc::pid_t);
    if let Some(on_spawn) = launch.on_spawn {
        on_spawn(group.pid);
    }
    let waiter = {
        let group = group.clone_handle();
        tokio::task::spawn_blocking(move || group.wait())
    };
    let timeout = Duration::from_millis(thunk.timeout_ms);
    let stop = launch.stop.clone();
    let stopped = async {
        match &stop {
            Some(stop) => stop.notified().await,
            None => std::future::pending().await,
        }
    };
    let mut waiter = waiter;
    let mut was_stopped = false;
    let joined = tokio::select! {
        joined = tokio::time::timeout(timeout, &mut waiter) => match joined {
            Ok(joined) => joined,
            Err(_elapsed) => {
                group.kill();
                return Err(ExecError::Timeout { thunk: hash, timeout_ms: thunk.timeout_ms });
            }
        },
        () = stopped => {
            // Killed on purpose, then reaped by the waiter as usual.
            group.kill();
            was_stopped = true;
            (&mut waiter).await
        }
    };
    let waited = joined
        .map_err(|e| ExecError::Sandbox { context: "waiting for the program".into(), source: io::Error::other(e) })?;
    let duration = started.elapsed();
    if let Some(copier) = copier {
        let _ = tokio::task::spawn_blocking(move || copier.join()).await;
    }
    let (status, rusage) = waited.map_err(sandbox_error("waiting for the program"))?;
    let peak_memory_kib = u64::try_from(rusage.ru_maxrss).unwrap_or(0);
    if was_stopped {
        return Ok(RunResult { exit_code: 0, duration, peak_memory_kib, stopped: true });
    }
    if libc::WIFSIGNALED(status) {
        return Err(ExecError::Killed { thunk: hash, signal: libc::WTERMSIG(status) });
    }
    Ok(RunResult { exit_code: libc::WEXITSTATUS(status), duration, peak_memory_kib, stopped: false })
}

/// A child that leads its own process group. Dropping the handle the executor holds kills the group, so
/// a cancelled or timed-out run leaves no process behind.
struct ProcessGroup {
    pid: libc::pid_t,
    /// Set once the child is reaped, under the lock, so no kill can reach a recycled process group id.
    reaped: Arc<Mutex<bool>>,
}

struct WaitHandle {
    pid: libc::pid_t,
    reaped: Arc<Mutex<bool>>,
}

/// Makes the program die when the thread that starts it does (the whole process, for the threads of
/// a tokio runtime, which live as long as it). The program leads a process group of its own, which a
/// terminal's Ctrl-C does not reach, and nothing of a killed process (`kill -9`) runs: without this, a
/// rustc running in place would go on writing into a target dir after its forcer died.
fn die_with_this_process(command: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before the request took effect.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
}

/// The process groups of programs running now, so that an interrupted process can stop them all.
static RUNNING: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

/// Kills every program this process is running (a Ctrl-C stops the build, not only this process:
/// each program leads a process group of its own, which a terminal's signal does not reach). Returns
/// how many there were.
pub fn kill_running_programs() -> usize {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    for pid in running.iter() {
        // SAFETY: kill(2) has no memory-safety preconditions; a group leaves the list before it is
        // reaped, so the id is still ours.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    running.len()
}

impl ProcessGroup {
    fn started(pid: libc::pid_t) -> ProcessGroup {
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        ProcessGroup { pid, reaped: Arc::new(Mutex::new(false)) }
    }

    fn clone_handle(&self) -> WaitHandle {
        WaitHandle { pid: self.pid, reaped: Arc::clone(&self.reaped) }
    }

    fn kill(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if !*reaped {
            // SAFETY: kill(2) has no memory-safety preconditions; the group id is still ours (see `reaped`).
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

impl WaitHandle {
    /// Waits for the child to exit, kills whatever else is left in its group, then reaps it.
    /// The child is reaped only after the kill, so its pid — the group id — cannot be reused before.
    fn wait(self) -> io::Result<(libc::c_int, libc::rusage)> {
        loop {
            // SAFETY: an all-zero siginfo_t is a valid value for waitid to overwrite.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is a valid, writable siginfo_t.
            let result =
                unsafe { libc::waitid(libc::P_PID, self.pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if result == 0 {
                break;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        let mut reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as above; the child is a zombie, so its pid still names our group.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).retain(|pid| *pid != self.pid);
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `status` and `rusage` are valid and writable.
            let result = unsafe { libc::wait4(self.pid, &mut status, 0, &mut rusage) };
            if result == self.pid {
                *reaped = true;
                return Ok((status, rusage));
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}
