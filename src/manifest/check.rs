//! Checking a manifest read from the store: every field is untrusted input.
//!
//! [`validate`] runs once, when a manifest is loaded ([`Manifest::from_bytes`]), so
//! restore, `verify` at every level, `diff`, `ls` and the incremental parent lookup all
//! get the same checks for free, before anything is read from packs or written to disk.
//! The commit runs it too, so a run never writes a manifest its readers would refuse.
//! A problem is an `Integrity` error naming the manifest line, the record and the field.
//!
//! The rules (documented in `docs/formats.md`, "Validation"):
//!
//! * paths ([`check_path`]): non-empty, relative, no NUL, no empty, `.` or `..`
//!   component, components of at most [`MAX_NAME`] bytes, at most [`MAX_PATH`] bytes;
//!   strictly sorted by bytes; no entry below a symlink or file entry
//!   ([`first_under_non_dir`]);
//! * metadata: mode within `0o7777`, mtime a representable time, `mtime_nsec < 10^9`,
//!   symlink targets non-empty without NUL ([`check_target`]), a file's SHA-256 in hex;
//! * locations: every pack named exists; an entry's bytes lie inside its pack;
//! * packs: a lowercase hex id and its canonical blob name; frame tables starting at
//!   `(0, 0)`, strictly increasing, inside the pack's sizes, frames of at most
//!   [`MAX_FRAME`] raw bytes; block tables whose sizes add up to the pack's size, with
//!   16-byte MD5s, at most [`MAX_BLOCKS`] blocks of at most [`MAX_BLOCK_SIZE`] bytes;
//! * tables and streams: their chunks are file entries of the manifest, checksums parse.
//!
//! The path rules are shared with restore, which applies them again to what it is about
//! to write (defence in depth for manifests built in memory).

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::manifest::layout::Layout;
use crate::manifest::{Entry, EntryKind, Manifest, PackRecord, RowsetDigest};

/// Longest path component, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Longest stored path or symlink target, in bytes (Linux `PATH_MAX` without its NUL).
pub const MAX_PATH: usize = 4095;
/// Largest uncompressed frame: the largest `compression.frame_size` a pipeline accepts.
pub const MAX_FRAME: u64 = 64 << 20;
/// Most blocks in one pack blob (Azure's limit).
pub const MAX_BLOCKS: usize = 50_000;
/// Largest block (Azure's limit).
pub const MAX_BLOCK_SIZE: u64 = 4000 << 20;
/// Longest snapshot id.
const MAX_ID: usize = 128;

