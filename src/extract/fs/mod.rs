//! The filesystem source: [`walk`] plans (lists the tree, metadata only), [`read`] reads
//! one file at backup time with the consistency checks (changed while read, unchanged
//! since the parent snapshot).
//!
//! Neither knows where the bytes go: reading hands each file to a caller-supplied writer
//! (the engine appends it to a pack), so this stage stays free of packs and stores.

pub mod read;
pub mod walk;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::manifest::{EntryKind, PathBytes};

/// Metadata of one path, read with `lstat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Kind (`None` for sockets, devices, fifos: not backed up).
    pub kind: Option<EntryKind>,
    /// Size.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time (seconds).
    pub mtime: i64,
    /// Modification time (nanoseconds part).
    pub mtime_nsec: u32,
    /// Change time (seconds), for change detection.
    pub ctime: i64,
    /// Inode.
    pub ino: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Stat {
    /// Stat from `std::fs::Metadata` (from `symlink_metadata` or an open file).
    pub fn from_meta(m: &std::fs::Metadata) -> Self {
        let ft = m.file_type();
        let kind = if ft.is_file() {
            Some(EntryKind::File)
        } else if ft.is_dir() {
            Some(EntryKind::Dir)
        } else if ft.is_symlink() {
            Some(EntryKind::Symlink)
        } else {
            None
        };
        Stat {
            kind,
            size: if ft.is_file() { m.len() } else { 0 },
            mode: m.mode() & 0o7777,
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec() as u32,
            ctime: m.ctime(),
            ino: m.ino(),
            uid: m.uid(),
            gid: m.gid(),
        }
    }

    /// Whether content may have changed between two stats of the same file.
    pub fn changed(&self, other: &Stat) -> bool {
        self.size != other.size
            || self.mtime != other.mtime
            || self.mtime_nsec != other.mtime_nsec
            || self.ino != other.ino
    }
}

/// The absolute path of `rel` under `root`.
pub fn abs(root: &Path, rel: &PathBytes) -> PathBuf {
    root.join(rel.to_path())
}
