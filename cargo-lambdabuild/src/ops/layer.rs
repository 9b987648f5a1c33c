//! `cargo lambdabuild layer`: name the local toolchain, pack it into a layer (a deterministic
//! tar.zst under `toolchains/<hash>.tar.zst` of the local store) and, with an S3 store, upload it
//! there for the function to unpack at cold start.

use std::ffi::OsString;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use thunk::ObjectKey;
use thunk::toolchain::{LocalToolchain, name_local_toolchain, query_sysroot};

use crate::cli::{GlobalArgs, ToolchainArgs};
use crate::shell::{Shell, human_bytes};
use crate::upload::{UploadReport, upload_toolchain};

/// The local toolchain of `rustc`, named, packed, and in the store: with the layer's size and what
/// the upload sent.
pub async fn pack_and_store(
    global: &GlobalArgs,
    opened: &super::OpenStore,
    rustc: OsString,
    targets: &[String],
) -> anyhow::Result<(LocalToolchain, u64, UploadReport)> {
    let sysroot = query_sysroot(&rustc, &std::env::current_dir()?)?;
    let toolchain = name_local_toolchain(&sysroot, targets, &opened.workdir, &opened.local)
        .await
        .with_context(|| format!("cannot name the toolchain at {}", sysroot.display()))?;
    let local = thunk::LocalBackend::open(&opened.dir).context("cannot open the local store")?;
    let (size, uploaded) = upload_toolchain(
        &opened.store,
        &opened.workdir,
        &local,
        toolchain.hash,
        global.settings().upload_jobs,
        !global.quiet,
    )
    .await?;
    Ok((toolchain, size, uploaded))
}

pub async fn run(global: &GlobalArgs, args: ToolchainArgs, shell: &Shell) -> anyhow::Result<()> {
    let opened = super::open_store(global).await?;
    let rustc = args.rustc.map_or_else(|| OsString::from("rustc"), OsString::from);
    let started = Instant::now();
    let (toolchain, size, uploaded) = pack_and_store(global, &opened, rustc, &args.targets).await?;
    let seconds = started.elapsed().as_secs_f64();
    let key = ObjectKey::Toolchain(toolchain.hash);
    let store = opened.remote.clone().unwrap_or_else(|| opened.dir.display().to_string());
    let manifest = &toolchain.manifest;
    if args.json {
        let report = json!({
            "hash": toolchain.hash,
            "key": key.path(),
            "store": store,
            "size": size,
            "raw_bytes": manifest.total_size(),
            "files": manifest.files.len(),
            "release": manifest.release,
            "targets": manifest.targets,
            "uploaded_bytes": uploaded.bytes,
            "seconds": seconds,
        });
        shell.print(&format!("{report}\n"));
    } else {
        let sent = match (&opened.remote, uploaded.uploaded) {
            (None, _) => String::new(),
            (Some(_), 0) => ", already in the store".to_owned(),
            (Some(_), _) => format!(", uploaded {}", human_bytes(uploaded.bytes)),
        };
        shell.status(
            "Packed",
            &format!(
                "toolchain {} ({}, {}): {} files, {} → {} as {key} in {store}{sent}, in {seconds:.1}s",
                toolchain.hash.short(),
                manifest.release,
                manifest.targets.join(" "),
                manifest.files.len(),
                human_bytes(manifest.total_size()),
                human_bytes(size),
            ),
        );
        shell.print(&format!("{} {size}\n", toolchain.hash));
    }
    Ok(())
}
