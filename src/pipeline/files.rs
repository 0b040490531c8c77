//! Packing one partition of a filesystem source.
//!
//! Runs on a blocking worker thread. Each planned entry is stat'ed again (the plan is
//! metadata from the walk; the file may have changed or gone since), reused from the
//! incremental parent when unchanged, or read ([`extract::fs::read`]) straight into the
//! open pack's tar stream. Small files share packs of about `pack_size` raw bytes; a
//! file of half a pack or more gets a pack of its own. Unreadable files become problems
//! of the run, never a failed partition.
//!
//! The parent is compared by merge join: the parent's entries in the partition's path
//! range `[lo, hi)` are read from the segments covering it (one or two, bounded by
//! `partitions.max_entries` each) and walked beside the planned entries. The partition's
//! entries become one manifest segment; an unchanged partition's segment is the
//! parent's, byte for byte, and is only referenced.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::commit::{self, PartResult};
use super::run::Ctx;
use super::upload::ChannelSink;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::extract::config::FsSourceConfig;
use crate::extract::fs::read::{self, FileErr};
use crate::extract::fs::{self as xfs, Stat};
use crate::extract::{Piece, Problem};
use crate::manifest::segment::{self, EntryReader, Guard, MAX_LISTED};
use crate::manifest::{Changes, Chunk, Entry, EntryKind, PathBytes};
use crate::pack::packer::{io_to_err, OpenPack};
use crate::pack::tarball::{self, HeaderMeta};

/// Read, pack and store the `planned` entries of partition `idx`; write its part record.
///
/// The parent snapshot's entries in `piece`'s range `[lo, hi)` (none without a parent):
/// what a partition merge-joins its planned entries against. Bounded by one partition.
///
/// # Errors
/// Store errors and damaged segments.
pub(super) fn parent_entries(ctx: &Ctx, piece: &Piece) -> Result<Vec<Entry>> {
    let Some(parent) = ctx.parent.as_deref() else {
        return Ok(Vec::new());
    };
    ctx.rt
        .block_on(
            EntryReader::new(&*ctx.packs.store, &ctx.layout, parent)
                .within(
                    piece.lo.as_ref().map(|p| p.0.clone()),
                    piece.hi.as_ref().map(|p| p.0.clone()),
                )
                .collect(),
        )
        .ctx("reading the parent snapshot's entries")
}

