//! Turning one understood rustc call into a thunk: its inputs (the package's files, files outside it that
//! the sources name, `OUT_DIR`, the transitive closure of its dependencies as links), an allow-listed
//! environment, and arguments in which every absolute path stands under `@SANDBOX@`.
//!
//! The sandbox root mirrors the filesystem root: the real path `/home/me/app/src/main.rs` is the
//! sandbox path `home/me/app/src/main.rs`. Run in place (the local engine), `@SANDBOX@` is empty and
//! rustc sees exactly what cargo gave it; run in a sandbox, `--remap-path-prefix=@SANDBOX@=/` maps the
//! paths rustc records back to the real ones.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use thunk::exec::MIRROR_REMAP;
use thunk::hashcache::HashCache;
use thunk::placeholder::Placeholder;
use thunk::thunk::{MemoryClass, Placement, ProgramPath, SANDBOX_TOKEN};
use thunk::workdir::Workdir;
use thunk::{Hash, Input, SandboxPath, Store, StoreError, Thunk};

use crate::args::{Call, Emit};
use crate::scan::{self, Found};

/// How long a rustc thunk may run: generous, since a large crate with LTO takes minutes.
const TIMEOUT_MS: u64 = 60 * 60 * 1000;

/// Variables cargo sets for rustc that a crate may read with `env!`.
const CARGO_VARS: &[&str] = &[
    "CARGO",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
    "RUSTC_BOOTSTRAP",
    "SOURCE_DATE_EPOCH",
];

/// Names that look like secrets: never copied into a thunk, whatever reads them.
pub fn is_credential(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("AWS_")
        || ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "_KEY", "APIKEY", "API_KEY"]
            .iter()
            .any(|part| upper.contains(part))
}

/// Everything the model needs from its surroundings.
pub struct Context<'a> {
    /// The directory cargo ran rustc in.
    pub cwd: &'a Path,
    /// The wrapper's whole environment (what cargo gave rustc).
    pub env: &'a BTreeMap<String, String>,
    /// The store.
    pub store: &'a Store,
    /// The machine-local workdir (hash cache, realized-file index).
    pub workdir: &'a Workdir,
    /// The toolchain, by hash.
    pub toolchain: Hash,
    /// The build's target directory, never an input.
    pub target_dir: &'a Path,
    /// The session, which knows every output modelled so far.
    pub session: Option<&'a crate::session::Session>,
}

/// A call turned into a thunk.
#[derive(Debug)]
pub struct Modelled {
    /// The thunk (already in the store).
    pub thunk: Thunk,
    /// Its hash.
    pub hash: Hash,
    /// Each output: real path, sandbox path and what it is.
    pub outputs: Vec<(PathBuf, SandboxPath, Emit)>,
    /// The files to list in the placeholder dep-info (every input read from the package and beside it).
    pub sources: Vec<PathBuf>,
    /// The env vars the sources read, with their values, for the dep-info's `# env-dep:` lines.
    pub env_deps: BTreeMap<String, Option<String>>,
}

/// Why a call could not be modelled.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The call is understood, but something about it keeps it out of a thunk; rustc runs for real.
    #[error("{0}")]
    PassThrough(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The session's remote store cannot be opened.
    #[error("{0}")]
    Remote(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.to_owned();
    move |source| ModelError::Io { path, source }
}

/// The sandbox path that mirrors the absolute `path`.
fn mirror(path: &Path) -> Result<SandboxPath, ModelError> {
    let text = path.to_str().ok_or(ModelError::PassThrough("a path that is not UTF-8"))?;
    let relative = text.strip_prefix('/').ok_or(ModelError::PassThrough("a path that is not absolute"))?;
    SandboxPath::new(relative).map_err(|_| ModelError::PassThrough("a path the sandbox cannot hold"))
}

/// `/abs` → `@SANDBOX@/abs`; `KEY=/abs` → `KEY=@SANDBOX@/abs`; anything else as it is.
fn sandbox_arg(arg: &str) -> String {
    if arg.starts_with('/') {
        return format!("{SANDBOX_TOKEN}{arg}");
    }
    match arg.find("=/") {
        Some(index) => format!("{}={SANDBOX_TOKEN}{}", &arg[..index], &arg[index + 1..]),
        None => arg.to_owned(),
    }
}

struct Builder<'a> {
    context: &'a Context<'a>,
    cache: HashCache,
    inputs: BTreeMap<SandboxPath, Input>,
    sources: Vec<PathBuf>,
    thunks: std::collections::HashMap<Hash, std::sync::Arc<Thunk>>,
}

