//! The scale-out model: what a recorded build would take on N Lambda workers, and what it would cost.
//!
//! A build run with `--timings` records its graph (`graph.json` beside the timeline): each thunk's
//! producers, how long rustc ran, and how many bytes it read and wrote. [`predict`] replays that graph
//! through the real forcer — the same critical-path priorities, slots, pipelining of producers and
//! straggler rules as a build — against a simulated Lambda engine on a virtual clock, so a thousand
//! workers take a fraction of a second to model. The engine charges each invocation what Lambda
//! would: the round trip, a cold start the first time an instance is needed (the runtime's init, then
//! fetching the toolchain layer, which is unpacked as it arrives), fetching the inputs and storing the
//! outputs — compressed as the store keeps them, so at the function's bandwidth for their stored size
//! plus zstd's time to unpack or pack their raw bytes —, and the compile itself. The physical limit is the graph's
//! critical path: the longest chain of compile times, with no overhead at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thunk::force::{Forcer, Stragglers};
use thunk::reduction::{BlobRef, OutputFile, Status};
use thunk::remote::{RemoteEngine, RemoteError, RemoteRun};
use thunk::store::{Backend, ListPage};
use thunk::{Hash, ObjectKey, Reduction, SandboxPath, Store, Thunk};

/// The file format's revision. Version 1 had no stored sizes; it is still read, its transfers then
/// counted at raw size.
pub const GRAPH_VERSION: u32 = 2;

/// Whether this cargo-lambdabuild reads a graph of format `version`.
pub fn reads_graph_version(version: u32) -> bool {
    (1..=GRAPH_VERSION).contains(&version)
}

/// A recorded build: the thunks forced and what each cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    /// Always [`GRAPH_VERSION`].
    pub version: u32,
    /// Every thunk, in any order.
    pub thunks: Vec<Node>,
}

/// One thunk of a recorded build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The thunk's hash.
    pub thunk: Hash,
    /// What it compiled, e.g. `regex_automata lib`.
    pub name: String,
    /// The thunks whose outputs it reads.
    pub producers: Vec<Hash>,
    /// How long rustc ran, in milliseconds.
    pub duration_ms: u64,
    /// Its inputs: how many files, and their bytes (the toolchain apart).
    pub inputs: u64,
    /// See `inputs`.
    pub input_bytes: u64,
    /// Its outputs: how many files, and their bytes.
    pub outputs: u64,
    /// See `outputs`.
    pub output_bytes: u64,
    /// What its inputs and outputs weigh as the store keeps them, zstd-compressed: what travels between
    /// S3 and the function. An input the store does not hold counts at its raw size. `None` in a graph
    /// of version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_stored_bytes: Option<u64>,
    /// See `input_stored_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_stored_bytes: Option<u64>,
    /// A library's rmeta, when rustc announced it before the end of the compile: the consumers that
    /// read only the rmeta start then (cargo's pipelining; on Lambda, a metadata run beside the
    /// compile). `None` for other thunks and in a graph of version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Of `producers`, those of which it reads only the rmeta.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata_producers: Vec<Hash>,
}

/// When a library's rmeta was ready, and what it weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Milliseconds from rustc's start to its announcing the rmeta.
    pub ms: u64,
    /// The rmeta's bytes, raw and as the store keeps them.
    pub bytes: u64,
    /// See `bytes`.
    pub stored_bytes: u64,
}

impl Node {
    /// Whether it reads only the rmeta of `producer`, and `producer` announces one early.
    fn waits_for_metadata_of(&self, producer: &Node) -> bool {
        producer.metadata.is_some() && self.metadata_producers.contains(&producer.thunk)
    }
}

