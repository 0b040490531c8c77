//! Extraction: turning a source into partitions of entries.
//!
//! Planning walks the source (metadata only) and splits the sorted entry list into
//! contiguous partitions of about equal byte size. Contiguous ranges keep each
//! partition's entries in path order, so part records concatenate into a sorted
//! manifest, and balancing by size keeps the compressing workers equally busy.
//! Partitions are the unit of parallelism, of retry and of resume.
//!
//! The plan is stored with the run (`parts/<run-id>/plan.json.gz`), so a resumed run
//! works through exactly the partitions the first attempt planned.
//!
//! A blob container ([`blob`]) is cut the same way, by name range, from a listing the
//! engine reads page by page (the source holds no store client).
//!
//! Database and command sources are *streamed*: a [`Session`] is opened per run attempt
//! (for PostgreSQL it holds the coordinating transaction whose snapshot every worker
//! adopts), its work items are the partitions, and each item is read by a producer task
//! that sends bounded batches of records ([`Chunk`]) through a bounded channel to the
//! packing thread. A streamed plan is never stored or reused: a resumed attempt reads a
//! new snapshot, and mixing part records of two snapshots would break consistency.

pub mod blob;
pub mod command;
pub mod config;
pub mod fs;
pub mod mysql;
pub mod postgres;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use self::config::SourceConfig;
use crate::error::{Error, Result};
use crate::manifest::TableRecord;

/// Records sent per batch at most (a batch is also capped at [`BATCH_BYTES`]).
pub const BATCH_ROWS: usize = 4096;
/// Bytes per batch at most (one record may exceed it).
pub const BATCH_BYTES: usize = 1 << 20;
/// Batches in flight between a producer and its packing thread.
pub const BATCH_QUEUE: usize = 4;

/// What a producer sends to the packing thread.
#[derive(Debug)]
pub enum Chunk {
    /// The CSV header line (first, tables only); repeated at the top of every entry.
    Header(Bytes),
    /// Complete CSV rows, line endings included.
    Rows(Vec<Bytes>),
    /// Raw output bytes (commands).
    Data(Bytes),
    /// The item ended well; nothing follows.
    Done(Done),
}

/// How a streamed item ended.
#[derive(Debug, Default)]
pub struct Done {
    /// Exit code (commands).
    pub exit_code: i32,
    /// Standard error, truncated (commands).
    pub stderr: String,
}

/// What one work item is.
#[derive(Debug, Clone)]
pub enum ItemKind {
    /// A table or a key range of one: `template` has columns and keys, no counts.
    Table {
        /// The table's record without rows, checksum or chunks.
        template: Arc<TableRecord>,
    },
    /// A command's output.
    Command {
        /// Stream name.
        name: String,
        /// Program (no arguments: they may hold secrets).
        program: String,
    },
}

/// One work item (= one partition) of a streamed source.
#[derive(Debug, Clone)]
pub struct Item {
    /// What it is.
    pub kind: ItemKind,
    /// Key range index within the table (0 for unsplit tables and commands).
    pub range: usize,
    /// Integer key range `[a, b)` of a split table.
    pub bounds: Option<(i64, i64)>,
    /// Entry path prefix, e.g. `postgres/public.orders/0001`.
    pub base: String,
    /// Entry file extension (`csv`, `out`).
    pub ext: &'static str,
    /// Bytes per entry.
    pub chunk_size: usize,
}

impl Item {
    /// One item per key range of a database table (`ranges` as `split_range` gives
    /// them, or `[None]` for an unsplit table); entries go under `{source}/{table}/NNNN`.
    pub(crate) fn table_ranges(
        source: &'static str,
        template: &Arc<crate::manifest::TableRecord>,
        ranges: Vec<Option<(i64, i64)>>,
        chunk_size: usize,
    ) -> impl Iterator<Item = Item> {
        let seg = table_segment(&template.schema, &template.name);
        let template = Arc::clone(template);
        ranges.into_iter().enumerate().map(move |(i, bounds)| Item {
            kind: ItemKind::Table {
                template: template.clone(),
            },
            range: i,
            bounds,
            base: format!("{source}/{seg}/{i:04}"),
            ext: "csv",
            chunk_size,
        })
    }
}

/// Most key ranges one table is split into.
pub const MAX_RANGES: usize = 4096;

