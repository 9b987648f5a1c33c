//! The uploader: before a remote engine forces a graph, the remote store gets every object the graph
//! needs that it lacks.
//!
//! 1. Walk the graph from its roots: every thunk, every blob input (source files stay where they are
//!    on this machine, named by hash; they are read, checked against their hash and compressed on the
//!    way), each toolchain's manifest, and (when asked) each toolchain's packed layer.
//! 2. Skip what the local list of known objects says the remote holds: an unchanged graph uploaded
//!    from this machine before costs no request at all.
//! 3. Find which of the rest the store holds: by listing each kind of object when that takes fewer
//!    requests than checking one by one (a fresh prefix is one request), else with parallel HEAD
//!    requests; and PUT what is missing, in parallel. The S3 backend
//!    bounds the requests in flight, writes content-addressed objects conditionally, goes multipart
//!    for large bodies, and retries throttling and 5xx with backoff.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use thunk::LocalBackend;
use thunk::store::Backend;
use thunk::workdir::Workdir;
use thunk::{Hash, Input, ObjectKey, Store};

/// zstd level for source blobs compressed on the way up (the same as the store's).
const ZSTD_LEVEL: i32 = 1;

/// zstd level of a packed toolchain layer, with long-distance matching (`runtime_layer::layer::pack`).
/// Measured on rustc 1.95's 504 MiB: level 3 packs it to 170 MB; level 5 to 153 MB in 7 s on one core,
/// once per toolchain, and every cold Lambda instance then downloads 10% less.
const LAYER_LEVEL: i32 = 5;

/// What an upload did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UploadReport {
    /// Objects the graph needs.
    pub objects: usize,
    /// Skipped because this machine knows the store holds them.
    pub known: usize,
    /// Found in the store by a check.
    pub present: usize,
    /// Uploaded.
    pub uploaded: usize,
    /// Bytes uploaded (as stored: compressed).
    pub bytes: u64,
}

/// Where an object's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    /// The local store holds it as it is stored.
    Local,
    /// A file on this machine that a thunk names by hash.
    File { path: PathBuf, hash: Hash, size: u64 },
}

/// Uploads everything the thunks below `roots` need to the remote store behind `store`. With
/// `toolchains`, each toolchain's packed layer too (packed into the local store first if needed).
pub async fn upload(
    store: &Store,
    workdir: &Workdir,
    roots: &[Hash],
    toolchains: bool,
    jobs: usize,
    progress: bool,
) -> anyhow::Result<UploadReport> {
    let Some((local, known)) = store.local_cache() else {
        // A local store is the store: nothing to send.
        return Ok(UploadReport::default());
    };
    let needed = graph_objects(store, local, roots).await?;
    // Held until the upload is done: one process on this machine packs and sends a toolchain at a
    // time. In CI mode cargo runs wrappers side by side, and on a fresh cache each of them would
    // otherwise pack the layer (seconds of zstd) and send its hundreds of megabytes; the others wait,
    // then find it done.
    let mut _packing = Vec::new();
    if toolchains {
        for toolchain in needed.keys().filter_map(|key| match key {
            ObjectKey::Toolchain(hash) if !known.contains(*key) => Some(*hash),
            _ => None,
        }) {
            _packing.push(lock_toolchain(workdir, toolchain).await?);
            pack_toolchain(store, workdir, local, toolchain).await?;
        }
    }
    let needed: Vec<(ObjectKey, Source)> =
        needed.into_iter().filter(|(key, _)| toolchains || !matches!(key, ObjectKey::Toolchain(_))).collect();
    send(store, needed, jobs, progress).await
}

/// Holds this machine's lock on packing and sending toolchain `hash` until dropped.
async fn lock_toolchain(workdir: &Workdir, hash: Hash) -> anyhow::Result<thunk::workdir::Lock> {
    let workdir = workdir.clone();
    tokio::task::spawn_blocking(move || workdir.lock(&format!("toolchain-{hash}")))
        .await
        .context("the locking task panicked")?
        .with_context(|| format!("cannot lock toolchain {hash} for packing"))
}

/// Packs toolchain `hash` (named on this machine) into the local store and, for a remote store,
/// uploads the layer and its manifest unless the store holds them. Returns the layer's size.
pub async fn upload_toolchain(
    store: &Store,
    workdir: &Workdir,
    local: &LocalBackend,
    hash: Hash,
    jobs: usize,
    progress: bool,
) -> anyhow::Result<(u64, UploadReport)> {
    pack_toolchain(store, workdir, local, hash).await?;
    let size = estimated_size(&ObjectKey::Toolchain(hash), &Source::Local, local);
    let needed = vec![(ObjectKey::Blob(hash), Source::Local), (ObjectKey::Toolchain(hash), Source::Local)];
    let report = if store.local_cache().is_some() {
        send(store, needed, jobs, progress).await?
    } else {
        UploadReport::default()
    };
    Ok((size, report))
}

