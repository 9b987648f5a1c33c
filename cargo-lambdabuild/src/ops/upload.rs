//! `cargo lambdabuild upload`: model the build, then make the store hold everything its graph needs.

use std::process::ExitCode;
use std::time::Instant;

use serde_json::json;

use crate::cli::{GlobalArgs, UploadArgs};
use crate::shell::Shell;
use crate::upload::upload;

pub async fn run(global: &GlobalArgs, args: UploadArgs, shell: &Shell) -> anyhow::Result<ExitCode> {
    let opened = super::open_store(global).await?;
    if opened.remote.is_none() {
        anyhow::bail!(
            "the store is a local directory, which holds everything already; upload needs --store s3://BUCKET/PREFIX"
        );
    }
    let slots = crate::engine::Engines::parse(&global.settings().engine)?.local;
    let Some(modelled) = super::build::model(global, &args.build, &opened, slots, None).await? else {
        return Ok(ExitCode::from(101));
    };
    let started = Instant::now();
    let roots = modelled.root_thunks();
    let report = upload(
        &opened.store,
        &opened.workdir,
        &roots,
        !args.without_toolchain,
        global.settings().upload_jobs,
        !global.quiet,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    if args.build.message_format.starts_with("json") {
        let line = json!({
            "reason": "lambdabuild-uploaded",
            "objects": report.objects,
            "known": report.known,
            "present": report.present,
            "uploaded": report.uploaded,
            "bytes": report.bytes,
            "upload_s": seconds,
        });
        shell.print(&format!("{line}\n"));
    }
    let megabytes = report.bytes as f64 / 1e6;
    shell.status(
        "Uploaded",
        &format!(
            "{} of {} objects ({megabytes:.1} MB) in {seconds:.2}s; {} already there, {} known to be there",
            report.uploaded, report.objects, report.present, report.known
        ),
    );
    Ok(ExitCode::SUCCESS)
}
