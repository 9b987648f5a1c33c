//! The Lambda function's executable, installed beside `cargo-lambdabuild` so that
//! `cargo lambdabuild deploy` finds it (it becomes the function's `bootstrap`); the same program as
//! `runtime-layer`'s `bootstrap`.

fn main() -> Result<(), lambda_runtime::Error> {
    runtime_layer::function::serve()
}
