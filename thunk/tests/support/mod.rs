//! A temporary store, workdir and executor for the library's integration tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use thunk::exec::Executor;
use thunk::thunk::{MemoryClass, ProgramPath};
use thunk::workdir::Workdir;
use thunk::{Hash, Input, LocalBackend, SandboxPath, Store, Thunk};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub workdir: Workdir,
    pub executor: Executor,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store_root = dir.path().join("store");
        let store = Store::new(Arc::new(LocalBackend::open(&store_root).unwrap()));
        let workdir = Workdir::open(&store_root).unwrap();
        // Shell-script thunks need no rustc: an empty tree stands for their toolchain.
        fs::create_dir_all(workdir.toolchain_dir(no_toolchain())).unwrap();
        let executor = Executor::new(store.clone(), workdir.clone(), "local");
        Fixture { dir, store, workdir, executor }
    }

    pub fn store_root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Stores `bytes` and returns the input that names them.
    pub async fn blob(&self, bytes: &[u8], executable: bool) -> Input {
        let hash = self.store.put_blob(bytes).await.unwrap();
        Input::Blob { hash, size: bytes.len() as u64, executable }
    }

    /// A thunk that runs `script` with `/bin/sh` semantics (it is stored as an executable `run.sh`).
    pub async fn script_thunk(&self, script: &str, outputs: &[&str]) -> Thunk {
        let mut inputs = BTreeMap::new();
        inputs.insert(path("run.sh"), self.blob(format!("#!/bin/sh\nset -e\n{script}").as_bytes(), true).await);
        Thunk {
            toolchain: no_toolchain(),
            program: ProgramPath(path("run.sh")),
            args: vec![],
            cwd: None,
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            inputs,
            outputs: outputs.iter().map(|o| path(o)).collect::<BTreeSet<_>>(),
            timeout_ms: 60_000,
            memory: MemoryClass::Standard,
            placement: thunk::thunk::Placement::Anywhere,
        }
    }

    /// Every file under the sandboxes directory: empty once every run has cleaned up.
    pub fn leftover_sandboxes(&self) -> usize {
        fs::read_dir(self.workdir.sandboxes_dir()).unwrap().count()
    }
}

pub fn no_toolchain() -> Hash {
    Hash::of(b"no toolchain: shell scripts only")
}

pub fn path(text: &str) -> SandboxPath {
    SandboxPath::new(text).unwrap()
}
