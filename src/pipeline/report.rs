//! What a run reports: its status, the engine's counters and the run record.
//!
//! The report is built by the engine ([`super::run`]), completed by the runner
//! (verification, alert deliveries) and stored as the run record
//! (`runs/<run-id>/<time>.json`); `status` and `schedule` read it back.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::extract::Problem;
use crate::manifest::layout::Layout;
use crate::manifest::records::RunStatus;
use crate::manifest::{self, PathBytes, Totals};
use crate::store;
use crate::support::ids;
use crate::verify::VerifyReport;

/// Engine statistics of a run (also what the backpressure tests assert on).
#[derive(Debug, Default)]
pub struct Stats {
    /// Sealed blocks not yet staged, now.
    pub inflight_blocks: AtomicUsize,
    /// Highest `inflight_blocks` seen.
    pub max_inflight_blocks: AtomicUsize,
    /// Blocks staged by this attempt.
    pub blocks_staged: AtomicU64,
    /// Blocks found already staged by an earlier attempt (not uploaded again).
    pub blocks_reused: AtomicU64,
    /// Partition attempts retried after a transient failure.
    pub partition_retries: AtomicU64,
    /// Files opened and read by this attempt (incrementals read only what changed).
    pub files_read: AtomicU64,
    /// Bytes of those files.
    pub bytes_read: AtomicU64,
    /// Manifest segments this attempt stored.
    pub segments_written: AtomicU64,
    /// Manifest segments already stored with the same content (unchanged partitions).
    pub segments_reused: AtomicU64,
    /// Most entries one partition worker held at once (planned, parent's and built).
    pub max_entries_held: AtomicUsize,
    /// Large files this attempt read and cut into chunks.
    pub chunked_files: AtomicU64,
    /// Chunks this attempt stored (not held by the parent's entry for the same path, nor
    /// earlier in the same file; for a streamed source, not the parent's same range or
    /// offset).
    pub chunks_new: AtomicU64,
    /// Their bytes (uncompressed).
    pub chunk_bytes_new: AtomicU64,
    /// Chunks this attempt read that point at an already stored copy.
    pub chunks_reused: AtomicU64,
    /// Their bytes (uncompressed): read and hashed, not stored again.
    pub chunk_bytes_reused: AtomicU64,
    /// Of the reused chunks, those found through the index of the parent's chunks (held
    /// by another path of the parent: a renamed or copied file).
    pub chunks_reused_elsewhere: AtomicU64,
    /// Parent chunks the index held, and those left out because it was full.
    pub chunk_index: std::sync::Mutex<(u64, u64)>,
    /// Blob source: where large blobs went (`source.server_side_min_size`).
    pub server_side: std::sync::Mutex<ServerSideCounts>,
}

/// Blobs and bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Tally {
    /// Blobs.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Where a blob source's blobs went when `source.server_side_min_size` is set
/// (`server_side` of the run record and of `backup --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ServerSideCounts {
    /// Blobs copied into stored packs by the target's service (their bytes never passed
    /// through this process).
    pub staged: Tally,
    /// Blobs read and streamed through compressed packs, by reason. The reasons are a few
    /// fixed phrases plus the first refusal of the service (after which the rest of the
    /// run streams), so the map stays small.
    pub streamed: std::collections::BTreeMap<String, Tally>,
    /// The service refused or failed Put Block From URL (the reason, no secret): the rest
    /// of the run streams.
    #[serde(skip)]
    pub refused: Option<String>,
}

impl ServerSideCounts {
    /// Count a blob of `bytes` staged server-side.
    pub fn staged(&mut self, bytes: u64) {
        self.staged.blobs += 1;
        self.staged.bytes += bytes;
    }

    /// Count a blob of `bytes` streamed because of `why`.
    pub fn streamed(&mut self, why: &str, bytes: u64) {
        let t = self.streamed.entry(why.to_string()).or_default();
        t.blobs += 1;
        t.bytes += bytes;
    }
}

