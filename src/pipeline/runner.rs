//! The runner owns one whole run: lock → engine → verify → run record → retention → alerts.
//!
//! The engine ([`super::run`]) plans, packs, uploads and commits, and reports what it
//! did. Everything a run does *with* that outcome happens here, in one place: verifying
//! the committed snapshot (while the run lock is still held), delivering the alert,
//! storing the run record, and — for a run that is ok and verified — automatic
//! retention. A failed alert or retention never fails the run.

use std::sync::Arc;

use chrono::Utc;

use super::report::{write_run_record, BackupReport};
use super::run::{self, Finished};
use super::spec::Pipeline;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::crypt::DataKey;
use crate::manifest::layout::{unlock, Layout};
use crate::manifest::records::RunStatus;
use crate::store::Store;
use crate::support::cancel::Cancel;
use crate::support::ids;
use crate::support::progress::{Counters, Phase};
use crate::verify;

/// Options of one backup run beyond the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Run id (resume a run by passing its id again). Default: a fresh id.
    pub run_id: Option<String>,
    /// Skip the verification after commit.
    pub no_verify: bool,
    /// Wait for the run lock instead of failing fast.
    pub wait_lock: bool,
    /// Read everything (a full backup) even if an incremental is possible.
    pub full: bool,
    /// Cancellation.
    pub cancel: Cancel,
    /// Progress counters to update.
    pub counters: Option<Arc<Counters>>,
    /// Run the partitions in worker processes over a work queue (`backup --workers N`)
    /// instead of in this process.
    pub scale: Option<super::scale::LocalWorkers>,
}

