//! Reading one file at backup time, with the consistency checks.
//!
//! A file is opened, `fstat`ed, handed to the caller's writer (which stores exactly the
//! size seen by that first `fstat`), and `fstat`ed again on the open handle. If it
//! changed while being read, it is read once more; if it changes again it is stored
//! anyway and marked inconsistent. A read error mid-file does not break the stream the
//! writer produces: the rest reads as end-of-file (the writer pads) and the file is
//! reported unreadable.
//!
//! [`unchanged`] decides whether an incremental may reuse the parent's entry instead of
//! reading the file at all.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Stat;
use crate::error::{Error, Result};
use crate::manifest::{Entry, EntryKind, PathBytes};

/// Why a file was not stored.
#[derive(Debug)]
pub enum FileErr {
    /// The file could not be opened or read: a problem of the run, not a failure.
    Unreadable(String),
    /// The writer failed: the partition fails.
    Fatal(Error),
}

/// A file that was read and handed to the writer.
#[derive(Debug)]
pub struct ReadFile<T> {
    /// Metadata before the last read (what the stored header says).
    pub stat: Stat,
    /// What the writer returned for the last read.
    pub written: T,
    /// The file kept changing while read (stored anyway).
    pub inconsistent: bool,
}

/// Read the file at `abs` (entry `path`) into `write`, reading it once more if it
/// changed while being read. `opened` counts every open attempt.
///
/// `write` gets the file's stat and a reader that yields at most what the file holds; it
/// stores exactly `stat.size` bytes and returns its result and whether the bytes read
/// differed in length from `stat.size`.
///
/// # Errors
/// [`FileErr::Unreadable`] when the file cannot be opened, stat'ed or read;
/// [`FileErr::Fatal`] when `write` fails.
pub fn read_file<T>(
    abs: &Path,
    path: &PathBytes,
    opened: &AtomicU64,
    mut write: impl FnMut(&Stat, &mut dyn Read) -> Result<(T, bool)>,
) -> std::result::Result<ReadFile<T>, FileErr> {
    let mut last = None;
    for attempt in 0..2 {
        opened.fetch_add(1, Ordering::Relaxed);
        let f = std::fs::File::open(abs)
            .map_err(|e| FileErr::Unreadable(format!("cannot open: {e}")))?;
        let before = f
            .metadata()
            .map(|m| Stat::from_meta(&m))
            .map_err(|e| FileErr::Unreadable(format!("cannot stat: {e}")))?;
        let mut reader = ErrorCapture {
            inner: &f,
            error: None,
        };
        let (written, odd_length) = write(&before, &mut reader).map_err(FileErr::Fatal)?;
        if let Some(e) = reader.error {
            return Err(FileErr::Unreadable(format!("read error: {e}")));
        }
        // fstat on the open file: sees every change to what was read, no path lookup.
        let after = f
            .metadata()
            .map(|m| Stat::from_meta(&m))
            .map_err(|e| FileErr::Unreadable(format!("cannot stat after reading: {e}")))?;
        let changed = odd_length || before.changed(&after);
        last = Some(ReadFile {
            stat: before,
            written,
            inconsistent: changed,
        });
        if !changed {
            break;
        }
        if attempt == 0 {
            tracing::info!(
                "{} changed while being read; reading it again",
                path.display()
            );
        } else {
            tracing::warn!("{} kept changing; stored as inconsistent", path.display());
        }
    }
    last.ok_or_else(|| FileErr::Fatal(Error::internal("file was never read")))
}

/// Turns a read error into end-of-file (so the tar stream stays well-formed: the rest of
/// the entry is zero-padded) and remembers it, so the file is reported unreadable.
struct ErrorCapture<R> {
    inner: R,
    error: Option<std::io::Error>,
}

impl<R: Read> Read for ErrorCapture<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.error.is_some() {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.error = Some(e);
                Ok(0)
            }
        }
    }
}

/// Whether the parent's entry `prev` (for the same path) still describes what is on
/// disk: same kind, size, mode, mtime (to the nanosecond), inode and ctime, and for
/// symlinks the same target. Entries the parent stored as inconsistent are always read
/// again.
pub fn unchanged(prev: &Entry, kind: EntryKind, st: &Stat, abs: &Path) -> bool {
    let same = prev.kind == kind
        && !prev.inconsistent
        && (prev.pack.is_some() || !prev.chunks.is_empty())
        && prev.mode == st.mode
        && (prev.mtime, prev.mtime_nsec) == (st.mtime, st.mtime_nsec)
        && (kind != EntryKind::File || prev.size == st.size)
        && prev.ino.is_none_or(|ino| ino == st.ino)
        && prev.ctime.is_none_or(|c| c == st.ctime)
        && prev.uid == st.uid
        && prev.gid == st.gid;
    if !same {
        return false;
    }
    if kind == EntryKind::Symlink {
        let Ok(t) = std::fs::read_link(abs) else {
            return false;
        };
        if prev.target.as_ref().map(|x| x.0.as_slice()) != Some(t.as_os_str().as_bytes()) {
            return false;
        }
    }
    true
}
