//! The store: content-addressed objects under one layout, locally or (later) in S3.
//!
//! | key                         | content                                                   |
//! | --------------------------- | --------------------------------------------------------- |
//! | `blobs/<hash>`              | file bytes, zstd-compressed; named by the hash of the raw bytes |
//! | `thunks/<hash>`             | a thunk's canonical form, zstd-compressed                  |
//! | `reductions/<thunk-hash>`   | the outcome of forcing that thunk, zstd-compressed         |
//! | `toolchains/<hash>.tar.zst` | a packed toolchain, named by its manifest's hash           |
//!
//! A [`Backend`] only moves opaque bytes under keys; the [`Store`] facade around it compresses, and
//! verifies every object it reads against its name, so no backend can forget to.
//!
//! A remote store (S3) is used through a local cache: [`Store::cached`] keeps a verified copy of every
//! object read or written in a local store, and a [`KnownObjects`] list of what the remote holds, so an
//! object is fetched once per machine and checked or uploaded once per machine.

mod known;
mod local;

use std::fmt;
use std::sync::Arc;

pub use known::KnownObjects;
pub use local::LocalBackend;

use crate::decode::DecodeError;
use crate::hash::Hash;
use crate::reduction::Reduction;
use crate::thunk::Thunk;

/// Frames no larger than this that state their size are decompressed in one call into one
/// allocation; others (and anything that call refuses) go through the streaming decoder.
const WHOLE_FRAME_LIMIT: u64 = 64 << 20;

/// `stored` decompressed in one call, with this thread's reused context, when it is a single frame
/// that states its size (every object `bulk::compress` wrote). A wrapper decodes dozens of thunks,
/// and a fresh streaming decoder for each cost more than the decompression.
fn decompress_whole(stored: &[u8]) -> Option<Vec<u8>> {
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let size = zstd::zstd_safe::get_frame_content_size(stored).ok()??;
    if size > WHOLE_FRAME_LIMIT {
        return None;
    }
    DECOMPRESSOR.with_borrow_mut(|decompressor| {
        if decompressor.is_none() {
            *decompressor = zstd::bulk::Decompressor::new().ok();
        }
        let bytes = decompressor.as_mut()?.decompress(stored, size as usize).ok()?;
        // A second frame after the first would not fit: that object takes the streaming path.
        (bytes.len() as u64 == size).then_some(bytes)
    })
}

/// zstd level for objects: compression runs on the forcing path of every thunk, and level 1 costs half
/// the CPU of level 3 for a few percent more bytes.
const ZSTD_LEVEL: i32 = 1;

/// An object's bytes as they are stored, for [`Store::put_object`]: callers that compress on a thread
/// of their own use this.
pub fn compress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(bytes, ZSTD_LEVEL)
}

/// Names one object of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    /// File bytes, named by their hash.
    Blob(Hash),
    /// A thunk's canonical form, named by its hash.
    Thunk(Hash),
    /// The outcome of forcing the named thunk.
    Reduction(Hash),
    /// A packed toolchain, named by its manifest's hash.
    Toolchain(Hash),
}

impl ObjectKey {
    /// The key as a relative path: the same locally and in S3.
    pub fn path(&self) -> String {
        match self {
            ObjectKey::Blob(hash) => format!("blobs/{hash}"),
            ObjectKey::Thunk(hash) => format!("thunks/{hash}"),
            ObjectKey::Reduction(hash) => format!("reductions/{hash}"),
            ObjectKey::Toolchain(hash) => format!("toolchains/{hash}.tar.zst"),
        }
    }

    /// The directory of its kind: `blobs`, `thunks`, `reductions` or `toolchains`.
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectKey::Blob(_) => "blobs",
            ObjectKey::Thunk(_) => "thunks",
            ObjectKey::Reduction(_) => "reductions",
            ObjectKey::Toolchain(_) => "toolchains",
        }
    }

    /// The key whose [`ObjectKey::path`] is `path`; `None` for anything else.
    pub fn parse(path: &str) -> Option<ObjectKey> {
        let (kind, name) = path.split_once('/')?;
        let hash = |text: &str| text.parse::<Hash>().ok();
        match kind {
            "blobs" => hash(name).map(ObjectKey::Blob),
            "thunks" => hash(name).map(ObjectKey::Thunk),
            "reductions" => hash(name).map(ObjectKey::Reduction),
            "toolchains" => hash(name.strip_suffix(".tar.zst")?).map(ObjectKey::Toolchain),
            _ => None,
        }
    }
}

