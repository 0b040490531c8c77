//! The catalog: which snapshots exist, and finding one by id, prefix or `latest`.
//!
//! A snapshot exists iff its manifest exists under `snapshots/`; nothing else is
//! consulted. Listing reads only the first 64 KiB of each manifest (the header line; the
//! whole manifest when it is that small) and the names of verify reports, so it stays
//! cheap for long histories.
//!
//! A manifest that does not decode (empty, truncated, garbled) is a *damaged* snapshot. It
//! is reported, never a reason to stop: listing marks it, [`newest_readable`] skips it
//! (the parent of a backup, `restore latest`), and only a caller that names it explicitly
//! gets the `Integrity` error. Store errors (the store cannot be read at all) still stop.

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::layout::Layout;
use crate::manifest::records::{ProtectionRecord, VerifyRecord, VerifyStatus};
use crate::manifest::{self, Header, Line, Manifest};
use crate::store::{list_all, BlobStore};

/// A snapshot as listed.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    /// Snapshot id.
    pub id: String,
    /// Manifest header (times, totals, run id); `None` when the manifest is damaged.
    pub header: Option<Header>,
    /// Why the manifest cannot be read, when it cannot (the snapshot is damaged: it is
    /// skipped as a parent and by `restore latest`, and never counts as verified).
    pub damaged: Option<String>,
    /// Verification outcome: `mismatch` if the newest report of any mode found one,
    /// else `ok` (newest report), or `unverified`.
    pub verify_status: VerifyStatus,
    /// The mode that decided the status (metadata, sample, full).
    pub verify_mode: Option<String>,
    /// `[immutability]`: until when the snapshot's blobs are write-once, and whether a
    /// legal hold holds them (absent: not protected, or protected by hand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection: Option<ProtectionRecord>,
}

