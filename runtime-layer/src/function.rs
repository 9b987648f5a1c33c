//! The Lambda function's work, apart from the Lambda runtime (which `bin/bootstrap.rs` adds): one
//! invocation runs one thunk against the store it names.
//!
//! 1. Open the store (once per store per instance): S3 with a cache directory in `/tmp` in front, so
//!    what one invocation fetched serves the next ones on the same warm instance.
//! 2. Obtain the toolchain: on a cold instance, fetch `toolchains/<hash>.tar.zst`, verify and unpack it
//!    (see [`crate::layer::unpack`]); a warm one has it already.
//! 3. Run the thunk with the same executor as the local engine ([`Executor::execute`]): inputs fetched
//!    in parallel and verified, outputs and then the reduction stored.
//! 4. Answer with the reduction and where the time went, or with a failure that says whether another
//!    attempt may help.
//! 5. Keep the cache under its bound, dropping what was used longest ago.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use lambda_runtime::{LambdaEvent, service_fn};
use store_s3::{S3Options, StoreSpec};
use thunk::exec::{ExecError, Executor, Given, Ran};
use thunk::remote::{Invocation, InvocationResult, PROTOCOL_VERSION, Timings};
use thunk::workdir::Workdir;
use thunk::{Hash, ObjectKey, Store, StoreError, Thunk};
use tokio::sync::Mutex;

/// The cache directory when `LAMBDABUILD_CACHE_DIR` is not set: Lambda's only writable place.
pub const DEFAULT_CACHE_DIR: &str = "/tmp/lambdabuild";

/// The cache's bound when `LAMBDABUILD_CACHE_LIMIT_MB` is not set. Toolchains are not counted: the one
/// in use is needed, and an instance rarely sees a second one.
pub const DEFAULT_CACHE_LIMIT: u64 = 2 << 30;

/// Serves invocations as a Lambda custom runtime until the runtime API goes away: the whole of the
/// function's `bootstrap`. Settings come from the function's environment: `LAMBDABUILD_CACHE_DIR`,
/// `LAMBDABUILD_CACHE_LIMIT_MB`, the standard AWS variables for S3, and `AWS_LAMBDA_MAX_CONCURRENCY`
/// (above 1, one process serves that many invocations at once: Lambda managed instances, or the local
/// emulator).
pub fn serve() -> Result<(), lambda_runtime::Error> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run_runtime())
}

async fn run_runtime() -> Result<(), lambda_runtime::Error> {
    let cache_dir = thunk::env::var("LAMBDABUILD_CACHE_DIR").unwrap_or_else(|| DEFAULT_CACHE_DIR.to_owned());
    let cache_limit = thunk::env::var("LAMBDABUILD_CACHE_LIMIT_MB")
        .and_then(|mb| mb.parse::<u64>().ok())
        .map_or(DEFAULT_CACHE_LIMIT, |mb| mb << 20);
    let function = Arc::new(Function::new(cache_dir.into(), cache_limit));
    let handler = service_fn(move |event: LambdaEvent<Invocation>| {
        let function = Arc::clone(&function);
        async move { Ok::<InvocationResult, lambda_runtime::Error>(function.handle(event.payload).await) }
    });
    lambda_runtime::run_concurrent(handler).await
}

/// A failure to report: its message, and whether another attempt may succeed.
struct Failure {
    retryable: bool,
    message: String,
}

impl Failure {
    fn retryable(message: impl std::fmt::Display) -> Failure {
        Failure { retryable: true, message: message.to_string() }
    }

    fn final_(message: impl std::fmt::Display) -> Failure {
        Failure { retryable: false, message: message.to_string() }
    }

    fn of_store(error: StoreError) -> Failure {
        match error {
            // The network or the service: worth another attempt.
            StoreError::Backend { .. } => Failure::retryable(error),
            // Missing, damaged or unreadable objects stay so.
            _ => Failure::final_(error),
        }
    }

    fn of_exec(error: ExecError) -> Failure {
        match error {
            ExecError::Store(error) => Failure::of_store(error),
            ExecError::Sandbox { .. } => Failure::retryable(error),
            _ => Failure::final_(error),
        }
    }
}

/// The state of one function instance, kept across warm invocations.
pub struct Function {
    cache_dir: PathBuf,
    cache_limit: u64,
    stores: Mutex<HashMap<String, Arc<Opened>>>,
    /// Held while a toolchain is fetched and unpacked, so concurrent invocations do it once.
    toolchains: Mutex<()>,
    /// This instance's name in the client's timeline.
    instance: u64,
    /// Which of the invocations this process serves at once are busy: on Lambda one, with managed
    /// instances or the local emulator several, each a worker of its own in the timeline.
    slots: thunk::slots::Lanes,
}

