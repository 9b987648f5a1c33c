//! The Lambda function: a `provided.al2023` custom runtime (this binary is its `bootstrap`) on the
//! `lambda_runtime` crate. Each invocation runs one thunk (see [`runtime_layer::function`]).

fn main() -> Result<(), lambda_runtime::Error> {
    runtime_layer::function::serve()
}
