//! Writing restored entries into a directory: path checks, directories, files (each
//! SHA-256-checked as it is written), modes, times and symlinks.
//!
//! Safety, even against a hand-edited manifest (loading one checks all of this already:
//! `manifest::check`; these checks share its rules): a path that is absolute, empty or
//! has a `..`/`.` component is refused, and so is an entry stored below a symlink or file
//! entry, before anything is written; nothing is written through a symlink (each parent is
//! checked with `lstat`, and stored symlinks are created last, after every file); an
//! existing file is never overwritten without `--overwrite`, and that check runs before
//! anything is written. A file whose hash is wrong is removed (with `--overwrite`,
//! written beside and renamed over only when right), so a restored file is either
//! correct or absent. A file whose stored data is damaged (a frame that does not
//! decompress, a wrong hash, a missing pack) is recorded in the [`DamageLog`] and the
//! restore goes on with the next file: damage costs only the files whose bytes it holds.

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::manifest::check;
use crate::manifest::layout::Layout;
use crate::manifest::{Entry, EntryKind, Manifest, PackRecord, PathBytes};
use crate::pack::read::{read_chunks, PackCursor};
use crate::support::progress::Counters;

/// Check that a stored path is a plain relative path; return it as a `PathBuf`. The
/// rules are the manifest's own ([`check::check_path`]): a loaded manifest has passed
/// them already, this is defence in depth for manifests built in memory.
///
/// # Errors
/// `Refused` for absolute paths, `..`/`.`/empty or over-long components, NUL bytes.
pub fn safe_relative(p: &PathBytes) -> Result<PathBuf> {
    let bad = |why: &str| {
        Error::refused(format!(
            "refusing manifest path {:?}: {why} (the manifest may have been tampered with)",
            p.display()
        ))
    };
    check::check_path(&p.0).map_err(|why| bad(&why))?;
    let path = p.to_path();
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad("not a plain relative path"));
    }
    Ok(path)
}

/// Directories this restore has created or checked (relative to the target): each is
/// checked once, not once per file below it (restore is syscall-bound on small files).
#[derive(Debug, Default)]
pub(super) struct KnownDirs(std::sync::Mutex<std::collections::HashSet<PathBuf>>);

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

/// Check every selected entry before touching the disk: each path is a plain relative
/// path, and each file with data names a pack the manifest lists. Returns the paths.
///
/// # Errors
/// `Refused` for an unsafe path, `Integrity` for a reference to an unlisted pack.
pub(super) fn check_entries(m: &Manifest, entries: &[Entry]) -> Result<Vec<PathBuf>> {
    if let Some((c, a)) = check::first_under_non_dir(&m.entries) {
        let (child, anc) = (&m.entries[c], &m.entries[a]);
        return Err(Error::refused(format!(
            "refusing manifest path {:?}: it lies under {:?}, which is a stored {}, not a \
             directory (restore never writes through a symlink); nothing was written",
            child.path.display(),
            anc.path.display(),
            match &anc.target {
                Some(t) if anc.kind == EntryKind::Symlink =>
                    format!("symlink to {:?}", t.display()),
                _ => "file".to_string(),
            }
        )));
    }
    let mut rels = Vec::with_capacity(entries.len());
    for e in entries {
        rels.push(safe_relative(&e.path)?);
        if e.kind == EntryKind::File && e.size > 0 {
            let mut packs = e.packs().peekable();
            if packs.peek().is_none() {
                return Err(Error::integrity(format!(
                    "{}: names no pack, which the manifest does not list",
                    e.path.display()
                )));
            }
            for pid in packs {
                if m.pack(pid).is_none() {
                    return Err(Error::integrity(format!(
                        "{}: refers to pack {pid:?}, which the manifest does not list",
                        e.path.display()
                    )));
                }
            }
        }
    }
    Ok(rels)
}

