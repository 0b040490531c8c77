//! Scale-out verification: the committed snapshot's packs as queue work, checked by the
//! same worker processes that packed them, merged into one verify report.
//!
//! ```text
//!  finalizer (backup --workers)         work queue                  workers (work)
//!  pack → segments (one pass) →  ─> one message a batch of packs ─> receive (renewed)
//!  batches ≤ [verify] batch bytes      (run id + round + batch)      → verify's pack checks
//!  → round record → enqueue                                         → part, create-only
//!  → workers → merge parts → report                                 → delete the message
//! ```
//!
//! A verification *round* has an id of its own (a rerun of a committed run verifies
//! again, it does not find the last round's parts); a batch's identity is run id, round
//! and batch number, and its part record is create-only, so a redelivered message whose
//! part exists is only deleted, and a worker killed mid-batch leaves nothing half-done:
//! its message reappears and the batch is checked once more, whole. The checks are
//! [`crate::verify::check_packs`], the ones a single-process verify runs, and the merge is
//! [`crate::verify::finish_report`], so the merged report says what a single process
//! would have (the seed is the round's: per snapshot unless the pipeline sets one).
//!
//! Batches follow the packs' places in the manifest's segments, so a worker reads only
//! the segments its packs' entries lie in. A batch tried `max_dequeue` times is
//! dead-lettered with a record naming its packs; the round then fails naming them.
//!
//! Workers of a committed run keep polling while its round record lists a batch with
//! neither a part nor a dead record; the finalizer removes the record after the merge,
//! and a new round (under the run lock) removes any an earlier finalizer left.
//!
//! Replicas (`work`) use the same rounds: the one that commits starts the round on its
//! own queue with the run's report in the round record, and whichever replica finds the
//! round complete merges it under the run lock, removing the record before the lock is
//! released, so one merge writes the one report.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{LocalWorkers, Worker};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::manifest::layout::Layout;
use crate::manifest::Manifest;
use crate::pipeline::report::BackupReport;
use crate::store::queue::{self, Received, WorkQueue};
use crate::store::{self, Store};
use crate::support::cancel::Cancel;
use crate::support::ids;
use crate::verify::config::VerifyMode;
use crate::verify::{self, PackSelection, PacksChecked, VerifyReport};

/// Version of [`VerifyMessage`].
const VERIFY_VERSION: u32 = 1;

/// Packs one message names at most, whatever the byte budget (keeps a message far below
/// the queue's 64 KiB).
const MAX_PACKS_PER_MESSAGE: usize = 256;

/// One batch of packs of one verification round, as it travels on the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct VerifyMessage {
    v: u32,
    pipeline: String,
    run_id: String,
    verify: Batch,
}

/// What a batch checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Batch {
    snapshot: String,
    round: String,
    batch: usize,
    /// Pack ids.
    packs: Vec<String>,
    /// Segments holding the packs' entries: `start..end`.
    segments: (usize, usize),
    mode: String,
    fraction: Option<f64>,
    seed: u64,
}

impl Batch {
    fn mode(&self) -> Result<VerifyMode> {
        parse_mode(&self.mode, self.fraction)
    }
}

/// A mode as it is stored: its name and a sample's fraction.
fn mode_fields(mode: VerifyMode) -> (String, Option<f64>) {
    let fraction = match mode {
        VerifyMode::Sample(f) => Some(f),
        _ => None,
    };
    (mode.name().into(), fraction)
}

fn parse_mode(mode: &str, fraction: Option<f64>) -> Result<VerifyMode> {
    match (mode, fraction) {
        ("full", _) => Ok(VerifyMode::Full),
        ("sample", Some(f)) => Ok(VerifyMode::Sample(f)),
        ("metadata", _) => Ok(VerifyMode::Metadata),
        (m, _) => Err(Error::integrity(format!(
            "verify message with an unknown mode {m:?}"
        ))),
    }
}

/// A round's record: how many batches it has. Present while the round runs (workers of
/// the run keep waiting while a batch has neither a part nor a dead record).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Round {
    snapshot: String,
    batches: usize,
    started_at: DateTime<Utc>,
    /// A round started by a replica (`work`): what the replica that merges it needs.
    /// `backup --workers` merges its own rounds and stores none.
    #[serde(default)]
    replica: Option<ReplicaRound>,
}

