//! The Lambda function: a `provided.al2023` custom runtime (this binary is its `bootstrap`) on the
//! `lambda_runtime` crate. Each invocation runs one thunk (see [`runtime_layer::function`]).
//!
//! Settings, from the function's environment: `LAMBDABUILD_CACHE_DIR` (default `/tmp/lambdabuild`),
//! `LAMBDABUILD_CACHE_LIMIT_MB` (default 2048), and the standard AWS variables for S3. With
//! `AWS_LAMBDA_MAX_CONCURRENCY` above 1 one process serves that many invocations at once (Lambda
//! managed instances, or the local emulator).

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use runtime_layer::function::{DEFAULT_CACHE_DIR, DEFAULT_CACHE_LIMIT, Function};
use thunk::remote::{Invocation, InvocationResult};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cache_dir = thunk::env::var("LAMBDABUILD_CACHE_DIR").unwrap_or_else(|| DEFAULT_CACHE_DIR.to_owned());
    let cache_limit = thunk::env::var("LAMBDABUILD_CACHE_LIMIT_MB")
        .and_then(|mb| mb.parse::<u64>().ok())
        .map_or(DEFAULT_CACHE_LIMIT, |mb| mb << 20);
    let function = Arc::new(Function::new(cache_dir.into(), cache_limit));
    let handler = service_fn(move |event: LambdaEvent<Invocation>| {
        let function = Arc::clone(&function);
        async move { Ok::<InvocationResult, Error>(function.handle(event.payload).await) }
    });
    lambda_runtime::run_concurrent(handler).await
}
