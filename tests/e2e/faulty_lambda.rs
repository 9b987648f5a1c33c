//! A Lambda function whose invocations fail the ways Lambda's do, injected from outside the product:
//! this checkout's real function executable serves a function of the dev-services emulator through a
//! proxy of the Lambda Runtime API, which makes a chosen share of invocations crash, hang or time out.
//! The client sees that through the emulator's Invoke API, as it would see it from Lambda (in the
//! emulator's shape: HTTP 500 with `errorType` and `errorMessage`).
//!
//! The emulator serves a function for each bin target of this workspace (and `_`); dev-services
//! serves `bootstrap`, so each [`FaultyFunction`] leases one of the other names, locked across every
//! test process using the same services.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::primitives::Blob;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use thunk::remote::{Invocation, InvocationResult};

use crate::support::{DevServices, dev_services, hygienic};

/// How an invocation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LambdaFault {
    /// The runtime dies with the invocation (a crash, or the kernel's OOM killer): it never reaches
    /// the function, and the client gets Lambda's `Runtime.ExitError`.
    Crash,
    /// The invocation is taken and never answered: the client hears nothing until its own timeout.
    Hang,
    /// The function runs it (its outputs may reach the store), but the client gets Lambda's
    /// `Sandbox.Timedout` instead of its answer.
    Timeout,
}

/// The names the emulator serves besides dev-services' `bootstrap`: the workspace's other bin targets
/// and `_`. Checked by hand: no invocation of one reaches a poller of another.
const FUNCTION_NAMES: [&str; 4] = ["lambdabuild-bootstrap", "cargo-lambdabuild", "rustc-model", "_"];

/// The function, served until dropped: its process (restarted when it exits, as Lambda starts a new
/// instance) and the proxy in front of the emulator's Runtime API.
pub struct FaultyFunction {
    /// The function's name on the emulator.
    pub name: String,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    supervisor: Option<std::thread::JoinHandle<()>>,
    /// Stops the proxy when dropped; its thread ends once no request of it can reach the emulator.
    proxy: Option<(tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
    /// The function's cache directory and log.
    dir: tempfile::TempDir,
    /// Released last, once nothing serves the name.
    _lease: std::fs::File,
}

struct State {
    /// The emulator, `http://127.0.0.1:PORT`.
    upstream: String,
    /// `{upstream}/.rt/NAME/2018-06-01/runtime/invocation`.
    invocations_url: String,
    client: Client<HttpConnector, Full<Bytes>>,
    plan: Mutex<Plan>,
    invocations: AtomicU64,
    injected: AtomicU64,
    /// Invocations handed to the function, and those it answered (a response or an error of its own).
    delivered: AtomicU64,
    answered: AtomicU64,
    /// Invocations that will time out, with when they were delivered.
    timing_out: Mutex<HashMap<String, Instant>>,
}

/// Every `every`-th invocation since the plan was made gets the next of `faults`; with `by_kind`,
/// full compiles and metadata runs are counted apart, so that both kinds get faults whatever order
/// the client sends them in.
struct Plan {
    every: u64,
    faults: Vec<LambdaFault>,
    seen: u64,
    by_kind: bool,
    seen_metadata_runs: u64,
    injected: u64,
}

impl Plan {
    fn new(every: u64, faults: &[LambdaFault], by_kind: bool) -> Plan {
        Plan { every, faults: faults.to_vec(), seen: 0, by_kind, seen_metadata_runs: 0, injected: 0 }
    }
}

const REQUEST_ID: &str = "lambda-runtime-aws-request-id";

impl FaultyFunction {
    /// Starts the function with `concurrency` invocations served at once by one process (lambda_runtime's
    /// concurrent mode, as dev-services runs it), its store traffic going to `s3_endpoint` (the S3
    /// server, or a fault proxy in front of it). It runs without bubblewrap: it may see this machine's
    /// compiler, which dev-services' hermetic function shows no thunk needs.
    pub fn start(concurrency: u32, s3_endpoint: &str) -> FaultyFunction {
        let services = dev_services();
        let (name, lease) = lease_name(services);
        let upstream = services.lambda_endpoint.trim_end_matches('/').to_owned();
        let state = Arc::new(State {
            invocations_url: format!("{upstream}/.rt/{name}/2018-06-01/runtime/invocation"),
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            plan: Mutex::new(Plan::new(0, &[], false)),
            invocations: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            timing_out: Mutex::new(HashMap::new()),
        });
        let (address, proxy) = serve(Arc::clone(&state));

        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lambdabuild-bootstrap"));
        hygienic(&mut command)
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://{address}/.rt/{name}"))
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096")
            .env("AWS_LAMBDA_MAX_CONCURRENCY", concurrency.to_string())
            .env("LAMBDABUILD_CACHE_DIR", dir.path().join("cache"))
            .envs(services.env(s3_endpoint))
            .stdin(Stdio::null());
        let log = dir.path().join("function.log");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let supervisor = std::thread::spawn(move || supervise(command, &log, &stopped));
        FaultyFunction {
            name: name.to_owned(),
            state,
            stop,
            supervisor: Some(supervisor),
            proxy: Some(proxy),
            dir,
            _lease: lease,
        }
    }

