//! One backup run: plan → partitions → bounded channel → uploaders → commit → verify.
//!
//! ```text
//!  plan (walk) ──> partition workers (max_parallel, blocking threads: read + tar + compress)
//!                        │ sealed blocks
//!                        ▼
//!                 bounded channel (channel_capacity blocks)  ← backpressure
//!                        │
//!                        ▼
//!                 uploaders (concurrency tasks: stage block with MD5)
//! ```
//!
//! Compression happens in the partition workers, before the channel: a pack's frames are
//! produced in order by one thread, with no reorder buffer, and `max_parallel` workers
//! keep every core compressing. Memory is bounded by configuration: each worker holds one
//! frame and at most one block, the channel `channel_capacity` blocks and the uploaders
//! `concurrency` blocks — never by data size.
//!
//! A partition ends by waiting for its blocks, committing its packs (create-only) and
//! writing its part record. The manifest is written after every partition has a part
//! record, create-only: a snapshot exists iff its manifest exists. A rerun with the same
//! run id reuses the stored plan, skips partitions with part records, and skips blocks
//! the store already holds uncommitted for a pack (pack and block ids are deterministic).

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::spec::{Pipeline, SourceConfig, VerifyMode};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::extract::{self, Plan, PlannedEntry, Problem};
use crate::manifest::layout::Layout;
use crate::manifest::records::RunStatus;
use crate::manifest::{
    self, Entry, EntryKind, Header, Line, Manifest, PackRecord, PartHeader, PathBytes, Totals,
};
use crate::pack::tarball::{self, HeaderMeta};
use crate::pack::{BlockSink, BlockSizer, FrameCompressor, PackWriter, SealedBlock};
use crate::store::{self, CommitOptions, Store};
use crate::support::cancel::Cancel;
use crate::support::ids;
use crate::support::progress::Counters;
use crate::verify::{self, VerifyReport};

/// Options of one backup run beyond the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Run id (resume a run by passing its id again). Default: a fresh id.
    pub run_id: Option<String>,
    /// Skip the verification after commit.
    pub no_verify: bool,
    /// Wait for the run lock instead of failing fast.
    pub wait_lock: bool,
    /// Read everything (a full backup) even if an incremental is possible.
    pub full: bool,
    /// Cancellation.
    pub cancel: Cancel,
    /// Progress counters to update.
    pub counters: Option<Arc<Counters>>,
}

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
}

/// What a backup run reports (also stored as the run record).
#[derive(Debug, Clone, Serialize)]
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
}

pub(super) struct UploadJob {
    blob: String,
    block: SealedBlock,
    done: oneshot::Sender<Result<()>>,
}

/// Everything a partition worker needs, shared.
pub(super) struct Ctx {
    pub(super) pipeline: Pipeline,
    pub(super) layout: Layout,
    pub(super) run_id: String,
    pub(super) store: Store,
    pub(super) tx: mpsc::Sender<UploadJob>,
    pub(super) cancel: Cancel,
    pub(super) counters: Arc<Counters>,
    pub(super) stats: Arc<Stats>,
    pub(super) rt: tokio::runtime::Handle,
    /// Open source session of a database or command source (the exported snapshot and
    /// the work items); `None` for the filesystem.
    pub(super) session: Option<Arc<extract::Session>>,
    /// The incremental parent, when unchanged entries may be reused.
    pub(super) reuse: Option<Arc<Manifest>>,
}

/// The result of one partition (what its part record holds).
#[derive(Debug, Clone, Default)]
pub(super) struct PartResult {
    pub(super) packs: Vec<PackRecord>,
    pub(super) entries: Vec<Entry>,
    pub(super) problems: Vec<Problem>,
    pub(super) tables: Vec<manifest::TableRecord>,
    pub(super) streams: Vec<manifest::StreamRecord>,
}

