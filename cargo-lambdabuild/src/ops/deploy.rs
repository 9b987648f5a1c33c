//! `cargo lambdabuild deploy`: make the Lambda function `--engine lambda=N` invokes.
//!
//! 1. Pack the toolchain layer and put it in the S3 store (the function fetches it at cold start).
//! 2. Zip the function's executable (`lambdabuild-bootstrap`, installed beside this one) as `bootstrap`.
//! 3. Create the function (`provided.al2023`), or update its code and then its configuration.
//! 4. Print the IAM policy its role needs: read and write the store's prefix, nothing else, and logs.
//!
//! Settings: flags, else `LAMBDABUILD_*` variables, else the `[deploy]` table of the config file
//! (`$XDG_CONFIG_HOME/lambdabuild/config.toml`, or `--config FILE`), else the defaults.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::ProvideErrorMetadata;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Architecture, Environment, EphemeralStorage, FunctionCode, Runtime};
use serde_json::json;
use store_s3::S3Location;

use crate::cli::{DeployArgs, GlobalArgs};
use crate::shell::{Shell, human_bytes};

/// The settings, resolved.
#[derive(Debug)]
struct Settings {
    function: String,
    role: Option<String>,
    memory: u32,
    ephemeral_storage: u32,
    timeout: u32,
    architecture: Architecture,
}

use cargo_lambdabuild::config::DEFAULT_MEMORY_MB;
/// The unpacked toolchain takes about 600 MB; the rest holds blobs across warm invocations.
const DEFAULT_EPHEMERAL_MB: u32 = 4096;
/// Lambda's longest.
const DEFAULT_TIMEOUT_S: u32 = 900;
/// What the function's blob cache leaves of its ephemeral storage: the toolchain and a sandbox.
const RESERVED_STORAGE_MB: u32 = 1536;

fn settings(args: &DeployArgs, global: &GlobalArgs) -> anyhow::Result<Settings> {
    let config = global.settings().file.deploy.clone();
    let function = global.settings().function.clone();
    let architecture = match args.architecture.clone().or(config.architecture).as_deref() {
        None => host_architecture(),
        Some("x86_64") => Architecture::X8664,
        Some("arm64") => Architecture::Arm64,
        Some(other) => bail!("--architecture must be x86_64 or arm64, not `{other}`"),
    };
    if architecture != host_architecture() {
        bail!(
            "the function must run the toolchain of this machine, which is {}; deploy from a machine of the other \
             architecture",
            host_architecture().as_str()
        );
    }
    Ok(Settings {
        function,
        role: args.role.clone().or(config.role),
        memory: args.memory.or(config.memory).unwrap_or(DEFAULT_MEMORY_MB),
        ephemeral_storage: args.ephemeral_storage.or(config.ephemeral_storage).unwrap_or(DEFAULT_EPHEMERAL_MB),
        timeout: args.timeout.or(config.timeout).unwrap_or(DEFAULT_TIMEOUT_S),
        architecture,
    })
}

fn host_architecture() -> Architecture {
    if cfg!(target_arch = "aarch64") { Architecture::Arm64 } else { Architecture::X8664 }
}

/// The least the function's role needs: objects under the store's prefix, listing that prefix, and
/// its own log group.
pub fn policy(location: &S3Location, function: &str) -> serde_json::Value {
    let bucket = &location.bucket;
    let objects = if location.prefix.is_empty() { "*".to_owned() } else { format!("{}/*", location.prefix) };
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadAndWriteTheStore",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": format!("arn:aws:s3:::{bucket}/{objects}"),
            },
            {
                "Sid": "ListTheStore",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": format!("arn:aws:s3:::{bucket}"),
                "Condition": { "StringLike": { "s3:prefix": [objects] } },
            },
            {
                "Sid": "WriteItsLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": format!("arn:aws:logs:*:*:log-group:/aws/lambda/{function}:*"),
            },
        ],
    })
}

/// The function's executable, zipped as `bootstrap`.
fn function_zip(bootstrap: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(bootstrap).with_context(|| {
        format!(
            "cannot read the function's executable {}; install it with `cargo install --path cargo-lambdabuild` \
             or pass --bootstrap PATH",
            bootstrap.display()
        )
    })?;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755)
        .last_modified_time(zip::DateTime::default());
    zip.start_file("bootstrap", options)?;
    zip.write_all(&bytes)?;
    Ok(zip.finish()?.into_inner())
}