struct Opened {
    store: Store,
    workdir: Workdir,
}

impl Function {
    /// An instance caching in `cache_dir`, at most about `cache_limit` bytes of blobs.
    pub fn new(cache_dir: PathBuf, cache_limit: u64) -> Function {
        // Random enough to tell instances apart: the clock's nanoseconds and this process.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let seed = format!("{nanos} {} {}", std::process::id(), cache_dir.display());
        let digest = thunk::Hash::of(seed.as_bytes()).to_hex();
        let instance = u64::from_str_radix(&digest[..16], 16).unwrap_or_default();
        Function {
            cache_dir,
            cache_limit,
            stores: Mutex::new(HashMap::new()),
            toolchains: Mutex::new(()),
            instance,
            slots: thunk::slots::Lanes::default(),
        }
    }

    /// Handles one invocation; every outcome is an answer (a compile error is a reduction too).
    pub async fn handle(&self, invocation: Invocation) -> InvocationResult {
        let started = Instant::now();
        let slot = self.slots.take();
        let result = self.run(invocation, started).await;
        self.slots.give_back(slot);
        self.trim_cache().await;
        match result {
            Ok((ran, mut timings)) => {
                timings.total_ms = started.elapsed().as_millis() as u64;
                timings.slot = slot as u32;
                match ran {
                    Ran::Reduced(reduction, _) => InvocationResult::Reduced { reduction: Box::new(reduction), timings },
                    Ran::Announced(output, file, _) => InvocationResult::Announced { output, file, timings },
                }
            }
            Err(failure) => InvocationResult::Failed { retryable: failure.retryable, message: failure.message },
        }
    }

    async fn run(&self, invocation: Invocation, started: Instant) -> Result<(Ran, Timings), Failure> {
        if invocation.protocol != PROTOCOL_VERSION {
            return Err(Failure::final_(format!(
                "this function speaks protocol {PROTOCOL_VERSION}, the client {}: deploy the function of the same \
                 cargo-lambdabuild version (`cargo lambdabuild deploy`)",
                invocation.protocol
            )));
        }
        let opened = self.open(&invocation.store).await?;
        let thunk = match &invocation.inline {
            Some(text) => {
                let thunk = Thunk::decode(text.as_bytes()).map_err(Failure::final_)?;
                if thunk.hash() != invocation.thunk {
                    return Err(Failure::final_(format!("the inline thunk is not thunk {}", invocation.thunk)));
                }
                thunk
            }
            None => opened.store.get_thunk(invocation.thunk).await.map_err(Failure::of_store)?,
        };
        let toolchain_started = Instant::now();
        let cold = self.obtain_toolchain(&opened, &invocation.store, thunk.toolchain).await?;
        let toolchain_ms = toolchain_started.elapsed().as_millis() as u64;
        let executor_started = Instant::now();
        let executor = Executor::new(opened.store.clone(), opened.workdir.clone(), "lambda");
        let given = Given { links: invocation.links, until: invocation.until };
        let ran = executor.execute_given(&thunk, &given).await.map_err(Failure::of_exec)?;
        let phases = match &ran {
            Ran::Reduced(_, phases) | Ran::Announced(_, _, phases) => *phases,
        };
        // The executor fetches, runs and stores in one call; what is not the run is the overhead.
        let executor_ms = (executor_started.elapsed().as_millis() as u64).saturating_sub(phases.run_ms);
        let timings = Timings {
            toolchain_ms,
            cold,
            executor_ms,
            run_ms: phases.run_ms,
            total_ms: started.elapsed().as_millis() as u64,
            fetch_ms: phases.fetch_ms,
            instance: self.instance,
            slot: 0,
        };
        Ok((ran, timings))
    }

    /// The store named `url`, opened once per instance.
    async fn open(&self, url: &str) -> Result<Arc<Opened>, Failure> {
        let mut stores = self.stores.lock().await;
        if let Some(opened) = stores.get(url) {
            return Ok(Arc::clone(opened));
        }
        let spec = StoreSpec::parse(url).map_err(Failure::final_)?;
        if !matches!(spec, StoreSpec::S3(_)) {
            return Err(Failure::final_(format!(
                "the store `{url}` is not on S3; the function can only use an s3://BUCKET/PREFIX store"
            )));
        }
        let opened = store_s3::open_store(&spec, &self.cache_dir, S3Options::default(), false)
            .await
            .map_err(Failure::retryable)?;
        let opened = Arc::new(Opened { store: opened.store, workdir: opened.workdir });
        stores.insert(url.to_owned(), Arc::clone(&opened));
        Ok(opened)
    }

