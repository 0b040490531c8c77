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
//! Database and command sources are *streamed*: a [`Session`] is opened per run attempt
//! (for PostgreSQL it holds the coordinating transaction whose snapshot every worker
//! adopts), its work items are the partitions, and each item is read by a producer task
//! that sends bounded batches of records ([`Chunk`]) through a bounded channel to the
//! packing thread. A streamed plan is never stored or reused: a resumed attempt reads a
//! new snapshot, and mixing part records of two snapshots would break consistency.

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
    ///
    /// # Errors
    /// `Source` when the database cannot be reached or read, `Config` when no table
    /// matches.
    pub async fn open(src: &SourceConfig) -> Result<(Plan, Session)> {
        let session = match src {
            SourceConfig::Postgres(c) => {
                Session::Postgres(Box::new(postgres::PgSession::open(c).await?))
            }
            SourceConfig::Mysql(c) => Session::Mysql(mysql::MySession::open(c).await?),
            SourceConfig::Command(c) => Session::Command(command::CommandSession::new(c)),
            SourceConfig::Fs(_) => return Err(Error::internal("fs source is not streamed")),
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

/// Split path-sorted `entries` into at most `count` contiguous partitions of about equal
/// weight (file size plus a per-entry cost for headers and metadata work).
pub fn partition(entries: Vec<PlannedEntry>, count: usize) -> Vec<Vec<PlannedEntry>> {
    const PER_ENTRY: u64 = 4096;
    let weight = |e: &PlannedEntry| e.size + PER_ENTRY;
    let total: u64 = entries.iter().map(weight).sum();
    let count = count.max(1);
    let target = total.div_ceil(count as u64).max(1);
    let mut parts: Vec<Vec<PlannedEntry>> = Vec::new();
    let mut cur = Vec::new();
    let mut acc = 0u64;
    for e in entries {
        let w = weight(&e);
        // Close the current partition if adding this entry overshoots more than it helps.
        if !cur.is_empty() && parts.len() + 1 < count && acc + w / 2 > target {
            parts.push(std::mem::take(&mut cur));
            acc = 0;
        }
        acc += w;
        cur.push(e);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn partitions_are_balanced_contiguous_and_complete() {
        let entries: Vec<_> = (0..1000)
            .map(|i| e(&format!("f{i:04}"), (i % 17) * 1000))
            .collect();
        let parts = partition(entries.clone(), 4);
        assert_eq!(parts.len(), 4);
        let flat: Vec<_> = parts.iter().flatten().cloned().collect();
        assert_eq!(flat, entries);
        let w: Vec<u64> = parts
            .iter()
            .map(|p| p.iter().map(|e| e.size + 4096).sum())
            .collect();
        let (min, max) = (*w.iter().min().unwrap(), *w.iter().max().unwrap());
        assert!(max - min < max / 10, "unbalanced: {w:?}");
    }

    #[test]
    fn few_entries_and_huge_file() {
        assert!(partition(vec![], 4).is_empty());
        let parts = partition(vec![e("a", 1), e("b", 1 << 30), e("c", 1)], 8);
        assert!(parts.len() <= 3);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 3);
    }
}