/// What the replica that merges a round needs to finish the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReplicaRound {
    round: String,
    mode: String,
    fraction: Option<f64>,
    seed: u64,
    /// The committed run's report, verification pending.
    report: BackupReport,
}

/// How [`merge_replicas`] found a run's verification.
pub(super) enum Merged {
    /// Batches are still unchecked, or the committing replica has not enqueued them yet.
    Pending,
    /// This replica merged the round: the run's report, verified.
    Report(Box<BackupReport>),
    /// No round of a replica to merge (merged by another, or none was started).
    Nothing,
}

/// The record of a dead-lettered batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeadBatch {
    batch: usize,
    packs: Vec<String>,
    attempts: u32,
    last_error: Option<String>,
    at: DateTime<Utc>,
}

/// The stored names of one round (under the run's part records).
struct Names {
    prefix: String,
}

impl Names {
    fn new(layout: &Layout, run_id: &str, round: &str) -> Self {
        Self {
            prefix: format!("{}verify/{round}/", layout.parts(run_id)),
        }
    }
    fn all(layout: &Layout, run_id: &str) -> String {
        format!("{}verify/", layout.parts(run_id))
    }
    fn round(&self) -> String {
        format!("{}round.json", self.prefix)
    }
    fn part(&self, batch: usize) -> String {
        format!("{}part-{batch:05}.json.gz", self.prefix)
    }
    fn dead(&self, batch: usize) -> String {
        format!("{}vdead-{batch:05}.json", self.prefix)
    }
    fn error(&self, batch: usize) -> String {
        format!("{}error-{batch:05}.txt", self.prefix)
    }
    fn attempts(&self, batch: usize) -> String {
        format!("{}attempts/{batch:05}-", self.prefix)
    }
}

/// A verify message, if `text` is one (partition messages are not).
pub(super) fn parse(text: &str) -> Option<VerifyMessage> {
    serde_json::from_str::<VerifyMessage>(text.trim())
        .ok()
        .filter(|v| v.v == VERIFY_VERSION)
}

/// Whether run `run_id` has a verification round with batches neither checked nor
/// dead-lettered: its workers keep polling.
///
/// # Errors
/// Store errors listing or reading the round records.
pub(super) async fn pending(store: &Store, layout: &Layout, run_id: &str) -> Result<bool> {
    Ok(rounds(store, layout, run_id)
        .await?
        .iter()
        .any(|(r, done)| *done < r.batches))
}

/// The run's stored rounds, each with how many of its batches have a part or a dead
/// record.
async fn rounds(store: &Store, layout: &Layout, run_id: &str) -> Result<Vec<(Round, usize)>> {
    let listed = store::list_all(&**store, &Names::all(layout, run_id)).await?;
    let mut out = Vec::new();
    for item in listed.iter().filter(|i| i.name.ends_with("/round.json")) {
        let b = layout.open(&item.name, store.get(&item.name, None).await?)?;
        let r: Round = serde_json::from_slice(&b).map_err(|e| Error::decode(&item.name, e))?;
        let dir = item.name.trim_end_matches("round.json");
        let done = listed
            .iter()
            .filter(|i| {
                i.name
                    .strip_prefix(dir)
                    .is_some_and(|b| b.starts_with("part-") || b.starts_with("vdead-"))
            })
            .count();
        out.push((r, done));
    }
    Ok(out)
}

/// Cut the snapshot's packs into batches of at most `budget` stored bytes (a larger pack
/// alone) and [`MAX_PACKS_PER_MESSAGE`] packs, in the order of their first segment, each
/// with the segments its packs' entries lie in.
fn batches(m: &Manifest, spans: &[Option<(usize, usize)>], budget: u64) -> Vec<PackSelection> {
    let mut order: Vec<usize> = (0..m.packs.len()).collect();
    order.sort_by_key(|&i| (spans[i].map_or(usize::MAX, |s| s.0), i));
    let mut out: Vec<PackSelection> = Vec::new();
    let mut bytes = 0u64;
    for i in order {
        let size = m.packs[i].size;
        let start_new = match out.last() {
            None => true,
            Some(b) => {
                b.packs.len() >= MAX_PACKS_PER_MESSAGE || bytes.saturating_add(size) > budget
            }
        };
        if start_new {
            out.push(PackSelection {
                packs: Vec::new(),
                segments: 0..0,
            });
            bytes = 0;
        }
        let b = out.last_mut().expect("a batch was just pushed");
        if let Some((lo, hi)) = spans[i] {
            b.segments = if b.segments.is_empty() {
                lo..hi + 1
            } else {
                b.segments.start.min(lo)..b.segments.end.max(hi + 1)
            };
        }
        b.packs.push(i);
        bytes = bytes.saturating_add(size);
    }
    for b in &mut out {
        b.packs.sort_unstable();
    }
    out
}

