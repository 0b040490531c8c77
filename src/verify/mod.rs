//! Verification: does the store still hold exactly what the manifest says?
//!
//! Three levels, each including the one before:
//!
//! * **metadata** — every pack exists, has the recorded size and Content-MD5, and its
//!   committed block list equals the recorded block table;
//! * **sample** — a seeded fraction of blocks (at least one of every pack, so a small
//!   snapshot is never "verified" by reading nothing) is re-read with the parts of the
//!   frames they cut: each block MD5-compared, each frame decompressed, and the files
//!   lying inside what was read SHA-256-compared. The bytes read follow the fraction
//!   (plus that floor and the frame overhang); the report gives read vs stored;
//! * **full** — every pack is read once, block by block (every block MD5-checked), every
//!   frame decompressed, every file's SHA-256 checked.
//!
//! Frames are decoded one at a time ([`scan`]), so a frame that does not decompress is a
//! finding naming exactly the files with data in it, and the frames after it are still
//! checked.
//!
//! A mismatch names the pack, the block and the paths it affects. The report is stored at
//! `verify/<snapshot>/<time>.json` and decides the exit code. Packs in the Archive tier
//! get the metadata checks only, and the report says so.

pub mod config;
mod scan;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::config::VerifyMode;
use self::scan::PackScan;
use crate::error::{Error, Result};
use crate::manifest::layout::Layout;
use crate::manifest::{Entry, EntryKind, Manifest, PackRecord};
use crate::store::config::UploadConfig;
use crate::store::{md5_from_b64, Store, Tier};
use crate::support::progress::Counters;

/// `full` only: read every chunked file's chunks in file order and compare the hash of
/// the whole with the file's SHA-256 (the pack scans check each chunk; this checks that
/// the chunk list makes the file). A chunk that cannot be read is the pack scans'
/// finding, not repeated here. Reads a segment at a time (only segments that hold
/// chunked files) and one file at a time: memory is one segment and one chunk.
/// Returns the files checked, the compressed bytes read and the mismatches.
async fn verify_chunked_files(
    store: &Store,
    layout: &Layout,
    m: &Arc<Manifest>,
) -> Result<(u64, u64, Vec<Mismatch>)> {
    let (mut n, mut fetched, mut bad) = (0u64, 0u64, Vec::new());
    let mut batches: Vec<Vec<Entry>> = Vec::new();
    let segmented = !m.segments.is_empty() && m.entries.is_empty();
    if !segmented {
        batches.push(
            m.entries
                .iter()
                .filter(|e| !e.chunks.is_empty())
                .cloned()
                .collect(),
        );
    }
    let mut reader = crate::manifest::segment::EntryReader::new(&**store, layout, m);
    let wanted: Vec<usize> = if segmented {
        (0..m.segments.len())
            .filter(|&i| m.segments[i].chunked > 0)
            .collect()
    } else {
        Vec::new()
    };
    let mut next = 0usize;
    loop {
        let batch = if let Some(b) = batches.pop() {
            b
        } else if let Some(&si) = wanted.get(next) {
            next += 1;
            reader
                .read_segment(si, false)
                .await?
                .into_iter()
                .filter(|e| !e.chunks.is_empty())
                .collect()
        } else {
            break;
        };
        for e in batch {
            let mut ids: Vec<&str> = e.packs().collect();
            ids.sort_unstable();
            ids.dedup();
            let packs: Vec<PackRecord> = ids
                .into_iter()
                .filter_map(|id| m.pack(id).cloned())
                .collect();
            let (store, layout, rt) = (
                store.clone(),
                layout.clone(),
                tokio::runtime::Handle::current(),
            );
            let (e, r) = tokio::task::spawn_blocking(move || {
                let mut h = Sha256::new();
                let mut got = 0u64;
                let r = crate::pack::read::read_chunks(
                    &*store,
                    &rt,
                    &layout,
                    &packs,
                    &e,
                    &mut got,
                    &mut |b| {
                        h.update(b);
                        Ok(())
                    },
                );
                (e, r.map(|()| (hex::encode(h.finalize()), got)))
            })
            .await
            .map_err(|err| Error::internal(format!("verify task: {err}")))?;
            match r {
                Ok((sha, got)) => {
                    n += 1;
                    fetched += got;
                    if Some(sha.as_str()) != e.sha256.as_deref() {
                        bad.push(Mismatch {
                            check: "entry-sha256".into(),
                            pack: e.chunks.first().map(|c| c.pack.clone()).unwrap_or_default(),
                            blob: String::new(),
                            block: None,
                            block_id: None,
                            detail: format!(
                                "chunked file: its {} chunks read in order hash to {sha}, the manifest says {}",
                                e.chunks.len(),
                                e.sha256.as_deref().unwrap_or("(none)")
                            ),
                            paths: vec![e.path.display()],
                            paths_total: 1,
                            shared_with: vec![],
                            raw: None,
                        });
                    }
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        crate::error::ErrorKind::Integrity
                            | crate::error::ErrorKind::NotFound
                            | crate::error::ErrorKind::Archived
                    ) =>
                {
                    tracing::debug!("{}: not hashed whole: {err}", e.path.display());
                }
                Err(err) => return Err(err),
            }
        }
    }
    Ok((n, fetched, bad))
}

