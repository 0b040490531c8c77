//! `restore --to-db`: load a database snapshot's tables into a server, with the
//! strategies from the pipeline's `[restore]` section overridden by the flags.

use crate::cli::args::RestoreArgs;
use crate::cli::exit;
use crate::cli::render::{self, emit};
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::restore::config::{FkCheck, Strategy};
use crate::restore::db::{DbRestoreOptions, LoadOptions};

/// `blobpipe restore FILE [SNAPSHOT] --to-db URL`.
///
/// # Errors
/// `Config` for bad flags or an unset `${VAR}`, `Refused` for a non-empty table under
/// `fail-if-not-empty`, database and store errors.
pub async fn restore(a: RestoreArgs, json: bool) -> Result<i32> {
    let p = Pipeline::load_for_reading(&a.pipeline)?;
    let (opts, load) = options(&p, &a)?;
    let repo = p.open_repo().await?;
    let mut m = a.sel.load_readable(&repo).await?;
    crate::manifest::segment::materialize(&*repo.store, &repo.layout, &mut m).await?;
    let r =
        crate::restore::db::restore_db_with(&repo.store, &repo.layout, &m, &opts, &load).await?;
    emit(json, &r, || render::restore_db(&r));
    Ok(exit::OK)
}

/// Database restore options from the pipeline's `[restore]` section and the flags.
fn options(p: &Pipeline, a: &RestoreArgs) -> Result<(DbRestoreOptions, LoadOptions)> {
    let url = a.to_db.as_deref().unwrap_or_default();
    let url = crate::pipeline::spec::interpolate(url)
        .map_err(|var| Error::config(format!("--to-db: environment variable {var} is not set")))?;
    let mut strategy = p.restore.strategy;
    let mut strategies = p.restore.tables.clone();
    let bad = |s: &str| {
        Error::config(format!(
            "--strategy {s:?}: use fail-if-not-empty, truncate, append or skip-existing, optionally as TABLE=STRATEGY"
        ))
    };
    for s in &a.strategies {
        match s.split_once('=') {
            Some((t, st)) => {
                strategies.insert(
                    t.trim().to_string(),
                    Strategy::parse(st).ok_or_else(|| bad(s))?,
                );
            }
            None => {
                strategy = Strategy::parse(s).ok_or_else(|| bad(s))?;
                // A flag for all tables beats the file's per-table defaults.
                strategies.clear();
            }
        }
    }
    // Per-table flags come after a global one whatever their order on the line.
    for s in &a.strategies {
        if let Some((t, st)) = s.split_once('=') {
            strategies.insert(
                t.trim().to_string(),
                Strategy::parse(st).ok_or_else(|| bad(s))?,
            );
        }
    }
    let fk_check = match a.fk_check.as_deref() {
        None => p.restore.fk_check,
        Some(s) => FkCheck::parse(s).ok_or_else(|| {
            Error::config(format!(
                "--fk-check {s:?}: use immediate (the target's triggers, row by row) or bulk (one anti-join per foreign key before commit)"
            ))
        })?,
    };
    if fk_check == FkCheck::Bulk && a.no_transaction {
        return Err(Error::config(
            "--fk-check bulk needs the enclosing transaction: its foreign-key checks run before commit, \
             and with --no-transaction rows would be committed unchecked; drop one of the two",
        ));
    }
    Ok((
        DbRestoreOptions {
            url: crate::support::secret::Secret::new(url),
            tables: a.tables.clone(),
            strategy,
            strategies,
            no_transaction: a.no_transaction,
            target_schema: a.schema.clone(),
        },
        LoadOptions {
            jobs: a.jobs.map_or(p.restore.jobs, usize::from),
            fk_check,
        },
    ))
}
