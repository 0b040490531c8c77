//! Restore: a snapshot (or the paths matching some globs) into a directory.
//!
//! Only the frames holding the wanted entries are read (ranged GETs, neighbouring
//! entries sharing a fetch); packs are restored in parallel. Every restored file's
//! SHA-256 is checked as it is written; a file whose hash is wrong is removed (with
//! `--overwrite`, written beside and renamed over only when right), so a restored file
//! is either correct or absent.
//!
//! Safety, even against a hand-edited manifest: a path that is absolute, empty or has a
//! `..`/`.` component is refused; nothing is written through a symlink (each parent is
//! checked with `lstat`, and stored symlinks are created last, after every file); an
//! existing file is never overwritten without `--overwrite`, and that check runs before
//! anything is written.

pub mod db;
pub mod drill;
pub mod drill_db;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::manifest::layout::Layout;
use crate::manifest::{Entry, EntryKind, Manifest, PackRecord, PathBytes};
use crate::pack::read::PackCursor;
use crate::store::{Store, Tier};
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
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
}

/// Check that a stored path is a plain relative path; return it as a `PathBuf`.
///
/// # Errors
/// `Refused` for absolute paths, `..`/`.`/empty components or NUL bytes.
pub fn safe_relative(p: &PathBytes) -> Result<PathBuf> {
    let bad = |why: &str| {
        Error::refused(format!(
            "refusing manifest path {:?}: {why} (the manifest may have been tampered with)",
            p.display()
        ))
    };
    if p.0.is_empty() {
        return Err(bad("empty path"));
    }
    if p.0.contains(&0) {
        return Err(bad("NUL byte"));
    }
    if p.0[0] == b'/' {
        return Err(bad("absolute path"));
    }
    for seg in p.0.split(|&b| b == b'/') {
        match seg {
            b"" => return Err(bad("empty path component")),
            b"." | b".." => return Err(bad("'.' or '..' component escapes the target")),
            _ => {}
        }
    }
    let path = p.to_path();
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad("not a plain relative path"));
    }
    Ok(path)
}

/// Directories this restore has created or checked (relative to the target): each is
/// checked once, not once per file below it (restore is syscall-bound on small files).
#[derive(Debug, Default)]
struct KnownDirs(std::sync::Mutex<std::collections::HashSet<PathBuf>>);