/// A round started: its id, batches and start.
struct Started {
    round: String,
    batches: usize,
    started_at: DateTime<Utc>,
}

/// Start a verification round of committed snapshot `m` of `run_id`: cut its packs into
/// batches, remove rounds an earlier finalizer left unfinished (the caller holds the run
/// lock, so none is running), store the round record (with `replica`'s report when a
/// replica starts it) and put one message a batch on `q`.
#[allow(clippy::too_many_arguments)]
async fn start_round(
    p: &super::Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    m: &Arc<Manifest>,
    mode: VerifyMode,
    seed: u64,
    report: Option<&BackupReport>,
    q: &dyn WorkQueue,
) -> Result<Started> {
    let started_at = Utc::now();
    let spans = verify::pack_segments(store, layout, m).await?;
    let cut = batches(m, &spans, p.verify.batch);
    // An earlier round of this run that never finished would keep the workers waiting
    // for batches nobody will send: it is over.
    for item in store::list_all(&**store, &Names::all(layout, run_id)).await? {
        if item.name.ends_with("/round.json") {
            store
                .delete(&item.name)
                .await
                .ctx("removing an unfinished verify round")?;
        }
    }
    let round = ids::stamp(started_at);
    let names = Names::new(layout, run_id, &round);
    let (mode_name, fraction) = mode_fields(mode);
    let rec = Round {
        snapshot: m.header.snapshot.clone(),
        batches: cut.len(),
        started_at,
        replica: report.map(|r| ReplicaRound {
            round: round.clone(),
            mode: mode_name.clone(),
            fraction,
            seed,
            report: r.clone(),
        }),
    };
    let body = serde_json::to_vec(&rec).map_err(|e| Error::encode("verify round", e))?;
    store
        .put(
            &names.round(),
            Bytes::from(layout.seal(&names.round(), body)?),
            true,
        )
        .await
        .ctx("storing the verify round")?;
    for (n, b) in cut.iter().enumerate() {
        let msg = VerifyMessage {
            v: VERIFY_VERSION,
            pipeline: p.name.clone(),
            run_id: run_id.to_string(),
            verify: Batch {
                snapshot: m.header.snapshot.clone(),
                round: round.clone(),
                batch: n,
                packs: b.packs.iter().map(|&i| m.packs[i].id.clone()).collect(),
                segments: (b.segments.start, b.segments.end),
                mode: mode_name.clone(),
                fraction,
                seed,
            },
        };
        let text = serde_json::to_string(&msg).map_err(|e| Error::encode("verify message", e))?;
        q.put(&text).await.ctx("enqueueing a verify batch")?;
    }
    tracing::info!(run_id, batches = cut.len(), "verify batches enqueued");
    Ok(Started {
        round,
        batches: cut.len(),
        started_at,
    })
}

