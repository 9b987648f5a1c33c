//! `cargo lambdabuild describe PATH|HASH`: a thunk, placeholder, reduction or toolchain in readable form.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use thunk::manifest::ToolchainManifest;
use thunk::placeholder::Placeholder;
use thunk::reduction::Status;
use thunk::{Hash, Input, ObjectKey, Reduction, Store, StoreError, Thunk};

use crate::cli::{DescribeArgs, GlobalArgs};
use crate::shell::{Shell, human_bytes};

/// Object files given by path are read whole only up to this size.
const MAX_OBJECT_FILE: u64 = 64 << 20;

/// What the argument turned out to be.
enum Described {
    Thunk {
        hash: Hash,
        thunk: Box<Thunk>,
        reduction: Option<Reduction>,
        placeholder: Option<Placeholder>,
    },
    Reduction(Reduction),
    Toolchain {
        hash: Hash,
        manifest: ToolchainManifest,
    },
    Blob {
        hash: Hash,
        size: u64,
    },
    /// A placeholder whose thunk is not in this store.
    OrphanPlaceholder(Placeholder),
}

pub async fn run(global: &GlobalArgs, args: DescribeArgs, shell: &Shell) -> anyhow::Result<()> {
    let store = super::open_store(global).await?.store;
    let described = resolve(&store, &args.target).await?;
    let text = if args.json { format!("{:#}\n", to_json(&described)) } else { render(&store, &described).await? };
    shell.print(&text);
    Ok(())
}

async fn resolve(store: &Store, target: &str) -> anyhow::Result<Described> {
    let path = Path::new(target);
    if path.is_file() {
        return resolve_file(store, path).await;
    }
    let Ok(hash) = target.parse::<Hash>() else {
        bail!("`{target}` is neither a file nor a hash (64 hex digits) of an object in the store");
    };
    if store.has(ObjectKey::Thunk(hash)).await? {
        return thunk_with_reduction(store, hash, None).await;
    }
    if let Some(reduction) = store.get_reduction(hash).await? {
        return Ok(Described::Reduction(reduction));
    }
    match store.get_blob(hash).await {
        Ok(bytes) => Ok(match ToolchainManifest::decode(&bytes) {
            Ok(manifest) => Described::Toolchain { hash, manifest },
            Err(_) => Described::Blob { hash, size: bytes.len() as u64 },
        }),
        Err(StoreError::Missing { .. }) => {
            bail!("no thunk, reduction or blob named {hash} in the store {}", store.describe())
        }
        Err(other) => Err(other.into()),
    }
}

async fn resolve_file(store: &Store, path: &Path) -> anyhow::Result<Described> {
    if let Some(placeholder) = Placeholder::read(path)? {
        return match store.get_thunk(placeholder.thunk).await {
            Ok(_) => thunk_with_reduction(store, placeholder.thunk, Some(placeholder)).await,
            Err(StoreError::Missing { .. }) => Ok(Described::OrphanPlaceholder(placeholder)),
            Err(other) => Err(other.into()),
        };
    }
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|file| file.take(MAX_OBJECT_FILE).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let context = || format!("cannot describe {}", path.display());
    let kind = match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) => value.get("kind").and_then(Value::as_str).map(str::to_owned),
        Err(error) if bytes.trim_ascii_start().starts_with(b"{") => {
            return Err(anyhow::anyhow!("it is damaged JSON: {error}")).with_context(context);
        }
        Err(_) => None,
    };
    match kind.as_deref() {
        Some("thunk") => {
            let thunk = Thunk::decode(&bytes).with_context(context)?;
            let hash = thunk.hash();
            let reduction = store.get_reduction(hash).await?;
            Ok(Described::Thunk { hash, thunk: Box::new(thunk), reduction, placeholder: None })
        }
        Some("reduction") => Ok(Described::Reduction(Reduction::decode(&bytes, None).with_context(context)?)),
        Some("toolchain") => {
            let manifest = ToolchainManifest::decode(&bytes).with_context(context)?;
            Ok(Described::Toolchain { hash: manifest.hash(), manifest })
        }
        _ => bail!(
            "{} is not a placeholder, thunk, reduction or toolchain manifest of cargo-lambdabuild",
            path.display()
        ),
    }
}

async fn thunk_with_reduction(
    store: &Store,
    hash: Hash,
    placeholder: Option<Placeholder>,
) -> anyhow::Result<Described> {
    let thunk = store.get_thunk(hash).await?;
    let reduction = store.get_reduction(hash).await?;
    Ok(Described::Thunk { hash, thunk: Box::new(thunk), reduction, placeholder })
}

fn to_json(described: &Described) -> Value {
    let parse = |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).expect("IR objects are JSON");
    match described {
        Described::Thunk { hash, thunk, reduction, placeholder } => json!({
            "type": "thunk",
            "hash": hash,
            "placeholder_output": placeholder.as_ref().map(|p| p.output.as_str()),
            "thunk": parse(thunk.canonical_bytes()),
            "reduction": reduction.as_ref().map(|r| parse(r.encode())),
        }),
        Described::Reduction(reduction) => json!({ "type": "reduction", "reduction": parse(reduction.encode()) }),
        Described::Toolchain { hash, manifest } => {
            json!({ "type": "toolchain", "hash": hash, "manifest": parse(manifest.canonical_bytes()) })
        }
        Described::Blob { hash, size } => json!({ "type": "blob", "hash": hash, "size": size }),
        Described::OrphanPlaceholder(placeholder) => json!({
            "type": "placeholder",
            "thunk": placeholder.thunk,
            "output": placeholder.output.as_str(),
            "in_store": false,
        }),
    }
}

/// Lines of `label   value`, with continuation lines indented under the value.
struct Sheet {
    text: String,
}

