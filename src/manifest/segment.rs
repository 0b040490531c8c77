//! Manifest segments: a snapshot's entries in bounded, content-addressed pieces.
//!
//! A format-2 manifest does not hold its entries. Each partition of a filesystem backup
//! writes its entries (sorted by path) as one **segment**,
//! `segments/<aa>/<sha256>.jsonl.gz` — gzip JSON Lines of `entry` lines — and the
//! manifest lists the segments in path order with their path range, counts and the
//! SHA-256 of their uncompressed lines ([`SegmentRef`]). Why:
//!
//! * Memory: a writer holds one partition's entries at a time, a reader one segment's;
//!   neither holds a snapshot's entry list. Partitions are bounded by configuration
//!   (`partitions.max_entries`), so segments are too.
//! * An unchanged partition costs nothing: its entries (reused from the parent, byte for
//!   byte) hash to the parent's segment, which already exists and is only referenced.
//! * A path lookup reads the segments whose range covers the path, not the manifest.
//!
//! Segments are untrusted input like manifests: [`decode`] checks the hash, the count,
//! the range and every entry (the same rules as [`super::check`]); [`Guard`] carries the
//! cross-segment rules (strict order; nothing stored below a symlink or a file) with
//! state bounded by the length of one path.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::check;
use super::layout::Layout;
use super::{Entry, EntryKind, Line, Manifest, PackRecord, PathBytes};
use crate::error::{Error, Result};
use crate::store::BlobStore;

/// Entries a reader hands out per batch from an in-memory (format 1) manifest.
const INLINE_BATCH: usize = 4096;

/// Paths listed by name in a run's report or a manifest header (unreadable,
/// inconsistent) at most; the totals count them all.
pub const MAX_LISTED: usize = 1000;

/// One segment as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// Blob name relative to the prefix (`segments/<aa>/<sha256>.jsonl.gz`).
    pub blob: String,
    /// SHA-256 (lowercase hex) of the uncompressed lines; names the blob.
    pub sha256: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// Entries in the segment (at least one).
    pub entries: u64,
    /// Path of the first entry.
    pub first: PathBytes,
    /// Path of the last entry.
    pub last: PathBytes,
    /// Files among the entries.
    #[serde(default)]
    pub files: u64,
    /// Directories among the entries.
    #[serde(default)]
    pub dirs: u64,
    /// Symlinks among the entries.
    #[serde(default)]
    pub symlinks: u64,
    /// Sum of the files' sizes.
    #[serde(default)]
    pub bytes: u64,
    /// Files stored as inconsistent.
    #[serde(default)]
    pub inconsistent: u64,
    /// Files stored as content-defined chunks (omitted when none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunked: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SegmentRef {
    /// Whether some path starting with `prefix` can lie in this segment's range.
    pub fn may_hold_prefix(&self, prefix: &[u8]) -> bool {
        self.last.0.as_slice() >= prefix
            && (self.first.0.as_slice() <= prefix || self.first.0.starts_with(prefix))
    }

    /// Whether the segment's range meets `[lo, hi)` (`None`: unbounded).
    pub fn meets(&self, lo: Option<&[u8]>, hi: Option<&[u8]>) -> bool {
        lo.is_none_or(|lo| self.last.0.as_slice() >= lo)
            && hi.is_none_or(|hi| self.first.0.as_slice() < hi)
    }
}

/// Blob name (relative to the prefix) of the segment whose lines hash to `sha256`.
pub fn blob_name(sha256: &str) -> String {
    format!(
        "segments/{}/{sha256}.jsonl.gz",
        &sha256[..2.min(sha256.len())]
    )
}