impl Builder<'_> {
    /// Adds a file by hash. Its bytes stay where they are: the local engine reads them in place, and
    /// the uploader copies what a remote engine needs into the store (DESIGN §2, step 2).
    async fn add_file(&mut self, path: &Path) -> Result<(), ModelError> {
        let sandbox = mirror(path)?;
        if self.inputs.contains_key(&sandbox) {
            return Ok(());
        }
        let digest = self.cache.digest(path).map_err(io_error(path))?;
        if digest.is_placeholder {
            return Err(ModelError::PassThrough("a source file that is a cargo-lambdabuild placeholder"));
        }
        self.inputs
            .insert(sandbox, Input::Blob { hash: digest.hash, size: digest.size, executable: digest.executable });
        Ok(())
    }

    /// Adds a Rust source by hash and returns its text, read once for both.
    fn add_source(&mut self, path: &Path) -> Result<Vec<u8>, ModelError> {
        let (digest, bytes) = self.cache.read(path).map_err(io_error(path))?;
        if digest.is_placeholder {
            return Err(ModelError::PassThrough("a source file that is a cargo-lambdabuild placeholder"));
        }
        let input = Input::Blob { hash: digest.hash, size: digest.size, executable: digest.executable };
        self.inputs.insert(mirror(path)?, input);
        Ok(bytes)
    }

    /// Adds a dependency artifact and, through the thunk that makes it, its whole closure.
    async fn add_dependency(&mut self, path: &Path, needs_rlib: bool) -> Result<(), ModelError> {
        let (thunk, output) = match self.context.session.and_then(|session| session.output_of(path)) {
            Some(found) => found,
            None => self.read_dependency(path)?,
        };
        let producer = self.thunk(thunk).await?;
        let (path, output) = self.rlib_if_needed(mirror(path)?, thunk, output, needs_rlib).await?;
        self.inputs.insert(path, Input::Link { thunk, output });
        for (path, input) in &producer.inputs {
            if let Input::Link { thunk, output } = input {
                let (path, output) = self.rlib_if_needed(path.clone(), *thunk, output.clone(), needs_rlib).await?;
                self.inputs.insert(path, Input::Link { thunk: *thunk, output });
            }
        }
        Ok(())
    }

    /// The rlib beside an rmeta, when the consumer links and the producer makes one.
    async fn rlib_if_needed(
        &mut self,
        path: SandboxPath,
        producer: Hash,
        output: SandboxPath,
        needs_rlib: bool,
    ) -> Result<(SandboxPath, SandboxPath), ModelError> {
        if needs_rlib && output.as_str().ends_with(".rmeta") {
            let rlib = |p: &SandboxPath| SandboxPath::new(&p.as_str().replace(".rmeta", ".rlib")).ok();
            if let (Some(rlib_path), Some(rlib_output)) = (rlib(&path), rlib(&output))
                && self.makes(producer, &rlib_output).await?
            {
                return Ok((rlib_path, rlib_output));
            }
        }
        Ok((path, output))
    }

    /// Whether `thunk` makes `output`: from the session's index of outputs when it knows (reading the
    /// thunk of every crate in the closure to ask cost the model phase a second of CPU on mdbook),
    /// else from the thunk.
    async fn makes(&mut self, thunk: Hash, output: &SandboxPath) -> Result<bool, ModelError> {
        if let Some(session) = self.context.session {
            // Outputs are mirrored absolute paths: the root stands for `/`.
            let real = Path::new("/").join(output.as_str());
            if session.output_of(&real).is_some_and(|(maker, made)| maker == thunk && made == *output) {
                return Ok(true);
            }
        }
        Ok(self.thunk(thunk).await?.outputs.contains(output))
    }

    /// A producer's thunk, read from the store once per call: dependencies share most of their closure.
    async fn thunk(&mut self, hash: Hash) -> Result<std::sync::Arc<Thunk>, ModelError> {
        if let Some(thunk) = self.thunks.get(&hash) {
            return Ok(std::sync::Arc::clone(thunk));
        }
        let thunk = std::sync::Arc::new(self.context.store.get_thunk(hash).await?);
        self.thunks.insert(hash, std::sync::Arc::clone(&thunk));
        Ok(thunk)
    }

    /// The thunk output a dependency file stands for, from the file itself.
    fn read_dependency(&self, path: &Path) -> Result<(Hash, SandboxPath), ModelError> {
        Ok(match Placeholder::read(path) {
            Ok(Some(placeholder)) => (placeholder.thunk, placeholder.output),
            Ok(None) => {
                // A file the forcer already wrote (a build script's dependency) is still that output.
                let digest = self.cache.digest(path).map_err(io_error(path))?;
                match self.context.workdir.realized(path) {
                    Some((thunk, hash, output)) if hash == digest.hash => (thunk, output),
                    _ => return Err(ModelError::PassThrough("a dependency built outside the model")),
                }
            }
            Err(_) => return Err(ModelError::PassThrough("a damaged placeholder among the dependencies")),
        })
    }

    fn walk(&mut self, dir: &Path, root: &Path, files: &mut Vec<PathBuf>) -> Result<(), ModelError> {
        let entries = fs::read_dir(dir).map_err(io_error(dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let file_type = entry.file_type().map_err(io_error(&path))?;
            if file_type.is_dir() {
                // Version control, build output, and nested packages (their own units) are not inputs.
                let skip = name == ".git"
                    || path == self.context.target_dir
                    || (dir == root && name == "target")
                    || path.join("Cargo.toml").exists();
                if !skip {
                    self.walk(&path, root, files)?;
                }
            } else if file_type.is_file() || (file_type.is_symlink() && path.is_file()) {
                files.push(path);
            }
        }
        Ok(())
    }
}

