//! Restore into a blob container (`restore --to-container TARGET`).
//!
//! Every selected file entry becomes a block blob named by its path (under the
//! destination's root prefix): its bytes streamed out of the pack a block at a time
//! ([`BLOCK`], each staged with its MD5), then committed with the content type, user
//! metadata and index tags the blob source recorded, and a Content-MD5 computed from the
//! restored bytes. A file from a filesystem snapshot restores the same way, with no
//! properties. Directory entries and symlinks have no blob form and are skipped (counted
//! in the report as `dirs`/`symlinks` never written).
//!
//! The guarantees are the directory restore's:
//! - **create-only** unless `--overwrite`: before anything is written, the selection is
//!   merge-joined with a listing of the destination (both in name order, so memory holds
//!   a segment of entries and a listing page) and any name that exists refuses the
//!   restore; each commit also sends `If-None-Match: *`, so a blob created meanwhile is
//!   never replaced;
//! - **checked**: a blob is committed only when the SHA-256 of the bytes read equals the
//!   manifest's; otherwise it is not committed (its staged blocks expire) and is listed
//!   as damaged, and the restore goes on.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use md5::Md5;
use sha2::{Digest, Sha256};

use super::files::DamageLog;
use super::{RestoreOptions, RestoreReport, Selection};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::layout::Layout;
use crate::manifest::segment::EntryReader;
use crate::manifest::{Entry, EntryKind, Manifest, PackRecord};
use crate::pack::read::PackCursor;
use crate::store::azure::source::RestoredBlob;
use crate::store::azure::AzureStore;
use crate::store::{BlobStore, Store};
use crate::support::progress::Counters;

/// Bytes staged per block of a restored blob (one buffer per pack worker).
pub const BLOCK: usize = 4 << 20;

/// Names shown at most when existing blobs refuse a restore.
const SHOWN: usize = 5;

