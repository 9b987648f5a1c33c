//! `rustc-model`, the `RUSTC_WRAPPER` of cargo-lambdabuild; its logic is the `rustc-model` crate.

fn main() -> std::process::ExitCode {
    rustc_model::main()
}
