//! `cargo lambdabuild deploy` against moto's Lambda control plane (CreateFunction, GetFunction,
//! UpdateFunctionCode, UpdateFunctionConfiguration) and the local S3 server for the layer.

use std::io::{Read, Write};
use std::process::Command;

use crate::support::{DevServices, dev_services, hygienic};

/// Creates an IAM role in moto (which checks that a function's role exists) and returns its ARN.
/// moto routes an unsigned request by the service its Authorization header names.
fn create_role(moto: &str, name: &str) -> String {
    let address = moto.trim_start_matches("http://");
    let body = format!("Action=CreateRole&Version=2010-05-08&RoleName={name}&Path=%2F&AssumeRolePolicyDocument=%7B%7D");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20261130/us-east-1/iam/aws4_request, \
         SignedHeaders=host, Signature=0\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let start = response.find("<Arn>").unwrap_or_else(|| panic!("{response}")) + "<Arn>".len();
    let end = response[start..].find("</Arn>").unwrap() + start;
    response[start..end].to_owned()
}

struct Deploy {
    services: &'static DevServices,
    store: String,
    dir: tempfile::TempDir,
}

impl Deploy {
    fn new() -> Deploy {
        let services = dev_services();
        let store = services.create_bucket("team/cache").to_string();
        Deploy { services, store, dir: tempfile::tempdir().unwrap() }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-lambdabuild"));
        hygienic(&mut command)
            .args(["lambdabuild", "deploy", "--bootstrap", env!("CARGO_BIN_EXE_lambdabuild-bootstrap")])
            .args(args)
            .envs(self.services.env(&self.services.endpoint))
            .env("LAMBDABUILD_STORE", &self.store)
            .env("LAMBDABUILD_CACHE_DIR", self.dir.path().join("cache"))
            .env("AWS_ENDPOINT_URL_LAMBDA", &self.services.moto_endpoint)
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"));
        command.output().unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.run(args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// The function as moto holds it.
    fn function(&self, name: &str) -> aws_sdk_lambda::types::FunctionConfiguration {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let client = aws_sdk_lambda::Client::new(&self.services.sdk_config(&self.services.moto_endpoint));
            let function = client.get_function().function_name(name).send().await.unwrap();
            function.configuration.unwrap()
        })
    }
}

#[test]
fn deploy_creates_then_updates_the_function_and_its_policy_covers_only_the_prefix() {
    let deploy = Deploy::new();
    let name = format!("lambdabuild-{}", std::process::id());
    let role = create_role(&deploy.services.moto_endpoint, &name);

    let created = deploy.json(&["--function", &name, "--role", &role, "--memory", "2048", "--json"]);
    assert_eq!(created["created"], true, "{created}");
    let function = deploy.function(&name);
    assert_eq!(function.runtime().map(|r| r.as_str()), Some("provided.al2023"));
    assert_eq!(function.handler(), Some("bootstrap"));
    assert_eq!(function.role(), Some(role.as_str()));
    assert_eq!((function.memory_size(), function.timeout()), (Some(2048), Some(900)));
    assert_eq!(function.ephemeral_storage().map(|e| e.size()), Some(4096));
    assert_eq!(function.architectures().iter().map(|a| a.as_str()).collect::<Vec<_>>(), ["x86_64"]);
    let variables = function.environment().and_then(|e| e.variables()).unwrap();
    assert_eq!(variables.get("LAMBDABUILD_CACHE_LIMIT_MB").map(String::as_str), Some("2560"));
    assert!(function.code_size() > 1_000_000, "the zipped bootstrap: {}", function.code_size());

    // The layer the function unpacks is in the store.
    let (bucket, prefix) = deploy.store.trim_start_matches("s3://").split_once('/').unwrap();
    let layer = format!("toolchains/{}.tar.zst", created["toolchain"].as_str().unwrap());
    assert!(deploy.services.data.join(bucket).join(prefix).join(layer).is_file());

    // Least privilege: the prefix's objects, listing the prefix, its own logs; nothing else.
    let policy = &created["policy"];
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements[0]["Resource"], format!("arn:aws:s3:::{bucket}/team/cache/*"));
    assert_eq!(statements[0]["Action"], serde_json::json!(["s3:GetObject", "s3:PutObject"]));
    assert_eq!(statements[1]["Resource"], format!("arn:aws:s3:::{bucket}"));
    assert_eq!(statements[1]["Condition"]["StringLike"]["s3:prefix"], serde_json::json!(["team/cache/*"]));
    assert!(statements[2]["Resource"].as_str().unwrap().ends_with(&format!("/aws/lambda/{name}:*")));
    assert!(!policy.to_string().contains("\"*\""), "no wildcard action or resource: {policy}");

    // Again, from the config file: the same function, updated in place.
    std::fs::create_dir_all(deploy.dir.path().join("config/lambdabuild")).unwrap();
    std::fs::write(
        deploy.dir.path().join("config/lambdabuild/config.toml"),
        format!("[deploy]\nfunction = \"{name}\"\nmemory = 4096\ntimeout = 600\n"),
    )
    .unwrap();
    let updated = deploy.json(&["--json"]);
    assert_eq!(updated["created"], false, "{updated}");
    let function = deploy.function(&name);
    assert_eq!((function.memory_size(), function.timeout()), (Some(4096), Some(600)));
    assert_eq!(function.role(), Some(role.as_str()), "the role stays");

    // Creating another needs a role: one line that says so.
    let output = deploy.run(&["--function", "never-created"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(101), "{stderr}");
    assert!(stderr.lines().last().unwrap().contains("--role ARN"), "{stderr}");

    // The policy alone, changing nothing.
    let output = deploy.run(&["--function", "never-created", "--policy-only"]);
    assert!(output.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["Statement"][0]["Resource"], statements[0]["Resource"]);
}