impl Graph {
    /// The longest chain of compile times, in milliseconds: no number of workers finishes sooner. A
    /// consumer of a library's rmeta alone starts when the rmeta is ready, as cargo's pipelining has it.
    pub fn critical_path_ms(&self) -> u64 {
        let by_hash: HashMap<Hash, &Node> = self.thunks.iter().map(|node| (node.thunk, node)).collect();
        // Each thunk's earliest start and end.
        let mut times: HashMap<Hash, (u64, u64)> = HashMap::new();
        fn visit(node: &Node, by_hash: &HashMap<Hash, &Node>, times: &mut HashMap<Hash, (u64, u64)>) -> (u64, u64) {
            if let Some(known) = times.get(&node.thunk) {
                return *known;
            }
            let mut start = 0;
            for producer in node.producers.iter().filter_map(|p| by_hash.get(p)) {
                let (produced_start, produced_end) = visit(producer, by_hash, times);
                let ready = match producer.metadata {
                    Some(metadata) if node.waits_for_metadata_of(producer) => produced_start + metadata.ms,
                    _ => produced_end,
                };
                start = start.max(ready);
            }
            let known = (start, start + node.duration_ms);
            times.insert(node.thunk, known);
            known
        }
        self.thunks.iter().map(|node| visit(node, &by_hash, &mut times).1).max().unwrap_or(0)
    }

    /// The thunks nothing else in the graph reads: the build's artifacts.
    fn roots(&self) -> Vec<Hash> {
        let read: std::collections::HashSet<Hash> =
            self.thunks.iter().flat_map(|node| node.producers.iter().copied()).collect();
        self.thunks.iter().map(|node| node.thunk).filter(|hash| !read.contains(hash)).collect()
    }
}

/// What a Lambda invocation costs in time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LambdaModel {
    /// The client's round trip of one invocation beyond the function's own time.
    pub invoke_ms: u64,
    /// A new instance's runtime start, before it fetches the toolchain.
    pub init_ms: u64,
    /// The packed toolchain layer each new instance fetches.
    pub layer_bytes: u64,
    /// Unpacking it.
    pub unpack_ms: u64,
    /// One instance's throughput to and from S3, in bytes per second.
    pub bandwidth_bytes_per_s: u64,
    /// zstd's speed on one core, in raw bytes per second: unpacking a fetched blob, packing an output
    /// before it is stored.
    pub decompress_bytes_per_s: u64,
    /// See `decompress_bytes_per_s`.
    pub compress_bytes_per_s: u64,
    /// The instance's memory, which Lambda bills by.
    pub memory_mb: u32,
}

impl Default for LambdaModel {
    /// Figures measured on the emulator where they can be (`scripts/bench-lambda`: 34 ms median
    /// overhead per invocation; rustc 1.95's layer as `cargo lambdabuild layer` packs it, 153 MB,
    /// decompressed in 0.8 s) and Lambda's
    /// documented or commonly measured ones where they cannot (a custom runtime's init of about a
    /// quarter second; about 100 MB/s from S3 to one function). zstd's speeds are those of the store's
    /// level 1 on a release build's rlibs and rmetas, one core of the bench machine (`zstd -b1`).
    fn default() -> LambdaModel {
        LambdaModel {
            invoke_ms: 34,
            init_ms: 250,
            layer_bytes: 153_000_000,
            unpack_ms: 800,
            bandwidth_bytes_per_s: 100_000_000,
            decompress_bytes_per_s: 975_000_000,
            compress_bytes_per_s: 405_000_000,
            memory_mb: crate::config::DEFAULT_MEMORY_MB,
        }
    }
}

impl LambdaModel {
    fn transfer_ms(&self, bytes: u64) -> u64 {
        bytes.saturating_mul(1000) / self.bandwidth_bytes_per_s.max(1)
    }

    /// Fetching a node's inputs: their stored bytes, then unpacking them. A graph without stored sizes
    /// counts the raw bytes as they would travel uncompressed.
    fn fetch_ms(&self, node: &Node) -> u64 {
        match node.input_stored_bytes {
            Some(stored) => self.transfer_ms(stored) + per_second(node.input_bytes, self.decompress_bytes_per_s),
            None => self.transfer_ms(node.input_bytes),
        }
    }