/// # Errors
/// `Store` when packs or the part record cannot be written, `Cancelled` on a signal.
pub(super) fn run_partition(ctx: &Ctx, fs: &FsSourceConfig, piece: &Piece) -> Result<PartResult> {
    let (planned, idx) = (&piece.entries, piece.idx);
    // The parent's entries in this partition's range, for reuse and for the changes.
    let prev = parent_entries(ctx, piece)?;
    let mut prev_at = 0usize;
    let mut changes = Changes::default();
    let mut parent_packs: BTreeSet<String> = BTreeSet::new();
    let pack_size = ctx.pipeline.upload.pack_size;
    let large = (pack_size / 2).max(1);
    let mut result = PartResult::default();
    let mut cur = None;
    let mut seq = 0usize;
    let remaining_hint = |from: usize| -> u64 {
        planned[from..]
            .iter()
            .map(|e| e.size + 1024)
            .sum::<u64>()
            .min(pack_size + (pack_size / 4))
    };
    for (i, pe) in planned.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        let path = &pe.path;
        let abs = xfs::abs(&fs.root, path);
        // Merge join with the parent: skip (count as deleted) what the walk no longer has.
        while prev.get(prev_at).is_some_and(|p| p.path < *path) {
            changes.deleted += 1;
            changes.deleted_bytes += prev[prev_at].size;
            prev_at += 1;
        }
        let before = prev.get(prev_at).filter(|p| p.path == *path);
        if before.is_some() {
            prev_at += 1;
        }
        let st = match std::fs::symlink_metadata(&abs) {
            Ok(m) => Stat::from_meta(&m),
            Err(e) => {
                result.problems.push(Problem {
                    path: path.clone(),
                    error: format!("cannot stat: {e}"),
                });
                continue;
            }
        };
        let Some(kind) = st.kind else { continue };
        if let Some(prev) = before.filter(|p| ctx.reuse && read::unchanged(p, kind, &st, &abs)) {
            ctx.counters.add(1, prev.size);
            changes.unchanged += 1;
            changes.unchanged_bytes += prev.size;
            parent_packs.extend(prev.packs().map(str::to_string));
            result.entries.push(prev.clone());
            continue;
        }
        if kind == EntryKind::File && st.size >= ctx.pipeline.chunking.threshold {
            let mut w = ChunkWriter {
                ctx,
                idx,
                cur: &mut cur,
                seq: &mut seq,
                packs: &mut result.packs,
                parent_packs: &mut parent_packs,
            };
            let entry = match w.store(path, &abs, before) {
                Ok(e) => e,
                Err(FileErr::Unreadable(msg)) => {
                    result.problems.push(Problem {
                        path: path.clone(),
                        error: msg,
                    });
                    continue;
                }
                Err(FileErr::Fatal(e)) => return Err(e),
            };
            ctx.counters.add(1, entry.size);
            ctx.stats
                .bytes_read
                .fetch_add(entry.size, Ordering::Relaxed);
            count_change(&mut changes, before, &entry);
            result.entries.push(entry);
            continue;
        }
        let is_large = kind == EntryKind::File && st.size >= large;
        if is_large {
            if let Some(pk) = cur.take() {
                result.packs.push(ctx.close_pack(pk)?);
            }
        }
        if cur.is_none() {
            let hint = if is_large {
                st.size + 4096
            } else {
                remaining_hint(i)
            };
            cur = Some(ctx.open_pack(idx, seq, hint)?);
            seq += 1;
        }
        let pk = cur
            .as_mut()
            .ok_or_else(|| Error::internal("no open pack"))?;
        let meta = header_meta(&st);
        let mut entry = Entry {
            path: path.clone(),
            kind,
            size: 0,
            mode: st.mode,
            mtime: st.mtime,
            mtime_nsec: st.mtime_nsec,
            uid: st.uid,
            gid: st.gid,
            sha256: None,
            target: None,
            pack: Some(pk.id.clone()),
            offset: 0,
            data_offset: 0,
            inconsistent: false,
            ino: Some(st.ino),
            ctime: Some(st.ctime),
            chunks: Vec::new(),
            blob: None,
        };
        match kind {
            EntryKind::Dir => {
                let placed = tarball::append_dir(&mut pk.builder, path, &meta)
                    .map_err(|e| io_to_err(e, &pk.blob))?;
                entry.offset = placed.offset;
                entry.data_offset = placed.data_offset;
            }
            EntryKind::Symlink => {
                let target = match std::fs::read_link(&abs) {
                    Ok(t) => PathBytes(t.as_os_str().as_bytes().to_vec()),
                    Err(e) => {
                        result.problems.push(Problem {
                            path: path.clone(),
                            error: format!("cannot read link: {e}"),
                        });
                        continue;
                    }
                };
                let placed = tarball::append_symlink(&mut pk.builder, path, &target, &meta)
                    .map_err(|e| io_to_err(e, &pk.blob))?;
                entry.offset = placed.offset;
                entry.data_offset = placed.data_offset;
                entry.target = Some(target);
            }
            EntryKind::File => {
                // Append one file, re-reading it once if it changed while being read.
                let stored = read::read_file(&abs, path, &ctx.stats.files_read, |st, src| {
                    let (placed, read) =
                        tarball::append_file(&mut pk.builder, path, st.size, &header_meta(st), src)
                            .map_err(|e| io_to_err(e, &pk.blob))?;
                    Ok(((placed, read.sha256), read.shrank || read.grew))
                });
                match stored {
                    Ok(f) => {
                        let (placed, sha256) = f.written;
                        entry.size = f.stat.size;
                        entry.mode = f.stat.mode;
                        entry.mtime = f.stat.mtime;
                        entry.mtime_nsec = f.stat.mtime_nsec;
                        entry.sha256 = Some(hex::encode(sha256));
                        entry.offset = placed.offset;
                        entry.data_offset = placed.data_offset;
                        entry.inconsistent = f.inconsistent;
                    }
                    Err(FileErr::Unreadable(msg)) => {
                        result.problems.push(Problem {
                            path: path.clone(),
                            error: msg,
                        });
                        continue;
                    }
                    Err(FileErr::Fatal(e)) => return Err(e),
                }
            }
        }
        stored(
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
        .note_held(planned.len() + prev.len() + result.entries.len());
    let built = Built {
        result,
        changes,
        parent_packs,
        cur,
    };
    built.finish(ctx, piece, &prev[prev_at..])
}

/// After an entry of a filesystem or blob-container partition was written by this
/// attempt: count it and its change against the parent, and close the open pack when
/// the entry was large or the pack is full.
pub(super) fn stored(
    ctx: &Ctx,
    result: &mut PartResult,
    changes: &mut Changes,
    cur: &mut Option<OpenPack<ChannelSink>>,
    before: Option<&Entry>,
    entry: Entry,
    is_large: bool,
) -> Result<()> {
    ctx.counters.add(1, entry.size);
    if entry.kind == EntryKind::File {
        ctx.stats
            .bytes_read
            .fetch_add(entry.size, Ordering::Relaxed);
    }
    count_change(changes, before, &entry);
    result.entries.push(entry);
    let full = cur
        .as_ref()
        .is_some_and(|pk| pk.builder.get_ref().raw_offset() >= ctx.pipeline.upload.pack_size);
    if is_large || full {
        if let Some(pk) = cur.take() {
            result.packs.push(ctx.close_pack(pk)?);
        }
    }
    Ok(())
}

/// What a filesystem or blob-container partition built, entry by entry.
pub(super) struct Built {
    pub(super) result: PartResult,
    pub(super) changes: Changes,
    pub(super) parent_packs: BTreeSet<String>,
    pub(super) cur: Option<OpenPack<ChannelSink>>,
}

impl Built {
    /// After the partition's last entry: close the open pack, count the parent's entries
    /// past the last one (`rest`) as deleted, store the segment and then the part record
    /// (the durable partition result).
    pub(super) fn finish(self, ctx: &Ctx, piece: &Piece, rest: &[Entry]) -> Result<PartResult> {
        let Built {
            mut result,
            mut changes,
            parent_packs,
            mut cur,
        } = self;
        if let Some(pk) = cur.take() {
            result.packs.push(ctx.close_pack(pk)?);
        }
        for p in rest {
            changes.deleted += 1;
            changes.deleted_bytes += p.size;
        }
        result.problems.extend(piece.problems.iter().cloned());
        result.inconsistent = result
            .entries
            .iter()
            .filter(|e| e.inconsistent)
            .take(MAX_LISTED)
            .map(|e| e.path.clone())
            .collect();
        result.changes = ctx.parent.is_some().then_some(changes);
        result.parent_packs = parent_packs.into_iter().collect();
        result.segment = store_segment(ctx, &result)?;
        result.entries = Vec::new();
        let unreadable = result.problems.iter().map(|p| p.path.clone()).collect();
        commit::write_part_record(
            ctx,
            piece.idx,
            &ctx.layout.part_of(&ctx.run_id, piece.idx, &piece.digest),
            &result,
            unreadable,
        )?;
        Ok(result)
    }
}

/// Check the partition's entries as a reader will (every field, order, nothing below a
/// link) and store them as a segment, unless the store already holds one with the same
/// content (an unchanged partition).
pub(super) fn store_segment(ctx: &Ctx, r: &PartResult) -> Result<Option<segment::SegmentRef>> {
    if r.entries.is_empty() {
        return Ok(None);
    }
    let mut packs: HashMap<&str, &crate::manifest::PackRecord> =
        r.packs.iter().map(|p| (p.id.as_str(), p)).collect();
    if let Some(parent) = ctx.parent.as_deref() {
        for p in &parent.packs {
            packs.entry(p.id.as_str()).or_insert(p);
        }
    }
    let mut guard = Guard::default();
    for e in &r.entries {
        let bad = |why: String| {
            Error::internal(format!(
                "entry {:?} this run built does not pass validation: {why}",
                e.path.display()
            ))
        };
        crate::manifest::check::check_entry_at(e, &packs)
            .map_err(|(f, w)| bad(format!("{f}: {w}")))?;
        guard.next(e).map_err(bad)?;
    }
    let (body, sref) = segment::encode(&r.entries)?;
    let name = ctx.layout.full(&sref.blob);
    let body = ctx.layout.seal(&name, body)?;
    let store = &ctx.packs.store;
    if ctx.rt.block_on(store.head(&name))?.is_none() {
        match ctx.rt.block_on(store.put(&name, Bytes::from(body), true)) {
            Ok(_) => ctx
                .stats
                .segments_written
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            // Another partition (or run) stored the same content first.
            Err(e) if e.kind() == ErrorKind::Conflict => 0,
            Err(e) => return Err(e.context(format!("writing segment {name}"))),
        };
    } else {
        ctx.stats
            .segments_reused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(Some(sref))
}

/// Count `entry` (read this run) as unchanged, changed or new against the parent's
/// (directory and blob-container partitions alike).
pub(super) fn count_change(changes: &mut Changes, before: Option<&Entry>, entry: &Entry) {
    match before {
        Some(p) if p.same_as(entry) => {
            changes.unchanged += 1;
            changes.unchanged_bytes += entry.size;
        }
        Some(_) => {
            changes.changed += 1;
            changes.changed_bytes += entry.size;
        }
        None => {
            changes.new += 1;
            changes.new_bytes += entry.size;
        }
    }
}

/// Stores one large file as content-defined chunks into the partition's packs.
///
/// The file is cut by FastCDC (2020) as it is read; each chunk is hashed, and one the
/// parent's entry for the same path already holds (or that came earlier in this file)
/// is only referenced. Every other chunk becomes a tar entry `<path>.chunks/<sha256>` of
/// the open pack. Memory: the chunker's buffer (`max` bytes) and one file's chunk list
/// (the parent's and the new one), never the store's.
/// The parent snapshot's chunks by SHA-256, so a big file whose parent entry (same path)
/// does not hold a chunk — a renamed or copied file, a dump named by its date — still
/// points at the copy the parent stores instead of storing it again. Built once per run
/// from the parent's segments that hold chunked files; bounded by `[chunking] index`
/// (about 64 bytes a chunk): when the parent holds more, the rest is left out (counted),
/// and files that only they would match store their chunks again.
pub(super) struct ChunkIndex {
    packs: Vec<String>,
    by_sha: HashMap<[u8; 32], ChunkLoc>,
}

/// Where an indexed chunk is: pack (index into `packs`), record offset, header length,
/// size (chunks are at most 16 MiB).
#[derive(Clone, Copy)]
struct ChunkLoc {
    pack: u32,
    offset: u64,
    head: u32,
    size: u32,
}

impl ChunkIndex {
    /// Index the chunks of `parent` (read through its moved records) within `budget`
    /// bytes; `None` when the parent has no chunked file or the budget is 0.
    ///
    /// # Errors
    /// Store errors and damaged segments.
    pub(super) async fn build(
        store: &crate::store::Store,
        layout: &crate::manifest::layout::Layout,
        parent: &crate::manifest::Manifest,
        budget: usize,
        stats: &super::report::Stats,
    ) -> Result<Option<ChunkIndex>> {
        let cap = budget / crate::extract::config::ChunkingConfig::INDEX_BYTES_PER_CHUNK;
        if cap == 0 || !parent.segments.iter().any(|s| s.chunked > 0) {
            return Ok(None);
        }
        let mut ix = ChunkIndex {
            packs: Vec::new(),
            by_sha: HashMap::new(),
        };
        let mut pack_ix: HashMap<String, u32> = HashMap::new();
        let mut left_out = 0u64;
        let mut reader = EntryReader::new(&**store, layout, parent);
        for (i, sref) in parent.segments.iter().enumerate() {
            if sref.chunked == 0 {
                continue;
            }
            for e in reader.read_segment(i, false).await? {
                for c in &e.chunks {
                    let Some(sha) = hex::decode(&c.sha256)
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    else {
                        continue;
                    };
                    if ix.by_sha.contains_key(&sha) {
                        continue;
                    }
                    let (Ok(head), Ok(size)) = (
                        u32::try_from(c.data_offset.saturating_sub(c.offset)),
                        u32::try_from(c.size),
                    ) else {
                        continue;
                    };
                    if ix.by_sha.len() >= cap {
                        left_out += 1;
                        continue;
                    }
                    let next = ix.packs.len() as u32;
                    let pack = *pack_ix.entry(c.pack.clone()).or_insert_with(|| {
                        ix.packs.push(c.pack.clone());
                        next
                    });
                    ix.by_sha.insert(
                        sha,
                        ChunkLoc {
                            pack,
                            offset: c.offset,
                            head,
                            size,
                        },
                    );
                }
            }
        }
        if let Ok(mut g) = stats.chunk_index.lock() {
            *g = (ix.by_sha.len() as u64, left_out);
        }
        Ok(Some(ix))
    }

    /// The parent's chunk with this SHA-256 (hex), if indexed.
    fn get(&self, sha_hex: &str) -> Option<Chunk> {
        let key = <[u8; 32]>::try_from(hex::decode(sha_hex).ok()?).ok()?;
        let l = self.by_sha.get(&key)?;
        Some(Chunk {
            sha256: sha_hex.to_string(),
            size: u64::from(l.size),
            pack: self.packs.get(l.pack as usize)?.clone(),
            offset: l.offset,
            data_offset: l.offset + u64::from(l.head),
        })
    }
}

struct ChunkWriter<'a> {
    ctx: &'a Ctx,
    idx: usize,
    cur: &'a mut Option<OpenPack<ChannelSink>>,
    seq: &'a mut usize,
    packs: &'a mut Vec<crate::manifest::PackRecord>,
    parent_packs: &'a mut BTreeSet<String>,
}

impl ChunkWriter<'_> {
    fn store(
        &mut self,
        path: &PathBytes,
        abs: &std::path::Path,
        before: Option<&Entry>,
    ) -> std::result::Result<Entry, FileErr> {
        let ctx = self.ctx;
        let cfg = ctx.pipeline.chunking;
        let pack_size = ctx.pipeline.upload.pack_size;
        // The chunks already stored that this file may point at, by SHA-256: the
        // parent's chunks of the same path, then this file's own as they are written.
        // A full backup (`reuse` off) stores every chunk anew: it must not depend on
        // the parent's packs.
        let mut known: HashMap<String, Chunk> = before
            .filter(|p| ctx.reuse && p.kind == EntryKind::File)
            .map(|p| {
                p.chunks
                    .iter()
                    .map(|c| (c.sha256.clone(), c.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let stats = &ctx.stats;
        let stored = read::read_file(abs, path, &stats.files_read, |st, src| {
            let mut file_h = Sha256::new();
            let mut chunks: Vec<Chunk> = Vec::new();
            let mut total = 0u64;
            let meta = header_meta(st);
            let cdc = fastcdc::v2020::StreamCDC::new(
                std::io::Read::take(src, st.size),
                cfg.min,
                cfg.avg,
                cfg.max,
            );
            for c in cdc {
                if ctx.cancel.is_cancelled() {
                    return Err(Error::cancelled());
                }
                let c =
                    c.map_err(|e| Error::internal(format!("chunking {}: {e}", path.display())))?;
                let len = c.data.len() as u64;
                file_h.update(&c.data);
                total += len;
                let sha = hex::encode(Sha256::digest(&c.data));
                if let Some(k) = known.get(&sha) {
                    stats.chunks_reused.fetch_add(1, Ordering::Relaxed);
                    stats.chunk_bytes_reused.fetch_add(len, Ordering::Relaxed);
                    chunks.push(k.clone());
                    continue;
                }
                // Another path of the parent holds it (a renamed or copied file).
                if let Some(k) = ctx
                    .chunk_index
                    .as_deref()
                    .filter(|_| ctx.reuse)
                    .and_then(|ix| ix.get(&sha))
                    .filter(|k| k.size == len)
                {
                    stats.chunks_reused.fetch_add(1, Ordering::Relaxed);
                    stats.chunk_bytes_reused.fetch_add(len, Ordering::Relaxed);
                    stats
                        .chunks_reused_elsewhere
                        .fetch_add(1, Ordering::Relaxed);
                    known.insert(sha, k.clone());
                    chunks.push(k);
                    continue;
                }
                if self.cur.is_none() {
                    let hint = (st.size - total + len + 4096).min(pack_size + pack_size / 4);
                    *self.cur = Some(ctx.open_pack(self.idx, *self.seq, hint)?);
                    *self.seq += 1;
                }
                let pk = self
                    .cur
                    .as_mut()
                    .ok_or_else(|| Error::internal("no open pack"))?;
                let name = crate::manifest::chunk_tar_name(path, &sha);
                let placed = tarball::append_bytes(&mut pk.builder, &name, &c.data, &meta)
                    .map_err(|e| io_to_err(e, &pk.blob))?;
                let chunk = Chunk {
                    sha256: sha.clone(),
                    size: len,
                    pack: pk.id.clone(),
                    offset: placed.offset,
                    data_offset: placed.data_offset,
                };
                stats.chunks_new.fetch_add(1, Ordering::Relaxed);
                stats.chunk_bytes_new.fetch_add(len, Ordering::Relaxed);
                known.insert(sha, chunk.clone());
                chunks.push(chunk);
                if pk.builder.get_ref().raw_offset() >= pack_size {
                    if let Some(pk) = self.cur.take() {
                        self.packs.push(ctx.close_pack(pk)?);
                    }
                }
            }
            Ok(((chunks, file_h.finalize()), total != st.size))
        })?;
        stats.chunked_files.fetch_add(1, Ordering::Relaxed);
        let (chunks, sha) = stored.written;
        // Packs of earlier snapshots this file points into go on the manifest's list.
        let own: BTreeSet<&str> = self.packs.iter().map(|p| p.id.as_str()).collect();
        let open = self.cur.as_ref().map(|p| p.id.as_str());
        for c in &chunks {
            if !own.contains(c.pack.as_str()) && open != Some(c.pack.as_str()) {
                self.parent_packs.insert(c.pack.clone());
            }
        }
        let f = stored.stat;
        Ok(Entry {
            blob: None,
            path: path.clone(),
            kind: EntryKind::File,
            size: f.size,
            mode: f.mode,
            mtime: f.mtime,
            mtime_nsec: f.mtime_nsec,
            uid: f.uid,
            gid: f.gid,
            sha256: Some(hex::encode(sha)),
            target: None,
            pack: None,
            offset: 0,
            data_offset: 0,
            inconsistent: stored.inconsistent,
            ino: Some(f.ino),
            ctime: Some(f.ctime),
            chunks,
        })
    }
}

fn header_meta(st: &Stat) -> HeaderMeta {
    HeaderMeta {
        mode: st.mode,
        mtime: st.mtime,
        uid: st.uid,
        gid: st.gid,
    }
}
