//! `blobpipe copy`: snapshots from one pipeline's store to another's (a second region).
//!
//! A snapshot is copied as the engine writes one, so the destination holds a snapshot iff
//! its manifest is there: every pack first, block by block, then the manifest's segments,
//! then the manifest itself, last and create-only.
//!
//! - **Verified on arrival.** Each block is read from the source by its range, its MD5
//!   checked against the manifest's block table, and staged at the destination with that
//!   MD5 as the transactional Content-MD5, so the destination refuses a block that
//!   changed on the way (Azure: 400 `Md5Mismatch`). The pack is committed with its
//!   recorded Content-MD5, create-only.
//! - **Resumable.** A pack already committed at the destination with the same size and
//!   Content-MD5 is skipped; of a pack left half-copied, the blocks already staged (same
//!   id, same size) are not sent again. Block ids are the manifest's, so a rerun after
//!   `kill -9` picks up where the first stopped.
//! - Memory: one block in flight (the pack's block size, 8 MiB by default) and one
//!   manifest head (pack lines and segment refs).

use serde::Serialize;

use crate::error::{Error, Result, ResultExt};
use crate::manifest::catalog;
use crate::manifest::layout::Repo;
use crate::manifest::PackRecord;
use crate::store::{md5, md5_from_b64, CommitOptions};
use crate::support::cancel::Cancel;

/// What a copy did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CopyReport {
    /// Snapshots copied by this run, oldest first.
    pub copied: Vec<String>,
    /// Snapshots the destination already had.
    pub present: Vec<String>,
    /// Packs committed at the destination by this run.
    pub packs_copied: u64,
    /// Packs the destination already had.
    pub packs_present: u64,
    /// Blocks sent (each MD5-checked at both ends).
    pub blocks_sent: u64,
    /// Blocks of half-copied packs found staged already.
    pub blocks_reused: u64,
    /// Bytes of blocks sent.
    pub bytes_sent: u64,
    /// Segments and manifests written.
    pub small_blobs: u64,
}

/// Copy the snapshots `ids` (all of `from`'s, oldest first, when empty) to `to`.
///
/// # Errors
/// `NotFound` for an unknown snapshot, `Integrity` when a source block does not match
/// its recorded MD5, `Archived` for an archived source pack, `Cancelled`, store errors.
pub async fn copy(from: &Repo, to: &Repo, ids: &[String], cancel: &Cancel) -> Result<CopyReport> {
    // [encryption]: blobs are copied as stored (sealed, bound to their names relative to
    // the prefix), so the destination reads them with the same key record: copy it first.
    if from.layout.key().is_some() {
        for item in crate::store::list_all(&*from.store, &from.layout.keys()).await? {
            let file = item.name.rsplit('/').next().unwrap_or(&item.name);
            let id = file.strip_suffix(".json").unwrap_or(file);
            copy_small(from, to, &item.name, &to.layout.key_record(id)).await?;
        }
    }
    let mut wanted = Vec::new();
    if ids.is_empty() {
        wanted = catalog::snapshot_ids(&*from.store, &from.layout).await?;
    } else {
        for id in ids {
            wanted.push(catalog::resolve(&*from.store, &from.layout, id).await?);
        }
        wanted.sort();
        wanted.dedup();
    }
    let mut r = CopyReport::default();
    for id in wanted {
        if cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        let manifest_blob = to.layout.snapshot(&id);
        if to.store.head(&manifest_blob).await?.is_some() {
            r.present.push(id);
            continue;
        }
        let m = catalog::load_head(&*from.store, &from.layout, &id)
            .await
            .ctx(format!("reading snapshot {id} at the source"))?;
        for p in &m.packs {
            if cancel.is_cancelled() {
                return Err(Error::cancelled());
            }
            copy_pack(from, to, p, &mut r)
                .await
                .ctx(format!("copying pack {} of snapshot {id}", p.id))?;
        }
        for s in &m.segments {
            copy_small(
                from,
                to,
                &from.layout.full(&s.blob),
                &to.layout.full(&s.blob),
            )
            .await?;
            r.small_blobs += 1;
        }
        // Last: the manifest makes the snapshot exist at the destination.
        copy_small(from, to, &from.layout.snapshot(&id), &manifest_blob).await?;
        r.small_blobs += 1;
        tracing::info!(snapshot = %id, "copied");
        r.copied.push(id);
    }
    Ok(r)
}

async fn copy_small(from: &Repo, to: &Repo, src: &str, dst: &str) -> Result<()> {
    let data = from.store.get(src, None).await?;
    to.store
        .put(dst, data, true)
        .await
        .ctx(format!("writing {dst}"))?;
    Ok(())
}

async fn copy_pack(from: &Repo, to: &Repo, p: &PackRecord, r: &mut CopyReport) -> Result<()> {
    let (src, dst) = (from.layout.full(&p.blob), to.layout.full(&p.blob));
    let want_md5 = md5_from_b64(&p.md5);
    if let Some(h) = to.store.head(&dst).await? {
        if h.size == p.size && h.content_md5 == want_md5 {
            r.packs_present += 1;
            return Ok(());
        }
        return Err(Error::integrity(format!(
            "{dst} exists at the destination with other content ({} bytes); remove it or \
             copy into another prefix",
            h.size
        )));
    }
    let staged = to.store.block_list(&dst).await?.uncommitted;
    let mut ids = Vec::with_capacity(p.blocks.len());
    let mut off = 0u64;
    for b in &p.blocks {
        let end = off + b.size;
        if staged.iter().any(|s| s.id == b.id && s.size == b.size) {
            r.blocks_reused += 1;
        } else {
            let data = from.store.get(&src, Some(off..end)).await?;
            let sum = md5(&data);
            if Some(sum) != md5_from_b64(&b.md5) {
                return Err(Error::integrity(format!(
                    "block {} of {src} at the source does not match its recorded MD5",
                    b.id
                )));
            }
            r.bytes_sent += data.len() as u64;
            to.store.stage_block(&dst, &b.id, data, sum).await?;
            r.blocks_sent += 1;
        }
        ids.push(b.id.clone());
        off = end;
    }
    let mut opts = CommitOptions {
        tier: p.tier,
        content_md5: want_md5,
        create_only: true,
        ..Default::default()
    };
    opts.metadata
        .insert("copied".into(), "blobpipe copy".into());
    to.store.commit_blocks(&dst, &ids, &opts).await?;
    r.packs_copied += 1;
    Ok(())
}