    /// Storing a node's outputs: packing them, then sending the stored bytes.
    fn store_ms(&self, node: &Node) -> u64 {
        match node.output_stored_bytes {
            Some(stored) => per_second(node.output_bytes, self.compress_bytes_per_s) + self.transfer_ms(stored),
            None => self.transfer_ms(node.output_bytes),
        }
    }

    /// The function unpacks the layer while it downloads, so the slower of the two is what counts.
    fn cold_start_ms(&self) -> u64 {
        self.init_ms + self.transfer_ms(self.layer_bytes).max(self.unpack_ms)
    }
}

/// Milliseconds to get through `bytes` at `rate` bytes per second.
fn per_second(bytes: u64, rate: u64) -> u64 {
    bytes.saturating_mul(1000) / rate.max(1)
}

/// What [`predict`] foresees for one number of workers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Lambda invocations in flight at most.
    pub workers: usize,
    /// From the first invocation to the last answer.
    pub makespan_ms: u64,
    /// Instances started (each paid a cold start).
    pub cold_starts: u64,
    /// Invocations, and their billed time (everything but the client's round trip).
    pub invocations: u64,
    /// See `invocations`.
    pub billed_ms: u64,
    /// What Lambda and S3 would charge for it, in US dollars.
    pub cost_usd: f64,
}

/// Replays `graph` through the forcer with `workers` Lambda invocations in flight, on a virtual clock.
pub fn predict(
    graph: &Graph,
    model: &LambdaModel,
    workers: usize,
    prices: &crate::cost::Prices,
) -> anyhow::Result<Prediction> {
    // A runtime of its own, on a thread of its own: its clock is virtual, and the caller may be on a
    // runtime already.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()?;
                runtime.block_on(replay(graph, model, workers.max(1), prices))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the scale-out model panicked"))?
    })
}

async fn replay(
    graph: &Graph,
    model: &LambdaModel,
    workers: usize,
    prices: &crate::cost::Prices,
) -> anyhow::Result<Prediction> {
    let scratch = tempfile::tempdir()?;
    let store = Store::new(Arc::new(MemoryBackend::default()));
    let workdir = thunk::workdir::Workdir::open(scratch.path())?;
    let (stand_ins, roots) = stand_ins(graph, &store, &workdir).await?;
    let engine = Arc::new(SimulatedLambda {
        model: *model,
        nodes: stand_ins,
        instances: Arc::default(),
        billing: Arc::default(),
        metadata_runs: Mutex::new(tokio::task::JoinSet::new()),
    });
    // No straggler is ever late on a model that keeps its own promises; a copy would only skew it.
    let stragglers = Stragglers { max_copies: 1, ..Stragglers::default() };
    // As `cargo lambdabuild --engine lambda=N` does, with a metadata run beside each library compile.
    let forcer = Forcer::new(store, workdir, 1)
        .with_remote(Arc::clone(&engine) as Arc<dyn RemoteEngine>, workers)
        .with_stragglers(stragglers)
        .with_metadata_runs();
    forcer.prioritize(&roots).await?;
    let started = tokio::time::Instant::now();
    let mut forcing = tokio::task::JoinSet::new();
    for root in roots {
        forcing.spawn(forcer.force(root));
    }
    while let Some(forced) = forcing.join_next().await {
        let forced = forced?.map_err(|error| anyhow::anyhow!("{error}"))?;
        anyhow::ensure!(forced.fallback.is_none(), "a simulated invocation fell back: {:?}", forced.fallback);
    }
    let makespan_ms = started.elapsed().as_millis() as u64;
    // A metadata run the build no longer waited for still ran to its end, and is billed.
    let metadata_runs = std::mem::take(&mut *engine.metadata_runs.lock().unwrap_or_else(|e| e.into_inner()));
    metadata_runs.join_all().await;
    let billing = *engine.billing.lock().unwrap_or_else(|e| e.into_inner());
    let cold_starts = engine.instances.lock().unwrap_or_else(|e| e.into_inner()).started;
    let tally = thunk::stats::Tally {
        lambda_invocations: billing.invocations,
        lambda_billed_ms: billing.billed_ms,
        traffic: thunk::store::Traffic {
            get_requests: graph.thunks.iter().map(|node| node.inputs).sum::<u64>() + billing.metadata_get_requests,
            put_requests: graph.thunks.iter().map(|node| node.outputs + 1).sum::<u64>() + billing.metadata_put_requests,
            bytes_down: graph
                .thunks
                .iter()
                .map(|node| node.input_stored_bytes.unwrap_or(node.input_bytes))
                .sum::<u64>()
                + cold_starts * model.layer_bytes
                + billing.metadata_bytes_down,
            bytes_up: graph
                .thunks
                .iter()
                .map(|node| node.output_stored_bytes.unwrap_or(node.output_bytes))
                .sum::<u64>()
                + billing.metadata_bytes_up,
        },
        ..thunk::stats::Tally::default()
    };
    let cost = crate::cost::Cost::of(&tally, model.memory_mb, prices);
    Ok(Prediction {
        workers,
        makespan_ms,
        cold_starts,
        invocations: billing.invocations,
        billed_ms: billing.billed_ms,
        cost_usd: cost.usd,
    })
}

