//! Manifests and part records: what a snapshot contains and where each byte lives.
//!
//! A manifest is gzip-compressed JSON Lines: one [`Header`] line, then one line per
//! [`PackRecord`], then one line per [`Entry`], entries sorted by path bytes. It is
//! written **last** and create-only: a snapshot exists iff its manifest exists.
//!
//! Part records (`parts/<run-id>/<partition>.jsonl.gz`) use the same line types with a
//! [`PartHeader`] first: they are the durable result of one partition, merged into the
//! manifest at commit and used to resume a crashed run.
//!
//! Database and command sources add optional lines (older manifests simply have none):
//! a [`TableRecord`] per backed-up table (columns and types, row count, a row-set
//! checksum, the ordered chunk entries holding its CSV) and a [`StreamRecord`] per
//! command output. Readers that predate them fail loudly on the unknown line type rather
//! than restoring half a database.
//!
//! Paths are bytes: a UTF-8 path is stored as a JSON string, any other as
//! `{"b64": "…"}`, so non-UTF-8 names survive the round trip.

pub mod catalog;
pub mod check;
pub mod codec;
pub mod crypt;
pub mod layout;
pub mod lock;
pub mod moved;
pub mod records;
pub mod segment;

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::codec::Codec;
use crate::store::Tier;

/// Newest manifest format this build reads and writes: 3 is format 2 with chunked
/// files (entries with a `chunks` list); 2 lists entry segments ([`segment`]) instead
/// of holding entries; 1 holds them inline (database and command sources still write
/// format 1, and every format-1 and format-2 manifest keeps reading).
pub const FORMAT_VERSION: u32 = 3;

/// Format of a segmented manifest with no chunked file: what builds before chunking
/// wrote and read. A snapshot holding a chunked file is written as [`FORMAT_VERSION`]
/// (3), so those builds refuse it as newer instead of reading its files as damaged.
pub const FORMAT_SEGMENTS: u32 = 2;

/// Format of a manifest that holds its entries inline.
pub const FORMAT_INLINE: u32 = 1;

/// A path as raw bytes, `/`-separated, relative to the source root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathBytes(pub Vec<u8>);

impl PathBytes {
    /// Lossy display form.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
    /// As an OS path (Unix: the exact bytes).
    pub fn to_path(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&self.0))
    }
}

impl Serialize for PathBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("b64", &crate::store::b64(&self.0))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for PathBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            B { b64: String },
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => Ok(PathBytes(s.into_bytes())),
            Raw::B { b64 } => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map(PathBytes)
                    .map_err(serde::de::Error::custom)
            }
        }
    }
}

/// Kind of a stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (stored, never followed).
    Symlink,
}

/// One file, directory or symlink of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the source root.
    pub path: PathBytes,
    /// Kind.
    pub kind: EntryKind,
    /// Size in bytes (files).
    #[serde(default)]
    pub size: u64,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    #[serde(default)]
    pub mtime_nsec: u32,
    /// Owner uid (recorded; restore does not change ownership).
    #[serde(default)]
    pub uid: u32,
    /// Owner gid.
    #[serde(default)]
    pub gid: u32,
    /// SHA-256 of the content (files), lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Link target (symlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBytes>,
    /// Pack holding the entry's tar record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    /// Uncompressed offset of the entry's tar header in the pack.
    #[serde(default)]
    pub offset: u64,
    /// Uncompressed offset of the entry's data in the pack.
    #[serde(default)]
    pub data_offset: u64,
    /// The file kept changing while read (stored as last read; see the run record).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inconsistent: bool,
    /// Inode at backup time (change detection for incrementals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// Status-change time (seconds) at backup time (change detection for incrementals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<i64>,
    /// A large file stored as content-defined chunks, in file order (then `pack` is
    /// `None`): the file is the concatenation of their data. Omitted for files stored
    /// whole, and for every entry of manifests written before chunking.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Chunk>,
    /// Blob properties of an entry read from a blob container (`source.type = "blob"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<Box<BlobMeta>>,
}

/// One content-defined chunk of a large file: its own tar entry
/// (`<path>.chunks/<sha256>`) in a pack, possibly one an earlier snapshot wrote.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chunk {
    /// SHA-256 of the chunk's bytes, lowercase hex (also the last part of its tar name).
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Pack holding the chunk's tar record.
    pub pack: String,
    /// Uncompressed offset of the chunk's first tar header in the pack.
    pub offset: u64,
    /// Uncompressed offset of the chunk's data in the pack.
    pub data_offset: u64,
}

/// Suffix of the directory a chunked file's chunk entries live under in the tar
/// stream: `<path>.chunks/<sha256>`.
pub const CHUNK_DIR_SUFFIX: &str = ".chunks";

/// The tar name of chunk `sha256` of file `path`.
pub fn chunk_tar_name(path: &PathBytes, sha256: &str) -> PathBytes {
    let mut n = path.0.clone();
    n.extend_from_slice(CHUNK_DIR_SUFFIX.as_bytes());
    n.push(b'/');
    n.extend_from_slice(sha256.as_bytes());
    PathBytes(n)
}

/// What a blob-container source keeps of a blob beside its bytes: enough to decide
/// whether an incremental may reuse it (ETag) and to restore it as it was (content type,
/// metadata, index tags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    /// ETag of the version read.
    pub etag: String,
    /// Content-MD5 the service held for the blob (base64), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_md5: Option<String>,
    /// Content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// User metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Blob index tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Access tier when listed (`hot`, `cool`, `cold`, `archive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// For a blob staged server-side into a stored pack (then `sha256` is absent): the
    /// MD5 (base64) of the concatenated 16-byte MD5s of its data blocks, each computed by
    /// the service that staged it. See [`Entry::hasher`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_md5: Option<String>,
}

