//! Scale-out: one run's partitions as queue work for many worker processes (job
//! replicas), committed exactly once.
//!
//! ```text
//!  coordinator (plan)           work queue                 workers (work), any number
//!  lease → stored plan → walk ─> one message a partition ─> receive (invisible, renewed)
//!  → enqueue → `planned` record   (or a reference to a       → pack → part record (create-only)
//!                                  description blob)         → delete the message
//!                                                            idle: all parts recorded?
//!                                                            → finalize: manifest, create-only
//! ```
//!
//! A partition is a unit of work with a deterministic identity (run id, partition index,
//! walk digest): its pack ids and block ids derive from it, its part record is
//! create-only and named by it. So any worker may do it, any number of times, with one
//! outcome — a worker that dies mid-partition leaves staged blocks the next attempt finds
//! and does not upload again, and a message whose part record exists is only deleted.
//!
//! The coordinator streams: partitions go on the queue as the walk cuts them; it keeps
//! one digest per partition (24 hex characters — the manifest lists one segment per
//! partition anyway) and stores them as the run's `planned` record after the last
//! message, so a finalizer knows "every partition has its part record" by one listing.
//! A message that keeps failing is moved to the dead-letter queue after `max_dequeue`
//! receives, with a `dead-…` record naming the partition and its last error: the run
//! then cannot commit, fails with that name, and alerts.
//!
//! Whoever finds the run complete finalizes ([`finalize_run`]): under the run lease it
//! merges the part records into the manifest, create-only; a second finalizer finds the
//! manifest and stops without an error. Verification, the run record, retention and
//! alerts follow as for any backup ([`super::runner`]); under `backup --workers` the
//! verification is itself queue work, by batches of packs (`scale_verify.rs`).
//!
//! `[encryption]`: the coordinator opens the data key before the run lease and creates a
//! first key record under it, as a backup does ([`super::runner::key_before_lock`]); every
//! record of the protocol it or a worker stores (plan, `planned`, descriptions in blobs,
//! error and dead-letter records, part records, packs, segments, the manifest) is sealed
//! through the [`Layout`]. A queue message names paths, so its description travels
//! sealed too (base64), bound to its run and partition ([`Layout::work_message`]); only
//! the pipeline name, run id, partition index and walk digest stay readable, for routing.
//! Workers open the key once at start and never create one: a worker with a wrong or
//! missing key stops before it receives a message, so it neither deletes nor
//! dead-letters what a worker with the right key can do.
//!
//! Only directory sources scale out: a database or command source is read inside one
//! consistent snapshot of one connection, which processes on other machines cannot share.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::commit;
use super::plan;
use super::report::{BackupReport, Stats};
use super::run::{self, Finished};
use super::runner::BackupOptions;
use super::spec::Pipeline;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::extract::config::SourceConfig;
use crate::extract::{self, Piece, PlannedEntry, Problem};
use crate::manifest::layout::{Layout, Repo};
use crate::manifest::{Manifest, PathBytes};
use crate::store::queue::{self, Received, WorkQueue};
use crate::store::{self, Store};
use crate::support::cancel::Cancel;
use crate::support::ids;
use crate::support::progress::Counters;
use crate::verify::config::VerifyMode;

#[path = "scale_verify.rs"]
mod verify_work;
pub(super) use verify_work::verify_local;

/// A description larger than this goes to a blob and the message carries its name
/// (Azure takes 64 KiB of message text; JSON grows when the service XML-escapes it).
const INLINE_MAX: usize = 32 * 1024;

/// Version of [`WorkMessage`].
const MESSAGE_VERSION: u32 = 1;

/// One partition of one run, as it travels on the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkMessage {
    v: u32,
    pipeline: String,
    run_id: String,
    partition: usize,
    digest: String,
    /// The description inline, or …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    piece: Option<PieceDesc>,
    /// … the name of the blob holding it (gzip JSON), or …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    piece_blob: Option<String>,
    /// … `[encryption]`: the description sealed under the data key (base64), bound to
    /// [`Layout::work_message`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

/// A filesystem partition's description: its range and planned entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PieceDesc {
    lo: Option<PathBytes>,
    hi: Option<PathBytes>,
    entries: Vec<PlannedEntry>,
    #[serde(default)]
    problems: Vec<Problem>,
}

/// What the coordinator enqueued: every partition's digest, in partition order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Planned {
    total: usize,
    digests: Vec<String>,
    enqueued_at: DateTime<Utc>,
}

/// The record of a dead-lettered partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeadRecord {
    partition: usize,
    digest: String,
    first_path: Option<String>,
    attempts: u32,
    last_error: Option<String>,
    at: DateTime<Utc>,
}

fn gz_json<T: Serialize>(v: &T) -> Result<Bytes> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    serde_json::to_writer(&mut gz, v).map_err(|e| Error::encode("encoding", e))?;
    Ok(Bytes::from(gz.finish().map_err(|e| {
        Error::internal(format!("compressing: {e}"))
    })?))
}

fn un_gz_json<T: for<'de> Deserialize<'de>>(name: &str, bytes: &[u8]) -> Result<T> {
    let mut s = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut s)
        .map_err(|e| Error::integrity(format!("{name}: {e}")))?;
    serde_json::from_slice(&s).map_err(|e| Error::decode(name, e))
}

/// Store `v` as blob `name`, gzip JSON sealed through the layout, create-only (an
/// existing blob is an earlier attempt's identical record).
async fn put_record<T: Serialize>(store: &Store, layout: &Layout, name: &str, v: &T) -> Result<()> {
    let body = layout.seal(name, gz_json(v)?.to_vec())?;
    match store.put(name, Bytes::from(body), true).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::Conflict => Ok(()),
        Err(e) => Err(e.context(format!("storing {name}"))),
    }
}

/// Read a record [`put_record`] stored; `None` when there is none.
async fn get_record<T: for<'de> Deserialize<'de>>(
    store: &Store,
    layout: &Layout,
    name: &str,
) -> Result<Option<T>> {
    match store.get(name, None).await {
        Ok(b) => Ok(Some(un_gz_json(name, &layout.open(name, b)?)?)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.context(format!("reading {name}"))),
    }
}

/// Refuse sources that cannot be split across processes.
///
/// # Errors
/// `Config` naming why.
pub fn check_source(p: &Pipeline) -> Result<()> {
    match &p.source {
        SourceConfig::Fs(_) => Ok(()),
        _ => Err(Error::config(format!(
            "pipeline {:?}: scale-out (plan, work, backup --workers) backs up directory \
             sources only; this source is read inside one consistent snapshot of one \
             connection (or one command's output), which workers on other machines cannot \
             share. Run it with a plain `blobpipe backup` (see docs/scale-out.md)",
            p.name
        ))),
    }
}

