//! Restore: a snapshot (or the paths matching some globs) into a directory.
//!
//! Only the frames holding the wanted entries are read (ranged GETs, neighbouring
//! entries sharing a fetch); packs are restored in parallel. Every restored file's
//! SHA-256 is checked as it is written; a file whose hash is wrong is removed (with
//! `--overwrite`, written beside and renamed over only when right), so a restored file
//! is either correct or absent. A file whose stored data is damaged is skipped and
//! listed in the report's `damaged` (the restore goes on: damage costs only the files
//! whose bytes it holds); callers turn a report with damage into exit 3.
//!
//! This module is the public API (options, reports, [`restore`], [`restore_with`]);
//! [`files`] writes entries into the target safely, [`archive`] plans and performs
//! rehydration of Archive-tier packs, [`container`] writes files back into a blob
//! container as blobs (with a blob source's properties), [`db`] loads table snapshots into a live
//! database, and the drills prove a snapshot restores.

pub mod archive;
pub mod config;
pub mod container;
pub mod db;
pub mod files;

pub use files::{DamagedFile, MAX_DAMAGED};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::layout::Layout;
use crate::manifest::{Entry, EntryKind, Manifest, PackRecord};
use crate::store::Store;
use crate::support::progress::Counters;

/// What to restore and how.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Target directory (created if missing).
    pub to: PathBuf,
    /// Gitignore-style globs selecting entries (empty: everything).
    pub paths: Vec<String>,
    /// Replace existing files.
    pub overwrite: bool,
    /// Packs restored at once.
    pub concurrency: usize,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// Snapshot restored.
    pub snapshot: String,
    /// Target directory.
    pub to: PathBuf,
    /// Files written (each SHA-256-checked).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Compressed bytes downloaded.
    pub bytes_fetched: u64,
    /// Packs read.
    pub packs_read: usize,
    /// Entries that were stored as inconsistent (restored as stored).
    pub inconsistent: Vec<String>,
    /// Files not restored because their stored data is damaged (the first
    /// [`MAX_DAMAGED`], by path); `damaged_total` counts them all.
    pub damaged: Vec<DamagedFile>,
    /// How many files were not restored because their stored data is damaged.
    pub damaged_total: u64,
    /// Most entries held in memory at once (one segment's for a format-2 snapshot; the
    /// selection for format 1).
    #[serde(default)]
    pub max_entries_held: usize,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
}

impl RestoreReport {
    /// The report of a restore of `m` into `root` that has written nothing yet.
    fn started(
        m: &Manifest,
        root: &Path,
        inconsistent: Vec<String>,
        started_at: DateTime<Utc>,
    ) -> Self {
        RestoreReport {
            snapshot: m.header.snapshot.clone(),
            to: root.to_path_buf(),
            files: 0,
            dirs: 0,
            symlinks: 0,
            bytes: 0,
            bytes_fetched: 0,
            packs_read: 0,
            inconsistent,
            damaged: Vec::new(),
            damaged_total: 0,
            max_entries_held: 0,
            started_at,
            finished_at: started_at,
        }
    }

    /// True when every selected entry was restored (no damaged file).
    pub fn ok(&self) -> bool {
        self.damaged_total == 0
    }
}

/// How to rehydrate archived packs during a restore.
#[derive(Debug, Clone, Copy)]
pub struct RehydrateOptions {
    /// Azure rehydrate priority.
    pub priority: crate::store::RehydratePriority,
    /// Time between polls of pending copies.
    pub poll: std::time::Duration,
    /// Give up (with `Archived`; rerun to resume) after this long. `None`: wait.
    pub timeout: Option<std::time::Duration>,
}

/// The entries of `m` matching gitignore-style `globs` (all when empty).
///
/// # Errors
/// `Config` for a bad glob, `NotFound` when nothing matches.
pub(crate) fn select(m: &Manifest, globs: &[String]) -> Result<Vec<Entry>> {
    if globs.is_empty() {
        return Ok(m.entries.clone());
    }
    let sel = Selection::new(globs)?;
    let chosen: Vec<Entry> = m.entries.iter().filter(|e| sel.takes(e)).cloned().collect();
    if chosen.is_empty() {
        return Err(Error::not_found(format!(
            "no entry of snapshot {} matches {}",
            m.header.snapshot,
            globs.join(", ")
        )));
    }
    Ok(chosen)
}