/// Without `--overwrite`, refuse when any selected path already exists under `root`
/// (an existing directory for a stored directory is fine).
///
/// # Errors
/// `Refused`, naming the first clashes.
pub(super) fn refuse_clashes(root: &Path, entries: &[Entry], rels: &[PathBuf]) -> Result<()> {
    let mut clashes = Vec::new();
    for (e, rel) in entries.iter().zip(rels) {
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
    Ok(())
}

/// Create the stored directories, parents first (entries are path-sorted); returns how
/// many.
pub(super) fn create_dirs(
    root: &Path,
    known: &KnownDirs,
    entries: &[Entry],
    rels: &[PathBuf],
    counters: &Counters,
) -> Result<u64> {
    let mut n = 0;
    for (e, rel) in entries.iter().zip(rels) {
        if e.kind == EntryKind::Dir {
            known.ensure(root, rel)?;
            n += 1;
            counters.add(1, 0);
        }
    }
    Ok(n)
}

/// Create the stored symlinks, after every file so nothing is ever written through
/// one; returns how many.
pub(super) fn create_symlinks(
    root: &Path,
    known: &KnownDirs,
    entries: &[Entry],
    rels: &[PathBuf],
    counters: &Counters,
) -> Result<u64> {
    let mut n = 0;
    for (e, rel) in entries.iter().zip(rels) {
        if e.kind != EntryKind::Symlink {
            continue;
        }
        if let Some(parent) = rel.parent() {
            known.ensure(root, parent)?;
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
        n += 1;
        counters.add(1, 0);
    }
    Ok(n)
}

/// Set directory modes and times last, deepest first (writing inside changes mtimes).
pub(super) fn finish_dirs(root: &Path, entries: &[Entry], rels: &[PathBuf]) -> Result<()> {
    for (e, rel) in entries.iter().zip(rels).rev() {
        if e.kind == EntryKind::Dir {
            let dest = root.join(rel);
            set_mode(&dest, e.mode)?;
            set_times(&dest, e, false)?;
        }
    }
    Ok(())
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

/// Damaged files kept by path in a report at most (the rest are only counted).
pub const MAX_DAMAGED: usize = 1000;

/// A file that was not restored because its stored data is damaged.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct DamagedFile {
    /// Stored path.
    pub path: String,
    /// Pack holding its data.
    pub pack: String,
    /// What was wrong (the frame that does not decompress, the hash that differs…).
    pub error: String,
}

/// The damaged files of one restore, shared by its pack workers: the first
/// [`MAX_DAMAGED`] are kept, all are counted.
#[derive(Debug, Default)]
pub struct DamageLog(std::sync::Mutex<(Vec<DamagedFile>, u64)>);

impl DamageLog {
    pub(super) fn add(&self, e: &Entry, err: &Error) {
        tracing::warn!("not restored (damaged): {}: {err}", e.path.display());
        if let Ok(mut g) = self.0.lock() {
            g.1 += 1;
            if g.0.len() < MAX_DAMAGED {
                g.0.push(DamagedFile {
                    path: e.path.display(),
                    pack: e.pack.clone().unwrap_or_default(),
                    error: err.to_string(),
                });
            }
        }
    }

    /// The kept damaged files (sorted by path) and how many there were in all.
    pub fn take(&self) -> (Vec<DamagedFile>, u64) {
        let (mut v, n) = self
            .0
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        (v, n)
    }
}

/// Whether an error reading a file's stored data means the data is damaged or gone
/// (that file is skipped) rather than that the restore cannot go on.
fn is_damage(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Integrity | ErrorKind::NotFound)
}

/// Where and how restored files are written.
pub(super) struct Writer<'a> {
    pub(super) root: &'a Path,
    pub(super) known: &'a KnownDirs,
    pub(super) overwrite: bool,
    pub(super) counters: &'a Counters,
    pub(super) damaged: &'a DamageLog,
}

/// What restoring one pack's files did.
#[derive(Debug, Default)]
pub(super) struct PackOutcome {
    /// Files written.
    pub(super) files: u64,
    /// Their bytes.
    pub(super) bytes: u64,
    /// Compressed bytes downloaded.
    pub(super) fetched: u64,
}