/// `backup --workers N`: verify committed snapshot `m` of `run_id` with N worker
/// processes on the queue protocol, and merge their parts into the report a
/// single-process verify would store.
///
/// # Errors
/// `Source` naming the packs of dead-lettered batches; `Internal` when the workers exit
/// before every batch is checked; store and queue errors.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn verify_local(
    p: &super::Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    m: &Manifest,
    mode: VerifyMode,
    seed: u64,
    w: &LocalWorkers,
    cancel: &Cancel,
) -> Result<VerifyReport> {
    let m = Arc::new(m.clone());
    let (url, temp) = super::local_queue(w, run_id);
    let r = async {
        let q = queue::open(&url)?;
        let st = start_round(p, store, layout, run_id, &m, mode, seed, None, &*q).await?;
        let (codes, done) = super::run_workers(w, &url, run_id, cancel).await?;
        // What the split cost on the queue (the finalizer's puts included).
        let ops = st.batches as u64 + done.iter().map(|s| s.queue_ops).sum::<u64>();
        tracing::info!(
            run_id,
            batches = st.batches,
            packs = m.packs.len(),
            queue_ops = ops,
            redone = done.iter().map(|s| s.skipped_done).sum::<u64>(),
            "verify workers exited"
        );
        merge(
            store,
            layout,
            run_id,
            &st.round,
            &m,
            mode,
            seed,
            st.started_at,
            st.batches,
            &format!("the verify workers exited (codes {codes:?})"),
        )
        .await
    }
    .await;
    if let Some(t) = temp {
        let _ = std::fs::remove_dir_all(t);
    }
    r
}

/// A replica (`work`) committed `report`'s snapshot `m`: start its verification round on
/// the queue the replica works from, for every replica of the run to check. The round
/// record carries the report; the replica that finds the round complete merges it
/// ([`merge_replicas`]). Returns the number of batches.
///
/// # Errors
/// Store and queue errors storing the round or enqueueing its batches.
pub(super) async fn start_replica_round(
    p: &super::Pipeline,
    store: &Store,
    layout: &Layout,
    m: Manifest,
    report: &BackupReport,
    q: &dyn WorkQueue,
) -> Result<usize> {
    let seed = super::super::runner::verify_seed(p, &m);
    let m = Arc::new(m);
    let st = start_round(
        p,
        store,
        layout,
        &report.run_id,
        &m,
        p.verify.mode,
        seed,
        Some(report),
        q,
    )
    .await?;
    Ok(st.batches)
}

/// A committed run of replicas whose batches all have a part or a dead record: merge
/// its round into the verify report and the run's report, once. The merge runs under
/// the run lock and removes the round record before releasing it, so of two replicas
/// finishing together the second finds nothing to merge; a round whose merging replica
/// died stays, complete, for the next replica that looks.
///
/// # Errors
/// Lock and store errors (a round that cannot be merged is a run outcome, not an error:
/// `committed_unverified` naming the cause).
pub(super) async fn merge_replicas(
    store: &Store,
    layout: &Layout,
    run_id: &str,
    lock_ttl: std::time::Duration,
    cancel: &Cancel,
) -> Result<Merged> {
    let found = rounds(store, layout, run_id).await?;
    if found.iter().any(|(r, done)| *done < r.batches) {
        return Ok(Merged::Pending);
    }
    if found.is_empty() {
        // The committing replica holds the run lock from the commit until its round is
        // stored: while it does, the run's verification is still to come.
        match crate::manifest::lock::RunLock::acquire(
            store.clone(),
            layout,
            run_id,
            lock_ttl,
            false,
            cancel,
        )
        .await
        {
            Ok(l) => l.release().await,
            Err(e) if e.kind() == ErrorKind::Locked => return Ok(Merged::Pending),
            Err(e) => return Err(e),
        }
        if rounds(store, layout, run_id).await?.is_empty() {
            return Ok(Merged::Nothing);
        }
        return Box::pin(merge_replicas(store, layout, run_id, lock_ttl, cancel)).await;
    }
    if !found.iter().any(|(r, _)| r.replica.is_some()) {
        return Ok(Merged::Nothing);
    }
    let lock = crate::manifest::lock::RunLock::acquire(
        store.clone(),
        layout,
        run_id,
        lock_ttl,
        true,
        cancel,
    )
    .await?;
    let r = merge_replica_round(store, layout, run_id).await;
    lock.release().await;
    r
}