/// How a table of about `rows` rows and `bytes` bytes on disk is split when it has no
/// ranges from its parent: whether to split it (more than `split_rows` rows or, with
/// `split_bytes` > 0, more than `split_bytes` bytes) and into how many ranges (enough for
/// at most `split_rows` rows and about `split_bytes` bytes each; 1 to 4096).
pub(crate) fn range_count(rows: f64, bytes: u64, split_rows: u64, split_bytes: u64) -> (bool, i64) {
    let by_rows = (rows / split_rows.max(1) as f64).ceil().max(1.0) as u64;
    let by_bytes = if split_bytes > 0 {
        bytes.div_ceil(split_bytes).max(1)
    } else {
        1
    };
    let split = rows > split_rows as f64 || (split_bytes > 0 && bytes > split_bytes);
    (split, by_rows.max(by_bytes).clamp(1, 4096) as i64)
}

/// The bounded key ranges `prior` (the parent snapshot's record of the same table) was
/// read in, when it was split and has the same one-column key; otherwise empty.
pub(crate) fn prior_bounds(prior: Option<&TableRecord>, pk: &[String]) -> Vec<(i64, i64)> {
    let Some(t) = prior.filter(|t| t.primary_key == pk && !t.ranges.is_empty()) else {
        return Vec::new();
    };
    t.ranges
        .iter()
        .map(|r| r.bounds)
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// Key ranges covering `[lo, hi]`: `prior`'s boundaries when there are any (so that the
/// ranges of an unchanged region read the same rows as in the parent and can be reused),
/// widened at the ends to take in keys beyond them — the first range grows down, the
/// last grows up by at most half a typical range, beyond that new ranges of the typical
/// width follow. Without prior boundaries: `n` equal ranges.
pub(crate) fn stable_ranges(prior: &[(i64, i64)], lo: i64, hi: i64, n: i64) -> Vec<(i64, i64)> {
    let (Some(first), Some(last)) = (prior.first(), prior.last()) else {
        return postgres::split_range(lo, hi, n);
    };
    let mut out = prior.to_vec();
    if lo < first.0 {
        out[0].0 = lo;
    }
    let end = i128::from(hi) + 1;
    let width = ((i128::from(last.1) - i128::from(first.0)) / prior.len() as i128).max(1);
    let extra = end - i128::from(last.1);
    if extra > 0 {
        if extra <= width / 2 {
            let k = out.len() - 1;
            out[k].1 = end.min(i128::from(i64::MAX)) as i64;
        } else {
            let more = ((extra + width - 1) / width).clamp(1, MAX_RANGES as i128) as i64;
            out.extend(postgres::split_range(last.1, hi, more));
        }
    }
    if out.len() > MAX_RANGES {
        return postgres::split_range(lo, hi, n);
    }
    out
}

/// The receiving end of a producer.
pub type ChunkRx = mpsc::Receiver<Result<Chunk>>;

/// An open streamed source for one run attempt.
pub enum Session {
    /// PostgreSQL (exported snapshot).
    Postgres(Box<postgres::PgSession>),
    /// MySQL / MariaDB (one consistent-snapshot connection).
    Mysql(mysql::MySession),
    /// A command.
    Command(command::CommandSession),
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Session::Postgres(_) => "Session::Postgres",
            Session::Mysql(_) => "Session::Mysql",
            Session::Command(_) => "Session::Command",
        })
    }
}

impl Session {
    /// Open the source and plan its work items; the plan has one partition per item.
    /// `readers` is the pipeline's `[partitions] max_parallel`: how many connections a
    /// MySQL source opens inside its one snapshot.
    ///
    /// # Errors
    /// `Source` when the database cannot be reached or read, `Config` when no table
    /// matches.
    /// `prior` are the parent snapshot's tables: a table it holds is read in the same key
    /// ranges (see [`stable_ranges`]).
    pub async fn open(
        src: &SourceConfig,
        readers: usize,
        prior: &[TableRecord],
    ) -> Result<(Plan, Session)> {
        let session = match src {
            SourceConfig::Postgres(c) => {
                Session::Postgres(Box::new(postgres::PgSession::open(c, prior).await?))
            }
            SourceConfig::Mysql(c) => {
                Session::Mysql(mysql::MySession::open(c, readers, prior).await?)
            }
            SourceConfig::Command(c) => Session::Command(command::CommandSession::new(c)),
            SourceConfig::Fs(_) | SourceConfig::Blob(_) => {
                return Err(Error::internal("fs and blob sources are not streamed"))
            }
        };
        let plan = Plan {
            source: session.describe(),
            partitions: session
                .items()
                .iter()
                .map(|it| {
                    vec![PlannedEntry {
                        path: crate::manifest::PathBytes(it.base.clone().into_bytes()),
                        kind: EntryKind::File,
                        size: 0,
                    }]
                })
                .collect(),
            problems: vec![],
            ..Plan::default()
        };
        Ok((plan, session))
    }

