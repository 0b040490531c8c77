//! `blobpipe copy`: snapshots from one pipeline's store to another's (a second region).
//!
//! A snapshot is copied as the engine writes one, so the destination holds a snapshot iff
//! its manifest is there: every pack first, block by block, then the manifest's segments,
//! then the manifest itself, last and create-only; then the run record and verify reports
//! of the snapshot, so the destination's `status` and dashboard show its history.
//!
//! - **Server-side where the credentials allow.** When the source store can hand out a URL
//!   the service can read (an Azure store with a SAS, signed from a key or given) and the
//!   destination can stage from a URL (Azure), each block is staged with Put Block From
//!   URL: the service reads the block's range from the source and checks it against the
//!   manifest's MD5 (`x-ms-source-content-md5`); the bytes never reach this machine. The
//!   first refusal (the destination's service cannot read the source: another emulator,
//!   a SAS without read, a service without the operation) switches the rest of the run to
//!   streaming, and the report says which route was taken and why.
//! - **Verified on arrival.** Streamed, each block is read from the source by its range,
//!   its MD5 checked against the manifest's block table, and staged at the destination
//!   with that MD5 as the transactional Content-MD5, so the destination refuses a block
//!   that changed on the way (Azure: 400 `Md5Mismatch`). Either way the pack is committed
//!   with its recorded Content-MD5, create-only.
//! - **Resumable.** A pack already committed at the destination with the same size and
//!   Content-MD5 is skipped; of a pack left half-copied, the blocks already staged (same
//!   id, same size) are not sent again. Block ids are the manifest's, so a rerun after
//!   `kill -9` picks up where the first stopped.
//! - **Records are history, not proof.** The primary's verify reports are copied marked
//!   `copied_from`: they show what was verified where, but only a verify run *at the
//!   destination* makes a copy count as verified there (its freshness, the secondary
//!   region's RPO).
//! - Memory: one block in flight (the pack's block size, 8 MiB by default) and one
//!   manifest head (pack lines and segment refs).

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::manifest::catalog;
use crate::manifest::codec::Codec;
use crate::manifest::layout::{Layout, Repo, COPIED_REPORT};
use crate::manifest::PackRecord;
use crate::store::{list_all, md5, md5_from_b64, CommitOptions, FromUrl, PutOutcome};
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
    /// How the blocks went: `server-side` (service to service), `streamed` (through this
    /// machine), `mixed` (a refusal mid-run switched to streaming), or `none`.
    pub route: &'static str,
    /// Why blocks were streamed rather than staged server-side (no secret in it).
    pub streamed_because: Option<String>,
    /// Blocks the destination's service staged from the source's URL (each checked there
    /// against the manifest's MD5).
    pub blocks_server_side: u64,
    /// Bytes of those blocks (they did not pass through this machine).
    pub bytes_server_side: u64,
    /// Blocks sent through this machine (each MD5-checked at both ends).
    pub blocks_sent: u64,
    /// Blocks of half-copied packs found staged already.
    pub blocks_reused: u64,
    /// Bytes of blocks sent.
    pub bytes_sent: u64,
    /// Segments and manifests written.
    pub small_blobs: u64,
    /// Run records and verify reports written (already present ones not counted).
    pub records: u64,
}

impl CopyReport {
    fn finish(&mut self) {
        self.route = match (self.blocks_server_side > 0, self.blocks_sent > 0) {
            (true, false) => "server-side",
            (false, true) => "streamed",
            (true, true) => "mixed",
            (false, false) => "none",
        };
        if self.blocks_sent == 0 {
            self.streamed_because = None;
        }
    }
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
            // Reports written at the source since the last copy still come over; the
            // header alone names the run (a bounded read, not the manifest).
            if let Some(Ok(h)) = catalog::check_header(&*from.store, &from.layout, &id).await? {
                copy_records(from, to, &id, &h.run_id, &mut r).await?;
            }
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
        // Packs it names that were repacked: their moved records say where the entries
        // are now (the packs copied above).
        for id in m.moved.iter().flat_map(|mv| mv.packs()) {
            copy_small(from, to, &from.layout.moved(id), &to.layout.moved(id)).await?;
            r.small_blobs += 1;
        }
        // Last: the manifest makes the snapshot exist at the destination.
        copy_small(from, to, &from.layout.snapshot(&id), &manifest_blob).await?;
        r.small_blobs += 1;
        copy_records(from, to, &id, &m.header.run_id, &mut r).await?;
        tracing::info!(snapshot = %id, route = r.route, "copied");
        r.copied.push(id);
    }
    r.finish();
    Ok(r)
}