/// Check a stored path: a plain relative path restore can create.
///
/// # Errors
/// Why not, in words (the caller names the path and chooses the error kind).
pub fn check_path(p: &[u8]) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.contains(&0) {
        return Err("NUL byte in the path".into());
    }
    if p.len() > MAX_PATH {
        return Err(format!("path of {} bytes (at most {MAX_PATH})", p.len()));
    }
    if p[0] == b'/' {
        return Err("absolute path".into());
    }
    for seg in p.split(|&b| b == b'/') {
        match seg {
            b"" => return Err("empty path component".into()),
            b"." | b".." => return Err("'.' or '..' component escapes the target".into()),
            s if s.len() > MAX_NAME => {
                return Err(format!(
                    "a path component of {} bytes (at most {MAX_NAME})",
                    s.len()
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Check a symlink target: non-empty, no NUL, at most [`MAX_PATH`] bytes. Absolute and
/// `..` targets are fine: restore creates links as stored and never follows one.
///
/// # Errors
/// Why not, in words.
pub fn check_target(t: &[u8]) -> std::result::Result<(), String> {
    if t.is_empty() {
        return Err("empty symlink target".into());
    }
    if t.contains(&0) {
        return Err("NUL byte in the symlink target".into());
    }
    if t.len() > MAX_PATH {
        return Err(format!(
            "symlink target of {} bytes (at most {MAX_PATH})",
            t.len()
        ));
    }
    Ok(())
}

/// In path-sorted `entries`, the first entry stored below an entry that is not a
/// directory (a symlink or a file): `(index of the entry, index of that ancestor)`.
/// Restoring such an entry would write through the link (or fail half-way).
///
/// Descendants of `a` sort contiguously from `a/`, so one binary search per
/// non-directory entry finds them.
pub fn first_under_non_dir(entries: &[Entry]) -> Option<(usize, usize)> {
    let mut key = Vec::new();
    let mut found: Option<(usize, usize)> = None;
    for (i, a) in entries.iter().enumerate() {
        if a.kind == EntryKind::Dir {
            continue;
        }
        key.clear();
        key.extend_from_slice(&a.path.0);
        key.push(b'/');
        let at = entries.partition_point(|e| e.path.0 < key);
        if entries.get(at).is_some_and(|e| e.path.0.starts_with(&key))
            && found.is_none_or(|(c, _)| at < c)
        {
            found = Some((at, i));
        }
    }
    found
}

/// Where each record of a manifest was read from (1-based line numbers).
#[derive(Debug, Clone, Default)]
pub(crate) struct Lines {
    pub(crate) packs: Vec<usize>,
    pub(crate) entries: Vec<usize>,
    pub(crate) tables: Vec<usize>,
    pub(crate) streams: Vec<usize>,
    pub(crate) segments: Vec<usize>,
}

impl Lines {
    /// The line numbers [`Manifest::to_bytes`] would give `m`'s records.
    fn canonical(m: &Manifest) -> Lines {
        let mut n = 1;
        let mut next = |len: usize| {
            let v: Vec<usize> = (n + 1..n + 1 + len).collect();
            n += len;
            v
        };
        Lines {
            packs: next(m.packs.len()),
            segments: next(m.segments.len()),
            entries: next(m.entries.len()),
            tables: next(m.tables.len()),
            streams: next(m.streams.len()),
        }
    }
}

fn at(lines: &[usize], i: usize) -> usize {
    lines.get(i).copied().unwrap_or(0)
}

/// Check every field of `m` (records numbered as [`Manifest::to_bytes`] writes them).
///
/// # Errors
/// `Integrity` for the first problem, naming the line, the record and the field.
pub fn validate(m: &Manifest) -> Result<()> {
    validate_at(m, &Lines::canonical(m))
}

/// [`validate`] with the line numbers the records were read from.
pub(crate) fn validate_at(m: &Manifest, lines: &Lines) -> Result<()> {
    check_header(m)?;
    let mut packs: HashMap<&str, &PackRecord> = HashMap::with_capacity(m.packs.len());
    for (i, p) in m.packs.iter().enumerate() {
        let bad = |field: &str, why: String| {
            Error::integrity(format!(
                "manifest line {}, pack {:?}: {field}: {why}",
                at(&lines.packs, i),
                p.id
            ))
        };
        check_pack(p).map_err(|(f, w)| bad(f, w))?;
        if packs.insert(p.id.as_str(), p).is_some() {
            return Err(bad("id", "listed twice".into()));
        }
    }
    check_segments(m, lines)?;
    for (i, e) in m.entries.iter().enumerate() {
        let bad = |field: &str, why: String| {
            Error::integrity(format!(
                "manifest line {}, entry {:?}: {field}: {why}",
                at(&lines.entries, i),
                e.path.display()
            ))
        };
        if i > 0 && m.entries[i - 1].path >= e.path {
            return Err(bad(
                "path",
                "manifest entries not sorted (or listed twice) here".into(),
            ));
        }
        check_entry(e, &packs).map_err(|(f, w)| bad(f, w))?;
    }
    if let Some((c, a)) = first_under_non_dir(&m.entries) {
        let (child, anc) = (&m.entries[c], &m.entries[a]);
        return Err(Error::integrity(format!(
            "manifest line {}, entry {:?}: path: lies under {:?} (line {}), which is {}, not a \
             directory; restoring it would write through it",
            at(&lines.entries, c),
            child.path.display(),
            anc.path.display(),
            at(&lines.entries, a),
            describe(anc)
        )));
    }
    let file = |p: &[u8]| {
        m.entries
            .binary_search_by(|e| e.path.0.as_slice().cmp(p))
            .ok()
            .and_then(|i| m.entries.get(i))
            .filter(|e| e.kind == EntryKind::File)
    };
    let mut seen = HashSet::new();
    for (i, t) in m.tables.iter().enumerate() {
        let bad = |field: &str, why: String| {
            Error::integrity(format!(
                "manifest line {}, table {:?}.{:?}: {field}: {why}",
                at(&lines.tables, i),
                t.schema,
                t.name
            ))
        };
        for (field, v) in [
            ("source", &t.source),
            ("schema", &t.schema),
            ("name", &t.name),
        ] {
            if v.is_empty() || v.contains('\0') {
                return Err(bad(field, "empty or holds a NUL byte".into()));
            }
        }
        if !seen.insert((&t.source, &t.schema, &t.name)) {
            return Err(bad("name", "the table is listed twice".into()));
        }
        if t.columns.is_empty() {
            return Err(bad("columns", "a table with no columns".into()));
        }
        let mut cols = HashSet::new();
        for c in &t.columns {
            if c.name.is_empty() || c.name.contains('\0') || c.ty.contains('\0') {
                return Err(bad(
                    "columns",
                    format!("column {:?}: empty name or a NUL byte", c.name),
                ));
            }
            if !cols.insert(c.name.as_str()) {
                return Err(bad("columns", format!("column {:?} listed twice", c.name)));
            }
        }
        if let Some(k) = t.primary_key.iter().find(|k| !cols.contains(k.as_str())) {
            return Err(bad(
                "primary_key",
                format!("key column {k:?} is not a column of the table"),
            ));
        }
        if RowsetDigest::from_checksum(&t.checksum).is_none() {
            return Err(bad(
                "checksum",
                format!("{:?} is not rowset-sha256:<64 hex>", t.checksum),
            ));
        }
        if t.chunks.is_empty() {
            return Err(bad("chunks", "no chunk entries".into()));
        }
        if let Some(c) = t.chunks.iter().find(|c| file(&c.0).is_none()) {
            return Err(bad(
                "chunks",
                format!("{:?} is not a file entry of the manifest", c.display()),
            ));
        }
        // Key ranges (when listed) partition the chunks and add up to the table's counts:
        // the next backup trusts them to reuse a range's chunks.
        if !t.ranges.is_empty() {
            let n: usize = t.ranges.iter().map(|r| r.chunks).sum();
            let rows: u64 = t.ranges.iter().map(|r| r.rows).sum();
            let mut d = RowsetDigest::default();
            for r in &t.ranges {
                match RowsetDigest::from_checksum(&r.checksum) {
                    Some(x) => d.merge(&x),
                    None => return Err(bad("ranges", format!("checksum {:?}", r.checksum))),
                }
            }
            if n != t.chunks.len() || rows != t.rows || d.to_checksum() != t.checksum {
                return Err(bad(
                    "ranges",
                    format!(
                        "{n} chunks and {rows} rows over the ranges, {} and {} in the table, \
                         or checksums that do not add up",
                        t.chunks.len(),
                        t.rows
                    ),
                ));
            }
        }
    }
    for (i, s) in m.streams.iter().enumerate() {
        let bad = |field: &str, why: String| {
            Error::integrity(format!(
                "manifest line {}, stream {:?}: {field}: {why}",
                at(&lines.streams, i),
                s.name
            ))
        };
        if s.name.is_empty() {
            return Err(bad("name", "empty".into()));
        }
        if !is_sha256_hex(&s.sha256) {
            return Err(bad(
                "sha256",
                format!("{:?} is not 64 lowercase hex", s.sha256),
            ));
        }
        if s.chunks.is_empty() {
            return Err(bad("chunks", "no chunk entries".into()));
        }
        let mut total = 0u64;
        for c in &s.chunks {
            let Some(e) = file(&c.0) else {
                return Err(bad(
                    "chunks",
                    format!("{:?} is not a file entry of the manifest", c.display()),
                ));
            };
            total = total.saturating_add(e.size);
        }
        if total != s.bytes {
            return Err(bad(
                "bytes",
                format!("{} bytes, but its chunks hold {total}", s.bytes),
            ));
        }
    }
    Ok(())
}

/// The segment list of a format-2 manifest: well-formed references in path order, with
/// no inline entries, tables or streams beside them (their entries are checked when a
/// reader reads them, see [`super::segment::decode`]).
fn check_segments(m: &Manifest, lines: &Lines) -> Result<()> {
    if m.segments.is_empty() {
        return Ok(());
    }
    if !m.entries.is_empty() || !m.tables.is_empty() || !m.streams.is_empty() {
        return Err(Error::integrity(format!(
            "manifest line {}: a manifest with segments holds no entry, table or stream lines",
            at(&lines.segments, 0)
        )));
    }
    if m.header.format < 2 {
        return Err(Error::integrity(format!(
            "manifest line {}: segment lines in a format-{} manifest",
            at(&lines.segments, 0),
            m.header.format
        )));
    }
    for (i, r) in m.segments.iter().enumerate() {
        let bad = |field: &str, why: String| {
            Error::integrity(format!(
                "manifest line {}, segment {:?}: {field}: {why}",
                at(&lines.segments, i),
                r.blob
            ))
        };
        if !is_sha256_hex(&r.sha256) {
            return Err(bad(
                "sha256",
                format!("{:?} is not 64 lowercase hex", r.sha256),
            ));
        }
        if r.blob != super::segment::blob_name(&r.sha256) {
            return Err(bad("blob", format!("not the name of segment {}", r.sha256)));
        }
        if r.entries == 0 {
            return Err(bad("entries", "an empty segment".into()));
        }
        check_path(&r.first.0).map_err(|w| bad("first", w))?;
        check_path(&r.last.0).map_err(|w| bad("last", w))?;
        if r.first > r.last || (r.entries == 1) != (r.first == r.last) {
            return Err(bad("last", "the range does not fit the entry count".into()));
        }
        if r.files + r.dirs + r.symlinks != r.entries || r.inconsistent > r.files {
            return Err(bad("entries", "the counts by kind do not add up".into()));
        }
        if i > 0 && m.segments[i - 1].last >= r.first {
            return Err(bad(
                "first",
                "segments overlap or are out of path order here".into(),
            ));
        }
    }
    Ok(())
}

/// [`check_entry`] for segment readers.
pub(crate) fn check_entry_at(
    e: &Entry,
    packs: &HashMap<&str, &PackRecord>,
) -> std::result::Result<(), Problem> {
    check_entry(e, packs)
}

/// What a non-directory entry is, for messages.
pub(crate) fn describe_kind(e: &Entry) -> String {
    describe(e)
}

fn describe(e: &Entry) -> String {
    match e.kind {
        EntryKind::Symlink => format!(
            "a symlink (to {:?})",
            e.target.as_ref().map(|t| t.display()).unwrap_or_default()
        ),
        EntryKind::File => "a file".into(),
        EntryKind::Dir => "a directory".into(),
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::integrity(format!(
            "manifest line 1, header: {what}: {id:?} is not a snapshot id \
             (letters, digits, '-', '_', '.'; at most {MAX_ID})"
        )))
    }
}

fn check_header(m: &Manifest) -> Result<()> {
    check_id("snapshot", &m.header.snapshot)?;
    if let Some(p) = &m.header.parent {
        check_id("parent", p)?;
    }
    Ok(())
}

pub(crate) type Problem = (&'static str, String);

/// The most a frame of `raw` bytes can take compressed: gzip and zstd both stay well
/// within 1/64 plus a header on incompressible data.
fn max_compressed(raw: u64) -> u64 {
    raw + raw / 64 + 1024
}

pub(crate) fn check_pack(p: &PackRecord) -> std::result::Result<(), Problem> {
    if p.id.len() != 32 || !p.id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(("id", "not a pack id (32 lowercase hex digits)".into()));
    }
    let want = Layout::pack_rel(&p.id, p.codec);
    if p.blob != want {
        return Err((
            "blob",
            format!(
                "{:?}, but a {} pack with this id is {want:?}",
                p.blob,
                p.codec.as_str()
            ),
        ));
    }
    if crate::store::md5_from_b64(&p.md5).is_none() {
        return Err(("md5", format!("{:?} is not a base64 MD5", p.md5)));
    }
    // Frames: (raw, compressed) starts, from (0, 0), both strictly increasing, inside the
    // pack; none longer than MAX_FRAME raw bytes. A pack without data has none.
    if p.frames.is_empty() {
        if p.raw_size > 0 || p.size > 0 {
            return Err((
                "frames",
                format!(
                    "no frames, but the pack holds {} bytes ({} compressed)",
                    p.raw_size, p.size
                ),
            ));
        }
    } else if p.frames[0] != (0, 0) {
        return Err((
            "frames",
            format!("the first frame starts at {:?}, not (0, 0)", p.frames[0]),
        ));
    }
    for (k, f) in p.frames.iter().enumerate() {
        let (raw_end, comp_end) = p.frames.get(k + 1).copied().unwrap_or((p.raw_size, p.size));
        if raw_end <= f.0 || comp_end <= f.1 {
            return Err((
                "frames",
                format!(
                    "frame {k} starts at {f:?}, the next one (or the pack's end) at \
                     {:?}: offsets must increase",
                    (raw_end, comp_end)
                ),
            ));
        }
        let (raw, comp) = (raw_end - f.0, comp_end - f.1);
        if raw > MAX_FRAME {
            return Err((
                "frames",
                format!("frame {k} holds {raw} raw bytes (at most {MAX_FRAME})"),
            ));
        }
        if comp > max_compressed(raw) {
            return Err((
                "frames",
                format!(
                    "frame {k} has {comp} compressed bytes for {raw} raw ones (at most {})",
                    max_compressed(raw)
                ),
            ));
        }
    }
    // Blocks: sizes add up to the blob; MD5s decode; Azure's limits.
    if p.blocks.len() > MAX_BLOCKS {
        return Err((
            "blocks",
            format!("{} blocks (at most {MAX_BLOCKS})", p.blocks.len()),
        ));
    }
    let mut sum = 0u64;
    for (k, b) in p.blocks.iter().enumerate() {
        if b.size == 0 || b.size > MAX_BLOCK_SIZE {
            return Err((
                "blocks",
                format!("block {k} has {} bytes (1 to {MAX_BLOCK_SIZE})", b.size),
            ));
        }
        if crate::store::md5_from_b64(&b.md5).is_none() {
            return Err((
                "blocks",
                format!("block {k}: md5 {:?} is not a base64 MD5", b.md5),
            ));
        }
        let id_ok = !b.id.is_empty()
            && b.id.len() == p.blocks[0].id.len()
            && b.id.len() <= 88
            && b.id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
        if !id_ok {
            return Err((
                "blocks",
                format!(
                    "block {k}: id {:?} is not base64 of the pack's id length",
                    b.id
                ),
            ));
        }
        sum = sum.saturating_add(b.size);
    }
    if sum != p.size {
        return Err((
            "blocks",
            format!("block sizes add up to {sum}, the pack's size is {}", p.size),
        ));
    }
    Ok(())
}

fn check_entry(e: &Entry, packs: &HashMap<&str, &PackRecord>) -> std::result::Result<(), Problem> {
    check_path(&e.path.0).map_err(|w| ("path", w))?;
    if e.mode & !0o7777 != 0 {
        return Err(("mode", format!("{:#o} has bits outside 0o7777", e.mode)));
    }
    if chrono::DateTime::from_timestamp(e.mtime, 0).is_none() {
        return Err(("mtime", format!("{} is not a representable time", e.mtime)));
    }
    if e.mtime_nsec >= 1_000_000_000 {
        return Err(("mtime_nsec", format!("{} is not below 10^9", e.mtime_nsec)));
    }
    match e.kind {
        EntryKind::File if e.sha256.is_none() && e.content_hash().0.is_some() => {
            // A blob staged server-side: its hash is the MD5 of its blocks' MD5s, which
            // only a stored pack (identity frames, data on block boundaries) can give.
            let stored = e
                .pack
                .as_deref()
                .and_then(|id| packs.get(id))
                .is_some_and(|p| p.codec == crate::manifest::codec::Codec::Stored);
            if !stored
                || e.content_hash()
                    .0
                    .and_then(crate::store::md5_from_b64)
                    .is_none()
            {
                return Err((
                    "blocks_md5",
                    "a file hashed by its block MD5s must be a base64 MD5 in a stored pack".into(),
                ));
            }
        }
        EntryKind::File => {
            if !e.sha256.as_deref().is_some_and(is_sha256_hex) {
                return Err((
                    "sha256",
                    format!(
                        "{:?} is not 64 lowercase hex digits",
                        e.sha256.as_deref().unwrap_or("(none)")
                    ),
                ));
            }
        }
        EntryKind::Dir | EntryKind::Symlink => {
            if e.size != 0 {
                return Err(("size", format!("{} bytes for a {:?}", e.size, e.kind)));
            }
        }
    }
    match (&e.target, e.kind) {
        (Some(t), EntryKind::Symlink) => check_target(&t.0).map_err(|w| ("target", w))?,
        (None, EntryKind::Symlink) => return Err(("target", "a symlink without a target".into())),
        (Some(_), _) => return Err(("target", "a target on an entry that is no symlink".into())),
        (None, _) => {}
    }
    if !e.chunks.is_empty() {
        return check_chunks(e, packs);
    }
    match e.pack.as_deref() {
        None if e.kind == EntryKind::File && e.size > 0 => {
            Err(("pack", "a file with data names no pack".into()))
        }
        None => Ok(()),
        Some(id) => {
            let Some(p) = packs.get(id) else {
                return Err(("pack", format!("{id:?} is not a pack of the manifest")));
            };
            if e.offset > e.data_offset {
                return Err((
                    "offset",
                    format!("{} is past the data offset {}", e.offset, e.data_offset),
                ));
            }
            match e.data_offset.checked_add(e.size) {
                Some(end) if end <= p.raw_size => Ok(()),
                _ => Err((
                    "data_offset",
                    format!(
                        "bytes {}..+{} are past the end of pack {id} ({} bytes)",
                        e.data_offset, e.size, p.raw_size
                    ),
                )),
            }
        }
    }
}

/// A chunked file: no location of its own; every chunk non-empty, hashed, inside a
/// listed pack; the chunk sizes add up to the file's size.
fn check_chunks(e: &Entry, packs: &HashMap<&str, &PackRecord>) -> std::result::Result<(), Problem> {
    if e.kind != EntryKind::File {
        return Err(("chunks", format!("chunks on a {:?}", e.kind)));
    }
    if e.pack.is_some() || e.offset != 0 || e.data_offset != 0 {
        return Err((
            "pack",
            "a chunked file has no pack, offset or data_offset of its own".into(),
        ));
    }
    let mut sum = 0u64;
    for (k, c) in e.chunks.iter().enumerate() {
        if !is_sha256_hex(&c.sha256) {
            return Err((
                "chunks",
                format!(
                    "chunk {k}: sha256 {:?} is not 64 lowercase hex digits",
                    c.sha256
                ),
            ));
        }
        if c.size == 0 {
            return Err(("chunks", format!("chunk {k} is empty")));
        }
        let Some(p) = packs.get(c.pack.as_str()) else {
            return Err((
                "chunks",
                format!("chunk {k}: {:?} is not a pack of the manifest", c.pack),
            ));
        };
        if c.offset > c.data_offset {
            return Err((
                "chunks",
                format!(
                    "chunk {k}: offset {} is past the data offset {}",
                    c.offset, c.data_offset
                ),
            ));
        }
        if c.data_offset
            .checked_add(c.size)
            .is_none_or(|end| end > p.raw_size)
        {
            return Err((
                "chunks",
                format!(
                    "chunk {k}: bytes {}..+{} are past the end of pack {} ({} bytes)",
                    c.data_offset, c.size, c.pack, p.raw_size
                ),
            ));
        }
        sum = sum.saturating_add(c.size);
    }
    if sum != e.size {
        return Err((
            "chunks",
            format!("chunk sizes add up to {sum}, the file's size is {}", e.size),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::codec::Codec;
    use crate::manifest::{
        BlockRecord, Column, Header, Line, PathBytes, StreamRecord, TableRecord, Totals,
    };
    use crate::store::Tier;
    use proptest::prelude::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const PACK: &str = "0123456789abcdef0123456789abcdef";

    fn entry(path: &str, kind: EntryKind, size: u64, data_offset: u64) -> Entry {
        Entry {
            path: PathBytes(path.as_bytes().to_vec()),
            kind,
            size,
            mode: 0o644,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
            uid: 0,
            gid: 0,
            sha256: (kind == EntryKind::File).then(|| SHA.to_string()),
            target: (kind == EntryKind::Symlink).then(|| PathBytes(b"/etc".to_vec())),
            pack: Some(PACK.into()),
            offset: data_offset.saturating_sub(512),
            data_offset,
            inconsistent: false,
            ino: None,
            ctime: None,
            chunks: Vec::new(),
            blob: None,
        }
    }

    /// A file stored as chunks `(size, data_offset)` of pack [`PACK`].
    fn chunked(path: &str, chunks: &[(u64, u64)]) -> Entry {
        let mut e = entry(path, EntryKind::File, 0, 0);
        e.pack = None;
        e.offset = 0;
        for &(size, data_offset) in chunks {
            e.size += size;
            e.chunks.push(crate::manifest::Chunk {
                sha256: SHA.into(),
                size,
                pack: PACK.into(),
                offset: data_offset - 512,
                data_offset,
            });
        }
        e
    }

    /// A small valid manifest: a pack of two frames and two blocks, a directory, files,
    /// a symlink, a table and a stream.
    fn good() -> Manifest {
        let md5 = crate::store::b64(&[7u8; 16]);
        Manifest {
            header: Header {
                format: 1,
                pipeline: "p".into(),
                snapshot: "20260101T000000000Z-abcd1234".into(),
                run_id: "r".into(),
                started_at: chrono::Utc::now(),
                committed_at: chrono::Utc::now(),
                parent: None,
                source: "fs:/".into(),
                codec: Codec::Zstd,
                totals: Totals::default(),
                unreadable: vec![],
                chain: 0,
                full_at: None,
                changes: None,
                encryption: None,
            },
            packs: vec![PackRecord {
                id: PACK.into(),
                blob: Layout::pack_rel(PACK, Codec::Zstd),
                codec: Codec::Zstd,
                size: 300,
                raw_size: 6144,
                md5: md5.clone(),
                tier: Tier::Hot,
                frames: vec![(0, 0), (4096, 200)],
                blocks: vec![
                    BlockRecord {
                        id: crate::store::b64(b"000000-x"),
                        size: 256,
                        md5: md5.clone(),
                    },
                    BlockRecord {
                        id: crate::store::b64(b"000001-x"),
                        size: 44,
                        md5,
                    },
                ],
            }],
            segments: vec![],
            entries: vec![
                entry("cmd/out", EntryKind::File, 10, 1024),
                entry("d", EntryKind::Dir, 0, 2048),
                entry("d/f", EntryKind::File, 3000, 2560),
                entry("l", EntryKind::Symlink, 0, 5632),
                entry("t/000001.csv", EntryKind::File, 20, 5632),
                chunked("z.img", &[(10, 1024), (20, 2560)]),
            ],
            tables: vec![TableRecord {
                source: "postgres".into(),
                schema: "public".into(),
                name: "t".into(),
                columns: vec![Column {
                    name: "id".into(),
                    ty: "integer".into(),
                    nullable: false,
                }],
                primary_key: vec!["id".into()],
                indexes: vec![],
                constraints: vec![],
                rows: 1,
                checksum: RowsetDigest::default().to_checksum(),
                bytes: 20,
                chunks: vec![PathBytes(b"t/000001.csv".to_vec())],
                range: 0,
                ranges: vec![],
            }],
            streams: vec![StreamRecord {
                name: "cmd".into(),
                program: "seq".into(),
                exit_code: 0,
                bytes: 10,
                sha256: SHA.into(),
                chunks: vec![PathBytes(b"cmd/out".to_vec())],
                stderr: String::new(),
            }],
            moved: None,
        }
    }

    fn refused(f: impl FnOnce(&mut Manifest), needle: &str) {
        let mut m = good();
        f(&mut m);
        let e = Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Integrity, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("manifest line"), "{msg}");
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
        assert!(validate(&m).is_err(), "validate agrees with from_bytes");
    }

    #[test]
    fn the_baseline_is_valid() {
        let m = good();
        validate(&m).unwrap();
        let back = Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back.entries, m.entries);
    }

    #[test]
    fn frame_tables_are_checked() {
        refused(|m| m.packs[0].frames.clear(), "no frames");
        refused(|m| m.packs[0].frames[0] = (1, 0), "not (0, 0)");
        refused(|m| m.packs[0].frames[1] = (0, 200), "must increase");
        refused(|m| m.packs[0].frames[1] = (4096, 0), "must increase");
        refused(|m| m.packs[0].frames.push((9000, 250)), "must increase");
        refused(|m| m.packs[0].frames[1] = (4096, 300), "must increase");
        refused(
            |m| {
                m.packs[0].raw_size = 200 << 20;
                m.entries.retain(|e| e.kind != EntryKind::File);
                m.tables.clear();
                m.streams.clear();
            },
            "raw bytes (at most",
        );
        refused(
            |m| {
                m.packs[0].size = 100_000;
                m.packs[0].blocks[1].size = 100_000 - 256;
            },
            "compressed bytes for",
        );
    }

    #[test]
    fn block_tables_and_pack_names_are_checked() {
        refused(|m| m.packs[0].blocks[1].size += 1, "add up");
        refused(|m| m.packs[0].blocks[1].size = 0, "block 1 has 0 bytes");
        refused(|m| m.packs[0].blocks[0].md5 = "AAAA".into(), "base64 MD5");
        refused(|m| m.packs[0].blocks[0].id = "no spaces".into(), "id");
        refused(|m| m.packs[0].md5 = String::new(), "md5");
        refused(|m| m.packs[0].blob = "../x.tar.zst".into(), "blob");
        refused(|m| m.packs[0].id = "ab".into(), "pack id");
        refused(|m| m.packs.push(m.packs[0].clone()), "listed twice");
        refused(
            |m| {
                m.packs[0].frames.clear();
                m.packs[0].blocks.clear();
                m.packs[0].size = 0;
            },
            "no frames",
        );
    }

    #[test]
    fn entry_locations_are_checked() {
        refused(
            |m| m.entries[2].pack = Some("f".repeat(32)),
            "not a pack of",
        );
        refused(|m| m.entries[2].pack = None, "names no pack");
        refused(|m| m.entries[2].data_offset = 6000, "past the end of pack");
        refused(
            |m| m.entries[2].data_offset = u64::MAX,
            "past the end of pack",
        );
        refused(|m| m.entries[2].offset = 99_999, "offset");
        refused(|m| m.entries[2].sha256 = None, "sha256");
        refused(|m| m.entries[2].sha256 = Some("AB".repeat(32)), "sha256");
    }

    /// A file hashed by its block MD5s (a blob staged server-side) is valid only in a
    /// stored pack, with a base64 MD5.
    #[test]
    fn block_md5_hashes_need_a_stored_pack() {
        let staged = |m: &mut Manifest, h: &str| {
            m.entries[2].sha256 = None;
            m.entries[2].blob = Some(Box::new(crate::manifest::BlobMeta {
                etag: "0x1".into(),
                blocks_md5: Some(h.into()),
                ..Default::default()
            }));
        };
        let md5 = crate::store::b64(&[7u8; 16]);
        refused(|m| staged(m, &md5), "stored pack");
        let stored = |m: &mut Manifest| {
            m.packs[0].codec = Codec::Stored;
            m.packs[0].blob = Layout::pack_rel(&m.packs[0].id, Codec::Stored);
        };
        refused(
            |m| {
                stored(m);
                staged(m, "not an md5");
            },
            "blocks_md5",
        );
        let mut m = good();
        stored(&mut m);
        staged(&mut m, &md5);
        let back = Manifest::from_bytes(&m.to_bytes().unwrap()).expect("valid");
        assert_eq!(
            back.entries[2].content_hash(),
            (Some(md5.as_str()), "block MD5s")
        );
    }

    #[test]
    fn chunk_lists_are_checked() {
        let z = 5;
        refused(|m| m.entries[z].chunks[1].size += 1, "add up to 31");
        refused(|m| m.entries[z].chunks[0].size = 0, "chunk 0 is empty");
        refused(
            |m| m.entries[z].chunks[1].pack = "f".repeat(32),
            "not a pack of",
        );
        refused(
            |m| m.entries[z].chunks[1].data_offset = 6140,
            "past the end of pack",
        );
        refused(
            |m| m.entries[z].chunks[1].data_offset = u64::MAX,
            "past the end of pack",
        );
        refused(|m| m.entries[z].chunks[0].offset = 99_999, "offset");
        refused(
            |m| m.entries[z].chunks[0].sha256 = "AB".repeat(32),
            "sha256",
        );
        refused(
            |m| m.entries[z].pack = Some(PACK.into()),
            "no pack, offset or data_offset",
        );
        refused(
            |m| {
                let c = m.entries[z].chunks[0].clone();
                m.entries[1].chunks.push(c);
            },
            "chunks on a Dir",
        );
    }

    #[test]
    fn odd_metadata_is_refused() {
        refused(|m| m.entries[2].mtime = i64::MAX, "mtime");
        refused(|m| m.entries[2].mtime = i64::MIN, "mtime");
        refused(|m| m.entries[2].mtime_nsec = 1_000_000_000, "mtime_nsec");
        refused(|m| m.entries[2].mode = 0o100644, "mode");
        refused(
            |m| m.entries[3].target = Some(PathBytes(b"a\0b".to_vec())),
            "NUL",
        );
        refused(
            |m| m.entries[3].target = Some(PathBytes(vec![])),
            "empty symlink",
        );
        refused(|m| m.entries[3].target = None, "without a target");
        refused(
            |m| m.entries[2].target = Some(PathBytes(b"x".to_vec())),
            "no symlink",
        );
        refused(|m| m.entries[1].size = 5, "size");
        refused(
            |m| m.entries[2].path = PathBytes(format!("d/{}", "x".repeat(300)).into_bytes()),
            "300 bytes",
        );
        for bad in [&b""[..], b"/abs", b"d//f", b"d/./f", b"d/../f", b"a\0"] {
            refused(
                |m| {
                    m.entries[2].path = PathBytes(bad.to_vec());
                    m.entries.sort_by(|a, b| a.path.cmp(&b.path));
                },
                "path",
            );
        }
        refused(|m| m.entries.swap(1, 2), "not sorted");
        refused(|m| m.entries.insert(1, m.entries[1].clone()), "not sorted");
        refused(|m| m.header.snapshot = "../x".into(), "snapshot");
        refused(|m| m.header.parent = Some("a/b".into()), "parent");
    }

    #[test]
    fn entries_below_a_symlink_or_file_are_refused_naming_it() {
        refused(
            |m| {
                let mut e = m.entries[2].clone();
                e.path = PathBytes(b"l/x".to_vec());
                m.entries.push(e);
                m.entries.sort_by(|a, b| a.path.cmp(&b.path));
            },
            "lies under \"l\" (line 6), which is a symlink (to \"/etc\")",
        );
        refused(
            |m| {
                let mut e = m.entries[1].clone();
                e.path = PathBytes(b"d/f/g".to_vec());
                m.entries.push(e);
                // Entries sorting between "d/f" and "d/f/g" do not hide it.
                let mut e = m.entries[1].clone();
                e.path = PathBytes(b"d/f-b".to_vec());
                m.entries.push(e);
                m.entries.sort_by(|a, b| a.path.cmp(&b.path));
            },
            "which is a file",
        );
        let mut m = good();
        let mut e = m.entries[2].clone();
        e.path = PathBytes(b"d/g".to_vec());
        m.entries.push(e);
        m.entries.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            first_under_non_dir(&m.entries),
            None,
            "below a directory is fine"
        );
    }

    #[test]
    fn table_and_stream_records_are_checked() {
        refused(|m| m.tables[0].columns.clear(), "no columns");
        refused(
            |m| m.tables[0].chunks[0] = PathBytes(b"nope".to_vec()),
            "not a file entry",
        );
        refused(
            |m| m.tables[0].chunks[0] = PathBytes(b"d".to_vec()),
            "not a file entry",
        );
        refused(|m| m.tables[0].checksum = "x".into(), "checksum");
        refused(
            |m| m.tables[0].primary_key = vec!["k".into()],
            "primary_key",
        );
        refused(|m| m.tables.push(m.tables[0].clone()), "listed twice");
        refused(
            |m| {
                let t = &mut m.tables[0];
                t.ranges = vec![crate::manifest::RangeRecord {
                    bounds: None,
                    rows: t.rows + 1,
                    checksum: t.checksum.clone(),
                    bytes: t.bytes,
                    chunks: t.chunks.len(),
                }];
            },
            "ranges",
        );
        refused(|m| m.streams[0].bytes = 11, "bytes");
        refused(|m| m.streams[0].chunks.clear(), "no chunk");
        refused(|m| m.streams[0].sha256 = "x".into(), "sha256");
    }

    #[test]
    fn a_second_header_is_refused() {
        let m = good();
        let mut lines = vec![
            Line::Header(m.header.clone()),
            Line::Header(m.header.clone()),
        ];
        lines.extend(m.packs.iter().cloned().map(Line::Pack));
        let e = Manifest::from_bytes(&crate::manifest::encode(&lines).unwrap()).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn range_helpers_never_panic() {
        let mut p = good().packs[0].clone();
        p.frames.clear();
        p.blocks.clear();
        assert_eq!(p.frame_at(123), 0);
        assert_eq!(p.frames_comp_range(0, 0), p.size..p.size);
        assert_eq!(p.frames_raw_range(5, usize::MAX), p.raw_size..p.raw_size);
        assert_eq!(p.block_range(3), 0..0);
        p.frames = vec![(10, 50), (5, 20)];
        let r = p.frames_comp_range(0, 0);
        assert!(r.start <= r.end);
    }

    /// What restore and verify compute from a loaded manifest, asserting what
    /// validation promises (the fuzz target does the same, and more).
    fn exercise(m: &Manifest) {
        validate(m).unwrap();
        assert!(first_under_non_dir(&m.entries).is_none());
        for e in m.entries.iter().flat_map(|e| {
            let mut v = e.chunk_entries();
            v.push(e.clone());
            v
        }) {
            check_path(&e.path.0).unwrap();
            if !e.chunks.is_empty() {
                assert!(e.pack.is_none());
                assert_eq!(e.chunks.iter().map(|c| c.size).sum::<u64>(), e.size);
                continue;
            }
            let Some(p) = e.pack.as_deref().and_then(|id| m.pack(id)) else {
                assert!(e.pack.is_none());
                continue;
            };
            let end = e.data_offset + e.size;
            if e.size > 0 {
                let fa = p.frame_at(e.data_offset);
                let fb = p.frame_at(end - 1).max(fa);
                let raw = p.frames_raw_range(fa, fb);
                assert!(raw.start <= e.data_offset && end <= raw.end);
                let comp = p.frames_comp_range(fa, fb);
                assert!(comp.start < comp.end && comp.end <= p.size);
            }
        }
        for p in &m.packs {
            let mut at = 0;
            for i in 0..p.blocks.len() {
                let r = p.block_range(i);
                assert_eq!(r.start, at);
                at = r.end;
            }
            assert_eq!(at, p.size);
        }
    }

    /// Crashing inputs found by `cargo fuzz` (fuzz/README.md) are added here.
    #[test]
    fn fuzz_findings() {
        for input in FUZZ_FINDINGS {
            if let Ok(m) = Manifest::from_bytes(&gz(input)) {
                exercise(&m);
            }
        }
    }

    const FUZZ_FINDINGS: &[&[u8]] = &[
        // A table checksum of 64 bytes that are not ASCII hex: `from_checksum` sliced
        // it by byte index inside a multi-byte character.
        br#"{"type":"header","format":1,"pipeline":"p","snapshot":"s","run_id":"r","started_at":"2026-01-01T00:00:00Z","committed_at":"2026-01-01T00:00:00Z","source":"x","codec":"zstd","totals":{"files":0,"dirs":0,"symlinks":0,"bytes":0,"stored_bytes":0,"packs":0,"inconsistent":0,"unreadable":0}}
{"type":"table","source":"postgres","schema":"public","name":"t","columns":[{"name":"id","type":"int","nullable":false}],"rows":0,"checksum":"rowset-sha256:8b68928707a9ccfd3ac4e721d7f930c7350772fc8481701\u055b110a1f333f6d10a","chunks":[]}
"#,
    ];

    fn gz(text: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        g.write_all(text).unwrap();
        g.finish().unwrap()
    }

    /// Numbers and strings that sit on the edges of the rules.
    fn odd_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::json;
        prop_oneof![
            Just(json!(0)),
            Just(json!(1)),
            Just(json!(-1)),
            Just(json!(u64::MAX)),
            Just(json!(i64::MAX)),
            Just(json!(i64::MIN)),
            Just(json!(4096)),
            Just(json!(1_000_000_000u64)),
            Just(json!([])),
            Just(json!([[0, 0]])),
            Just(json!([[0, 0], [0, 0]])),
            Just(json!(null)),
            Just(json!("")),
            Just(json!("..")),
            Just(json!("/etc")),
            Just(json!("l/x")),
            Just(json!("a\u{0}b")),
            Just(json!(PACK)),
            Just(json!({"b64": "AAAA"})),
            any::<u64>().prop_map(|n| json!(n)),
            any::<i32>().prop_map(|n| json!(n)),
        ]
    }

    /// Replace the `k`-th value (in a depth-first walk) of `v` by `new`.
    fn replace_nth(v: &mut serde_json::Value, k: &mut usize, new: &serde_json::Value) -> bool {
        if *k == 0 {
            *v = new.clone();
            return true;
        }
        *k -= 1;
        match v {
            serde_json::Value::Array(a) => a.iter_mut().any(|x| replace_nth(x, k, new)),
            serde_json::Value::Object(o) => o
                .iter_mut()
                .filter(|(key, _)| key.as_str() != "type")
                .any(|(_, x)| replace_nth(x, k, new)),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Mutated manifests never panic the reader; what it accepts is safe to use.
        #[test]
        fn mutated_manifests_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), odd_value()), 1..4),
            drop_line in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let m = good();
            let mut text = String::new();
            flate2::read::GzDecoder::new(&m.to_bytes().unwrap()[..])
                .read_to_string(&mut text)
                .unwrap();
            let mut lines: Vec<serde_json::Value> =
                text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            for (line, at, value) in &edits {
                let n = line.index(lines.len());
                let mut k = at.index(64);
                replace_nth(&mut lines[n], &mut k, value);
            }
            if let Some(d) = drop_line {
                let n = d.index(lines.len());
                lines.remove(n);
            }
            let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
            if let Ok(m) = Manifest::from_bytes(&gz(body.as_bytes())) {
                exercise(&m);
            }
        }
    }

    use std::io::Read;
}