impl Sheet {
    fn row(&mut self, label: &str, values: impl IntoIterator<Item = String>) {
        let mut values = values.into_iter().peekable();
        if values.peek().is_none() {
            let _ = writeln!(self.text, "  {label:<10} (none)");
        }
        for (i, value) in values.enumerate() {
            let label = if i == 0 { label } else { "" };
            let _ = writeln!(self.text, "  {label:<10} {value}");
        }
    }
}

async fn render(store: &Store, described: &Described) -> anyhow::Result<String> {
    let mut sheet = Sheet { text: String::new() };
    match described {
        Described::Thunk { hash, thunk, reduction, placeholder } => {
            if let Some(placeholder) = placeholder {
                let _ = writeln!(sheet.text, "placeholder for output `{}` of", placeholder.output);
            }
            let _ = writeln!(sheet.text, "thunk {hash}");
            sheet.row("toolchain", [toolchain_line(store, thunk.toolchain).await]);
            sheet.row("program", [thunk.program.0.to_string()]);
            sheet.row("args", thunk.args.iter().cloned());
            sheet.row("env", thunk.env.iter().map(|(name, value)| format!("{name}={value}")));
            let width = thunk.inputs.keys().map(|p| p.as_str().len()).max().unwrap_or(0);
            let mut inputs = Vec::new();
            for (path, input) in &thunk.inputs {
                let what = match input {
                    Input::Blob { hash, size, executable } => {
                        let mode = if *executable { "  executable" } else { "" };
                        format!("blob {}  {}{mode}", hash.short(), human_bytes(*size))
                    }
                    Input::Link { thunk: producer, output } => {
                        let size = match store.get_reduction(*producer).await? {
                            Some(r) => r.outputs.get(output).map_or("not produced".into(), |f| human_bytes(f.size)),
                            None => "not forced yet".into(),
                        };
                        format!("link {}#{output}  {size}", producer.short())
                    }
                    Input::Symlink { target } => format!("symlink -> {target}"),
                };
                inputs.push(format!("{:<width$}  {what}", path.as_str()));
            }
            sheet.row("inputs", inputs);
            sheet.row("outputs", thunk.outputs.iter().map(ToString::to_string));
            sheet.row(
                "limits",
                [format!(
                    "timeout {} s, memory {:?} ({} MiB)",
                    thunk.timeout_ms as f64 / 1000.0,
                    thunk.memory,
                    thunk.memory.mib()
                )],
            );
            match reduction {
                Some(reduction) => render_reduction(&mut sheet, reduction),
                None => sheet.row("reduction", ["not forced yet".to_owned()]),
            }
        }
        Described::Reduction(reduction) => {
            let _ = writeln!(sheet.text, "reduction of thunk {}", reduction.thunk);
            render_reduction(&mut sheet, reduction);
        }
        Described::Toolchain { hash, manifest } => {
            let _ = writeln!(sheet.text, "toolchain {hash}");
            sheet.row("release", [manifest.release.clone()]);
            sheet.row("host", [manifest.host.clone()]);
            sheet.row("targets", manifest.targets.iter().cloned());
            sheet.row("size", [format!("{} files, {}", manifest.files.len(), human_bytes(manifest.total_size()))]);
            let width = manifest.files.keys().map(|p| p.as_str().len()).max().unwrap_or(0);
            sheet.row(
                "files",
                manifest.files.iter().map(|(path, file)| {
                    format!("{:<width$}  {}  {}", path.as_str(), file.hash.short(), human_bytes(file.size))
                }),
            );
        }
        Described::Blob { hash, size } => {
            let _ = writeln!(sheet.text, "blob {hash}");
            sheet.row("size", [human_bytes(*size)]);
        }
        Described::OrphanPlaceholder(placeholder) => {
            let _ = writeln!(sheet.text, "placeholder for output `{}` of", placeholder.output);
            let _ = writeln!(sheet.text, "thunk {}", placeholder.thunk);
            sheet
                .row("store", [format!("the thunk is not in {}; is --store the one that built it?", store.describe())]);
        }
    }
    Ok(sheet.text)
}

async fn toolchain_line(store: &Store, hash: Hash) -> String {
    match store.get_blob(hash).await.ok().and_then(|bytes| ToolchainManifest::decode(&bytes).ok()) {
        Some(manifest) => format!(
            "{} {} for {}, {} files, {}",
            hash.short(),
            manifest.release,
            manifest.targets.join(" "),
            manifest.files.len(),
            human_bytes(manifest.total_size())
        ),
        None => format!("{hash} (manifest not in this store)"),
    }
}

fn render_reduction(sheet: &mut Sheet, reduction: &Reduction) {
    let status = match &reduction.status {
        Status::Success => "success".to_owned(),
        Status::Exit { code } => format!("failed: exit code {code}"),
        Status::MissingOutput { path } => format!("failed: declared output `{path}` was not written"),
    };
    sheet.row(
        "reduction",
        [format!(
            "{status} in {:.2} s, peak memory {}, on {}",
            reduction.duration_ms as f64 / 1000.0,
            human_bytes(reduction.peak_memory_kib * 1024),
            reduction.engine
        )],
    );
    let width = reduction.outputs.keys().map(|p| p.as_str().len()).max().unwrap_or(0);
    sheet.row(
        "produced",
        reduction.outputs.iter().map(|(path, file)| {
            let mode = if file.executable { "  executable" } else { "" };
            format!("{:<width$}  {}  {}{mode}", path.as_str(), file.hash.short(), human_bytes(file.size))
        }),
    );
    sheet.row("stderr", [format!("{} ({})", reduction.stderr.hash.short(), human_bytes(reduction.stderr.size))]);
}