/// What chunking did in a run (`chunks` of the run record): content-defined chunks of
/// large files, table chunks (key ranges cut at `chunk_size`) or command-output chunks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChunkCounts {
    /// What the chunks are of: `files` (directory and blob sources), `tables` (database
    /// sources) or `command` (command output).
    pub source: String,
    /// Large files read and cut into chunks by this attempt.
    pub files: u64,
    /// Chunks stored anew (compressed and uploaded by this attempt).
    pub new: u64,
    /// Their source bytes.
    pub new_bytes: u64,
    /// Chunks that point at a copy already stored (the parent's, or earlier in the file):
    /// read (and hashed), not compressed or uploaded again.
    pub reused: u64,
    /// Their source bytes.
    pub reused_bytes: u64,
    /// Of the reused chunks, those another path of the parent held (a renamed, copied
    /// or newly named file), found through the chunk index.
    #[serde(default)]
    pub reused_elsewhere: u64,
    /// Chunks of the parent the index held (`[chunking] index`).
    #[serde(default)]
    pub indexed: u64,
    /// Chunks of the parent left out of the index because it was full: files that only
    /// they would have matched store their chunks again.
    #[serde(default)]
    pub index_left_out: u64,
}

impl ChunkCounts {
    /// The counts of `s` now, for chunks of `source` (see [`ChunkCounts::source`]).
    pub fn of(s: &Stats, source: &str) -> Self {
        Self {
            source: source.to_string(),
            files: s.chunked_files.load(Ordering::Relaxed),
            new: s.chunks_new.load(Ordering::Relaxed),
            new_bytes: s.chunk_bytes_new.load(Ordering::Relaxed),
            reused: s.chunks_reused.load(Ordering::Relaxed),
            reused_bytes: s.chunk_bytes_reused.load(Ordering::Relaxed),
            reused_elsewhere: s.chunks_reused_elsewhere.load(Ordering::Relaxed),
            indexed: s.chunk_index.lock().map_or(0, |g| g.0),
            index_left_out: s.chunk_index.lock().map_or(0, |g| g.1),
        }
    }
}

impl Stats {
    /// Record that a worker held `n` entries at once.
    pub fn note_held(&self, n: usize) {
        self.max_entries_held.fetch_max(n, Ordering::Relaxed);
    }
}