/// Under the run lock: merge the run's complete replica round, if it is still there.
async fn merge_replica_round(store: &Store, layout: &Layout, run_id: &str) -> Result<Merged> {
    let Some((rec, _)) = rounds(store, layout, run_id)
        .await?
        .into_iter()
        .find(|(r, done)| r.replica.is_some() && *done >= r.batches)
    else {
        return Ok(Merged::Nothing);
    };
    let Some(rr) = rec.replica else {
        return Ok(Merged::Nothing);
    };
    let mut report = rr.report;
    let checked = async {
        let mode = parse_mode(&rr.mode, rr.fraction)?;
        let m = Arc::new(
            crate::manifest::catalog::load_head(&**store, layout, &rec.snapshot)
                .await
                .ctx(format!("loading snapshot {}", rec.snapshot))?,
        );
        merge(
            store,
            layout,
            run_id,
            &rr.round,
            &m,
            mode,
            rr.seed,
            rec.started_at,
            rec.batches,
            "the replicas",
        )
        .await
    }
    .await;
    let mode = parse_mode(&rr.mode, rr.fraction).unwrap_or(VerifyMode::Full);
    super::super::runner::apply_verify(&mut report, mode, checked);
    // Merged (or failed for good: dead batches): the round is over either way.
    let name = Names::new(layout, run_id, &rr.round).round();
    match store.delete(&name).await {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e.context("removing a merged verify round")),
    }
    Ok(Merged::Report(Box::new(report)))
}

