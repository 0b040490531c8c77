//! Restoring from the Archive tier: which packs a restore needs and their tiers (the
//! `restore --plan` answer), refusing before anything is written when one is archived,
//! and rehydration — Hot staging copies (`<prefix>/rehydrate/…`) started, polled until
//! readable, read instead of the archived blobs, and deleted after success.

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::manifest::layout::Layout;
use crate::manifest::{EntryKind, Manifest};
use crate::restore::{select, RehydrateOptions};
use crate::store::{Store, Tier};

/// A pack a restore needs, with its current tier.
#[derive(Debug, Clone, Serialize)]
pub struct PackNeed {
    /// Pack id.
    pub pack: String,
    /// Blob name relative to the prefix.
    pub blob: String,
    /// Compressed size.
    pub size: u64,
    /// Current tier (`None`: the blob is missing).
    pub tier: Option<Tier>,
    /// State of its staging copy, for archived packs (`pending`, `ready`), if one exists.
    pub staging: Option<String>,
}

/// What a restore needs from the store: every pack holding a selected entry, and which
/// of them must be rehydrated first.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    /// Snapshot.
    pub snapshot: String,
    /// Entries selected.
    pub entries: usize,
    /// Packs holding selected file data.
    pub packs: Vec<PackNeed>,
    /// Of those, the ones in the Archive tier (to rehydrate).
    pub archived: Vec<PackNeed>,
    /// Bytes to rehydrate.
    pub archived_bytes: u64,
    /// Expected wait with standard priority.
    pub wait_standard: String,
    /// Expected wait with high priority.
    pub wait_high: String,
}

/// Plan a restore of `paths` (all when empty) of `m`: the packs it reads, their tiers,
/// and what rehydrating the archived ones costs in time. Reads only blob properties.
///
/// # Errors
/// `NotFound` when no entry matches, `Config` for bad globs, store errors.
pub async fn plan(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    paths: &[String],
) -> Result<RestorePlan> {
    let entries = select(m, paths)?;
    let mut ids: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && e.size > 0)
        .flat_map(|e| e.packs())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut packs = Vec::new();
    for id in ids {
        let Some(p) = m.pack(id) else { continue };
        let tier = store.head(&layout.full(&p.blob)).await?.map(|x| x.tier);
        let staging = if tier == Some(Tier::Archive) {
            store
                .head(&layout.full(&Layout::staging_rel(&p.blob)))
                .await?
                .map(|x| {
                    if x.tier == Tier::Archive {
                        "pending"
                    } else {
                        "ready"
                    }
                    .to_string()
                })
        } else {
            None
        };
        packs.push(PackNeed {
            pack: p.id.clone(),
            blob: p.blob.clone(),
            size: p.size,
            tier,
            staging,
        });
    }
    let archived: Vec<PackNeed> = packs
        .iter()
        .filter(|p| p.tier == Some(Tier::Archive))
        .cloned()
        .collect();
    let archived_bytes = archived.iter().map(|p| p.size).sum();
    let (wait_standard, wait_high) = if archived.is_empty() {
        ("none".to_string(), "none".to_string())
    } else {
        (
            "up to 15 hours".to_string(),
            if archived.iter().all(|p| p.size < 10_000_000_000) {
                "usually under 1 hour".to_string()
            } else {
                "usually under 1 hour per blob under 10 GB; longer for larger packs".to_string()
            },
        )
    };
    Ok(RestorePlan {
        snapshot: m.header.snapshot.clone(),
        entries: entries.len(),
        packs,
        archived,
        archived_bytes,
        wait_standard,
        wait_high,
    })
}

/// Refuse, before anything is written, when any of the packs `ids` is in the Archive
/// tier (it cannot be read until rehydrated).
///
/// # Errors
/// `Archived`, naming the packs and how to rehydrate them; store errors.
pub(super) async fn refuse_archived(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    ids: impl Iterator<Item = &String>,
) -> Result<()> {
    let mut archived = Vec::new();
    for pid in ids {
        if let Some(p) = m.pack(pid) {
            if let Some(props) = store.head(&layout.full(&p.blob)).await? {
                if props.tier == Tier::Archive {
                    archived.push(p.blob.clone());
                }
            }
        }
    }
    if !archived.is_empty() {
        let n = archived.len();
        return Err(Error::new(
            ErrorKind::Archived,
            format!(
                "{n} needed pack(s) are in the Archive tier: {}; nothing was written. \
                 See what rehydration needs with `restore --plan`, then rerun with \
                 `--rehydrate standard` (up to 15 h) or `--rehydrate high` (usually < 1 h)",
                archived.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Start a rehydrating copy of every archived pack of `pl` into its Hot staging blob
/// and poll, with progress, until all are readable. Copies already there (or still
/// pending) from an interrupted run are picked up where they stand.
///
/// # Errors
/// `Archived` when `rh.timeout` passes first (the copies are kept) or the store cannot
/// rehydrate; `Cancelled` on a signal while waiting; store errors.
pub(super) async fn rehydrate(
    store: &Store,
    layout: &Layout,
    pl: &RestorePlan,
    rh: RehydrateOptions,
    cancel: &crate::support::cancel::Cancel,
) -> Result<()> {
    let total = pl.archived.len();
    tracing::info!(
        packs = total,
        bytes = pl.archived_bytes,
        priority = rh.priority.as_str(),
        "rehydrating archived packs into Hot staging copies"
    );
    let started = std::time::Instant::now();
    let mut pending: Vec<&PackNeed> = pl.archived.iter().collect();
    loop {
        let mut still = Vec::new();
        for p in pending {
            let st = store
                .rehydrate(
                    &layout.full(&p.blob),
                    &layout.full(&Layout::staging_rel(&p.blob)),
                    rh.priority,
                )
                .await
                .ctx(format!("rehydrating {}", p.blob))?;
            if st == crate::store::Rehydration::Pending {
                still.push(p);
            }
        }
        pending = still;
        tracing::info!(
            ready = total - pending.len(),
            total,
            waited_s = started.elapsed().as_secs(),
            "rehydration progress"
        );
        if pending.is_empty() {
            break;
        }
        if rh.timeout.is_some_and(|t| started.elapsed() >= t) {
            return Err(Error::new(
                ErrorKind::Archived,
                format!(
                    "{} of {total} packs are still rehydrating; rerun the same restore later to continue (staging copies are kept)",
                    pending.len()
                ),
            ));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(Error::cancelled()),
            _ = tokio::time::sleep(rh.poll) => {}
        }
    }
    Ok(())
}

/// `m` with every archived pack of `pl` read from its staging copy instead.
pub(super) fn staged(m: &Manifest, pl: &RestorePlan) -> Manifest {
    let mut staged = m.clone();
    let archived: std::collections::HashSet<&str> =
        pl.archived.iter().map(|p| p.pack.as_str()).collect();
    for p in staged.packs.iter_mut() {
        if archived.contains(p.id.as_str()) {
            p.blob = Layout::staging_rel(&p.blob);
        }
    }
    staged
}

/// Delete the staging copies after a successful restore (a failure is only logged: the
/// restore itself succeeded).
pub(super) async fn delete_staging(store: &Store, layout: &Layout, pl: &RestorePlan) {
    for p in &pl.archived {
        let name = layout.full(&Layout::staging_rel(&p.blob));
        if let Err(e) = store.delete(&name).await {
            tracing::warn!("could not delete the staging copy {name}: {e}");
        }
    }
}
