//! The baseline of `scripts/bench-upload`: a plain loop of aws-sdk-s3 PutObject calls, N at a time,
//! one call per file — what a hand-written uploader does. Not a criterion benchmark: the script times
//! it with hyperfine against `cargo lambdabuild upload`, on the same objects and server.
//!
//! Usage: put_loop DIR BUCKET PREFIX CONCURRENCY (AWS endpoint and credentials from the environment,
//! as `scripts/dev-services up` exports them). Every file under DIR goes to `PREFIX/<its relative path>`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

fn main() {
    // `cargo bench` adds `--bench`; the script runs the binary directly.
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with("--")).collect();
    let [dir, bucket, prefix, concurrency] = args.as_slice() else {
        eprintln!("usage: put_loop DIR BUCKET PREFIX CONCURRENCY");
        return;
    };
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY is a number");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let s3 = aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build();
        let client = aws_sdk_s3::Client::from_conf(s3);
        let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for file in files(Path::new(dir)) {
            let key = format!("{prefix}/{}", file.strip_prefix(dir).unwrap().display());
            let (client, bucket, limit) = (client.clone(), bucket.clone(), Arc::clone(&limit));
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.unwrap();
                let body = tokio::fs::read(&file).await.unwrap();
                client.put_object().bucket(bucket).key(key).body(body.into()).send().await.unwrap();
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
    });
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    files
}
