//! End-to-end tests: the real `cargo-lambdabuild` and `rustc-model` binaries, run as a user would, on
//! temporary stores and projects. One test binary (one link step) for the whole suite, as in cargo's.

mod build;
mod ci;
mod cli;
mod deploy;
mod faults;
mod faulty_lambda;
mod interrupt;
mod lambda;
mod load;
mod proxy;
mod ripgrep;
mod s3;
mod security;
mod support;
mod tidy;
mod timings;