/// What a pack-by-pack reader checks of entry `e`: the entry itself, or for a chunked
/// file one stand-in per stored chunk (named like the file, so a damaged chunk names
/// the file that uses it; the chunk's SHA-256 is what gets checked).
fn by_pack(e: &Entry) -> Vec<Entry> {
    if e.chunks.is_empty() {
        vec![e.clone()]
    } else {
        e.chunk_entries()
    }
}

/// One thing that did not match.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
    /// Paths whose data is affected (the first 100; `paths_total` counts them all).
    pub paths: Vec<String>,
    /// How many paths are affected in all.
    pub paths_total: usize,
    /// Other snapshots whose files use the damaged bytes (chunks and entries an
    /// incremental took over from its parent), each with the paths affected there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<SharedUse>,
    /// Uncompressed bytes of the pack the finding affects (`None`: the whole pack).
    #[serde(skip)]
    raw: Option<std::ops::Range<u64>>,
}

/// Another snapshot that uses bytes a [`Mismatch`] found damaged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharedUse {
    /// Snapshot id.
    pub snapshot: String,
    /// Its paths whose data is affected (the first 100; `paths_total` counts them all).
    pub paths: Vec<String>,
    /// How many paths are affected in all.
    pub paths_total: usize,
}

/// Name, for every finding, the other snapshots of the pipeline whose files use the
/// damaged bytes: packs are shared by incrementals (unchanged files, chunks and table
/// ranges point at the parent's copy), so one damaged chunk can break many snapshots.
/// Reads the manifest head of every other snapshot, and the entries (one segment at a
/// time) only of those that list a damaged pack. A snapshot that cannot be read is
/// skipped (it is reported by its own verification).
///
/// # Errors
/// Store errors listing the snapshots or reading a segment.
async fn name_shared_uses(
    store: &Store,
    layout: &Layout,
    this: &str,
    found: &mut [Mismatch],
) -> Result<()> {
    let damaged: std::collections::HashSet<String> = found
        .iter()
        .filter(|x| !x.blob.is_empty())
        .map(|x| x.pack.clone())
        .collect();
    if damaged.is_empty() {
        return Ok(());
    }
    for id in crate::manifest::catalog::snapshot_ids(&**store, layout).await? {
        if id == this {
            continue;
        }
        let Ok(other) = crate::manifest::catalog::load_head(&**store, layout, &id).await else {
            continue;
        };
        if !other.packs.iter().any(|p| damaged.contains(&p.id)) {
            continue;
        }
        let other = Arc::new(other);
        let mut hits: Vec<SharedUse> = vec![
            SharedUse {
                snapshot: id.clone(),
                paths: vec![],
                paths_total: 0,
            };
            found.len()
        ];
        let mut note = |e: &Entry| {
            for part in by_pack(e) {
                let Some(pk) = part.pack.as_deref().filter(|pk| damaged.contains(*pk)) else {
                    continue;
                };
                let data = part.data_offset..part.data_offset.saturating_add(part.size.max(1));
                for (x, h) in found.iter().zip(hits.iter_mut()) {
                    let hit = x.pack == pk
                        && x.raw
                            .as_ref()
                            .is_none_or(|r| r.start < data.end && data.start < r.end);
                    if hit && h.paths.last() != Some(&e.path.display()) {
                        if h.paths.len() < scan::MAX_PATHS {
                            h.paths.push(e.path.display());
                        }
                        h.paths_total += 1;
                    }
                }
            }
        };
        other.entries.iter().for_each(&mut note);
        let mut reader = crate::manifest::segment::EntryReader::new(&**store, layout, &other);
        for si in 0..other.segments.len() {
            reader
                .read_segment(si, false)
                .await?
                .iter()
                .for_each(&mut note);
        }
        for (x, h) in found.iter_mut().zip(hits) {
            if h.paths_total > 0 {
                x.shared_with.push(h);
            }
        }
    }
    Ok(())
}

