//! The Lambda engine: each thunk is one synchronous invocation of the deployed function (see
//! `runtime-layer`), which reads the thunk's inputs from the S3 store and writes its outputs and
//! reduction there.
//!
//! The SDK's own retries are off: the forcer retries with backoff and falls back to the local engine,
//! and counting attempts in one place keeps that bounded. What comes back is sorted into final
//! outcomes (a reduction, even of a failed compile; a failure the function calls final) and
//! infrastructure failures worth another attempt (throttling, a crashed or timed-out instance, a
//! dropped connection). The local emulator answers a crashed handler with HTTP 500 where Lambda answers
//! 200 with `X-Amz-Function-Error`; both are read as the same thing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use thunk::reduction::OutputFile;
use thunk::remote::{Invocation, InvocationResult, PAYLOAD_LIMIT, RemoteEngine, RemoteError, RemoteRun};
use thunk::{Hash, SandboxPath, Thunk};

/// The function's name when neither `--function` nor `LAMBDABUILD_FUNCTION` names one: what
/// `cargo lambdabuild deploy` creates.
pub const DEFAULT_FUNCTION: &str = "cargo-lambdabuild";

/// The Lambda client's configuration: the standard AWS configuration (`AWS_ENDPOINT_URL_LAMBDA`
/// honoured), in `us-east-1` when none names a region.
pub async fn client_config(region: Option<&str>) -> aws_sdk_lambda::config::Builder {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let builder = aws_sdk_lambda::config::Builder::from(&config);
    if let Some(region) = region {
        builder.region(aws_sdk_lambda::config::Region::new(region.to_owned()))
    } else if config.region().is_none() {
        builder.region(aws_sdk_lambda::config::Region::from_static("us-east-1"))
    } else {
        builder
    }
}

/// One invocation as the client saw it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// From sending the invocation to reading its answer.
    pub wall_ms: u64,
    /// The program's own run time, as the function measured it.
    pub run_ms: u64,
    /// Whether the instance had to fetch and unpack the toolchain first.
    pub cold: bool,
    /// That fetching and unpacking.
    pub toolchain_ms: u64,
    /// Everything the instance spent on it, from receiving the invocation to answering it: what
    /// Lambda bills.
    pub billed_ms: u64,
}

impl Sample {
    /// Invoke, fetch and upload: the time that was not the program's own, nor a cold start's unpacking.
    pub fn overhead_ms(&self) -> u64 {
        self.wall_ms.saturating_sub(self.run_ms + self.toolchain_ms)
    }
}

/// The Lambda engine.
pub struct LambdaEngine {
    client: Client,
    function: String,
    store: String,
    samples: Mutex<Vec<Sample>>,
}

impl LambdaEngine {
    /// An engine invoking `settings.function` for thunks of the store `store` (`s3://BUCKET/PREFIX`),
    /// with the standard AWS configuration (`AWS_ENDPOINT_URL_LAMBDA` honoured).
    pub async fn connect(settings: &crate::config::Settings, store: &str) -> LambdaEngine {
        let timeout = aws_sdk_lambda::config::timeout::TimeoutConfig::builder()
            .operation_timeout(std::time::Duration::from_secs(settings.invoke_timeout_s))
            .build();
        let builder = client_config(settings.region.as_deref())
            .await
            .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
            .timeout_config(timeout);
        let function = settings.function.as_str();
        LambdaEngine {
            client: Client::from_conf(builder.build()),
            function: function.to_owned(),
            store: store.to_owned(),
            samples: Mutex::new(Vec::new()),
        }
    }

    /// Every invocation that returned a reduction so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn payload(
        &self,
        hash: Hash,
        thunk: &Thunk,
        links: &BTreeMap<SandboxPath, OutputFile>,
        until: Option<&SandboxPath>,
    ) -> Result<Vec<u8>, RemoteError> {
        let mut invocation = Invocation::new(&self.store, hash, thunk);
        invocation.links = links.clone();
        invocation.until = until.cloned();
        let mut payload = serde_json::to_vec(&invocation).map_err(|e| RemoteError::Final(e.to_string()))?;
        if payload.len() > PAYLOAD_LIMIT {
            // The function reads it from the store instead.
            invocation.inline = None;
            payload = serde_json::to_vec(&invocation).map_err(|e| RemoteError::Final(e.to_string()))?;
        }
        if payload.len() > PAYLOAD_LIMIT {
            return Err(RemoteError::Final(format!(
                "its invocation would be {} bytes, over Lambda's limit of {PAYLOAD_LIMIT}",
                payload.len()
            )));
        }
        Ok(payload)
    }

    fn sdk_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        error: SdkError<E, aws_sdk_lambda::config::http::HttpResponse>,
    ) -> RemoteError {
        let function = &self.function;
        match &error {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = service.err().code().unwrap_or("an error");
                let message = service.err().message().unwrap_or_default();
                match code {
                    "ResourceNotFoundException" => RemoteError::Final(format!(
                        "the Lambda function `{function}` does not exist: deploy it with `cargo lambdabuild deploy`, \
                         or name it with --function / LAMBDABUILD_FUNCTION"
                    )),
                    "AccessDeniedException" | "UnrecognizedClientException" | "InvalidSignatureException" => {
                        RemoteError::Final(format!("Lambda refused the credentials ({code}): {message}"))
                    }
                    "RequestTooLargeException" | "InvalidRequestContentException" => {
                        RemoteError::Final(format!("Lambda refused the invocation ({code}): {message}"))
                    }
                    // The emulator's shape of a crashed handler: HTTP 500 with the error in the body.
                    _ if status >= 500 || status == 429 => {
                        RemoteError::Retryable(format!("Lambda answered {code} (HTTP {status}): {message}"))
                    }
                    _ => RemoteError::Retryable(format!("Lambda answered {code} (HTTP {status}): {message}")),
                }
            }
            SdkError::TimeoutError(_) => RemoteError::Retryable(format!("invoking `{function}` timed out")),
            _ => RemoteError::Retryable(format!("cannot invoke `{function}`: {}", store_s3::causes(&error))),
        }
    }
}