/// Hashes an entry's data the way its manifest line records it: SHA-256 of the bytes, or,
/// for a blob staged server-side (`blob.blocks_md5`), the MD5 of the MD5s of the data cut
/// at its pack's block boundaries. Memory: one offset per block of the pack.
pub enum EntryHasher {
    /// SHA-256 of the data.
    Sha256(sha2::Sha256),
    /// MD5 of the per-block MD5s.
    Blocks {
        /// Data-relative ends of the blocks still to finish.
        ends: std::collections::VecDeque<u64>,
        /// Data bytes seen.
        pos: u64,
        /// MD5 of the current block.
        cur: md5::Md5,
        /// MD5 over the finished blocks' MD5s.
        all: md5::Md5,
    },
}

impl EntryHasher {
    /// Feed the next bytes of the entry's data.
    pub fn update(&mut self, mut b: &[u8]) {
        use md5::Digest;
        match self {
            EntryHasher::Sha256(h) => h.update(b),
            EntryHasher::Blocks {
                ends,
                pos,
                cur,
                all,
            } => {
                while !b.is_empty() {
                    let end = ends.front().copied().unwrap_or(u64::MAX);
                    let take = (end - *pos).min(b.len() as u64) as usize;
                    cur.update(&b[..take]);
                    *pos += take as u64;
                    b = &b[take..];
                    if *pos == end {
                        all.update(std::mem::take(cur).finalize());
                        ends.pop_front();
                    }
                }
            }
        }
    }

    /// The hash, as the manifest spells it (hex SHA-256, base64 MD5).
    pub fn finish(self) -> String {
        use md5::Digest;
        match self {
            EntryHasher::Sha256(h) => hex::encode(h.finalize()),
            // A short read leaves its last block unfinished, so it hashes differently.
            EntryHasher::Blocks { all, .. } => crate::store::b64(&all.finalize()),
        }
    }
}

impl Entry {
    /// The hash the manifest records for this file's data, and its name.
    pub fn content_hash(&self) -> (Option<&str>, &'static str) {
        match self.blob.as_deref().and_then(|b| b.blocks_md5.as_deref()) {
            Some(h) if self.sha256.is_none() => (Some(h), "block MD5s"),
            _ => (self.sha256.as_deref(), "SHA-256"),
        }
    }

    /// A hasher for this entry's data, stored in `pack` (its own), that computes what
    /// [`Entry::content_hash`] names.
    pub fn hasher(&self, pack: Option<&PackRecord>) -> EntryHasher {
        use sha2::Digest;
        let staged =
            self.sha256.is_none() && self.blob.as_deref().is_some_and(|b| b.blocks_md5.is_some());
        match pack {
            Some(p) if staged => {
                let mut ends = std::collections::VecDeque::new();
                let mut off = 0u64;
                for b in &p.blocks {
                    off += b.size;
                    if off > self.data_offset && off <= self.data_offset + self.size {
                        ends.push_back(off - self.data_offset);
                    }
                }
                EntryHasher::Blocks {
                    ends,
                    pos: 0,
                    cur: md5::Md5::default(),
                    all: md5::Md5::default(),
                }
            }
            _ => EntryHasher::Sha256(sha2::Sha256::new()),
        }
    }

    /// Every pack this entry's data lives in: its own, or its chunks' (with repeats).
    pub fn packs(&self) -> impl Iterator<Item = &str> {
        self.pack
            .as_deref()
            .into_iter()
            .chain(self.chunks.iter().map(|c| c.pack.as_str()))
    }

    /// A chunked file's chunks as stand-in file entries named like the file (so a
    /// finding about one names the file), one per distinct stored chunk, in file order:
    /// what a pack-by-pack reader (verify) checks. Empty for an entry stored whole.
    pub fn chunk_entries(&self) -> Vec<Entry> {
        let mut seen = std::collections::HashSet::new();
        self.chunks
            .iter()
            .filter(|c| seen.insert((c.pack.as_str(), c.data_offset)))
            .map(|c| Entry {
                blob: None,
                path: self.path.clone(),
                kind: EntryKind::File,
                size: c.size,
                mode: self.mode,
                mtime: self.mtime,
                mtime_nsec: self.mtime_nsec,
                uid: self.uid,
                gid: self.gid,
                sha256: Some(c.sha256.clone()),
                target: None,
                pack: Some(c.pack.clone()),
                offset: c.offset,
                data_offset: c.data_offset,
                inconsistent: false,
                ino: None,
                ctime: None,
                chunks: Vec::new(),
            })
            .collect()
    }

    /// Same kind, size, content hash, mode, mtime and link target (location may differ).
    pub fn same_as(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.content_hash() == other.content_hash()
            && self.mode == other.mode
            && (self.mtime, self.mtime_nsec) == (other.mtime, other.mtime_nsec)
            && self.target == other.target
    }
}

/// A block of a pack blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    /// Block id as staged (base64).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// MD5 of the block, base64.
    pub md5: String,
}

/// One pack blob: a tar stream in independent compressed frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRecord {
    /// Pack id.
    pub id: String,
    /// Blob name relative to the pipeline prefix (`packs/ab/ab….tar.zst`).
    pub blob: String,
    /// Codec of every frame.
    pub codec: Codec,
    /// Compressed size (blob size).
    pub size: u64,
    /// Uncompressed (tar) size.
    pub raw_size: u64,
    /// MD5 of the whole blob, base64 (its Content-MD5).
    pub md5: String,
    /// Access tier at commit.
    pub tier: Tier,
    /// Frame table: `[uncompressed offset, compressed offset]` of each frame start.
    pub frames: Vec<(u64, u64)>,
    /// Block table in blob order.
    pub blocks: Vec<BlockRecord>,
}

