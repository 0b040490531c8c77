//! Verification: does the store still hold exactly what the manifest says?
//!
//! Three levels, each including the one before:
//!
//! * **metadata** — every pack exists, has the recorded size and Content-MD5, and its
//!   committed block list equals the recorded block table;
//! * **sample** — a seeded fraction of blocks is re-read and MD5-compared, and a seeded
//!   fraction of files is read back through its frames and SHA-256-compared; at least
//!   one block and one file of every pack, so a small snapshot is never "verified" by
//!   reading nothing;
//! * **full** — every pack is streamed block by block (every block MD5-checked) and
//!   decompressed, and every file's SHA-256 is checked.
//!
//! A mismatch names the pack, the block and the paths it affects. The report is stored at
//! `verify/<snapshot>/<time>.json` and decides the exit code. Packs in the Archive tier
//! get the metadata checks only, and the report says so.

pub mod config;

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use self::config::VerifyMode;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::layout::Layout;
use crate::manifest::{Entry, EntryKind, Manifest, PackRecord};
use crate::pack::read::{BlockStream, FrameReader, PackCursor};
use crate::store::config::UploadConfig;
use crate::store::{md5, md5_from_b64, Store, Tier};
use crate::support::progress::Counters;

/// One thing that did not match.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    /// What kind of check failed (`missing-pack`, `size`, `content-md5`, `block-list`,
    /// `block-md5`, `entry-sha256`, `decompress`).
    pub check: String,
    /// Pack id.
    pub pack: String,
    /// Pack blob name.
    pub blob: String,
    /// Block index, for block checks.
    pub block: Option<usize>,
    /// Block id, for block checks.
    pub block_id: Option<String>,
    /// Human detail.
    pub detail: String,
    /// Paths whose data is affected (first 100).
    pub paths: Vec<String>,
}

/// A verification report.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Snapshot verified.
    pub snapshot: String,
    /// Mode: metadata, sample or full.
    pub mode: String,
    /// Sample fraction (sample mode).
    pub fraction: Option<f64>,
    /// Seed used for sampling (re-run with it to check the same blocks).
    pub seed: u64,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// Packs checked.
    pub packs: usize,
    /// Blocks re-read and MD5-compared.
    pub blocks_checked: u64,
    /// Files whose SHA-256 was recomputed.
    pub entries_checked: u64,
    /// Compressed bytes downloaded.
    pub bytes_read: u64,
    /// Packs in Archive whose data could not be read (metadata checked only).
    pub archived_packs_skipped: usize,
    /// What did not match.
    pub mismatches: Vec<Mismatch>,
    /// Where the report was stored.
    pub stored_as: Option<String>,
}

impl VerifyReport {
    /// True when nothing mismatched.
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// A deterministic sampling decision for `(seed, key, index)` with probability `f`.
fn sampled(seed: u64, key: &str, index: u64, f: f64) -> bool {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(key.as_bytes());
    h.update(index.to_le_bytes());
    let d = h.finalize();
    let x = u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]));
    (x as f64 / u64::MAX as f64) < f
}

/// The index in `0..n` the seed ranks first (used so a sample is never empty).
fn first_pick(seed: u64, key: &str, n: usize) -> usize {
    (0..n)
        .min_by_key(|i| {
            let mut h = Sha256::new();
            h.update(seed.to_le_bytes());
            h.update(key.as_bytes());
            h.update((*i as u64).to_le_bytes());
            h.finalize()[..8].to_vec()
        })
        .unwrap_or(0)
}

/// Paths of `pack` whose tar records intersect uncompressed `raw`.
fn paths_in(entries: &[&Entry], raw: std::ops::Range<u64>) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.offset < raw.end && e.data_offset + e.size.max(1) > raw.start)
        .take(100)
        .map(|e| e.path.display())
        .collect()
}

/// Paths affected by compressed block `i` of `p`.
fn block_paths(p: &PackRecord, entries: &[&Entry], i: usize) -> Vec<String> {
    if p.frames.is_empty() {
        return vec![];
    }
    let r = p.block_range(i);
    let fa = p.frames.iter().rposition(|f| f.1 <= r.start).unwrap_or(0);
    let fb = p
        .frames
        .iter()
        .rposition(|f| f.1 < r.end)
        .unwrap_or(fa)
        .max(fa);
    paths_in(entries, p.frames_raw_range(fa, fb))
}

fn mismatch(p: &PackRecord, blob: &str, check: &str, detail: String) -> Mismatch {
    Mismatch {
        check: check.into(),
        pack: p.id.clone(),
        blob: blob.into(),
        block: None,
        block_id: None,
        detail,
        paths: vec![],
    }
}