/// Encode path-sorted `entries` (at least one) as a segment: its blob and its reference.
///
/// # Errors
/// `Internal` for an empty or unsorted list (a bug of the caller) or an encoding bug.
pub fn encode(entries: &[Entry]) -> Result<(Vec<u8>, SegmentRef)> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Err(Error::internal("an empty segment"));
    };
    if entries.windows(2).any(|w| w[0].path >= w[1].path) {
        return Err(Error::internal("segment entries are not sorted"));
    }
    let mut raw = Vec::with_capacity(entries.len() * 160);
    let mut r = SegmentRef {
        blob: String::new(),
        sha256: String::new(),
        size: 0,
        entries: entries.len() as u64,
        first: first.path.clone(),
        last: last.path.clone(),
        files: 0,
        dirs: 0,
        symlinks: 0,
        bytes: 0,
        inconsistent: 0,
        chunked: 0,
    };
    for e in entries {
        match e.kind {
            EntryKind::File => {
                r.files += 1;
                r.bytes += e.size;
            }
            EntryKind::Dir => r.dirs += 1,
            EntryKind::Symlink => r.symlinks += 1,
        }
        r.inconsistent += u64::from(e.inconsistent);
        r.chunked += u64::from(!e.chunks.is_empty());
        // Line::Entry borrows nothing: serialize the entry with its type tag.
        serde_json::to_writer(&mut raw, &TaggedEntry { r#type: "entry", e })
            .map_err(|e| Error::internal(format!("encoding segment: {e}")))?;
        raw.push(b'\n');
    }
    r.sha256 = hex::encode(Sha256::digest(&raw));
    r.blob = blob_name(&r.sha256);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&raw)
        .map_err(|e| Error::internal(format!("encoding segment: {e}")))?;
    let body = gz
        .finish()
        .map_err(|e| Error::internal(format!("encoding segment: {e}")))?;
    r.size = body.len() as u64;
    Ok((body, r))
}

#[derive(Serialize)]
struct TaggedEntry<'a> {
    r#type: &'static str,
    #[serde(flatten)]
    e: &'a Entry,
}

/// Decode segment blob `data` that the manifest lists as `r`, checking it against `r`
/// (hash, count, first and last path, order) and every entry against `packs` (the
/// manifest's pack table) with the rules of [`super::check`].
///
/// # Errors
/// `Integrity`, naming the segment, the line and the field.
pub fn decode(
    data: &[u8],
    r: &SegmentRef,
    packs: &HashMap<&str, &PackRecord>,
) -> Result<Vec<Entry>> {
    let bad = |why: String| Error::integrity(format!("segment {}: {why}", r.blob));
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(data), &mut raw)
        .map_err(|e| bad(format!("not valid gzip: {e}")))?;
    if hex::encode(Sha256::digest(&raw)) != r.sha256 {
        return Err(bad(
            "its content does not hash to the SHA-256 the manifest lists (damaged or replaced)"
                .into(),
        ));
    }
    let mut out: Vec<Entry> = Vec::with_capacity(r.entries.min(1 << 20) as usize);
    for (i, line) in raw.lines().enumerate() {
        let line = line.map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
        if line.is_empty() {
            continue;
        }
        let e = match serde_json::from_str::<Line>(&line) {
            Ok(Line::Entry(e)) => e,
            Ok(_) => return Err(bad(format!("line {}: not an entry line", i + 1))),
            Err(e) => return Err(bad(format!("line {}: {e}", i + 1))),
        };
        check::check_entry_at(&e, packs).map_err(|(f, w)| {
            bad(format!(
                "line {}, entry {:?}: {f}: {w}",
                i + 1,
                e.path.display()
            ))
        })?;
        if out.last().is_some_and(|p| p.path >= e.path) {
            return Err(bad(format!(
                "line {}, entry {:?}: path: entries not sorted (or listed twice) here",
                i + 1,
                e.path.display()
            )));
        }
        out.push(e);
    }
    if out.len() as u64 != r.entries {
        return Err(bad(format!(
            "holds {} entries, the manifest says {}",
            out.len(),
            r.entries
        )));
    }
    if out.first().map(|e| &e.path) != Some(&r.first)
        || out.last().map(|e| &e.path) != Some(&r.last)
    {
        return Err(bad(
            "its first or last path differs from the manifest's".into()
        ));
    }
    Ok(out)
}

/// The cross-entry rules of a path-sorted entry stream: strictly increasing paths, and
/// no entry below an entry that is a symlink or a file.
///
/// A non-directory `a` can only be an ancestor of paths in `a/…`, which sort before
/// `a0` (`'0'` follows `'/'`). So the guard keeps the non-directories whose window
/// `[a, a0)` is still open; every one of them is a prefix of the current path, which
/// bounds the state by the length of one path, not by the number of entries.
#[derive(Debug, Default)]
pub struct Guard {
    last: Option<PathBytes>,
    /// Window ends (`a` + `'0'`) of open non-directory entries, with their description.
    open: BTreeSet<(Vec<u8>, String)>,
}

