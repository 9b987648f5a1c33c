//! The S3 store and the uploader against the real local S3 server (s3s-fs, started by
//! `scripts/dev-services up`), through a proxy that counts requests and injects faults.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use store_s3::{S3Backend, S3Location, S3Options};
use thunk::store::Backend;
use thunk::{LocalBackend, ObjectKey, Store, StoreError};

use crate::proxy::{Fault, Proxy};
use crate::support::{DevServices, Project, closed_port_url, dev_services, hygienic};

/// A fresh bucket on the local server, reached through a proxy, and commands that use it.
struct Bucket {
    server: &'static DevServices,
    proxy: Proxy,
    location: S3Location,
    dir: tempfile::TempDir,
}

impl Bucket {
    fn new() -> Bucket {
        let server = dev_services();
        let location = server.create_bucket("cache/team");
        Bucket { server, proxy: Proxy::start(&server.endpoint), location, dir: tempfile::tempdir().unwrap() }
    }

    fn url(&self) -> String {
        self.location.to_string()
    }

    /// A local cache directory of this test, by name: a new name is a fresh machine.
    fn cache(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The environment of a command that uses this bucket through the proxy.
    fn env(&self, cache: &str) -> Vec<(String, String)> {
        let mut env = self.server.env(&self.proxy.url);
        env.push(("LAMBDABUILD_STORE".into(), self.url()));
        env.push(("LAMBDABUILD_CACHE_DIR".into(), self.cache(cache).display().to_string()));
        env
    }

    /// A store over this bucket with the local cache `cache`, as the binaries open it.
    /// Multipart starts at 16 MiB here, so a test object of 20 MiB takes that path.
    async fn store(&self, cache: &str) -> Store {
        let backend = S3Backend::with_config(
            self.location.clone(),
            S3Options { multipart_threshold: 16 << 20, ..S3Options::default() },
            &self.server.sdk_config(&self.proxy.url),
        );
        let local = LocalBackend::open(&self.cache(cache)).unwrap();
        let known = thunk::workdir::Workdir::open(&self.cache(cache)).unwrap().known_objects(&self.url());
        Store::cached(Arc::new(backend), local, known)
    }

    /// Where the server keeps `key` of this store on disk.
    fn object_file(&self, key: ObjectKey) -> PathBuf {
        self.server.data.join(&self.location.bucket).join(self.location.key_of(key))
    }

    /// Every file the server holds in this bucket, relative to it.
    fn files(&self) -> Vec<String> {
        let root = self.server.data.join(&self.location.bucket);
        let mut files = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        files
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// Bytes zstd cannot shrink, so the stored object is as large as they are.
fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    // xorshift64*: plenty random for a compressor.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

#[test]
fn small_and_multipart_objects_round_trip_and_stay_under_the_prefix() {
    let bucket = Bucket::new();
    runtime().block_on(async {
        let writer = bucket.store("writer").await;
        let small = b"fn main() {}\n".to_vec();
        let large = incompressible(20 << 20, 1);
        let small_hash = writer.put_blob(&small).await.unwrap();
        let large_hash = writer.put_blob_vec(large.clone()).await.unwrap().0;
        // 20 MiB is above the 16 MiB threshold: CreateMultipartUpload and CompleteMultipartUpload are
        // POSTs, and the body goes up in three 8 MiB parts.
        assert_eq!(bucket.proxy.count("POST"), 2, "{:?}", bucket.proxy.counts());
        assert!(bucket.proxy.count("PUT") >= 4, "{:?}", bucket.proxy.counts());
        // A second writer of the same content-addressed object (a race the store's checks cannot
        // see) completes its upload conditionally: the server's 412 is success, the object unchanged.
        let stored = std::fs::read(bucket.object_file(ObjectKey::Blob(large_hash))).unwrap();
        writer.backend().put(ObjectKey::Blob(large_hash), stored.clone()).await.unwrap();
        assert_eq!(std::fs::read(bucket.object_file(ObjectKey::Blob(large_hash))).unwrap(), stored);

        let reader = bucket.store("reader").await;
        assert_eq!(reader.get_blob(small_hash).await.unwrap(), small);
        assert_eq!(reader.get_blob(large_hash).await.unwrap(), large);
        // Fetched once per machine: the second read is served by the local cache.
        let gets = bucket.proxy.count("GET");
        assert_eq!(reader.get_blob(large_hash).await.unwrap(), large);
        assert_eq!(bucket.proxy.count("GET"), gets);
    });
    let files = bucket.files();
    assert!(!files.is_empty());
    for file in files {
        assert!(file.starts_with("cache/team/blobs/"), "{file} is outside the prefix");
    }
}

#[test]
fn an_object_altered_in_the_bucket_is_detected_and_never_used() {
    let bucket = Bucket::new();
    runtime().block_on(async {
        let writer = bucket.store("writer").await;
        let real = writer.put_blob(b"the real bytes").await.unwrap();
        let damaged = writer.put_blob(b"bytes that will be damaged on disk").await.unwrap();

        // Replaced through the S3 API: S3's own checksums are right, only the name is wrong.
        let client = aws_sdk_s3::Client::new(&bucket.server.sdk_config(&bucket.proxy.url));
        let other = zstd::bulk::compress(b"other bytes", 1).unwrap();
        client
            .put_object()
            .bucket(&bucket.location.bucket)
            .key(bucket.location.key_of(ObjectKey::Blob(real)))
            .body(other.into())
            .send()
            .await
            .unwrap();
        // Damaged on the server's disk, behind S3's back.
        let file = bucket.object_file(ObjectKey::Blob(damaged));
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();

        let reader = bucket.store("reader").await;
        let error = reader.get_blob(real).await.unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains(&bucket.url()), "{error}");
        let error = reader.get_blob(damaged).await.unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        // Neither bad copy is kept: the next read checks the bucket again.
        let (local, _) = reader.local_cache().unwrap();
        for hash in [real, damaged] {
            assert!(!local.has(ObjectKey::Blob(hash)).await.unwrap());
            assert!(reader.get_blob(hash).await.is_err());
        }
    });
}

/// `cargo lambdabuild upload` of the hello fixture, with this bucket and cache.
fn upload(project: &Project, bucket: &Bucket, cache: &str) -> serde_json::Value {
    let output = lambdabuild(project, bucket, cache, &["upload", "--without-toolchain", "--message-format=json"]);
    assert!(output.status.success(), "stderr:\n{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| message["reason"] == "lambdabuild-uploaded")
        .unwrap_or_else(|| panic!("no upload report in:\n{stdout}"))
}

fn count(report: &serde_json::Value, field: &str) -> u64 {
    report[field].as_u64().unwrap_or_else(|| panic!("no {field} in {report}"))
}

fn lambdabuild(project: &Project, bucket: &Bucket, cache: &str, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
    hygienic(&mut command).arg("lambdabuild").args(args).current_dir(&project.root);
    command.envs(bucket.env(cache));
    command.output().unwrap()
}

#[test]
fn an_unchanged_graph_is_uploaded_once() {
    let project = Project::fixture("hello");
    let bucket = Bucket::new();
    let first = upload(&project, &bucket, "laptop");
    assert!(first["uploaded"].as_u64().unwrap() > 0, "{first}");
    assert!(first["bytes"].as_u64().unwrap() > 0, "{first}");
    assert!(bucket.proxy.count("PUT") > 0);

    // Same machine: the list of known objects answers, not the bucket.
    bucket.proxy.reset();
    let second = upload(&project, &bucket, "laptop");
    assert_eq!(second["uploaded"], 0, "{second}");
    assert_eq!(second["bytes"], 0, "{second}");
    assert_eq!(second["known"], second["objects"], "{second}");
    assert_eq!(bucket.proxy.count("PUT"), 0, "{:?}", bucket.proxy.counts());
    assert_eq!(bucket.proxy.count("POST"), 0, "{:?}", bucket.proxy.counts());
    // One request in all: the check of the bucket when the store is opened.
    assert_eq!(bucket.proxy.total(), 1, "{:?}", bucket.proxy.counts());

    // Another machine: checks, but still no upload; a prefix this small is listed (one GET per kind
    // of object) rather than checked object by object.
    bucket.proxy.reset();
    let third = upload(&project, &bucket, "ci-runner");
    assert_eq!(third["uploaded"], 0, "{third}");
    assert_eq!(count(&third, "present") + count(&third, "known"), count(&third, "objects"), "{third}");
    assert_eq!(bucket.proxy.count("PUT"), 0, "{:?}", bucket.proxy.counts());
    assert!(bucket.proxy.count("GET") <= 3, "{:?}", bucket.proxy.counts());
    assert!(bucket.proxy.count("HEAD") <= 1, "{:?}", bucket.proxy.counts());
}

#[test]
fn throttling_server_errors_and_dropped_connections_are_retried() {
    let project = Project::fixture("hello");
    let bucket = Bucket::new();
    bucket.proxy.inject(3, &[Fault::SlowDown, Fault::InternalError, Fault::Drop]);
    let report = upload(&project, &bucket, "laptop");
    assert!(report["uploaded"].as_u64().unwrap() > 0, "{report}");
    assert!(bucket.proxy.injected() >= 3, "only {} faults injected", bucket.proxy.injected());

    // Everything arrived: a fresh machine finds every object without uploading.
    bucket.proxy.inject(0, &[]);
    let check = upload(&project, &bucket, "ci-runner");
    assert_eq!(count(&check, "present") + count(&check, "known"), count(&check, "objects"), "{check}");
    assert_eq!(check["uploaded"], 0, "{check}");
}

#[test]
fn a_fresh_cache_with_the_same_bucket_executes_nothing() {
    let project = Project::fixture("workspace");
    let bucket = Bucket::new();
    let first = project.lambdabuild_with_env(&[], &bucket.env("laptop")).success();
    assert!(first.count("executed") > 0, "{}", first.summary);
    let before = first.artifact_hashes();
    std::fs::remove_dir_all(project.root.join("target/lambdabuild")).unwrap();

    let second = project.lambdabuild_with_env(&[], &bucket.env("ci-runner")).success();
    assert_eq!(second.count("executed"), 0, "{}", second.summary);
    assert!(second.count("cached") > 0, "{}", second.summary);
    assert_eq!(second.artifact_hashes(), before);
}

#[test]
fn a_missing_bucket_or_refused_credentials_give_one_clear_line() {
    let project = Project::fixture("hello");
    let bucket = Bucket::new();

    let stderr = one_error_line(&project, &bucket, "LAMBDABUILD_STORE", "s3://no-such-bucket-here/cache");
    assert!(stderr.contains("s3://no-such-bucket-here/cache") && stderr.contains("does not exist"), "{stderr}");

    let stderr = one_error_line(&project, &bucket, "AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all");
    assert!(stderr.contains("AWS_SECRET_ACCESS_KEY"), "{stderr}");
    assert!(!stderr.contains("not-the-secret-at-all") && !stderr.contains(&bucket.server.secret_key), "{stderr}");

    let stderr = one_error_line(&project, &bucket, "AWS_ENDPOINT_URL", &closed_port_url());
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

/// Builds with one variable of the bucket's environment changed; the build must fail with exactly one
/// line on stderr, which is returned.
fn one_error_line(project: &Project, bucket: &Bucket, name: &str, value: &str) -> String {
    let mut env = bucket.env("laptop");
    set(&mut env, name, value);
    let output = run_with(project, &env);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(101), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    stderr
}

fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(key, _)| key != name);
    env.push((name.into(), value.into()));
}

fn run_with(project: &Project, env: &[(String, String)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
    hygienic(&mut command).args(["lambdabuild", "build", "-q"]).current_dir(&project.root);
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command.output().unwrap()
}