/// Restore the entries of `m` selected by `opts.paths` into the container `dest`
/// (`opts.to` is not used). Damaged files are skipped and listed (check
/// [`RestoreReport::ok`]).
///
/// # Errors
/// `Refused` when a blob exists (without `overwrite`) or a path cannot be a blob name;
/// `NotFound` when nothing matches; `Archived` for an archived pack; store errors.
pub async fn restore_to_container(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    dest: Arc<AzureStore>,
    opts: &RestoreOptions,
    counters: Option<Arc<Counters>>,
) -> Result<RestoreReport> {
    let started_at = chrono::Utc::now();
    let counters = counters.unwrap_or_default();
    let sel = Selection::new(&opts.paths)?;
    let mut reader = EntryReader::new(&**store, layout, m);
    let batches = if m.segments.is_empty() {
        1
    } else {
        m.segments.len()
    };
    // Pass 1: names, counts, packs.
    let (mut selected, mut total) = (0u64, 0u64);
    let mut packs = std::collections::BTreeSet::new();
    let mut inconsistent = Vec::new();
    for i in 0..batches {
        for e in batch(&mut reader, m, i, true).await? {
            if !sel.takes(&e) || e.kind != EntryKind::File {
                continue;
            }
            blob_name(&e)?;
            selected += 1;
            total += e.size;
            if e.size > 0 {
                packs.insert(e.pack.clone().unwrap_or_default());
            }
            if e.inconsistent && inconsistent.len() < crate::manifest::segment::MAX_LISTED {
                inconsistent.push(e.path.display());
            }
        }
    }
    if selected == 0 && !opts.paths.is_empty() {
        return Err(Error::not_found(format!(
            "no file of snapshot {} matches {}",
            m.header.snapshot,
            opts.paths.join(", ")
        )));
    }
    super::archive::refuse_archived(store, layout, m, packs.iter()).await?;
    drop(packs);
    // Pass 2: nothing selected exists in the destination yet.
    if !opts.overwrite {
        let mut listing = Listing::new(&dest);
        let mut clashes = Vec::new();
        let mut n = 0usize;
        for i in 0..batches {
            for e in batch(&mut reader, m, i, false).await? {
                if !sel.takes(&e) || e.kind != EntryKind::File {
                    continue;
                }
                let name = blob_name(&e)?;
                if listing.contains(name).await? {
                    n += 1;
                    if clashes.len() < SHOWN {
                        clashes.push(name.to_string());
                    }
                }
            }
        }
        if n > 0 {
            return Err(Error::refused(format!(
                "{n} blob(s) already exist in {} ({}{}); nothing was written (restore with \
                 --overwrite to replace them, or into an empty container)",
                dest.describe(),
                clashes.join(", "),
                if n > clashes.len() { ", …" } else { "" }
            )));
        }
    }
    counters.set_total(selected, total);
    let mut report = RestoreReport::started(
        m,
        std::path::Path::new(&dest.describe()),
        inconsistent,
        started_at,
    );
    let damaged = Arc::new(DamageLog::default());
    // Pass 3: write, a segment at a time, packs in parallel.
    for i in 0..batches {
        let entries: Vec<Entry> = batch(&mut reader, m, i, false)
            .await?
            .into_iter()
            .filter(|e| sel.takes(e))
            .collect();
        report.max_entries_held = report.max_entries_held.max(entries.len());
        let mut by_pack: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for e in entries {
            match e.kind {
                EntryKind::File => by_pack
                    .entry(e.pack.clone().unwrap_or_default())
                    .or_default()
                    .push(e),
                EntryKind::Dir => {}
                EntryKind::Symlink => {
                    tracing::warn!(
                        "{}: a symlink has no blob form; not restored into the container",
                        e.path.display()
                    );
                }
            }
        }
        let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (pid, files) in by_pack {
            let pack = m.pack(&pid).cloned();
            let (store, layout, dest, sem, counters, damaged) = (
                store.clone(),
                layout.clone(),
                dest.clone(),
                sem.clone(),
                counters.clone(),
                damaged.clone(),
            );
            let overwrite = opts.overwrite;
            let rt = tokio::runtime::Handle::current();
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await.map_err(|_| Error::cancelled())?;
                tokio::task::spawn_blocking(move || {
                    restore_pack(
                        &*store,
                        rt,
                        &layout,
                        pack.as_ref(),
                        &files,
                        &dest,
                        overwrite,
                        &counters,
                        &damaged,
                    )
                })
                .await
                .map_err(|e| Error::internal(format!("restore worker: {e}")))?
            });
        }
        let mut first_err = None;
        while let Some(j) = tasks.join_next().await {
            match j.map_err(|e| Error::internal(format!("restore task: {e}")))? {
                Ok((files, bytes, fetched)) => {
                    report.files += files;
                    report.bytes += bytes;
                    report.bytes_fetched += fetched;
                    report.packs_read += usize::from(fetched > 0);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    (report.damaged, report.damaged_total) = damaged.take();
    report.finished_at = chrono::Utc::now();
    Ok(report)
}

/// Entries of batch `i`: segment `i` of a format-2 snapshot, or all entries of a
/// format-1 one (its only batch).
async fn batch(
    reader: &mut EntryReader<'_>,
    m: &Manifest,
    i: usize,
    guard: bool,
) -> Result<Vec<Entry>> {
    if m.segments.is_empty() {
        Ok(m.entries.clone())
    } else {
        reader.read_segment(i, guard).await
    }
}

/// The blob name of a file entry (its path, which must be UTF-8).
fn blob_name(e: &Entry) -> Result<&str> {
    std::str::from_utf8(&e.path.0).map_err(|_| {
        Error::refused(format!(
            "{}: the path is not UTF-8, so it cannot be a blob name; restore it into a \
             directory instead",
            e.path.display()
        ))
    })
}

/// Names of the destination in order, a page at a time, for a merge join.
struct Listing<'a> {
    dest: &'a AzureStore,
    page: Vec<String>,
    at: usize,
    next: Option<String>,
    done: bool,
}

impl<'a> Listing<'a> {
    fn new(dest: &'a AzureStore) -> Self {
        Listing {
            dest,
            page: Vec::new(),
            at: 0,
            next: None,
            done: false,
        }
    }

    /// Whether `name` exists; names must be asked in increasing order.
    async fn contains(&mut self, name: &str) -> Result<bool> {
        loop {
            while let Some(have) = self.page.get(self.at) {
                match have.as_bytes().cmp(name.as_bytes()) {
                    std::cmp::Ordering::Less => self.at += 1,
                    std::cmp::Ordering::Equal => return Ok(true),
                    std::cmp::Ordering::Greater => return Ok(false),
                }
            }
            if self.done {
                return Ok(false);
            }
            let p = self.dest.list("", self.next.take(), 5000).await?;
            self.page = p.items.into_iter().map(|i| i.name).collect();
            self.at = 0;
            self.next = p.next;
            self.done = self.next.is_none();
        }
    }
}

/// Restore the `files` of one pack as blobs: (files, bytes, compressed bytes fetched).
#[allow(clippy::too_many_arguments)]
fn restore_pack(
    store: &dyn BlobStore,
    rt: tokio::runtime::Handle,
    layout: &Layout,
    pack: Option<&PackRecord>,
    files: &[Entry],
    dest: &AzureStore,
    overwrite: bool,
    counters: &Counters,
    damaged: &DamageLog,
) -> Result<(u64, u64, u64)> {
    let mut sorted: Vec<&Entry> = files.iter().collect();
    sorted.sort_by_key(|e| e.data_offset);
    let mut cursor = pack.map(|p| {
        PackCursor::new(store, rt.clone(), layout.full(&p.blob), p).with_key(layout.key().cloned())
    });
    let (mut n, mut bytes) = (0u64, 0u64);
    for (k, e) in sorted.iter().enumerate() {
        let name = blob_name(e)?;
        let mut sha = Sha256::new();
        let mut md5 = Md5::new();
        let mut ids: Vec<String> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(BLOCK.min(e.size as usize));
        let stage = |buf: &mut Vec<u8>, ids: &mut Vec<String>| -> Result<()> {
            let data = Bytes::from(std::mem::take(buf));
            let id = crate::store::b64(format!("blk-{:012}", ids.len()).as_bytes());
            rt.block_on(dest.stage_block(name, &id, data.clone(), crate::store::md5(&data)))?;
            ids.push(id);
            Ok(())
        };
        let mut read_failed = false;
        let res = (|| -> Result<()> {
            if e.size > 0 {
                let cur = cursor
                    .as_mut()
                    .ok_or_else(|| Error::integrity(format!("{}: no pack", e.path.display())))?;
                let hint = sorted
                    .get(k + 1)
                    .map(|n| n.data_offset + n.size)
                    .unwrap_or(0);
                let mut write_err = None;
                cur.read(e.data_offset..e.data_offset + e.size, hint, &mut |b| {
                    sha.update(b);
                    md5.update(b);
                    let mut rest = b;
                    while !rest.is_empty() {
                        let take = (BLOCK - buf.len()).min(rest.len());
                        buf.extend_from_slice(&rest[..take]);
                        rest = &rest[take..];
                        if buf.len() == BLOCK {
                            if let Err(err) = stage(&mut buf, &mut ids) {
                                write_err = Some(err);
                                return Err(Error::new(ErrorKind::Store, "staging failed"));
                            }
                        }
                    }
                    Ok(())
                })
                .map_err(|err| match write_err.take() {
                    Some(w) => w,
                    None => {
                        read_failed = true;
                        err
                    }
                })?;
                if !buf.is_empty() {
                    stage(&mut buf, &mut ids)?;
                }
            }
            let got = hex::encode(sha.clone().finalize());
            if Some(got.as_str()) != e.sha256.as_deref() {
                read_failed = true;
                return Err(Error::integrity(format!(
                    "{}: restored data has SHA-256 {got}, the manifest says {} (pack {}); the \
                     blob was not committed",
                    e.path.display(),
                    e.sha256.as_deref().unwrap_or("(none)"),
                    e.pack.as_deref().unwrap_or("?")
                )));
            }
            let meta = e.blob.as_deref();
            let opts = RestoredBlob {
                content_type: meta.and_then(|b| b.content_type.clone()),
                content_md5: Some(md5.clone().finalize().into()),
                metadata: meta.map(|b| b.metadata.clone()).unwrap_or_default(),
                tags: meta.map(|b| b.tags.clone()).unwrap_or_default(),
                overwrite,
            };
            rt.block_on(dest.commit_restored(name, &ids, &opts))
        })();
        counters.add(1, e.size);
        match res {
            Ok(()) => {
                n += 1;
                bytes += e.size;
            }
            Err(err)
                if read_failed
                    && matches!(err.kind(), ErrorKind::Integrity | ErrorKind::NotFound) =>
            {
                damaged.add(e, &err);
            }
            Err(err) => return Err(err.context(format!("restoring blob {name}"))),
        }
    }
    Ok((n, bytes, cursor.map_or(0, |c| c.fetched)))
}