impl Guard {
    /// Check the next entry of the stream.
    ///
    /// # Errors
    /// The rule broken, as text (the caller names the record).
    pub fn next(&mut self, e: &Entry) -> std::result::Result<(), String> {
        let p = &e.path.0;
        if self.last.as_ref().is_some_and(|l| &l.0 >= p) {
            return Err("entries not sorted (or listed twice) here".into());
        }
        self.last = Some(e.path.clone());
        while let Some(first) = self.open.first() {
            if first.0.as_slice() <= p.as_slice() {
                self.open.pop_first();
            } else {
                break;
            }
        }
        for (i, _) in p.iter().enumerate().filter(|(_, b)| **b == b'/') {
            let mut end = p[..i].to_vec();
            end.push(b'0');
            if let Some((_, what)) = self
                .open
                .range((end.clone(), String::new())..)
                .next()
                .filter(|(k, _)| *k == end)
            {
                return Err(format!(
                    "lies under {:?}, which is {what}, not a directory; restoring it would write \
                     through it",
                    String::from_utf8_lossy(&p[..i])
                ));
            }
        }
        if e.kind != EntryKind::Dir {
            let mut end = p.clone();
            end.push(b'0');
            self.open.insert((end, check::describe_kind(e)));
        }
        Ok(())
    }
}

/// Reads a snapshot's entries in path order, a bounded batch at a time: the segments of
/// a format-2 manifest one by one (each checked by [`decode`] and [`Guard`]), or the
/// entries of an in-memory manifest in batches.
pub struct EntryReader<'a> {
    store: &'a dyn BlobStore,
    layout: &'a Layout,
    m: &'a Manifest,
    packs: HashMap<&'a str, &'a PackRecord>,
    next_segment: usize,
    next_inline: usize,
    guard: Guard,
    prefix: Option<Vec<u8>>,
    range: (Option<Vec<u8>>, Option<Vec<u8>>),
    /// Compressed segment bytes downloaded so far.
    pub bytes_read: u64,
    /// Segments downloaded so far.
    pub segments_read: u64,
}

impl<'a> EntryReader<'a> {
    /// A reader of all of `m`'s entries.
    pub fn new(store: &'a dyn BlobStore, layout: &'a Layout, m: &'a Manifest) -> Self {
        EntryReader {
            store,
            layout,
            m,
            // Segments name the packs as they were written; a repacked one is checked
            // against the manifest's own record of it, then relocated.
            packs: m
                .packs
                .iter()
                .chain(m.moved.iter().flat_map(|mv| mv.old_packs()))
                .map(|p| (p.id.as_str(), p))
                .collect(),
            next_segment: 0,
            next_inline: 0,
            guard: Guard::default(),
            prefix: None,
            range: (None, None),
            bytes_read: 0,
            segments_read: 0,
        }
    }

    /// Only read segments that may hold paths starting with one of `prefixes` (none: all
    /// segments). Entries outside are still returned from the segments read; callers
    /// filter. A path-restricted reader checks order and ancestors only across what it
    /// reads (restore checks again on disk).
    pub fn with_prefix(mut self, prefix: Option<Vec<u8>>) -> Self {
        self.prefix = prefix;
        self
    }

    /// Only read segments whose range meets `[lo, hi)`; entries outside are dropped.
    pub fn within(mut self, lo: Option<Vec<u8>>, hi: Option<Vec<u8>>) -> Self {
        self.range = (lo, hi);
        self
    }

    fn in_range(&self, p: &[u8]) -> bool {
        self.range.0.as_deref().is_none_or(|lo| p >= lo)
            && self.range.1.as_deref().is_none_or(|hi| p < hi)
    }

