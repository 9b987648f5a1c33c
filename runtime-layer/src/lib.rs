//! The Lambda side of cargo-lambdabuild.
//!
//! A Lambda function cannot hold a 500 MB toolchain in its 250 MB of layers, so the toolchain travels as
//! a *packed layer*: a deterministic tar.zst of exactly the files of a toolchain manifest, stored under
//! `toolchains/<manifest-hash>.tar.zst`, that the function unpacks into `/tmp` at cold start.
//! [`layer`] packs and unpacks it; the unpacker trusts nothing in the archive. [`function`] is the
//! function's work (one invocation runs one thunk); `bootstrap`, the function's executable, adds the
//! Lambda runtime around it.
#![deny(missing_docs)]

pub mod function;
pub mod layer;