impl PackRecord {
    /// Index of the frame containing uncompressed offset `raw` (0 for an empty table).
    pub fn frame_at(&self, raw: u64) -> usize {
        match self.frames.binary_search_by(|f| f.0.cmp(&raw)) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }

    /// Compressed byte range of frames `a..=b`. Never panics: indices past the table
    /// give a range at the pack's end (empty), and the range never runs backwards; on a
    /// validated record ([`check::validate`]) it is exact.
    pub fn frames_comp_range(&self, a: usize, b: usize) -> std::ops::Range<u64> {
        let start = self.frames.get(a).map_or(self.size, |f| f.1);
        let end = b
            .checked_add(1)
            .and_then(|n| self.frames.get(n))
            .map_or(self.size, |f| f.1);
        start..end.max(start)
    }

    /// Uncompressed byte range of frames `a..=b` (out-of-table indices as in
    /// [`PackRecord::frames_comp_range`]).
    pub fn frames_raw_range(&self, a: usize, b: usize) -> std::ops::Range<u64> {
        let start = self.frames.get(a).map_or(self.raw_size, |f| f.0);
        let end = b
            .checked_add(1)
            .and_then(|n| self.frames.get(n))
            .map_or(self.raw_size, |f| f.0);
        start..end.max(start)
    }

    /// Compressed byte range of block `i` (empty, at the end, past the table).
    pub fn block_range(&self, i: usize) -> std::ops::Range<u64> {
        let start = self.blocks[..i.min(self.blocks.len())]
            .iter()
            .fold(0u64, |acc, b| acc.saturating_add(b.size));
        let len = self.blocks.get(i).map_or(0, |b| b.size);
        start..start.saturating_add(len)
    }
}

/// Totals of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Sum of file sizes.
    pub bytes: u64,
    /// Sum of pack sizes (compressed, as stored).
    pub stored_bytes: u64,
    /// Number of packs.
    pub packs: u64,
    /// Files stored as inconsistent (changed while read).
    pub inconsistent: u64,
    /// Files that could not be read (not in the snapshot).
    pub unreadable: u64,
}

/// First line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Format version.
    pub format: u32,
    /// Pipeline name.
    pub pipeline: String,
    /// Snapshot id (starts with its UTC time).
    pub snapshot: String,
    /// Run that created it.
    pub run_id: String,
    /// Run start.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Commit time.
    pub committed_at: chrono::DateTime<chrono::Utc>,
    /// Parent snapshot (incrementals).
    #[serde(default)]
    pub parent: Option<String>,
    /// What was backed up (e.g. `fs:/srv/data`).
    pub source: String,
    /// Codec of the packs written by this run.
    pub codec: Codec,
    /// Totals.
    pub totals: Totals,
    /// Paths that could not be read (the snapshot is partial).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<PathBytes>,
    /// Incrementals since the last full backup (0: this snapshot is a full).
    #[serde(default)]
    pub chain: u32,
    /// Start time of the full backup this snapshot's chain began with.
    #[serde(default)]
    pub full_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What changed against the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    /// `[encryption]`: the data key and KEK (the rest of the manifest is sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crypt::EncryptionInfo>,
}

impl Header {
    /// The header an encrypted manifest shows in clear: no unreadable paths, and the
    /// source reduced to its kind (`fs`, `postgres`, …), as both can name paths or hosts.
    pub fn redacted(&self) -> Header {
        let mut h = self.clone();
        h.unreadable.clear();
        h.source = h.source.split(':').next().unwrap_or_default().to_string();
        h
    }
}

/// The `sealed` line of an encrypted manifest: the rest of it, sealed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedLine {
    #[serde(rename = "type")]
    kind: String,
    /// base64 of the sealed blob ([`crypt::DataKey::seal_blob`]) of the plain manifest.
    data: String,
}

/// Entries and bytes that were new, changed, unchanged or deleted against the parent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Entries not in the parent.
    pub new: u64,
    /// Bytes of new files.
    pub new_bytes: u64,
    /// Entries in the parent whose content or metadata changed.
    pub changed: u64,
    /// Bytes of changed files.
    pub changed_bytes: u64,
    /// Entries equal to the parent's.
    pub unchanged: u64,
    /// Bytes of unchanged files.
    pub unchanged_bytes: u64,
    /// Entries of the parent no longer in the source.
    pub deleted: u64,
    /// Bytes of deleted files.
    pub deleted_bytes: u64,
}