/// Run a backup of `p` into `store`: the engine, then verification, the run record,
/// automatic retention and alerts.
///
/// # Errors
/// `Config`/`Source` when the source cannot be planned, `Locked` when another run holds
/// the lock, `Cancelled` on a signal, `Store` when the store fails beyond retries before
/// the commit. A committed snapshot is never an error: unreadable files make the report
/// `partial`, a verification that cannot complete `committed_unverified`.
pub async fn backup(p: &Pipeline, store: Store, opts: BackupOptions) -> Result<BackupReport> {
    let started_at = Utc::now();
    let run_id = opts
        .run_id
        .clone()
        .unwrap_or_else(|| ids::run_id(started_at));
    if !ids::is_safe_segment(&run_id) {
        return Err(Error::config(format!(
            "invalid run id {run_id:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    let layout = Layout::new(&p.target.prefix);
    let key = key_before_lock(p, &store, &layout, &run_id).await?;
    let lock = crate::manifest::lock::RunLock::acquire(
        store.clone(),
        &layout,
        &run_id,
        p.lock_ttl,
        opts.wait_lock,
        &opts.cancel,
    )
    .await?;
    let layout = match keyed_under_lock(p, &store, layout, key, &run_id).await {
        Ok(l) => l,
        Err(e) => {
            lock.release().await;
            return Err(e);
        }
    };
    let engine = match &opts.scale {
        Some(scale) => {
            super::scale::run_local(p, store.clone(), &layout, &run_id, started_at, &opts, scale)
                .await
        }
        None => run::run(p, store.clone(), &layout, &run_id, started_at, &opts).await,
    };
    let mut result = check_committed(p, &store, &layout, &run_id, &opts, engine).await;
    if lock.lost() {
        if let Err(e) = &result {
            if e.kind() == ErrorKind::Cancelled {
                result = Err(Error::new(
                    ErrorKind::Locked,
                    "the run lock could not be renewed, so the run stopped before committing (rerun with the same --run-id to resume)",
                ));
            }
        }
    }
    lock.release().await;
    record(p, &store, &layout, &run_id, started_at, result).await
}

/// `[encryption]`, first half, for whoever takes a run lease (a backup, a scale-out
/// coordinator): open the data key before anything is written — not even the lock — so
/// a wrong key (`WrongKey`) or a missing one (`Config`) stops the run here. `Ok(None)`
/// for a pipeline without `[encryption]`, and for an encrypted one without a key record
/// yet: [`keyed_under_lock`] creates it once the lease is held.
///
/// # Errors
/// As [`unlock`], with the run id as context.
pub(super) async fn key_before_lock(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
) -> Result<Option<Arc<DataKey>>> {
    let enc = p.encryption.as_ref();
    match unlock(&**store, layout, enc, false).await {
        Ok(k) => Ok(k),
        Err(e) if e.kind() == ErrorKind::NotFound && enc.is_some() => Ok(None),
        Err(e) => Err(e.context(format!("run {run_id}"))),
    }
}

/// `[encryption]`, second half, under the run lease: the layout carrying the key
/// [`key_before_lock`] opened, or — a first encrypted backup — a new data key whose
/// record is created here: the lease is the prefix's one lock, so no other run creates
/// a second key meanwhile. Without `[encryption]`, `layout` unchanged.
///
/// # Errors
/// As [`unlock`], with the run id as context.
pub(super) async fn keyed_under_lock(
    p: &Pipeline,
    store: &Store,
    layout: Layout,
    key: Option<Arc<DataKey>>,
    run_id: &str,
) -> Result<Layout> {
    let enc = p.encryption.as_ref();
    let key = match (key, enc) {
        (Some(k), _) => Some(k),
        (None, Some(_)) => unlock(&**store, &layout, enc, true)
            .await
            .map_err(|e| e.context(format!("run {run_id}")))?,
        (None, None) => None,
    };
    Ok(match key {
        Some(k) => layout.with_key(k),
        None => layout,
    })
}

/// What follows a commit while the run lock is held: protection ([immutability]), then
/// verification.
pub(super) async fn check_committed(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    opts: &BackupOptions,
    engine: Result<Finished>,
) -> Result<BackupReport> {
    match engine {
        Ok(done) => match protect_committed(p, store, layout, run_id, done).await {
            Ok(done) => verify_committed(p, store, layout, opts, done).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// What follows once the lock is released: the alert, the run record and — for a run
/// that is ok and verified — automatic retention. A failed run is recorded and returned
/// as the error.
pub(super) async fn record(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    started_at: chrono::DateTime<Utc>,
    result: Result<BackupReport>,
) -> Result<BackupReport> {
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            let status = if e.kind() == ErrorKind::Cancelled {
                RunStatus::Cancelled
            } else {
                RunStatus::Failed
            };
            let mut report = BackupReport::failed(
                &p.name,
                run_id,
                status,
                started_at,
                store.retries(),
                e.to_string(),
            );
            report.alerts = super::alerts::on_run(p, &report).await;
            write_run_record(&**store, layout, &report).await;
            return Err(e.context(format!("run {run_id}")));
        }
    };
    report.finished_at = Utc::now();
    report.alerts = super::alerts::on_run(p, &report).await;
    write_run_record(&**store, layout, &report).await;
    if report.status == RunStatus::Ok && p.retention.as_ref().is_some_and(|r| r.auto) {
        let verified = report.verify.as_ref().is_some_and(|v| v.ok());
        crate::retention::after_backup(
            &p.retention_scope(),
            store,
            &report.run_id,
            report.status,
            verified,
            Some(super::repack::PackRepacker::handle(p)),
        )
        .await;
    }
    Ok(report)
}

/// `[immutability]`: make the committed snapshot write-once before anything else (while
/// the run lock is held, so no prune runs meanwhile). A failure fails the run — the
/// pipeline asked for protection and did not get it — but the snapshot stays committed,
/// and a rerun of the run id protects it (the engine finds the commit and returns it).
async fn protect_committed(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    mut done: Finished,
) -> Result<Finished> {
    let (Some(cfg), Some(m)) = (p.immutability.as_ref(), done.manifest.as_ref()) else {
        return Ok(done);
    };
    let rec = crate::retention::immutability::protect_snapshot(&**store, layout, m, cfg, Utc::now())
        .await
        .map_err(|e| {
            e.context(format!(
                "snapshot {} is committed but not protected by [immutability]; rerun with --run-id {run_id} to protect it",
                m.header.snapshot
            ))
        })?;
    done.report.protection = Some(rec);
    Ok(done)
}

/// Verify what the engine committed (unless disabled); a mismatch makes the run
/// `mismatch`. A verification that cannot complete (the store fails beyond its retries)
/// does not turn a committed run into a failed one: the run is `committed_unverified`,
/// keeps its snapshot and carries the error, and a rerun of the run id verifies again.
async fn verify_committed(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    opts: &BackupOptions,
    done: Finished,
) -> Result<BackupReport> {
    let Finished {
        mut report,
        manifest,
    } = done;
    let Some(m) = manifest else {
        return Ok(report);
    };
    if opts.no_verify || !p.verify.after_backup {
        return Ok(report);
    }
    let mode = p.verify.mode;
    if let Some(c) = &opts.counters {
        c.begin(Phase::Verifying, None, 0, 0);
    }
    let counters = opts.counters.clone();
    // After a backup the sample is the snapshot's own (unless the pipeline sets a seed),
    // so `backup --workers` checks the blocks a single process would.
    let seed = verify_seed(p, &m);
    let checked = match &opts.scale {
        // Pack reads are split across the worker processes, batch by batch.
        Some(w) if mode != verify::config::VerifyMode::Metadata => {
            super::scale::verify_local(
                p,
                store,
                layout,
                &report.run_id,
                &m,
                mode,
                seed,
                w,
                &opts.cancel,
            )
            .await
        }
        _ => verify::verify(store, layout, &m, mode, Some(seed), &p.upload, counters).await,
    };
    apply_verify(&mut report, mode, checked);
    Ok(report)
}

/// The seed of the verification after a backup: the snapshot's own unless the pipeline
/// sets one, so scale-out verification checks the blocks a single process would.
pub(super) fn verify_seed(p: &Pipeline, m: &crate::manifest::Manifest) -> u64 {
    p.verify
        .seed
        .unwrap_or_else(|| verify::snapshot_seed(&m.header.snapshot))
}

/// Put a verification's outcome into the run's report: findings make it `mismatch`, a
/// verification that could not complete `committed_unverified` with the error.
pub(super) fn apply_verify(
    report: &mut BackupReport,
    mode: verify::config::VerifyMode,
    checked: Result<verify::VerifyReport>,
) {
    match checked {
        Ok(v) => {
            if !v.ok() {
                report.status = RunStatus::Mismatch;
            }
            report.verify = Some(v);
        }
        Err(e) => {
            let snapshot = report.snapshot.as_deref().unwrap_or("-");
            tracing::error!(
                snapshot,
                "snapshot committed, but its verification could not complete: {e}"
            );
            report.status = RunStatus::CommittedUnverified;
            report.verify = None;
            report.error = Some(format!(
                "snapshot {snapshot} committed, but its {} verification could not complete: {e}",
                mode.name()
            ));
        }
    }
}
