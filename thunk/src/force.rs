//! The forcer: runs a thunk after everything it links to, at most N at a time, each thunk once.
//!
//! Forcing a thunk forces its producers first (concurrently), then uses the cached reduction if the
//! store has one, and otherwise runs the thunk: on the remote engine when there is one (N at a time,
//! retrying infrastructure failures with backoff, within a cap per thunk and one per build, and
//! launching a second copy of a thunk that runs far past its expected time: the first result wins),
//! and on the local engine, in place (see [`Executor::execute_in_place`]), when there is none, when
//! the remote engine cannot run that thunk, or when it has failed too often to be worth asking. Several processes may force the same thunks
//! at once (cargo runs many wrappers, each forcing a build script's dependencies): a lock file per
//! thunk makes one of them run it while the others wait and then take its reduction.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use std::collections::BTreeMap;

use tokio::sync::{OnceCell, watch};

use crate::exec::{EarlyOutput, ExecError, Executor, InPlace, Phases};
use crate::hash::Hash;
use crate::path::SandboxPath;
use crate::reduction::{OutputFile, Reduction};
use crate::remote::{RemoteEngine, RemoteError, RemoteRun};
use crate::store::{Store, StoreError};
use crate::thunk::Input;
use crate::workdir::Workdir;

/// A thunk forced: its reduction, and how it was obtained.
#[derive(Debug, Clone)]
pub struct Forced {
    /// The outcome (possibly a failed compile).
    pub reduction: Arc<Reduction>,
    /// Whether it came from the store instead of running.
    pub cached: bool,
    /// Files it read without declaring them (its reduction was not cached).
    pub undeclared: Vec<PathBuf>,
    /// Why the remote engine did not run it, when it fell back to the local engine.
    pub fallback: Option<String>,
}

/// Why a thunk could not be forced.
#[derive(Debug, thiserror::Error)]
pub enum ForceError {
    /// Running it failed (not a compile error: those are failed reductions).
    #[error("thunk {thunk}: {source}")]
    Exec {
        /// The thunk.
        thunk: Hash,
        /// What went wrong.
        source: ExecError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A library's full compile wrote other bytes than its metadata run announced, after thunks were
    /// built against those: the compile is not reproducible, and the build cannot be trusted.
    #[error(
        "thunk {thunk}: its compile wrote {output} with other bytes than the metadata run announced \
         (the crate does not compile reproducibly); build on the local engine, which needs no metadata runs"
    )]
    UnreproducibleOutput {
        /// The thunk.
        thunk: Hash,
        /// The output.
        output: SandboxPath,
    },
    /// A thunk it links to failed, so it was not run.
    #[error("thunk {thunk} was not run: its dependency {dependency} failed")]
    DependencyFailed {
        /// The thunk.
        thunk: Hash,
        /// The first failed producer.
        dependency: Hash,
    },
}

type Outcome = Result<Forced, Arc<ForceError>>;

/// A thunk's outputs and reduction being stored after it ran (see [`Forcer::with_deferred_storing`]).
type Storing = tokio::task::JoinHandle<Result<(), ExecError>>;

/// Thunks of this process whose storing has not ended, whichever forcer ran them.
static STORING_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts one storing task in [`STORING_IN_FLIGHT`] until dropped (done or cancelled).
struct StoringInFlight;

impl StoringInFlight {
    fn start() -> StoringInFlight {
        STORING_IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        StoringInFlight
    }
}

impl Drop for StoringInFlight {
    fn drop(&mut self) {
        STORING_IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Waits, up to `limit`, until every thunk this process ran is stored, also when the forcer that ran
/// it is gone: an interrupted build (Ctrl-C drops it) keeps what it finished, and the rerun takes it
/// from the store. `false` when the limit passed first.
pub async fn finish_storing(limit: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while STORING_IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    true
}

/// One thunk run by this forcer, for the timeline of `--timings`.
#[derive(Debug, Clone)]
pub struct Run {
    /// The thunk.
    pub thunk: Hash,
    /// Where it ran: `local 1`, `lambda 3f2a9c01`.
    pub worker: String,
    /// When it started and ended, from the forcer's creation.
    pub start: std::time::Duration,
    /// See `start`.
    pub end: std::time::Duration,
    /// Where the time went.
    pub phases: Phases,
    /// When rustc announced the rmeta, in milliseconds from the program's start: what a consumer that
    /// needs only the rmeta waited. Known for a library run in place.
    pub metadata_ms: Option<u64>,
}

/// How far forcing has got, for a progress bar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Thunks finished (run, taken from the store, or failed).
    pub done: usize,
    /// Of those, taken from the store.
    pub cached: usize,
    /// Thunks running now, on any engine.
    pub running: usize,
    /// Thunks asked for that are waiting for their producers or a slot.
    pub queued: usize,
}

/// The counters behind [`Progress`].
#[derive(Default)]
struct Counters {
    started: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
    cached: std::sync::atomic::AtomicUsize,
    running: std::sync::atomic::AtomicUsize,
}

/// Counts a running thunk until dropped.
struct Running<'a>(&'a Counters);