/// One page of a listing: keys in order, and where the next page starts (none after the last).
#[derive(Debug, Default)]
pub struct ListPage {
    /// The keys of this page.
    pub keys: Vec<ObjectKey>,
    /// Pass this to get the next page; `None` on the last one.
    pub next: Option<String>,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object is not in the store.
    #[error("{key} is not in the store ({store})")]
    Missing {
        /// The object.
        key: ObjectKey,
        /// The store, as the user named it.
        store: String,
    },
    /// The object's bytes do not match its name.
    #[error(
        "{key} in {store} is corrupt: its content hashes to {actual}; \
         it was not used — delete it and run again to rebuild it"
    )]
    Corrupt {
        /// The object.
        key: ObjectKey,
        /// The store.
        store: String,
        /// What its content hashes to.
        actual: String,
    },
    /// The object is there but cannot be read as what it claims to be.
    #[error("{key} in {store} cannot be read: {source}")]
    Decode {
        /// The object.
        key: ObjectKey,
        /// The store.
        store: String,
        /// What is wrong with it.
        source: DecodeError,
    },
    /// The backend failed (disk, network).
    #[error("{store}: cannot {action} {key}: {source}")]
    Backend {
        /// `read`, `write` or `check`.
        action: &'static str,
        /// The object.
        key: ObjectKey,
        /// The store.
        store: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Moves opaque bytes under keys. Four methods, one implementation per file.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// The bytes under `key`, or `None` when there is no such object.
    async fn get(&self, key: ObjectKey) -> std::io::Result<Option<Vec<u8>>>;
    /// Hands the bytes under `key` to `sink` piece by piece as they arrive, so that a large object
    /// (a toolchain layer) is used while it downloads; `false` when there is no such object. A failed
    /// `sink` stops the transfer with its error. The default hands over the whole object at once.
    async fn get_streaming(
        &self,
        key: ObjectKey,
        sink: &mut (dyn for<'b> FnMut(&'b [u8]) -> std::io::Result<()> + Send),
    ) -> std::io::Result<bool> {
        match self.get(key).await? {
            Some(bytes) => sink(&bytes).map(|()| true),
            None => Ok(false),
        }
    }
    /// Writes `bytes` under `key` atomically: a reader sees the old object, the new one, or none.
    async fn put(&self, key: ObjectKey, bytes: Vec<u8>) -> std::io::Result<()>;
    /// Whether an object is under `key`.
    async fn has(&self, key: ObjectKey) -> std::io::Result<bool>;
    /// One page of the objects of a kind (`blobs`, `thunks`, …; see [`ObjectKey::kind`]), starting at
    /// `from` (the `next` of the previous page). One request answers for many keys: the uploader lists
    /// instead of checking objects one by one when that is cheaper.
    async fn list(&self, kind: &str, from: Option<String>) -> std::io::Result<ListPage>;
    /// How the user named this store (a directory, `s3://…`), for messages.
    fn describe(&self) -> String;
}

/// The store facade: compression, verification and typed access over a [`Backend`].
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    cache: Option<Arc<Cache>>,
    traffic: Arc<TrafficCounters>,
}

/// What a store has sent to and fetched from its remote backend (nothing, for a local store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Traffic {
    /// Objects written to the remote.
    pub put_requests: u64,
    /// Bytes written, as stored (compressed).
    pub bytes_up: u64,
    /// Objects read from the remote (found or not).
    pub get_requests: u64,
    /// Bytes read, as stored.
    pub bytes_down: u64,
}

#[derive(Debug, Default)]
struct TrafficCounters {
    put_requests: std::sync::atomic::AtomicU64,
    bytes_up: std::sync::atomic::AtomicU64,
    get_requests: std::sync::atomic::AtomicU64,
    bytes_down: std::sync::atomic::AtomicU64,
}

/// The local side of a remote store.
#[derive(Debug)]
struct Cache {
    local: LocalBackend,
    known: KnownObjects,
}

