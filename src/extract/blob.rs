//! A blob container as a source (`source.type = "blob"`): which blobs, in which
//! partitions, and when an incremental may reuse the parent's copy.
//!
//! A source knows no store (docs/architecture.md): the engine lists the container
//! (`store::azure::source`) and hands every listed blob to [`BlobSplitter`] as a
//! [`Listed`]; this module decides what becomes of it and reads nothing itself.
//!
//! - **Names become paths.** A blob's name relative to the source prefix is its entry
//!   path, so the snapshot lists, restores and diffs like a tree. A name that cannot be a
//!   path (empty or `.`/`..` segments, over 4095 bytes, or a blob *below* another blob,
//!   `a` and `a/b`) is reported as a problem of the run, never silently dropped.
//!   Zero-length folder markers (`dir/`) carry no data and are skipped; a hierarchical
//!   namespace's directory blobs (`hdi_isfolder=true`) become directory entries.
//! - **Partitions by name range, balanced by size.** The listing arrives in name order,
//!   a page at a time; [`BlobSplitter`] cuts it with the filesystem's
//!   [`Splitter`](super::Splitter) (content-defined cuts on the name hash, bounded by
//!   `partitions.size` and `partitions.max_entries`), so memory holds a partition or two
//!   of listed blobs, never the container.
//! - **Incrementals by ETag.** A blob whose ETag and size match the parent's entry is not
//!   read: its stored bytes are reused, and only its index tags and tier (which change
//!   without a new ETag) are taken from the new listing ([`unchanged`]).
//! - **Archive is reported, not read.** A blob in the Archive tier cannot be downloaded;
//!   unless the parent already holds the same version, it is a problem of the run.

use std::collections::VecDeque;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::{Piece, PlannedEntry, Problem, Splitter};
use crate::error::{Error, Result};
use crate::manifest::segment::Guard;
use crate::manifest::{BlobMeta, Entry, EntryKind, PathBytes};

/// One blob as listed, in the extract stage's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Entry path: the blob name relative to the source prefix.
    pub path: PathBytes,
    /// Size in bytes.
    pub size: u64,
    /// Last modification (becomes the entry's mtime).
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// Whether the blob stands for a directory (hierarchical namespace).
    pub dir: bool,
    /// Whether it is in the Archive tier (cannot be read).
    pub archived: bool,
    /// ETag, Content-MD5, content type, metadata, tags, tier.
    pub meta: BlobMeta,
}

/// Include/exclude globs on blob names (gitignore syntax, as the filesystem source).
#[derive(Debug)]
pub struct Selector {
    include: Option<Gitignore>,
    exclude: Option<Gitignore>,
}

