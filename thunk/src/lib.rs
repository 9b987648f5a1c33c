//! The shared core of cargo-lambdabuild: the IR (thunks, reductions, toolchain manifests, placeholders),
//! the store, and the executor that runs one thunk in a sandbox. `cargo-lambdabuild`, `rustc-model` and
//! the Lambda runtime all build on it; it knows nothing of cargo, clap or AWS.
#![deny(missing_docs)]

pub mod background;
pub mod decode;
pub mod env;
pub mod exec;
pub mod force;
pub mod hash;
pub mod hashcache;
pub mod history;
pub mod journal;
pub mod manifest;
pub mod path;
pub mod placeholder;
pub mod realize;
pub mod reduction;
pub mod remote;
pub mod slots;
pub mod stats;
pub mod store;
pub mod thunk;
pub mod toolchain;
pub mod workdir;

pub use hash::Hash;
pub use path::SandboxPath;
pub use reduction::Reduction;
pub use store::{LocalBackend, ObjectKey, Store, StoreError};
pub use thunk::{Input, Placement, Thunk};