/// What a backup run reports (also stored as the run record).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BackupReport {
    /// Pipeline name.
    pub pipeline: String,
    /// Run id (pass it to `--run-id` to resume an interrupted run).
    pub run_id: String,
    /// Outcome.
    pub status: RunStatus,
    /// Committed snapshot, if any.
    pub snapshot: Option<String>,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub finished_at: DateTime<Utc>,
    /// Totals of the snapshot.
    pub totals: Totals,
    /// `full` or `incremental`.
    pub kind: String,
    /// Parent snapshot an incremental reused entries from.
    pub parent: Option<String>,
    /// New, changed, unchanged and deleted entries against the newest earlier snapshot.
    pub changes: Option<manifest::Changes>,
    /// Files this attempt opened and read.
    pub files_read: u64,
    /// Source bytes this attempt read (unchanged files of an incremental are not read;
    /// a database or command source is read whole).
    pub bytes_read: u64,
    /// Packs this snapshot added to the store (written by this run, any attempt).
    pub new_packs: u64,
    /// Their stored (compressed) size: what the run added to the repository.
    pub new_stored_bytes: u64,
    /// Packs carried from the parent snapshot (unchanged files of an incremental).
    pub reused_packs: u64,
    /// Their stored size: referenced again, not stored again.
    pub reused_stored_bytes: u64,
    /// Partitions planned.
    pub partitions: usize,
    /// Partitions taken from an earlier attempt of this run.
    pub partitions_resumed: usize,
    /// Blocks uploaded by this attempt.
    pub blocks_staged: u64,
    /// Blocks reused from an earlier attempt.
    pub blocks_reused: u64,
    /// Peak sealed blocks in flight (bounded by configuration).
    pub max_inflight_blocks: usize,
    /// Manifest segments stored by this attempt.
    #[serde(default)]
    pub segments_written: u64,
    /// Manifest segments referenced unchanged (already stored).
    #[serde(default)]
    pub segments_reused: u64,
    /// Most entries one partition worker held in memory at once (bounded by
    /// `partitions.max_entries`, never by the number of files).
    #[serde(default)]
    pub max_entries_held: usize,
    /// Chunks read by this attempt (of large files, tables or command output): new vs
    /// reused.
    #[serde(default)]
    pub chunks: ChunkCounts,
    /// Retries: store-level (the backend's policy) plus partition-level.
    pub retries: u64,
    /// Files that could not be read.
    pub problems: Vec<Problem>,
    /// Files stored as inconsistent (kept changing while read).
    pub inconsistent: Vec<PathBytes>,
    /// Verification after commit.
    pub verify: Option<VerifyReport>,
    /// Error, when the run failed.
    pub error: Option<String>,
    /// Webhook deliveries for this run's alert (a failed delivery never fails the run).
    #[serde(default)]
    pub alerts: Vec<crate::alert::AlertOutcome>,
    /// Damaged snapshots (manifests that cannot be read) newer than the parent, skipped
    /// when choosing it: the run compared against the newest readable one, or ran full.
    #[serde(default)]
    pub skipped_damaged: Vec<String>,
    /// `[immutability]`: until when the committed snapshot is write-once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<crate::manifest::records::ProtectionRecord>,
    /// Blob source with `server_side_min_size`: blobs staged server-side vs streamed, and
    /// why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side: Option<ServerSideCounts>,
}

impl BackupReport {
    /// A report of run `run_id` with every figure zero: what a run that did no work of
    /// its own starts from (callers set what they know with struct update).
    pub(super) fn empty(
        pipeline: &str,
        run_id: &str,
        status: RunStatus,
        started_at: DateTime<Utc>,
    ) -> Self {
        BackupReport {
            pipeline: pipeline.to_string(),
            run_id: run_id.to_string(),
            status,
            snapshot: None,
            started_at,
            finished_at: Utc::now(),
            totals: Totals::default(),
            kind: String::new(),
            parent: None,
            changes: None,
            files_read: 0,
            bytes_read: 0,
            new_packs: 0,
            new_stored_bytes: 0,
            reused_packs: 0,
            reused_stored_bytes: 0,
            partitions: 0,
            partitions_resumed: 0,
            blocks_staged: 0,
            blocks_reused: 0,
            max_inflight_blocks: 0,
            segments_written: 0,
            segments_reused: 0,
            max_entries_held: 0,
            chunks: ChunkCounts::default(),
            retries: 0,
            problems: vec![],
            inconsistent: vec![],
            verify: None,
            error: None,
            alerts: vec![],
            skipped_damaged: vec![],
            protection: None,
            server_side: None,
        }
    }

    /// The report of a run that committed nothing.
    pub(super) fn failed(
        pipeline: &str,
        run_id: &str,
        status: RunStatus,
        started_at: DateTime<Utc>,
        retries: u64,
        error: String,
    ) -> Self {
        BackupReport {
            retries,
            error: Some(error),
            ..Self::empty(pipeline, run_id, status, started_at)
        }
    }
}

/// Store `report` as its run record; a failure is logged, never fails the run.
pub(super) async fn write_run_record(
    store: &dyn store::BlobStore,
    layout: &Layout,
    report: &BackupReport,
) {
    let name = layout.run_record(&report.run_id, &ids::stamp(report.finished_at));
    match serde_json::to_vec_pretty(report) {
        Ok(body) => {
            if let Err(e) = store.put(&name, Bytes::from(body), true).await {
                tracing::warn!("could not write run record {name}: {e}");
            }
        }
        Err(e) => tracing::warn!("could not encode run record: {e}"),
    }
}