/// Verify snapshot `m` at `mode`; store the report next to the snapshot.
///
/// # Errors
/// Store failures that prevent checking (not mismatches: those go in the report).
pub async fn verify(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    mode: VerifyMode,
    seed: Option<u64>,
    upload: &UploadConfig,
    counters: Option<Arc<Counters>>,
) -> Result<VerifyReport> {
    let started_at = Utc::now();
    let seed = seed.unwrap_or_else(|| {
        u64::from_str_radix(&crate::support::ids::random_hex(8), 16).unwrap_or(42)
    });
    let counters = counters.unwrap_or_default();
    let data_bytes: u64 = match mode {
        VerifyMode::Metadata => 0,
        _ => m.packs.iter().map(|p| p.size).sum(),
    };
    counters.set_total(m.packs.len() as u64, data_bytes);
    let m = Arc::new(m.clone());
    let sem = Arc::new(tokio::sync::Semaphore::new(upload.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for pi in 0..m.packs.len() {
        let (store, m, sem, layout, counters) = (
            store.clone(),
            m.clone(),
            sem.clone(),
            layout.clone(),
            counters.clone(),
        );
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|_| Error::cancelled())?;
            verify_pack(store, layout, m, pi, mode, seed, counters).await
        });
    }
    let mut report = VerifyReport {
        snapshot: m.header.snapshot.clone(),
        mode: mode.name().into(),
        fraction: match mode {
            VerifyMode::Sample(f) => Some(f),
            _ => None,
        },
        seed,
        started_at,
        finished_at: started_at,
        packs: m.packs.len(),
        blocks_checked: 0,
        entries_checked: 0,
        bytes_read: 0,
        archived_packs_skipped: 0,
        mismatches: vec![],
        stored_as: None,
    };
    while let Some(j) = tasks.join_next().await {
        let r = j.map_err(|e| Error::internal(format!("verify task: {e}")))??;
        report.blocks_checked += r.blocks;
        report.entries_checked += r.entries;
        report.bytes_read += r.bytes;
        report.archived_packs_skipped += usize::from(r.archived);
        report.mismatches.extend(r.mismatches);
    }
    // Entries pointing at packs the manifest does not list are a manifest defect.
    for e in &m.entries {
        if let Some(p) = &e.pack {
            if m.pack(p).is_none() {
                report.mismatches.push(Mismatch {
                    check: "missing-pack".into(),
                    pack: p.clone(),
                    blob: String::new(),
                    block: None,
                    block_id: None,
                    detail: "entry refers to a pack the manifest does not list".into(),
                    paths: vec![e.path.display()],
                });
            }
        }
    }
    report
        .mismatches
        .sort_by(|a, b| (&a.blob, a.block).cmp(&(&b.blob, b.block)));
    report.finished_at = Utc::now();
    let name = layout.verify_report(
        &m.header.snapshot,
        &crate::support::ids::stamp(report.finished_at),
    );
    report.stored_as = Some(name.clone());
    let body =
        serde_json::to_vec_pretty(&report).map_err(|e| Error::encode("encoding the report", e))?;
    if let Err(e) = store.put(&name, Bytes::from(body), true).await {
        tracing::warn!("could not store the verify report {name}: {e}");
        report.stored_as = None;
    }
    Ok(report)
}

#[derive(Default)]
struct PackResult {
    blocks: u64,
    entries: u64,
    bytes: u64,
    archived: bool,
    mismatches: Vec<Mismatch>,
}

