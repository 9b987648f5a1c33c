//! A small HTTP proxy between the binaries under test and the real local S3 server: it counts requests
//! by method and can inject faults (503 SlowDown, 500, dropped connections, answers two seconds late)
//! into a share of them.
//! The client is pointed at it with `AWS_ENDPOINT_URL`; request signatures stay valid because the
//! proxy forwards the `Host` header it received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `503 SlowDown`, S3's throttling answer.
    SlowDown,
    /// `500 InternalError`.
    InternalError,
    /// The connection is closed without an answer.
    Drop,
    /// The answer comes, but two seconds late.
    Slow,
}

/// The proxy, running on its own runtime thread until dropped.
pub struct Proxy {
    pub url: String,
    state: Arc<State>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

struct State {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    counts: Mutex<BTreeMap<String, u64>>,
    seen: AtomicU64,
    /// Every `every`-th request gets the next fault of `faults`, in turn.
    plan: Mutex<(u64, Vec<Fault>)>,
    injected: AtomicU64,
}

impl Proxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        let (ready_in, ready) = std::sync::mpsc::channel();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let state = Arc::new(State {
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            counts: Mutex::new(BTreeMap::new()),
            seen: AtomicU64::new(0),
            plan: Mutex::new((0, Vec::new())),
            injected: AtomicU64::new(0),
        });
        let serving = Arc::clone(&state);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let address: SocketAddr = listener.local_addr().unwrap();
                ready_in.send(address).unwrap();
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        let state = Arc::clone(&serving);
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
        let address = ready.recv().unwrap();
        Proxy { url: format!("http://{address}"), state, _shutdown: shutdown }
    }

    /// From now on, every `every`-th request gets a fault, cycling through `faults`.
    pub fn inject(&self, every: u64, faults: &[Fault]) {
        *self.state.plan.lock().unwrap() = (every, faults.to_vec());
    }

    /// Requests seen so far, by method (`PUT`, `HEAD`, `GET`, `POST`, …), faults included.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.state.counts.lock().unwrap().clone()
    }

    /// Requests of `method` seen so far.
    pub fn count(&self, method: &str) -> u64 {
        self.counts().get(method).copied().unwrap_or(0)
    }

    /// Every request seen so far.
    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::SeqCst)
    }

    /// Forgets the counts.
    pub fn reset(&self) {
        self.state.counts.lock().unwrap().clear();
    }
}

impl State {
    async fn handle(&self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::io::Error> {
        *self.counts.lock().unwrap().entry(request.method().to_string()).or_default() += 1;
        let number = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let fault = {
            let plan = self.plan.lock().unwrap();
            let (every, faults) = &*plan;
            (*every > 0 && number.is_multiple_of(*every) && !faults.is_empty())
                .then(|| faults[((number / every) as usize) % faults.len()])
        };
        let (mut parts, body) = request.into_parts();
        let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
        if fault == Some(Fault::Slow) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        } else if let Some(fault) = fault {
            self.injected.fetch_add(1, Ordering::SeqCst);
            let (status, code) = match fault {
                Fault::SlowDown => (StatusCode::SERVICE_UNAVAILABLE, "SlowDown"),
                Fault::InternalError => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
                // An error from the service makes hyper close the connection without an answer.
                Fault::Drop => return Err(std::io::Error::other("injected: connection dropped")),
                Fault::Slow => unreachable!("a slow answer is forwarded"),
            };
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>injected by the test proxy</Message></Error>"
            );
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/xml")
                .body(Full::new(Bytes::from(xml)))
                .unwrap();
            return Ok(response);
        }
        // The body is forwarded whole, with its length: no chunked framing.
        parts.headers.remove(hyper::header::TRANSFER_ENCODING);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("{}{path}", self.upstream).parse().map_err(std::io::Error::other)?;
        let upstream = Request::from_parts(parts, Full::new(body));
        let response = self.client.request(upstream).await.map_err(std::io::Error::other)?;
        let (mut parts, body) = response.into_parts();
        parts.headers.remove(hyper::header::TRANSFER_ENCODING);
        let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
        Ok(Response::from_parts(parts, Full::new(body)))
    }
}