/// Restore snapshot `m` per `opts`. Files whose stored data is damaged (frames that do
/// not decompress, a SHA-256 that differs, a missing pack) are not written; the rest is
/// restored and the report lists them in `damaged` (check [`RestoreReport::ok`]).
///
/// # Errors
/// `Refused` (unsafe path, would overwrite), `NotFound` (no matching path), `Archived`
/// (a needed pack is in Archive), store and filesystem errors.
pub async fn restore(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    opts: &RestoreOptions,
    counters: Option<Arc<Counters>>,
) -> Result<RestoreReport> {
    let started_at = Utc::now();
    let counters = counters.unwrap_or_default();
    if !m.segments.is_empty() && m.entries.is_empty() {
        return restore_streamed(store, layout, m, opts, counters).await;
    }
    let entries = select(m, &opts.paths)?;
    let rels = files::check_entries(m, &entries)?;
    // Archive-tier packs cannot be read: say so before writing anything.
    let mut needed: std::collections::BTreeSet<String> = Default::default();
    for e in &entries {
        if e.kind == EntryKind::File {
            needed.extend(e.packs().map(str::to_string));
            needed.insert(e.pack.clone().unwrap_or_default());
        }
    }
    archive::refuse_archived(store, layout, m, needed.iter()).await?;
    let root = target_root(&opts.to)?;
    if !opts.overwrite {
        files::refuse_clashes(&root, &entries, &rels)?;
    }
    let total_bytes: u64 = entries.iter().map(|e| e.size).sum();
    counters.set_total(entries.len() as u64, total_bytes);

    let inconsistent = entries
        .iter()
        .filter(|e| e.inconsistent)
        .map(|e| e.path.display())
        .collect();
    let mut report = RestoreReport::started(m, &root, inconsistent, started_at);
    report.max_entries_held = entries.len();
    let damaged = Arc::new(files::DamageLog::default());
    let known = Arc::new(files::KnownDirs::default());
    write_batch(
        store,
        layout,
        m,
        &root,
        &entries,
        &rels,
        &known,
        opts,
        &counters,
        &damaged,
        &mut report,
    )
    .await?;
    // Directory modes and times last, deepest first (writing inside changes mtimes).
    files::finish_dirs(&root, &entries, &rels)?;
    (report.damaged, report.damaged_total) = damaged.take();
    report.finished_at = Utc::now();
    Ok(report)
}

/// Create the restore target and resolve it (every path written is checked under it).
fn target_root(to: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(to)
        .map_err(|e| Error::io(ErrorKind::Internal, format!("creating {}", to.display()), e))?;
    to.canonicalize()
        .map_err(|e| Error::io(ErrorKind::Internal, "target", e))
}