impl Changes {
    /// Compare a new, path-sorted entry list with its parent's. An entry is unchanged
    /// when kind, size, content hash, mode, mtime and link target are equal.
    pub fn between(parent: &[Entry], new: &[Entry]) -> Changes {
        let mut c = Changes::default();
        let (mut i, mut j) = (0, 0);
        while i < parent.len() || j < new.len() {
            let ord = match (parent.get(i), new.get(j)) {
                (Some(a), Some(b)) => a.path.cmp(&b.path),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match ord {
                std::cmp::Ordering::Less => {
                    c.deleted += 1;
                    c.deleted_bytes += parent[i].size;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    c.new += 1;
                    c.new_bytes += new[j].size;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if parent[i].same_as(&new[j]) {
                        c.unchanged += 1;
                        c.unchanged_bytes += new[j].size;
                    } else {
                        c.changed += 1;
                        c.changed_bytes += new[j].size;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        c
    }
}

/// Paths that differ between two snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// In `to` only.
    pub added: Vec<String>,
    /// In both, with different kind, size, content, mode, mtime or link target.
    pub changed: Vec<String>,
    /// In `from` only.
    pub removed: Vec<String>,
}

/// Compare two path-sorted entry lists by streaming both.
pub fn diff(from: &[Entry], to: &[Entry]) -> Diff {
    let mut d = Diff::default();
    let (mut i, mut j) = (0, 0);
    while i < from.len() || j < to.len() {
        match (from.get(i), to.get(j)) {
            (Some(a), Some(b)) if a.path == b.path => {
                if !a.same_as(b) {
                    d.changed.push(b.path.display());
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.path < b.path => {
                d.removed.push(a.path.display());
                i += 1;
            }
            (Some(a), None) => {
                d.removed.push(a.path.display());
                i += 1;
            }
            (_, Some(b)) => {
                d.added.push(b.path.display());
                j += 1;
            }
            (None, None) => break,
        }
    }
    d
}

/// First line of a part record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartHeader {
    /// Format version.
    pub format: u32,
    /// Run id.
    pub run_id: String,
    /// Partition index.
    pub partition: usize,
    /// Paths of this partition that could not be read.
    #[serde(default)]
    pub unreadable: Vec<PathBytes>,
    /// Finish time.
    pub finished_at: chrono::DateTime<chrono::Utc>,
    /// The segment holding the partition's entries (filesystem partitions; `None` when
    /// it has none, or for streamed sources whose entries follow as lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<segment::SegmentRef>,
    /// What changed against the parent in the partition's range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    /// Packs of the parent that reused entries point into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_packs: Vec<String>,
    /// Files stored as inconsistent (at most [`segment::MAX_LISTED`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inconsistent: Vec<PathBytes>,
}

impl Changes {
    /// Add `o`'s counts to these.
    pub fn add(&mut self, o: &Changes) {
        self.new += o.new;
        self.new_bytes += o.new_bytes;
        self.changed += o.changed;
        self.changed_bytes += o.changed_bytes;
        self.unchanged += o.unchanged;
        self.unchanged_bytes += o.unchanged_bytes;
        self.deleted += o.deleted;
        self.deleted_bytes += o.deleted_bytes;
    }
}

/// One column of a backed-up table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Type as the source database spells it (`format_type()` / `COLUMN_TYPE`).
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// A table of a database snapshot (or, in a part record, the key range one partition
/// read of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRecord {
    /// `postgres` or `mysql`.
    pub source: String,
    /// Schema (PostgreSQL) or database (MySQL).
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Columns in stored (CSV) order.
    pub columns: Vec<Column>,
    /// Primary-key columns (empty: none).
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// The source's other indexes: PostgreSQL, each a `CREATE INDEX` statement as the
    /// server printed it, every name schema-qualified (`pg_get_indexdef`); MySQL, each an
    /// index line of `SHOW CREATE TABLE` (`KEY …`, `UNIQUE KEY …`). Empty in older
    /// manifests. Drills build them so their RTO includes their cost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<String>,
    /// The source's unique, check, exclusion and foreign-key constraints, each as
    /// `CONSTRAINT name definition` (PostgreSQL: `pg_get_constraintdef`, schema-qualified;
    /// MySQL: foreign keys and checks as `SHOW CREATE TABLE` prints them, the referenced
    /// table written `` `database`.`table` ``). Empty in older manifests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Rows stored.
    pub rows: u64,
    /// Row-set checksum: `rowset-sha256:<hex>`, the lane-wise sum of the SHA-256 of every
    /// CSV row. Independent of row order, so a restored table can be checked by
    /// re-reading it in any order, and key ranges add up.
    pub checksum: String,
    /// CSV bytes stored (headers excluded).
    #[serde(default)]
    pub bytes: u64,
    /// Entry paths holding the rows, in load order. Each is a complete CSV file with a
    /// header line.
    pub chunks: Vec<PathBytes>,
    /// Key range index within the table (part records only; 0 in manifests).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub range: usize,
    /// The key ranges the table was read in, in order, each with its own counts (a part
    /// record holds its one range). The next backup reads with the same boundaries and
    /// points at a range's chunks instead of storing them again when its rows are the
    /// same. Empty in manifests written before range reuse (no reuse from them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<RangeRecord>,
}

/// One key range of a table as stored: bounds, exact counts and how many of the table's
/// `chunks` (the next ones, in order) hold its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRecord {
    /// Integer key range `[lo, hi)`; `None` for a table read whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<(i64, i64)>,
    /// Rows in the range.
    pub rows: u64,
    /// Row-set checksum of the range (`rowset-sha256:<hex>`, see [`TableRecord`]).
    pub checksum: String,
    /// CSV bytes of the range (headers excluded).
    pub bytes: u64,
    /// Number of chunks holding the range.
    pub chunks: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The stored output of a command source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Stream name (`command/<name>/…`).
    pub name: String,
    /// The program run (arguments are not recorded: they may hold secrets).
    pub program: String,
    /// Exit code (always 0 in a committed snapshot).
    pub exit_code: i32,
    /// Bytes of standard output.
    pub bytes: u64,
    /// SHA-256 of the whole output (the chunks concatenated).
    pub sha256: String,
    /// Entry paths holding the output, in order; concatenate them to get it back.
    pub chunks: Vec<PathBytes>,
    /// Standard error, the last 64 KiB at most.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
}

/// Sum of per-row SHA-256 digests, lane-wise (4 × u64, wrapping): an order-independent
/// digest of a multiset of rows that adds across key ranges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowsetDigest([u64; 4]);

impl RowsetDigest {
    /// Add one row (its CSV bytes, line ending included).
    pub fn add_row(&mut self, row: &[u8]) {
        use sha2::Digest;
        let d = sha2::Sha256::digest(row);
        for (i, lane) in self.0.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&d[i * 8..i * 8 + 8]);
            *lane = lane.wrapping_add(u64::from_be_bytes(b));
        }
    }
    /// Combine with another digest (disjoint row sets).
    pub fn merge(&mut self, o: &RowsetDigest) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a = a.wrapping_add(b);
        }
    }
    /// `rowset-sha256:<hex>`.
    pub fn to_checksum(&self) -> String {
        let mut s = String::from("rowset-sha256:");
        for l in self.0 {
            s.push_str(&format!("{l:016x}"));
        }
        s
    }
    /// Parse what [`RowsetDigest::to_checksum`] wrote.
    pub fn from_checksum(s: &str) -> Option<RowsetDigest> {
        let h = s.strip_prefix("rowset-sha256:")?;
        // Untrusted text: byte-index slicing below needs ASCII (found by cargo fuzz).
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut d = RowsetDigest::default();
        for (i, lane) in d.0.iter_mut().enumerate() {
            *lane = u64::from_str_radix(&h[i * 16..i * 16 + 16], 16).ok()?;
        }
        Some(d)
    }
}

