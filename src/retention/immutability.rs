//! `[immutability]`: make a committed snapshot write-once.
//!
//! Ransomware and a compromised administrator go for the backups first. With a
//! version-level immutability policy on every blob a snapshot needs — its manifest, its
//! packs and its manifest segments — the store itself refuses to delete or overwrite them
//! before the policy's date, whoever asks (in `locked` mode not even the account owner can
//! shorten it). This module sets those policies right after the commit and stores a
//! protection record (`immutability/<snapshot>.json`) saying until when the snapshot is
//! safe; `forget` keeps such snapshots and `prune` skips such blobs and says so.
//!
//! Cost: one request per blob. An incremental shares most packs and segments with its
//! parent, so policies are set `days + margin` ahead: while the parent's record already
//! covers the new snapshot's `days`, only the blobs the parent does not reference are
//! protected (typically the manifest, a few packs and segments). When the parent's cover
//! runs short, every blob is extended once. The record keeps the smallest date any of the
//! snapshot's blobs is protected to, so it is a promise, not an estimate.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};

use super::config::ImmutabilityConfig;
use crate::error::{ErrorKind, Result, ResultExt};
use crate::manifest::catalog;
use crate::manifest::layout::Layout;
use crate::manifest::records::ProtectionRecord;
use crate::manifest::Manifest;
use crate::store::BlobStore;

/// Requests in flight while protecting one snapshot.
const CONCURRENCY: usize = 16;

/// Every blob snapshot `m` needs, as full names: its manifest, packs and segments.
fn blobs_of(layout: &Layout, m: &Manifest) -> Vec<String> {
    let mut out = Vec::with_capacity(1 + m.packs.len() + m.segments.len());
    out.push(layout.snapshot(&m.header.snapshot));
    out.extend(m.packs.iter().map(|p| layout.full(&p.blob)));
    out.extend(m.segments.iter().map(|s| layout.full(&s.blob)));
    out.extend(
        m.moved
            .iter()
            .flat_map(|mv| mv.packs())
            .map(|id| layout.moved(id)),
    );
    out
}

/// Read a snapshot's protection record; `None` when there is none (or it is unreadable:
/// the next run then protects every blob again, which is safe).
///
/// # Errors
/// Store errors other than a missing record.
pub async fn record(
    store: &dyn BlobStore,
    layout: &Layout,
    snapshot: &str,
) -> Result<Option<ProtectionRecord>> {
    match store.get(&layout.protection(snapshot), None).await {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

async fn protect_one(
    store: &dyn BlobStore,
    blob: &str,
    until: DateTime<Utc>,
    cfg: &ImmutabilityConfig,
    snapshot: &str,
) -> Result<()> {
    store
        .protect(blob, until, cfg.mode)
        .await
        .ctx(format!("protecting snapshot {snapshot}"))?;
    if cfg.legal_hold {
        store
            .set_legal_hold(blob, true)
            .await
            .ctx(format!("protecting snapshot {snapshot}"))?;
    }
    Ok(())
}

/// Protect the committed snapshot `m` as `cfg` says and store its protection record.
/// Idempotent: a rerun of the same run protects again (extending, never shortening).
///
/// # Errors
/// Store errors (Azure: a container without version-level immutability answers 409), a
/// store that cannot protect blobs (`Config`).
pub async fn protect_snapshot(
    store: &dyn BlobStore,
    layout: &Layout,
    m: &Manifest,
    cfg: &ImmutabilityConfig,
    now: DateTime<Utc>,
) -> Result<ProtectionRecord> {
    let snapshot = &m.header.snapshot;
    let need = now + Duration::days(i64::from(cfg.days));
    let until = need + Duration::days(i64::from(cfg.margin_days()));
    // What the parent already covers for at least `days` from now, with the same mode
    // and hold: those blobs need no request.
    let mut covered: HashSet<String> = HashSet::new();
    let mut covered_until = None;
    if let Some(parent) = m.header.parent.as_deref() {
        if let Some(r) = record(store, layout, parent).await? {
            let enough = r.until.is_some_and(|u| u >= need);
            if enough && r.mode == cfg.mode && (r.legal_hold || !cfg.legal_hold) {
                match catalog::load_head(store, layout, parent).await {
                    Ok(pm) => {
                        covered = blobs_of(layout, &pm).into_iter().collect();
                        covered_until = r.until;
                    }
                    // The parent went (forgotten after its policy ended): protect all.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e.context(format!("reading parent {parent}"))),
                }
            }
        }
    }
    let all = blobs_of(layout, m);
    let todo: Vec<&String> = all.iter().filter(|b| !covered.contains(*b)).collect();
    let reused = all.len() - todo.len();
    for batch in todo.chunks(CONCURRENCY) {
        futures::future::try_join_all(
            batch
                .iter()
                .map(|blob| protect_one(store, blob, until, cfg, snapshot)),
        )
        .await?;
    }
    let rec = ProtectionRecord {
        snapshot: snapshot.clone(),
        until: Some(match (reused, covered_until) {
            (n, Some(c)) if n > 0 => c.min(until),
            _ => until,
        }),
        mode: cfg.mode,
        legal_hold: cfg.legal_hold,
        blobs: all.len() as u64,
        blobs_set: todo.len() as u64,
        set_at: Some(now),
    };
    let body = serde_json::to_vec_pretty(&rec)
        .map_err(|e| crate::Error::new(ErrorKind::Encode, format!("protection record: {e}")))?;
    store
        .put(&layout.protection(snapshot), body.into(), false)
        .await
        .ctx(format!("storing the protection record of {snapshot}"))?;
    tracing::info!(
        snapshot = %snapshot,
        until = %rec.until.unwrap_or(until),
        mode = %cfg.mode,
        blobs = rec.blobs,
        set = rec.blobs_set,
        "snapshot protected (immutability)"
    );
    Ok(rec)
}