/// Write one path-sorted batch of checked entries: directories (parents first), files
/// (packs in parallel), then symlinks, so nothing is ever written through one.
#[allow(clippy::too_many_arguments)]
async fn write_batch(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    root: &Path,
    entries: &[Entry],
    rels: &[PathBuf],
    known: &Arc<files::KnownDirs>,
    opts: &RestoreOptions,
    counters: &Arc<Counters>,
    damaged: &Arc<files::DamageLog>,
    report: &mut RestoreReport,
) -> Result<()> {
    let mut by_pack: BTreeMap<String, Vec<(Entry, PathBuf)>> = BTreeMap::new();
    // A chunked file is a task of its own: its chunks may lie in many packs.
    let mut chunked: Vec<(Entry, PathBuf)> = Vec::new();
    for (e, rel) in entries.iter().zip(rels) {
        if e.kind == EntryKind::File && !e.chunks.is_empty() {
            chunked.push((e.clone(), rel.clone()));
        } else if e.kind == EntryKind::File {
            by_pack
                .entry(e.pack.clone().unwrap_or_default())
                .or_default()
                .push((e.clone(), rel.clone()));
        }
    }
    // 1. Directories, parents first (entries are path-sorted).
    report.dirs += files::create_dirs(root, known, entries, rels, counters)?;
    // 2. Files, packs in parallel.
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let jobs = by_pack
        .into_iter()
        .map(|(pid, files)| (m.pack(&pid).cloned(), Vec::<PackRecord>::new(), files))
        .chain(chunked.into_iter().map(|(e, rel)| {
            let mut ids: Vec<&str> = e.packs().collect();
            ids.sort_unstable();
            ids.dedup();
            let packs: Vec<PackRecord> = ids
                .into_iter()
                .filter_map(|id| m.pack(id).cloned())
                .collect();
            (None, packs, vec![(e, rel)])
        }));
    for (pack, chunk_packs, files) in jobs {
        let (store, layout, root, sem, counters, known, damaged) = (
            store.clone(),
            layout.clone(),
            root.to_path_buf(),
            sem.clone(),
            counters.clone(),
            known.clone(),
            damaged.clone(),
        );
        let overwrite = opts.overwrite;
        let rt = tokio::runtime::Handle::current();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|_| Error::cancelled())?;
            tokio::task::spawn_blocking(move || {
                let w = files::Writer {
                    root: &root,
                    known: &known,
                    overwrite,
                    counters: &counters,
                    damaged: &damaged,
                };
                files::restore_files(
                    &*store,
                    rt,
                    &layout,
                    pack.as_ref(),
                    &chunk_packs,
                    &files,
                    &w,
                )
            })
            .await
            .map_err(|e| Error::internal(format!("restore worker: {e}")))?
        });
    }
    let mut first_err = None;
    while let Some(j) = tasks.join_next().await {
        match j.map_err(|e| Error::internal(format!("restore task: {e}")))? {
            Ok(o) => {
                report.files += o.files;
                report.bytes += o.bytes;
                report.bytes_fetched += o.fetched;
                report.packs_read += usize::from(o.fetched > 0);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // 3. Symlinks, after every file, so nothing is ever written through one.
    report.symlinks += files::create_symlinks(root, known, entries, rels, counters)?;
    Ok(())
}

/// A compiled `--path` selection (everything when empty).
struct Selection {
    globs: Option<ignore::gitignore::Gitignore>,
}

impl Selection {
    fn new(globs: &[String]) -> Result<Selection> {
        if globs.is_empty() {
            return Ok(Selection { globs: None });
        }
        let mut b = ignore::gitignore::GitignoreBuilder::new("/");
        for g in globs {
            b.add_line(None, g)
                .map_err(|e| Error::config(format!("invalid --path glob {g:?}: {e}")))?;
        }
        Ok(Selection {
            globs: Some(
                b.build()
                    .map_err(|e| Error::config(format!("invalid --path globs: {e}")))?,
            ),
        })
    }
    fn takes(&self, e: &Entry) -> bool {
        self.globs.as_ref().is_none_or(|gi| {
            gi.matched_path_or_any_parents(e.path.to_path(), e.kind == EntryKind::Dir)
                .is_ignore()
        })
    }
}

/// Restore a format-2 snapshot segment by segment: memory holds one segment's entries,
/// never the snapshot's. The segments are read in passes — check every path and collect
/// the packs (so an archived pack or a clash refuses the restore before anything is
/// written), write, then set directory times deepest first (segments in reverse).
async fn restore_streamed(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    opts: &RestoreOptions,
    counters: Arc<Counters>,
) -> Result<RestoreReport> {
    let started_at = Utc::now();
    let sel = Selection::new(&opts.paths)?;
    let prefix = |globs: &[String]| -> Option<Vec<Vec<u8>>> {
        if globs.is_empty() {
            None
        } else {
            globs
                .iter()
                .map(|g| crate::manifest::segment::glob_prefix(g))
                .collect()
        }
    };
    let prefixes = prefix(&opts.paths);
    // The segments this selection can touch, in order.
    let wanted: Vec<usize> = (0..m.segments.len())
        .filter(|&i| {
            prefixes
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| m.segments[i].may_hold_prefix(p)))
        })
        .collect();
    let mut reader = crate::manifest::segment::EntryReader::new(&**store, layout, m);
    // Pass 1: check paths, count, collect packs.
    let (mut selected, mut total_bytes) = (0u64, 0u64);
    let mut packs: std::collections::BTreeSet<String> = Default::default();
    let mut inconsistent = Vec::new();
    for &i in &wanted {
        let batch = reader.read_segment(i, true).await?;
        for e in batch.iter().filter(|e| sel.takes(e)) {
            files::safe_relative(&e.path)?;
            selected += 1;
            total_bytes += e.size;
            if e.kind == EntryKind::File {
                packs.insert(e.pack.clone().unwrap_or_default());
                packs.extend(e.chunks.iter().map(|c| c.pack.clone()));
            }
            if e.inconsistent && inconsistent.len() < crate::manifest::segment::MAX_LISTED {
                inconsistent.push(e.path.display());
            }
        }
    }
    if selected == 0 && !opts.paths.is_empty() {
        return Err(Error::not_found(format!(
            "no entry of snapshot {} matches {}",
            m.header.snapshot,
            opts.paths.join(", ")
        )));
    }
    archive::refuse_archived(store, layout, m, packs.iter()).await?;
    drop(packs);
    let root = target_root(&opts.to)?;
    let chosen = |batch: Vec<Entry>| -> Result<(Vec<Entry>, Vec<PathBuf>)> {
        let entries: Vec<Entry> = batch.into_iter().filter(|e| sel.takes(e)).collect();
        let rels = entries
            .iter()
            .map(|e| files::safe_relative(&e.path))
            .collect::<Result<Vec<_>>>()?;
        Ok((entries, rels))
    };
    // Pass 2: nothing selected exists yet (without --overwrite).
    if !opts.overwrite {
        for &i in &wanted {
            let (entries, rels) = chosen(reader.read_segment(i, false).await?)?;
            files::refuse_clashes(&root, &entries, &rels)?;
        }
    }
    counters.set_total(selected, total_bytes);
    let mut report = RestoreReport::started(m, &root, inconsistent, started_at);
    // Pass 3: write, a segment at a time.
    let damaged = Arc::new(files::DamageLog::default());
    for &i in &wanted {
        let (entries, rels) = chosen(reader.read_segment(i, false).await?)?;
        report.max_entries_held = report.max_entries_held.max(entries.len());
        let known = Arc::new(files::KnownDirs::default());
        write_batch(
            store,
            layout,
            m,
            &root,
            &entries,
            &rels,
            &known,
            opts,
            &counters,
            &damaged,
            &mut report,
        )
        .await?;
    }
    // Pass 4: directory modes and times, deepest first.
    for &i in wanted.iter().rev() {
        let (entries, rels) = chosen(reader.read_segment(i, false).await?)?;
        files::finish_dirs(&root, &entries, &rels)?;
    }
    (report.damaged, report.damaged_total) = damaged.take();
    report.finished_at = Utc::now();
    Ok(report)
}

