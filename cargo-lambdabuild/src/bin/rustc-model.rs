//! `rustc-model`, the `RUSTC_WRAPPER` of cargo-lambdabuild; its logic is the `rustc-model` crate, and
//! its CI mode opens the store and engine the settings name (`cargo_lambdabuild::ci`).

fn main() -> std::process::ExitCode {
    rustc_model::main(&cargo_lambdabuild::ci::FromSettings)
}
