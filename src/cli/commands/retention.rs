//! Retention commands: `forget` (manifests `[retention]` does not keep), `prune` (packs
//! and records nothing references), `lifecycle` (the Azure policy JSON).

use crate::support::out::{errln, outln};
use std::path::PathBuf;

use crate::cli::args::RetentionArgs;
use crate::cli::exit;
use crate::cli::render::{self, emit};
use crate::error::Result;
use crate::pipeline::{Needs, Pipeline};
use crate::{retention, store};

/// `blobpipe forget FILE` (`forget`) or `blobpipe prune FILE` (not `forget`).
///
/// # Errors
/// `Config` for a bad `--grace`, `Locked` while a backup runs, store errors.
pub async fn forget_or_prune(a: RetentionArgs, forget: bool, json: bool) -> Result<i32> {
    let p = Pipeline::load(&a.pipeline)?;
    let store = store::open(&p.target, &p.retry).await?;
    let cancel = crate::support::cancel::Cancel::new();
    cancel.on_signals();
    let opts = retention::Options {
        dry_run: a.dry_run,
        wait_lock: a.wait_lock,
        grace: a.grace()?,
        defer_early_deletion: a.defer_early_deletion,
        cancel,
        max_unused: a.max_unused()?,
        repacker: Some(crate::pipeline::repack::PackRepacker::handle(&p)),
        sort_buffer: None,
    };
    if forget {
        let r = retention::forget(&p.retention_scope(), &store, &opts).await?;
        emit(json, &r, || render::forget(&r, a.dry_run));
    } else {
        let r = retention::prune(&p.retention_scope(), &store, &opts).await?;
        emit(json, &r, || render::prune(&r, a.dry_run));
    }
    Ok(exit::OK)
}

/// `blobpipe lifecycle FILE…`: always JSON (it is the policy document).
///
/// # Errors
/// Config errors of any file, or pipelines whose rules cannot share one policy.
pub fn lifecycle(pipelines: &[PathBuf]) -> Result<i32> {
    // Only the target and the lifecycle rules matter here: a source's variables may be
    // set on the backup host alone. A file that does not load is reported, the policy
    // covers the others, and the exit code says one was left out.
    let mut ps = Vec::new();
    let mut errors: Vec<crate::error::Error> = Vec::new();
    for f in pipelines {
        match Pipeline::load_for(f, Needs::Store) {
            Ok(p) => ps.push(p),
            Err(e) => errors.push(e),
        }
    }
    if ps.is_empty() && !errors.is_empty() {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(crate::error::Error::config(all.join("\n")));
    }
    let scopes: Vec<_> = ps.iter().map(Pipeline::lifecycle_scope).collect();
    let v = retention::lifecycle::policy(&scopes)?;
    outln!("{v:#}");
    for e in &errors {
        errln!("error: {e} (left out of the policy)");
    }
    Ok(if errors.is_empty() {
        exit::OK
    } else {
        exit::CONFIG
    })
}
