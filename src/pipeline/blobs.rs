//! Backing up a blob container (`source.type = "blob"`): the engine side.
//!
//! The extract stage knows no store, so the engine owns the source's Azure client: it
//! opens the container ([`open_source`]), lists it page by page into
//! [`extract::blob::BlobSplitter`] ([`spawn_listing`]: memory holds a listing page and a
//! partition or two, never the container), and packs each partition
//! ([`run_partition`]) the way [`super::files`] packs a directory range:
//!
//! - merge join with the parent's entries of the partition's name range; a blob whose
//!   ETag and size match is reused, not read (its new tags and tier are kept);
//! - a blob in the Archive tier is a problem of the run (listed in the run record); with
//!   `source.rehydrate` its rehydration in place is requested, and a later run, finding
//!   it online (and not in its parent), reads it;
//! - a blob is read in ranged GETs of [`READ_CHUNK`] bytes, each with `If-Match` on the
//!   listed ETag, straight into the pack's tar stream, hashing it (SHA-256 for the
//!   manifest, MD5 against the blob's own Content-MD5). If the blob changes while read
//!   (412), its properties are read again and it is read once more, without `If-Match`
//!   (so what is stored is the service's bytes, not padding), checking every range's
//!   ETag against the new one; a second change stores what was read and marks the entry
//!   inconsistent, as a file that keeps changing is.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use md5::{Digest, Md5};

use super::commit::PartResult;
use super::report::ServerSideCounts;
use super::run::Ctx;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::extract::blob::{self, BlobSplitter, Listed, RawBlob, Selector};
use crate::extract::config::{BlobSourceConfig, PartitionsConfig, Rehydrate, SourceConfig};
use crate::extract::{Piece, Problem};
use crate::manifest::{BlobMeta, Changes, Entry};
use crate::pack::packer::io_to_err;
use crate::pack::stored::Staging;
use crate::pack::tarball::{self, HeaderMeta};
use crate::store::azure::source::SourceBlob;
use crate::store::azure::{credential, AzureOptions, AzureStore};
use crate::store::config::RetryConfig;
use crate::store::{BlobStore, RehydratePriority};
use crate::support::cancel::Cancel;
use crate::support::progress::Counters;
use crate::support::secret::Secret;

/// Bytes per ranged read of a source blob (one buffer per partition worker).
pub(super) const READ_CHUNK: u64 = 4 << 20;

/// Blobs asked for per listing page.
const PAGE: usize = 5000;

/// Open the source container and check that it exists and the credential can read it.
///
/// # Errors
/// `Config` for an unusable URL or no credential; `Source` for a missing container or a
/// refused credential.
pub(super) async fn open_source(
    cfg: &BlobSourceConfig,
    retry: &RetryConfig,
) -> Result<Arc<AzureStore>> {
    let opts = AzureOptions {
        retry: *retry,
        ..Default::default()
    };
    let what = format!("source {}", cfg.display);
    let s = AzureStore::open(
        &cfg.location,
        &cfg.container,
        &opts,
        &credential::process_env,
    )
    .map_err(|e| e.context(&what))?;
    match s.container_exists().await {
        Ok(true) => Ok(Arc::new(s)),
        Ok(false) => Err(Error::new(
            ErrorKind::Source,
            format!(
                "{what}: container {:?} does not exist (check source.url / source.container)",
                s.container_name()
            ),
        )),
        Err(e) => Err(e.with_kind(ErrorKind::Source).context(&what)),
    }
}

fn raw_of(b: SourceBlob) -> RawBlob {
    RawBlob {
        name: b.name,
        size: b.size,
        last_modified: b.last_modified,
        block_blob: b.block_blob,
        tier: b.tier.as_str().to_string(),
        meta: BlobMeta {
            etag: b.etag,
            content_md5: b.content_md5.map(|m| crate::store::b64(&m)),
            content_type: b.content_type,
            metadata: b.metadata,
            tags: b.tags,
            tier: None,
            blocks_md5: None,
        },
    }
}