impl KnownDirs {
    fn ensure(&self, root: &Path, rel: &Path) -> Result<()> {
        if rel.as_os_str().is_empty() || self.0.lock().map(|s| s.contains(rel)).unwrap_or(false) {
            return Ok(());
        }
        ensure_dir(root, rel)?;
        if let Ok(mut s) = self.0.lock() {
            let mut p = rel.to_path_buf();
            loop {
                if !s.insert(p.clone()) || !p.pop() || p.as_os_str().is_empty() {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Create `rel` (a directory) under `root`, refusing to pass through symlinks or files.
fn ensure_dir(root: &Path, rel: &Path) -> Result<()> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::refused(format!(
                    "refusing to restore through symlink {}",
                    cur.display()
                )))
            }
            Ok(_) => {
                return Err(Error::refused(format!(
                    "{} exists and is not a directory",
                    cur.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&cur).map_err(|e| {
                    Error::io(
                        ErrorKind::Internal,
                        format!("creating {}", cur.display()),
                        e,
                    )
                })?;
            }
            Err(e) => {
                return Err(Error::io(
                    ErrorKind::Internal,
                    format!("checking {}", cur.display()),
                    e,
                ))
            }
        }
    }
    Ok(())
}

fn select(m: &Manifest, globs: &[String]) -> Result<Vec<Entry>> {
    if globs.is_empty() {
        return Ok(m.entries.clone());
    }
    let mut b = ignore::gitignore::GitignoreBuilder::new("/");
    for g in globs {
        b.add_line(None, g)
            .map_err(|e| Error::config(format!("invalid --path glob {g:?}: {e}")))?;
    }
    let gi = b
        .build()
        .map_err(|e| Error::config(format!("invalid --path globs: {e}")))?;
    let chosen: Vec<Entry> = m
        .entries
        .iter()
        .filter(|e| {
            gi.matched_path_or_any_parents(e.path.to_path(), e.kind == EntryKind::Dir)
                .is_ignore()
        })
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(Error::not_found(format!(
            "no entry of snapshot {} matches {}",
            m.header.snapshot,
            globs.join(", ")
        )));
    }
    Ok(chosen)
}

fn set_times(path: &Path, e: &Entry, symlink: bool) -> Result<()> {
    let t = filetime::FileTime::from_unix_time(e.mtime, e.mtime_nsec);
    let r = if symlink {
        filetime::set_symlink_file_times(path, t, t)
    } else {
        filetime::set_file_times(path, t, t)
    };
    r.map_err(|err| {
        Error::io(
            ErrorKind::Internal,
            format!("setting times of {}", path.display()),
            err,
        )
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777)).map_err(|e| {
        Error::io(
            ErrorKind::Internal,
            format!("setting mode of {}", path.display()),
            e,
        )
    })
}

/// Restore snapshot `m` per `opts`.
///
/// # Errors
/// `Refused` (unsafe path, would overwrite), `NotFound` (no matching path), `Archived`
/// (a needed pack is in Archive), `Integrity` (a restored file's SHA-256 differs), store
/// and filesystem errors.
pub async fn restore(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    opts: &RestoreOptions,
    counters: Option<Arc<Counters>>,
) -> Result<RestoreReport> {
    let started_at = Utc::now();
    let counters = counters.unwrap_or_default();
    let entries = select(m, &opts.paths)?;
    // Validate every path and pack reference before touching the disk.
    let mut rels = Vec::with_capacity(entries.len());
    for e in &entries {
        rels.push(safe_relative(&e.path)?);
        if e.kind == EntryKind::File && e.size > 0 {
            let pid = e.pack.as_deref().unwrap_or("");
            if m.pack(pid).is_none() {
                return Err(Error::integrity(format!(
                    "{}: refers to pack {pid:?}, which the manifest does not list",
                    e.path.display()
                )));
            }
        }
    }
    // Archive-tier packs cannot be read: say so before writing anything.
    let mut by_pack: BTreeMap<String, Vec<(Entry, PathBuf)>> = BTreeMap::new();
    for (e, rel) in entries.iter().zip(&rels) {
        if e.kind == EntryKind::File {
            by_pack
                .entry(e.pack.clone().unwrap_or_default())
                .or_default()
                .push((e.clone(), rel.clone()));
        }
    }
    let mut archived = Vec::new();
    for pid in by_pack.keys() {
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
    std::fs::create_dir_all(&opts.to).map_err(|e| {
        Error::io(
            ErrorKind::Internal,
            format!("creating {}", opts.to.display()),
            e,
        )
    })?;
    let root = opts
        .to
        .canonicalize()
        .map_err(|e| Error::io(ErrorKind::Internal, "target", e))?;
    if !opts.overwrite {
        let mut clashes = Vec::new();
        for (e, rel) in entries.iter().zip(&rels) {
            if let Ok(md) = std::fs::symlink_metadata(root.join(rel)) {
                if !(e.kind == EntryKind::Dir && md.is_dir()) {
                    clashes.push(rel.display().to_string());
                }
            }
        }
        if !clashes.is_empty() {
            let n = clashes.len();
            clashes.truncate(10);
            return Err(Error::refused(format!(
                "{n} path(s) already exist in {} (first: {}); nothing was written. Use --overwrite to replace them",
                root.display(),
                clashes.join(", ")
            )));
        }
    }
    let total_bytes: u64 = entries.iter().map(|e| e.size).sum();
    counters.set_total(entries.len() as u64, total_bytes);

    let mut report = RestoreReport {
        snapshot: m.header.snapshot.clone(),
        to: root.clone(),
        files: 0,
        dirs: 0,
        symlinks: 0,
        bytes: 0,
        bytes_fetched: 0,
        packs_read: 0,
        inconsistent: entries
            .iter()
            .filter(|e| e.inconsistent)
            .map(|e| e.path.display())
            .collect(),
        started_at,
        finished_at: started_at,
    };
    // 1. Directories, parents first (entries are path-sorted).
    let known = Arc::new(KnownDirs::default());
    for (e, rel) in entries.iter().zip(&rels) {
        if e.kind == EntryKind::Dir {
            known.ensure(&root, rel)?;
            report.dirs += 1;
            counters.add(1, 0);
        }
    }
    // 2. Files, packs in parallel.
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (pid, files) in by_pack {
        let pack = m.pack(&pid).cloned();
        let (store, layout, root, sem, counters, known) = (
            store.clone(),
            layout.clone(),
            root.clone(),
            sem.clone(),
            counters.clone(),
            known.clone(),
        );
        let overwrite = opts.overwrite;
        let rt = tokio::runtime::Handle::current();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|_| Error::cancelled())?;
            tokio::task::spawn_blocking(move || {
                let w = Writer {
                    root: &root,
                    known: &known,
                    overwrite,
                    counters: &counters,
                };
                restore_files(&*store, rt, &layout, pack.as_ref(), &files, &w)
            })
            .await
            .map_err(|e| Error::internal(format!("restore worker: {e}")))?
        });
    }
    let mut first_err = None;
    while let Some(j) = tasks.join_next().await {
        match j.map_err(|e| Error::internal(format!("restore task: {e}")))? {
            Ok((n, bytes, fetched)) => {
                report.files += n;
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
    // 3. Symlinks, after every file, so nothing is ever written through one.
    for (e, rel) in entries.iter().zip(&rels) {
        if e.kind != EntryKind::Symlink {
            continue;
        }
        if let Some(parent) = rel.parent() {
            known.ensure(&root, parent)?;
        }
        let dest = root.join(rel);
        if std::fs::symlink_metadata(&dest).is_ok() {
            remove_existing(&dest)?;
        }
        let target = e.target.clone().unwrap_or(PathBytes(Vec::new()));
        std::os::unix::fs::symlink(target.to_path(), &dest).map_err(|err| {
            Error::io(
                ErrorKind::Internal,
                format!("creating symlink {}", dest.display()),
                err,
            )
        })?;
        set_times(&dest, e, true)?;
        report.symlinks += 1;
        counters.add(1, 0);
    }
    // 4. Directory modes and times last, deepest first (writing inside changes mtimes).
    for (e, rel) in entries.iter().zip(&rels).rev() {
        if e.kind == EntryKind::Dir {
            let dest = root.join(rel);
            set_mode(&dest, e.mode)?;
            set_times(&dest, e, false)?;
        }
    }
    report.finished_at = Utc::now();
    Ok(report)
}

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
        .filter_map(|e| e.pack.as_deref())
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
    let pl = plan(store, layout, m, &opts.paths).await?;
    if pl.archived.is_empty() {
        return restore(store, layout, m, opts, counters).await;
    }
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
    // Read the archived packs from their staging copies.
    let mut staged = m.clone();
    let archived: std::collections::HashSet<&str> =
        pl.archived.iter().map(|p| p.pack.as_str()).collect();
    for p in staged.packs.iter_mut() {
        if archived.contains(p.id.as_str()) {
            p.blob = Layout::staging_rel(&p.blob);
        }
    }
    let report = restore(store, layout, &staged, opts, counters).await?;
    for p in &pl.archived {
        let name = layout.full(&Layout::staging_rel(&p.blob));
        if let Err(e) = store.delete(&name).await {
            tracing::warn!("could not delete the staging copy {name}: {e}");
        }
    }
    Ok(report)
}

fn remove_existing(dest: &Path) -> Result<()> {
    let md = std::fs::symlink_metadata(dest)
        .map_err(|e| Error::io(ErrorKind::Internal, dest.display(), e))?;
    let r = if md.is_dir() {
        std::fs::remove_dir(dest)
    } else {
        std::fs::remove_file(dest)
    };
    r.map_err(|e| {
        Error::io(
            ErrorKind::Refused,
            format!("replacing {}", dest.display()),
            e,
        )
    })
}

/// Where and how restored files are written.
struct Writer<'a> {
    root: &'a Path,
    known: &'a KnownDirs,
    overwrite: bool,
    counters: &'a Counters,
}

