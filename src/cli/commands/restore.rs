//! `restore`: a snapshot (or some paths) into a directory, `--plan` of what it reads,
//! `--rehydrate` of archived packs first; `--to-container` writes blobs into a container;
//! `--to-db` goes to [`super::db`].

use crate::cli::args::RestoreArgs;
use crate::cli::exit;
use crate::cli::render::{self, emit};
use crate::error::{Error, Result};
use crate::manifest::catalog;
use crate::manifest::layout::Repo;
use crate::manifest::Manifest;
use crate::pipeline::Pipeline;
use crate::restore;
use crate::support::progress::{Phase, Reporter};

/// `blobpipe restore FILE [SNAPSHOT] --to DIR | --to-db URL`.
///
/// # Errors
/// `NotFound`, `Refused` (would overwrite or escape), `Archived`, config and store errors.
pub async fn restore(a: RestoreArgs, json: bool, quiet: bool) -> Result<i32> {
    if a.to_db.is_some() {
        return super::db::restore(a, json).await;
    }
    let p = Pipeline::load_for_reading(&a.pipeline)?;
    let repo = p.open_repo().await?;
    // `latest` / `--at` is the newest snapshot that can be restored: a damaged newer one
    // is skipped, and said so (stderr, so `--json` stays one document). The head only:
    // restore reads the segments it needs as it goes.
    let mut m = a.sel.load_readable(&repo).await?;
    if a.plan || a.rehydrate.is_some() {
        catalog::fill_for(&*repo.store, &repo.layout, &mut m, &a.paths).await?;
        return archive(&a, &p, &repo, &m, json, quiet).await;
    }
    if let Some(target) = &a.to_container {
        return to_container(&a, &p, &repo, &m, target, json, quiet).await;
    }
    let reporter = Reporter::start("restore", Phase::Restoring, quiet);
    let res = restore::restore(
        &repo.store,
        &repo.layout,
        &m,
        &restore::RestoreOptions {
            to: a
                .to
                .ok_or_else(|| Error::config("restore needs --to DIR or --to-db URL"))?,
            paths: a.paths,
            overwrite: a.overwrite,
            concurrency: p.upload.concurrency,
        },
        Some(reporter.counters.clone()),
    )
    .await;
    reporter.finish().await;
    let r = res?;
    emit(json, &r, || render::restore_files(&r));
    Ok(if r.ok() { exit::OK } else { exit::MISMATCH })
}

/// `--to-container TARGET`: the files as blobs, with the properties a blob source kept.
async fn to_container(
    a: &RestoreArgs,
    p: &Pipeline,
    repo: &Repo,
    m: &Manifest,
    target: &str,
    json: bool,
    quiet: bool,
) -> Result<i32> {
    use crate::store::azure::{credential, AzureOptions, AzureStore};
    let secret = crate::support::secret::Secret::new(target.to_string());
    const NONE: &str = "no-container-named";
    let parsed = crate::store::azure::builder::AzureTarget::parse(&secret, NONE)
        .map_err(|e| e.context("--to-container"))?;
    if parsed.container == NONE {
        return Err(Error::config(
            "--to-container names no container (write azure://account/container[/prefix])",
        ));
    }
    let opts = AzureOptions {
        retry: p.retry,
        ..Default::default()
    };
    let dest = AzureStore::open(&secret, NONE, &opts, &credential::process_env)?;
    // Restoring into a new container is the usual case: create it (a credential that
    // may not create containers fails on the first write instead).
    dest.ensure_container().await?;
    let reporter = Reporter::start("restore", Phase::Restoring, quiet);
    let res = restore::container::restore_to_container(
        &repo.store,
        &repo.layout,
        m,
        std::sync::Arc::new(dest),
        &restore::RestoreOptions {
            to: std::path::PathBuf::new(),
            paths: a.paths.clone(),
            overwrite: a.overwrite,
            concurrency: p.upload.concurrency,
        },
        Some(reporter.counters.clone()),
    )
    .await;
    reporter.finish().await;
    let r = res?;
    emit(json, &r, || render::restore_files(&r));
    Ok(if r.ok() { exit::OK } else { exit::MISMATCH })
}

/// `--plan` and `--rehydrate`: print what archived packs a restore needs, or rehydrate
/// them, wait, restore and delete the staging copies.
async fn archive(
    a: &RestoreArgs,
    p: &Pipeline,
    repo: &Repo,
    m: &Manifest,
    json: bool,
    quiet: bool,
) -> Result<i32> {
    let Repo { store, layout } = repo;
    if a.plan {
        let pl = restore::archive::plan(store, layout, m, &a.paths).await?;
        emit(json, &pl, || render::restore_plan(&pl));
        return Ok(exit::OK);
    }
    let cancel = crate::support::cancel::Cancel::new();
    cancel.on_signals();
    let rh = a.rehydrate.map(|r| restore::RehydrateOptions {
        priority: r.priority(),
        poll: std::time::Duration::from_secs(a.rehydrate_poll_secs.max(1)),
        timeout: None,
    });
    let reporter = Reporter::start("restore", Phase::Restoring, quiet);
    let res = restore::restore_with(
        store,
        layout,
        m,
        &restore::RestoreOptions {
            to: a
                .to
                .clone()
                .ok_or_else(|| Error::config("restore needs --to DIR (or --to-db URL)"))?,
            paths: a.paths.clone(),
            overwrite: a.overwrite,
            concurrency: p.upload.concurrency,
        },
        rh,
        &cancel,
        Some(reporter.counters.clone()),
    )
    .await;
    reporter.finish().await;
    let r = res?;
    emit(json, &r, || {
        render::restore_report(
            &r,
            if r.ok() {
                " (archived packs read from rehydrated copies, since deleted)"
            } else {
                " (archived packs read from rehydrated copies, kept for a rerun)"
            },
        )
    });
    Ok(if r.ok() { exit::OK } else { exit::MISMATCH })
}