/// What a stand-in writes: a library whose rmeta is announced early writes `lib.rlib` and `lib.rmeta`
/// (so the forcer starts metadata runs for it), anything else `out`.
fn stand_in_outputs(node: &Node) -> anyhow::Result<Vec<SandboxPath>> {
    Ok(match node.metadata {
        Some(_) => vec![SandboxPath::new("lib.rlib")?, SandboxPath::new("lib.rmeta")?],
        None => vec![SandboxPath::new("out")?],
    })
}

/// One stand-in thunk per node, linked as the nodes are and stored where the forcer reads them, with
/// each node's duration learned by the forcer's history so that it schedules by it as a rebuild would.
async fn stand_ins(
    graph: &Graph,
    store: &Store,
    workdir: &thunk::workdir::Workdir,
) -> anyhow::Result<(HashMap<Hash, Node>, Vec<Hash>)> {
    let by_hash: HashMap<Hash, &Node> = graph.thunks.iter().map(|node| (node.thunk, node)).collect();
    let history = thunk::history::History::open(&workdir.history_path());
    let mut standing: HashMap<Hash, Hash> = HashMap::new();
    let mut nodes = HashMap::new();
    // Producers first: a stand-in's hash depends on its producers'.
    let mut order = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<(Hash, bool)> = graph.thunks.iter().map(|node| (node.thunk, false)).collect();
    while let Some((hash, expanded)) = stack.pop() {
        if expanded {
            order.push(hash);
        } else if by_hash.contains_key(&hash) && seen.insert(hash) {
            stack.push((hash, true));
            stack.extend(by_hash[&hash].producers.iter().map(|producer| (*producer, false)));
        }
    }
    for hash in order {
        let node = by_hash[&hash];
        let mut inputs = BTreeMap::new();
        for (index, producer) in node.producers.iter().enumerate() {
            let (Some(stand_in), Some(produced)) = (standing.get(producer), by_hash.get(producer)) else { continue };
            let output = match produced.metadata {
                Some(_) if node.waits_for_metadata_of(produced) => "lib.rmeta",
                Some(_) => "lib.rlib",
                None => "out",
            };
            let input = SandboxPath::new(&format!("in/{index}"))?;
            inputs.insert(input, thunk::Input::Link { thunk: *stand_in, output: SandboxPath::new(output)? });
        }
        let stand_in = Thunk {
            toolchain: Hash::of(b"the scale-out model's toolchain"),
            program: thunk::thunk::ProgramPath(SandboxPath::new("model")?),
            args: vec!["--crate-name".into(), hash.to_hex()],
            cwd: None,
            env: BTreeMap::new(),
            inputs,
            outputs: stand_in_outputs(node)?.into_iter().collect(),
            timeout_ms: 3_600_000,
            memory: thunk::thunk::MemoryClass::Standard,
            placement: thunk::Placement::Anywhere,
        };
        let stored = store.put_thunk(&stand_in).await?;
        history.record(&stand_in, node.duration_ms);
        standing.insert(hash, stored);
        nodes.insert(stored, node.clone());
    }
    history.save()?;
    let roots = graph.roots().iter().filter_map(|root| standing.get(root).copied()).collect();
    Ok((nodes, roots))
}