impl<'a> Running<'a> {
    fn start(counters: &'a Counters) -> Running<'a> {
        counters.running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Running(counters)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A thunk as the scheduler sees it.
struct Shape {
    /// The thunks it links to.
    links: Vec<Hash>,
    /// How long it is expected to run, in milliseconds, for ordering: its unit's last duration, else
    /// [`estimated_ms`].
    expected_ms: u64,
    /// How long it may run before it is late, in milliseconds: its unit's last duration, else
    /// [`patient_estimate_ms`].
    patient_ms: u64,
}

/// Forces thunks with a bounded number of local slots.
#[derive(Clone)]
pub struct Forcer {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    executor: Executor,
    workdir: Workdir,
    /// Handed out by the critical path above each thunk, when known.
    slots: crate::slots::Slots,
    /// The jobserver rustc takes its extra threads from, and whether the implicit token is free.
    jobserver: Option<jobserver::Client>,
    implicit_token: std::sync::atomic::AtomicBool,
    /// Tokens of finished thunks, kept for [`TOKEN_KEPT_FOR`] for the next thunk (see [`Token`]).
    kept_tokens: Mutex<Vec<jobserver::Acquired>>,
    /// What [`Forcer::prioritize`] read of each thunk, kept for its next call.
    shapes: Mutex<HashMap<Hash, Arc<Shape>>>,
    cells: Mutex<HashMap<Hash, Arc<OnceCell<Outcome>>>>,
    /// Outputs announced before their thunk finished, by thunk.
    early: Mutex<HashMap<Hash, watch::Sender<BTreeMap<SandboxPath, OutputFile>>>>,
    remote: Option<Remote>,
    /// When this forcer was made: the origin of [`Run`]'s times.
    origin: std::time::Instant,
    runs: Mutex<Vec<Run>>,
    counters: Counters,
    /// Which local lanes (the timeline's rows) are busy.
    lanes: crate::slots::Lanes,
    /// How long units took before: what a straggler is late against.
    history: crate::history::History,
    /// Copies of stragglers launched.
    relaunched: std::sync::atomic::AtomicUsize,
    stragglers: Stragglers,
    /// What this forcer undid of an interrupted one's writes when it started.
    recovered: crate::journal::Recovered,
    /// Whether remote library compiles get a metadata run beside them, and how many answered.
    metadata_runs: bool,
    metadata_runs_done: std::sync::atomic::AtomicUsize,
    /// Outputs announced early whose blobs are in the store (those of metadata runs).
    stored_early: Mutex<std::collections::HashSet<(Hash, SandboxPath)>>,
    /// Whether a thunk run in place is done once its outputs are hashed, its storing left to go on
    /// beside the next thunks; and that storing, for [`Forcer::settle`].
    deferred_storing: bool,
    storing: Mutex<Vec<(Hash, Storing)>>,
    /// Turned `true` by [`Forcer::settle`]: the build waits for the storing from then on, so it no
    /// longer runs at idle priority only.
    hurry: tokio::sync::watch::Sender<bool>,
}

/// The remote engine, its slots, and how its failures have gone.
struct Remote {
    engine: Arc<dyn RemoteEngine>,
    slots: crate::slots::Slots,
    /// Thunks in a row that it failed to run even after retries; at [`GIVE_UP_AFTER`] it is no longer
    /// asked.
    failures_in_a_row: std::sync::atomic::AtomicUsize,
    /// Invocations sent, and of those, retries and straggler copies: the build's budget.
    sent: std::sync::atomic::AtomicUsize,
    extra: std::sync::atomic::AtomicUsize,
}

impl Remote {
    /// Takes one retry or straggler copy from the build's budget; `false` when it is spent. A build
    /// whose engine fails this often is better run on this machine than retried without end.
    fn take_extra(&self) -> bool {
        use std::sync::atomic::Ordering;
        let allowed = EXTRA_BASE + self.sent.load(Ordering::SeqCst) / EXTRA_PER;
        self.extra.fetch_add(1, Ordering::SeqCst) < allowed
    }

    fn budget_spent(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.extra.load(Ordering::SeqCst) >= EXTRA_BASE + self.sent.load(Ordering::SeqCst) / EXTRA_PER
    }
}

/// Attempts per thunk on the remote engine, the first included.
const REMOTE_ATTEMPTS: u32 = 4;
/// The wait before the first retry; each later one waits twice as long (with jitter).
const REMOTE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(250);
/// Thunks in a row the remote engine may fail on before the rest of the build runs locally.
const GIVE_UP_AFTER: usize = 3;
/// The build's budget of retries and straggler copies: this many, plus one per [`EXTRA_PER`]
/// invocations sent. A 10% failure rate costs about one in ten; a dead engine spends it quickly.
const EXTRA_BASE: usize = 8;
const EXTRA_PER: usize = 3;
/// When a remote run is a straggler, launched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stragglers {
    /// A run is a straggler once it has taken `factor` times its expected time plus `slack`.
    pub factor: u32,
    /// Covers what the expected time does not: a cold start's unpacking of the toolchain, a slow
    /// network.
    pub slack: std::time::Duration,
    /// Copies of one thunk running at once, the first included; they may exceed the engine's slots.
    pub max_copies: usize,
}

impl Default for Stragglers {
    fn default() -> Stragglers {
        Stragglers { factor: 3, slack: std::time::Duration::from_secs(15), max_copies: 3 }
    }
}
/// How long a unit never seen before is expected to run, in milliseconds, for ordering it among the
/// others: from the bytes of Rust source it compiles and the number of thunks it links to (its
/// dependency closure). Only the ranking matters here, and neither figure ranks well alone: a crate
/// of generated tables is large and quick, while a crate high in the graph is small and slow, since
/// it instantiates the generics of everything below it. Fitted by least squares in log space to the
/// release builds of ripgrep and mdbook: `duration ≈ 25 ms · √(1 + KiB) · (1 + links)^0.45`. Its rank
/// correlation with the measured durations is 0.78 on mdbook and 0.83 on ripgrep, against 0.72 and
/// 0.77 for the source size alone, and it starts mdbook's top-level crates (small, slow, and the
/// critical path) early enough that the build does not end on them alone.
fn estimated_ms(source_bytes: u64, links: usize) -> u64 {
    let source_kib = source_bytes as f64 / 1024.0;
    (25.0 * (1.0 + source_kib).sqrt() * (1.0 + links as f64).powf(0.45)) as u64
}

/// How long a unit never seen before may run before it is late, in milliseconds: a process start
/// plus about a second per 64 KiB of Rust source (a debug build's pace on one core). Generous on
/// purpose, unlike [`estimated_ms`]: a copy launched too early costs an invocation.
fn patient_estimate_ms(source_bytes: u64) -> u64 {
    1_000 + source_bytes / 64
}

impl Forcer {
    /// A forcer running at most `slots` thunks at a time on this machine.
    pub fn new(store: Store, workdir: Workdir, slots: usize) -> Forcer {
        // As cargo does: N - 1 tokens plus the implicit one this process holds. Every running thunk but
        // the one on the implicit token holds a token, and rustc takes extra codegen threads from the
        // tokens left, so a thunk running alone (the tail of a build) uses every core and N running
        // thunks use N threads.
        let jobserver = jobserver::Client::new(slots.max(1) - 1).ok();
        Forcer::assemble(store, workdir, slots, jobserver.clone(), jobserver)
    }

    /// A forcer for one process among the many cargo runs (a CI-mode wrapper): one thunk at a time, on
    /// the token cargo gave this process, with rustc's extra threads taken from cargo's `jobserver`.
    pub fn with_jobserver(store: Store, workdir: Workdir, jobserver: Option<jobserver::Client>) -> Forcer {
        Forcer::assemble(store, workdir, 1, None, jobserver)
    }

    /// A forcer whose running thunks hold tokens of `own` (beyond the implicit one), and whose rustc
    /// takes its extra threads from `for_rustc`.
    fn assemble(
        store: Store,
        workdir: Workdir,
        slots: usize,
        own: Option<jobserver::Client>,
        for_rustc: Option<jobserver::Client>,
    ) -> Forcer {
        // Before anything is forced or written: undo what an interrupted forcer left half done.
        let recovered = workdir.journal().recover().unwrap_or_default();
        let mut executor = Executor::new(store.clone(), workdir.clone(), "local");
        if let Some(client) = for_rustc {
            executor = executor.with_jobserver(client);
        }
        Forcer {
            inner: Arc::new(Inner {
                store,
                executor,
                slots: crate::slots::Slots::new(slots),
                jobserver: own,
                implicit_token: std::sync::atomic::AtomicBool::new(true),
                kept_tokens: Mutex::new(Vec::new()),
                shapes: Mutex::new(HashMap::new()),
                cells: Mutex::new(HashMap::new()),
                early: Mutex::new(HashMap::new()),
                remote: None,
                origin: std::time::Instant::now(),
                runs: Mutex::new(Vec::new()),
                counters: Counters::default(),
                lanes: crate::slots::Lanes::default(),
                history: crate::history::History::open(&workdir.history_path()),
                relaunched: std::sync::atomic::AtomicUsize::new(0),
                stragglers: Stragglers::default(),
                recovered,
                metadata_runs: false,
                metadata_runs_done: std::sync::atomic::AtomicUsize::new(0),
                stored_early: Mutex::new(std::collections::HashSet::new()),
                deferred_storing: false,
                storing: Mutex::new(Vec::new()),
                hurry: tokio::sync::watch::Sender::new(false),
                workdir,
            }),
        }
    }

    /// The same forcer, running thunks on `engine` with `slots` in flight; the local slots remain for
    /// thunks that fall back.
    pub fn with_remote(self, engine: Arc<dyn RemoteEngine>, slots: usize) -> Forcer {
        let mut inner = Arc::into_inner(self.inner).expect("a remote engine is added before forcing starts");
        inner.remote = Some(Remote {
            engine,
            slots: crate::slots::Slots::new(slots),
            failures_in_a_row: std::sync::atomic::AtomicUsize::new(0),
            sent: std::sync::atomic::AtomicUsize::new(0),
            extra: std::sync::atomic::AtomicUsize::new(0),
        });
        Forcer { inner: Arc::new(inner) }
    }

    /// The same forcer, running a metadata run beside each library compile on the remote engine, so
    /// that the thunks needing only its rmeta start as soon as rustc has written it.
    pub fn with_metadata_runs(self) -> Forcer {
        let mut inner = Arc::into_inner(self.inner).expect("metadata runs are set before forcing starts");
        inner.metadata_runs = true;
        Forcer { inner: Arc::new(inner) }
    }

    /// The same forcer, treating a thunk run in place as done once its outputs are hashed: the thunks
    /// waiting for it start while its outputs and reduction are stored, and [`Forcer::settle`] waits
    /// for that storing. Until then its reduction is known only to this forcer, and another process
    /// that wants it waits on the thunk's lock, which is held until its reduction is stored. Only for a
    /// forcer without a remote engine: a remote run needs its inputs in the store.
    pub fn with_deferred_storing(self) -> Forcer {
        let mut inner = Arc::into_inner(self.inner).expect("deferred storing is set before forcing starts");
        assert!(inner.remote.is_none(), "a remote engine reads its inputs from the store");
        inner.deferred_storing = true;
        inner.executor = inner.executor.with_persist_in_background(inner.hurry.subscribe());
        Forcer { inner: Arc::new(inner) }
    }

    /// Waits until everything run so far is stored; the first failure to store, if any. Without
    /// [`Forcer::with_deferred_storing`], there is nothing to wait for. What is left of the storing
    /// no longer waits for idle cores.
    pub async fn settle(&self) -> Result<(), ForceError> {
        self.inner.hurry.send_replace(true);
        let storing = std::mem::take(&mut *self.inner.storing.lock().unwrap_or_else(|e| e.into_inner()));
        let mut first_error = None;
        for (thunk, task) in storing {
            let stored = task.await.unwrap_or_else(|e| {
                Err(ExecError::Sandbox { context: "storing the outputs".into(), source: std::io::Error::other(e) })
            });
            if let Err(source) = stored {
                first_error.get_or_insert(ForceError::Exec { thunk, source });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether `path` holds bytes `hash` as this forcer's local runs left it; `false` when it does not
    /// know.
    pub fn knows(&self, path: &std::path::Path, hash: Hash) -> bool {
        self.inner.executor.knows(path, hash)
    }

    /// Metadata runs that announced their rmeta.
    pub fn metadata_runs(&self) -> usize {
        self.inner.metadata_runs_done.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The same forcer, relaunching stragglers by `policy` instead of the default one.
    pub fn with_stragglers(self, policy: Stragglers) -> Forcer {
        let mut inner = Arc::into_inner(self.inner).expect("the policy is set before forcing starts");
        inner.stragglers = policy;
        Forcer { inner: Arc::new(inner) }
    }

    /// Schedules the thunks below `roots` by the critical path: a thunk's priority is the expected time
    /// of the longest chain from it up to a root, so the thunk that most delays the end goes first. A
    /// thunk's expected time is its unit's last duration (see [`crate::history`]), else an estimate
    /// from the Rust source it compiles and the dependencies it links (see [`estimated_ms`]), which
    /// still separates a 15-second crate from a 0.2-second one well enough that the long compiles
    /// start first (cargo, counting dependents instead, starts them late). May be called again as more of the graph becomes known; thunks
    /// already waiting are reordered.
    pub async fn prioritize(&self, roots: &[Hash]) -> Result<(), StoreError> {
        // Depth-first, so that every thunk comes after everything it links to.
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<(Hash, bool)> = roots.iter().map(|root| (*root, false)).collect();
        let mut shapes = HashMap::new();
        while let Some((hash, expanded)) = stack.pop() {
            if expanded {
                order.push(hash);
                continue;
            }
            if !seen.insert(hash) {
                continue;
            }
            let shape = self.shape_of(hash).await?;
            stack.push((hash, true));
            stack.extend(shape.links.iter().map(|producer| (*producer, false)));
            shapes.insert(hash, shape);
        }
        let mut priority: HashMap<Hash, u64> = HashMap::new();
        for hash in order.iter().rev() {
            let shape = &shapes[hash];
            let own = priority.get(hash).copied().unwrap_or(0) + shape.expected_ms;
            priority.insert(*hash, own);
            for producer in &shape.links {
                let entry = priority.entry(*producer).or_insert(0);
                *entry = (*entry).max(own);
            }
        }
        if let Some(remote) = &self.inner.remote {
            remote.slots.set_priorities(priority.clone());
        }
        self.inner.slots.set_priorities(priority);
        Ok(())
    }

    /// What scheduling needs of a thunk, read once.
    async fn shape_of(&self, hash: Hash) -> Result<Arc<Shape>, StoreError> {
        if let Some(shape) = self.inner.shapes.lock().unwrap_or_else(|e| e.into_inner()).get(&hash) {
            return Ok(Arc::clone(shape));
        }
        let thunk = self.inner.store.get_thunk(hash).await?;
        let mut links = Vec::new();
        let mut source_bytes = 0;
        for (path, input) in &thunk.inputs {
            match input {
                Input::Link { thunk, .. } => links.push(*thunk),
                Input::Blob { size, .. } if path.as_str().ends_with(".rs") => source_bytes += size,
                _ => {}
            }
        }
        links.sort();
        links.dedup();
        let learned_ms = self.inner.history.expected_ms(&thunk);
        let expected_ms = learned_ms.unwrap_or_else(|| estimated_ms(source_bytes, links.len())).max(1);
        let patient_ms = learned_ms.unwrap_or_else(|| patient_estimate_ms(source_bytes));
        let shape = Arc::new(Shape { links, expected_ms, patient_ms });
        self.inner.shapes.lock().unwrap_or_else(|e| e.into_inner()).insert(hash, Arc::clone(&shape));
        Ok(shape)
    }

    /// Forces `thunk` (and, first, everything it links to).
    pub fn force(&self, thunk: Hash) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'static>> {
        let this = self.clone();
        Box::pin(async move {
            let cell = {
                let mut cells = this.inner.cells.lock().unwrap_or_else(|e| e.into_inner());
                Arc::clone(cells.entry(thunk).or_default())
            };
            cell.get_or_init(|| this.force_once(thunk)).await.clone()
        })
    }

    /// Every thunk this forcer ran (not those it took from the store), in the order they ended.
    pub fn runs(&self) -> Vec<Run> {
        self.inner.runs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How far forcing has got.
    pub fn progress(&self) -> Progress {
        use std::sync::atomic::Ordering;
        let counters = &self.inner.counters;
        let (started, done) = (counters.started.load(Ordering::SeqCst), counters.done.load(Ordering::SeqCst));
        let running = counters.running.load(Ordering::SeqCst);
        Progress {
            done,
            cached: counters.cached.load(Ordering::SeqCst),
            running,
            queued: started.saturating_sub(done + running),
        }
    }

    /// The journal its writes into target dirs go through (see [`crate::journal`]).
    pub fn journal(&self) -> crate::journal::Journal {
        self.inner.workdir.journal()
    }

    /// What this forcer undid, when it started, of the writes of forcers that were interrupted.
    pub fn recovered(&self) -> crate::journal::Recovered {
        self.inner.recovered
    }

    /// Copies of stragglers launched so far.
    pub fn relaunched(&self) -> usize {
        self.inner.relaunched.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Retries of remote runs that failed for the infrastructure, so far.
    pub fn retried(&self) -> usize {
        let extra =
            self.inner.remote.as_ref().map_or(0, |remote| remote.extra.load(std::sync::atomic::Ordering::SeqCst));
        extra.saturating_sub(self.relaunched())
    }

    /// Keeps the durations learned by this forcer for the next build on this machine.
    pub fn save_history(&self) -> std::io::Result<()> {
        self.inner.history.save()
    }

    /// When this forcer was made, the origin of [`Run`]'s times.
    pub fn origin(&self) -> std::time::Instant {
        self.inner.origin
    }

    /// Every thunk forced so far, with its outcome.
    pub fn outcomes(&self) -> Vec<(Hash, Outcome)> {
        let cells = self.inner.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.iter().filter_map(|(hash, cell)| cell.get().map(|outcome| (*hash, outcome.clone()))).collect()
    }

    async fn force_once(&self, hash: Hash) -> Outcome {
        use std::sync::atomic::Ordering;
        let counters = &self.inner.counters;
        counters.started.fetch_add(1, Ordering::SeqCst);
        let outcome = match self.inner.store.get_thunk(hash).await {
            Ok(thunk) => {
                let thunk = Arc::new(thunk);
                let outcome = self.force_counted(hash, Arc::clone(&thunk)).await;
                if let Ok(forced) = &outcome
                    && forced.reduction.succeeded()
                {
                    self.inner.history.record(&thunk, forced.reduction.duration_ms);
                }
                outcome
            }
            Err(error) => Err(Arc::new(error.into())),
        };
        if outcome.as_ref().is_ok_and(|forced| forced.cached) {
            counters.cached.fetch_add(1, Ordering::SeqCst);
        }
        counters.done.fetch_add(1, Ordering::SeqCst);
        outcome
    }

    async fn force_counted(&self, hash: Hash, thunk: Arc<crate::thunk::Thunk>) -> Outcome {
        let mut needed: Vec<(Hash, SandboxPath)> = thunk
            .inputs
            .values()
            .filter_map(|input| match input {
                Input::Link { thunk, output } => Some((*thunk, output.clone())),
                _ => None,
            })
            .collect();
        needed.sort();
        needed.dedup();
        // Each producer is forced once; each needed output is waited for on its own, so a crate that
        // needs only a dependency's rmeta starts as soon as rustc announces it (cargo's pipelining).
        let mut tasks = tokio::task::JoinSet::new();
        for (producer, output) in needed {
            let this = self.clone();
            tasks.spawn(async move { (producer, output.clone(), this.output_ready(producer, output).await) });
        }
        let mut ready = HashMap::new();
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let (producer, output, result) = joined.expect("forcing does not panic");
            match result {
                Ok(file) => {
                    ready.insert((producer, output), file);
                }
                Err(error) => {
                    first_error.get_or_insert(Arc::new(ForceError::DependencyFailed {
                        thunk: hash,
                        dependency: dependency_of(&error).unwrap_or(producer),
                    }));
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        if let Some(reduction) = self.usable_reduction(hash).await.map_err(|e| Arc::new(e.into()))? {
            return Ok(Forced { reduction: Arc::new(reduction), cached: true, undeclared: Vec::new(), fallback: None });
        }
        let mut fallback = None;
        if let Some(remote) = &self.inner.remote
            && thunk.placement == crate::thunk::Placement::Anywhere
        {
            let links = self.remote_links(hash, &thunk, &ready).await?;
            let metadata_run = self.start_metadata_run(hash, &thunk, &links);
            let ran = self.run_remote(remote, hash, &thunk, &links).await;
            if let Some(metadata_run) = metadata_run {
                // Done or not, its rmeta is no longer needed early.
                metadata_run.abort();
            }
            match ran {
                Ok(run) => {
                    self.check_early_outputs(hash, &run.reduction)?;
                    return Ok(Forced {
                        reduction: Arc::new(run.reduction),
                        cached: false,
                        undeclared: Vec::new(),
                        fallback,
                    });
                }
                Err(reason) => fallback = Some(reason),
            }
        }
        let _slot = self.inner.slots.acquire(hash).await;
        let _lock = self.lock(hash).await.map_err(|source| Arc::new(ForceError::Exec { thunk: hash, source }))?;
        // Another process may have run it while this one waited for the lock.
        if let Some(reduction) = self.usable_reduction(hash).await.map_err(|e| Arc::new(e.into()))? {
            return Ok(Forced { reduction: Arc::new(reduction), cached: true, undeclared: Vec::new(), fallback: None });
        }
        let _token = self.acquire_token().await;
        let _running = Running::start(&self.inner.counters);
        let lane = self.inner.lanes.take();
        let start = self.inner.origin.elapsed();
        let early = self.early_sender(hash);
        let (origin, announced_at) = (self.inner.origin, Arc::new(Mutex::new(None)));
        let noting = Arc::clone(&announced_at);
        let announce: EarlyOutput = Arc::new(move |output, file| {
            noting.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(origin.elapsed());
            early.send_modify(|ready| {
                ready.insert(output, file);
            });
        });
        let in_place = self
            .inner
            .executor
            .execute_in_place(&thunk, &ready, Some(announce))
            .await
            .map_err(|source| Arc::new(ForceError::Exec { thunk: hash, source }));
        self.inner.lanes.give_back(lane);
        let InPlace { reduction, phases, undeclared, persist } = in_place?;
        if self.inner.deferred_storing {
            let in_flight = StoringInFlight::start();
            let task = tokio::spawn(async move {
                let (_lock, _in_flight) = (_lock, in_flight);
                persist.await
            });
            self.inner.storing.lock().unwrap_or_else(|e| e.into_inner()).push((hash, task));
        } else {
            persist.await.map_err(|source| Arc::new(ForceError::Exec { thunk: hash, source }))?;
        }
        let announced_at = *announced_at.lock().unwrap_or_else(|e| e.into_inner());
        // From rustc's start: the forcer's own checks before it are not the compile's.
        let metadata_ms = announced_at.map(|at| {
            let since_start = at.saturating_sub(start).as_millis() as u64;
            since_start.saturating_sub(phases.fetch_ms).min(reduction.duration_ms)
        });
        self.note_run(hash, format!("local {}", lane + 1), start, phases, metadata_ms);
        Ok(Forced { reduction: Arc::new(reduction), cached: false, undeclared, fallback })
    }

    /// The file behind each link input of a thunk about to run remotely. An output announced by a
    /// metadata run is in the store; one rustc announced while running here is not yet, so for that
    /// the whole producer is waited for.
    async fn remote_links(
        &self,
        hash: Hash,
        thunk: &crate::thunk::Thunk,
        ready: &HashMap<(Hash, SandboxPath), OutputFile>,
    ) -> Result<BTreeMap<SandboxPath, OutputFile>, Arc<ForceError>> {
        let mut links = BTreeMap::new();
        for (path, input) in &thunk.inputs {
            let Input::Link { thunk: producer, output } = input else { continue };
            let key = (*producer, output.clone());
            let stored = self.inner.stored_early.lock().unwrap_or_else(|e| e.into_inner()).contains(&key);
            let file = match ready.get(&key) {
                Some(file) if stored => *file,
                _ => {
                    let forced = self.force(*producer).await.map_err(|error| {
                        Arc::new(ForceError::DependencyFailed {
                            thunk: hash,
                            dependency: dependency_of(&error).unwrap_or(*producer),
                        })
                    })?;
                    Self::output_of(*producer, output, Ok(Ok(forced)))?
                }
            };
            links.insert(path.clone(), file);
        }
        Ok(links)
    }

    /// Starts a metadata run of a library thunk about to run remotely, when metadata runs are on:
    /// the same compile on another worker, stopped once rustc has written the rmeta, which is
    /// announced to the thunks that need only it (cargo's pipelining, across workers).
    fn start_metadata_run(
        &self,
        hash: Hash,
        thunk: &Arc<crate::thunk::Thunk>,
        links: &BTreeMap<SandboxPath, OutputFile>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !self.inner.metadata_runs {
            return None;
        }
        let rmeta = thunk.outputs.iter().find(|output| output.as_str().ends_with(".rmeta"))?.clone();
        thunk.outputs.iter().find(|output| output.as_str().ends_with(".rlib"))?;
        let (this, thunk, links) = (self.clone(), Arc::clone(thunk), links.clone());
        Some(tokio::spawn(async move {
            let Some(remote) = this.inner.remote.as_ref() else { return };
            // A slot like any run: the engine's limit holds (Lambda's concurrency is an account's).
            let _slot = remote.slots.acquire(hash).await;
            let Ok(file) = remote.engine.run_until(hash, &thunk, &links, &rmeta).await else { return };
            this.inner.metadata_runs_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Marked stored before it is announced: a remote consumer woken by it may use it at once.
            this.inner.stored_early.lock().unwrap_or_else(|e| e.into_inner()).insert((hash, rmeta.clone()));
            this.early_sender(hash).send_modify(|ready| {
                ready.entry(rmeta).or_insert(file);
            });
        }))
    }

    /// Refuses a reduction whose outputs differ from what a metadata run announced for it: thunks
    /// built against the announced rmeta would not match the library they are linked with.
    fn check_early_outputs(&self, hash: Hash, reduction: &Reduction) -> Result<(), Arc<ForceError>> {
        let early = self.early_sender(hash).borrow().clone();
        for (output, file) in early {
            if let Some(actual) = reduction.outputs.get(&output)
                && actual.hash != file.hash
            {
                return Err(Arc::new(ForceError::UnreproducibleOutput { thunk: hash, output }));
            }
        }
        Ok(())
    }

    /// Runs `thunk` on the remote engine, retrying infrastructure failures with exponential backoff
    /// and launching another copy when it runs far past its expected time (the first result wins; a
    /// losing copy's invocation is abandoned). `Err` says why it should run locally instead.
    async fn run_remote(
        &self,
        remote: &Remote,
        hash: Hash,
        thunk: &Arc<crate::thunk::Thunk>,
        links: &BTreeMap<SandboxPath, OutputFile>,
    ) -> Result<RemoteRun, String> {
        use std::sync::atomic::Ordering;
        if let Some(reason) = self.remote_refused(remote) {
            return Err(reason);
        }
        let _slot = remote.slots.acquire(hash).await;
        let _running = Running::start(&self.inner.counters);
        let patience = self.patience(hash, thunk).await;
        let mut copies = tokio::task::JoinSet::new();
        let launch = |copies: &mut tokio::task::JoinSet<Result<RemoteRun, String>>| {
            let (this, thunk, links) = (self.clone(), Arc::clone(thunk), links.clone());
            copies.spawn(async move { this.remote_attempts(hash, &thunk, &links).await });
        };
        launch(&mut copies);
        let late = tokio::time::sleep(patience);
        tokio::pin!(late);
        let mut last_error = None;
        loop {
            tokio::select! {
                joined = copies.join_next() => match joined {
                    Some(Ok(Ok(run))) => return Ok(run),
                    Some(Ok(Err(reason))) => last_error = Some(reason),
                    Some(Err(panicked)) => last_error = Some(format!("a remote run panicked: {panicked}")),
                    None => return Err(last_error.unwrap_or_else(|| "no remote run was launched".into())),
                },
                () = &mut late, if copies.len() < self.inner.stragglers.max_copies => {
                    if remote.take_extra() {
                        self.inner.relaunched.fetch_add(1, Ordering::SeqCst);
                        launch(&mut copies);
                    }
                    late.as_mut().reset(tokio::time::Instant::now() + patience);
                }
            }
        }
    }

    /// Why the remote engine is no longer asked, if it is not.
    fn remote_refused(&self, remote: &Remote) -> Option<String> {
        use std::sync::atomic::Ordering;
        if remote.failures_in_a_row.load(Ordering::SeqCst) >= GIVE_UP_AFTER {
            return Some(format!("{} failed {GIVE_UP_AFTER} thunks in a row", remote.engine.name()));
        }
        if remote.budget_spent() {
            return Some(format!(
                "{} needed {} retries and relaunches in this build, its budget",
                remote.engine.name(),
                remote.extra.load(Ordering::SeqCst)
            ));
        }
        None
    }

    /// How long a remote run of `thunk` may take before another copy is launched.
    async fn patience(&self, hash: Hash, thunk: &crate::thunk::Thunk) -> std::time::Duration {
        let expected_ms = match self.inner.history.expected_ms(thunk) {
            Some(ms) => ms,
            None => self.shape_of(hash).await.map_or_else(|_| patient_estimate_ms(0), |shape| shape.patient_ms),
        };
        let expected = std::time::Duration::from_millis(expected_ms);
        let policy = &self.inner.stragglers;
        expected * policy.factor + policy.slack
    }

    /// One copy of a remote run: attempts with backoff until one answers, the thunk's attempts are
    /// used up, or the build's budget of retries is.
    async fn remote_attempts(
        &self,
        hash: Hash,
        thunk: &crate::thunk::Thunk,
        links: &BTreeMap<SandboxPath, OutputFile>,
    ) -> Result<RemoteRun, String> {
        use std::sync::atomic::Ordering;
        let remote = self.inner.remote.as_ref().expect("a remote run needs a remote engine");
        let mut backoff = REMOTE_BACKOFF;
        let mut attempt = 1;
        loop {
            let start = self.inner.origin.elapsed();
            remote.sent.fetch_add(1, Ordering::SeqCst);
            match remote.engine.run(hash, thunk, links).await {
                Ok(run) => {
                    remote.failures_in_a_row.store(0, Ordering::SeqCst);
                    // The instance's own time ends the bar; the round trip before it shows as fetching.
                    let mut phases = run.phases;
                    phases.fetch_ms += run.overhead_ms;
                    self.note_run(hash, run.worker.clone(), start, phases, None);
                    return Ok(run);
                }
                Err(RemoteError::Final(reason)) => return Err(reason),
                Err(RemoteError::Retryable(reason)) => {
                    let refused = self.remote_refused(remote);
                    if attempt >= REMOTE_ATTEMPTS || refused.is_some() || !remote.take_extra() {
                        remote.failures_in_a_row.fetch_add(1, Ordering::SeqCst);
                        let why = refused.map_or_else(String::new, |refused| format!("; {refused}"));
                        return Err(format!("{reason} (after {attempt} attempts{why})"));
                    }
                    // Jitter, so that many thunks failing together do not retry together.
                    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    let jitter = std::time::Duration::from_millis(u64::from(nanos.subsec_nanos()) % 100);
                    tokio::time::sleep(backoff + jitter).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        }
    }

    fn note_run(
        &self,
        thunk: Hash,
        worker: String,
        start: std::time::Duration,
        phases: Phases,
        metadata_ms: Option<u64>,
    ) {
        let end = self.inner.origin.elapsed();
        let run = Run { thunk, worker, start, end, phases, metadata_ms };
        self.inner.runs.lock().unwrap_or_else(|e| e.into_inner()).push(run);
    }

    /// The stored reduction of `hash`, if there is one whose output blobs the store still has. A
    /// reduction whose outputs were deleted (a damaged blob removed, as its error message advises) is
    /// not used: the thunk runs again and stores them again.
    async fn usable_reduction(&self, hash: Hash) -> Result<Option<Reduction>, StoreError> {
        let Some(reduction) = self.inner.store.get_reduction(hash).await? else {
            return Ok(None);
        };
        for file in reduction.outputs.values() {
            if !self.inner.store.has(crate::store::ObjectKey::Blob(file.hash)).await? {
                return Ok(None);
            }
        }
        Ok(Some(reduction))
    }

    /// The implicit token if it is free, else one a finished thunk left, else a token of the
    /// jobserver (waiting for one: a rustc's extra thread gives it back when it ends).
    async fn acquire_token(&self) -> Option<Token> {
        use std::sync::atomic::Ordering;
        if self.inner.implicit_token.swap(false, Ordering::SeqCst) {
            return Some(Token::Implicit(Arc::clone(&self.inner)));
        }
        let kept = self.inner.kept_tokens.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let acquired = match kept {
            Some(acquired) => acquired,
            None => {
                let client = self.inner.jobserver.clone()?;
                tokio::task::spawn_blocking(move || client.acquire()).await.ok()?.ok()?
            }
        };
        Some(Token::Acquired { inner: Arc::clone(&self.inner), token: Some(acquired) })
    }

    /// The channel on which `thunk`'s outputs are announced before it finishes.
    fn early_sender(&self, thunk: Hash) -> watch::Sender<BTreeMap<SandboxPath, OutputFile>> {
        let mut early = self.inner.early.lock().unwrap_or_else(|e| e.into_inner());
        early.entry(thunk).or_insert_with(|| watch::channel(BTreeMap::new()).0).clone()
    }

    /// Waits until `output` of `producer` can be read: announced early, or its thunk forced.
    async fn output_ready(&self, producer: Hash, output: SandboxPath) -> Result<OutputFile, Arc<ForceError>> {
        let mut announced = self.early_sender(producer).subscribe();
        let mut forced = tokio::spawn(self.force(producer));
        loop {
            if let Some(file) = announced.borrow_and_update().get(&output) {
                return Ok(*file);
            }
            tokio::select! {
                changed = announced.changed() => {
                    if changed.is_err() {
                        // The sender lives in `inner`, so this does not happen; fall back to waiting.
                        break;
                    }
                }
                joined = &mut forced => return Self::output_of(producer, &output, joined),
            }
        }
        Self::output_of(producer, &output, forced.await)
    }

    fn output_of(
        producer: Hash,
        output: &SandboxPath,
        joined: Result<Outcome, tokio::task::JoinError>,
    ) -> Result<OutputFile, Arc<ForceError>> {
        let forced = joined.expect("forcing does not panic")?;
        if !forced.reduction.succeeded() {
            return Err(Arc::new(ForceError::DependencyFailed { thunk: producer, dependency: producer }));
        }
        forced.reduction.outputs.get(output).copied().ok_or_else(|| {
            Arc::new(ForceError::Exec {
                thunk: producer,
                source: ExecError::LinkMissingOutput { input: output.clone(), thunk: producer, output: output.clone() },
            })
        })
    }

    /// An exclusive lock on `hash` shared by every process using this workdir.
    async fn lock(&self, hash: Hash) -> Result<crate::workdir::Lock, ExecError> {
        let workdir = self.inner.workdir.clone();
        tokio::task::spawn_blocking(move || workdir.lock(&hash.to_hex()))
            .await
            .map_err(|e| ExecError::Sandbox { context: "waiting for a lock".into(), source: std::io::Error::other(e) })?
            .map_err(|source| ExecError::Sandbox { context: "cannot lock a thunk".into(), source })
    }
}

/// A jobserver token held while a thunk runs.
///
/// A token from the pipe is not given back the moment its thunk ends but kept for the next thunk, as
/// cargo's job queue keeps its tokens while work is queued: a rustc waiting in `read(2)` for an extra
/// codegen thread would otherwise always win it, and the next crate, often the one the critical path
/// runs through, waited seconds for a core that rustc's second thread was using.
enum Token {
    /// The token this process holds by existing; given back by marking it free.
    Implicit(Arc<Inner>),
    /// A token from the jobserver's pipe; kept for the next thunk when dropped.
    Acquired { inner: Arc<Inner>, token: Option<jobserver::Acquired> },
}

/// How long a finished thunk's token waits for the next thunk before it goes back to the pipe: the
/// next one asks within milliseconds (the slot hand-over, a lock, a look in the store).
const TOKEN_KEPT_FOR: std::time::Duration = std::time::Duration::from_millis(50);

impl Drop for Token {
    fn drop(&mut self) {
        match self {
            Token::Implicit(inner) => inner.implicit_token.store(true, std::sync::atomic::Ordering::SeqCst),
            Token::Acquired { inner, token } => {
                let (Some(token), Ok(runtime)) = (token.take(), tokio::runtime::Handle::try_current()) else {
                    return;
                };
                inner.kept_tokens.lock().unwrap_or_else(|e| e.into_inner()).push(token);
                let inner = Arc::clone(inner);
                runtime.spawn(async move {
                    tokio::time::sleep(TOKEN_KEPT_FOR).await;
                    // One token goes back per token kept; which one does not matter.
                    drop(inner.kept_tokens.lock().unwrap_or_else(|e| e.into_inner()).pop());
                });
            }
        }
    }
}

fn dependency_of(error: &ForceError) -> Option<Hash> {
    match error {
        ForceError::DependencyFailed { dependency, .. } => Some(*dependency),
        ForceError::Exec { thunk, .. } | ForceError::UnreproducibleOutput { thunk, .. } => Some(*thunk),
        ForceError::Store(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_crate_high_in_the_graph_is_expected_to_outlast_a_large_leaf() {
        // mdbook 0.5.4's release build: mdbook_core (66 KiB, 31 links) took 7.0 s, zerocopy (1.1 MiB,
        // no links) 3.2 s, and the source size alone ranked them the other way.
        let mdbook_core = estimated_ms(66 * 1024, 31);
        let zerocopy = estimated_ms(1138 * 1024, 0);
        assert!(mdbook_core > zerocopy, "{mdbook_core} ms against {zerocopy} ms");
        assert!(patient_estimate_ms(66 * 1024) < patient_estimate_ms(1138 * 1024));
        // A crate of generated tables (font_awesome_as_a_crate, 6 MiB, 4.6 s) against a 15-second
        // crate with dependencies (regex_automata, 2.5 MiB, 3 links, 13.6 s): same order of size.
        let tables = estimated_ms(6085 * 1024, 0);
        let regex_automata = estimated_ms(2588 * 1024, 3);
        assert!(tables < 2 * regex_automata, "{tables} ms against {regex_automata} ms");
    }
}