/// Run a backup of `p` into `store`.
///
/// # Errors
/// `Config`/`Source` when the source cannot be planned, `Locked` when another run holds
/// the lock, `Cancelled` on a signal, `Store` when the store fails beyond retries. A
/// committed snapshot with unreadable files is not an error: the report says `partial`.
pub async fn backup(p: &Pipeline, store: Store, opts: BackupOptions) -> Result<BackupReport> {
    let started_at = Utc::now();
    let run_id = opts
        .run_id
        .clone()
        .unwrap_or_else(|| ids::run_id(started_at));
    if !ids::is_safe_segment(&run_id) {
        return Err(Error::config(format!(
            "invalid run id {run_id:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    let layout = Layout::new(&p.target.prefix);
    let lock = super::lock::RunLock::acquire(
        store.clone(),
        &layout,
        &run_id,
        p.lock_ttl,
        opts.wait_lock,
        &opts.cancel,
    )
    .await?;
    let mut result = run(p, store.clone(), &layout, &run_id, started_at, &opts).await;
    if lock.lost() {
        if let Err(e) = &result {
            if e.kind() == ErrorKind::Cancelled {
                result = Err(Error::new(
                    ErrorKind::Locked,
                    "the run lock could not be renewed, so the run stopped before committing (rerun with the same --run-id to resume)",
                ));
            }
        }
    }
    lock.release().await;
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            let status = if e.kind() == ErrorKind::Cancelled {
                RunStatus::Cancelled
            } else {
                RunStatus::Failed
            };
            let report = BackupReport {
                pipeline: p.name.clone(),
                run_id: run_id.clone(),
                status,
                snapshot: None,
                started_at,
                finished_at: Utc::now(),
                totals: Totals::default(),
                kind: String::new(),
                parent: None,
                changes: None,
                files_read: 0,
                partitions: 0,
                partitions_resumed: 0,
                blocks_staged: 0,
                blocks_reused: 0,
                max_inflight_blocks: 0,
                retries: store.retries(),
                problems: vec![],
                inconsistent: vec![],
                verify: None,
                error: Some(e.to_string()),
                alerts: vec![],
            };
            let mut report = report;
            report.alerts = crate::alert::on_run(p, &report).await;
            write_run_record(&*store, &layout, &report).await;
            return Err(e.context(format!("run {run_id}")));
        }
    };
    report.finished_at = Utc::now();
    report.alerts = crate::alert::on_run(p, &report).await;
    write_run_record(&*store, &layout, &report).await;
    if report.status == RunStatus::Ok && p.retention.as_ref().is_some_and(|r| r.auto) {
        crate::retention::after_backup(p, &store, &report).await;
    }
    Ok(report)
}

async fn write_run_record(store: &dyn store::BlobStore, layout: &Layout, report: &BackupReport) {
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

type Planned = (Plan, bool, Option<Arc<extract::Session>>);

async fn load_or_make_plan(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    started_at: DateTime<Utc>,
    full: bool,
) -> Result<Planned> {
    if p.source.is_streamed() {
        // A database or command source is planned afresh by every attempt: a new
        // attempt reads a new snapshot, so nothing of an earlier one may be reused.
        let (plan, session) = extract::Session::open(&p.source, p.partitions.count).await?;
        return Ok((plan, false, Some(Arc::new(session))));
    }
    let name = layout.plan(run_id);
    match store.get(&name, None).await {
        Ok(bytes) => {
            let mut s = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut s)
                .map_err(|e| Error::integrity(format!("plan {name}: {e}")))?;
            let plan: Plan = serde_json::from_slice(&s)?;
            return Ok((plan, true, None));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e.context(format!("reading plan {name}"))),
    }
    // Incremental or full: decided once per run and stored with the plan, so every
    // attempt of the run agrees.
    let latest = match crate::manifest::catalog::resolve(&**store, layout, "latest").await {
        Ok(id) => Some(
            crate::manifest::catalog::load(&**store, layout, &id)
                .await?
                .header,
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let (reuse, chain, full_at) = match &latest {
        Some(h) if p.incremental.enabled && !full => {
            let chain_full = h.full_at.unwrap_or(h.started_at);
            let due = match p.incremental.full_every {
                super::spec::FullEvery::Never => false,
                super::spec::FullEvery::Count(n) => h.chain + 1 > n,
                super::spec::FullEvery::Age(d) => {
                    started_at
                        .signed_duration_since(chain_full)
                        .to_std()
                        .unwrap_or_default()
                        >= d
                }
            };
            if due {
                (false, 0, started_at)
            } else {
                (true, h.chain + 1, chain_full)
            }
        }
        _ => (false, 0, started_at),
    };
    let SourceConfig::Fs(fs) = p.source.clone() else {
        return Err(Error::internal(
            "filesystem plan for a non-filesystem source",
        ));
    };
    let count = p.partitions.count;
    let mut plan = tokio::task::spawn_blocking(move || extract::fs::plan(&fs, count))
        .await
        .map_err(|e| Error::internal(format!("planning task: {e}")))??;
    plan.started_at = Some(started_at);
    plan.parent = latest.map(|h| h.snapshot);
    plan.reuse = reuse;
    plan.chain = chain;
    plan.full_at = Some(full_at);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    serde_json::to_writer(&mut gz, &plan).map_err(|e| Error::encode("encoding plan", e))?;
    let body = gz
        .finish()
        .map_err(|e| Error::internal(format!("encoding plan: {e}")))?;
    store
        .put(&name, Bytes::from(body), true)
        .await
        .ctx("storing the run plan")?;
    Ok((plan, false, None))
}

async fn already_committed(
    store: &Store,
    layout: &Layout,
    snapshot: &str,
) -> Result<Option<Header>> {
    if store.head(&layout.snapshot(snapshot)).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(
        crate::manifest::catalog::load(&**store, layout, snapshot)
            .await?
            .header,
    ))
}

async fn load_part(store: &Store, name: &str) -> Result<(PartHeader, PartResult)> {
    let bytes = store.get(name, None).await?;
    let mut header = None;
    let mut r = PartResult::default();
    for l in manifest::decode(&bytes)? {
        match l {
            Line::Part(h) => header = Some(h),
            Line::Pack(p) => r.packs.push(p),
            Line::Entry(e) => r.entries.push(e),
            Line::Table(t) => r.tables.push(t),
            Line::Stream(s) => r.streams.push(s),
            Line::Header(_) => {
                return Err(Error::integrity(format!(
                    "{name}: manifest header in a part record"
                )))
            }
        }
    }
    let h =
        header.ok_or_else(|| Error::integrity(format!("{name}: part record without header")))?;
    Ok((h, r))
}

async fn run(
    p: &Pipeline,
    store: Store,
    layout: &Layout,
    run_id: &str,
    started_at: DateTime<Utc>,
    opts: &BackupOptions,
) -> Result<BackupReport> {
    let cancel = opts.cancel.clone();
    let counters = opts.counters.clone().unwrap_or_default();
    let stats = Arc::new(Stats::default());
    let (plan, resumed, session) =
        load_or_make_plan(p, &store, layout, run_id, started_at, opts.full).await?;
    let started_at = plan.started_at.unwrap_or(started_at);
    let snapshot = ids::snapshot_id_for(started_at, run_id);
    if let Some(done) = already_committed(&store, layout, &snapshot).await? {
        tracing::info!(
            snapshot,
            "run {run_id} already committed this snapshot; nothing to do"
        );
        return Ok(BackupReport {
            pipeline: p.name.clone(),
            run_id: run_id.to_string(),
            status: RunStatus::Ok,
            snapshot: Some(snapshot),
            started_at,
            finished_at: Utc::now(),
            totals: done.totals.clone(),
            kind: if done.chain == 0 {
                "full"
            } else {
                "incremental"
            }
            .into(),
            parent: done.parent.clone(),
            changes: done.changes.clone(),
            files_read: 0,
            partitions: plan.partitions.len(),
            partitions_resumed: plan.partitions.len(),
            blocks_staged: 0,
            blocks_reused: 0,
            max_inflight_blocks: 0,
            retries: 0,
            problems: vec![],
            inconsistent: vec![],
            verify: None,
            error: None,
            alerts: vec![],
        });
    }
    let parent: Option<Arc<Manifest>> = match &plan.parent {
        Some(id) => Some(Arc::new(
            crate::manifest::catalog::load(&*store, layout, id)
                .await
                .ctx("loading the parent snapshot")?,
        )),
        None => None,
    };
    tracing::info!(
        run_id,
        resumed,
        partitions = plan.partitions.len(),
        entries = plan.total_entries(),
        bytes = plan.total_bytes(),
        "planned"
    );
    counters.set_total(plan.total_entries() as u64, plan.total_bytes());

    // Partitions finished by an earlier attempt of this run.
    let mut done: Vec<Option<PartResult>> = vec![None; plan.partitions.len()];
    let mut problems = plan.problems.clone();
    let earlier = if session.is_some() {
        Vec::new() // streamed sources never reuse part records (see load_or_make_plan)
    } else {
        store::list_all(&*store, &layout.parts(run_id)).await?
    };
    for item in earlier {
        if !item.name.ends_with(".jsonl.gz") {
            continue;
        }
        let (h, r) = load_part(&store, &item.name).await?;
        if h.partition < done.len() {
            counters.add(
                r.entries.len() as u64,
                r.entries.iter().map(|e| e.size).sum(),
            );
            problems.extend(h.unreadable.iter().map(|path| Problem {
                path: path.clone(),
                error: "unreadable (earlier attempt)".into(),
            }));
            done[h.partition] = Some(r);
        }
    }
    let partitions_resumed = done.iter().filter(|d| d.is_some()).count();

    // Uploaders.
    let (tx, rx) = mpsc::channel::<UploadJob>(p.upload.channel_capacity);
    let rx = Arc::new(Mutex::new(rx));
    let mut uploaders = Vec::new();
    for _ in 0..p.upload.concurrency {
        let rx = rx.clone();
        let store = store.clone();
        let stats = stats.clone();
        let counters = counters.clone();
        let cancel = cancel.clone();
        uploaders.push(tokio::spawn(async move {
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let len = job.block.data.len() as u64;
                let r = if cancel.is_cancelled() {
                    Err(Error::cancelled())
                } else {
                    store
                        .stage_block(&job.blob, &job.block.id, job.block.data, job.block.md5)
                        .await
                        .ctx(format!("staging block {} of {}", job.block.index, job.blob))
                };
                stats.inflight_blocks.fetch_sub(1, Ordering::SeqCst);
                if r.is_ok() {
                    stats.blocks_staged.fetch_add(1, Ordering::Relaxed);
                    counters.bytes_transferred.fetch_add(len, Ordering::Relaxed);
                }
                let _ = job.done.send(r);
            }
        }));
    }

    let ctx = Arc::new(Ctx {
        pipeline: p.clone(),
        layout: layout.clone(),
        run_id: run_id.to_string(),
        store: store.clone(),
        tx,
        cancel: cancel.clone(),
        counters: counters.clone(),
        stats: stats.clone(),
        rt: tokio::runtime::Handle::current(),
        reuse: parent.clone().filter(|_| plan.reuse),
        session,
    });

    // Partition workers, at most max_parallel at once. After a permanent failure no new
    // partition starts, but running ones finish and keep their part records, so a rerun
    // with the same run id has less to do.
    let sem = Arc::new(tokio::sync::Semaphore::new(p.partitions.max_parallel));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let plan = Arc::new(plan);
    let mut tasks = tokio::task::JoinSet::new();
    for (idx, finished) in done.iter().enumerate() {
        if finished.is_some() {
            continue;
        }
        let (ctx, sem, plan, failing) = (ctx.clone(), sem.clone(), plan.clone(), failing.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|_| Error::cancelled())?;
            if failing.load(Ordering::SeqCst) || ctx.cancel.is_cancelled() {
                return Ok(None);
            }
            let r = run_partition_with_retries(ctx, plan, idx).await;
            if r.is_err() {
                failing.store(true, Ordering::SeqCst);
            }
            r.map(|r| Some((idx, r)))
        });
    }
    let mut first_err: Option<Error> = None;
    while let Some(j) = tasks.join_next().await {
        let e = match j {
            Ok(Ok(Some((idx, r)))) => {
                done[idx] = Some(r);
                continue;
            }
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => e,
            Err(e) => Error::internal(format!("partition task panicked: {e}")),
        };
        // Keep the most telling error: a real cause beats a cancellation.
        if first_err
            .as_ref()
            .is_none_or(|f| f.kind() == ErrorKind::Cancelled)
        {
            if e.kind() != ErrorKind::Cancelled {
                tracing::error!("{e}");
            }
            first_err = Some(e);
        }
    }
    drop(ctx);
    for u in uploaders {
        let _ = u.await;
    }
    if let Some(e) = first_err {
        // A failure caused by our own cancellation is reported as the original cause.
        return Err(e);
    }
    if opts.cancel.is_cancelled() {
        return Err(Error::cancelled());
    }

    // Commit: merge part results in partition (= path) order.
    let mut packs = Vec::new();
    let mut entries = Vec::new();
    let mut tables = Vec::new();
    let mut streams = Vec::new();
    for r in done.into_iter().flatten() {
        packs.extend(r.packs);
        entries.extend(r.entries);
        problems.extend(r.problems);
        tables.extend(r.tables);
        streams.extend(r.streams);
    }
    let tables = manifest::merge_tables(tables);
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|b, a| a.path == b.path);
    // Reused entries point into the parent's packs: carry those pack records over, so
    // the manifest stays complete and restores on its own.
    if let Some(parent) = parent.as_ref().filter(|_| plan.reuse) {
        let have: HashSet<String> = packs.iter().map(|p: &PackRecord| p.id.clone()).collect();
        let needed: HashSet<&str> = entries.iter().filter_map(|e| e.pack.as_deref()).collect();
        for pk in &parent.packs {
            if needed.contains(pk.id.as_str()) && !have.contains(&pk.id) {
                packs.push(pk.clone());
            }
        }
    }
    let changes = parent
        .as_ref()
        .map(|pm| manifest::Changes::between(&pm.entries, &entries));
    let mut totals = Totals::default();
    for e in &entries {
        match e.kind {
            EntryKind::File => {
                totals.files += 1;
                totals.bytes += e.size;
            }
            EntryKind::Dir => totals.dirs += 1,
            EntryKind::Symlink => totals.symlinks += 1,
        }
        if e.inconsistent {
            totals.inconsistent += 1;
        }
    }
    totals.packs = packs.len() as u64;
    totals.stored_bytes = packs.iter().map(|p| p.size).sum();
    totals.unreadable = problems.len() as u64;
    let inconsistent: Vec<PathBytes> = entries
        .iter()
        .filter(|e| e.inconsistent)
        .map(|e| e.path.clone())
        .collect();
    let m = Manifest {
        header: Header {
            format: manifest::FORMAT_VERSION,
            pipeline: p.name.clone(),
            snapshot: snapshot.clone(),
            run_id: run_id.to_string(),
            started_at,
            committed_at: Utc::now(),
            parent: plan.parent.clone().filter(|_| plan.reuse),
            source: plan.source.clone(),
            codec: p.compression.codec,
            totals: totals.clone(),
            unreadable: problems.iter().map(|x| x.path.clone()).collect(),
            chain: plan.chain,
            full_at: plan.full_at,
            changes: changes.clone(),
        },
        packs,
        entries,
        tables,
        streams,
    };
    let body = m.to_bytes()?;
    store
        .put(&layout.snapshot(&snapshot), Bytes::from(body), true)
        .await
        .ctx("committing the manifest")?;
    tracing::info!(
        snapshot,
        files = totals.files,
        bytes = totals.bytes,
        stored = totals.stored_bytes,
        "committed"
    );

    let verify = if opts.no_verify || !p.verify.after_backup {
        None
    } else {
        let mode = p.verify.mode;
        let r = verify::verify(&store, layout, &m, mode, p.verify.seed, &p.upload, None).await?;
        Some(r)
    };
    let status = match &verify {
        Some(v) if !v.ok() => RunStatus::Mismatch,
        _ if !problems.is_empty() || totals.inconsistent > 0 => RunStatus::Partial,
        _ => RunStatus::Ok,
    };
    Ok(BackupReport {
        pipeline: p.name.clone(),
        run_id: run_id.to_string(),
        status,
        snapshot: Some(snapshot),
        started_at,
        finished_at: Utc::now(),
        totals,
        kind: if plan.reuse { "incremental" } else { "full" }.into(),
        parent: plan.parent.clone().filter(|_| plan.reuse),
        changes,
        files_read: stats.files_read.load(Ordering::Relaxed),
        partitions: plan.partitions.len(),
        partitions_resumed,
        blocks_staged: stats.blocks_staged.load(Ordering::Relaxed),
        blocks_reused: stats.blocks_reused.load(Ordering::Relaxed),
        max_inflight_blocks: stats.max_inflight_blocks.load(Ordering::Relaxed),
        retries: store.retries() + stats.partition_retries.load(Ordering::Relaxed),
        problems,
        inconsistent,
        verify,
        error: None,
        alerts: vec![],
    })
}