    /// Source description for the manifest header (no secrets).
    pub fn describe(&self) -> String {
        match self {
            Session::Postgres(s) => s.describe(),
            Session::Mysql(s) => s.describe(),
            Session::Command(s) => s.describe(),
        }
    }

    /// The work items, one per partition.
    pub fn items(&self) -> &[Item] {
        match self {
            Session::Postgres(s) => &s.items,
            Session::Mysql(s) => &s.items,
            Session::Command(s) => &s.items,
        }
    }

    /// Start reading item `idx`: spawns its producer on the current runtime.
    ///
    /// # Errors
    /// `Internal` for an index out of range.
    pub fn start(&self, idx: usize) -> Result<ChunkRx> {
        let item = self
            .items()
            .get(idx)
            .cloned()
            .ok_or_else(|| Error::internal(format!("no work item {idx}")))?;
        let (tx, rx) = mpsc::channel(BATCH_QUEUE);
        match self {
            Session::Postgres(s) => s.start(item, tx),
            Session::Mysql(s) => s.start(item, tx),
            Session::Command(s) => s.start(item, tx),
        }
        Ok(rx)
    }
}

/// Whether `name` (a table, or `schema.table`) matches a `*`/`?` pattern.
pub fn pattern_match(pat: &str, name: &str) -> bool {
    fn rec(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => rec(&p[1..], n) || (!n.is_empty() && rec(p, &n[1..])),
            (Some('?'), Some(_)) => rec(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    rec(&p, &n)
}

/// Whether table `schema.name` is selected by include/exclude patterns (each matched
/// against `name` and `schema.name`).
pub fn table_selected(include: &[String], exclude: &[String], schema: &str, name: &str) -> bool {
    let full = format!("{schema}.{name}");
    let hit = |pats: &[String]| {
        pats.iter()
            .any(|p| pattern_match(p, name) || pattern_match(p, &full))
    };
    (include.is_empty() || hit(include)) && !hit(exclude)
}

/// A path segment for a table: `schema.table`, with `/`, `%` and control bytes
/// percent-encoded so the entry path stays one segment.
pub fn table_segment(schema: &str, name: &str) -> String {
    let mut out = String::new();
    for ch in format!("{schema}.{name}").chars() {
        if ch == '/' || ch == '%' || ch.is_control() {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Collects record batches and sends them, bounded (used by producers).
pub(crate) struct Batcher {
    tx: mpsc::Sender<Result<Chunk>>,
    rows: Vec<Bytes>,
    bytes: usize,
}

impl Batcher {
    pub(crate) fn new(tx: mpsc::Sender<Result<Chunk>>) -> Self {
        Self {
            tx,
            rows: Vec::new(),
            bytes: 0,
        }
    }
    /// Send a chunk now. `Err` means the receiver is gone (the partition failed).
    pub(crate) async fn send(&mut self, c: Chunk) -> std::result::Result<(), ()> {
        self.tx.send(Ok(c)).await.map_err(|_| ())
    }
    pub(crate) async fn push(&mut self, row: Bytes) -> std::result::Result<(), ()> {
        self.bytes += row.len();
        self.rows.push(row);
        if self.rows.len() >= BATCH_ROWS || self.bytes >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }
    pub(crate) async fn flush(&mut self) -> std::result::Result<(), ()> {
        if !self.rows.is_empty() {
            let rows = std::mem::take(&mut self.rows);
            self.bytes = 0;
            self.tx.send(Ok(Chunk::Rows(rows))).await.map_err(|_| ())?;
        }
        Ok(())
    }
    pub(crate) async fn fail(self, e: Error) {
        let _ = self.tx.send(Err(e)).await;
    }
}

use serde::{Deserialize, Serialize};

use crate::manifest::{EntryKind, PathBytes};

/// One entry found by planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedEntry {
    /// Path relative to the source root.
    pub path: PathBytes,
    /// Kind.
    pub kind: EntryKind,
    /// Size at planning time (files).
    #[serde(default)]
    pub size: u64,
}

/// A problem found while planning or reading (the run becomes partial).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Path relative to the source root.
    pub path: PathBytes,
    /// What went wrong.
    pub error: String,
}

/// The partitioned work of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Source description (`fs:/srv/data`).
    pub source: String,
    /// Partitions, each a path-sorted list; partitions are in path order too.
    pub partitions: Vec<Vec<PlannedEntry>>,
    /// Entries that could not even be listed.
    pub problems: Vec<Problem>,
    /// When the run that made this plan started (names its snapshot).
    #[serde(default)]
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Newest snapshot when the plan was made (the incremental parent if `reuse`).
    #[serde(default)]
    pub parent: Option<String>,
    /// Reuse unchanged entries of `parent` (an incremental) instead of reading them.
    #[serde(default)]
    pub reuse: bool,
    /// Incrementals since the last full, counting this run.
    #[serde(default)]
    pub chain: u32,
    /// Start of the full backup this run's chain began with.
    #[serde(default)]
    pub full_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Snapshots newer than `parent` skipped because their manifests cannot be read
    /// (damaged), newest first: `parent` is the newest *readable* snapshot.
    #[serde(default)]
    pub skipped_damaged: Vec<String>,
}

impl Plan {
    /// Total file bytes.
    pub fn total_bytes(&self) -> u64 {
        self.partitions.iter().flatten().map(|e| e.size).sum()
    }
    /// Total entries.
    pub fn total_entries(&self) -> usize {
        self.partitions.iter().map(Vec::len).sum()
    }
}

/// One filesystem partition: a contiguous run of the walk, with the half-open path
/// range `[lo, hi)` of the key space it answers for (an incremental compares the
/// parent's entries in that range), and a digest that names it across attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Position in the walk (0, 1, …).
    pub idx: usize,
    /// Lower bound: `None` for the first partition, else its first path.
    pub lo: Option<PathBytes>,
    /// Upper bound (exclusive): the next partition's first path, `None` for the last.
    pub hi: Option<PathBytes>,
    /// The entries, path-sorted (may be empty only for the one partition of an empty
    /// tree).
    pub entries: Vec<PlannedEntry>,
    /// Paths that could not be listed or stat'ed while walking this range.
    pub problems: Vec<Problem>,
    /// Hex digest of bounds and entries: an attempt that walks the same partition finds
    /// the part record an earlier attempt left under this name.
    pub digest: String,
    /// A blob-container source's listed blobs, one per entry (empty for other sources).
    pub blobs: Vec<blob::Listed>,
}

impl Piece {
    /// Total file bytes.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// Cuts the walk's path-sorted stream into partitions of about `size` weight (file size
/// plus 4 KiB per entry) and at most `max_entries` entries.
///
/// Cut points are content-defined: after an entry whose path hash falls under its share
/// of the target (so an entry's chance to end a partition is its weight / `size`), once
/// the partition holds a quarter of the target; always at twice the target or at
/// `max_entries`. A change in one place moves only the cuts near it, so an incremental's
/// unchanged regions keep their partitions — and their manifest segments.
#[derive(Debug)]
pub struct Splitter {
    size: u64,
    max_entries: usize,
    idx: usize,
    started: bool,
    cur_lo: Option<PathBytes>,
    cur: Vec<PlannedEntry>,
    problems: Vec<Problem>,
    weight: u64,
    /// A finished partition waiting for the next one's first path (its `hi`).
    ready: Option<(Option<PathBytes>, Vec<PlannedEntry>, Vec<Problem>)>,
}

const PER_ENTRY: u64 = 4096;

/// FNV-1a, 64 bit, with a final mix: a fixed, portable hash (cut points must not change
/// between builds, or every partition of the next incremental would move).
fn path_hash(p: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in p {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl Splitter {
    /// A splitter aiming at `size` weight per partition, at most `max_entries` entries.
    pub fn new(size: u64, max_entries: usize) -> Self {
        Splitter {
            size: size.max(1),
            max_entries: max_entries.max(1),
            idx: 0,
            started: false,
            cur_lo: None,
            cur: Vec::new(),
            problems: Vec::new(),
            weight: 0,
            ready: None,
        }
    }

    fn emit_ready(
        &mut self,
        hi: Option<PathBytes>,
        emit: &mut dyn FnMut(Piece) -> Result<()>,
    ) -> Result<()> {
        if let Some((lo, entries, problems)) = self.ready.take() {
            let digest = piece_digest(lo.as_ref(), hi.as_ref(), &entries);
            let idx = self.idx;
            self.idx += 1;
            emit(Piece {
                idx,
                lo,
                hi,
                entries,
                problems,
                digest,
                blobs: Vec::new(),
            })?;
        }
        Ok(())
    }

    /// Add the next entry (path order), emitting the partition before it once its upper
    /// bound is known.
    ///
    /// # Errors
    /// `emit`'s errors.
    pub fn push(
        &mut self,
        e: PlannedEntry,
        emit: &mut dyn FnMut(Piece) -> Result<()>,
    ) -> Result<()> {
        if self.ready.is_some() {
            self.emit_ready(Some(e.path.clone()), emit)?;
        }
        if self.cur.is_empty() {
            self.cur_lo = self.started.then(|| e.path.clone());
            self.started = true;
        }
        let w = e.size.saturating_add(PER_ENTRY);
        self.weight = self.weight.saturating_add(w);
        let h = path_hash(&e.path.0);
        self.cur.push(e);
        let share = (u128::from(w) << 64) / u128::from(self.size);
        let content_cut = self.weight >= self.size / 4 && u128::from(h) < share;
        if content_cut
            || self.weight >= self.size.saturating_mul(2)
            || self.cur.len() >= self.max_entries
        {
            self.ready = Some((
                self.cur_lo.take(),
                std::mem::take(&mut self.cur),
                std::mem::take(&mut self.problems),
            ));
            self.weight = 0;
        }
        Ok(())
    }

    /// Record a problem found in the current range.
    pub fn problem(&mut self, p: Problem) {
        self.problems.push(p);
    }

    /// Emit what is left (an empty tree still gets one partition, covering everything).
    ///
    /// # Errors
    /// `emit`'s errors.
    pub fn finish(mut self, emit: &mut dyn FnMut(Piece) -> Result<()>) -> Result<()> {
        if let Some(r) = self.ready.as_mut() {
            // Problems after the last cut belong to the last partition.
            r.2.append(&mut self.problems);
        } else {
            self.ready = Some((
                self.cur_lo.take(),
                std::mem::take(&mut self.cur),
                std::mem::take(&mut self.problems),
            ));
        }
        self.emit_ready(None, emit)
    }
}

/// The digest naming a partition: its bounds and its entries' paths, kinds and sizes (a
/// scale-out worker recomputes it to check the description it received).
pub fn piece_digest(
    lo: Option<&PathBytes>,
    hi: Option<&PathBytes>,
    entries: &[PlannedEntry],
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut put = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    put(lo.map_or(b"-".as_slice(), |p| &p.0));
    put(hi.map_or(b"-".as_slice(), |p| &p.0));
    for e in entries {
        put(&e.path.0);
        put(&[e.kind as u8]);
        put(&e.size.to_le_bytes());
    }
    hex::encode(&h.finalize()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_split_by_rows_and_by_bytes() {
        // Small: not split.
        assert_eq!(range_count(500.0, 1 << 20, 1_000_000, 32 << 20), (false, 1));
        // Many rows: by rows.
        assert_eq!(
            range_count(2_500_000.0, 1 << 20, 1_000_000, 32 << 20),
            (true, 3)
        );
        // Few but wide rows: by bytes, so a range fits half the range buffer.
        assert_eq!(
            range_count(100_000.0, 100 << 20, 1_000_000, 32 << 20),
            (true, 4)
        );
        // split_bytes 0 (split_rows given): rows only.
        assert_eq!(range_count(100_000.0, 100 << 30, 1_000_000, 0), (false, 1));
        // At most 4096 ranges.
        assert_eq!(
            range_count(1e12, 1 << 50, 1_000_000, 32 << 20),
            (true, 4096)
        );
    }

    #[test]
    fn table_patterns_and_segments() {
        assert!(pattern_match("task_*", "task_instance"));
        assert!(pattern_match("t?b", "tab"));
        assert!(!pattern_match("task_*", "dag_run"));
        let inc = vec!["public.dag_*".to_string(), "variable".to_string()];
        let exc = vec!["dag_code".to_string()];
        assert!(table_selected(&inc, &exc, "public", "dag_run"));
        assert!(table_selected(&inc, &exc, "other", "variable"));
        assert!(!table_selected(&inc, &exc, "public", "dag_code"));
        assert!(!table_selected(&inc, &exc, "public", "log"));
        assert!(table_selected(&[], &[], "s", "anything"));
        assert_eq!(table_segment("s", "a/b%c"), "s.a%2Fb%25c");
    }

    fn e(name: &str, size: u64) -> PlannedEntry {
        PlannedEntry {
            path: PathBytes(name.as_bytes().to_vec()),
            kind: EntryKind::File,
            size,
        }
    }

    fn split(entries: &[PlannedEntry], size: u64, max: usize) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut s = Splitter::new(size, max);
        let mut emit = |p: Piece| {
            out.push(p);
            Ok(())
        };
        for x in entries {
            s.push(x.clone(), &mut emit).unwrap();
        }
        s.finish(&mut emit).unwrap();
        out
    }

    #[test]
    fn pieces_are_contiguous_complete_bounded_and_cover_the_key_space() {
        let entries: Vec<_> = (0..1000)
            .map(|i| e(&format!("f{i:04}"), (i % 17) * 1000))
            .collect();
        let parts = split(&entries, 256 << 10, 50);
        assert!(parts.len() >= 20, "{}", parts.len());
        let flat: Vec<_> = parts.iter().flat_map(|p| p.entries.clone()).collect();
        assert_eq!(flat, entries);
        assert!(parts
            .iter()
            .all(|p| !p.entries.is_empty() && p.entries.len() <= 50));
        assert_eq!(parts[0].lo, None);
        assert_eq!(parts.last().unwrap().hi, None);
        for (i, w) in parts.windows(2).enumerate() {
            assert_eq!(w[0].idx, i);
            assert_eq!(w[0].hi.as_ref(), Some(&w[1].entries[0].path));
            assert_eq!(w[1].lo.as_ref(), Some(&w[1].entries[0].path));
        }
        // Weight stays within the hard bound.
        assert!(parts
            .iter()
            .all(|p| p.entries.iter().map(|e| e.size + 4096).sum::<u64>()
                <= 2 * (256 << 10) + 20_000));
    }

    #[test]
    fn stable_ranges_keep_the_parents_boundaries_and_grow_at_the_ends() {
        let prior = vec![(1, 101), (101, 201), (201, 301)];
        // Same key span: the same ranges.
        assert_eq!(stable_ranges(&prior, 1, 300, 7), prior);
        // Rows deleted at both ends: boundaries unchanged.
        assert_eq!(stable_ranges(&prior, 50, 250, 2), prior);
        // A few keys appended: the last range grows.
        assert_eq!(
            stable_ranges(&prior, 1, 340, 3),
            vec![(1, 101), (101, 201), (201, 341)]
        );
        // Many appended: new ranges of about the same width follow.
        let r = stable_ranges(&prior, -5, 600, 6);
        assert_eq!(r[0], (-5, 101));
        assert_eq!(&r[1..3], &prior[1..3]);
        assert_eq!(r.len(), 6);
        assert_eq!(r.last().unwrap().1, 601);
        for w in r.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
        // No prior: equal ranges.
        assert_eq!(
            stable_ranges(&[], 1, 100, 4),
            postgres::split_range(1, 100, 4)
        );
    }

    #[test]
    fn empty_tree_and_huge_file() {
        let p = split(&[], 1 << 20, 100);
        assert_eq!(p.len(), 1);
        assert!(p[0].entries.is_empty() && p[0].lo.is_none() && p[0].hi.is_none());
        let parts = split(&[e("a", 1), e("b", 1 << 30), e("c", 1)], 1 << 20, 100);
        assert_eq!(parts.iter().map(|p| p.entries.len()).sum::<usize>(), 3);
        assert!(parts.len() >= 2, "the huge file ends its partition");
        let one = split(&[e("a", 1)], 1 << 20, 100);
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].lo.clone(), one[0].hi.clone()), (None, None));
    }
}