/// Lambda on a virtual clock: instances start cold and stay warm, each invocation waits what it costs.
struct SimulatedLambda {
    model: LambdaModel,
    nodes: HashMap<Hash, Node>,
    instances: Arc<Mutex<Instances>>,
    billing: Arc<Mutex<Billing>>,
    /// Metadata runs, each to its end even when the build stopped waiting for it.
    metadata_runs: Mutex<tokio::task::JoinSet<()>>,
}

/// Warm instances waiting for an invocation, and every instance ever started.
#[derive(Debug, Default)]
struct Instances {
    idle: u64,
    started: u64,
}

impl Instances {
    /// Takes a warm instance if one is idle; `true` when a new one must start cold.
    fn take(instances: &Mutex<Instances>) -> bool {
        let mut instances = instances.lock().unwrap_or_else(|e| e.into_inner());
        if instances.idle > 0 {
            instances.idle -= 1;
            false
        } else {
            instances.started += 1;
            true
        }
    }
}

/// Invocations and their billed milliseconds; and what metadata runs moved, which the graph does not
/// show.
#[derive(Debug, Default, Clone, Copy)]
struct Billing {
    invocations: u64,
    billed_ms: u64,
    metadata_get_requests: u64,
    metadata_put_requests: u64,
    metadata_bytes_down: u64,
    metadata_bytes_up: u64,
}

impl SimulatedLambda {
    /// Holds an instance for `billed_ms` after the client's round trip, then bills it and lets it go.
    async fn occupy(instances: &Mutex<Instances>, billing: &Mutex<Billing>, invoke_ms: u64, billed_ms: u64) {
        tokio::time::sleep(Duration::from_millis(invoke_ms + billed_ms)).await;
        instances.lock().unwrap_or_else(|e| e.into_inner()).idle += 1;
        let mut billing = billing.lock().unwrap_or_else(|e| e.into_inner());
        billing.invocations += 1;
        billing.billed_ms += billed_ms.max(1);
    }

    fn node(&self, hash: Hash) -> Result<&Node, RemoteError> {
        self.nodes.get(&hash).ok_or_else(|| RemoteError::Final(format!("no node for {hash}")))
    }
}

/// The file a stand-in writes at `output`: the same bytes from its metadata run and its compile.
fn stand_in_file(hash: Hash, output: &SandboxPath, size: u64) -> OutputFile {
    OutputFile { hash: Hash::of(format!("{hash} {output}").as_bytes()), size, executable: false }
}

#[async_trait::async_trait]
impl RemoteEngine for SimulatedLambda {
    fn name(&self) -> &str {
        "lambda (model)"
    }