/// A verification report.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    /// Compressed bytes downloaded (block and frame reads; not metadata requests).
    pub bytes_read: u64,
    /// Compressed bytes the snapshot's packs hold (what `full` reads).
    pub bytes_stored: u64,
    /// Packs in Archive whose data could not be read (metadata checked only).
    pub archived_packs_skipped: usize,
    /// Most entries held in memory at once while gathering packs' entries (a segment
    /// and the packs still being gathered; bounded by configuration for format-2
    /// manifests, the whole snapshot for format 1).
    #[serde(default)]
    pub max_entries_held: usize,
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

fn mismatch(p: &PackRecord, blob: &str, check: &str, detail: String) -> Mismatch {
    Mismatch {
        check: check.into(),
        pack: p.id.clone(),
        blob: blob.into(),
        block: None,
        block_id: None,
        detail,
        paths: vec![],
        paths_total: 0,
        shared_with: vec![],
        raw: None,
    }
}

/// The sampling seed of verifying `snapshot` when the pipeline sets none: derived from
/// the snapshot id, so every process verifying it (the single-process verify after a
/// backup, scale-out verify workers) picks the same blocks.
pub fn snapshot_seed(snapshot: &str) -> u64 {
    let d = Sha256::digest(snapshot.as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
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
    let checked = check_packs(store, layout, &m, mode, seed, upload, counters, None).await?;
    finish_report(store, layout, &m, mode, seed, started_at, checked).await
}

/// Some of a snapshot's packs (indices into its pack list, ascending) whose entries all
/// lie in manifest segments `segments` (format 2; ignored for format 1): what one
/// scale-out verify message covers.
#[derive(Debug, Clone)]
pub struct PackSelection {
    /// Pack indices, ascending.
    pub packs: Vec<usize>,
    /// Segments holding every entry of those packs.
    pub segments: std::ops::Range<usize>,
}

/// What the pack checks of a verification found: the sums a report is made of, and the
/// findings with the uncompressed range each affects (which [`finish_report`] needs to
/// name other snapshots using the damaged bytes). Serializable, so verify workers can
/// store theirs and one process can merge them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PacksChecked {
    /// Packs checked.
    pub packs: usize,
    /// Blocks re-read and MD5-compared.
    pub blocks: u64,
    /// Files whose SHA-256 was recomputed.
    pub entries: u64,
    /// Compressed bytes downloaded.
    pub bytes: u64,
    /// Packs in Archive (metadata checked only).
    pub archived: usize,
    /// Most entries held at once.
    pub held: usize,
    /// Findings, each with the uncompressed bytes it affects (`None`: the whole pack).
    pub findings: Vec<(Mismatch, Option<std::ops::Range<u64>>)>,
}

impl PacksChecked {
    /// Add another part's sums and findings (`held` is the largest of the parts').
    pub fn merge(&mut self, o: PacksChecked) {
        self.packs += o.packs;
        self.blocks += o.blocks;
        self.entries += o.entries;
        self.bytes += o.bytes;
        self.archived += o.archived;
        self.held = self.held.max(o.held);
        self.findings.extend(o.findings);
    }
}