impl VerifyMode {
    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            VerifyMode::Metadata => "metadata",
            VerifyMode::Sample(_) => "sample",
            VerifyMode::Full => "full",
        }
    }
}

async fn run_partition_with_retries(
    ctx: Arc<Ctx>,
    plan: Arc<Plan>,
    idx: usize,
) -> Result<PartResult> {
    let retry = ctx.pipeline.retry;
    let mut attempt = 0u32;
    let mut backoff = retry.initial_backoff;
    let deadline = tokio::time::Instant::now() + retry.budget;
    loop {
        attempt += 1;
        let c = ctx.clone();
        let pl = plan.clone();
        let r = tokio::task::spawn_blocking(move || {
            run_partition(&c, &pl.partitions[idx], idx, attempt)
        })
        .await
        .map_err(|e| Error::internal(format!("partition {idx} worker: {e}")))?;
        match r {
            Ok(r) => return Ok(r),
            Err(e)
                if e.is_retryable()
                    && attempt < retry.attempts
                    && !ctx.cancel.is_cancelled()
                    && tokio::time::Instant::now() + backoff < deadline =>
            {
                ctx.stats.partition_retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "partition {idx} attempt {attempt} failed, retrying in {backoff:?}: {e}"
                );
                let jitter = Duration::from_millis(
                    u64::from_str_radix(&ids::random_hex(2), 16).unwrap_or(0)
                        % (backoff.as_millis() as u64 + 1),
                );
                tokio::time::sleep(jitter).await;
                backoff = (backoff * 2).min(retry.max_backoff);
            }
            Err(e) => return Err(e.context(format!("partition {idx}"))),
        }
    }
}