    /// Makes toolchain `hash` ready in the workdir; `true` when it had to be fetched (a cold start).
    async fn obtain_toolchain(&self, opened: &Opened, url: &str, hash: Hash) -> Result<bool, Failure> {
        let dest = opened.workdir.toolchain_dir(hash);
        if dest.is_dir() {
            return Ok(false);
        }
        let _unpacking = self.toolchains.lock().await;
        if dest.is_dir() {
            return Ok(false);
        }
        // Unpacked while it downloads: the layer is verified entry by entry against its manifest,
        // and the tree is moved into place only when whole, so nothing unverified is ever used.
        let key = ObjectKey::Toolchain(hash);
        let (chunks, received) = std::sync::mpsc::channel::<Vec<u8>>();
        let unpacking = tokio::task::spawn_blocking(move || {
            let reader = ChunkReader { chunks: received, current: Vec::new(), offset: 0 };
            crate::layer::unpack(reader, hash, &dest)
        });
        let mut sink = move |chunk: &[u8]| {
            chunks.send(chunk.to_vec()).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, UNPACK_STOPPED))
        };
        let downloaded = opened.store.backend().get_streaming(key, &mut sink).await;
        drop(sink);
        let unpacked = unpacking.await.map_err(Failure::retryable)?;
        match (downloaded, unpacked) {
            (Ok(false), _) => Err(Failure::final_(format!(
                "toolchain {hash} is not in {url} ({key} is missing): upload it with `cargo lambdabuild layer`"
            ))),
            // Every file was checked against the manifest the layer is named by: the tree is right.
            (_, Ok(_)) => Ok(true),
            (Err(error), Err(_)) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(Failure::retryable(format!("cannot fetch toolchain {hash} from {url}: {error}")))
            }
            // The unpacker refused the layer (and stopped reading): its reason is the one to give.
            (_, Err(error)) => Err(Failure::final_(format!("cannot use toolchain {hash} from {url}: {error}"))),
        }
    }

    /// Once the cache is over its bound, deletes cached blobs (compressed and decompressed copies
    /// alike), those used longest ago first, until it is under three quarters of the bound.
    async fn trim_cache(&self) {
        let (dir, limit) = (self.cache_dir.clone(), self.cache_limit);
        let _ = tokio::task::spawn_blocking(move || trim(&dir, limit)).await;
    }
}

/// Files in the cache's blob directories with their size and when they were used: the access time
/// (which Linux's `relatime` moves at most daily, so close to first use), else the modification time.
/// What the download's sink says once the unpacker has stopped reading.
const UNPACK_STOPPED: &str = "the unpacking stopped";

/// The chunks of a download as a [`std::io::Read`], for an unpacker on a blocking thread; the end of
/// the stream is the sender's drop.
struct ChunkReader {
    chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    offset: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => (self.current, self.offset) = (chunk, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

fn cached_files(cache_dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut files = Vec::new();
    for dir in [cache_dir.join("blobs"), cache_dir.join("work/raw")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else { continue };
            if !metadata.is_file() {
                continue;
            }
            let used = metadata.accessed().or_else(|_| metadata.modified()).unwrap_or(std::time::UNIX_EPOCH);
            files.push((entry.path(), metadata.len(), used));
        }
    }
    files
}

fn trim(cache_dir: &Path, limit: u64) {
    let mut files = cached_files(cache_dir);
    let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
    if total <= limit {
        return;
    }
    files.sort_by_key(|(_, _, used)| *used);
    for (path, size, _) in files {
        if total <= limit / 4 * 3 {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_drops_the_least_recently_used_blobs_first() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        for (name, age) in [("old", 300), ("middle", 200), ("new", 100)] {
            let path = blobs.join(name);
            std::fs::write(&path, vec![0u8; 1000]).unwrap();
            let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_times(std::fs::FileTimes::new().set_accessed(when).set_modified(when)).unwrap();
        }
        trim(dir.path(), 3000);
        assert_eq!(cached_files(dir.path()).len(), 3, "under the bound nothing goes");
        trim(dir.path(), 2800);
        let mut left: Vec<String> =
            cached_files(dir.path()).iter().map(|(p, ..)| p.file_name().unwrap().to_string_lossy().into()).collect();
        left.sort();
        assert_eq!(left, ["middle", "new"]);
    }
}