#[async_trait::async_trait]
impl RemoteEngine for LambdaEngine {
    fn name(&self) -> &str {
        "lambda"
    }

    fn usage(&self) -> thunk::remote::Usage {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        thunk::remote::Usage {
            invocations: samples.len() as u64,
            billed_ms: samples.iter().map(|sample| sample.billed_ms.max(1)).sum(),
        }
    }

    async fn run(
        &self,
        hash: Hash,
        thunk: &Thunk,
        links: &BTreeMap<SandboxPath, OutputFile>,
    ) -> Result<RemoteRun, RemoteError> {
        let (result, wall_ms) = self.invoke(self.payload(hash, thunk, links, None)?).await?;
        match result {
            InvocationResult::Reduced { reduction, timings } => {
                if reduction.thunk != hash {
                    return Err(RemoteError::Final(format!("the function answered for thunk {}", reduction.thunk)));
                }
                self.record(wall_ms, &timings);
                let phases = thunk::exec::Phases {
                    fetch_ms: timings.toolchain_ms + timings.fetch_ms,
                    run_ms: timings.run_ms,
                    store_ms: timings.executor_ms.saturating_sub(timings.fetch_ms),
                };
                Ok(RemoteRun {
                    reduction: *reduction,
                    worker: match timings.slot {
                        0 => format!("lambda {:08x}", timings.instance >> 32),
                        slot => format!("lambda {:08x}.{slot}", timings.instance >> 32),
                    },
                    phases,
                    overhead_ms: wall_ms.saturating_sub(timings.total_ms),
                })
            }
            InvocationResult::Announced { output, .. } => {
                Err(RemoteError::Final(format!("the function stopped at {output}, which it was not asked to")))
            }
            InvocationResult::Failed { retryable: true, message } => Err(RemoteError::Retryable(message)),
            InvocationResult::Failed { retryable: false, message } => Err(RemoteError::Final(message)),
        }
    }

    async fn run_until(
        &self,
        hash: Hash,
        thunk: &Thunk,
        links: &BTreeMap<SandboxPath, OutputFile>,
        output: &SandboxPath,
    ) -> Result<OutputFile, RemoteError> {
        let (result, wall_ms) = self.invoke(self.payload(hash, thunk, links, Some(output))?).await?;
        let (file, timings) = match result {
            InvocationResult::Announced { output: announced, file, timings } if announced == *output => (file, timings),
            // rustc ended before announcing it (a compile error): the full run reports that.
            InvocationResult::Reduced { reduction, timings } => match reduction.outputs.get(output) {
                Some(file) if reduction.succeeded() => (*file, timings),
                _ => return Err(RemoteError::Final(format!("the compile ended before writing {output}"))),
            },
            InvocationResult::Announced { output: announced, .. } => {
                return Err(RemoteError::Final(format!("the function stopped at {announced}, not {output}")));
            }
            InvocationResult::Failed { retryable: true, message } => return Err(RemoteError::Retryable(message)),
            InvocationResult::Failed { retryable: false, message } => return Err(RemoteError::Final(message)),
        };
        self.record(wall_ms, &timings);
        Ok(file)
    }
}

impl LambdaEngine {
    /// Keeps an answered invocation's sample, for the overhead report and the bill.
    fn record(&self, wall_ms: u64, timings: &thunk::remote::Timings) {
        let sample = Sample {
            wall_ms,
            run_ms: timings.run_ms,
            cold: timings.cold,
            toolchain_ms: timings.toolchain_ms,
            billed_ms: timings.total_ms,
        };
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
    }

    /// Sends one invocation and reads its answer, with the round trip's wall time.
    async fn invoke(&self, payload: Vec<u8>) -> Result<(InvocationResult, u64), RemoteError> {
        let started = Instant::now();
        let output = self
            .client
            .invoke()
            .function_name(&self.function)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|error| self.sdk_error(error))?;
        let wall_ms = started.elapsed().as_millis() as u64;
        let body = output.payload().map(|blob| blob.as_ref()).unwrap_or_default();
        if let Some(kind) = output.function_error() {
            // The instance crashed, ran out of memory or time: another instance may do better.
            let detail = String::from_utf8_lossy(&body[..body.len().min(500)]);
            return Err(RemoteError::Retryable(format!("the function failed ({kind}): {detail}")));
        }
        let result: InvocationResult = serde_json::from_slice(body).map_err(|e| {
            RemoteError::Final(format!(
                "the function's answer is not one this client understands ({e}); deploy the function of this \
                 version with `cargo lambdabuild deploy`"
            ))
        })?;
        Ok((result, wall_ms))
    }
}