/// For every pack of a format-2 snapshot, the first and last segment holding an entry
/// that uses it (`None`: no entry does, or a format-1 manifest). Reads the segments'
/// entries once, one segment at a time.
///
/// # Errors
/// Store errors reading a segment.
pub async fn pack_segments(
    store: &Store,
    layout: &Layout,
    m: &Arc<Manifest>,
) -> Result<Vec<Option<(usize, usize)>>> {
    let mut out: Vec<Option<(usize, usize)>> = vec![None; m.packs.len()];
    if m.segments.is_empty() || !m.entries.is_empty() {
        return Ok(out);
    }
    let index: std::collections::HashMap<&str, usize> = m
        .packs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let mut reader = crate::manifest::segment::EntryReader::new(&**store, layout, m);
    for si in 0..m.segments.len() {
        for e in reader.read_segment(si, true).await? {
            for p in e.packs() {
                if let Some(&i) = index.get(p) {
                    let r = out[i].get_or_insert((si, si));
                    r.1 = si;
                }
            }
        }
    }
    Ok(out)
}

/// Check the packs of `m` (all, or `sel`'s) at `mode`: metadata, then the block and frame
/// reads of [`scan`], `upload.concurrency` packs at a time. Mismatches are findings, not
/// errors.
///
/// # Errors
/// Store failures that prevent checking.
#[allow(clippy::too_many_arguments)]
pub async fn check_packs(
    store: &Store,
    layout: &Layout,
    m: &Arc<Manifest>,
    mode: VerifyMode,
    seed: u64,
    upload: &UploadConfig,
    counters: Arc<Counters>,
    sel: Option<&PackSelection>,
) -> Result<PacksChecked> {
    let wanted = |pi: usize| sel.is_none_or(|s| s.packs.binary_search(&pi).is_ok());
    let sem = Arc::new(tokio::sync::Semaphore::new(upload.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    // A pack is handed out only once a permit is free, so at most `concurrency` packs'
    // entries wait or run at once.
    let spawn = |tasks: &mut tokio::task::JoinSet<Result<PackResult>>,
                 permit: tokio::sync::OwnedSemaphorePermit,
                 pi: usize,
                 entries: Vec<Entry>| {
        let (store, m, layout, counters) =
            (store.clone(), m.clone(), layout.clone(), counters.clone());
        tasks.spawn(async move {
            let _permit = permit;
            verify_pack(store, layout, m, pi, entries, mode, seed, counters).await
        });
    };
    let permit = || async {
        sem.clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::cancelled())
    };
    let index: std::collections::HashMap<&str, usize> = m
        .packs
        .iter()
        .enumerate()
        .filter(|(i, _)| wanted(*i))
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let mut held = 0usize;
    if m.segments.is_empty() || !m.entries.is_empty() {
        held = m.entries.len();
        let mut groups: Vec<Vec<Entry>> = vec![Vec::new(); m.packs.len()];
        for e in m.entries.iter().flat_map(by_pack) {
            if let Some(&i) = e.pack.as_deref().and_then(|p| index.get(p)) {
                groups[i].push(e);
            }
        }
        for (pi, g) in groups.into_iter().enumerate() {
            if wanted(pi) {
                let pm = permit().await?;
                spawn(&mut tasks, pm, pi, g);
            }
        }
    } else {
        // A format-2 manifest is read a segment at a time, twice: first to learn in
        // which segment each pack is referenced last, then to hand each pack its entries
        // as soon as the stream has passed them. Memory holds the entries of the packs
        // whose entries are still being gathered (a pack's entries lie in one path range,
        // so in one or two neighbouring segments), never the snapshot's. A selection
        // reads only its segments.
        let segs = match sel {
            Some(s) => s.segments.start..s.segments.end.min(m.segments.len()),
            None => 0..m.segments.len(),
        };
        let mut last: Vec<Option<usize>> = vec![None; m.packs.len()];
        let mut reader = crate::manifest::segment::EntryReader::new(&**store, layout, m);
        for si in segs.clone() {
            for e in reader.read_segment(si, true).await? {
                for p in e.packs() {
                    if let Some(&i) = index.get(p) {
                        last[i] = Some(si);
                    }
                }
            }
        }
        for (pi, l) in last.iter().enumerate() {
            if l.is_none() && wanted(pi) {
                let pm = permit().await?;
                spawn(&mut tasks, pm, pi, Vec::new());
            }
        }
        let mut groups: std::collections::HashMap<usize, Vec<Entry>> = Default::default();
        for si in segs {
            let seg = reader.read_segment(si, false).await?;
            let n = seg.len();
            for e in seg {
                // Entries stored whole are moved, not cloned (the common case).
                let parts = if e.chunks.is_empty() {
                    vec![e]
                } else {
                    e.chunk_entries()
                };
                for e in parts {
                    if let Some(&i) = e.pack.as_deref().and_then(|p| index.get(p)) {
                        groups.entry(i).or_default().push(e);
                    }
                }
            }
            held = held.max(n + groups.values().map(Vec::len).sum::<usize>());
            let done: Vec<usize> = groups
                .keys()
                .copied()
                .filter(|&i| last[i] == Some(si))
                .collect();
            for i in done {
                let g = groups.remove(&i).unwrap_or_default();
                let pm = permit().await?;
                spawn(&mut tasks, pm, i, g);
            }
        }
    }
    let mut out = PacksChecked {
        packs: match sel {
            Some(s) => s.packs.len(),
            None => m.packs.len(),
        },
        held,
        ..Default::default()
    };
    // Every pack task is awaited, even after one failed: a task dropped mid-pack would
    // leave its blocking reader running (and calling into the runtime) after `verify`
    // returned, up to the runtime's shutdown.
    let mut first_err: Option<Error> = None;
    while let Some(j) = tasks.join_next().await {
        let r = match j.map_err(|e| Error::internal(format!("verify task: {e}"))) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) | Err(e) => {
                // Packs not started yet give up at once; running ones finish.
                sem.close();
                if first_err.is_none() {
                    first_err = Some(e);
                }
                continue;
            }
        };
        out.blocks += r.blocks;
        out.entries += r.entries;
        out.bytes += r.bytes;
        out.archived += usize::from(r.archived);
        out.findings.extend(r.mismatches.into_iter().map(|mut x| {
            let raw = x.raw.take();
            (x, raw)
        }));
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(out)
}