/// List the source a page at a time and send its partitions into `tx` as they are cut.
pub(super) fn spawn_listing(
    src: Arc<AzureStore>,
    cfg: &BlobSourceConfig,
    split: PartitionsConfig,
    tx: tokio::sync::mpsc::Sender<Piece>,
    counters: Arc<Counters>,
    cancel: Cancel,
) -> tokio::task::JoinHandle<Result<()>> {
    let (include, exclude) = (cfg.include.clone(), cfg.exclude.clone());
    tokio::spawn(async move {
        let sel = Selector::new(&include, &exclude)?;
        let mut s = BlobSplitter::new(split.size, split.max_entries);
        let mut ready: Vec<Piece> = Vec::new();
        let mut marker = None;
        let (mut entries, mut bytes) = (0u64, 0u64);
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let page = src
                .list_detailed("", marker, PAGE)
                .await
                .map_err(|e| e.with_kind(ErrorKind::Source).context("listing the source"))?;
            for b in page.items {
                s.push(blob::judge(&sel, raw_of(b)), &mut |p| {
                    ready.push(p);
                    Ok(())
                })?;
            }
            let last = page.next.is_none();
            if last {
                let s = std::mem::replace(&mut s, BlobSplitter::new(1, 1));
                s.finish(&mut |p| {
                    ready.push(p);
                    Ok(())
                })?;
            }
            for p in ready.drain(..) {
                entries += p.entries.len() as u64;
                bytes += p.bytes();
                counters.set_total(entries, bytes);
                if tx.send(p).await.is_err() {
                    // The engine stopped taking partitions; it reports why.
                    return Ok(());
                }
            }
            if last {
                return Ok(());
            }
            marker = page.next;
        }
    })
}

/// Reads a source blob in ranged GETs as a [`Read`]. With `if_match`, only the version
/// `etag` is read: a changed (412) or vanished blob reads as end of data and sets
/// `changed`. Without it, any range from another version than `etag` sets `changed`
/// (the bytes are still the service's). A store failure reads as end of data and is
/// kept in `error` (the partition fails and is retried).
struct BlobReader<'a> {
    ctx: &'a Ctx,
    src: &'a AzureStore,
    name: &'a str,
    etag: &'a str,
    if_match: bool,
    size: u64,
    /// A range came from another version than `etag` (reads without `If-Match`).
    mixed: bool,
    pos: u64,
    buf: bytes::Bytes,
    md5: Md5,
    changed: bool,
    error: Option<Error>,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            if self.changed || self.error.is_some() || self.pos >= self.size {
                return Ok(0);
            }
            if self.ctx.cancel.is_cancelled() {
                self.error = Some(Error::cancelled());
                return Ok(0);
            }
            let end = (self.pos + READ_CHUNK).min(self.size);
            match self.ctx.rt.block_on(self.src.read_version(
                self.name,
                self.pos..end,
                self.if_match.then_some(self.etag),
            )) {
                Ok(Some((b, etag))) => {
                    // Without If-Match the read goes on: every byte stored is the
                    // service's, and the entry is marked inconsistent.
                    if etag != self.etag {
                        self.mixed = true;
                    }
                    self.pos = end;
                    self.md5.update(&b);
                    self.buf = b;
                }
                Ok(None) => {
                    self.changed = true;
                    return Ok(0);
                }
                Err(e) => {
                    self.error = Some(e);
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        bytes::Buf::advance(&mut self.buf, n);
        Ok(n)
    }
}

fn header_meta(e: &Entry) -> HeaderMeta {
    HeaderMeta {
        mode: e.mode,
        mtime: e.mtime,
        uid: 0,
        gid: 0,
    }
}