/// Restore like [`restore`], first rehydrating the archived packs it needs into Hot
/// staging blobs (`<prefix>/rehydrate/…`) when `rehydrate` is given: start every copy,
/// poll with progress until all are readable, read from the staging copies, and delete
/// them after a successful restore. Rerunning after an interruption finds the copies
/// already there (or still pending) and continues where it stopped.
///
/// # Errors
/// As [`restore`]; `Archived` when waiting timed out or the store cannot rehydrate;
/// `Cancelled` on a signal while waiting.
pub async fn restore_with(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    opts: &RestoreOptions,
    rehydrate: Option<RehydrateOptions>,
    cancel: &crate::support::cancel::Cancel,
    counters: Option<Arc<Counters>>,
) -> Result<RestoreReport> {
    let Some(rh) = rehydrate else {
        return restore(store, layout, m, opts, counters).await;
    };
    let pl = archive::plan(store, layout, m, &opts.paths).await?;
    if pl.archived.is_empty() {
        return restore(store, layout, m, opts, counters).await;
    }
    archive::rehydrate(store, layout, &pl, rh, cancel).await?;
    let staged = archive::staged(m, &pl);
    let report = restore(store, layout, &staged, opts, counters).await?;
    // With damage, keep the staging copies: a rerun (or `verify`) reads them again.
    if report.ok() {
        archive::delete_staging(store, layout, &pl).await;
    }
    Ok(report)
}