/// Make the report of verifying `m` from its pack checks (one pass's, or the merged
/// parts of scale-out workers): the whole-file checks of chunked files (`full`), entries
/// naming unlisted packs, the other snapshots sharing damaged bytes; stored at
/// `verify/<snapshot>/<time>.json`.
///
/// # Errors
/// Store failures reading chunked files, segments or other snapshots.
pub async fn finish_report(
    store: &Store,
    layout: &Layout,
    m: &Arc<Manifest>,
    mode: VerifyMode,
    seed: u64,
    started_at: DateTime<Utc>,
    checked: PacksChecked,
) -> Result<VerifyReport> {
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
        blocks_checked: checked.blocks,
        entries_checked: checked.entries,
        bytes_read: checked.bytes,
        bytes_stored: m.packs.iter().map(|p| p.size).sum(),
        archived_packs_skipped: checked.archived,
        max_entries_held: checked.held,
        mismatches: checked
            .findings
            .into_iter()
            .map(|(mut x, raw)| {
                x.raw = raw;
                x
            })
            .collect(),
        stored_as: None,
    };
    // A chunked file: its chunks, read in order, must hash to the file's SHA-256.
    if matches!(mode, VerifyMode::Full) {
        let (n, fetched, bad) = verify_chunked_files(store, layout, m).await?;
        report.entries_checked += n;
        report.bytes_read += fetched;
        report.mismatches.extend(bad);
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
                    paths_total: 1,
                    shared_with: vec![],
                    raw: None,
                });
            }
        }
    }
    name_shared_uses(store, layout, &m.header.snapshot, &mut report.mismatches).await?;
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