/// The run record(s) of the run that made snapshot `id`, and its verify reports, marked
/// `copied_from` (see the module docs: history, not proof). Create-only; a record already
/// there is left as it is.
async fn copy_records(
    from: &Repo,
    to: &Repo,
    id: &str,
    run_id: &str,
    r: &mut CopyReport,
) -> Result<()> {
    let runs = list_all(&*from.store, &from.layout.run_records(run_id)).await?;
    let reports = list_all(&*from.store, &from.layout.verify_reports(id)).await?;
    let (rp, vp) = (
        from.layout.run_records(run_id),
        from.layout.verify_reports(id),
    );
    let items = runs
        .iter()
        .map(|i| (i, &rp, to.layout.run_records(run_id), false))
        .chain(
            reports
                .iter()
                .map(|i| (i, &vp, to.layout.verify_reports(id), true)),
        );
    for (item, src_prefix, dst_prefix, mark) in items {
        let Some(rel) = item.name.strip_prefix(src_prefix.as_str()) else {
            continue;
        };
        let dst = match (mark, rel.strip_suffix(".json")) {
            (true, Some(stem)) if !Layout::is_copied_report(rel) => {
                format!("{dst_prefix}{stem}{COPIED_REPORT}")
            }
            _ => format!("{dst_prefix}{rel}"),
        };
        if to.store.head(&dst).await?.is_some() {
            continue;
        }
        let mut data = from.store.get(&item.name, None).await?;
        if mark {
            // An unreadable report is history lost, not a reason to stop a DR copy.
            let mut v: serde_json::Value = match serde_json::from_slice(&data) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("not copying unreadable verify report {}: {e}", item.name);
                    continue;
                }
            };
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "copied_from".into(),
                    serde_json::Value::String(from.store.describe()),
                );
            }
            data = serde_json::to_vec_pretty(&v)
                .map_err(|e| Error::internal(format!("{}: {e}", item.name)))?
                .into();
        }
        if to.store.put(&dst, data, true).await? == PutOutcome::Created {
            r.records += 1;
        }
    }
    Ok(())
}

/// Switch the rest of the run to streaming, recording why.
fn fall_back(r: &mut CopyReport, why: String) -> bool {
    tracing::warn!("server-side copy not possible, streaming through this machine: {why}");
    r.streamed_because = Some(why);
    false
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
    // A stored pack's recorded MD5 is of its blocks' MD5s: its blob has no Content-MD5.
    let want_md5 = md5_from_b64(&p.md5).filter(|_| p.codec != Codec::Stored);
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
    // A fresh URL (SAS) per pack: a long copy outlives one token.
    let source_url = if r.streamed_because.is_none() {
        let u = from.store.read_url(&src);
        if u.is_none() {
            r.streamed_because = Some(format!(
                "the source ({}) gives no URL its service could read (server-side copy needs a \
                 SAS: an account key or a SAS URL, not an Entra ID token or a directory)",
                from.store.describe()
            ));
        }
        u
    } else {
        None
    };
    for b in &p.blocks {
        let end = off + b.size;
        if staged.iter().any(|s| s.id == b.id && s.size == b.size) {
            r.blocks_reused += 1;
            ids.push(b.id.clone());
            off = end;
            continue;
        }
        let want = md5_from_b64(&b.md5).ok_or_else(|| {
            Error::integrity(format!("block {} of {src}: recorded MD5 unreadable", b.id))
        })?;
        let server_side = match &source_url {
            Some(u) if r.streamed_because.is_none() && b.size > 0 => {
                match to
                    .store
                    .stage_block_from_url(&dst, &b.id, u, off..end, Some(want), None)
                    .await
                {
                    Ok(FromUrl::Staged(_)) => true,
                    // Not asked for (no `source_if_match`): packs never change.
                    Ok(FromUrl::SourceChanged) => {
                        return Err(Error::integrity(format!("{src} changed while copied")))
                    }
                    Ok(FromUrl::Refused(why)) => fall_back(r, why),
                    // Until one block went server-side, a failure of the operation itself
                    // (Azurite 3.37 answers 500 to it under an account SAS) is a reason
                    // to stream, not to stop; a damaged source block always stops.
                    Err(e)
                        if r.blocks_server_side == 0
                            && !matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Cancelled) =>
                    {
                        fall_back(r, e.to_string())
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => false,
        };
        if server_side {
            r.blocks_server_side += 1;
            r.bytes_server_side += b.size;
        } else {
            let data = from.store.get(&src, Some(off..end)).await?;
            let sum = md5(&data);
            if sum != want {
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