/// What becomes of an Archive-tier blob the parent does not hold: reported, and with
/// `source.rehydrate` rehydrated in place so that a later run backs it up. Either way the
/// snapshot lacks it and the run is partial; the problem's text says which.
fn archived(ctx: &Ctx, src: &AzureStore, path: &crate::manifest::PathBytes) -> String {
    let priority = match &ctx.pipeline.source {
        SourceConfig::Blob(b) => b.rehydrate,
        _ => None,
    };
    let Some(priority) = priority else {
        return "not read: the blob is in the Archive tier (set source.rehydrate, or rehydrate \
                it to Hot or Cool, to back it up)"
            .into();
    };
    let priority = match priority {
        Rehydrate::Standard => RehydratePriority::Standard,
        Rehydrate::High => RehydratePriority::High,
    };
    let Ok(name) = std::str::from_utf8(&path.0) else {
        return "not read: the blob is in the Archive tier".into();
    };
    match ctx.rt.block_on(src.rehydrate_in_place(name, priority)) {
        Ok(()) => {
            tracing::info!("{name}: archived; rehydration to Hot requested");
            format!(
                "pending rehydration: in the Archive tier, not in this snapshot; rehydration \
                 to Hot requested ({} priority), a later run backs it up once it is online",
                priority.as_str()
            )
        }
        Err(e) => {
            format!("not read: the blob is in the Archive tier, and rehydrating it failed: {e}")
        }
    }
}

/// The listed facts of a blob refreshed from its properties after a change (its tags
/// cannot be read that way and are kept from the listing).
fn refreshed(item: &Listed, now: SourceBlob) -> Listed {
    let mut l = item.clone();
    l.size = now.size;
    l.last_modified = now.last_modified;
    l.meta.etag = now.etag;
    l.meta.content_md5 = now.content_md5.map(|m| crate::store::b64(&m));
    l.meta.content_type = now.content_type;
    l.meta.metadata = now.metadata;
    l.meta.tier = Some(now.tier.as_str().to_string());
    l.archived = now.tier == crate::store::Tier::Archive;
    l
}

/// Why an encrypted pipeline streams a blob above `server_side_min_size`.
const ENCRYPTS: &str = "the pipeline encrypts its packs";

/// Why a blob that meets `server_side_min_size` streams: the source offers no URL.
const NO_SOURCE_URL: &str =
    "the source gives no URL the target's service can read (no key or SAS: Entra ID)";

/// Whether blob `item` may be copied into a stored pack by the target's service (Put
/// Block From URL), with the URL the service reads it by; otherwise why not, or `None`
/// when `server_side_min_size` is not set. The one place that decides: the blob must be
/// at least `source.server_side_min_size`, the target must be Azure and must not have
/// refused the operation earlier in the run, and the source must give a URL with a read
/// SAS. A stored pack holds the bytes as they are, so a pipeline that encrypts its packs
/// never stages server-side.
pub(super) fn may_stage_server_side(
    ctx: &Ctx,
    src: &AzureStore,
    item: &Listed,
) -> std::result::Result<Secret, Option<String>> {
    let min = match &ctx.pipeline.source {
        SourceConfig::Blob(b) => b.server_side_min_size.ok_or(None)?,
        _ => return Err(None),
    };
    if item.dir {
        return Err(None);
    }
    if item.size < min {
        return Err(Some("below server_side_min_size".into()));
    }
    if ctx.packs.key.is_some() {
        // The service would store the blob's bytes as they are: plaintext beside
        // encrypted packs. Such blobs stream through sealed frames instead.
        return Err(Some(ENCRYPTS.into()));
    }
    if !ctx.packs.store.stages_from_url() {
        return Err(Some(
            "the target cannot stage blocks from a URL (not Azure)".into(),
        ));
    }
    if let Some(why) = ctx
        .stats
        .server_side
        .lock()
        .ok()
        .and_then(|c| c.refused.clone())
    {
        return Err(Some(format!("the target's service refused: {why}")));
    }
    let name = std::str::from_utf8(&item.path.0).map_err(|_| Some(NO_SOURCE_URL.into()))?;
    src.read_url(name).ok_or_else(|| Some(NO_SOURCE_URL.into()))
}