/// What a coordinator did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Coordinated {
    /// Pipeline name.
    pub pipeline: String,
    /// Run id the workers must use.
    pub run_id: String,
    /// Partitions of the run.
    pub partitions: usize,
    /// Messages put on the queue.
    pub enqueued: usize,
    /// Partitions an earlier attempt of the run already finished (not enqueued).
    pub already_done: usize,
    /// Descriptions too large for a message, stored as blobs.
    pub described_in_blobs: usize,
    /// An earlier coordinator of this run id had already enqueued everything.
    pub resumed: bool,
    /// The run's snapshot, when it is already committed (nothing enqueued).
    pub committed: Option<String>,
}

/// Plan `run_id` and put one message per partition on `queue`; store the `planned`
/// record last. The caller holds the run lease; `layout` carries the data key of an
/// encrypted pipeline.
///
/// # Errors
/// `Config` for a source that cannot scale out, `Source` when the walk fails, `Store`
/// when the store or the queue fails.
#[allow(clippy::too_many_arguments)]
pub(super) async fn coordinate(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    started_at: DateTime<Utc>,
    full: bool,
    queue: &dyn WorkQueue,
    cancel: &Cancel,
) -> Result<Coordinated> {
    check_source(p)?;
    let mut out = Coordinated {
        pipeline: p.name.clone(),
        run_id: run_id.to_string(),
        ..Default::default()
    };
    let (plan, _, _) = plan::load_or_make_plan(p, store, layout, run_id, started_at, full).await?;
    let started_at = plan.started_at.unwrap_or(started_at);
    let snapshot = ids::snapshot_id_for(started_at, run_id);
    if store.head(&layout.snapshot(&snapshot)).await?.is_some() {
        out.committed = Some(snapshot);
        return Ok(out);
    }
    if let Some(planned) = load_planned(store, layout, run_id).await? {
        // Everything was enqueued by an earlier attempt; its messages are on the queue
        // (or done).
        out.partitions = planned.total;
        out.resumed = true;
        return Ok(out);
    }
    let earlier = plan::finished_parts(store, layout, run_id, false).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(p.partitions.max_parallel.max(1));
    let walker = run::spawn_pieces(p, &plan, tx, Arc::new(Counters::default()), cancel.clone());
    let mut digests = Vec::new();
    let mut failed = None;
    while let Some(piece) = rx.recv().await {
        if cancel.is_cancelled() {
            failed = Some(Error::cancelled());
            break;
        }
        digests.push(piece.digest.clone());
        if earlier.contains_key(&piece.digest) {
            out.already_done += 1;
            continue;
        }
        match enqueue(p, store, layout, run_id, piece, queue).await {
            Ok(in_blob) => {
                out.enqueued += 1;
                out.described_in_blobs += usize::from(in_blob);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(rx);
    let walked = walker
        .await
        .map_err(|e| Error::internal(format!("walk task: {e}")))?;
    if let Some(e) = failed {
        return Err(e.context("enqueueing partitions"));
    }
    if cancel.is_cancelled() {
        return Err(Error::cancelled());
    }
    walked?;
    out.partitions = digests.len();
    let planned = Planned {
        total: digests.len(),
        digests,
        enqueued_at: Utc::now(),
    };
    put_record(store, layout, &layout.planned(run_id), &planned)
        .await
        .ctx("storing the run's planned record")?;
    tracing::info!(
        run_id,
        partitions = out.partitions,
        enqueued = out.enqueued,
        "partitions enqueued"
    );
    Ok(out)
}

/// `blobpipe plan`: open the data key (`[encryption]`), take the run lease, plan and
/// enqueue `run_id` (a fresh id by default), release the lease.
///
/// # Errors
/// As [`coordinate`]; `Locked` when another run holds the lease; `WrongKey`/`Config`
/// for a wrong or missing key, before anything is written.
pub async fn plan_run(
    p: &Pipeline,
    store: Store,
    run_id: Option<String>,
    full: bool,
    wait_lock: bool,
    queue: &dyn WorkQueue,
    cancel: &Cancel,
) -> Result<Coordinated> {
    check_source(p)?;
    let started_at = Utc::now();
    let run_id = run_id.unwrap_or_else(|| ids::run_id(started_at));
    if !ids::is_safe_segment(&run_id) {
        return Err(Error::config(format!(
            "invalid run id {run_id:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    let layout = Layout::new(&p.target.prefix);
    let key = super::runner::key_before_lock(p, &store, &layout, &run_id).await?;
    let lock = crate::manifest::lock::RunLock::acquire(
        store.clone(),
        &layout,
        &run_id,
        p.lock_ttl,
        wait_lock,
        cancel,
    )
    .await?;
    let r = match super::runner::keyed_under_lock(p, &store, layout, key, &run_id).await {
        Ok(layout) => {
            coordinate(p, &store, &layout, &run_id, started_at, full, queue, cancel).await
        }
        Err(e) => Err(e),
    };
    lock.release().await;
    r
}

/// Put one partition on the queue; returns whether its description went to a blob.
async fn enqueue(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    piece: Piece,
    queue: &dyn WorkQueue,
) -> Result<bool> {
    let desc = PieceDesc {
        lo: piece.lo,
        hi: piece.hi,
        entries: piece.entries,
        problems: piece.problems,
    };
    let mut msg = WorkMessage {
        v: MESSAGE_VERSION,
        pipeline: p.name.clone(),
        run_id: run_id.to_string(),
        partition: piece.idx,
        digest: piece.digest,
        piece: None,
        piece_blob: None,
        sealed: None,
    };
    if layout.key().is_some() {
        msg.sealed = Some(seal_piece(layout, &msg, &desc)?);
    } else {
        msg.piece = Some(desc.clone());
    }
    let mut text = serde_json::to_string(&msg).map_err(|e| Error::encode("work message", e))?;
    let in_blob = text.len() > INLINE_MAX;
    if in_blob {
        let name = layout.work_piece(run_id, msg.partition, &msg.digest);
        put_record(store, layout, &name, &desc).await?;
        msg.piece = None;
        msg.sealed = None;
        msg.piece_blob = Some(name);
        text = serde_json::to_string(&msg).map_err(|e| Error::encode("work message", e))?;
    }
    queue.put(&text).await?;
    Ok(in_blob)
}

async fn load_planned(store: &Store, layout: &Layout, run_id: &str) -> Result<Option<Planned>> {
    get_record(store, layout, &layout.planned(run_id)).await
}

/// `desc` sealed for `msg`'s run and partition (`[encryption]`), as base64 message text.
fn seal_piece(layout: &Layout, msg: &WorkMessage, desc: &PieceDesc) -> Result<String> {
    use base64::Engine;
    let name = layout.work_message(&msg.run_id, msg.partition, &msg.digest);
    let plain = serde_json::to_vec(desc).map_err(|e| Error::encode("work message", e))?;
    let sealed = layout.seal(&name, plain)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
}

/// The description a message carries sealed (`[encryption]`), opened with the data key
/// (`Integrity` when it was sealed for another run or partition, or altered).
fn piece_of_sealed(layout: &Layout, msg: &WorkMessage, sealed: &str) -> Result<PieceDesc> {
    use base64::Engine;
    let name = layout.work_message(&msg.run_id, msg.partition, &msg.digest);
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|e| Error::integrity(format!("work message for {name}: {e}")))?;
    let plain = layout.open(&name, Bytes::from(sealed))?;
    serde_json::from_slice(&plain).map_err(|e| Error::decode(&name, e))
}

/// Where a run stands, from its stored records.
enum RunState {
    /// No plan stored (yet).
    NoPlan,
    /// Committed as this snapshot.
    Committed,
    /// Partitions were dead-lettered: the run cannot commit.
    Dead(Vec<DeadRecord>),
    /// The coordinator has not stored its `planned` record yet, or parts are missing.
    Incomplete { done: usize, total: Option<usize> },
    /// Every planned partition has its part record.
    Complete,
}

async fn run_state(store: &Store, layout: &Layout, run_id: &str) -> Result<RunState> {
    let Some(plan) = plan::load_plan(store, layout, run_id).await? else {
        return Ok(RunState::NoPlan);
    };
    let started_at = plan
        .started_at
        .ok_or_else(|| Error::integrity(format!("run {run_id}: plan without a start time")))?;
    let snapshot = ids::snapshot_id_for(started_at, run_id);
    if store.head(&layout.snapshot(&snapshot)).await?.is_some() {
        return Ok(RunState::Committed);
    }
    let listed = store::list_all(&**store, &layout.parts(run_id)).await?;
    let mut dead = Vec::new();
    let mut parts: HashSet<String> = HashSet::new();
    for item in &listed {
        let base = item.name.rsplit('/').next().unwrap_or_default();
        if base.starts_with("dead-") {
            let b = layout.open(&item.name, store.get(&item.name, None).await?)?;
            dead.push(serde_json::from_slice(&b).map_err(|e| Error::decode(&item.name, e))?);
        } else {
            parts.insert(item.name.clone());
        }
    }
    if !dead.is_empty() {
        return Ok(RunState::Dead(dead));
    }
    let Some(planned) = load_planned(store, layout, run_id).await? else {
        return Ok(RunState::Incomplete {
            done: listed.len(),
            total: None,
        });
    };
    let done = planned
        .digests
        .iter()
        .enumerate()
        .filter(|(i, d)| parts.contains(&layout.part_of(run_id, *i, d)))
        .count();
    Ok(if done == planned.total {
        RunState::Complete
    } else {
        RunState::Incomplete {
            done,
            total: Some(planned.total),
        }
    })
}

fn dead_error(run_id: &str, dead: &[DeadRecord]) -> Error {
    let names: Vec<String> = dead
        .iter()
        .map(|d| {
            format!(
                "partition {} (from {}) after {} attempts{}",
                d.partition,
                d.first_path.as_deref().unwrap_or("-"),
                d.attempts,
                d.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    Error::new(
        ErrorKind::Source,
        format!(
            "run {run_id}: {} partition(s) dead-lettered, nothing committed: {}",
            dead.len(),
            names.join("; ")
        ),
    )
}

/// How a finalizer's attempt ended.
pub(super) enum Finalized {
    /// This finalizer committed the snapshot.
    Committed(Finished),
    /// Someone else did (an earlier attempt, a racing finalizer).
    AlreadyCommitted(Finished),
    /// Not every partition has its part record yet.
    NotReady(String),
}

/// Merge a complete run's part records into its manifest, create-only. `stats` carries
/// what workers reported (for the report's counters).
///
/// # Errors
/// `Source` naming dead-lettered partitions; `Store`/`Integrity` when records cannot be
/// read or the manifest written.
pub(super) async fn finalize(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    stats: &Stats,
) -> Result<Finalized> {
    let Some(plan) = plan::load_plan(store, layout, run_id).await? else {
        return Ok(Finalized::NotReady(format!(
            "run {run_id} has no stored plan"
        )));
    };
    let started_at = plan.started_at.unwrap_or_else(Utc::now);
    let snapshot = ids::snapshot_id_for(started_at, run_id);
    let already = |m: Manifest| {
        Finalized::AlreadyCommitted(Finished {
            report: run::committed_report(p, run_id, &snapshot, started_at, &plan, &m),
            manifest: Some(m),
        })
    };
    let load = || crate::manifest::catalog::load_head(&**store, layout, &snapshot);
    match run_state(store, layout, run_id).await? {
        RunState::Committed => return Ok(already(load().await?)),
        RunState::Dead(d) => return Err(dead_error(run_id, &d)),
        RunState::NoPlan => return Ok(Finalized::NotReady("no plan".into())),
        RunState::Incomplete { done, total } => {
            return Ok(Finalized::NotReady(match total {
                Some(t) => format!("{done} of {t} partitions have part records"),
                None => "the coordinator has not finished enqueueing".into(),
            }))
        }
        RunState::Complete => {}
    }
    let planned = load_planned(store, layout, run_id)
        .await?
        .ok_or_else(|| Error::internal("planned record vanished"))?;
    // Part records are read `upload.concurrency` at a time, in partition order (one GET
    // each: sequential reads would make a run of 10^4 partitions wait minutes on Azure).
    use futures::{StreamExt, TryStreamExt};
    let names: Vec<String> = planned
        .digests
        .iter()
        .enumerate()
        .map(|(i, d)| layout.part_of(run_id, i, d))
        .collect();
    let done: Vec<Option<commit::PartResult>> =
        futures::stream::iter(names.into_iter().enumerate().map(|(i, name)| {
            let (store, layout) = (store.clone(), layout.clone());
            async move {
                commit::load_part(&store, &layout, &name)
                    .await
                    .map(|(_, r)| Some(r))
                    .ctx(format!("reading the part record of partition {i}"))
            }
        }))
        .buffered(p.upload.concurrency.max(1))
        .try_collect()
        .await?;
    let parent: Option<Arc<Manifest>> = match &plan.parent {
        Some(id) => Some(Arc::new(
            crate::manifest::catalog::load_head(&**store, layout, id)
                .await
                .ctx("loading the parent snapshot")?,
        )),
        None => None,
    };
    let c = match commit::commit(
        p,
        store,
        layout,
        run_id,
        &snapshot,
        started_at,
        &plan,
        parent.as_deref(),
        done,
        plan.problems.clone(),
    )
    .await
    {
        Ok(c) => c,
        // A racing finalizer committed first: one snapshot, no error.
        Err(e) if e.kind() == ErrorKind::Conflict => {
            tracing::info!(run_id, "another finalizer committed this run first");
            return Ok(already(load().await?));
        }
        Err(e) => return Err(e),
    };
    let report = run::built_report(
        p,
        run_id,
        &snapshot,
        started_at,
        &plan,
        parent.as_deref(),
        &c,
        stats,
        (planned.total, 0),
        store.retries(),
    );
    Ok(Finalized::Committed(Finished {
        report,
        manifest: Some(c.manifest),
    }))
}

/// How `finalize_run` ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum FinalizeOutcome {
    /// This process committed (and verified, recorded, alerted).
    Committed {
        /// The run's report.
        report: Box<BackupReport>,
    },
    /// Another finalizer (or an earlier attempt) committed it: nothing done.
    AlreadyCommitted {
        /// The snapshot.
        snapshot: String,
    },
    /// Not every partition is done.
    NotReady {
        /// What is missing.
        why: String,
    },
    /// This replica committed and enqueued the verification's batches: the replica that
    /// merges them records the run.
    Verifying {
        /// The snapshot.
        snapshot: String,
        /// Verify batches enqueued.
        batches: usize,
    },
}

/// Finalize `run_id` under the run lease (waiting for it), then protect, verify, record
/// and alert like any backup. A run someone else committed ends `AlreadyCommitted`.
/// `repo` is the pipeline's, unlocked ([`open_repo`]) when it is encrypted. With
/// `queue` (a replica's), the verification is that queue's work: its batches are
/// enqueued and the run ends `Verifying`; without, this process verifies.
///
/// # Errors
/// `Source` for dead-lettered partitions (recorded as a failed run), lock, store and
/// integrity errors.
pub async fn finalize_run(
    p: &Pipeline,
    repo: &Repo,
    run_id: &str,
    stats: &Stats,
    cancel: &Cancel,
    queue: Option<&dyn WorkQueue>,
) -> Result<FinalizeOutcome> {
    let (store, layout) = (repo.store.clone(), repo.layout.clone());
    let started_at = Utc::now();
    let lock = crate::manifest::lock::RunLock::acquire(
        store.clone(),
        &layout,
        run_id,
        p.lock_ttl,
        true,
        cancel,
    )
    .await?;
    let opts = BackupOptions {
        cancel: cancel.clone(),
        ..Default::default()
    };
    let result = match finalize(p, &store, &layout, run_id, stats).await {
        Ok(Finalized::Committed(done)) => match (queue, done.manifest.clone()) {
            (Some(q), Some(m))
                if p.verify.after_backup && p.verify.mode != VerifyMode::Metadata =>
            {
                // Protected now, verified by the replicas.
                let unverified = BackupOptions {
                    no_verify: true,
                    ..opts
                };
                let protected = super::runner::check_committed(
                    p,
                    &store,
                    &layout,
                    run_id,
                    &unverified,
                    Ok(done),
                )
                .await;
                match protected {
                    Ok(report) => {
                        let snapshot = m.header.snapshot.clone();
                        match verify_work::start_replica_round(p, &store, &layout, m, &report, q)
                            .await
                        {
                            Ok(batches) => {
                                lock.release().await;
                                return Ok(FinalizeOutcome::Verifying { snapshot, batches });
                            }
                            Err(e) => {
                                let mut report = report;
                                super::runner::apply_verify(&mut report, p.verify.mode, Err(e));
                                Ok(report)
                            }
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            _ => super::runner::check_committed(p, &store, &layout, run_id, &opts, Ok(done)).await,
        },
        Ok(Finalized::AlreadyCommitted(done)) => {
            lock.release().await;
            return Ok(FinalizeOutcome::AlreadyCommitted {
                snapshot: done.report.snapshot.unwrap_or_default(),
            });
        }
        Ok(Finalized::NotReady(why)) => {
            lock.release().await;
            return Ok(FinalizeOutcome::NotReady { why });
        }
        Err(e) => Err(e),
    };
    lock.release().await;
    let report = super::runner::record(p, &store, &layout, run_id, started_at, result).await?;
    Ok(FinalizeOutcome::Committed {
        report: Box::new(report),
    })
}

/// The pipeline's store and layout for a worker or a finalizer: with `[encryption]`, the
/// data key opened — never created (the coordinator creates a first key record under the
/// run lease). Call it before anything is written.
///
/// # Errors
/// As [`Repo::open`] and [`Repo::unlock`]: `WrongKey` for a key that opens no key
/// record, `Config` for a missing one, `NotFound` when there is no key record yet.
pub async fn open_repo(p: &Pipeline) -> Result<Repo> {
    let mut repo = Repo::open(&p.target, &p.retry).await?;
    repo.unlock(p.encryption.as_ref(), false)
        .await
        .map_err(|e| e.context(format!("pipeline {:?}", p.name)))?;
    Ok(repo)
}

/// `backup --workers N`: the settings of the local worker processes.
#[derive(Debug, Clone)]
pub struct LocalWorkers {
    /// Worker processes.
    pub workers: usize,
    /// The work queue; `None`: a file queue in a fresh temporary directory.
    pub queue: Option<String>,
    /// The pipeline file the workers load.
    pub pipeline_file: PathBuf,
    /// The program to run (`blobpipe`; the current executable by default).
    pub exe: Option<PathBuf>,
}

/// The engine of `backup --workers N`: coordinate, run N `blobpipe work` processes on
/// the same queue protocol as job replicas, wait for them, finalize (the caller holds the
/// run lease and verifies, records and alerts).
///
/// # Errors
/// As the coordinator and [`finalize`]; `Internal` when the workers exit before every
/// partition is done.
pub(super) async fn run_local(
    p: &Pipeline,
    store: Store,
    layout: &Layout,
    run_id: &str,
    started_at: DateTime<Utc>,
    opts: &BackupOptions,
    w: &LocalWorkers,
) -> Result<Finished> {
    check_source(p)?;
    if matches!(
        p.target.location,
        crate::store::config::StoreLocation::Memory(_)
    ) {
        return Err(Error::config(format!(
            "pipeline {:?}: --workers runs worker processes, and a memory:// store lives in \
             one process; use a file:// or Azure target",
            p.name
        )));
    }
    let (url, temp) = local_queue(w, run_id);
    let r = run_local_on(p, &store, layout, run_id, started_at, opts, w, &url).await;
    if let Some(t) = temp {
        let _ = std::fs::remove_dir_all(t);
    }
    r
}

/// The queue of `backup --workers`: the one given, or a file queue in a fresh temporary
/// directory (returned, for the caller to remove).
fn local_queue(w: &LocalWorkers, run_id: &str) -> (String, Option<PathBuf>) {
    match &w.queue {
        Some(q) => (q.clone(), None),
        None => {
            let t = std::env::temp_dir()
                .join(format!("blobpipe-queue-{run_id}-{}", ids::random_hex(4)));
            (format!("file://{}", t.display()), Some(t))
        }
    }
}

/// Run `w.workers` `blobpipe work --run-id RUN --no-finalize` processes on `url` and wait
/// for them: their exit codes and summaries.
///
/// # Errors
/// `Internal` when a process cannot start; `Cancelled` on a signal (the processes are
/// killed).
async fn run_workers(
    w: &LocalWorkers,
    url: &str,
    run_id: &str,
    cancel: &Cancel,
) -> Result<(Vec<i32>, Vec<WorkSummary>)> {
    let exe = match &w.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::internal(format!("finding this program: {e}")))?,
    };
    let mut children = Vec::new();
    for _ in 0..w.workers.max(1) {
        let child = tokio::process::Command::new(&exe)
            .args(["--json", "-q", "work"])
            .arg(&w.pipeline_file)
            .args(["--queue", url, "--run-id", run_id, "--no-finalize"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::internal(format!("starting a worker process: {e}")))?;
        children.push(child);
    }
    let (mut codes, mut summaries) = (Vec::new(), Vec::new());
    for child in children {
        let out = tokio::select! {
            o = child.wait_with_output() => o.map_err(|e| Error::internal(format!("worker process: {e}")))?,
            _ = cancel.cancelled() => return Err(Error::cancelled()),
        };
        codes.push(out.status.code().unwrap_or(-1));
        if let Ok(s) = serde_json::from_slice::<WorkSummary>(&out.stdout) {
            summaries.push(s);
        }
    }
    tracing::info!(?codes, "worker processes exited");
    Ok((codes, summaries))
}

#[allow(clippy::too_many_arguments)]
async fn run_local_on(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    started_at: DateTime<Utc>,
    opts: &BackupOptions,
    w: &LocalWorkers,
    url: &str,
) -> Result<Finished> {
    let q = queue::open(url)?;
    let c = coordinate(
        p,
        store,
        layout,
        run_id,
        started_at,
        opts.full,
        &*q,
        &opts.cancel,
    )
    .await?;
    let stats = Stats::default();
    let mut codes = Vec::new();
    if c.committed.is_none() {
        let (c, summaries) = run_workers(w, url, run_id, &opts.cancel).await?;
        codes = c;
        for s in summaries {
            s.add_to(&stats);
        }
    }
    match finalize(p, store, layout, run_id, &stats).await? {
        Finalized::Committed(done) | Finalized::AlreadyCommitted(done) => Ok(done),
        Finalized::NotReady(why) => Err(Error::internal(format!(
            "the worker processes exited (codes {codes:?}) before the run was complete \
             ({why}); rerun with --run-id {run_id} to resume"
        ))),
    }
}

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkOptions {
    /// Only this run's messages (others are left on the queue for their run).
    pub run_id: Option<String>,
    /// How long a received message stays invisible (renewed every third of it).
    pub visibility: Duration,
    /// A failed partition's message reappears after this long.
    pub retry_delay: Duration,
    /// A partition whose attempts reach this many is dead-lettered (attempts are
    /// counted by markers in the store, so receipts by workers of other runs do not
    /// count).
    pub max_dequeue: u32,
    /// Wait between receives while the queue is empty and the run is not complete.
    pub poll: Duration,
    /// Finalize a run found complete (off for `backup --workers`, whose parent does).
    pub finalize: bool,
    /// Partitions worked on at once.
    pub parallel: usize,
    /// How long a worker of one run waits for the run's plan to appear.
    pub plan_wait: Duration,
    /// Cancellation.
    pub cancel: Cancel,
}

/// How one run ended for this worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunEnd {
    /// Pipeline name.
    pub pipeline: String,
    /// Run id.
    pub run_id: String,
    /// `committed`, `already_committed`, `complete` (left to the finalizer), `failed`.
    pub outcome: String,
    /// The committed run's report (when this worker finalized).
    #[serde(default, skip_deserializing)]
    pub report: Option<Box<BackupReport>>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// What a worker did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkSummary {
    /// Partitions this worker packed and recorded (and verify batches it checked).
    pub processed: u64,
    /// Messages whose partition (or verify batch) was already recorded (deleted).
    pub skipped_done: u64,
    /// Failed partition attempts (their messages reappear).
    pub failed_attempts: u64,
    /// Messages of other runs released untouched.
    pub released_foreign: u64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Queue operations (receive, renew, delete, release, dead-letter).
    pub queue_ops: u64,
    /// Blocks staged.
    pub blocks_staged: u64,
    /// Blocks found staged by an earlier attempt.
    pub blocks_reused: u64,
    /// Files read.
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Segments stored.
    pub segments_written: u64,
    /// Segments found stored.
    pub segments_reused: u64,
    /// Partition retries inside this worker.
    pub partition_retries: u64,
    /// Runs this worker saw end.
    pub runs: Vec<RunEnd>,
}

impl WorkSummary {
    fn add_to(&self, s: &Stats) {
        let r = Ordering::Relaxed;
        s.blocks_staged.fetch_add(self.blocks_staged, r);
        s.blocks_reused.fetch_add(self.blocks_reused, r);
        s.files_read.fetch_add(self.files_read, r);
        s.bytes_read.fetch_add(self.bytes_read, r);
        s.segments_written.fetch_add(self.segments_written, r);
        s.segments_reused.fetch_add(self.segments_reused, r);
        s.partition_retries.fetch_add(self.partition_retries, r);
    }

    /// Whether every run this worker saw end ended well.
    pub fn failed(&self) -> bool {
        self.runs.iter().any(|r| r.outcome == "failed")
    }
}

/// A run's context in a worker: its store, plan and partition context.
struct RunCtx {
    store: Store,
    layout: Layout,
    ctx: Arc<run::Ctx>,
    uploaders: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct Worker<'a> {
    pipelines: &'a [Pipeline],
    queue: Arc<dyn WorkQueue>,
    opts: &'a WorkOptions,
    /// Per pipeline: its store and layout, unlocked ([`open_repo`]).
    repos: tokio::sync::Mutex<HashMap<String, Repo>>,
    runs: tokio::sync::Mutex<HashMap<(String, String), Arc<RunCtx>>>,
    touched: std::sync::Mutex<HashSet<(String, String)>>,
    ends: std::sync::Mutex<Vec<RunEnd>>,
    finalizing: tokio::sync::Mutex<()>,
    stats: Arc<Stats>,
    counters: Arc<Counters>,
    n: Counts,
    started: std::time::Instant,
    last_progress: std::sync::Mutex<std::time::Instant>,
}

/// A message being worked on, renewed in the background.
struct Held<'a> {
    held: Arc<tokio::sync::Mutex<Received>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    ops: Arc<AtomicU64>,
    counted: &'a AtomicU64,
}

impl Held<'_> {
    /// Stop renewing; the message with its latest receipt.
    async fn release(self) -> Received {
        let m = {
            let g = self.held.lock().await;
            self.stop.store(true, Ordering::SeqCst);
            g.clone()
        };
        self.task.abort();
        self.counted
            .fetch_add(self.ops.load(Ordering::Relaxed), Ordering::Relaxed);
        m
    }
}

#[derive(Default)]
struct Counts {
    processed: AtomicU64,
    skipped_done: AtomicU64,
    failed_attempts: AtomicU64,
    released_foreign: AtomicU64,
    dead_lettered: AtomicU64,
    queue_ops: AtomicU64,
}

/// Work on `queue` for `pipelines` until the run (`opts.run_id`) ends, or — serving any
/// run — until the queue is empty.
///
/// # Errors
/// `Cancelled` on a signal; store and queue errors that outlast their retries.
pub async fn work(
    pipelines: &[Pipeline],
    queue: Arc<dyn WorkQueue>,
    opts: &WorkOptions,
) -> Result<WorkSummary> {
    for p in pipelines {
        check_source(p)?;
    }
    let w = Worker {
        pipelines,
        queue,
        opts,
        repos: Default::default(),
        runs: Default::default(),
        touched: Default::default(),
        ends: Default::default(),
        finalizing: Default::default(),
        stats: Arc::new(Stats::default()),
        counters: Arc::new(Counters::default()),
        n: Counts::default(),
        started: std::time::Instant::now(),
        last_progress: std::sync::Mutex::new(std::time::Instant::now()),
    };
    // Open every data key before the first receive: a worker with a wrong or missing key
    // stops here and leaves the queue to workers that can read it. Only a key record
    // that does not exist yet (the coordinator creates it under the run lease) is
    // waited for: opened when a message or the run's plan needs it.
    for p in pipelines {
        match w.repo_for(p).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound && p.encryption.is_some() => {
                tracing::info!("pipeline {:?}: no key record yet: {e}", p.name);
            }
            Err(e) => return Err(e),
        }
    }
    let loops = (0..opts.parallel.max(1)).map(|_| w.run_loop());
    let results = futures::future::join_all(loops).await;
    // Close the upload pools: drop every context, then wait for the uploaders.
    let runs: Vec<Arc<RunCtx>> = w.runs.lock().await.drain().map(|(_, v)| v).collect();
    let mut handles = Vec::new();
    for r in runs {
        handles.extend(
            r.uploaders
                .lock()
                .map(|mut v| std::mem::take(&mut *v))
                .unwrap_or_default(),
        );
    }
    for h in handles {
        let _ = h.await;
    }
    for r in results {
        r?;
    }
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let s = &w.stats;
    Ok(WorkSummary {
        processed: g(&w.n.processed),
        skipped_done: g(&w.n.skipped_done),
        failed_attempts: g(&w.n.failed_attempts),
        released_foreign: g(&w.n.released_foreign),
        dead_lettered: g(&w.n.dead_lettered),
        queue_ops: g(&w.n.queue_ops),
        blocks_staged: g(&s.blocks_staged),
        blocks_reused: g(&s.blocks_reused),
        files_read: g(&s.files_read),
        bytes_read: g(&s.bytes_read),
        segments_written: g(&s.segments_written),
        segments_reused: g(&s.segments_reused),
        partition_retries: g(&s.partition_retries),
        runs: w.ends.lock().map(|v| v.clone()).unwrap_or_default(),
    })
}

impl Worker<'_> {
    fn op(&self) {
        self.n.queue_ops.fetch_add(1, Ordering::Relaxed);
    }

    async fn run_loop(&self) -> Result<()> {
        loop {
            if self.opts.cancel.is_cancelled() {
                return Err(Error::cancelled());
            }
            self.op();
            match self.queue.receive(self.opts.visibility).await? {
                Some(m) => self.handle(m).await?,
                None => {
                    if self.idle().await? {
                        return Ok(());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(self.opts.poll) => {}
                        _ = self.opts.cancel.cancelled() => return Err(Error::cancelled()),
                    }
                }
            }
        }
    }

    async fn repo_for(&self, p: &Pipeline) -> Result<Repo> {
        let mut g = self.repos.lock().await;
        if let Some(r) = g.get(&p.name) {
            return Ok(r.clone());
        }
        let r = open_repo(p).await?;
        g.insert(p.name.clone(), r.clone());
        Ok(r)
    }

    fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.name == name)
    }

    /// The queue is empty: is there anything left to wait for? Finalizes runs found
    /// complete (when allowed). `true`: stop.
    async fn idle(&self) -> Result<bool> {
        let mine: Vec<(String, String)> = match &self.opts.run_id {
            Some(run) => {
                let mut found = Vec::new();
                for p in self.pipelines {
                    let repo = match self.repo_for(p).await {
                        Ok(r) => r,
                        // No key record yet: the coordinator has not started either.
                        Err(e) if e.kind() == ErrorKind::NotFound && p.encryption.is_some() => {
                            continue
                        }
                        Err(e) => return Err(e),
                    };
                    if plan::load_plan(&repo.store, &repo.layout, run)
                        .await?
                        .is_some()
                    {
                        found.push((p.name.clone(), run.clone()));
                    }
                }
                if found.is_empty() {
                    // The coordinator has not stored the plan yet: wait, but not forever.
                    if self.started.elapsed() >= self.opts.plan_wait {
                        return Err(Error::not_found(format!(
                            "run {run} has no stored plan after {:?}: is its coordinator \
                             running (`blobpipe plan`, or `work --coordinate`), and is the run \
                             id right?",
                            self.opts.plan_wait
                        )));
                    }
                    return Ok(false);
                }
                found
            }
            None => self
                .touched
                .lock()
                .map(|t| t.iter().cloned().collect())
                .unwrap_or_default(),
        };
        let mut waiting = false;
        let mut enqueued = false;
        for (name, run) in mine {
            let _one = self.finalizing.lock().await;
            if self
                .ends
                .lock()
                .map(|e| e.iter().any(|x| x.pipeline == name && x.run_id == run))
                .unwrap_or(false)
            {
                continue;
            }
            let Some(p) = self.pipeline(&name) else {
                continue;
            };
            let repo = self.repo_for(p).await?;
            let (store, layout) = (&repo.store, &repo.layout);
            let end = |outcome: &str, report: Option<BackupReport>, error: Option<String>| RunEnd {
                pipeline: name.clone(),
                run_id: run.clone(),
                outcome: outcome.into(),
                report: report.map(Box::new),
                error,
            };
            let state = run_state(store, layout, &run).await?;
            // A committed run whose verification round still has batches to check.
            let verifying = matches!(state, RunState::Committed)
                && verify_work::pending(store, layout, &run).await?;
            let ended = match state {
                // The coordinator stored the plan but never its `planned` record, and
                // nothing has moved for --plan-wait: it died while enqueueing.
                RunState::Incomplete { total: None, .. }
                    if self.opts.run_id.is_some() && self.quiet_for() >= self.opts.plan_wait =>
                {
                    return Err(Error::not_found(format!(
                        "run {run}: the coordinator has not finished enqueueing after {:?} \
                         without progress; rerun `blobpipe plan` with --run-id {run} (it \
                         enqueues only what has no part record)",
                        self.opts.plan_wait
                    )));
                }
                RunState::NoPlan | RunState::Incomplete { .. } => {
                    waiting = true;
                    None
                }
                RunState::Committed if verifying => {
                    waiting = true;
                    None
                }
                // Every batch checked (or none started): merge a replica's round once.
                RunState::Committed => {
                    match verify_work::merge_replicas(
                        store,
                        layout,
                        &run,
                        p.lock_ttl,
                        &self.opts.cancel,
                    )
                    .await
                    {
                        Ok(verify_work::Merged::Pending) => {
                            waiting = true;
                            None
                        }
                        Ok(verify_work::Merged::Report(r)) => {
                            let r =
                                super::runner::record(p, store, layout, &run, r.started_at, Ok(*r))
                                    .await;
                            Some(match r {
                                Ok(r) => end("committed", Some(r), None),
                                Err(e) => end("failed", None, Some(e.to_string())),
                            })
                        }
                        Ok(verify_work::Merged::Nothing) => {
                            Some(end("already_committed", None, None))
                        }
                        Err(e) => Some(end("failed", None, Some(e.to_string()))),
                    }
                }
                RunState::Dead(d) => {
                    Some(end("failed", None, Some(dead_error(&run, &d).to_string())))
                }
                RunState::Complete if !self.opts.finalize => Some(end("complete", None, None)),
                RunState::Complete => {
                    match finalize_run(
                        p,
                        &repo,
                        &run,
                        &self.stats,
                        &self.opts.cancel,
                        Some(&*self.queue),
                    )
                    .await
                    {
                        Ok(FinalizeOutcome::Committed { report }) => {
                            Some(end("committed", Some(*report), None))
                        }
                        // Another replica committed first: its verification is queue
                        // work for this one too (the next look decides).
                        Ok(FinalizeOutcome::AlreadyCommitted { .. })
                            if self.opts.run_id.is_some() =>
                        {
                            waiting = true;
                            None
                        }
                        Ok(FinalizeOutcome::AlreadyCommitted { .. }) => {
                            Some(end("already_committed", None, None))
                        }
                        // The batches just enqueued are this worker's work too.
                        Ok(FinalizeOutcome::Verifying { .. }) => {
                            enqueued = true;
                            waiting = true;
                            None
                        }
                        Ok(FinalizeOutcome::NotReady { .. }) => {
                            waiting = true;
                            None
                        }
                        Err(e) => Some(end("failed", None, Some(e.to_string()))),
                    }
                }
            };
            if let Some(e) = ended {
                if let Ok(mut v) = self.ends.lock() {
                    v.push(e);
                }
            }
        }
        // Serving one run: wait until it ends. Serving any: stop when the queue is empty.
        Ok(!enqueued && (self.opts.run_id.is_none() || !waiting))
    }

    async fn release(&self, m: &Received) -> Result<()> {
        self.op();
        match self
            .queue
            .set_visibility(m, self.opts.poll.max(Duration::from_secs(1)))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Time since this worker last handled a message (or started).
    fn quiet_for(&self) -> Duration {
        self.last_progress
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    async fn handle(&self, m: Received) -> Result<()> {
        if let Ok(mut t) = self.last_progress.lock() {
            *t = std::time::Instant::now();
        }
        if let Some(v) = verify_work::parse(&m.text) {
            return self.handle_verify(m, v).await;
        }
        let msg: WorkMessage = match serde_json::from_str(m.text.trim()) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(message = %m.id, "not a work message ({e}): dead-lettered");
                self.op();
                self.queue.dead_letter(&m).await?;
                self.n.dead_lettered.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        let foreign = self.opts.run_id.as_ref().is_some_and(|r| *r != msg.run_id);
        let Some(p) = self.pipeline(&msg.pipeline).filter(|_| !foreign) else {
            // Another run's (or another deployment's) message: leave it for them.
            self.n.released_foreign.fetch_add(1, Ordering::Relaxed);
            return self.release(&m).await;
        };
        if let Ok(mut t) = self.touched.lock() {
            t.insert((msg.pipeline.clone(), msg.run_id.clone()));
        }
        let rc = match self.run_ctx(p, &msg.run_id).await {
            Ok(rc) => rc,
            Err(e) => {
                // Leave the message to a worker that can read its run (a key record or
                // plan this one cannot open, an unreachable store).
                let _ = self.release(&m).await;
                return Err(e);
            }
        };
        let part = rc.layout.part_of(&msg.run_id, msg.partition, &msg.digest);
        if rc.store.head(&part).await?.is_some() {
            self.n.skipped_done.fetch_add(1, Ordering::Relaxed);
            self.op();
            return self.queue.delete(&m).await;
        }
        // Attempts are counted by markers, not by the queue's dequeue count, which
        // receipts by workers of other runs raise too.
        let attempts = store::list_all(&*rc.store, &rc.layout.attempts(&msg.run_id, msg.partition))
            .await?
            .len() as u32;
        if attempts >= self.opts.max_dequeue {
            return self.dead_letter(p, &rc, &msg, &m, attempts).await;
        }
        let marker = rc.layout.attempt(&msg.run_id, msg.partition, attempts + 1);
        match rc.store.put(&marker, Bytes::from(m.id.clone()), true).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(e.context("marking a partition attempt")),
        }
        let piece = match self.piece(&rc, &msg).await {
            Ok(piece) => piece,
            Err(e) => return self.failed(&rc, &msg, m, e).await,
        };
        let held = self.hold(m);
        let r = run::run_partition_with_retries(rc.ctx.clone(), Arc::new(piece)).await;
        let m = held.release().await;
        match r {
            Ok(_) => {
                self.n.processed.fetch_add(1, Ordering::Relaxed);
                self.op();
                self.queue.delete(&m).await
            }
            // A duplicate delivery finished first (its part record is create-only).
            Err(_) if rc.store.head(&part).await?.is_some() => {
                self.n.skipped_done.fetch_add(1, Ordering::Relaxed);
                self.op();
                self.queue.delete(&m).await
            }
            Err(e) => self.failed(&rc, &msg, m, e).await,
        }
    }

    /// Keep message `m` invisible while it is worked on: renew it every third of the
    /// visibility timeout until [`Held::release`].
    fn hold(&self, m: Received) -> Held<'_> {
        let held = Arc::new(tokio::sync::Mutex::new(m));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let (h, st, queue, o) = (held.clone(), stop.clone(), self.queue.clone(), ops.clone());
        let vis = self.opts.visibility;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(vis / 3).await;
                let mut g = h.lock().await;
                if st.load(Ordering::SeqCst) {
                    break;
                }
                o.fetch_add(1, Ordering::Relaxed);
                match queue.set_visibility(&g, vis).await {
                    Ok(r) => g.pop_receipt = r,
                    Err(e) => {
                        tracing::warn!("could not renew message {}: {e}", g.id);
                        break;
                    }
                }
            }
        });
        Held {
            held,
            stop,
            task,
            ops,
            counted: &self.n.queue_ops,
        }
    }

    /// A failed attempt: keep its error for the dead-letter record, let the message
    /// reappear after the retry delay.
    async fn failed(&self, rc: &RunCtx, msg: &WorkMessage, m: Received, e: Error) -> Result<()> {
        if e.kind() == ErrorKind::Cancelled {
            return Err(e);
        }
        tracing::error!(
            run_id = %msg.run_id,
            partition = msg.partition,
            dequeue_count = m.dequeue_count,
            "partition failed: {e}"
        );
        let name = rc.layout.part_error(&msg.run_id, msg.partition);
        self.retry_later(&rc.store, &rc.layout, &name, &m, &e).await
    }

    /// A failed attempt (a partition or a verify batch): keep its error as `name` (sealed
    /// for `[encryption]`) for a later dead-letter record, and let the message reappear
    /// after the retry delay.
    pub(super) async fn retry_later(
        &self,
        store: &Store,
        layout: &Layout,
        name: &str,
        m: &Received,
        e: &Error,
    ) -> Result<()> {
        self.n.failed_attempts.fetch_add(1, Ordering::Relaxed);
        let put = match layout.seal(name, e.to_string().into_bytes()) {
            Ok(body) => store.put(name, Bytes::from(body), false).await.map(|_| ()),
            Err(se) => Err(se),
        };
        if let Err(we) = put {
            tracing::warn!("could not store {name}: {we}");
        }
        self.op();
        match self.queue.set_visibility(m, self.opts.retry_delay).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn dead_letter(
        &self,
        p: &Pipeline,
        rc: &RunCtx,
        msg: &WorkMessage,
        m: &Received,
        attempts: u32,
    ) -> Result<()> {
        let error_name = rc.layout.part_error(&msg.run_id, msg.partition);
        let last_error = match rc.store.get(&error_name, None).await {
            Ok(b) => rc
                .layout
                .open(&error_name, b)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            Err(_) => None,
        };
        let first_path = match &msg.piece {
            Some(d) => d.entries.first().map(|e| e.path.display()),
            None => None,
        };
        let rec = DeadRecord {
            partition: msg.partition,
            digest: msg.digest.clone(),
            first_path,
            attempts,
            last_error,
            at: Utc::now(),
        };
        let name = rc.layout.dead(&msg.run_id, msg.partition);
        let body = serde_json::to_vec_pretty(&rec).map_err(|e| Error::encode("dead record", e))?;
        let body = rc.layout.seal(&name, body)?;
        rc.store
            .put(&name, Bytes::from(body), false)
            .await
            .ctx("storing the dead-letter record")?;
        self.op();
        self.queue.dead_letter(m).await?;
        self.n.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let e = dead_error(&msg.run_id, std::slice::from_ref(&rec));
        tracing::error!("{e}");
        // The run cannot commit: record it as failed and alert now.
        let _ = super::runner::record(p, &rc.store, &rc.layout, &msg.run_id, rec.at, Err(e)).await;
        Ok(())
    }

    /// The partition a message describes, checked against its digest.
    async fn piece(&self, rc: &RunCtx, msg: &WorkMessage) -> Result<Piece> {
        let desc = match (&msg.piece, &msg.piece_blob, &msg.sealed) {
            // An encrypted pipeline's coordinator seals every description: a plain one
            // was not put there by it.
            (Some(_), _, _) if rc.layout.key().is_some() => {
                return Err(Error::integrity(format!(
                    "partition {} of run {}: an unsealed description for an encrypted pipeline",
                    msg.partition, msg.run_id
                )))
            }
            (Some(d), _, _) => d.clone(),
            (None, _, Some(sealed)) => piece_of_sealed(&rc.layout, msg, sealed)?,
            (None, Some(name), None) => {
                if !name.starts_with(&rc.layout.parts(&msg.run_id)) {
                    return Err(Error::integrity(format!(
                        "work message names {name:?}, outside its run's records"
                    )));
                }
                get_record(&rc.store, &rc.layout, name)
                    .await
                    .ctx("reading the partition description")?
                    .ok_or_else(|| Error::not_found(format!("{name} is gone")))?
            }
            (None, None, None) => {
                return Err(Error::integrity(
                    "work message without a partition description",
                ))
            }
        };
        // A message is not trusted to name files outside the source root.
        for e in &desc.entries {
            crate::manifest::check::check_path(&e.path.0).map_err(|why| {
                Error::integrity(format!(
                    "partition {} of run {}: entry {:?} is not a path under the source root: {why}",
                    msg.partition,
                    msg.run_id,
                    e.path.display()
                ))
            })?;
        }
        let digest = extract::piece_digest(desc.lo.as_ref(), desc.hi.as_ref(), &desc.entries);
        if digest != msg.digest {
            return Err(Error::integrity(format!(
                "partition {} of run {}: the description does not match its digest {} (got {digest})",
                msg.partition, msg.run_id, msg.digest
            )));
        }
        Ok(Piece {
            idx: msg.partition,
            lo: desc.lo,
            hi: desc.hi,
            entries: desc.entries,
            problems: desc.problems,
            digest,
            blobs: Vec::new(),
        })
    }

    async fn run_ctx(&self, p: &Pipeline, run_id: &str) -> Result<Arc<RunCtx>> {
        let key = (p.name.clone(), run_id.to_string());
        let mut g = self.runs.lock().await;
        if let Some(r) = g.get(&key) {
            return Ok(r.clone());
        }
        let Repo { store, layout } = self.repo_for(p).await?;
        let plan = plan::load_plan(&store, &layout, run_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("run {run_id} has no stored plan")))?;
        let parent: Option<Arc<Manifest>> = match &plan.parent {
            Some(id) => Some(Arc::new(
                crate::manifest::catalog::load_head(&*store, &layout, id)
                    .await
                    .ctx("loading the parent snapshot")?,
            )),
            None => None,
        };
        let chunk_index =
            run::chunk_index(p, &store, &layout, &plan, parent.as_deref(), &self.stats).await?;
        let (ctx, uploaders) = run::open_ctx(
            p,
            &store,
            &layout,
            run_id,
            &plan,
            parent,
            None,
            None,
            chunk_index,
            (&self.opts.cancel, &self.counters, &self.stats),
        );
        let rc = Arc::new(RunCtx {
            store,
            layout,
            ctx,
            uploaders: std::sync::Mutex::new(uploaders),
        });
        g.insert(key, rc.clone());
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::crypt::DataKey;

    fn msg(run_id: &str, partition: usize) -> WorkMessage {
        WorkMessage {
            v: MESSAGE_VERSION,
            pipeline: "p".into(),
            run_id: run_id.into(),
            partition,
            digest: "d".repeat(24),
            piece: None,
            piece_blob: None,
            sealed: None,
        }
    }

    #[test]
    fn a_sealed_description_opens_only_in_its_run_and_partition() {
        let layout = Layout::new("pre").with_key(Arc::new(DataKey::generate().expect("key")));
        let desc = PieceDesc {
            lo: None,
            hi: None,
            entries: vec![],
            problems: vec![],
        };
        let sealed = seal_piece(&layout, &msg("run-a", 1), &desc).expect("seal");
        let opened = piece_of_sealed(&layout, &msg("run-a", 1), &sealed).expect("open");
        assert!(opened.entries.is_empty() && opened.lo.is_none());
        for other in [msg("run-b", 1), msg("run-a", 2)] {
            let e = piece_of_sealed(&layout, &other, &sealed).expect_err("replayed");
            assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        }
        let other_key = Layout::new("pre").with_key(Arc::new(DataKey::generate().expect("key")));
        assert!(piece_of_sealed(&other_key, &msg("run-a", 1), &sealed).is_err());
        let e =
            piece_of_sealed(&Layout::new("pre"), &msg("run-a", 1), &sealed).expect_err("no key");
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    }
}