/// Sends sealed blocks to the uploaders, skipping blocks already staged.
pub(super) struct ChannelSink {
    blob: String,
    tx: mpsc::Sender<UploadJob>,
    acks: Vec<oneshot::Receiver<Result<()>>>,
    already: HashSet<String>,
    stats: Arc<Stats>,
    cancel: Cancel,
}

impl BlockSink for ChannelSink {
    fn send(&mut self, block: SealedBlock) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        // Forget finished uploads; surface a failed one now, not at the end of the pack.
        let mut failed = None;
        self.acks.retain_mut(|a| match a.try_recv() {
            Ok(Ok(())) => false,
            Ok(Err(e)) => {
                failed.get_or_insert(e);
                false
            }
            Err(oneshot::error::TryRecvError::Empty) => true,
            Err(oneshot::error::TryRecvError::Closed) => {
                failed.get_or_insert(Error::cancelled());
                false
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if self.already.contains(&block.id) {
            self.stats.blocks_reused.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let n = self.stats.inflight_blocks.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats
            .max_inflight_blocks
            .fetch_max(n, Ordering::SeqCst);
        let (done, rx) = oneshot::channel();
        self.acks.push(rx);
        self.tx
            .blocking_send(UploadJob {
                blob: self.blob.clone(),
                block,
                done,
            })
            .map_err(|_| {
                self.stats.inflight_blocks.fetch_sub(1, Ordering::SeqCst);
                Error::cancelled()
            })
    }
}

pub(super) struct OpenPack {
    pub(super) id: String,
    rel: String,
    pub(super) blob: String,
    pub(super) builder: tar::Builder<PackWriter<ChannelSink>>,
}

pub(super) fn open_pack(
    ctx: &Ctx,
    partition: usize,
    seq: usize,
    attempt: u32,
    size_hint: u64,
) -> Result<OpenPack> {
    let p = &ctx.pipeline;
    // Deterministic ids: a rerun of the same run writes the same pack names and block ids,
    // so blocks an earlier attempt staged are found and not uploaded again.
    let mut salt = 0u32;
    let (id, rel, blob, already) = loop {
        let seed = format!("{}/{}/{partition}/{seq}/{salt}", p.name, ctx.run_id);
        let id = hex::encode(&Sha256::digest(seed.as_bytes())[..16]);
        let rel = Layout::pack_rel(&id, p.compression.codec);
        let blob = ctx.layout.full(&rel);
        let head = ctx.rt.block_on(ctx.store.head(&blob))?;
        if head.is_some() {
            // Committed by an earlier attempt that died before its part record: that
            // pack is orphaned (prune removes it); write a fresh one.
            salt += 1;
            continue;
        }
        let bl = ctx.rt.block_on(ctx.store.block_list(&blob))?;
        let already: HashSet<String> = bl.uncommitted.into_iter().map(|b| b.id).collect();
        break (id, rel, blob, already);
    };
    let _ = attempt;
    let sink = ChannelSink {
        blob: blob.clone(),
        tx: ctx.tx.clone(),
        acks: Vec::new(),
        already,
        stats: ctx.stats.clone(),
        cancel: ctx.cancel.clone(),
    };
    let writer = PackWriter::new(
        FrameCompressor::new(p.compression.codec, p.compression.level)?,
        p.compression.frame_size,
        BlockSizer::new(p.upload.block_size, Some(size_hint)),
        sink,
    );
    let mut builder = tar::Builder::new(writer);
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    Ok(OpenPack {
        id,
        rel,
        blob,
        builder,
    })
}

pub(super) fn close_pack(ctx: &Ctx, pack: OpenPack) -> Result<PackRecord> {
    let p = &ctx.pipeline;
    let w = tarball::finish(pack.builder).map_err(|e| io_to_err(e, &pack.blob))?;
    let (sum, sink) = w.finish()?;
    for a in sink.acks {
        a.blocking_recv().map_err(|_| Error::cancelled())??;
    }
    let ids: Vec<String> = sum.blocks.iter().map(|b| b.id.clone()).collect();
    let mut opts = CommitOptions {
        tier: p.target.tier,
        content_md5: Some(sum.md5),
        create_only: true,
        ..Default::default()
    };
    opts.metadata.insert("pipeline".into(), p.name.clone());
    opts.metadata.insert("run_id".into(), ctx.run_id.clone());
    opts.metadata
        .insert("format".into(), manifest::FORMAT_VERSION.to_string());
    opts.metadata
        .insert("codec".into(), p.compression.codec.as_str().into());
    opts.tags.insert("blobpipe-kind".into(), "pack".into());
    opts.tags.insert("pipeline".into(), p.name.clone());
    ctx.rt
        .block_on(ctx.store.commit_blocks(&pack.blob, &ids, &opts))
        .ctx(format!("committing pack {}", pack.blob))?;
    Ok(PackRecord {
        id: pack.id,
        blob: pack.rel,
        codec: p.compression.codec,
        size: sum.size,
        raw_size: sum.raw_size,
        md5: store::b64(&sum.md5),
        tier: p.target.tier,
        frames: sum.frames,
        blocks: sum.blocks,
    })
}

pub(super) fn io_to_err(e: std::io::Error, what: &str) -> Error {
    // Errors from the sink are carried as io::Error text; a cancelled sink reads so.
    if e.to_string().contains("cancelled") {
        Error::cancelled()
    } else {
        Error::caused(ErrorKind::Store, format!("writing {what}"), e).retryable()
    }
}

/// Extract, pack and store one partition; write its part record.
fn run_partition(
    ctx: &Ctx,
    planned: &[PlannedEntry],
    idx: usize,
    attempt: u32,
) -> Result<PartResult> {
    let fs = match (&ctx.pipeline.source, &ctx.session) {
        (_, Some(session)) => return super::streamed::run_partition(ctx, session, idx, attempt),
        (SourceConfig::Fs(fs), None) => fs,
        _ => return Err(Error::internal("no source session for a streamed source")),
    };
    let pack_size = ctx.pipeline.upload.pack_size;
    let large = (pack_size / 2).max(1);
    let mut result = PartResult::default();
    let mut cur: Option<OpenPack> = None;
    let mut seq = 0usize;
    let remaining_hint = |from: usize| -> u64 {
        planned[from..]
            .iter()
            .map(|e| e.size + 1024)
            .sum::<u64>()
            .min(pack_size + (pack_size / 4))
    };
    for (i, pe) in planned.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        let path = &pe.path;
        let abs = extract::fs::abs(&fs.root, path);
        let st = match std::fs::symlink_metadata(&abs) {
            Ok(m) => extract::fs::Stat::from_meta(&m),
            Err(e) => {
                result.problems.push(Problem {
                    path: path.clone(),
                    error: format!("cannot stat: {e}"),
                });
                continue;
            }
        };
        let Some(kind) = st.kind else { continue };
        if let Some(prev) = ctx
            .reuse
            .as_deref()
            .and_then(|m| unchanged(m, path, kind, &st, &abs))
        {
            ctx.counters.add(1, prev.size);
            result.entries.push(prev);
            continue;
        }
        let is_large = kind == EntryKind::File && st.size >= large;
        if is_large {
            if let Some(pk) = cur.take() {
                result.packs.push(close_pack(ctx, pk)?);
            }
        }
        if cur.is_none() {
            let hint = if is_large {
                st.size + 4096
            } else {
                remaining_hint(i)
            };
            cur = Some(open_pack(ctx, idx, seq, attempt, hint)?);
            seq += 1;
        }
        let pk = cur
            .as_mut()
            .ok_or_else(|| Error::internal("no open pack"))?;
        let meta = HeaderMeta {
            mode: st.mode,
            mtime: st.mtime,
            uid: st.uid,
            gid: st.gid,
        };
        let mut entry = Entry {
            path: path.clone(),
            kind,
            size: 0,
            mode: st.mode,
            mtime: st.mtime,
            mtime_nsec: st.mtime_nsec,
            uid: st.uid,
            gid: st.gid,
            sha256: None,
            target: None,
            pack: Some(pk.id.clone()),
            offset: 0,
            data_offset: 0,
            inconsistent: false,
            ino: Some(st.ino),
            ctime: Some(st.ctime),
        };
        match kind {
            EntryKind::Dir => {
                let placed = tarball::append_dir(&mut pk.builder, path, &meta)
                    .map_err(|e| io_to_err(e, &pk.blob))?;
                entry.offset = placed.offset;
                entry.data_offset = placed.data_offset;
            }
            EntryKind::Symlink => {
                let target = match std::fs::read_link(&abs) {
                    Ok(t) => PathBytes(t.as_os_str().as_bytes().to_vec()),
                    Err(e) => {
                        result.problems.push(Problem {
                            path: path.clone(),
                            error: format!("cannot read link: {e}"),
                        });
                        continue;
                    }
                };
                let placed = tarball::append_symlink(&mut pk.builder, path, &target, &meta)
                    .map_err(|e| io_to_err(e, &pk.blob))?;
                entry.offset = placed.offset;
                entry.data_offset = placed.data_offset;
                entry.target = Some(target);
            }
            EntryKind::File => match store_file(ctx, pk, path, &abs) {
                Ok(f) => {
                    entry.size = f.size;
                    entry.mode = f.stat.mode;
                    entry.mtime = f.stat.mtime;
                    entry.mtime_nsec = f.stat.mtime_nsec;
                    entry.sha256 = Some(hex::encode(f.sha256));
                    entry.offset = f.offset;
                    entry.data_offset = f.data_offset;
                    entry.inconsistent = f.inconsistent;
                }
                Err(FileErr::Unreadable(msg)) => {
                    result.problems.push(Problem {
                        path: path.clone(),
                        error: msg,
                    });
                    continue;
                }
                Err(FileErr::Fatal(e)) => return Err(e),
            },
        }
        ctx.counters.add(1, entry.size);
        result.entries.push(entry);
        let full = cur
            .as_ref()
            .is_some_and(|pk| pk.builder.get_ref().raw_offset() >= pack_size);
        if is_large || full {
            if let Some(pk) = cur.take() {
                result.packs.push(close_pack(ctx, pk)?);
            }
        }
    }
    if let Some(pk) = cur.take() {
        result.packs.push(close_pack(ctx, pk)?);
    }
    // Durable partition result.
    let mut lines = vec![Line::Part(PartHeader {
        format: manifest::FORMAT_VERSION,
        run_id: ctx.run_id.clone(),
        partition: idx,
        unreadable: result.problems.iter().map(|p| p.path.clone()).collect(),
        finished_at: Utc::now(),
    })];
    lines.extend(result.packs.iter().cloned().map(Line::Pack));
    lines.extend(result.entries.iter().cloned().map(Line::Entry));
    let body = manifest::encode(&lines)?;
    let name = ctx.layout.part(&ctx.run_id, idx);
    ctx.rt
        .block_on(ctx.store.put(&name, Bytes::from(body), true))
        .ctx(format!("writing part record {name}"))?;
    Ok(result)
}

/// The parent's entry for `path`, if what is on disk now is unchanged: same kind, size,
/// mode, mtime (to the nanosecond), inode and ctime, and for symlinks the same target.
/// Entries the parent stored as inconsistent are always read again.
fn unchanged(
    parent: &Manifest,
    path: &PathBytes,
    kind: EntryKind,
    st: &extract::fs::Stat,
    abs: &std::path::Path,
) -> Option<Entry> {
    let i = parent.entries.binary_search_by(|e| e.path.cmp(path)).ok()?;
    let prev = &parent.entries[i];
    let same = prev.kind == kind
        && !prev.inconsistent
        && prev.pack.is_some()
        && prev.mode == st.mode
        && (prev.mtime, prev.mtime_nsec) == (st.mtime, st.mtime_nsec)
        && (kind != EntryKind::File || prev.size == st.size)
        && prev.ino.is_none_or(|ino| ino == st.ino)
        && prev.ctime.is_none_or(|c| c == st.ctime)
        && prev.uid == st.uid
        && prev.gid == st.gid;
    if !same {
        return None;
    }
    if kind == EntryKind::Symlink {
        let t = std::fs::read_link(abs).ok()?;
        if prev.target.as_ref().map(|x| x.0.as_slice()) != Some(t.as_os_str().as_bytes()) {
            return None;
        }
    }
    Some(prev.clone())
}

enum FileErr {
    Unreadable(String),
    Fatal(Error),
}

struct StoredFile {
    size: u64,
    stat: extract::fs::Stat,
    sha256: [u8; 32],
    offset: u64,
    data_offset: u64,
    inconsistent: bool,
}

/// Append one file, re-reading it once if it changed while being read.
fn store_file(
    ctx: &Ctx,
    pk: &mut OpenPack,
    path: &PathBytes,
    abs: &std::path::Path,
) -> std::result::Result<StoredFile, FileErr> {
    let mut last = None;
    for attempt in 0..2 {
        ctx.stats.files_read.fetch_add(1, Ordering::Relaxed);
        let f = std::fs::File::open(abs)
            .map_err(|e| FileErr::Unreadable(format!("cannot open: {e}")))?;
        let before = f
            .metadata()
            .map(|m| extract::fs::Stat::from_meta(&m))
            .map_err(|e| FileErr::Unreadable(format!("cannot stat: {e}")))?;
        let reader = ErrorCapture {
            inner: &f,
            error: None,
        };
        let mut reader = reader;
        let (placed, read) = tarball::append_file(
            &mut pk.builder,
            path,
            before.size,
            &HeaderMeta {
                mode: before.mode,
                mtime: before.mtime,
                uid: before.uid,
                gid: before.gid,
            },
            &mut reader,
        )
        .map_err(|e| FileErr::Fatal(io_to_err(e, &pk.blob)))?;
        if let Some(e) = reader.error {
            return Err(FileErr::Unreadable(format!("read error: {e}")));
        }
        // fstat on the open file: sees every change to what was read, no path lookup.
        let after = f
            .metadata()
            .map(|m| extract::fs::Stat::from_meta(&m))
            .map_err(|e| FileErr::Unreadable(format!("cannot stat after reading: {e}")))?;
        let changed = read.shrank || read.grew || before.changed(&after);
        last = Some(StoredFile {
            size: before.size,
            stat: before,
            sha256: read.sha256,
            offset: placed.offset,
            data_offset: placed.data_offset,
            inconsistent: changed,
        });
        if !changed {
            break;
        }
        if attempt == 0 {
            tracing::info!(
                "{} changed while being read; reading it again",
                path.display()
            );
        } else {
            tracing::warn!("{} kept changing; stored as inconsistent", path.display());
        }
    }
    last.ok_or_else(|| FileErr::Fatal(Error::internal("file was never read")))
}

/// Turns a read error into end-of-file (so the tar stream stays well-formed: the rest of
/// the entry is zero-padded) and remembers it, so the file is reported unreadable.
struct ErrorCapture<R> {
    inner: R,
    error: Option<std::io::Error>,
}

impl<R: std::io::Read> std::io::Read for ErrorCapture<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.error.is_some() {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.error = Some(e);
                Ok(0)
            }
        }
    }
}
