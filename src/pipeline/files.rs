//! Packing one partition of a filesystem source.
//!
//! Runs on a blocking worker thread. Each planned entry is stat'ed again (the plan is
//! metadata from the walk; the file may have changed or gone since), reused from the
//! incremental parent when unchanged, or read ([`extract::fs::read`]) straight into the
//! open pack's tar stream. Small files share packs of about `pack_size` raw bytes; a
//! file of half a pack or more gets a pack of its own. Unreadable files become problems
//! of the run, never a failed partition.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;

use super::commit::{self, PartResult};
use super::run::Ctx;
use crate::error::{Error, Result};
use crate::extract::config::FsSourceConfig;
use crate::extract::fs::read::{self, FileErr};
use crate::extract::fs::{self as xfs, Stat};
use crate::extract::{PlannedEntry, Problem};
use crate::manifest::{Entry, EntryKind, PathBytes};
use crate::pack::packer::io_to_err;
use crate::pack::tarball::{self, HeaderMeta};

/// Read, pack and store the `planned` entries of partition `idx`; write its part record.
///
/// # Errors
/// `Store` when packs or the part record cannot be written, `Cancelled` on a signal.
pub(super) fn run_partition(
    ctx: &Ctx,
    fs: &FsSourceConfig,
    planned: &[PlannedEntry],
    idx: usize,
) -> Result<PartResult> {
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
        if let Some(prev) = ctx
            .reuse
            .as_deref()
            .and_then(|m| read::unchanged(m, path, kind, &st, &abs))
        {
            ctx.counters.add(1, prev.size);
            result.entries.push(prev);
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
        ctx.counters.add(1, entry.size);
        if entry.kind == EntryKind::File {
            ctx.stats
                .bytes_read
                .fetch_add(entry.size, Ordering::Relaxed);
        }
        result.entries.push(entry);
        let full = cur
            .as_ref()
            .is_some_and(|pk| pk.builder.get_ref().raw_offset() >= pack_size);
        if is_large || full {
            if let Some(pk) = cur.take() {
                result.packs.push(ctx.close_pack(pk)?);
            }
        }
    }
    if let Some(pk) = cur.take() {
        result.packs.push(ctx.close_pack(pk)?);
    }
    // Durable partition result.
    let unreadable = result.problems.iter().map(|p| p.path.clone()).collect();
    commit::write_part_record(
        ctx,
        idx,
        &ctx.layout.part(&ctx.run_id, idx),
        &result,
        unreadable,
    )?;
    Ok(result)
}

fn header_meta(st: &Stat) -> HeaderMeta {
    HeaderMeta {
        mode: st.mode,
        mtime: st.mtime,
        uid: st.uid,
        gid: st.gid,
    }
}