/// Merge the per-range table records of part records into one record per table, chunks
/// in range order; tables sorted by schema and name.
pub fn merge_tables(mut parts: Vec<TableRecord>) -> Vec<TableRecord> {
    parts.sort_by(|a, b| (&a.schema, &a.name, a.range).cmp(&(&b.schema, &b.name, b.range)));
    let mut out: Vec<TableRecord> = Vec::new();
    for t in parts {
        match out.last_mut() {
            Some(last) if last.schema == t.schema && last.name == t.name => {
                let mut d = RowsetDigest::from_checksum(&last.checksum).unwrap_or_default();
                d.merge(&RowsetDigest::from_checksum(&t.checksum).unwrap_or_default());
                last.checksum = d.to_checksum();
                last.rows += t.rows;
                last.bytes += t.bytes;
                last.chunks.extend(t.chunks);
                last.ranges.extend(t.ranges);
            }
            _ => out.push(TableRecord { range: 0, ..t }),
        }
    }
    out
}

/// One line of a manifest or part record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    /// Manifest header.
    Header(Header),
    /// Part record header.
    Part(PartHeader),
    /// A pack.
    Pack(PackRecord),
    /// An entry.
    Entry(Entry),
    /// A database table (database sources).
    Table(TableRecord),
    /// A command's output (command sources).
    Stream(StreamRecord),
    /// A segment of entries (format 2).
    Segment(segment::SegmentRef),
}

/// A whole manifest in memory.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Header.
    pub header: Header,
    /// Packs.
    pub packs: Vec<PackRecord>,
    /// Entries sorted by path (format 1, or a format-2 manifest whose segments were
    /// read with [`segment::materialize`]; empty otherwise).
    pub entries: Vec<Entry>,
    /// Entry segments in path order (format 2; empty for format 1).
    pub segments: Vec<segment::SegmentRef>,
    /// Tables (database sources; empty otherwise).
    pub tables: Vec<TableRecord>,
    /// Command outputs (command sources; empty otherwise).
    pub streams: Vec<StreamRecord>,
    /// The moved records it was read through (`None`: none of its packs was repacked,
    /// or it was not read from a store). See [`moved::overlay`].
    pub moved: Option<std::sync::Arc<moved::Moved>>,
}

impl Manifest {
    /// The pack record with id `id`.
    pub fn pack(&self, id: &str) -> Option<&PackRecord> {
        self.packs.iter().find(|p| p.id == id)
    }
}

/// Encode lines as gzip JSON Lines.
///
/// # Errors
/// Only on serialization bugs.
pub fn encode<'a>(lines: impl IntoIterator<Item = &'a Line>) -> Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    for l in lines {
        serde_json::to_writer(&mut gz, l)
            .map_err(|e| Error::internal(format!("encoding manifest: {e}")))?;
        gz.write_all(b"\n")
            .map_err(|e| Error::internal(format!("encoding manifest: {e}")))?;
    }
    gz.finish()
        .map_err(|e| Error::internal(format!("encoding manifest: {e}")))
}

/// Decode gzip JSON Lines.
///
/// # Errors
/// `Integrity` if the data is not valid gzip JSON Lines.
pub fn decode(data: &[u8]) -> Result<Vec<Line>> {
    Ok(decode_numbered(data)?.into_iter().map(|(_, l)| l).collect())
}

/// Decode gzip JSON Lines, each with its 1-based line number.
fn decode_numbered(data: &[u8]) -> Result<Vec<(usize, Line)>> {
    let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(data));
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line =
            line.map_err(|e| Error::integrity(format!("manifest is not valid gzip: {e}")))?;
        if line.is_empty() {
            continue;
        }
        out.push((
            i + 1,
            serde_json::from_str(&line)
                .map_err(|e| Error::integrity(format!("manifest line {}: {e}", i + 1)))?,
        ));
    }
    Ok(out)
}