impl Selector {
    /// Compile `include` and `exclude`.
    ///
    /// # Errors
    /// `Config` for a bad glob (the spec checker refuses them first).
    pub fn new(include: &[String], exclude: &[String]) -> Result<Selector> {
        let build = |globs: &[String]| -> Result<Option<Gitignore>> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut b = GitignoreBuilder::new("/");
            for g in globs {
                super::fs::walk::check_glob(g)
                    .map_err(|e| Error::config(format!("invalid glob {g:?}: {e}")))?;
                b.add_line(None, g)
                    .map_err(|e| Error::config(format!("invalid glob {g:?}: {e}")))?;
            }
            b.build()
                .map(Some)
                .map_err(|e| Error::config(format!("invalid globs: {e}")))
        };
        Ok(Selector {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    /// Whether the blob `name` is selected: matched by an include (itself or a parent
    /// "directory") when there are includes, and by no exclude.
    pub fn takes(&self, name: &str, dir: bool) -> bool {
        let p = std::path::Path::new(name);
        let hit = |g: &Gitignore| g.matched_path_or_any_parents(p, dir).is_ignore();
        self.include.as_ref().is_none_or(hit) && !self.exclude.as_ref().is_some_and(hit)
    }
}

/// Whether the parent's entry `prev` (same path) holds the listed version of the blob:
/// same ETag and size, stored (not inconsistent). Tags and tier may differ: they change
/// without a new ETag and are taken from the listing.
pub fn unchanged(prev: &Entry, item: &Listed) -> bool {
    let kind = if item.dir {
        EntryKind::Dir
    } else {
        EntryKind::File
    };
    prev.kind == kind
        && !prev.inconsistent
        && prev.pack.is_some()
        && prev.size == item.size
        && prev
            .blob
            .as_ref()
            .is_some_and(|b| !b.etag.is_empty() && b.etag == item.meta.etag)
}

/// The parent's entry for an unchanged blob, with the listing's tags and tier.
pub fn reused(prev: &Entry, item: &Listed) -> Entry {
    let mut e = prev.clone();
    if let Some(b) = e.blob.as_mut() {
        b.tags.clone_from(&item.meta.tags);
        b.tier.clone_from(&item.meta.tier);
    }
    e
}

/// What became of one listed name.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Back it up.
    Take(Box<Listed>),
    /// Not selected, or a folder marker: nothing to keep.
    Skip,
    /// Cannot be kept; the run reports it.
    Problem(Problem),
}

/// Facts of one listed blob, in store-neutral terms (the engine fills it from the
/// store's listing).
#[derive(Debug, Clone)]
pub struct RawBlob {
    /// Name relative to the source prefix.
    pub name: String,
    /// Size.
    pub size: u64,
    /// Last modification.
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// Whether it is a block blob.
    pub block_blob: bool,
    /// Tier name (`hot`, …).
    pub tier: String,
    /// ETag, MD5, type, metadata, tags (tier filled from `tier`).
    pub meta: BlobMeta,
}

/// Turn a listed blob into a [`Verdict`] (selection, name rules, kind).
pub fn judge(sel: &Selector, raw: RawBlob) -> Verdict {
    let problem = |why: String| {
        Verdict::Problem(Problem {
            path: PathBytes(raw.name.as_bytes().to_vec()),
            error: why,
        })
    };
    let is_dir = raw
        .meta
        .metadata
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("hdi_isfolder") && v.eq_ignore_ascii_case("true"));
    if raw.size == 0 && raw.name.ends_with('/') {
        return Verdict::Skip;
    }
    if !sel.takes(&raw.name, is_dir) {
        return Verdict::Skip;
    }
    if let Err(why) = crate::manifest::check::check_path(raw.name.as_bytes()) {
        return problem(format!(
            "not backed up: the blob name cannot be stored as a path ({why})"
        ));
    }
    if !raw.block_blob {
        return problem(
            "not backed up: only block blobs are (this is a page or append blob)".into(),
        );
    }
    let mut meta = raw.meta;
    meta.tier = Some(raw.tier.clone());
    Verdict::Take(Box::new(Listed {
        path: PathBytes(raw.name.into_bytes()),
        size: if is_dir { 0 } else { raw.size },
        last_modified: raw.last_modified,
        dir: is_dir,
        archived: raw.tier == "archive",
        meta,
    }))
}

/// Cuts the name-ordered listing into partitions ([`Splitter`]); every [`Piece`] carries
/// its listed blobs in `blobs`, one per entry. Checks what the manifest will demand of
/// the names (strictly increasing, nothing below a blob) and reports offenders as
/// problems instead of partitioning them.
#[derive(Debug)]
pub struct BlobSplitter {
    split: Splitter,
    pending: VecDeque<Listed>,
    guard: Guard,
}

impl BlobSplitter {
    /// A splitter aiming at `size` bytes (plus 4 KiB a blob) and `max_entries` blobs per
    /// partition.
    pub fn new(size: u64, max_entries: usize) -> Self {
        BlobSplitter {
            split: Splitter::new(size, max_entries),
            pending: VecDeque::new(),
            guard: Guard::default(),
        }
    }

