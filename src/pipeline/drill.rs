//! Restore drills: prove a backup can be restored, and measure how long it takes.
//!
//! [`drill`] restores a snapshot (the newest by default) into a fresh scratch directory
//! with the normal restore path — every file's SHA-256 is checked against the manifest —
//! measures the wall time from "we need the data" (resolving the snapshot) to "all of it
//! is on disk and checked": the measured restore time objective (RTO). The outcome is
//! stored as a drill record (`<prefix>/drills/<time>.json`, create-only) that
//! `blobpipe status` shows; a failed drill raises a `failure` alert (`mismatch` when the
//! data did not match its hashes). The scratch directory is deleted in every case.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{self, Alert, AlertOutcome, Event};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::layout::Layout;
use crate::manifest::{catalog, Manifest};
use crate::pipeline::Pipeline;
use crate::restore;
use crate::store::Store;
use crate::support::ids;
use crate::support::units::human;

/// Options of a drill.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// Snapshot id, prefix or `latest` (default).
    pub snapshot: Option<String>,
    /// Directory in which the scratch directory is made (default: the system temp dir).
    pub scratch_in: Option<PathBuf>,
}

/// The stored outcome of one drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Pipeline name.
    pub pipeline: String,
    /// Snapshot restored (`None` if it could not be resolved).
    pub snapshot: Option<String>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// Measured restore time in seconds (resolve + download + write + hash checks).
    pub rto_seconds: f64,
    /// Everything restored and every hash matched.
    pub ok: bool,
    /// Files restored and checked.
    pub files: u64,
    /// File bytes restored.
    pub bytes: u64,
    /// Compressed bytes downloaded.
    pub bytes_fetched: u64,
    /// Error kind of a failed drill (`Integrity`, `Store`, …).
    pub error_kind: Option<ErrorKind>,
    /// Error of a failed drill.
    pub error: Option<String>,
    /// Name of the stored record.
    pub stored_as: Option<String>,
    /// Database drills: where the snapshot was loaded (URL without password, and the
    /// scratch schema / database, dropped afterwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<String>,
    /// Database drills: tables restored, every row count and checksum compared.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tables: u64,
    /// Database drills: rows restored.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows: u64,
    /// Database drills: the scratch schema / database could not be dropped (left behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
    /// Alert deliveries.
    #[serde(default)]
    pub alerts: Vec<AlertOutcome>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl DrillRecord {
    /// A record of a drill that started at `started_at` and ran `rto` seconds; counts zero.
    pub(crate) fn new(
        p: &Pipeline,
        snapshot: Option<String>,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        rto: f64,
        err: Option<&Error>,
    ) -> Self {
        Self {
            pipeline: p.name.clone(),
            snapshot,
            started_at,
            finished_at,
            rto_seconds: rto,
            ok: err.is_none(),
            files: 0,
            bytes: 0,
            bytes_fetched: 0,
            error_kind: err.map(Error::kind),
            error: err.map(|e| e.to_string()),
            stored_as: None,
            scratch: None,
            tables: 0,
            rows: 0,
            cleanup_error: None,
            alerts: vec![],
        }
    }

    /// The error kind of a failed drill (`Store` when the record names none); `None`
    /// when it passed. `cli::exit::for_drill` turns it into the exit code.
    pub fn failure_kind(&self) -> Option<ErrorKind> {
        if self.ok {
            return None;
        }
        Some(self.error_kind.unwrap_or(ErrorKind::Store))
    }
}

/// Run a restore drill of `p`. A failed restore is not an `Err`: the record says so
/// (and is stored, and alerted).
///
/// # Errors
/// Only when the scratch directory cannot be created.
pub async fn drill(p: &Pipeline, store: Store, opts: &DrillOptions) -> Result<DrillRecord> {
    let mut layout = Layout::new(&p.target.prefix);
    if let Some(k) =
        crate::manifest::layout::unlock(&*store, &layout, p.encryption.as_ref(), false).await?
    {
        layout = layout.with_key(k);
    }
    let scratch_parent = opts.scratch_in.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = scratch_parent.join(format!("blobpipe-drill-{}-{}", p.name, ids::random_hex(6)));
    std::fs::create_dir_all(&scratch).map_err(|e| {
        Error::io(
            ErrorKind::Internal,
            format!("creating scratch directory {}", scratch.display()),
            e,
        )
    })?;
    let started_at = Utc::now();
    let t0 = Instant::now();
    let mut snapshot = None;
    let res: Result<restore::RestoreReport> = async {
        let (_, m) = open_snapshot(&store, &layout, opts, &mut snapshot).await?;
        restore::restore(
            &store,
            &layout,
            &m,
            &restore::RestoreOptions {
                to: scratch.join("restore"),
                paths: vec![],
                overwrite: false,
                concurrency: p.upload.concurrency,
            },
            None,
        )
        .await
        .and_then(|r| {
            if r.ok() {
                return Ok(r);
            }
            let first = r
                .damaged
                .first()
                .map(|d| format!(" (first: {}: {})", d.path, d.error));
            Err(Error::integrity(format!(
                "{} damaged files could not be restored{}",
                r.damaged_total,
                first.unwrap_or_default()
            )))
        })
    }
    .await;
    let rto = t0.elapsed().as_secs_f64();
    let finished_at = Utc::now();
    if let Err(e) = std::fs::remove_dir_all(&scratch) {
        tracing::warn!(
            "could not delete scratch directory {}: {e}",
            scratch.display()
        );
    }
    let mut rec = DrillRecord::new(
        p,
        snapshot,
        started_at,
        finished_at,
        rto,
        res.as_ref().err(),
    );
    if let Ok(r) = &res {
        rec.files = r.files;
        rec.bytes = r.bytes;
        rec.bytes_fetched = r.bytes_fetched;
    }
    Ok(conclude(p, &store, &layout, rec, res.as_ref().err()).await)
}

