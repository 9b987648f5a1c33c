//! `cargo lambdabuild toolchain`: name the local rustc toolchain.

use std::ffi::OsString;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use thunk::toolchain::{name_local_toolchain, query_sysroot};

use crate::cli::{GlobalArgs, ToolchainArgs};
use crate::shell::{Shell, human_bytes};

pub async fn run(global: &GlobalArgs, args: ToolchainArgs, shell: &Shell) -> anyhow::Result<()> {
    let opened = super::open_store(global).await?;
    let rustc = args.rustc.map_or_else(|| OsString::from("rustc"), OsString::from);
    let started = Instant::now();
    let sysroot = query_sysroot(&rustc, &std::env::current_dir()?)?;
    let toolchain = name_local_toolchain(&sysroot, &args.targets, &opened.workdir, &opened.store)
        .await
        .with_context(|| format!("cannot name the toolchain at {}", sysroot.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let manifest = &toolchain.manifest;
    if args.json {
        let report = json!({
            "hash": toolchain.hash,
            "release": manifest.release,
            "host": manifest.host,
            "targets": manifest.targets,
            "sysroot": sysroot,
            "files": manifest.files.len(),
            "bytes": manifest.total_size(),
            "files_hashed": toolchain.files_hashed,
            "seconds": seconds,
        });
        shell.print(&format!("{report}\n"));
    } else {
        shell.status(
            "Named",
            &format!(
                "toolchain {} ({}, {}): {} files, {}, {} hashed, in {:.2}s",
                toolchain.hash.short(),
                manifest.release,
                manifest.targets.join(" "),
                manifest.files.len(),
                human_bytes(manifest.total_size()),
                toolchain.files_hashed,
                seconds,
            ),
        );
        shell.verbose_note(&format!("sysroot {}, tree {}", sysroot.display(), toolchain.dir.display()));
        shell.print(&format!("{}\n", toolchain.hash));
    }
    Ok(())
}