#[allow(clippy::too_many_arguments)]
async fn verify_pack(
    store: Store,
    layout: Layout,
    m: Arc<Manifest>,
    pi: usize,
    entries: Vec<Entry>,
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
        mm.paths = entries
            .iter()
            .take(scan::MAX_PATHS)
            .map(|e| e.path.display())
            .collect();
        mm.paths_total = entries.len();
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
    let key = layout.key().cloned();
    let rt = tokio::runtime::Handle::current();
    let res = tokio::task::spawn_blocking(move || {
        let p = &m2.packs[pi];
        let entries: Vec<&Entry> = entries.iter().collect();
        let mut scan = PackScan::new(&*store2, rt, &blob, p, file_entries(&entries));
        if m2.header.encryption.is_some() {
            scan = scan.sealed(key);
        }
        match mode {
            VerifyMode::Full => full_pack(&scan, &mut r),
            VerifyMode::Sample(f) => sample_pack(&scan, f, seed, &mut r),
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
        detail: {
            let (want, kind) = e.content_hash();
            format!(
                "{kind} is {got}, manifest says {}",
                want.unwrap_or("(none)")
            )
        },
        paths: vec![e.path.display()],
        paths_total: 1,
        shared_with: vec![],
        raw: Some(e.data_offset..e.data_offset.saturating_add(e.size.max(1))),
    }
}

/// A frame table that cannot be used: a finding naming every file of the pack.
fn frame_table_finding(scan: &PackScan<'_>) -> Option<Mismatch> {
    let why = scan::frame_table_problem(scan.p)?;
    let mut m = mismatch(
        scan.p,
        scan.blob,
        "decompress",
        format!("{why}: the pack's files cannot be located (blocks were MD5-checked only)"),
    );
    (m.paths, m.paths_total) = scan.all_paths();
    Some(m)
}

/// Every block MD5-checked, every frame decompressed, every file SHA-256-checked.
fn full_pack(scan: &PackScan<'_>, r: &mut PackResult) -> Result<()> {
    let p = scan.p;
    let end = p.size.max(p.blocks.iter().map(|b| b.size).sum());
    if !scan.frames_ok {
        r.mismatches.extend(frame_table_finding(scan));
        return scan.span(None, 0..end, true, r);
    }
    scan.span(Some((0, p.frames.len() - 1)), 0..end, true, r)
}

/// A seeded fraction of blocks (never none: a pack always gets the block the seed picks
/// first), each read with the parts of the frames it cuts, so every frame in the read is
/// decompressed whole and every file inside it SHA-256-checked. Neighbouring spans are
/// merged, so a frame is read at most once.
fn sample_pack(scan: &PackScan<'_>, f: f64, seed: u64, r: &mut PackResult) -> Result<()> {
    let p = scan.p;
    let mut chosen: Vec<usize> = (0..p.blocks.len())
        .filter(|&i| sampled(seed, &p.id, i as u64, f))
        .collect();
    if chosen.is_empty() && !p.blocks.is_empty() {
        chosen.push(first_pick(seed, &p.id, p.blocks.len()));
    }
    if !scan.frames_ok {
        r.mismatches.extend(frame_table_finding(scan));
        for i in chosen {
            scan.span(None, scan.block_range(i), false, r)?;
        }
        return Ok(());
    }
    // Spans: (first frame, last frame, compressed range to fetch).
    let mut spans: Vec<(usize, usize, std::ops::Range<u64>)> = Vec::new();
    for i in chosen {
        let br = scan.block_range(i);
        if br.is_empty() {
            continue;
        }
        let (fa, fb) = scan.frames_holding(&br);
        let fr = p.frames_comp_range(fa, fb);
        let fetch = fr.start.min(br.start)..fr.end.max(br.end);
        match spans.last_mut() {
            Some(last) if fa <= last.1 + 1 => {
                last.1 = last.1.max(fb);
                last.2 = last.2.start.min(fetch.start)..last.2.end.max(fetch.end);
            }
            _ => spans.push((fa, fb, fetch)),
        }
    }
    for (fa, fb, fetch) in spans {
        scan.span(Some((fa, fb)), fetch, false, r)?;
    }
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