async fn verify_pack(
    store: Store,
    layout: Layout,
    m: Arc<Manifest>,
    pi: usize,
    mode: VerifyMode,
    seed: u64,
    counters: Arc<Counters>,
) -> Result<PackResult> {
    let p = &m.packs[pi];
    let blob = layout.full(&p.blob);
    let mut r = PackResult::default();
    // Metadata.
    let Some(props) = store.head(&blob).await? else {
        let mut mm = mismatch(p, &blob, "missing-pack", "pack blob does not exist".into());
        let entries: Vec<&Entry> = m
            .entries
            .iter()
            .filter(|e| e.pack.as_deref() == Some(&p.id))
            .collect();
        mm.paths = entries.iter().take(100).map(|e| e.path.display()).collect();
        r.mismatches.push(mm);
        return Ok(r);
    };
    if props.size != p.size {
        r.mismatches.push(mismatch(
            p,
            &blob,
            "size",
            format!("blob has {} bytes, manifest says {}", props.size, p.size),
        ));
    }
    if let Some(md) = props.content_md5 {
        if md5_from_b64(&p.md5) != Some(md) {
            r.mismatches.push(mismatch(
                p,
                &blob,
                "content-md5",
                format!(
                    "Content-MD5 is {}, manifest says {}",
                    crate::store::b64(&md),
                    p.md5
                ),
            ));
        }
    }
    let bl = store.block_list(&blob).await?;
    let same = bl.committed.len() == p.blocks.len()
        && bl
            .committed
            .iter()
            .zip(&p.blocks)
            .all(|(a, b)| a.id == b.id && a.size == b.size);
    if !same && !bl.committed.is_empty() {
        r.mismatches.push(mismatch(
            p,
            &blob,
            "block-list",
            format!(
                "committed block list ({} blocks) differs from the manifest's ({} blocks)",
                bl.committed.len(),
                p.blocks.len()
            ),
        ));
    }
    if mode == VerifyMode::Metadata {
        counters.add(1, 0);
        return Ok(r);
    }
    if props.tier == Tier::Archive {
        r.archived = true;
        counters.add(1, p.size);
        return Ok(r);
    }
    let store2 = store.clone();
    let m2 = m.clone();
    let rt = tokio::runtime::Handle::current();
    let res = tokio::task::spawn_blocking(move || {
        let p = &m2.packs[pi];
        let entries: Vec<&Entry> = m2
            .entries
            .iter()
            .filter(|e| e.pack.as_deref() == Some(&p.id))
            .collect();
        match mode {
            VerifyMode::Full => full_pack(&*store2, rt, &blob, p, &entries, &mut r),
            VerifyMode::Sample(f) => sample_pack(&*store2, rt, &blob, p, &entries, f, seed, &mut r),
            VerifyMode::Metadata => Ok(()),
        }
        .map(|()| r)
    })
    .await
    .map_err(|e| Error::internal(format!("verify worker: {e}")))??;
    counters.add(1, p.size);
    Ok(res)
}

fn file_entries<'e>(entries: &[&'e Entry]) -> Vec<&'e Entry> {
    let mut v: Vec<&Entry> = entries
        .iter()
        .copied()
        .filter(|e| e.kind == EntryKind::File)
        .collect();
    v.sort_by_key(|e| e.data_offset);
    v
}

fn sha_mismatch(p: &PackRecord, blob: &str, e: &Entry, got: &str) -> Mismatch {
    Mismatch {
        check: "entry-sha256".into(),
        pack: p.id.clone(),
        blob: blob.into(),
        block: None,
        block_id: None,
        detail: format!(
            "SHA-256 is {got}, manifest says {}",
            e.sha256.as_deref().unwrap_or("(none)")
        ),
        paths: vec![e.path.display()],
    }
}

fn full_pack(
    store: &dyn crate::store::BlobStore,
    rt: tokio::runtime::Handle,
    blob: &str,
    p: &PackRecord,
    entries: &[&Entry],
    r: &mut PackResult,
) -> Result<()> {
    let files = file_entries(entries);
    let mut stream = BlockStream::new(store, rt, blob.to_string(), p);
    let outcome = (|| -> std::io::Result<Vec<(usize, String)>> {
        // Frame by frame, as restore reads it: the frame table itself is checked.
        let mut dec = FrameReader::new(p, &mut stream);
        let mut pos = 0u64;
        let mut bad = Vec::new();
        let mut buf = vec![0u8; 256 << 10];
        for (i, e) in files.iter().enumerate() {
            if e.data_offset < pos {
                continue;
            }
            std::io::copy(
                &mut (&mut dec).take(e.data_offset - pos),
                &mut std::io::sink(),
            )?;
            let mut h = Sha256::new();
            let mut left = e.size;
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = dec.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("pack ends inside {}", e.path.display()),
                    ));
                }
                h.update(&buf[..n]);
                left -= n as u64;
            }
            pos = e.data_offset + e.size;
            let got = hex::encode(h.finalize());
            if Some(got.as_str()) != e.sha256.as_deref() {
                bad.push((i, got));
            }
        }
        // Drain the rest so every block is read and MD5-checked.
        std::io::copy(&mut dec, &mut std::io::sink())?;
        Ok(bad)
    })();
    r.bytes += stream.fetched;
    r.blocks += p.blocks.len() as u64;
    for (i, actual) in &stream.bad_blocks {
        r.mismatches
            .push(block_mismatch(p, blob, entries, *i, actual));
    }
    match outcome {
        Ok(bad) => {
            r.entries += files.len() as u64;
            for (i, got) in bad {
                r.mismatches.push(sha_mismatch(p, blob, files[i], &got));
            }
        }
        Err(e) => {
            if e.to_string().contains("reading block") {
                return Err(Error::new(ErrorKind::Store, e.to_string()));
            }
            let mut mm = mismatch(
                p,
                blob,
                "decompress",
                format!("pack does not decompress: {e}"),
            );
            mm.paths = entries.iter().take(100).map(|e| e.path.display()).collect();
            r.mismatches.push(mm);
        }
    }
    Ok(())
}