    async fn run(
        &self,
        hash: Hash,
        _thunk: &Thunk,
        _links: &BTreeMap<SandboxPath, OutputFile>,
    ) -> Result<RemoteRun, RemoteError> {
        let node = self.node(hash)?;
        let cold = Instances::take(&self.instances);
        let model = &self.model;
        let fetch_ms = model.fetch_ms(node) + if cold { model.cold_start_ms() } else { 0 };
        let store_ms = model.store_ms(node);
        let billed_ms = fetch_ms + node.duration_ms + store_ms;
        Self::occupy(&self.instances, &self.billing, model.invoke_ms, billed_ms).await;
        let empty = BlobRef { hash: Hash::of(b""), size: 0 };
        let mut reduction = Reduction::new(hash, Status::Success, empty, empty);
        let metadata_bytes = node.metadata.map_or(0, |metadata| metadata.bytes);
        for output in stand_in_outputs(node).map_err(|e| RemoteError::Final(e.to_string()))? {
            let size = if output.as_str() == "lib.rmeta" {
                metadata_bytes
            } else {
                node.output_bytes.saturating_sub(metadata_bytes)
            };
            reduction.outputs.insert(output.clone(), stand_in_file(hash, &output, size));
        }
        reduction.duration_ms = node.duration_ms;
        reduction.engine = "lambda".into();
        let phases = thunk::exec::Phases { fetch_ms, run_ms: node.duration_ms, store_ms };
        Ok(RemoteRun { reduction, worker: "lambda (model)".into(), phases, overhead_ms: model.invoke_ms })
    }

    /// The same compile stopped once its rmeta is written: the inputs, rustc until the rmeta, and
    /// storing the rmeta. The instance is held to that end even when the build stops waiting.
    async fn run_until(
        &self,
        hash: Hash,
        _thunk: &Thunk,
        _links: &BTreeMap<SandboxPath, OutputFile>,
        output: &SandboxPath,
    ) -> Result<OutputFile, RemoteError> {
        let node = self.node(hash)?;
        let metadata =
            node.metadata.ok_or_else(|| RemoteError::Final(format!("{hash} announces no rmeta in the graph")))?;
        let cold = Instances::take(&self.instances);
        let model = &self.model;
        let fetch_ms = model.fetch_ms(node) + if cold { model.cold_start_ms() } else { 0 };
        let store_ms =
            per_second(metadata.bytes, model.compress_bytes_per_s) + model.transfer_ms(metadata.stored_bytes);
        let billed_ms = fetch_ms + metadata.ms + store_ms;
        {
            let mut billing = self.billing.lock().unwrap_or_else(|e| e.into_inner());
            billing.metadata_get_requests += node.inputs;
            billing.metadata_put_requests += 1;
            billing.metadata_bytes_down += node.input_stored_bytes.unwrap_or(node.input_bytes);
            billing.metadata_bytes_up += metadata.stored_bytes;
        }
        let (instances, billing, invoke_ms) = (Arc::clone(&self.instances), Arc::clone(&self.billing), model.invoke_ms);
        let (done, answered) = tokio::sync::oneshot::channel();
        self.metadata_runs.lock().unwrap_or_else(|e| e.into_inner()).spawn(async move {
            Self::occupy(&instances, &billing, invoke_ms, billed_ms).await;
            let _ = done.send(());
        });
        answered.await.map_err(|_| RemoteError::Retryable("the modelled metadata run ended".into()))?;
        Ok(stand_in_file(hash, output, metadata.bytes))
    }
}