/// Models `call`, whose program is the toolchain's rustc, into a stored thunk.
pub async fn model(call: &Call, context: &Context<'_>) -> Result<Modelled, ModelError> {
    if !cfg!(target_os = "linux") {
        return Err(ModelError::PassThrough("a host other than Linux"));
    }
    let absolute = |path: &Path| if path.is_absolute() { path.to_owned() } else { context.cwd.join(path) };
    let manifest_dir = PathBuf::from(
        context
            .env
            .get("CARGO_MANIFEST_DIR")
            .ok_or(ModelError::PassThrough("no CARGO_MANIFEST_DIR (not run by cargo)"))?,
    );
    let mut builder = Builder {
        context,
        cache: context.workdir.hash_cache(),
        inputs: BTreeMap::new(),
        sources: Vec::new(),
        thunks: std::collections::HashMap::new(),
    };

    // 1. The package's files, and files outside it that its sources name.
    builder.cache.group_under(&manifest_dir);
    let mut files = Vec::new();
    builder.walk(&manifest_dir, &manifest_dir, &mut files)?;
    let mut found = Found::default();
    for file in &files {
        if file.extension().is_some_and(|e| e == "rs") {
            let text = builder.add_source(file)?;
            if let Ok(text) = std::str::from_utf8(&text) {
                scan::scan(file, text, &mut found);
            }
        } else {
            builder.add_file(file).await?;
        }
        builder.sources.push(file.clone());
    }
    for file in &found.files {
        let file = thunk::path::lexical(file);
        if file.is_file() && !file.starts_with(context.target_dir) {
            builder.add_file(&file).await?;
            builder.sources.push(file);
        }
    }
    let input = absolute(&call.input);
    builder.add_file(&input).await?;

    // 2. What the build script made: OUT_DIR, and native libraries there or in the package.
    let out_dir = context.env.get("OUT_DIR").map(PathBuf::from);
    if let Some(out_dir) = &out_dir
        && out_dir.is_dir()
    {
        let mut generated = Vec::new();
        builder.walk(out_dir, out_dir, &mut generated)?;
        for file in generated {
            builder.add_file(&file).await?;
        }
    }
    for native in &call.native_paths {
        let native = absolute(native);
        let known = out_dir.as_ref().is_some_and(|o| native.starts_with(o)) || native.starts_with(&manifest_dir);
        if known {
            continue;
        }
        // Another package's build script output (cargo passes its -L native= on to dependents).
        if native.starts_with(context.target_dir) && native.is_dir() {
            let mut libraries = Vec::new();
            builder.walk(&native, &native, &mut libraries)?;
            for file in libraries {
                builder.add_file(&file).await?;
            }
            continue;
        }
        return Err(ModelError::PassThrough("a native library search path outside the package and the target dir"));
    }

    // 3. Dependencies, with their transitive closure (rustc loads indirect ones from -L dependency=).
    for dependency in &call.externs {
        builder.add_dependency(&absolute(dependency), call.links()).await?;
    }

    // 4. The environment: cargo's variables, those the build script set, those the sources read.
    let mut names: BTreeSet<String> = context
        .env
        .keys()
        .filter(|name| {
            CARGO_VARS.contains(&name.as_str()) || name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_BIN_EXE_")
        })
        .cloned()
        .collect();
    if let Some(out_dir) = &out_dir {
        names.extend(build_script_env(out_dir));
    }
    names.extend(found.env.iter().cloned());
    let mut env = BTreeMap::new();
    let mut env_deps = BTreeMap::new();
    for name in names {
        if is_credential(&name) {
            if context.env.contains_key(&name) {
                return Err(ModelError::PassThrough("the crate reads a variable that looks like a credential"));
            }
            continue;
        }
        let value = context.env.get(&name);
        if found.env.contains(&name) {
            env_deps.insert(name.clone(), value.cloned());
        }
        if let Some(value) = value {
            env.insert(name, sandbox_arg(value));
        }
    }
    env.insert("PATH".into(), thunk::toolchain::LINKER_PATH.into());
    // A real path compiled in as a value (`env!("CARGO_MANIFEST_DIR")`) would be the sandbox's path
    // anywhere but in place.
    let placement = if found.env_values.iter().any(|name| env.get(name).is_some_and(|v| v.contains(SANDBOX_TOKEN))) {
        Placement::RealPaths
    } else {
        Placement::Anywhere
    };

    // 5. Arguments, outputs, working directory.
    let mut args: Vec<String> = call.args.iter().map(|arg| sandbox_arg(arg)).collect();
    args.push(MIRROR_REMAP.to_owned());
    let mut outputs = Vec::new();
    for (path, emit) in call.outputs() {
        let path = absolute(&path);
        outputs.push((path.clone(), mirror(&path)?, emit));
    }
    let cwd = if context.cwd == Path::new("/") { None } else { Some(mirror(context.cwd)?) };
    let thunk = Thunk {
        toolchain: context.toolchain,
        program: ProgramPath(SandboxPath::program("_toolchain/bin/rustc").expect("a valid path")),
        args,
        cwd,
        env,
        inputs: builder.inputs,
        outputs: outputs.iter().map(|(_, sandbox, _)| sandbox.clone()).collect(),
        timeout_ms: TIMEOUT_MS,
        memory: MemoryClass::Standard,
        placement,
    };
    thunk.validate().map_err(|_| ModelError::PassThrough("inputs and outputs that overlap"))?;
    let hash = context.store.put_thunk(&thunk).await?;
    Ok(Modelled { thunk, hash, outputs, sources: builder.sources, env_deps })
}