fn block_mismatch(
    p: &PackRecord,
    blob: &str,
    entries: &[&Entry],
    i: usize,
    actual: &str,
) -> Mismatch {
    Mismatch {
        check: "block-md5".into(),
        pack: p.id.clone(),
        blob: blob.into(),
        block: Some(i),
        block_id: Some(p.blocks[i].id.clone()),
        detail: format!(
            "block {i} MD5 is {actual}, manifest says {}",
            p.blocks[i].md5
        ),
        paths: block_paths(p, entries, i),
    }
}

#[allow(clippy::too_many_arguments)]
fn sample_pack(
    store: &dyn crate::store::BlobStore,
    rt: tokio::runtime::Handle,
    blob: &str,
    p: &PackRecord,
    entries: &[&Entry],
    f: f64,
    seed: u64,
    r: &mut PackResult,
) -> Result<()> {
    // A seeded fraction of blocks, and never none: a small pack still gets one block
    // re-read (the one the seed picks first).
    let mut chosen_blocks: Vec<usize> = (0..p.blocks.len())
        .filter(|&i| sampled(seed, &p.id, i as u64, f))
        .collect();
    if chosen_blocks.is_empty() && !p.blocks.is_empty() {
        chosen_blocks.push(first_pick(seed, &p.id, p.blocks.len()));
    }
    for i in chosen_blocks {
        let data = rt.block_on(store.get(blob, Some(p.block_range(i))))?;
        r.bytes += data.len() as u64;
        r.blocks += 1;
        let actual = md5(&data);
        if md5_from_b64(&p.blocks[i].md5) != Some(actual) {
            r.mismatches.push(block_mismatch(
                p,
                blob,
                entries,
                i,
                &crate::store::b64(&actual),
            ));
        }
    }
    let files = file_entries(entries);
    let mut chosen: Vec<&Entry> = files
        .iter()
        .enumerate()
        .filter(|(i, e)| sampled(seed ^ 0x5eed, &e.path.display(), *i as u64, f))
        .map(|(_, e)| *e)
        .collect();
    if chosen.is_empty() && !files.is_empty() {
        chosen.push(files[first_pick(seed ^ 0x5eed, &p.id, files.len())]);
    }
    let mut cur = PackCursor::new(store, rt, blob.to_string(), p);
    for (k, e) in chosen.iter().enumerate() {
        let hint = chosen
            .get(k + 1)
            .map(|n| n.data_offset + n.size)
            .unwrap_or(0);
        let mut h = Sha256::new();
        let res = cur.read(e.data_offset..e.data_offset + e.size, hint, &mut |b| {
            h.update(b);
            Ok(())
        });
        r.entries += 1;
        match res {
            Ok(()) => {
                let got = hex::encode(h.finalize());
                if Some(got.as_str()) != e.sha256.as_deref() {
                    r.mismatches.push(sha_mismatch(p, blob, e, &got));
                }
            }
            Err(err) if err.kind() == ErrorKind::Integrity => {
                let mut mm = mismatch(p, blob, "decompress", err.to_string());
                mm.paths = vec![e.path.display()];
                r.mismatches.push(mm);
                break;
            }
            Err(err) => return Err(err),
        }
    }
    r.bytes += cur.fetched;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_seeded_and_roughly_proportional() {
        let n = (0..10_000).filter(|i| sampled(7, "p", *i, 0.1)).count();
        assert!((800..1200).contains(&n), "{n}");
        let a: Vec<bool> = (0..100).map(|i| sampled(7, "p", i, 0.5)).collect();
        let b: Vec<bool> = (0..100).map(|i| sampled(7, "p", i, 0.5)).collect();
        assert_eq!(a, b);
        assert!((0..100).all(|i| sampled(1, "p", i, 1.0)));
        let a = first_pick(3, "p", 10);
        assert!(a < 10);
        assert_eq!(a, first_pick(3, "p", 10));
    }
}
