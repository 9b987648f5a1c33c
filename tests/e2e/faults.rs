//! Builds on a failing cloud, on the real local services: a tenth of the S3 requests fail (the
//! client's and the function's, through the fault proxy: throttled, erroring, dropped, or late) and a
//! tenth of the Lambda invocations crash, hang or time out (through [`FaultyFunction`]). The builds
//! still succeed, byte-identical to plain cargo's, and a hung thunk is launched again.

use std::time::{Duration, Instant};

use crate::faulty_lambda::{FaultyFunction, LambdaFault};
use crate::lambda::count;
use crate::proxy::{Fault, Proxy};
use crate::support::{Compare, DevServices, Project, dev_services};

/// A bucket reached through the S3 fault proxy, and a function whose invocations can fail.
pub struct FailingCloud {
    services: &'static DevServices,
    pub s3: Proxy,
    pub function: FaultyFunction,
    store: String,
    dir: tempfile::TempDir,
}

impl FailingCloud {
    pub fn new() -> FailingCloud {
        let services = dev_services();
        let s3 = Proxy::start(&services.endpoint);
        let function = FaultyFunction::start(8, &s3.url);
        let store = services.create_bucket("faults").to_string();
        FailingCloud { services, s3, function, store, dir: tempfile::tempdir().unwrap() }
    }

    /// One request in ten to S3 fails, and one invocation in ten.
    pub fn fail_a_tenth(&self) {
        self.s3.inject(10, &[Fault::SlowDown, Fault::InternalError, Fault::Drop, Fault::Slow]);
        self.function.inject(10, &[LambdaFault::Crash, LambdaFault::Hang, LambdaFault::Timeout]);
    }

    /// The same, with the invocations counted by kind: a tenth of the full compiles and a tenth of
    /// the metadata runs fail, whatever order the client sends them in.
    pub fn fail_a_tenth_of_each_kind(&self) {
        self.s3.inject(10, &[Fault::SlowDown, Fault::InternalError, Fault::Drop, Fault::Slow]);
        self.function.inject_by_kind(10, &[LambdaFault::Crash, LambdaFault::Hang, LambdaFault::Timeout]);
    }

    /// The environment of a build on a machine whose cache is `cache`.
    pub fn env(&self, cache: &str) -> Vec<(String, String)> {
        let mut env = self.services.env(&self.s3.url);
        env.extend([
            ("LAMBDABUILD_STORE".to_owned(), self.store.clone()),
            ("LAMBDABUILD_CACHE_DIR".to_owned(), self.dir.path().join(cache).display().to_string()),
            ("AWS_ENDPOINT_URL_LAMBDA".to_owned(), self.services.lambda_endpoint.clone()),
            ("LAMBDABUILD_FUNCTION".to_owned(), self.function.name.clone()),
        ]);
        env
    }
}

pub const ON_FAILING_LAMBDA: &[&str] = &["--engine", "lambda=8", "--engine", "local=2"];

#[test]
fn the_workspace_builds_byte_identical_while_a_tenth_of_s3_and_lambda_fails() {
    let project = Project::fixture("workspace");
    let cloud = FailingCloud::new();
    cloud.fail_a_tenth();
    let build = project.assert_matches_plain_cargo_on(
        &["--all-targets"],
        ON_FAILING_LAMBDA,
        &cloud.env("laptop"),
        Compare::Linked,
    );
    eprintln!(
        "faults: {} of {} S3 requests, {} of {} invocations; {} retried, {} relaunched",
        cloud.s3.injected(),
        cloud.s3.total(),
        cloud.function.injected(),
        cloud.function.invocations(),
        count(&build, &["retried"]),
        count(&build, &["relaunched"])
    );
    assert!(cloud.s3.injected() >= 10, "{} S3 faults", cloud.s3.injected());
    assert!(cloud.function.injected() >= 1, "{} Lambda faults", cloud.function.injected());
    assert!(count(&build, &["executed_on", "lambda"]) >= 10, "{}", build.summary);
    // Nothing fell back to this machine: a failed compile was retried, a hung one relaunched, and a
    // failed metadata run given up (its consumers waited for the full compile).
    assert_eq!(count(&build, &["fallbacks"]), 0, "{}", build.summary);
}

#[test]
fn a_hung_thunk_is_relaunched_and_the_build_finishes_long_before_the_invoke_timeout() {
    let project = Project::fixture("hello");
    let cloud = FailingCloud::new();
    // The first invocation hangs; the ones after it do not.
    cloud.function.inject(1, &[LambdaFault::Hang]);
    let function = &cloud.function;
    let build = std::thread::scope(|scope| {
        scope.spawn(|| {
            while function.injected() == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            function.inject(0, &[]);
        });
        let mut env = cloud.env("laptop");
        let invoke_timeout = 600;
        env.push(("LAMBDABUILD_INVOKE_TIMEOUT".into(), invoke_timeout.to_string()));
        let started = Instant::now();
        let build = project.lambdabuild_with_env(&["--engine", "lambda=2"], &env).success();
        // Without the relaunch the build would wait for the hung invocation until the client gives up.
        assert!(started.elapsed() < Duration::from_secs(invoke_timeout / 4), "took {:?}", started.elapsed());
        build
    });
    assert_eq!(count(&build, &["relaunched"]), 1, "{}", build.summary);
    assert_eq!(count(&build, &["executed_on", "lambda"]), 1, "{}", build.summary);
    assert_eq!(count(&build, &["fallbacks"]), 0, "{}", build.summary);
    assert!(build.stderr.contains("Relaunched"), "{}", build.stderr);
    assert_eq!(cloud.function.injected(), 1);
    let hello = project.root.join("target/lambdabuild/debug/hello");
    let output = std::process::Command::new(hello).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello from hello\n");
}

#[test]
fn a_client_killed_while_lambda_builds_leaves_nothing_the_rerun_trusts_wrongly() {
    let project = Project::fixture("workspace");
    let cloud = FailingCloud::new();
    let env = cloud.env("laptop");
    let mut args = vec!["--all-targets"];
    args.extend(ON_FAILING_LAMBDA);
    let mut client = project.lambdabuild_command(&args);
    client
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut client = client.spawn().unwrap();
    // Killed with invocations in flight: they go on, and store what they built, without a client.
    let deadline = Instant::now() + Duration::from_secs(300);
    while cloud.function.invocations() < 3 {
        assert!(client.try_wait().unwrap().is_none(), "the build ended before it was killed");
        assert!(Instant::now() < deadline, "no invocation reached the function");
        std::thread::sleep(Duration::from_millis(20));
    }
    client.kill().unwrap();
    client.wait().unwrap();
    // The invocations in flight finish without their client and store what they built.
    while cloud.function.unanswered() > 0 {
        assert!(Instant::now() < deadline, "{} invocations never finished", cloud.function.unanswered());
        std::thread::sleep(Duration::from_millis(50));
    }

    let build = project.assert_matches_plain_cargo_on(&["--all-targets"], ON_FAILING_LAMBDA, &env, Compare::Linked);
    // What the invocations stored is used (those that were metadata runs store no reduction).
    assert!(count(&build, &["cached"]) >= 1, "the rerun resumed from the store: {}", build.summary);
}