    fn attach(pending: &mut VecDeque<Listed>, mut p: Piece) -> Piece {
        let n = p.entries.len().min(pending.len());
        p.blobs = pending.drain(..n).collect();
        // Name the partition by its versions too: a resumed attempt redoes a partition
        // in which a blob changed between attempts.
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(p.digest.as_bytes());
        for b in &p.blobs {
            h.update((b.meta.etag.len() as u64).to_le_bytes());
            h.update(b.meta.etag.as_bytes());
        }
        p.digest = hex::encode(&h.finalize()[..12]);
        p
    }

    /// Add the next listed verdict, emitting finished partitions.
    ///
    /// # Errors
    /// `emit`'s errors.
    pub fn push(&mut self, v: Verdict, emit: &mut dyn FnMut(Piece) -> Result<()>) -> Result<()> {
        match v {
            Verdict::Skip => Ok(()),
            Verdict::Problem(p) => {
                self.split.problem(p);
                Ok(())
            }
            Verdict::Take(item) => {
                let probe = Entry {
                    chunks: Vec::new(),
                    path: item.path.clone(),
                    kind: if item.dir {
                        EntryKind::Dir
                    } else {
                        EntryKind::File
                    },
                    size: item.size,
                    mode: 0,
                    mtime: 0,
                    mtime_nsec: 0,
                    uid: 0,
                    gid: 0,
                    sha256: None,
                    target: None,
                    pack: None,
                    offset: 0,
                    data_offset: 0,
                    inconsistent: false,
                    ino: None,
                    ctime: None,
                    blob: None,
                };
                if let Err(why) = self.guard.next(&probe) {
                    self.split.problem(Problem {
                        path: item.path.clone(),
                        error: format!("not backed up: {why}"),
                    });
                    return Ok(());
                }
                let pe = PlannedEntry {
                    path: item.path.clone(),
                    kind: probe.kind,
                    size: item.size,
                };
                self.pending.push_back(*item);
                let pending = &mut self.pending;
                self.split.push(pe, &mut |p| emit(Self::attach(pending, p)))
            }
        }
    }

    /// Emit the last partition (an empty container still gets one).
    ///
    /// # Errors
    /// `emit`'s errors.
    pub fn finish(self, emit: &mut dyn FnMut(Piece) -> Result<()>) -> Result<()> {
        let mut pending = self.pending;
        self.split
            .finish(&mut |p| emit(Self::attach(&mut pending, p)))
    }
}