    /// The next batch of entries in path order; `None` at the end.
    ///
    /// # Errors
    /// `Store` when a segment cannot be read, `Integrity` when one is damaged.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Entry>>> {
        if self.m.segments.is_empty() {
            if self.next_inline >= self.m.entries.len() {
                return Ok(None);
            }
            let end = (self.next_inline + INLINE_BATCH).min(self.m.entries.len());
            let batch: Vec<Entry> = self.m.entries[self.next_inline..end]
                .iter()
                .filter(|e| self.in_range(&e.path.0))
                .cloned()
                .collect();
            self.next_inline = end;
            return Ok(Some(batch));
        }
        while let Some(r) = self.m.segments.get(self.next_segment) {
            self.next_segment += 1;
            if self
                .prefix
                .as_deref()
                .is_some_and(|p| !r.may_hold_prefix(p))
                || !r.meets(self.range.0.as_deref(), self.range.1.as_deref())
            {
                continue;
            }
            let mut entries = self.read_segment(self.next_segment - 1, true).await?;
            entries.retain(|e| self.in_range(&e.path.0));
            return Ok(Some(entries));
        }
        Ok(None)
    }

    /// Read segment `i` of the manifest (checked against its reference; with `guard`,
    /// also against the entries read before it, in order).
    ///
    /// # Errors
    /// `Store` when it cannot be read, `Integrity` when it is damaged.
    pub async fn read_segment(&mut self, i: usize, guard: bool) -> Result<Vec<Entry>> {
        let snapshot = &self.m.header.snapshot;
        let Some(r) = self.m.segments.get(i) else {
            return Err(Error::internal(format!("segment {i} out of range")));
        };
        let name = self.layout.full(&r.blob);
        let data =
            self.store.get(&name, None).await.map_err(|e| {
                e.context(format!("snapshot {snapshot}: reading segment {}", r.blob))
            })?;
        self.bytes_read += data.len() as u64;
        let data = self
            .layout
            .open(&name, data)
            .map_err(|e| e.context(format!("snapshot {snapshot}")))?;
        self.segments_read += 1;
        let mut entries =
            decode(&data, r, &self.packs).map_err(|e| e.context(format!("snapshot {snapshot}")))?;
        if let Some(mv) = &self.m.moved {
            for e in &mut entries {
                mv.relocate(e).map_err(|w| {
                    Error::integrity(format!(
                        "snapshot {snapshot}: segment {}, entry {:?}: {w}",
                        r.blob,
                        e.path.display()
                    ))
                })?;
            }
        }
        if guard {
            for e in &entries {
                self.guard.next(e).map_err(|w| {
                    Error::integrity(format!(
                        "snapshot {snapshot}: segment {}, entry {:?}: path: {w}",
                        r.blob,
                        e.path.display()
                    ))
                })?;
            }
        }
        Ok(entries)
    }

    /// Every remaining entry, in one list (for callers whose memory is bounded anyway).
    ///
    /// # Errors
    /// As [`EntryReader::next_batch`].
    pub async fn collect(mut self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        while let Some(b) = self.next_batch().await? {
            out.extend(b);
        }
        Ok(out)
    }
}

/// A path-ordered cursor over an [`EntryReader`].
struct Cursor<'a> {
    reader: EntryReader<'a>,
    buf: std::collections::VecDeque<Entry>,
    done: bool,
}

impl<'a> Cursor<'a> {
    async fn peek(&mut self) -> Result<Option<&Entry>> {
        while self.buf.is_empty() && !self.done {
            match self.reader.next_batch().await? {
                Some(b) => self.buf.extend(b),
                None => self.done = true,
            }
        }
        Ok(self.buf.front())
    }
}

/// Compare two snapshots' entries by streaming both (memory: one segment of each,
/// plus the paths that differ).
///
/// # Errors
/// As [`EntryReader::next_batch`].
pub async fn diff(from: EntryReader<'_>, to: EntryReader<'_>) -> Result<super::Diff> {
    let mut d = super::Diff::default();
    let (mut a, mut b) = (
        Cursor {
            reader: from,
            buf: Default::default(),
            done: false,
        },
        Cursor {
            reader: to,
            buf: Default::default(),
            done: false,
        },
    );
    loop {
        let ord = match (a.peek().await?.cloned(), b.peek().await?) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => {
                if x.path == y.path && !x.same_as(y) {
                    d.changed.push(y.path.display());
                }
                x.path.cmp(&y.path)
            }
        };
        match ord {
            std::cmp::Ordering::Less => {
                if let Some(x) = a.buf.pop_front() {
                    d.removed.push(x.path.display());
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some(y) = b.buf.pop_front() {
                    d.added.push(y.path.display());
                }
            }
            std::cmp::Ordering::Equal => {
                a.buf.pop_front();
                b.buf.pop_front();
            }
        }
    }
    Ok(d)
}

/// Fill `m.entries` from its segments (a no-op for a manifest that holds its entries):
/// for readers that need the whole list. Memory grows with the snapshot's entries.
///
/// # Errors
/// As [`EntryReader::next_batch`].
pub async fn materialize(store: &dyn BlobStore, layout: &Layout, m: &mut Manifest) -> Result<()> {
    if m.segments.is_empty() || !m.entries.is_empty() {
        return Ok(());
    }
    let entries = EntryReader::new(store, layout, m).collect().await?;
    m.entries = entries;
    Ok(())
}