impl Store {
    /// A store over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Store {
        Store { backend, cache: None, traffic: Arc::default() }
    }

    /// A store over a remote `backend`, with `local` in front of it as a cache and `known` listing
    /// what the remote holds. Objects read are kept in `local` once verified; objects written go to
    /// both, to the remote only when it is not known to hold them already.
    pub fn cached(backend: Arc<dyn Backend>, local: LocalBackend, known: KnownObjects) -> Store {
        Store { backend, cache: Some(Arc::new(Cache { local, known })), traffic: Arc::default() }
    }

    /// What this store (and its clones) sent to and fetched from the remote so far.
    pub fn traffic(&self) -> Traffic {
        use std::sync::atomic::Ordering::Relaxed;
        let counters = &self.traffic;
        Traffic {
            put_requests: counters.put_requests.load(Relaxed),
            bytes_up: counters.bytes_up.load(Relaxed),
            get_requests: counters.get_requests.load(Relaxed),
            bytes_down: counters.bytes_down.load(Relaxed),
        }
    }

    /// Counts an object of `bytes` written to the remote backend directly (by the uploader).
    pub fn note_sent(&self, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.cache.is_some() {
            self.traffic.put_requests.fetch_add(1, Relaxed);
            self.traffic.bytes_up.fetch_add(bytes, Relaxed);
        }
    }

    fn note_fetched(&self, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.cache.is_some() {
            self.traffic.get_requests.fetch_add(1, Relaxed);
            self.traffic.bytes_down.fetch_add(bytes, Relaxed);
        }
    }

    /// The backend behind this store (the remote one, for a cached store).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The local cache of a remote store and what the remote is known to hold.
    pub fn local_cache(&self) -> Option<(&LocalBackend, &KnownObjects)> {
        self.cache.as_deref().map(|cache| (&cache.local, &cache.known))
    }

    /// How the user named this store.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Stores `bytes` as a blob (unless already there) and returns its hash.
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<Hash, StoreError> {
        let hash = Hash::of(bytes);
        let key = ObjectKey::Blob(hash);
        if !self.complete(key).await? {
            self.put_compressed(key, bytes).await?;
        }
        Ok(hash)
    }

    /// Like [`Store::put_blob`] for a buffer of any size: hashing and compression run on a blocking
    /// thread, so a large output does not stall the async threads that watch running compiles. Returns
    /// the hash and the size.
    pub async fn put_blob_vec(&self, bytes: Vec<u8>) -> Result<(Hash, u64), StoreError> {
        let size = bytes.len() as u64;
        let (hash, bytes) =
            tokio::task::spawn_blocking(move || (Hash::of(&bytes), bytes)).await.expect("hashing does not panic");
        let key = ObjectKey::Blob(hash);
        if !self.complete(key).await? {
            let compressed = tokio::task::spawn_blocking(move || compress(&bytes))
                .await
                .expect("compressing does not panic")
                .map_err(|e| self.backend_error("write", key, e))?;
            self.put_object(key, compressed).await?;
        }
        Ok((hash, size))
    }

    /// The bytes of blob `hash`, verified against the hash.
    pub async fn get_blob(&self, hash: Hash) -> Result<Vec<u8>, StoreError> {
        let key = ObjectKey::Blob(hash);
        let check = |bytes: Vec<u8>| self.verify(key, hash, &bytes).map(|()| bytes);
        self.get_checked(key, check).await?.ok_or_else(|| self.missing(key))
    }

    /// Stores a thunk (unless already there) and returns its hash.
    pub async fn put_thunk(&self, thunk: &Thunk) -> Result<Hash, StoreError> {
        let bytes = thunk.canonical_bytes();
        let hash = Hash::of(&bytes);
        let key = ObjectKey::Thunk(hash);
        if !self.complete(key).await? {
            self.put_compressed(key, &bytes).await?;
        }
        Ok(hash)
    }

    /// The thunk named `hash`, verified and decoded.
    pub async fn get_thunk(&self, hash: Hash) -> Result<Thunk, StoreError> {
        let key = ObjectKey::Thunk(hash);
        let check = |bytes: Vec<u8>| {
            self.verify(key, hash, &bytes)?;
            Thunk::decode(&bytes).map_err(|source| self.decode_error(key, source))
        };
        self.get_checked(key, check).await?.ok_or_else(|| self.missing(key))
    }

    /// Stores a reduction. Callers store every blob it names first (see [`crate::exec`]).
    pub async fn put_reduction(&self, reduction: &Reduction) -> Result<(), StoreError> {
        self.put_compressed(ObjectKey::Reduction(reduction.thunk), &reduction.encode()).await
    }

    /// The reduction of thunk `thunk`, if it has been forced.
    pub async fn get_reduction(&self, thunk: Hash) -> Result<Option<Reduction>, StoreError> {
        let key = ObjectKey::Reduction(thunk);
        let check =
            |bytes: Vec<u8>| Reduction::decode(&bytes, Some(thunk)).map_err(|source| self.decode_error(key, source));
        self.get_checked(key, check).await
    }

    /// Whether there is nothing to write for `key`: the store has it (and a cached store's local copy
    /// is there too).
    pub async fn complete(&self, key: ObjectKey) -> Result<bool, StoreError> {
        if let Some(cache) = &self.cache
            && !cache.local.has(key).await.unwrap_or(false)
        {
            return Ok(false);
        }
        self.has(key).await
    }

    /// Whether the store has the object (for a cached store: whether the remote has it).
    pub async fn has(&self, key: ObjectKey) -> Result<bool, StoreError> {
        if let Some(cache) = &self.cache
            && cache.known.contains(key)
        {
            return Ok(true);
        }
        let has = self.backend.has(key).await.map_err(|source| self.backend_error("check", key, source))?;
        if has && let Some(cache) = &self.cache {
            cache.known.insert(key);
        }
        Ok(has)
    }

    async fn put_compressed(&self, key: ObjectKey, bytes: &[u8]) -> Result<(), StoreError> {
        let compressed = compress(bytes).map_err(|e| self.backend_error("write", key, e))?;
        self.put_object(key, compressed).await
    }

    /// Writes an object as it is stored (compressed): to the cache, and to the backend unless it is
    /// known to hold it (a reduction is always written: it may replace one that could not be read).
    pub async fn put_object(&self, key: ObjectKey, stored: Vec<u8>) -> Result<(), StoreError> {
        let Some(cache) = &self.cache else {
            return self.backend.put(key, stored).await.map_err(|source| self.backend_error("write", key, source));
        };
        if matches!(key, ObjectKey::Reduction(_)) || !self.has(key).await? {
            let size = stored.len() as u64;
            self.backend.put(key, stored.clone()).await.map_err(|source| self.backend_error("write", key, source))?;
            self.note_sent(size);
            cache.known.insert(key);
        }
        // The local copy is only a cache: failing to keep it costs a fetch later.
        let _ = cache.local.put(key, stored).await;
        Ok(())
    }

    /// Reads an object and checks it with `check` (which turns the raw bytes into what the caller
    /// wants, or says why they are wrong). A cached store answers from its local copy when that passes
    /// the check; otherwise it fetches from the remote and keeps the copy only if it passes.
    async fn get_checked<T>(
        &self,
        key: ObjectKey,
        check: impl Fn(Vec<u8>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        if let Some(cache) = &self.cache
            && let Ok(Some(stored)) = cache.local.get(key).await
            && let Ok(value) = self.decompress(key, &stored).and_then(&check)
        {
            return Ok(Some(value));
        }
        let fetched = self.backend.get(key).await.map_err(|e| self.backend_error("read", key, e))?;
        self.note_fetched(fetched.as_ref().map_or(0, |stored| stored.len() as u64));
        let Some(stored) = fetched else {
            return Ok(None);
        };
        let value = check(self.decompress(key, &stored)?)?;
        if let Some(cache) = &self.cache {
            cache.known.insert(key);
            let _ = cache.local.put(key, stored).await;
        }
        Ok(Some(value))
    }

    fn decompress(&self, key: ObjectKey, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        if let Some(bytes) = decompress_whole(stored) {
            return Ok(bytes);
        }
        // A damaged frame is corruption of the object, not a failure of the backend.
        zstd::stream::decode_all(stored).map_err(|e| StoreError::Corrupt {
            key,
            store: self.describe(),
            actual: format!("nothing: it is not a valid zstd frame ({e})"),
        })
    }

    fn verify(&self, key: ObjectKey, expected: Hash, bytes: &[u8]) -> Result<(), StoreError> {
        let actual = Hash::of(bytes);
        if actual == expected {
            Ok(())
        } else {
            Err(StoreError::Corrupt { key, store: self.describe(), actual: actual.to_hex() })
        }
    }

    fn missing(&self, key: ObjectKey) -> StoreError {
        StoreError::Missing { key, store: self.describe() }
    }

    fn decode_error(&self, key: ObjectKey, source: DecodeError) -> StoreError {
        StoreError::Decode { key, store: self.describe(), source }
    }

    fn backend_error(&self, action: &'static str, key: ObjectKey, source: std::io::Error) -> StoreError {
        StoreError::Backend { action, key, store: self.describe(), source }
    }
}