/// Write `files`, whose data lies in `pack` (files stored whole) or in `chunk_packs`
/// (a chunked file: every pack its chunks are in). Each file is written, its chunks'
/// and its own SHA-256 checked, then given its mode and times.
pub(super) fn restore_files(
    store: &dyn crate::store::BlobStore,
    rt: tokio::runtime::Handle,
    layout: &Layout,
    pack: Option<&PackRecord>,
    chunk_packs: &[PackRecord],
    files: &[(Entry, PathBuf)],
    w: &Writer<'_>,
) -> Result<PackOutcome> {
    let mut chunk_fetched = 0u64;
    use std::sync::atomic::{AtomicU64, Ordering};
    static TMP: AtomicU64 = AtomicU64::new(0);
    let mut sorted: Vec<&(Entry, PathBuf)> = files.iter().collect();
    sorted.sort_by_key(|(e, _)| e.data_offset);
    let mut cursor = pack.map(|p| {
        PackCursor::new(store, rt.clone(), layout.full(&p.blob), p).with_key(layout.key().cloned())
    });
    let (mut n, mut bytes) = (0u64, 0u64);
    let pid = std::process::id();
    // Once the pack turns out to be missing, its remaining files are damaged too.
    let mut gone: Option<Error> = None;
    for (k, (e, rel)) in sorted.iter().enumerate() {
        if let Some(err) = &gone {
            if e.size > 0 {
                w.damaged.add(e, err);
                w.counters.add(1, e.size);
                continue;
            }
        }
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
        // Whether an error came from the stored data (not from writing the target).
        let mut read_failed = false;
        let res = (|| -> Result<()> {
            if !e.chunks.is_empty() {
                let mut write_failed = false;
                let r = read_chunks(
                    store,
                    &rt,
                    layout,
                    chunk_packs,
                    e,
                    &mut chunk_fetched,
                    &mut |b| {
                        h.update(b);
                        std::io::Write::write_all(&mut f, b).map_err(|err| {
                            write_failed = true;
                            Error::io(
                                ErrorKind::Internal,
                                format!("writing {}", tmp.display()),
                                err,
                            )
                        })
                    },
                );
                r.inspect_err(|_| read_failed = !write_failed)?;
            } else if e.size > 0 {
                let cur = cursor
                    .as_mut()
                    .ok_or_else(|| Error::integrity(format!("{}: no pack", e.path.display())))?;
                let hint = sorted
                    .get(k + 1)
                    .map(|(n, _)| n.data_offset + n.size)
                    .unwrap_or(0);
                let mut write_failed = false;
                cur.read(e.data_offset..e.data_offset + e.size, hint, &mut |b| {
                    h.update(b);
                    std::io::Write::write_all(&mut f, b).map_err(|err| {
                        write_failed = true;
                        Error::io(
                            ErrorKind::Internal,
                            format!("writing {}", tmp.display()),
                            err,
                        )
                    })
                })
                .inspect_err(|_| read_failed = !write_failed)?;
            }
            let got = hex::encode(h.clone().finalize());
            if Some(got.as_str()) != e.sha256.as_deref() {
                read_failed = true;
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
            if read_failed && is_damage(&err) {
                w.damaged.add(e, &err);
                w.counters.add(1, e.size);
                if err.kind() == ErrorKind::NotFound {
                    gone = Some(err);
                }
                continue;
            }
            return Err(err).ctx(format!("restoring {}", e.path.display()));
        }
        n += 1;
        bytes += e.size;
        w.counters.add(1, e.size);
    }
    Ok(PackOutcome {
        files: n,
        bytes,
        fetched: cursor.map(|c| c.fetched).unwrap_or(0) + chunk_fetched,
    })
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
    fn damage_log_keeps_a_bounded_list_and_counts_all() {
        let log = DamageLog::default();
        let err = Error::integrity("frame 3 does not decompress");
        for i in (0..MAX_DAMAGED + 25).rev() {
            let e = Entry {
                path: PathBytes(format!("f{i:05}").into_bytes()),
                kind: EntryKind::File,
                size: 1,
                mode: 0o644,
                mtime: 0,
                mtime_nsec: 0,
                uid: 0,
                gid: 0,
                sha256: None,
                target: None,
                pack: Some("p".into()),
                offset: 0,
                data_offset: 0,
                inconsistent: false,
                ino: None,
                ctime: None,
                chunks: Vec::new(),
                blob: None,
            };
            log.add(&e, &err);
        }
        let (kept, total) = log.take();
        assert_eq!(total, (MAX_DAMAGED + 25) as u64);
        assert_eq!(kept.len(), MAX_DAMAGED);
        assert!(
            kept.windows(2).all(|w| w[0].path < w[1].path),
            "sorted by path"
        );
        assert!(kept[0].error.contains("frame 3"), "{:?}", kept[0]);
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