/// The literal leading part of a gitignore-style glob when the glob is anchored (holds a
/// `/` before its end), else `None` (an unanchored glob matches at any depth).
pub fn glob_prefix(glob: &str) -> Option<Vec<u8>> {
    let g = glob.strip_prefix('/').unwrap_or(glob);
    let anchored = glob.starts_with('/') || g.trim_end_matches('/').contains('/');
    if !anchored || g.starts_with("**") {
        return None;
    }
    let lit: String = g
        .chars()
        .take_while(|c| !matches!(c, '*' | '?' | '[' | '\\' | '!'))
        .collect();
    Some(lit.trim_end_matches('/').as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str, kind: EntryKind) -> Entry {
        Entry {
            path: PathBytes(p.as_bytes().to_vec()),
            kind,
            size: 0,
            mode: 0o644,
            mtime: 1,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            sha256: (kind == EntryKind::File)
                .then(|| "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()),
            target: (kind == EntryKind::Symlink).then(|| PathBytes(b"/etc".to_vec())),
            pack: None,
            offset: 0,
            data_offset: 0,
            inconsistent: false,
            ino: None,
            ctime: None,
            chunks: Vec::new(),
            blob: None,
        }
    }

    #[test]
    fn round_trip_checks_hash_count_and_range() {
        let es = vec![
            e("a", EntryKind::Dir),
            e("a/x", EntryKind::File),
            e("b", EntryKind::File),
        ];
        let (body, r) = encode(&es).unwrap();
        assert_eq!(r.entries, 3);
        assert_eq!((r.files, r.dirs), (2, 1));
        assert_eq!(r.blob, blob_name(&r.sha256));
        let packs = HashMap::new();
        assert_eq!(decode(&body, &r, &packs).unwrap(), es);
        // Same entries, same bytes: an unchanged partition names the same segment.
        assert_eq!(encode(&es).unwrap().1, r);
        let mut wrong = r.clone();
        wrong.entries = 2;
        assert!(decode(&body, &wrong, &packs)
            .unwrap_err()
            .to_string()
            .contains("holds 3"));
        let mut other = r.clone();
        other.sha256 = "0".repeat(64);
        assert!(decode(&body, &other, &packs)
            .unwrap_err()
            .to_string()
            .contains("hash"));
    }

    #[test]
    fn guard_refuses_entries_below_links_with_bounded_state() {
        let mut g = Guard::default();
        for p in ["a", "a b", "a.txt", "a0"] {
            g.next(&e(p, EntryKind::File)).unwrap();
        }
        // "a" and "a b" and "a.txt" windows closed once "a0" passed.
        assert!(g.open.len() <= 1, "{:?}", g.open);
        let mut g = Guard::default();
        g.next(&e("l", EntryKind::Symlink)).unwrap();
        g.next(&e("l.d", EntryKind::Dir)).unwrap();
        let err = g.next(&e("l/x", EntryKind::File)).unwrap_err();
        assert!(err.contains("symlink"), "{err}");
        let mut g = Guard::default();
        g.next(&e("d", EntryKind::Dir)).unwrap();
        g.next(&e("d/x", EntryKind::File)).unwrap();
        assert!(
            g.next(&e("d/x", EntryKind::File)).is_err(),
            "a duplicate is refused"
        );
    }

    #[test]
    fn anchored_globs_give_prefixes() {
        assert_eq!(glob_prefix("a/b.txt"), Some(b"a/b.txt".to_vec()));
        assert_eq!(glob_prefix("/docs"), Some(b"docs".to_vec()));
        assert_eq!(glob_prefix("docs/**/*.md"), Some(b"docs".to_vec()));
        assert_eq!(glob_prefix("b.txt"), None);
        assert_eq!(glob_prefix("**/x"), None);
        let r = SegmentRef {
            blob: String::new(),
            sha256: String::new(),
            size: 0,
            entries: 2,
            first: PathBytes(b"b".to_vec()),
            last: PathBytes(b"c/z".to_vec()),
            files: 0,
            dirs: 0,
            symlinks: 0,
            bytes: 0,
            inconsistent: 0,
            chunked: 0,
        };
        assert!(r.may_hold_prefix(b"c"));
        assert!(r.may_hold_prefix(b"b"));
        assert!(!r.may_hold_prefix(b"d"));
        assert!(!r.may_hold_prefix(b"a"));
        assert!(r.meets(Some(b"c"), None));
        assert!(!r.meets(None, Some(b"b")));
    }
}