fn restore_files(
    store: &dyn crate::store::BlobStore,
    rt: tokio::runtime::Handle,
    layout: &Layout,
    pack: Option<&PackRecord>,
    files: &[(Entry, PathBuf)],
    w: &Writer<'_>,
) -> Result<(u64, u64, u64)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static TMP: AtomicU64 = AtomicU64::new(0);
    let mut sorted: Vec<&(Entry, PathBuf)> = files.iter().collect();
    sorted.sort_by_key(|(e, _)| e.data_offset);
    let mut cursor = pack.map(|p| PackCursor::new(store, rt, layout.full(&p.blob), p));
    let (mut n, mut bytes) = (0u64, 0u64);
    let pid = std::process::id();
    for (k, (e, rel)) in sorted.iter().enumerate() {
        if let Some(parent) = rel.parent() {
            w.known.ensure(w.root, parent)?;
        }
        let dest = w.root.join(rel);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(rel.file_name().unwrap_or_default());
        tmp_name.push(format!(
            ".blobpipe-{pid}-{}",
            TMP.fetch_add(1, Ordering::Relaxed)
        ));
        // Without --overwrite nothing exists at `dest` (checked before writing), so the
        // file is written in place (create_new still refuses a newcomer) and removed if
        // its hash is wrong; with --overwrite it is written beside and renamed over.
        let tmp = if w.overwrite {
            dest.with_file_name(tmp_name)
        } else {
            dest.clone()
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|err| {
                Error::io(
                    ErrorKind::Internal,
                    format!("creating {}", tmp.display()),
                    err,
                )
            })?;
        let mut h = Sha256::new();
        let res = (|| -> Result<()> {
            if e.size > 0 {
                let cur = cursor
                    .as_mut()
                    .ok_or_else(|| Error::integrity(format!("{}: no pack", e.path.display())))?;
                let hint = sorted
                    .get(k + 1)
                    .map(|(n, _)| n.data_offset + n.size)
                    .unwrap_or(0);
                cur.read(e.data_offset..e.data_offset + e.size, hint, &mut |b| {
                    h.update(b);
                    std::io::Write::write_all(&mut f, b).map_err(|err| {
                        Error::io(
                            ErrorKind::Internal,
                            format!("writing {}", tmp.display()),
                            err,
                        )
                    })
                })?;
            }
            let got = hex::encode(h.clone().finalize());
            if Some(got.as_str()) != e.sha256.as_deref() {
                return Err(Error::integrity(format!(
                    "{}: restored data has SHA-256 {got}, the manifest says {} (pack {}); the file was not written",
                    e.path.display(),
                    e.sha256.as_deref().unwrap_or("(none)"),
                    e.pack.as_deref().unwrap_or("?")
                )));
            }
            // Mode and times through the open handle (fchmod, futimens): no path lookups.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(e.mode & 0o7777))
                .map_err(|err| {
                    Error::io(
                        ErrorKind::Internal,
                        format!("setting mode of {}", tmp.display()),
                        err,
                    )
                })?;
            let t = filetime::FileTime::from_unix_time(e.mtime, e.mtime_nsec);
            filetime::set_file_handle_times(&f, Some(t), Some(t)).map_err(|err| {
                Error::io(
                    ErrorKind::Internal,
                    format!("setting times of {}", tmp.display()),
                    err,
                )
            })?;
            drop(f);
            if !w.overwrite {
                return Ok(());
            }
            // Only --overwrite can meet something at `dest` (checked before writing).
            if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                remove_existing(&dest)?;
            }
            std::fs::rename(&tmp, &dest).map_err(|err| {
                Error::io(
                    ErrorKind::Internal,
                    format!("moving into {}", dest.display()),
                    err,
                )
            })
        })();
        if let Err(err) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(err).ctx(format!("restoring {}", e.path.display()));
        }
        n += 1;
        bytes += e.size;
        w.counters.add(1, e.size);
    }
    Ok((n, bytes, cursor.map(|c| c.fetched).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            &b"../x"[..],
            b"/etc/passwd",
            b"a/../../b",
            b"a//b",
            b"./a",
            b"",
            b"a/\0",
        ] {
            let e = safe_relative(&PathBytes(bad.to_vec())).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Refused, "{bad:?}");
        }
        assert!(safe_relative(&PathBytes(b"a/b c/\xff".to_vec())).is_ok());
    }

    #[test]
    fn ensure_dir_refuses_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("evil")).unwrap();
        let e = ensure_dir(t.path(), Path::new("evil/sub")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused);
        assert!(!outside.path().join("sub").exists());
        ensure_dir(t.path(), Path::new("good/sub")).unwrap();
        assert!(t.path().join("good/sub").is_dir());
    }
}
