//! The library side of `cargo-lambdabuild`: what both of its binaries use. `cargo-lambdabuild` (the
//! subcommand, `main.rs`) and `rustc-model` (the wrapper, whose CI mode opens the configured store and
//! engine through [`ci`]).
#![deny(missing_docs)]

pub mod ci;
pub mod config;
pub mod cost;
pub mod engine;
pub mod scaleout;
pub mod store;
pub mod timings;
pub mod upload;