/// The names a build script set with `cargo:rustc-env=NAME=VALUE` (cargo keeps its output beside OUT_DIR).
fn build_script_env(out_dir: &Path) -> Vec<String> {
    let Some(output) = out_dir.parent().map(|dir| dir.join("output")) else {
        return Vec::new();
    };
    let Ok(text) = fs::read_to_string(output) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.strip_prefix("cargo::rustc-env=").or_else(|| line.strip_prefix("cargo:rustc-env=")))
        .filter_map(|assignment| assignment.split_once('=').map(|(name, _)| name.to_owned()))
        .collect()
}

/// The dep-info cargo reads in place of rustc's: every file of the package and beside it, so that cargo's
/// fingerprint notices any change, and the variables the sources read.
pub fn placeholder_dep_info(modelled: &Modelled) -> String {
    let escape = |path: &Path| path.display().to_string().replace(' ', "\\ ");
    let sources: Vec<String> = modelled.sources.iter().map(|path| escape(path)).collect();
    let mut text = String::new();
    for (path, _, _) in &modelled.outputs {
        text.push_str(&format!("{}: {}\n\n", escape(path), sources.join(" ")));
    }
    for source in &sources {
        text.push_str(&format!("{source}:\n"));
    }
    for (name, value) in &modelled.env_deps {
        match value {
            Some(value) => text.push_str(&format!("# env-dep:{name}={}\n", value.replace('\n', "\\n"))),
            None => text.push_str(&format!("# env-dep:{name}\n")),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_go_under_the_sandbox_token() {
        assert_eq!(sandbox_arg("/w/src/lib.rs"), "@SANDBOX@/w/src/lib.rs");
        assert_eq!(sandbox_arg("--out-dir=/w/target"), "--out-dir=@SANDBOX@/w/target");
        assert_eq!(sandbox_arg("dependency=/w/target/deps"), "dependency=@SANDBOX@/w/target/deps");
        assert_eq!(sandbox_arg("util=/w/libutil.rlib"), "util=@SANDBOX@/w/libutil.rlib");
        assert_eq!(sandbox_arg("src/main.rs"), "src/main.rs");
        assert_eq!(sandbox_arg("metadata=abc"), "metadata=abc");
    }

    #[test]
    fn credentials_are_recognised() {
        for name in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GITHUB_TOKEN", "MY_API_KEY", "DB_PASSWORD"] {
            assert!(is_credential(name), "{name}");
        }
        for name in ["CARGO_PKG_NAME", "OUT_DIR", "GIT_HASH", "KEYBOARD_LAYOUT"] {
            assert!(!is_credential(name), "{name}");
        }
    }
}