/// The plain gzip JSON Lines of a stored manifest or part record `name`: the bytes
/// themselves for a plain pipeline, opened under the layout's key for an encrypted one
/// (a manifest's `sealed` line, checked against its clear header; a part record or plan
/// sealed whole).
///
/// # Errors
/// `Config` for encrypted data and no key; `Integrity` for plain data in an encrypted
/// pipeline, sealed data that does not open, or a clear header that is not the sealed
/// one's.
pub fn open_stored(
    layout: &layout::Layout,
    name: &str,
    data: bytes::Bytes,
) -> Result<bytes::Bytes> {
    let first = if data.starts_with(&[0x1f, 0x8b]) {
        match decode_first(&data) {
            Ok(Line::Header(h)) => Some(h),
            _ => None,
        }
    } else {
        None
    };
    let Some(outer) = first else {
        // Not a manifest: a part record, sealed whole or plain.
        return layout.open(name, data);
    };
    match (&outer.encryption, layout.key()) {
        (None, None) => return Ok(data),
        (Some(e), None) => {
            return Err(Error::config(format!(
                "snapshot {} is encrypted (data key {}, {} {}), but the pipeline has no [encryption] table; add the one its backups were made with",
                outer.snapshot, e.key, e.kek.kind.as_str(), e.kek.id
            )))
        }
        (None, Some(_)) => {
            return Err(Error::integrity(format!(
                "snapshot {}: the manifest is not encrypted, but the pipeline is ([encryption]); blobpipe does not mix encrypted and plain snapshots under one prefix",
                outer.snapshot
            )))
        }
        (Some(_), Some(_)) => {}
    }
    let lines = decode_text_lines(&data)?;
    let sealed = match lines.last().map(|l| serde_json::from_str::<SealedLine>(l)) {
        Some(Ok(s)) if s.kind == "sealed" && lines.len() >= 2 => s,
        _ => {
            return Err(Error::integrity(format!(
                "snapshot {}: an encrypted manifest ends with its sealed line",
                outer.snapshot
            )))
        }
    };
    let bytes = crate::store::b64_decode(&sealed.data).ok_or_else(|| {
        Error::integrity(format!(
            "snapshot {}: manifest line 2: sealed data is not base64",
            outer.snapshot
        ))
    })?;
    let plain = layout.open(name, bytes.into())?;
    match decode_first(&plain)? {
        Line::Header(h) if h.redacted() == outer => Ok(plain),
        _ => Err(Error::integrity(format!(
            "snapshot {}: the clear header differs from the sealed one (it was altered)",
            outer.snapshot
        ))),
    }
}

/// The non-empty lines of gzip JSON Lines, as text.
fn decode_text_lines(data: &[u8]) -> Result<Vec<String>> {
    let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(data));
    let mut out = Vec::new();
    for line in r.lines() {
        let line =
            line.map_err(|e| Error::integrity(format!("manifest is not valid gzip: {e}")))?;
        if !line.is_empty() {
            out.push(line);
        }
    }
    Ok(out)
}

/// Decode just the first line of (possibly truncated) gzip JSON Lines.
///
/// # Errors
/// `Integrity` if no complete first line can be read.
pub fn decode_first(data: &[u8]) -> Result<Line> {
    let mut r = flate2::read::MultiGzDecoder::new(data);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = r.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.contains(&b'\n') {
            break;
        }
    }
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    serde_json::from_slice(&buf[..end])
        .map_err(|e| Error::integrity(format!("manifest header: {e}")))
}

impl Manifest {
    /// Parse a manifest blob and check every field ([`check::validate`]): what this
    /// returns is safe to restore from, verify and list.
    ///
    /// # Errors
    /// `Integrity` for malformed content, a missing header, a format newer than this
    /// build, or any field that fails validation (naming its line, record and field).
    pub fn from_bytes(data: &[u8]) -> Result<Manifest> {
        let mut header = None;
        let mut packs = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        let mut tables = Vec::new();
        let mut streams = Vec::new();
        let mut segments = Vec::new();
        let mut lines = check::Lines::default();
        for (n, l) in decode_numbered(data)? {
            match l {
                Line::Header(h) => {
                    if header.is_some() {
                        return Err(Error::integrity(format!(
                            "manifest line {n}: a second header line"
                        )));
                    }
                    header = Some(h)
                }
                Line::Pack(p) => {
                    lines.packs.push(n);
                    packs.push(p)
                }
                Line::Entry(e) => {
                    lines.entries.push(n);
                    entries.push(e)
                }
                Line::Table(t) => {
                    lines.tables.push(n);
                    tables.push(t)
                }
                Line::Stream(st) => {
                    lines.streams.push(n);
                    streams.push(st)
                }
                Line::Segment(sg) => {
                    lines.segments.push(n);
                    segments.push(sg)
                }
                Line::Part(_) => {
                    return Err(Error::integrity(format!(
                        "manifest line {n}: part header inside a manifest"
                    )))
                }
            }
        }
        let header = header.ok_or_else(|| Error::integrity("manifest has no header line"))?;
        if header.format > FORMAT_VERSION {
            return Err(Error::integrity(format!(
                "manifest format {} is newer than this blobpipe understands ({FORMAT_VERSION}); upgrade blobpipe",
                header.format
            )));
        }
        let m = Manifest {
            header,
            packs,
            entries,
            segments,
            tables,
            streams,
            moved: None,
        };
        check::validate_at(&m, &lines)?;
        Ok(m)
    }