/// The objects of a replay, in memory.
#[derive(Debug, Default)]
struct MemoryBackend {
    objects: Mutex<HashMap<ObjectKey, Vec<u8>>>,
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: ObjectKey) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.objects.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned())
    }

    async fn put(&self, key: ObjectKey, bytes: Vec<u8>) -> std::io::Result<()> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner()).insert(key, bytes);
        Ok(())
    }

    async fn has(&self, key: ObjectKey) -> std::io::Result<bool> {
        Ok(self.objects.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&key))
    }

    async fn list(&self, _kind: &str, _from: Option<String>) -> std::io::Result<ListPage> {
        Ok(ListPage { keys: Vec::new(), next: None })
    }

    fn describe(&self) -> String {
        "the scale-out model's memory".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, producers: &[&Node], duration_ms: u64) -> Node {
        Node {
            thunk: Hash::of(name.as_bytes()),
            name: name.into(),
            producers: producers.iter().map(|p| p.thunk).collect(),
            duration_ms,
            inputs: 1,
            input_bytes: 0,
            outputs: 1,
            output_bytes: 0,
            input_stored_bytes: None,
            output_stored_bytes: None,
            metadata: None,
            metadata_producers: Vec::new(),
        }
    }

    /// `actual` is `expected`, give or take the forcer's hand-over of a slot (2 ms) per invocation.
    #[track_caller]
    fn assert_about(actual: &Prediction, expected_ms: u64, what: &str) {
        let slack = 2 * actual.invocations;
        assert!(
            (expected_ms..=expected_ms + slack).contains(&actual.makespan_ms),
            "{what}: {actual:?}, expected {expected_ms}"
        );
    }

    /// A model where nothing but the compile takes time.
    fn free() -> LambdaModel {
        LambdaModel { invoke_ms: 0, init_ms: 0, layer_bytes: 0, unpack_ms: 0, ..LambdaModel::default() }
    }

    #[test]
    fn one_worker_takes_the_sum_and_many_take_the_critical_path() {
        // a (4 s) -> b (4 s) -> c (4 s), beside ten independent 1 s thunks and a 1 s root reading c.
        let a = node("a", &[], 4_000);
        let b = node("b", &[&a], 4_000);
        let c = node("c", &[&b], 4_000);
        let mut thunks = vec![a, b, c.clone()];
        for i in 0..10 {
            thunks.push(node(&format!("leaf{i}"), &[], 1_000));
        }
        thunks.push(node("root", &[&c], 1_000));
        let graph = Graph { version: GRAPH_VERSION, thunks };
        assert_eq!(graph.critical_path_ms(), 13_000);
        let prices = crate::cost::Prices::default();

        let one = predict(&graph, &free(), 1, &prices).unwrap();
        assert_about(&one, 23_000, "one worker runs everything in turn");
        assert_eq!(one.invocations, 14);
        assert_eq!(one.cold_starts, 1);
        let many = predict(&graph, &free(), 1_000, &prices).unwrap();
        assert_about(&many, 13_000, "enough workers reach the critical path");
        assert_eq!(many.cold_starts, 11, "the chain's thunks reuse one warm instance; the leaves each start one");
        // Two workers: the critical path first keeps the chain busy and fits the leaves beside it.
        let two = predict(&graph, &free(), 2, &prices).unwrap();
        assert_about(&two, 13_000, "two workers");
    }

    #[test]
    fn cold_starts_and_transfers_cost_time_and_money() {
        let a = node("a", &[], 2_000);
        let mut b = node("b", &[&a], 2_000);
        b.input_bytes = 50_000_000;
        let graph = Graph { version: GRAPH_VERSION, thunks: vec![a, b] };
        let model = LambdaModel::default();
        let prediction = predict(&graph, &model, 8, &crate::cost::Prices::default()).unwrap();
        // a: invoke + cold start + 2 s; b, on the warm instance: invoke + 0.5 s of input + 2 s.
        let expected = 2 * model.invoke_ms + model.cold_start_ms() + 2_000 + 500 + 2_000;
        assert_about(&prediction, expected, "a cold start, then a warm one");
        assert_eq!(prediction.cold_starts, 1);
        assert!(prediction.cost_usd > 0.0);
        // The layer downloads (1.53 s at 100 MB/s) while it is unpacked (0.8 s): only the slower counts.
        assert_eq!(model.cold_start_ms(), 250 + 1_530);
    }

    #[test]
    fn a_consumer_of_an_rmeta_starts_when_the_metadata_run_has_written_it() {
        // lib (4 s, its rmeta at 1 s) -> user (4 s, reads the rmeta) -> bin (1 s, links both rlibs).
        let mut lib = node("lib", &[], 4_000);
        lib.metadata = Some(Metadata { ms: 1_000, bytes: 0, stored_bytes: 0 });
        let mut user = node("user", &[&lib], 4_000);
        user.metadata_producers = vec![lib.thunk];
        let bin = node("bin", &[&lib, &user], 1_000);
        let graph = Graph { version: GRAPH_VERSION, thunks: vec![lib, user, bin] };
        // user runs from 1 s to 5 s, bin after both rlibs: 6 s, not 9.
        assert_eq!(graph.critical_path_ms(), 6_000);
        let prices = crate::cost::Prices::default();
        let many = predict(&graph, &free(), 1_000, &prices).unwrap();
        assert_about(&many, 6_000, "the metadata run lets user start at 1 s");
        assert_eq!(many.invocations, 4, "three compiles and lib's metadata run");
        assert_eq!(many.billed_ms, 4_000 + 1_000 + 4_000 + 1_000);
        // Without the rmeta announced, user waits for the whole of lib.
        let mut plain = graph.clone();
        plain.thunks[0].metadata = None;
        assert_eq!(plain.critical_path_ms(), 9_000);
        assert_about(&predict(&plain, &free(), 1_000, &prices).unwrap(), 9_000, "no metadata run");
    }

    #[test]
    fn an_abandoned_metadata_run_holds_its_instance_and_is_billed_to_its_end() {
        // On a cold instance the metadata run of lib ends after lib's own compile, on a warm one: the
        // build stops waiting for it, but Lambda bills it whole.
        let mut lib = node("lib", &[], 1_000);
        lib.metadata = Some(Metadata { ms: 900, bytes: 0, stored_bytes: 0 });
        let mut user = node("user", &[&lib], 1_000);
        user.metadata_producers = vec![lib.thunk];
        let graph = Graph { version: GRAPH_VERSION, thunks: vec![lib, user] };
        let model = LambdaModel { invoke_ms: 0, unpack_ms: 0, layer_bytes: 0, init_ms: 500, ..LambdaModel::default() };
        let prediction = predict(&graph, &model, 8, &crate::cost::Prices::default()).unwrap();
        assert_eq!(prediction.invocations, 3);
        assert_eq!(prediction.cold_starts, 2, "the compile and its metadata run start an instance each");
        // Compiles: lib 500 + 1,000, user 500 + 1,000 or 1,000 on a warm instance; the metadata run
        // 500 + 900 whichever answered first.
        assert!(prediction.billed_ms >= 1_500 + 1_000 + 1_400, "{prediction:?}");
    }

    #[test]
    fn blobs_travel_at_their_stored_size_and_zstd_takes_its_time() {
        let mut a = node("a", &[], 2_000);
        a.output_bytes = 60_000_000;
        a.output_stored_bytes = Some(20_000_000);
        let mut b = node("b", &[&a], 2_000);
        b.input_bytes = 60_000_000;
        b.input_stored_bytes = Some(20_000_000);
        let model = LambdaModel { init_ms: 0, layer_bytes: 0, unpack_ms: 0, ..LambdaModel::default() };
        // Packing 60 MB at 405 MB/s, then 20 MB at 100 MB/s; fetching 20 MB, then unpacking 60 MB at
        // 975 MB/s.
        assert_eq!(model.store_ms(&a), 148 + 200);
        assert_eq!(model.fetch_ms(&b), 200 + 61);
        let graph = Graph { version: GRAPH_VERSION, thunks: vec![a.clone(), b.clone()] };
        let prices = crate::cost::Prices::default();
        let prediction = predict(&graph, &model, 8, &prices).unwrap();
        let expected = 2 * model.invoke_ms + 2_000 + (148 + 200) + (200 + 61) + 2_000;
        assert_about(&prediction, expected, "stored sizes");
        // A version 1 graph, without stored sizes: the raw bytes travel, 600 ms each way.
        let (mut a, mut b) = (a, b);
        (a.output_stored_bytes, b.input_stored_bytes) = (None, None);
        let raw = Graph { version: 1, thunks: vec![a, b] };
        let prediction = predict(&raw, &model, 8, &prices).unwrap();
        assert_about(&prediction, 2 * model.invoke_ms + 2_000 + 600 + 600 + 2_000, "raw sizes");
    }
}
