//! `verify`: check that the store still holds a snapshot exactly.

use crate::cli::args::VerifyArgs;
use crate::cli::exit;
use crate::cli::render::{self, emit};
use crate::error::Result;
use crate::manifest::catalog;
use crate::manifest::layout::Repo;
use crate::pipeline::Pipeline;
use crate::support::progress::{Phase, Reporter};

/// `blobpipe verify FILE [SNAPSHOT]`; a mismatch is exit 3.
///
/// # Errors
/// `NotFound` for an unknown snapshot, `Config` for a bad `--sample`, store errors.
pub async fn verify(a: VerifyArgs, json: bool, quiet: bool) -> Result<i32> {
    let p = Pipeline::load_for_reading(&a.pipeline)?;
    let repo = if a.without_key {
        Repo::open(&p.target, &p.retry).await?
    } else {
        p.open_repo().await?
    };
    let id = a.sel.resolve(&repo).await?;
    let m = if a.without_key {
        // An encrypted manifest's clear lines: its header and pack tables, no entries.
        let name = repo.layout.snapshot(&id);
        let mut m =
            crate::manifest::Manifest::from_stored_keyless(&repo.store.get(&name, None).await?)
                .map_err(|e| e.context(format!("snapshot {id}")))?;
        // Repacked packs: check the packs their moved records name instead.
        crate::manifest::moved::overlay(&*repo.store, &repo.layout, &mut m, true)
            .await
            .map_err(|e| e.context(format!("snapshot {id}")))?;
        m
    } else {
        // The head only: verify reads the entries a segment at a time.
        catalog::load_head(&*repo.store, &repo.layout, &id).await?
    };
    let mode = a.mode(p.verify.mode)?;
    let reporter = Reporter::start("verify", Phase::Verifying, quiet);
    let res = crate::verify::verify(
        &repo.store,
        &repo.layout,
        &m,
        mode,
        a.seed.or(p.verify.seed),
        &p.upload,
        Some(reporter.counters.clone()),
    )
    .await;
    reporter.finish().await;
    let r = res?;
    emit(json, &r, || render::verify_report(&r));
    Ok(if r.ok() { exit::OK } else { exit::MISMATCH })
}