/// The protection records of a pipeline (`[immutability]`), by snapshot id: one per
/// protected snapshot, so bounded by the snapshots kept. An unreadable record is skipped
/// with a warning (the store still enforces the policy; only the display lacks it).
///
/// # Errors
/// Store errors.
pub async fn protections(
    store: &dyn BlobStore,
    layout: &Layout,
) -> Result<std::collections::BTreeMap<String, ProtectionRecord>> {
    let mut out = std::collections::BTreeMap::new();
    for item in list_all(store, &layout.protections()).await? {
        let body = match store.get(&item.name, None).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match serde_json::from_slice::<ProtectionRecord>(&body) {
            Ok(r) if !r.snapshot.is_empty() => {
                out.insert(r.snapshot.clone(), r);
            }
            Ok(_) => tracing::warn!(
                "ignoring protection record {} without a snapshot",
                item.name
            ),
            Err(e) => tracing::warn!("ignoring unreadable protection record {}: {e}", item.name),
        }
    }
    Ok(out)
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

/// The head (as [`load_head`] gives it) of the newest snapshot that can be read among
/// those taken at or before `at` (all of them when `None`): what `latest` and `--at` mean for commands that read a snapshot's
/// contents (restore, `ls`, `diff`). Damaged snapshots on the way are skipped and
/// returned so the caller can say so. Commands whose job is to find damage (`verify`,
/// drills) resolve with [`resolve`] / [`resolve_at`] instead and fail on it.
///
/// # Errors
/// `NotFound` when there is no snapshot (at or before `at`), `Integrity` when every one is
/// damaged, store errors.
pub async fn resolve_readable(
    store: &dyn BlobStore,
    layout: &Layout,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(Manifest, Vec<Damaged>)> {
    let (found, skipped) = newest_readable_at(store, layout, at).await?;
    if let Some(m) = found {
        return Ok((m, skipped));
    }
    let when = at.map(|t| format!(" at or before {}", t.to_rfc3339()));
    if skipped.is_empty() {
        Err(Error::not_found(match when {
            Some(w) => format!("no snapshot{w}"),
            None => "the pipeline has no snapshot yet (run a backup first)".to_string(),
        }))
    } else {
        Err(Error::integrity(format!(
            "no snapshot{} can be read: all {} are damaged (their manifests cannot be read): {}",
            when.unwrap_or_default(),
            skipped.len(),
            skipped
                .iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// Load a whole manifest.
///
/// # Errors
/// `NotFound` for a missing snapshot, `Integrity` for a damaged (malformed) manifest,
/// naming the snapshot as damaged.
pub async fn load(store: &dyn BlobStore, layout: &Layout, id: &str) -> Result<Manifest> {
    let mut m = read(store, layout, id).await??;
    super::segment::materialize(store, layout, &mut m).await?;
    Ok(m)
}

/// Load a manifest's head: header, packs, tables, streams and the segment list — for a
/// format-2 manifest without its entries (read them with
/// [`super::segment::EntryReader`]); a format-1 manifest holds them inline.
///
/// # Errors
/// As [`load`].
pub async fn load_head(store: &dyn BlobStore, layout: &Layout, id: &str) -> Result<Manifest> {
    read(store, layout, id).await?
}

/// Load a manifest with the entries that gitignore-style `globs` can select (all of them
/// when `globs` is empty). When every glob is anchored (`dir/file`, `/top`, `docs/**`),
/// only the segments whose path range can hold a match are read, so a one-path restore
/// or `ls` of a large snapshot reads a small fraction of it; the entries are then a
/// superset of the matches, in order (callers still filter by the globs).
///
/// # Errors
/// As [`load`].
pub async fn load_for(
    store: &dyn BlobStore,
    layout: &Layout,
    id: &str,
    globs: &[String],
) -> Result<Manifest> {
    let mut m = read(store, layout, id).await??;
    fill_for(store, layout, &mut m, globs).await?;
    Ok(m)
}

/// Read into `m.entries` the segments `globs` can select (see [`load_for`]).
///
/// # Errors
/// As [`load`].
pub async fn fill_for(
    store: &dyn BlobStore,
    layout: &Layout,
    m: &mut Manifest,
    globs: &[String],
) -> Result<()> {
    let prefixes: Option<Vec<Vec<u8>>> = if globs.is_empty() {
        None
    } else {
        globs
            .iter()
            .map(|g| super::segment::glob_prefix(g))
            .collect()
    };
    let Some(prefixes) = prefixes.filter(|_| !m.segments.is_empty() && m.entries.is_empty()) else {
        return super::segment::materialize(store, layout, m).await;
    };
    let mut entries = Vec::new();
    for prefix in &prefixes {
        let mut r =
            super::segment::EntryReader::new(store, layout, m).with_prefix(Some(prefix.clone()));
        while let Some(batch) = r.next_batch().await? {
            entries.extend(batch);
        }
        tracing::debug!(
            segments = r.segments_read,
            bytes = r.bytes_read,
            of = m.segments.len(),
            "read the segments a path selection needs"
        );
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|b, a| a.path == b.path);
    m.entries = entries;
    Ok(())
}

/// A snapshot whose manifest cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damaged {
    /// Snapshot id.
    pub id: String,
    /// What is wrong with its manifest.
    pub error: String,
}

/// Read and decode one manifest, telling the two failures apart: the outer error is the
/// store's (including `NotFound`), the inner one says the manifest is damaged.
///
/// # Errors
/// Store errors; `NotFound` for a missing snapshot.
pub async fn read(
    store: &dyn BlobStore,
    layout: &Layout,
    id: &str,
) -> Result<std::result::Result<Manifest, Error>> {
    let name = layout.snapshot(id);
    let bytes = store.get(&name, None).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::not_found(format!("snapshot {id} does not exist"))
        } else {
            e
        }
    })?;
    let damaged = |why: String| {
        Error::integrity(format!(
            "snapshot {id} is damaged, its manifest cannot be read ({why}); \
             restore another snapshot (`blobpipe snapshots` marks the damaged ones)"
        ))
    };
    let m = match Manifest::from_stored(layout, &name, bytes) {
        Ok(m) => m,
        // A missing or wrong key is not damage: say so, and stop.
        Err(e) if matches!(e.kind(), ErrorKind::Config | ErrorKind::WrongKey) => return Err(e),
        Err(e) => return Ok(Err(damaged(e.to_string()))),
    };
    // The id names reports and parents: a manifest stored under another id is not this
    // snapshot.
    if m.header.snapshot != id {
        return Ok(Err(damaged(format!(
            "manifest line 1, header: snapshot: names snapshot {:?}, not the one it is \
             stored as",
            m.header.snapshot
        ))));
    }
    let mut m = m;
    match super::moved::overlay(store, layout, &mut m, false).await {
        Ok(()) => Ok(Ok(m)),
        Err(e) if e.kind() == ErrorKind::Integrity => Ok(Err(damaged(e.to_string()))),
        Err(e) => Err(e),
    }
}

/// The newest snapshot whose manifest reads, and the damaged ones newer than it (newest
/// first), each logged as a warning. `None` when no snapshot reads (or none exists).
///
/// # Errors
/// Store errors only: damaged manifests are skipped, not errors.
pub async fn newest_readable(
    store: &dyn BlobStore,
    layout: &Layout,
) -> Result<(Option<Manifest>, Vec<Damaged>)> {
    newest_readable_at(store, layout, None).await
}

/// [`newest_readable`] among the snapshots taken at or before `at` (all when `None`).
async fn newest_readable_at(
    store: &dyn BlobStore,
    layout: &Layout,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(Option<Manifest>, Vec<Damaged>)> {
    let mut skipped = Vec::new();
    let ids = snapshot_ids(store, layout).await?;
    let candidates = ids
        .into_iter()
        .rev()
        .filter(|id| at.is_none_or(|at| id_time(id).is_some_and(|t| t <= at)));
    for id in candidates {
        match read(store, layout, &id).await {
            Ok(Ok(m)) => return Ok((Some(m), skipped)),
            Ok(Err(e)) => {
                tracing::warn!(snapshot = %id, "skipping a damaged snapshot: {e}");
                skipped.push(Damaged {
                    id,
                    error: e.message().to_string(),
                });
            }
            // Forgotten between the listing and the read.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok((None, skipped))
}

/// How far listing looks into a manifest: the header of any, the whole of a small one.
const LIST_READ: u64 = 64 << 10;

/// The header of snapshot `id` as listing sees it, or why the manifest is damaged;
/// `None` when the manifest is gone. Reads at most [`LIST_READ`] bytes: a manifest that
/// small is decoded whole (so truncation is caught), a larger one by its header line.
///
/// # Errors
/// Store errors.
pub async fn check_header(
    store: &dyn BlobStore,
    layout: &Layout,
    id: &str,
) -> Result<Option<std::result::Result<Header, String>>> {
    let name = layout.snapshot(id);
    let Some(props) = store.head(&name).await? else {
        return Ok(None);
    };
    if props.size == 0 {
        return Ok(Some(Err("the manifest is empty".to_string())));
    }
    let head = match store.get(&name, Some(0..props.size.min(LIST_READ))).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let encrypted_without_key = layout.key().is_none()
        && matches!(manifest::decode_first(&head), Ok(Line::Header(ref h)) if h.encryption.is_some());
    let decoded = if props.size <= LIST_READ && !encrypted_without_key {
        Manifest::from_stored(layout, &name, head).map(|m| m.header)
    } else {
        match manifest::decode_first(&head) {
            Ok(Line::Header(h)) => Ok(h),
            Ok(_) => Err(Error::integrity("the first line is not a manifest header")),
            Err(e) => Err(e),
        }
    };
    Ok(Some(decoded.map_err(|e| e.to_string())))
}

/// List snapshots with their headers and newest verify status, oldest first. A snapshot
/// whose manifest cannot be read is listed with `damaged` set and no header.
///
/// # Errors
/// Store errors.
pub async fn list(store: &dyn BlobStore, layout: &Layout) -> Result<Vec<SnapshotInfo>> {
    let ids = snapshot_ids(store, layout).await?;
    let reports = list_all(store, &layout.verify_all()).await?;
    let protections = protections(store, layout).await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let (header, damaged) = match check_header(store, layout, &id).await? {
            None => continue, // forgotten between the listing and the read
            Some(Ok(h)) => (Some(h), None),
            Some(Err(e)) => {
                tracing::warn!(snapshot = %id, "damaged snapshot: {e}");
                (None, Some(e))
            }
        };
        let pre = layout.verify_reports(&id);
        // The newest report of each mode decides; a mismatch found by a deeper check is
        // not hidden by a later, shallower one that passed.
        let mut names: Vec<&String> = reports
            .iter()
            .filter(|r| r.name.starts_with(&pre) && !Layout::is_copied_report(&r.name))
            .map(|r| &r.name)
            .collect();
        names.sort();
        let mut latest_by_mode: Vec<(String, bool)> = Vec::new();
        for n in names {
            let v: VerifyRecord = match serde_json::from_slice(&store.get(n, None).await?) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("ignoring unreadable verify report {n}: {e}");
                    continue;
                }
            };
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
        let protection = protections.get(&id).cloned();
        out.push(SnapshotInfo {
            id,
            header,
            damaged,
            verify_status,
            verify_mode,
            protection,
        });
    }
    Ok(out)
}

impl SnapshotInfo {
    /// Whether this snapshot counts as verified: readable and its verification passed.
    pub fn verified(&self) -> bool {
        self.damaged.is_none() && self.header.is_some() && self.verify_status == VerifyStatus::Ok
    }
}