pub async fn run(global: &GlobalArgs, args: DeployArgs, shell: &Shell) -> anyhow::Result<()> {
    let settings = settings(&args, global)?;
    let opened = super::open_store(global).await?;
    let Some(url) = &opened.remote else {
        bail!("the function reads and writes the store: deploy needs --store s3://BUCKET/PREFIX or LAMBDABUILD_STORE");
    };
    let location = S3Location::parse(url.trim_start_matches("s3://"))?;
    let policy = policy(&location, &settings.function);
    if args.policy_only {
        shell.print(&format!("{}\n", serde_json::to_string_pretty(&policy)?));
        return Ok(());
    }

    // 1. The toolchain layer.
    let (toolchain, layer_size, _) =
        super::layer::pack_and_store(global, &opened, OsString::from("rustc"), &args.targets).await?;
    shell.status(
        "Uploaded",
        &format!("toolchain layer {} ({}) to {url}", toolchain.hash.short(), human_bytes(layer_size)),
    );

    // 2. The code.
    let bootstrap = match &args.bootstrap {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("lambdabuild-bootstrap"),
    };
    let zip = function_zip(&bootstrap)?;

    // 3. The function.
    let client =
        Client::from_conf(crate::engine::lambda::client_config(global.settings().region.as_deref()).await.build());
    let cache_limit = settings.ephemeral_storage.saturating_sub(RESERVED_STORAGE_MB).max(256);
    let environment = Environment::builder().variables("LAMBDABUILD_CACHE_LIMIT_MB", cache_limit.to_string()).build();
    let name = &settings.function;
    let describe = |error: &dyn ProvideErrorMetadata| {
        format!("{}: {}", error.code().unwrap_or("error"), error.message().unwrap_or_default())
    };
    let exists = match client.get_function().function_name(name).send().await {
        Ok(_) => true,
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => false,
        Err(error) => bail!("cannot look up the function `{name}`: {}", store_s3::causes(&error)),
    };
    let arn = if exists {
        client
            .update_function_code()
            .function_name(name)
            .zip_file(Blob::new(zip))
            .architectures(settings.architecture.clone())
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot update the code of `{name}`: {}", describe(&e)))?;
        wait_until_updated(&client, name).await?;
        let mut update = client
            .update_function_configuration()
            .function_name(name)
            .memory_size(settings.memory as i32)
            .ephemeral_storage(EphemeralStorage::builder().size(settings.ephemeral_storage as i32).build()?)
            .timeout(settings.timeout as i32)
            .environment(environment);
        if let Some(role) = &settings.role {
            update = update.role(role);
        }
        let updated = update
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot update the configuration of `{name}`: {}", describe(&e)))?;
        shell.status("Updated", &format!("function `{name}`"));
        updated.function_arn().unwrap_or_default().to_owned()
    } else {
        let Some(role) = &settings.role else {
            bail!(
                "the function `{name}` does not exist, and creating it needs a role Lambda can assume: pass --role ARN \
                 (its policy: `cargo lambdabuild deploy --policy-only`)"
            );
        };
        let created = client
            .create_function()
            .function_name(name)
            .runtime(Runtime::Providedal2023)
            .handler("bootstrap")
            .role(role)
            .code(FunctionCode::builder().zip_file(Blob::new(zip)).build())
            .architectures(settings.architecture.clone())
            .memory_size(settings.memory as i32)
            .ephemeral_storage(EphemeralStorage::builder().size(settings.ephemeral_storage as i32).build()?)
            .timeout(settings.timeout as i32)
            .environment(environment)
            .description("cargo-lambdabuild: runs one thunk per invocation")
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the function `{name}`: {}", describe(&e)))?;
        shell.status("Created", &format!("function `{name}`"));
        created.function_arn().unwrap_or_default().to_owned()
    };

    // 4. What its role needs.
    if args.json {
        let report = json!({
            "function": name,
            "arn": arn,
            "created": !exists,
            "toolchain": toolchain.hash,
            "layer_size": layer_size,
            "memory": settings.memory,
            "ephemeral_storage": settings.ephemeral_storage,
            "timeout": settings.timeout,
            "architecture": settings.architecture.as_str(),
            "policy": policy,
        });
        shell.print(&format!("{report}\n"));
    } else {
        shell.note(&format!(
            "its role needs this policy (and a trust policy for lambda.amazonaws.com):\n{}",
            serde_json::to_string_pretty(&policy)?
        ));
        shell.print(&format!("{arn}\n"));
    }
    Ok(())
}

/// Lambda refuses a configuration change while a code update is in progress.
async fn wait_until_updated(client: &Client, name: &str) -> anyhow::Result<()> {
    for _ in 0..120 {
        let function = client.get_function_configuration().function_name(name).send().await?;
        let status = function.last_update_status().map(|s| s.as_str().to_owned());
        match status.as_deref() {
            Some("InProgress") => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            Some("Failed") => bail!(
                "updating the function `{name}` failed: {}",
                function.last_update_status_reason().unwrap_or("no reason given")
            ),
            _ => return Ok(()),
        }
    }
    bail!("the function `{name}` was still updating after a minute")
}
