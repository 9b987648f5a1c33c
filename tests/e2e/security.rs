//! No credential of the environment reaches the store: the env a thunk sees is an allow-list, and
//! nothing else the product writes (reductions, captured output, counters) copies the environment.

use std::path::Path;
use std::process::Command;

use crate::lambda::{Cloud, ON_LAMBDA};
use crate::support::{Project, hygienic};

/// Marker values no build could produce by chance.
const MARKERS: &[(&str, &str)] = &[
    ("AWS_SECRET_ACCESS_KEY", "marker-aws-secret-3f9c27"),
    ("AWS_SESSION_TOKEN", "marker-aws-session-8d21e4"),
    ("GITHUB_TOKEN", "marker-github-token-77ab0c"),
    ("MY_API_KEY", "marker-my-api-key-51e0f9"),
];

/// Every file under `dir`, decompressed when it is a zstd frame (as the store's objects are), with
/// the names of the markers it contains.
fn files_holding(dir: &Path, markers: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    let mut files = 0;
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            if metadata.is_dir() {
                pending.push(path);
                continue;
            }
            if !metadata.is_file() {
                continue;
            }
            files += 1;
            let raw = std::fs::read(&path).unwrap();
            let plain = zstd::stream::decode_all(raw.as_slice()).unwrap_or_default();
            for marker in markers {
                let hit = |bytes: &[u8]| bytes.windows(marker.len()).any(|window| window == marker.as_bytes());
                if hit(&raw) || hit(&plain) {
                    found.push(format!("{}: {marker}", path.display()));
                }
            }
        }
    }
    assert!(files > 20, "the store under {} holds {files} files: nothing was built?", dir.display());
    found
}

#[test]
fn credentials_in_the_environment_reach_no_object_of_the_store() {
    let project = Project::fixture("workspace");
    // `cargo lambdabuild` on the local engine (build scripts included)...
    let build = project.lambdabuild_with(&["--all-targets"], MARKERS).success();
    // ...and CI mode, into another target dir.
    let mut cargo = Command::new(env!("CARGO"));
    let output = hygienic(&mut cargo)
        .args(["build", "--all-targets", "--target-dir", "target/ci"])
        .current_dir(&project.root)
        .env("RUSTC_WRAPPER", env!("CARGO_BIN_EXE_rustc-model"))
        .env("LAMBDABUILD_CACHE_DIR", project.store())
        .envs(MARKERS.iter().copied())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let markers: Vec<&str> = MARKERS.iter().map(|(_, value)| *value).collect();
    let found = files_holding(&project.store(), &markers);
    assert!(found.is_empty(), "credentials in the store: {found:#?}");
    for text in [&build.stderr, &String::from_utf8_lossy(&output.stderr).into_owned()] {
        assert!(!markers.iter().any(|marker| text.contains(marker)), "a credential in the output: {text}");
    }
}

#[test]
fn credentials_reach_no_object_of_an_s3_store_built_on_lambda() {
    let cloud = Cloud::new();
    let project = Project::fixture("workspace");
    let mut env = cloud.env("laptop");
    // The S3 server's own secret is a real credential here; a session token would change how the
    // client signs, so this test leaves it to the one above.
    env.extend(
        [("GITHUB_TOKEN", "marker-github-token-77ab0c"), ("MY_API_KEY", "marker-my-api-key-51e0f9")]
            .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    let args: Vec<&str> = ["--all-targets"].iter().copied().chain(ON_LAMBDA.iter().copied()).collect();
    let build = project.lambdabuild_with_env(&args, &env).success();
    let secret = cloud.secret_key().to_owned();
    let markers = ["marker-github-token-77ab0c", "marker-my-api-key-51e0f9", secret.as_str()];
    let found = files_holding(&cloud.bucket_dir(), &markers);
    assert!(found.is_empty(), "credentials in the bucket: {found:#?}");
    assert!(!markers.iter().any(|marker| build.stderr.contains(marker)), "{}", build.stderr);
}