    /// The manifest blob to store as `name`: [`Manifest::to_bytes`], or for an encrypted
    /// pipeline a clear (redacted) header line, the pack lines in clear, and a `sealed`
    /// line holding the whole plain manifest sealed under the data key.
    ///
    /// # Errors
    /// Only on serialization bugs.
    pub fn to_stored(&self, layout: &layout::Layout, name: &str) -> Result<Vec<u8>> {
        let plain = self.to_bytes()?;
        if layout.key().is_none() {
            return Ok(plain);
        }
        let sealed = layout.seal(name, plain)?;
        let line = SealedLine {
            kind: "sealed".into(),
            data: crate::store::b64(&sealed),
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        let enc = |e: std::io::Error| Error::internal(format!("encoding manifest: {e}"));
        serde_json::to_writer(&mut gz, &Line::Header(self.header.redacted()))
            .map_err(|e| Error::encode("manifest header", e))?;
        gz.write_all(b"\n").map_err(enc)?;
        // Pack lines (no paths) stay in clear too: block-level verification needs no key.
        for p in &self.packs {
            serde_json::to_writer(&mut gz, &Line::Pack(p.clone()))
                .map_err(|e| Error::encode("manifest pack line", e))?;
            gz.write_all(b"\n").map_err(enc)?;
        }
        serde_json::to_writer(&mut gz, &line).map_err(|e| Error::encode("manifest", e))?;
        gz.write_all(b"\n").map_err(enc)?;
        gz.finish().map_err(enc)
    }

    /// Read a stored manifest blob `name` ([`Manifest::to_stored`]): opened with the
    /// layout's key when it is sealed ([`open_stored`]), then checked as
    /// [`Manifest::from_bytes`].
    ///
    /// # Errors
    /// As [`open_stored`] and [`Manifest::from_bytes`].
    pub fn from_stored(
        layout: &layout::Layout,
        name: &str,
        data: bytes::Bytes,
    ) -> Result<Manifest> {
        Manifest::from_bytes(&open_stored(layout, name, data)?)
    }

    /// What an encrypted manifest shows without its key: the clear (redacted) header and
    /// the pack lines, no entries, segments, tables or streams. Only for block-level
    /// verification (`verify --without-key`): never restore or list from it.
    ///
    /// # Errors
    /// `Config` when the manifest is not encrypted; `Integrity` when its clear lines do
    /// not decode or fail validation.
    pub fn from_stored_keyless(data: &[u8]) -> Result<Manifest> {
        let mut header = None;
        let mut packs = Vec::new();
        let lines = decode_text_lines(data)?;
        for (i, l) in lines.iter().enumerate().take(lines.len().saturating_sub(1)) {
            match serde_json::from_str::<Line>(l)
                .map_err(|e| Error::integrity(format!("manifest line {}: {e}", i + 1)))?
            {
                Line::Header(h) if i == 0 => header = Some(h),
                Line::Pack(p) if i > 0 => packs.push(p),
                _ => {
                    return Err(Error::integrity(format!(
                        "manifest line {}: an encrypted manifest shows a header and pack lines in clear",
                        i + 1
                    )))
                }
            }
        }
        let header = header.filter(|h| h.encryption.is_some()).ok_or_else(|| {
            Error::config(
                "not an encrypted manifest: --without-key is for encrypted pipelines (verify this one without it)",
            )
        })?;
        let m = Manifest {
            header,
            packs,
            entries: vec![],
            segments: vec![],
            tables: vec![],
            streams: vec![],
            moved: None,
        };
        check::validate(&m)?;
        Ok(m)
    }

    /// Serialize (header, packs, entries).
    ///
    /// # Errors
    /// Only on serialization bugs.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let lines: Vec<Line> = std::iter::once(Line::Header(self.header.clone()))
            .chain(self.packs.iter().cloned().map(Line::Pack))
            .chain(self.segments.iter().cloned().map(Line::Segment))
            .chain(self.entries.iter().cloned().map(Line::Entry))
            .chain(self.tables.iter().cloned().map(Line::Table))
            .chain(self.streams.iter().cloned().map(Line::Stream))
            .collect();
        encode(&lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staged blob's hash is the MD5 of the MD5s of its data cut at the pack's block
    /// boundaries, however the data is fed; a changed byte or a short read changes it.
    #[test]
    fn block_md5_hash_follows_the_pack_blocks() {
        use md5::Digest;
        let block = |size: u64| BlockRecord {
            id: "x".into(),
            size,
            md5: String::new(),
        };
        let pack = PackRecord {
            id: "p".into(),
            blob: String::new(),
            codec: Codec::Stored,
            size: 0,
            raw_size: 0,
            md5: String::new(),
            tier: Tier::Hot,
            frames: vec![],
            blocks: vec![block(512), block(64), block(64), block(10), block(1024)],
        };
        let data: Vec<u8> = (0..138u8).collect();
        let mut e = entry(b"a");
        e.size = 138;
        e.data_offset = 512;
        e.sha256 = None;
        e.blob = Some(Box::new(BlobMeta {
            blocks_md5: Some("set".into()),
            ..Default::default()
        }));
        let mut all = md5::Md5::new();
        for c in [&data[..64], &data[64..128], &data[128..]] {
            all.update(crate::store::md5(c));
        }
        let want = crate::store::b64(&all.finalize());
        for step in [1, 7, 64, 138] {
            let mut h = e.hasher(Some(&pack));
            for c in data.chunks(step) {
                h.update(c);
            }
            assert_eq!(h.finish(), want, "fed {step} at a time");
        }
        let mut h = e.hasher(Some(&pack));
        h.update(&data[..137]);
        assert_ne!(h.finish(), want, "a short read");
        assert_eq!(e.content_hash().1, "block MD5s");
        // Two staged versions of a blob differ by that hash (there is no SHA-256).
        let mut other = e.clone();
        assert!(e.same_as(&other));
        if let Some(b) = other.blob.as_deref_mut() {
            b.blocks_md5 = Some("other".into());
        }
        assert!(!e.same_as(&other), "a different block-MD5 hash is a change");
    }

    fn entry(p: &[u8]) -> Entry {
        Entry {
            path: PathBytes(p.to_vec()),
            kind: EntryKind::File,
            size: 0,
            mode: 0o644,
            mtime: 1,
            mtime_nsec: 5,
            uid: 0,
            gid: 0,
            sha256: Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()),
            target: None,
            pack: None,
            offset: 0,
            data_offset: 512,
            inconsistent: false,
            ino: None,
            ctime: None,
            chunks: Vec::new(),
            blob: None,
        }
    }

    #[test]
    fn non_utf8_paths_round_trip() {
        let lines = vec![
            Line::Entry(entry(b"a/\xff\xfe.bin")),
            Line::Entry(entry("ü/ß".as_bytes())),
        ];
        let bytes = encode(&lines).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back, lines);
        let text = String::from_utf8_lossy(&{
            let mut s = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut s)
                .unwrap();
            s
        })
        .into_owned();
        assert!(text.contains("\"b64\""), "{text}");
        assert!(text.contains("ü/ß"), "{text}");
    }

    #[test]
    fn unsorted_or_headerless_manifest_is_rejected() {
        let h = Header {
            format: 1,
            pipeline: "p".into(),
            snapshot: "s".into(),
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
        };
        let bad = encode(&[
            Line::Header(h.clone()),
            Line::Entry(entry(b"b")),
            Line::Entry(entry(b"a")),
        ])
        .unwrap();
        assert!(Manifest::from_bytes(&bad)
            .unwrap_err()
            .to_string()
            .contains("not sorted"));
        let nohdr = encode(&[Line::Entry(entry(b"a"))]).unwrap();
        assert!(Manifest::from_bytes(&nohdr).is_err());
        let good = encode(&[Line::Header(h), Line::Entry(entry(b"a"))]).unwrap();
        assert!(matches!(
            decode_first(&good[..good.len() / 2 + 10]),
            Ok(Line::Header(_)) | Err(_)
        ));
        assert!(matches!(decode_first(&good).unwrap(), Line::Header(_)));
    }

    #[test]
    fn rowset_digest_is_order_independent_and_adds_up() {
        let rows: [&[u8]; 3] = [b"1,a\n", b"2,b\n", b"3,\"c\nd\"\n"];
        let mut fwd = RowsetDigest::default();
        rows.iter().for_each(|r| fwd.add_row(r));
        let mut rev = RowsetDigest::default();
        rows.iter().rev().for_each(|r| rev.add_row(r));
        assert_eq!(fwd, rev);
        let (mut a, mut b) = (RowsetDigest::default(), RowsetDigest::default());
        a.add_row(rows[0]);
        b.add_row(rows[1]);
        b.add_row(rows[2]);
        a.merge(&b);
        assert_eq!(a, fwd);
        assert_eq!(RowsetDigest::from_checksum(&fwd.to_checksum()), Some(fwd));
        let mut other = RowsetDigest::default();
        other.add_row(b"1,a\n");
        other.add_row(b"1,a\n");
        other.add_row(b"3,c\n");
        assert_ne!(other, fwd);
    }

    #[test]
    fn table_records_merge_by_range() {
        let t = |range: usize, rows: u64, row: &[u8]| {
            let mut d = RowsetDigest::default();
            d.add_row(row);
            TableRecord {
                source: "postgres".into(),
                schema: "s".into(),
                name: "t".into(),
                columns: vec![],
                primary_key: vec![],
                indexes: vec![],
                constraints: vec![],
                rows,
                checksum: d.to_checksum(),
                bytes: 1,
                chunks: vec![PathBytes(format!("c{range}").into_bytes())],
                range,
                ranges: vec![RangeRecord {
                    bounds: Some((range as i64 * 10, range as i64 * 10 + 10)),
                    rows,
                    checksum: d.to_checksum(),
                    bytes: 1,
                    chunks: 1,
                }],
            }
        };
        let m = merge_tables(vec![t(1, 2, b"y"), t(0, 1, b"x")]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].rows, 3);
        assert_eq!(
            m[0].chunks,
            vec![PathBytes(b"c0".to_vec()), PathBytes(b"c1".to_vec())]
        );
        let mut d = RowsetDigest::default();
        d.add_row(b"x");
        d.add_row(b"y");
        assert_eq!(m[0].checksum, d.to_checksum());
        let bounds: Vec<_> = m[0].ranges.iter().map(|r| r.bounds).collect();
        assert_eq!(
            bounds,
            vec![Some((0, 10)), Some((10, 20))],
            "ranges in key order"
        );
    }

    #[test]
    fn frame_lookup() {
        let p = PackRecord {
            id: "x".into(),
            blob: "b".into(),
            codec: Codec::Gzip,
            size: 300,
            raw_size: 3000,
            md5: String::new(),
            tier: Tier::Hot,
            frames: vec![(0, 0), (1000, 100), (2000, 200)],
            blocks: vec![],
        };
        assert_eq!(p.frame_at(0), 0);
        assert_eq!(p.frame_at(999), 0);
        assert_eq!(p.frame_at(1000), 1);
        assert_eq!(p.frame_at(2999), 2);
        assert_eq!(p.frames_comp_range(1, 2), 100..300);
        assert_eq!(p.frames_raw_range(0, 0), 0..1000);
    }
}