/// The entry of a blob read now: a file (mode 0644, mtime = last modified) or a
/// directory, with its blob properties; the caller fills hash and location.
pub fn entry_of(item: &Listed) -> Entry {
    let secs = item.last_modified.timestamp();
    Entry {
        chunks: Vec::new(),
        path: item.path.clone(),
        kind: if item.dir {
            EntryKind::Dir
        } else {
            EntryKind::File
        },
        size: 0,
        mode: if item.dir { 0o755 } else { 0o644 },
        mtime: secs,
        mtime_nsec: item.last_modified.timestamp_subsec_nanos(),
        uid: 0,
        gid: 0,
        sha256: None,
        target: None,
        pack: None,
        offset: 0,
        data_offset: 0,
        inconsistent: false,
        ino: None,
        ctime: None,
        blob: Some(Box::new(item.meta.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, size: u64) -> RawBlob {
        RawBlob {
            name: name.into(),
            size,
            last_modified: chrono::DateTime::from_timestamp(1_700_000_000, 5).unwrap(),
            block_blob: true,
            tier: "hot".into(),
            meta: BlobMeta {
                etag: format!("0x{size:x}"),
                ..BlobMeta::default()
            },
        }
    }

    fn split(names: &[(&str, u64)], sel: &Selector) -> (Vec<Piece>, Vec<String>) {
        let mut s = BlobSplitter::new(64 << 10, 16);
        let mut out = Vec::new();
        let mut emit = |p: Piece| {
            out.push(p);
            Ok(())
        };
        for (n, size) in names {
            s.push(judge(sel, raw(n, *size)), &mut emit).unwrap();
        }
        s.finish(&mut emit).unwrap();
        let problems = out
            .iter()
            .flat_map(|p| p.problems.iter().map(|q| q.path.display()))
            .collect();
        (out, problems)
    }

    #[test]
    fn globs_select_names_and_parents() {
        let sel = Selector::new(&["raw/".into(), "*.csv".into()], &["*.tmp".into()]).unwrap();
        assert!(sel.takes("raw/a/b.parquet", false));
        assert!(sel.takes("other/x.csv", false));
        assert!(!sel.takes("raw/a/b.tmp", false));
        assert!(!sel.takes("other/x.json", false));
        let all = Selector::new(&[], &[]).unwrap();
        assert!(all.takes("anything/at/all", false));
    }

    #[test]
    fn partitions_carry_their_blobs_and_bad_names_become_problems() {
        let sel = Selector::new(&[], &[]).unwrap();
        let mut names: Vec<(String, u64)> =
            (0..100).map(|i| (format!("d/f{i:03}"), 10_000)).collect();
        names.insert(0, ("a".into(), 1));
        names.insert(1, ("a/under".into(), 1)); // below the blob "a"
        names.insert(2, ("b//c".into(), 1)); // empty segment
        names.insert(3, ("c/".into(), 0)); // folder marker: skipped quietly
        let refs: Vec<(&str, u64)> = names.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        let (pieces, problems) = split(&refs, &sel);
        assert!(pieces.len() > 3, "{}", pieces.len());
        assert_eq!(problems, vec!["a/under", "b//c"]);
        for p in &pieces {
            assert_eq!(p.entries.len(), p.blobs.len());
            for (e, b) in p.entries.iter().zip(&p.blobs) {
                assert_eq!(e.path, b.path);
            }
        }
        let total: usize = pieces.iter().map(|p| p.blobs.len()).sum();
        assert_eq!(total, 101);
    }

    #[test]
    fn a_changed_etag_renames_its_partition() {
        let sel = Selector::new(&[], &[]).unwrap();
        let (a, _) = split(&[("x", 1), ("y", 2)], &sel);
        let (b, _) = split(&[("x", 1), ("y", 2)], &sel);
        assert_eq!(a[0].digest, b[0].digest);
        let mut s = BlobSplitter::new(64 << 10, 16);
        let mut out = Vec::new();
        let mut r = raw("y", 2);
        r.meta.etag = "changed".into();
        s.push(judge(&sel, raw("x", 1)), &mut |p| {
            out.push(p);
            Ok(())
        })
        .unwrap();
        s.push(judge(&sel, r), &mut |p| {
            out.push(p);
            Ok(())
        })
        .unwrap();
        s.finish(&mut |p| {
            out.push(p);
            Ok(())
        })
        .unwrap();
        assert_ne!(out[0].digest, a[0].digest);
    }

    #[test]
    fn unchanged_needs_the_same_etag_and_size_and_keeps_new_tags() {
        let sel = Selector::new(&[], &[]).unwrap();
        let Verdict::Take(item) = judge(&sel, raw("k", 5)) else {
            panic!("taken")
        };
        let mut prev = entry_of(&item);
        prev.size = 5;
        prev.pack = Some("p".into());
        assert!(unchanged(&prev, &item));
        let mut tagged = (*item).clone();
        tagged.meta.tags.insert("t".into(), "1".into());
        assert!(unchanged(&prev, &tagged));
        assert_eq!(
            reused(&prev, &tagged)
                .blob
                .unwrap()
                .tags
                .get("t")
                .map(String::as_str),
            Some("1")
        );
        let mut other = (*item).clone();
        other.meta.etag = "new".into();
        assert!(!unchanged(&prev, &other));
        prev.inconsistent = true;
        assert!(!unchanged(&prev, &item));
    }
}
