//! The catalog: which snapshots exist, and finding one by id, prefix or `latest`.
//!
//! A snapshot exists iff its manifest exists under `snapshots/`; nothing else is
//! consulted. Listing reads only the first kilobytes of each manifest (the header line)
//! and the names of verify reports, so it stays cheap for long histories.

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::layout::Layout;
use crate::manifest::records::{VerifyRecord, VerifyStatus};
use crate::manifest::{self, Header, Line, Manifest};
use crate::store::{list_all, BlobStore};

/// A snapshot as listed.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    /// Snapshot id.
    pub id: String,
    /// Manifest header (times, totals, run id).
    pub header: Header,
    /// Verification outcome: `mismatch` if the newest report of any mode found one,
    /// else `ok` (newest report), or `unverified`.
    pub verify_status: VerifyStatus,
    /// The mode that decided the status (metadata, sample, full).
    pub verify_mode: Option<String>,
}

/// All snapshot ids of a pipeline, oldest first.
///
/// # Errors
/// Store errors.
pub async fn snapshot_ids(store: &dyn BlobStore, layout: &Layout) -> Result<Vec<String>> {
    let mut ids: Vec<String> = list_all(store, &layout.snapshots())
        .await?
        .into_iter()
        .filter_map(|i| Layout::snapshot_id_of(&i.name).map(str::to_string))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Resolve `latest`, a full id or a unique id prefix.
///
/// # Errors
/// `NotFound` when nothing matches (or the pipeline has no snapshot), `Config` when a
/// prefix is ambiguous.
pub async fn resolve(store: &dyn BlobStore, layout: &Layout, spec: &str) -> Result<String> {
    let ids = snapshot_ids(store, layout).await?;
    if spec == "latest" {
        return ids.last().cloned().ok_or_else(|| {
            Error::not_found("the pipeline has no snapshot yet (run a backup first)")
        });
    }
    if ids.iter().any(|i| i == spec) {
        return Ok(spec.to_string());
    }
    let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(spec)).collect();
    match matches.len() {
        1 => Ok(matches[0].clone()),
        0 => Err(Error::not_found(format!(
            "no snapshot {spec:?} (list them with `blobpipe snapshots`)"
        ))),
        n => Err(Error::config(format!(
            "snapshot prefix {spec:?} is ambiguous ({n} snapshots match); give more characters"
        ))),
    }
}

/// The time a snapshot id starts with (its run's start, UTC).
pub fn id_time(id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    // 20261122T033530710Z-…: seconds, then milliseconds.
    let secs = chrono::NaiveDateTime::parse_from_str(id.get(..15)?, "%Y%m%dT%H%M%S").ok()?;
    let ms: i64 = id.get(15..18)?.parse().ok()?;
    Some(secs.and_utc() + chrono::Duration::milliseconds(ms))
}

/// Parse a point in time: RFC 3339 (`2026-11-20T00:00:00Z`, offsets allowed), or
/// `2026-11-20T00:00Z`, `2026-11-20 00:00`, `2026-11-20` (UTC).
///
/// # Errors
/// `Config` naming the accepted forms.
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let t = s.trim().trim_end_matches('Z');
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Ok(n.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(Error::config(format!(
        "invalid time {s:?}: use RFC 3339 like 2026-11-20T00:00:00Z, or 2026-11-20T00:00Z, or 2026-11-20 (UTC)"
    )))
}

/// The newest snapshot taken at or before `at`.
///
/// # Errors
/// `NotFound` when every snapshot is newer (or there is none).
pub async fn resolve_at(
    store: &dyn BlobStore,
    layout: &Layout,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<String> {
    snapshot_ids(store, layout)
        .await?
        .into_iter()
        .rfind(|id| id_time(id).is_some_and(|t| t <= at))
        .ok_or_else(|| Error::not_found(format!("no snapshot at or before {}", at.to_rfc3339())))
}

/// Load a whole manifest.
///
/// # Errors
/// `NotFound` for a missing snapshot, `Integrity` for a malformed manifest.
pub async fn load(store: &dyn BlobStore, layout: &Layout, id: &str) -> Result<Manifest> {
    let bytes = store.get(&layout.snapshot(id), None).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::not_found(format!("snapshot {id} does not exist"))
        } else {
            e
        }
    })?;
    let m = Manifest::from_bytes(&bytes).map_err(|e| e.context(format!("snapshot {id}")))?;
    // The id names reports and parents: a manifest stored under another id is not this
    // snapshot.
    if m.header.snapshot != id {
        return Err(Error::integrity(format!(
            "snapshot {id}: manifest line 1, header: snapshot: names snapshot {:?}, not the \
             one it is stored as",
            m.header.snapshot
        )));
    }
    Ok(m)
}

/// List snapshots with their headers and newest verify status, oldest first.
///
/// # Errors
/// Store errors; a manifest whose header cannot be read is an `Integrity` error.
pub async fn list(store: &dyn BlobStore, layout: &Layout) -> Result<Vec<SnapshotInfo>> {
    let ids = snapshot_ids(store, layout).await?;
    let reports = list_all(store, &layout.verify_all()).await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let name = layout.snapshot(&id);
        let size = store.head(&name).await?.map(|p| p.size).unwrap_or(0);
        let head = store.get(&name, Some(0..size.min(64 << 10))).await?;
        let header = match manifest::decode_first(&head) {
            Ok(Line::Header(h)) => h,
            Ok(_) | Err(_) => load(store, layout, &id).await?.header,
        };
        let pre = layout.verify_reports(&id);
        // The newest report of each mode decides; a mismatch found by a deeper check is
        // not hidden by a later, shallower one that passed.
        let mut names: Vec<&String> = reports
            .iter()
            .filter(|r| r.name.starts_with(&pre))
            .map(|r| &r.name)
            .collect();
        names.sort();
        let mut latest_by_mode: Vec<(String, bool)> = Vec::new();
        for n in names {
            let v: VerifyRecord = serde_json::from_slice(&store.get(n, None).await?)?;
            let ok = v.passed();
            let mode = v.mode.unwrap_or_else(|| "?".to_string());
            latest_by_mode.retain(|(m, _)| *m != mode);
            latest_by_mode.push((mode, ok));
        }
        let (verify_status, verify_mode) = match latest_by_mode.iter().find(|(_, ok)| !ok) {
            Some((mode, _)) => (VerifyStatus::Mismatch, Some(mode.clone())),
            None => match latest_by_mode.last() {
                Some((mode, _)) => (VerifyStatus::Ok, Some(mode.clone())),
                None => (VerifyStatus::Unverified, None),
            },
        };
        out.push(SnapshotInfo {
            id,
            header,
            verify_status,
            verify_mode,
        });
    }
    Ok(out)
}