/// Resolve the drill's snapshot (`latest` unless one is named) and load its manifest,
/// noting the id in `snapshot` as soon as it is known, so the record names it even when
/// loading fails.
///
/// # Errors
/// `NotFound` when no such snapshot exists; store and manifest errors.
pub(crate) async fn open_snapshot(
    store: &Store,
    layout: &Layout,
    opts: &DrillOptions,
    snapshot: &mut Option<String>,
) -> Result<(String, Manifest)> {
    let id = catalog::resolve(
        &**store,
        layout,
        opts.snapshot.as_deref().unwrap_or("latest"),
    )
    .await?;
    *snapshot = Some(id.clone());
    let m = catalog::load_head(&**store, layout, &id).await?;
    Ok((id, m))
}

/// Alert on a failed drill, then store the record (create-only; a store failure is
/// logged and leaves `stored_as` empty).
pub(crate) async fn conclude(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    mut rec: DrillRecord,
    err: Option<&Error>,
) -> DrillRecord {
    if let Some(e) = err {
        let event = if e.kind() == ErrorKind::Integrity {
            Event::Mismatch
        } else {
            Event::Failure
        };
        let mut facts = vec![
            ("pipeline".into(), p.name.clone()),
            ("kind".into(), "restore drill".into()),
            ("after".into(), format!("{:.1} s", rec.rto_seconds)),
            ("target".into(), p.target.display_url.clone()),
        ];
        if let Some(s) = &rec.scratch {
            facts.push(("scratch".into(), s.clone()));
        }
        let a = Alert {
            pipeline: p.name.clone(),
            event,
            title: format!("blobpipe {}: restore drill FAILED", p.name),
            summary: format!(
                "Restoring snapshot {} failed: {e}. The backup may not be restorable: verify it (`blobpipe verify --full`) and take a new one.",
                rec.snapshot.as_deref().unwrap_or("latest")
            ),
            run_id: None,
            snapshot: rec.snapshot.clone(),
            facts,
            at: rec.finished_at,
        };
        rec.alerts = alert::notify(&p.alerts, &a).await;
    }
    let name = layout.drill_record(&ids::stamp(rec.finished_at));
    rec.stored_as = Some(name.clone());
    match serde_json::to_vec_pretty(&rec) {
        Ok(body) => {
            if let Err(e) = store.put(&name, Bytes::from(body), true).await {
                tracing::warn!("could not store drill record {name}: {e}");
                rec.stored_as = None;
            }
        }
        Err(e) => {
            tracing::warn!("could not encode drill record: {e}");
            rec.stored_as = None;
        }
    }
    rec
}

/// One line for humans.
pub fn summary(r: &DrillRecord) -> String {
    let cleanup = r
        .cleanup_error
        .as_deref()
        .map(|e| format!("; WARNING: the scratch was not dropped: {e}"))
        .unwrap_or_default();
    if r.ok && r.scratch.is_some() {
        format!(
            "drill ok: snapshot {} restored into {} in {:.2} s (measured RTO): {} tables, {} rows, every row count and checksum compared; {} downloaded; scratch dropped{cleanup}",
            r.snapshot.as_deref().unwrap_or("-"),
            r.scratch.as_deref().unwrap_or("-"),
            r.rto_seconds,
            r.tables,
            r.rows,
            human(r.bytes_fetched)
        )
    } else if r.ok {
        format!(
            "drill ok: snapshot {} restored into a scratch directory in {:.2} s (measured RTO): {} files, {}, every SHA-256 checked; {} downloaded",
            r.snapshot.as_deref().unwrap_or("-"),
            r.rto_seconds,
            r.files,
            human(r.bytes),
            human(r.bytes_fetched)
        )
    } else {
        format!(
            "drill FAILED after {:.2} s (snapshot {}{}): {}{cleanup}",
            r.rto_seconds,
            r.snapshot.as_deref().unwrap_or("-"),
            r.scratch
                .as_deref()
                .map(|s| format!(", into {s}"))
                .unwrap_or_default(),
            r.error.as_deref().unwrap_or("unknown error")
        )
    }
}