/// Merge a round's parts into the report (stored like any verify report).
#[allow(clippy::too_many_arguments)]
async fn merge(
    store: &Store,
    layout: &Layout,
    run_id: &str,
    round: &str,
    m: &Arc<Manifest>,
    mode: VerifyMode,
    seed: u64,
    started_at: DateTime<Utc>,
    batches: usize,
    who: &str,
) -> Result<VerifyReport> {
    let names = Names::new(layout, run_id, round);
    let mut checked = PacksChecked::default();
    let mut dead = Vec::new();
    let mut missing = 0usize;
    for n in 0..batches {
        match store.get(&names.part(n), None).await {
            Ok(b) => checked.merge(super::un_gz_json(
                &names.part(n),
                &layout.open(&names.part(n), b)?,
            )?),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match store.get(&names.dead(n), None).await {
                    Ok(b) => dead.push(
                        serde_json::from_slice::<DeadBatch>(&layout.open(&names.dead(n), b)?)
                            .map_err(|e| Error::decode(names.dead(n), e))?,
                    ),
                    Err(e) if e.kind() == ErrorKind::NotFound => missing += 1,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    if !dead.is_empty() {
        let named: Vec<String> = dead
            .iter()
            .map(|d| {
                format!(
                    "batch {} (packs {}) after {} attempts{}",
                    d.batch,
                    d.packs.join(", "),
                    d.attempts,
                    d.last_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        return Err(Error::new(
            ErrorKind::Source,
            format!(
                "verification of {}: {} batch(es) dead-lettered: {}",
                m.header.snapshot,
                dead.len(),
                named.join("; ")
            ),
        ));
    }
    if missing > 0 {
        return Err(Error::internal(format!(
            "{who}: {missing} of {batches} verify batches unchecked"
        )));
    }
    let report = verify::finish_report(store, layout, m, mode, seed, started_at, checked).await?;
    // The round is over: workers of the run stop waiting for it.
    if let Err(e) = store.delete(&names.round()).await {
        tracing::warn!("could not remove {}: {e}", names.round());
    }
    Ok(report)
}

impl Worker<'_> {
    /// One verify batch: check its packs, store the part (create-only), delete the
    /// message; a batch already stored is only deleted, one tried too often dead-lettered.
    pub(super) async fn handle_verify(&self, m: Received, msg: VerifyMessage) -> Result<()> {
        let foreign = self.opts.run_id.as_ref().is_some_and(|r| *r != msg.run_id);
        let Some(p) = self.pipeline(&msg.pipeline).filter(|_| !foreign) else {
            self.n.released_foreign.fetch_add(1, Ordering::Relaxed);
            return self.release(&m).await;
        };
        let b = &msg.verify;
        // The repo carries the data key of an `[encryption]` pipeline: sealed packs open.
        let repo = self.repo_for(p).await?;
        let (store, layout) = (repo.store.clone(), repo.layout.clone());
        if ![&msg.run_id, &b.round, &b.snapshot]
            .iter()
            .all(|x| ids::is_safe_segment(x))
        {
            tracing::error!(message = %m.id, "verify message with an unsafe id: dead-lettered");
            self.op();
            self.queue.dead_letter(&m).await?;
            self.n.dead_lettered.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let names = Names::new(&layout, &msg.run_id, &b.round);
        let part = names.part(b.batch);
        if store.head(&part).await?.is_some() {
            self.n.skipped_done.fetch_add(1, Ordering::Relaxed);
            self.op();
            return self.queue.delete(&m).await;
        }
        let attempts = store::list_all(&*store, &names.attempts(b.batch))
            .await?
            .len() as u32;
        if attempts >= self.opts.max_dequeue {
            let last_error = store
                .get(&names.error(b.batch), None)
                .await
                .ok()
                .and_then(|e| layout.open(&names.error(b.batch), e).ok())
                .map(|e| String::from_utf8_lossy(&e).into_owned());
            let rec = DeadBatch {
                batch: b.batch,
                packs: b.packs.clone(),
                attempts,
                last_error,
                at: Utc::now(),
            };
            let body = serde_json::to_vec_pretty(&rec).map_err(|e| Error::encode("dead", e))?;
            store
                .put(
                    &names.dead(b.batch),
                    Bytes::from(layout.seal(&names.dead(b.batch), body)?),
                    false,
                )
                .await
                .ctx("storing the dead-letter record of a verify batch")?;
            self.op();
            self.queue.dead_letter(&m).await?;
            self.n.dead_lettered.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                run_id = %msg.run_id,
                batch = b.batch,
                "verify batch dead-lettered after {attempts} attempts (packs {})",
                b.packs.join(", ")
            );
            return Ok(());
        }
        // The marker names the message and the process that tried it.
        let marker = format!("{}{:03}", names.attempts(b.batch), attempts + 1);
        let who = format!("{} pid={}", m.id, std::process::id());
        match store.put(&marker, Bytes::from(who), true).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(e.context("marking a verify attempt")),
        }
        let held = self.hold(m);
        let r = check_batch(p, &store, &layout, b).await;
        let m = held.release().await;
        match r {
            Ok(checked) => {
                let body = layout.seal(&part, super::gz_json(&checked)?.to_vec())?;
                match store.put(&part, Bytes::from(body), true).await {
                    Ok(_) => {}
                    // A duplicate delivery stored it first: same packs, same checks.
                    Err(e) if e.kind() == ErrorKind::Conflict => {}
                    Err(e) => return Err(e.context("storing a verify part")),
                }
                self.n.processed.fetch_add(1, Ordering::Relaxed);
                self.op();
                self.queue.delete(&m).await
            }
            Err(e) if e.kind() == ErrorKind::Cancelled => Err(e),
            Err(e) => {
                tracing::error!(run_id = %msg.run_id, batch = b.batch, "verify batch failed: {e}");
                self.retry_later(&store, &layout, &names.error(b.batch), &m, &e)
                    .await
            }
        }
    }
}

/// Check one batch's packs with verify's own pack checks.
async fn check_batch(
    p: &super::Pipeline,
    store: &Store,
    layout: &Layout,
    b: &Batch,
) -> Result<PacksChecked> {
    let mode = b.mode()?;
    let m = Arc::new(
        crate::manifest::catalog::load_head(&**store, layout, &b.snapshot)
            .await
            .ctx(format!("loading snapshot {}", b.snapshot))?,
    );
    let mut packs = Vec::with_capacity(b.packs.len());
    for id in &b.packs {
        let i = m.packs.iter().position(|x| x.id == *id).ok_or_else(|| {
            Error::integrity(format!(
                "verify message names pack {id}, which snapshot {} does not list",
                b.snapshot
            ))
        })?;
        packs.push(i);
    }
    packs.sort_unstable();
    let sel = PackSelection {
        packs,
        segments: b.segments.0..b.segments.1,
    };
    verify::check_packs(
        store,
        layout,
        &m,
        mode,
        b.seed,
        &p.upload,
        Arc::default(),
        Some(&sel),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_and_partition_messages_are_told_apart() {
        let v = r#"{"v":1,"pipeline":"p","run_id":"r","verify":{"snapshot":"s","round":"x","batch":2,"packs":["a"],"segments":[0,1],"mode":"full","fraction":null,"seed":7}}"#;
        assert_eq!(parse(v).map(|m| m.verify.batch), Some(2));
        let w = r#"{"v":1,"pipeline":"p","run_id":"r","partition":0,"digest":"d"}"#;
        assert!(parse(w).is_none());
    }
}