    /// From now on, every `every`-th invocation (counted from this call) gets the next fault of
    /// `faults`, in turn; `every = 0` turns faults off.
    pub fn inject(&self, every: u64, faults: &[LambdaFault]) {
        *self.state.plan.lock().unwrap() = Plan::new(every, faults, false);
    }

    /// Like [`FaultyFunction::inject`], counting full compiles and metadata runs apart: every
    /// `every`-th of each kind gets a fault.
    pub fn inject_by_kind(&self, every: u64, faults: &[LambdaFault]) {
        *self.state.plan.lock().unwrap() = Plan::new(every, faults, true);
    }

    /// Invocations the emulator handed to this function so far, faulted ones included.
    pub fn invocations(&self) -> u64 {
        self.state.invocations.load(Ordering::SeqCst)
    }

    /// Invocations handed to the function that it has not answered yet.
    pub fn unanswered(&self) -> u64 {
        let delivered = self.state.delivered.load(Ordering::SeqCst);
        delivered.saturating_sub(self.state.answered.load(Ordering::SeqCst))
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyFunction {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        // Before the name is released: a poll left waiting would take the next user's invocation.
        if let Some((shutdown, thread)) = self.proxy.take() {
            drop(shutdown);
            let _ = thread.join();
        }
        // The function's own account of a failing test (a panic, a runtime error).
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.path().join("function.log"))
            && !log.is_empty()
        {
            eprintln!("function {} wrote:\n{log}", self.name);
        }
    }
}

/// Takes a function name no other test (of any process) is using, waiting for one to be free. The
/// lock files live with dev-services' state, so they are shared by every user of those services.
fn lease_name(services: &DevServices) -> (&'static str, std::fs::File) {
    use std::os::fd::AsRawFd;
    let dir = services.data.parent().unwrap().join("function-names");
    std::fs::create_dir_all(&dir).unwrap();
    loop {
        for name in FUNCTION_NAMES {
            let file = std::fs::File::create(dir.join(format!("{name}.lock"))).unwrap();
            // SAFETY: flock on a descriptor this function owns; the lock goes with the file.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return (name, file);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the function's process until `stop`, starting it again whenever it exits.
fn supervise(mut command: Command, log: &std::path::Path, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let output = std::fs::File::options().create(true).append(true).open(log).unwrap();
        command.stdout(output.try_clone().unwrap()).stderr(output);
        let mut child = command.spawn().unwrap();
        while child.try_wait().unwrap().is_none() {
            if stop.load(Ordering::SeqCst) {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // As dev-services does: a function that dies at once is not restarted in a tight loop.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Serves the proxy on its own runtime thread until the returned sender is dropped.
fn serve(state: Arc<State>) -> (SocketAddr, (tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>)) {
    let (ready_in, ready) = std::sync::mpsc::channel();
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            state.drain_stale().await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ready_in.send(listener.local_addr().unwrap()).unwrap();
            let accept = async {
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let state = Arc::clone(&state);
                            async move { state.handle(request).await }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            };
            tokio::select! {
                () = accept => {}
                _ = stop => {}
            }
        });
    });
    (ready.recv().unwrap(), (shutdown, thread))
}

fn request_id(response: &Response<Full<Bytes>>) -> Option<String> {
    response.headers().get(REQUEST_ID)?.to_str().ok().map(str::to_owned)
}

/// The invocation a runtime request answers: `…/runtime/invocation/ID/response` or `…/ID/error`.
fn answered_invocation(path: &str) -> Option<&str> {
    let (id, what) = path.split_once("/runtime/invocation/")?.1.split_once('/')?;
    matches!(what, "response" | "error").then_some(id)
}

impl State {
    async fn handle(&self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::io::Error> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
        let path = parts.uri.path().to_owned();
        if parts.method == Method::GET && path.ends_with("/runtime/invocation/next") {
            return self.next().await;
        }
        let timing_out = answered_invocation(&path).filter(|_| parts.method == Method::POST);
        if timing_out.is_some() {
            self.answered.fetch_add(1, Ordering::SeqCst);
        }
        let delivered = timing_out.and_then(|id| self.timing_out.lock().unwrap().remove(id));
        if let (Some(id), Some(delivered)) = (timing_out, delivered) {
            let seconds = delivered.elapsed().as_secs_f64();
            self.post_error(id, "Sandbox.Timedout", &format!("{id} Task timed out after {seconds:.2} seconds")).await?;
            return Ok(Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")))
                .unwrap());
        }
        let mut upstream = Request::from_parts(parts, Full::new(body));
        *upstream.uri_mut() = format!("{}{path}", self.upstream).parse().map_err(std::io::Error::other)?;
        upstream.headers_mut().remove(hyper::header::HOST);
        self.send(upstream).await
    }

    /// The function's next invocation: the emulator's next one that no fault takes.
    async fn next(&self) -> Result<Response<Full<Bytes>>, std::io::Error> {
        loop {
            let response = self.send(self.next_request()).await?;
            let Some(id) = request_id(&response) else { return Ok(response) };
            self.invocations.fetch_add(1, Ordering::SeqCst);
            // The payload, to tell a metadata run (`until` set) from a full compile.
            let (parts, body) = response.into_parts();
            let payload = body.collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
            let metadata_run = serde_json::from_slice::<Invocation>(&payload).is_ok_and(|i| i.until.is_some());
            let response = Response::from_parts(parts, Full::new(payload));
            match self.fate(metadata_run) {
                None => {
                    self.delivered.fetch_add(1, Ordering::SeqCst);
                    return Ok(response);
                }
                Some(LambdaFault::Crash) => {
                    let message = format!("RequestId: {id} Error: Runtime exited with error: signal: killed");
                    self.post_error(&id, "Runtime.ExitError", &message).await?;
                }
                Some(LambdaFault::Hang) => {}
                Some(LambdaFault::Timeout) => {
                    self.delivered.fetch_add(1, Ordering::SeqCst);
                    self.timing_out.lock().unwrap().insert(id, Instant::now());
                    return Ok(response);
                }
            }
        }
    }

    fn fate(&self, metadata_run: bool) -> Option<LambdaFault> {
        let mut plan = self.plan.lock().unwrap();
        let seen = if plan.by_kind && metadata_run { &mut plan.seen_metadata_runs } else { &mut plan.seen };
        *seen += 1;
        let seen = *seen;
        if plan.every == 0 || plan.faults.is_empty() || !seen.is_multiple_of(plan.every) {
            return None;
        }
        self.injected.fetch_add(1, Ordering::SeqCst);
        plan.injected += 1;
        Some(plan.faults[((plan.injected - 1) as usize) % plan.faults.len()])
    }

    /// Answers what the emulator still queues for this name: invocations whose client gave up before
    /// any function polled (a killed test) would otherwise reach this one and be counted.
    async fn drain_stale(&self) {
        loop {
            let polled = tokio::time::timeout(Duration::from_millis(200), self.send(self.next_request())).await;
            let Ok(Ok(response)) = polled else { return };
            let Some(id) = request_id(&response) else { return };
            let _ = self.post_error(&id, "Runtime.Stale", "left queued by an earlier test").await;
        }
    }

    fn next_request(&self) -> Request<Full<Bytes>> {
        Request::get(format!("{}/next", self.invocations_url)).body(Full::default()).unwrap()
    }

    /// Reports invocation `id` failed, as Lambda does when the runtime dies or times out.
    async fn post_error(&self, id: &str, kind: &str, message: &str) -> Result<(), std::io::Error> {
        let body = serde_json::json!({ "errorType": kind, "errorMessage": message }).to_string();
        let request = Request::post(format!("{}/{id}/error", self.invocations_url))
            .header("content-type", "application/json")
            .header("lambda-runtime-function-error-type", kind)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.send(request).await.map(drop)
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, std::io::Error> {
        let response = self.client.request(request).await.map_err(std::io::Error::other)?;
        let (mut parts, body) = response.into_parts();
        // The body is passed on whole, with its length: no chunked framing.
        parts.headers.remove(hyper::header::TRANSFER_ENCODING);
        let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
        Ok(Response::from_parts(parts, Full::new(body)))
    }
}

/// What the client of one invocation saw.
#[derive(Debug)]
enum Seen {
    /// The function's answer.
    Answer(InvocationResult),
    /// The emulator's shape of a function error: its `errorType`.
    FunctionError(String),
    /// Nothing, within the client's timeout.
    Nothing,
}

/// A client as the engine's: no retries of the SDK's own, so that each call is one invocation.
fn lambda_client(services: &DevServices, timeout: Duration) -> aws_sdk_lambda::Client {
    let timeout = aws_sdk_lambda::config::timeout::TimeoutConfig::builder().operation_timeout(timeout).build();
    let config = aws_sdk_lambda::config::Builder::from(&services.sdk_config(&services.lambda_endpoint))
        .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
        .timeout_config(timeout)
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

fn invoke(runtime: &tokio::runtime::Runtime, client: &aws_sdk_lambda::Client, name: &str, payload: &[u8]) -> Seen {
    let sent = runtime.block_on(client.invoke().function_name(name).payload(Blob::new(payload)).send());
    match sent {
        Ok(output) => Seen::Answer(serde_json::from_slice(output.payload().unwrap().as_ref()).unwrap()),
        Err(SdkError::TimeoutError(_)) => Seen::Nothing,
        Err(SdkError::ServiceError(error)) => {
            assert_eq!(error.raw().status().as_u16(), 500, "{error:?}");
            let body: serde_json::Value = serde_json::from_slice(error.raw().body().bytes().unwrap()).unwrap();
            Seen::FunctionError(body["errorType"].as_str().unwrap().to_owned())
        }
        Err(error) => panic!("{error:?}"),
    }
}

#[test]
fn injected_crashes_hangs_and_timeouts_reach_the_client_as_from_lambda() {
    let services = dev_services();
    let function = FaultyFunction::start(2, &services.endpoint);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Answers may be slow on a busy machine; a hang is waited for only briefly.
    let client = lambda_client(services, Duration::from_secs(60));
    let impatient = lambda_client(services, Duration::from_secs(2));
    let thunk = crate::lambda::thunk_without_toolchain();
    let store = services.create_bucket("faults").to_string();
    let payload = serde_json::to_vec(&Invocation::new(&store, thunk.hash(), &thunk)).unwrap();
    let answered = |seen: Seen| match seen {
        Seen::Answer(InvocationResult::Failed { retryable: false, message }) => {
            assert!(message.contains("is not in"), "{message}")
        }
        other => panic!("not the function's answer: {other:?}"),
    };

    function.inject(2, &[LambdaFault::Crash, LambdaFault::Hang, LambdaFault::Timeout]);
    answered(invoke(&runtime, &client, &function.name, &payload));
    let crashed = invoke(&runtime, &client, &function.name, &payload);
    assert!(matches!(&crashed, Seen::FunctionError(kind) if kind == "Runtime.ExitError"), "{crashed:?}");
    answered(invoke(&runtime, &client, &function.name, &payload));
    let hung = invoke(&runtime, &impatient, &function.name, &payload);
    assert!(matches!(hung, Seen::Nothing), "{hung:?}");
    answered(invoke(&runtime, &client, &function.name, &payload));
    let timed_out = invoke(&runtime, &client, &function.name, &payload);
    assert!(matches!(&timed_out, Seen::FunctionError(kind) if kind == "Sandbox.Timedout"), "{timed_out:?}");
    assert_eq!((function.invocations(), function.injected()), (6, 3));

    function.inject(0, &[]);
    for _ in 0..3 {
        answered(invoke(&runtime, &client, &function.name, &payload));
    }
    assert_eq!((function.invocations(), function.injected()), (9, 3));
}