/// Count where a blob went (`server_side` of the report).
fn tally(ctx: &Ctx, f: impl FnOnce(&mut ServerSideCounts)) {
    if let Ok(mut c) = ctx.stats.server_side.lock() {
        f(&mut c);
    }
}

/// Read, pack and store the blobs of partition `piece`; write its part record.
///
/// # Errors
/// `Store`/`Source` when the source or the target fails (the partition is retried),
/// `Cancelled` on a signal.
pub(super) fn run_partition(ctx: &Ctx, piece: &Piece) -> Result<PartResult> {
    let src = ctx
        .blob_source
        .as_deref()
        .ok_or_else(|| Error::internal("blob source not opened"))?;
    let idx = piece.idx;
    let prev = super::files::parent_entries(ctx, piece)?;
    let mut prev_at = 0usize;
    let mut changes = Changes::default();
    let mut parent_packs: BTreeSet<String> = BTreeSet::new();
    let pack_size = ctx.pipeline.upload.pack_size;
    let large = (pack_size / 2).max(1);
    let mut result = PartResult::default();
    let mut cur = None;
    let mut seq = 0usize;
    let remaining_hint = |from: usize| -> u64 {
        piece.blobs[from..]
            .iter()
            .map(|e| e.size + 1024)
            .sum::<u64>()
            .min(pack_size + (pack_size / 4))
    };
    for (i, item) in piece.blobs.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        let path = &item.path;
        while prev.get(prev_at).is_some_and(|p| p.path < *path) {
            changes.deleted += 1;
            changes.deleted_bytes += prev[prev_at].size;
            prev_at += 1;
        }
        let before = prev.get(prev_at).filter(|p| p.path == *path);
        if before.is_some() {
            prev_at += 1;
        }
        if let Some(prev) = before.filter(|p| ctx.reuse && blob::unchanged(p, item)) {
            ctx.counters.add(1, prev.size);
            changes.unchanged += 1;
            changes.unchanged_bytes += prev.size;
            if let Some(pk) = &prev.pack {
                parent_packs.insert(pk.clone());
            }
            result.entries.push(blob::reused(prev, item));
            continue;
        }
        if item.archived {
            result.problems.push(Problem {
                path: path.clone(),
                error: archived(ctx, src, path),
            });
            continue;
        }
        let mut entry = None;
        match may_stage_server_side(ctx, src, item) {
            Ok(url) => {
                let e0 = blob::entry_of(item);
                let staged = ctx.packs.stage_from_url(
                    idx,
                    seq,
                    path,
                    item.size,
                    &header_meta(&e0),
                    &url,
                    &item.meta.etag,
                )?;
                seq += 1;
                match staged {
                    Staging::Done(f) => {
                        let mut e = e0;
                        e.size = item.size;
                        e.pack = Some(f.record.id.clone());
                        e.offset = f.placed.offset;
                        e.data_offset = f.placed.data_offset;
                        e.sha256 = None;
                        if let Some(b) = e.blob.as_deref_mut() {
                            b.blocks_md5 = Some(f.blocks_md5);
                        }
                        tally(ctx, |c| c.staged(item.size));
                        result.packs.push(f.record);
                        entry = Some(e);
                    }
                    Staging::SourceChanged => {
                        tracing::info!("{}: changed while staged; reading it", path.display());
                        tally(ctx, |c| c.streamed("changed while staged", item.size));
                    }
                    Staging::Refused(why) => {
                        tracing::warn!(
                            "the target's service refused server-side staging ({why}); the \
                             rest of the run streams"
                        );
                        tally(ctx, |c| {
                            c.streamed(&format!("the target's service refused: {why}"), item.size);
                            c.refused = Some(why);
                        });
                    }
                }
            }
            Err(Some(why)) => tally(ctx, |c| c.streamed(&why, item.size)),
            Err(None) => {}
        }
        if let Some(entry) = entry {
            ctx.counters.add(1, entry.size);
            super::files::count_change(&mut changes, before, &entry);
            result.entries.push(entry);
            continue;
        }
        let is_large = !item.dir && item.size >= large;
        if is_large {
            if let Some(pk) = cur.take() {
                result.packs.push(ctx.close_pack(pk)?);
            }
        }
        if cur.is_none() {
            let hint = if is_large {
                item.size + 4096
            } else {
                remaining_hint(i)
            };
            cur = Some(ctx.open_pack(idx, seq, hint)?);
            seq += 1;
        }
        let pk = cur
            .as_mut()
            .ok_or_else(|| Error::internal("no open pack"))?;
        let mut entry = blob::entry_of(item);
        entry.pack = Some(pk.id.clone());
        if item.dir {
            let placed = tarball::append_dir(&mut pk.builder, path, &header_meta(&entry))
                .map_err(|e| io_to_err(e, &pk.blob))?;
            entry.offset = placed.offset;
            entry.data_offset = placed.data_offset;
        } else {
            let name = std::str::from_utf8(&path.0)
                .map_err(|_| Error::internal("blob name is not UTF-8"))?;
            let mut now = item.clone();
            let mut gone = false;
            for attempt in 0..2 {
                ctx.stats.files_read.fetch_add(1, Ordering::Relaxed);
                let mut r = BlobReader {
                    ctx,
                    src,
                    name,
                    etag: &now.meta.etag,
                    // The listed version first; after a change, whatever is there now,
                    // judged by the ETag of every range.
                    if_match: attempt == 0,
                    size: now.size,
                    pos: 0,
                    buf: bytes::Bytes::new(),
                    md5: Md5::new(),
                    changed: false,
                    mixed: false,
                    error: None,
                };
                let e0 = blob::entry_of(&now);
                let (placed, read) = tarball::append_file(
                    &mut pk.builder,
                    path,
                    now.size,
                    &header_meta(&e0),
                    &mut r,
                )
                .map_err(|e| io_to_err(e, &pk.blob))?;
                if let Some(e) = r.error.take() {
                    return Err(e.context(format!("reading source blob {name}")));
                }
                let changed = r.changed || r.mixed || read.shrank || read.grew;
                let md5: [u8; 16] = r.md5.finalize().into();
                entry = blob::entry_of(&now);
                entry.pack = Some(pk.id.clone());
                entry.size = now.size;
                entry.sha256 = Some(hex::encode(read.sha256));
                entry.offset = placed.offset;
                entry.data_offset = placed.data_offset;
                if !changed {
                    if let Some(want) = now.meta.content_md5.as_deref() {
                        if crate::store::b64(&md5) != want {
                            tracing::warn!(
                                "{name}: the bytes read do not match the blob's Content-MD5; \
                                 stored as read and marked inconsistent"
                            );
                            entry.inconsistent = true;
                        }
                    }
                    break;
                }
                if attempt == 1 {
                    tracing::warn!("{name} kept changing while read; stored as inconsistent");
                    entry.inconsistent = true;
                    break;
                }
                tracing::info!("{name} changed while being read; reading it again");
                match ctx
                    .rt
                    .block_on(src.props(name))
                    .ctx("re-reading a changed blob")?
                {
                    Some(p) if p.tier != crate::store::Tier::Archive => now = refreshed(&now, p),
                    _ => {
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                result.problems.push(Problem {
                    path: path.clone(),
                    error: "deleted or archived while being read".into(),
                });
                continue;
            }
        }
        super::files::stored(
            ctx,
            &mut result,
            &mut changes,
            &mut cur,
            before,
            entry,
            is_large,
        )?;
    }
    ctx.stats
        .note_held(piece.blobs.len() + prev.len() + result.entries.len());
    let built = super::files::Built {
        result,
        changes,
        parent_packs,
        cur,
    };
    built.finish(ctx, piece, &prev[prev_at..])
}