/// Sends the objects of `needed` that the remote store behind `store` lacks.
async fn send(
    store: &Store,
    needed: Vec<(ObjectKey, Source)>,
    jobs: usize,
    progress: bool,
) -> anyhow::Result<UploadReport> {
    let Some((local, known)) = store.local_cache() else {
        return Ok(UploadReport::default());
    };
    let mut report = UploadReport { objects: needed.len(), ..UploadReport::default() };
    // Each with its size, measured once: for the order and the progress bar.
    let mut unknown: Vec<(ObjectKey, Source, u64)> = needed
        .into_iter()
        .filter(|(key, _)| !known.contains(*key))
        .map(|(key, source)| {
            let size = estimated_size(&key, &source, local);
            (key, source, size)
        })
        .collect();
    // Largest first: the toolchain layer's parts then overlap with the many small objects instead of
    // starting when they are done.
    unknown.sort_by_key(|(_, _, size)| std::cmp::Reverse(*size));
    report.known = report.objects - unknown.len();
    if unknown.is_empty() {
        return Ok(report);
    }

    let remote = Arc::clone(store.backend());
    let listed = Arc::new(list_present(remote.as_ref(), &unknown).await?);
    let bar = progress_bar(progress, unknown.iter().map(|(_, _, size)| size).sum());
    let sent = Arc::new(AtomicU64::new(0));
    let present = Arc::new(AtomicUsize::new(0));
    let uploaded = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let shared = Arc::new(store.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (key, source, weight) in unknown {
        let (remote, local, limit, bar) = (Arc::clone(&remote), local.clone(), Arc::clone(&limit), bar.clone());
        let (sent, present, uploaded, store) = (sent.clone(), present.clone(), uploaded.clone(), Arc::clone(&shared));
        let listed = Arc::clone(&listed);
        tasks.spawn(async move {
            // Bounds the bodies held in memory; the backend bounds the requests.
            let _permit = limit.acquire_owned().await.expect("never closed");
            let there = match listed.answer(key) {
                Some(there) => there,
                None => {
                    remote.has(key).await.with_context(|| format!("cannot check {key} in {}", remote.describe()))?
                }
            };
            if there {
                present.fetch_add(1, Ordering::Relaxed);
            } else {
                let stored = stored_bytes(key, &source, &local).await?;
                let size = stored.len() as u64;
                remote
                    .put(key, stored)
                    .await
                    .with_context(|| format!("cannot upload {key} to {}", remote.describe()))?;
                sent.fetch_add(size, Ordering::Relaxed);
                store.note_sent(size);
                uploaded.fetch_add(1, Ordering::Relaxed);
            }
            if let Some((_, known)) = store.local_cache() {
                known.insert(key);
            }
            bar.inc(weight);
            bar.set_message(format!("{} objects", uploaded.load(Ordering::Relaxed)));
            anyhow::Ok(())
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined.context("an upload task panicked").and_then(|result| result) {
            first_error.get_or_insert(error);
        }
    }
    bar.finish_and_clear();
    if let Some(error) = first_error {
        return Err(error);
    }
    report.present = present.load(Ordering::Relaxed);
    report.uploaded = uploaded.load(Ordering::Relaxed);
    report.bytes = sent.load(Ordering::Relaxed);
    Ok(report)
}

/// What listing the store said about the objects to upload.
#[derive(Debug, Default)]
struct Listed {
    /// Keys the listing showed.
    present: HashSet<ObjectKey>,
    /// Kinds listed to the end: a key of these kinds that was not shown is absent.
    complete: HashSet<&'static str>,
}

impl Listed {
    /// Whether the store holds `key`, if the listing knows.
    fn answer(&self, key: ObjectKey) -> Option<bool> {
        if self.present.contains(&key) { Some(true) } else { self.complete.contains(key.kind()).then_some(false) }
    }
}

/// Lists each kind of object among `objects` while that is cheaper than a HEAD per object: a page
/// answers for up to 1,000 keys and costs about what a few HEADs cost, so each kind gets a budget of
/// 1 + (its objects / 100) pages. A fresh or small prefix is listed whole in a request or two; a large
/// shared one stops at the budget, and what it did not show is checked with HEAD.
async fn list_present(remote: &dyn Backend, objects: &[(ObjectKey, Source, u64)]) -> anyhow::Result<Listed> {
    let mut per_kind: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (key, _, _) in objects {
        *per_kind.entry(key.kind()).or_default() += 1;
    }
    let mut listed = Listed::default();
    for (kind, count) in per_kind {
        let mut from = None;
        for _ in 0..1 + count / 100 {
            let page = remote
                .list(kind, from)
                .await
                .with_context(|| format!("cannot list {kind} in {}", remote.describe()))?;
            listed.present.extend(page.keys);
            from = page.next;
            if from.is_none() {
                listed.complete.insert(kind);
                break;
            }
        }
    }
    Ok(listed)
}

/// Every object the thunks below `roots` need, in a stable order, with where its bytes are.
async fn graph_objects(
    store: &Store,
    local: &LocalBackend,
    roots: &[Hash],
) -> anyhow::Result<BTreeMap<ObjectKey, Source>> {
    let mut objects = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut stack = roots.to_vec();
    while let Some(hash) = stack.pop() {
        if !seen.insert(hash) {
            continue;
        }
        let thunk = store.get_thunk(hash).await?;
        objects.insert(ObjectKey::Thunk(hash), Source::Local);
        objects.insert(ObjectKey::Blob(thunk.toolchain), Source::Local);
        objects.insert(ObjectKey::Toolchain(thunk.toolchain), Source::Local);
        for (path, input) in &thunk.inputs {
            match input {
                Input::Blob { hash, size, .. } => {
                    let key = ObjectKey::Blob(*hash);
                    if objects.contains_key(&key) {
                        continue;
                    }
                    let source = if local.has(key).await.unwrap_or(false) {
                        Source::Local
                    } else {
                        Source::File { path: Path::new("/").join(path.as_str()), hash: *hash, size: *size }
                    };
                    objects.insert(key, source);
                }
                Input::Link { thunk, .. } => stack.push(*thunk),
                Input::Symlink { .. } => {}
            }
        }
    }
    Ok(objects)
}

/// The bytes of an object as the store keeps them.
async fn stored_bytes(key: ObjectKey, source: &Source, local: &LocalBackend) -> anyhow::Result<Vec<u8>> {
    match source {
        Source::Local => local
            .get(key)
            .await
            .with_context(|| format!("cannot read {key} from the local store"))?
            .with_context(|| format!("{key} is missing from the local store ({})", local.describe())),
        Source::File { path, hash, size } => {
            let (path, hash, size) = (path.clone(), *hash, *size);
            tokio::task::spawn_blocking(move || {
                let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                if bytes.len() as u64 != size || Hash::of(&bytes) != hash {
                    bail!("{} changed after the build graph was made; run the build again", path.display());
                }
                zstd::bulk::compress(&bytes, ZSTD_LEVEL).context("cannot compress")
            })
            .await
            .context("a compression task panicked")?
        }
    }
}

/// What an object weighs on the progress bar: its stored size where known, else its raw size.
fn estimated_size(key: &ObjectKey, source: &Source, local: &LocalBackend) -> u64 {
    match source {
        Source::File { size, .. } => *size,
        Source::Local => std::fs::metadata(local.path_of(*key)).map_or(0, |metadata| metadata.len()),
    }
}

fn progress_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    // indicatif draws nothing when stderr is not a terminal.
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("   Uploading [{bar:27}] {bytes}/{total_bytes} {msg} ({bytes_per_sec})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// Packs toolchain `hash` into the local store (`toolchains/<hash>.tar.zst`) unless it is there.
async fn pack_toolchain(store: &Store, workdir: &Workdir, local: &LocalBackend, hash: Hash) -> anyhow::Result<()> {
    let key = ObjectKey::Toolchain(hash);
    if local.has(key).await.unwrap_or(false) {
        return Ok(());
    }
    let manifest_bytes = store.get_blob(hash).await.context("cannot read the toolchain manifest")?;
    let manifest = thunk::manifest::ToolchainManifest::decode(&manifest_bytes)
        .with_context(|| format!("toolchain {hash}: cannot read its manifest"))?;
    let tree = workdir.toolchain_dir(hash);
    if !tree.is_dir() {
        bail!("toolchain {hash} is not on this machine; name it first (`cargo lambdabuild toolchain`)");
    }
    let packed = tokio::task::spawn_blocking(move || {
        let mut packed = Vec::new();
        runtime_layer::layer::pack(&manifest, &tree, &mut packed, LAYER_LEVEL).map(|_| packed)
    })
    .await
    .context("the packing task panicked")?
    .with_context(|| format!("cannot pack toolchain {hash}"))?;
    local.put(key, packed).await.with_context(|| format!("cannot keep the packed toolchain {hash}"))?;
    Ok(())
}
