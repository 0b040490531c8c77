//! The engine of one run: plan → partitions → bounded channel → uploaders → commit.
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
//! writing its part record ([`super::files`], [`super::streamed`]). The manifest is
//! written after every partition has a part record ([`super::commit`]). A rerun with the
//! same run id reuses the stored plan ([`super::plan`]), skips partitions with part
//! records, and skips blocks the store already holds uncommitted for a pack (pack and
//! block ids are deterministic).
//!
//! The engine reports; it does not verify, alert or apply retention: the runner
//! ([`super::runner`]) does that with the report.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::commit::{self, PartResult};
use super::plan;
use super::report::{BackupReport, Stats};
use super::runner::BackupOptions;
use super::spec::Pipeline;
use super::upload::{self, ChannelSink, Uploads};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::extract::config::SourceConfig;
use crate::extract::{self, Piece, Plan};
use crate::manifest::layout::Layout;
use crate::manifest::records::RunStatus;
use crate::manifest::{Manifest, PackRecord};
use crate::pack::packer::{OpenPack, Packs};
use crate::store::Store;
use crate::support::cancel::Cancel;
use crate::support::ids;
use crate::support::progress::{Counters, Phase};

/// Everything a partition worker needs, shared.
pub(super) struct Ctx {
    pub(super) pipeline: Pipeline,
    pub(super) layout: Layout,
    pub(super) run_id: String,
    /// Where packs are written (holds the store).
    pub(super) packs: Packs,
    /// The upload pool's sending side.
    pub(super) uploads: Uploads,
    pub(super) cancel: Cancel,
    pub(super) counters: Arc<Counters>,
    pub(super) stats: Arc<Stats>,
    pub(super) rt: tokio::runtime::Handle,
    /// Open source session of a database or command source (the exported snapshot and
    /// the work items); `None` for the filesystem.
    pub(super) session: Option<Arc<extract::Session>>,
    /// The newest earlier snapshot (its manifest's head: packs and segment list, or a
    /// format-1 manifest whole): compared with for the changes, and reused from when
    /// `reuse`.
    pub(super) parent: Option<Arc<Manifest>>,
    /// Unchanged entries may be taken from `parent` instead of read (an incremental).
    pub(super) reuse: bool,
    /// The source container of a blob source (its own account and credential).
    pub(super) blob_source: Option<Arc<crate::store::azure::AzureStore>>,
    /// The parent's chunks by hash, for big files the parent held under another path.
    pub(super) chunk_index: Option<Arc<super::files::ChunkIndex>>,
}

impl Ctx {
    /// Open pack number `seq` of partition `idx`, its blocks going to the upload pool.
    pub(super) fn open_pack(
        &self,
        idx: usize,
        seq: usize,
        size_hint: u64,
    ) -> Result<OpenPack<ChannelSink>> {
        self.packs.open(&self.uploads, idx, seq, size_hint)
    }

    /// Close `pack`: wait for its blocks and commit it.
    pub(super) fn close_pack(&self, pack: OpenPack<ChannelSink>) -> Result<PackRecord> {
        self.packs.close(pack)
    }
}

/// What the engine hands the runner: the report and the committed snapshot's manifest
/// (for verification) — committed by this attempt or, on a rerun, by an earlier one.
pub(super) struct Finished {
    pub(super) report: BackupReport,
    pub(super) manifest: Option<Manifest>,
}

/// Run the engine for `run_id` (the caller holds the run lock).
///
/// # Errors
/// See [`super::runner::backup`].
pub(super) async fn run(
    p: &Pipeline,
    store: Store,
    layout: &Layout,
    run_id: &str,
    started_at: DateTime<Utc>,
    opts: &BackupOptions,
) -> Result<Finished> {
    let cancel = opts.cancel.clone();
    let counters = opts.counters.clone().unwrap_or_default();
    let stats = Arc::new(Stats::default());
    // A blob source is opened (and its container checked) before anything is stored.
    let blob_source = match &p.source {
        SourceConfig::Blob(b) => Some(super::blobs::open_source(b, &p.retry).await?),
        _ => None,
    };
    let (plan, resumed, session) =
        plan::load_or_make_plan(p, &store, layout, run_id, started_at, opts.full).await?;
    let started_at = plan.started_at.unwrap_or(started_at);
    let snapshot = ids::snapshot_id_for(started_at, run_id);
    if plan::already_committed(&store, layout, &snapshot)
        .await?
        .is_some()
    {
        // An earlier attempt committed (and may have died verifying, or failed to
        // verify): report the snapshot and hand its manifest to the runner, which
        // verifies it again, so a rerun never reports `ok` for an unverified snapshot.
        tracing::info!(
            snapshot,
            "run {run_id} already committed this snapshot; verifying it again"
        );
        let m = crate::manifest::catalog::load_head(&*store, layout, &snapshot)
            .await
            .ctx("loading the snapshot this run committed")?;
        let report = committed_report(p, run_id, &snapshot, started_at, &plan, &m);
        return Ok(Finished {
            report,
            manifest: Some(m),
        });
    }
    let parent: Option<Arc<Manifest>> = match &plan.parent {
        Some(id) => Some(Arc::new(
            crate::manifest::catalog::load_head(&*store, layout, id)
                .await
                .ctx("loading the parent snapshot")?,
        )),
        None => None,
    };
    tracing::info!(run_id, resumed, "planned; walking and backing up");
    let ctx_streamed = session.is_some();
    // Totals grow as the walk finds entries; a database or command source's size is
    // known only once read (its chunks are counted without a total).
    counters.begin(Phase::Uploading, ctx_streamed.then_some("chunks"), 0, 0);

    // Partitions finished by an earlier attempt of this run, by walk digest.
    let problems = plan.problems.clone();
    let earlier = plan::finished_parts(&store, layout, run_id, session.is_some()).await?;

    let chunk_index = chunk_index(p, &store, layout, &plan, parent.as_deref(), &stats).await?;
    let (ctx, uploaders) = open_ctx(
        p,
        &store,
        layout,
        run_id,
        &plan,
        parent.clone(),
        session,
        blob_source.clone(),
        chunk_index,
        (&cancel, &counters, &stats),
    );

    // The partitions arrive from the walk through a bounded channel (a streamed
    // source's items are all known up front). At most max_parallel run at once, and a
    // partition is only taken from the channel when a worker is free, so memory holds
    // max_parallel + channel capacity partitions, never the tree. After a permanent
    // failure no new partition starts, but running ones finish and keep their part
    // records, so a rerun with the same run id has less to do.
    let (piece_tx, mut piece_rx) = tokio::sync::mpsc::channel::<Piece>(p.partitions.max_parallel);
    let walker = match (&p.source, blob_source) {
        (SourceConfig::Blob(b), Some(src)) => super::blobs::spawn_listing(
            src,
            b,
            p.partitions,
            piece_tx,
            counters.clone(),
            cancel.clone(),
        ),
        _ => spawn_pieces(p, &plan, piece_tx, counters.clone(), cancel.clone()),
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(p.partitions.max_parallel));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut done: Vec<Option<PartResult>> = Vec::new();
    let mut partitions = 0usize;
    let mut partitions_resumed = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    let mut first_err: Option<Error> = None;
    let note = |j: std::result::Result<Result<(usize, PartResult)>, tokio::task::JoinError>,
                done: &mut Vec<Option<PartResult>>,
                first_err: &mut Option<Error>| {
        let e = match j {
            Ok(Ok((idx, r))) => {
                if done.len() <= idx {
                    done.resize(idx + 1, None);
                }
                done[idx] = Some(r);
                return;
            }
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
            *first_err = Some(e);
        }
    };
    loop {
        while let Some(j) = tasks.try_join_next() {
            note(j, &mut done, &mut first_err);
        }
        if first_err.is_some() || failing.load(Ordering::SeqCst) || cancel.is_cancelled() {
            break;
        }
        let permit = tokio::select! {
            permit = sem.clone().acquire_owned() => permit.map_err(|_| Error::cancelled())?,
            Some(j) = tasks.join_next(), if !tasks.is_empty() => {
                note(j, &mut done, &mut first_err);
                continue;
            }
        };
        let Some(piece) = piece_rx.recv().await else {
            break;
        };
        partitions += 1;
        if let Some(name) = earlier.get(&piece.digest) {
            let (_, r) = commit::load_part(&store, layout, name)
                .await
                .ctx("reading a part record of an earlier attempt")?;
            counters.add(
                r.segment.as_ref().map_or(0, |s| s.entries),
                r.segment.as_ref().map_or(0, |s| s.bytes),
            );
            partitions_resumed += 1;
            note(Ok(Ok((piece.idx, r))), &mut done, &mut first_err);
            continue;
        }
        let (ctx, failing) = (ctx.clone(), failing.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let idx = piece.idx;
            let r = run_partition_with_retries(ctx, Arc::new(piece)).await;
            if r.is_err() {
                failing.store(true, Ordering::SeqCst);
            }
            r.map(|r| (idx, r))
        });
    }
    drop(piece_rx);
    while let Some(j) = tasks.join_next().await {
        note(j, &mut done, &mut first_err);
    }
    let walked = walker
        .await
        .map_err(|e| Error::internal(format!("planning task: {e}")))?;
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
    walked?;
    if done.len() != partitions || done.iter().any(Option::is_none) {
        return Err(Error::internal(format!(
            "{} of {partitions} partitions finished",
            done.iter().flatten().count()
        )));
    }
    counters.begin(Phase::Committing, None, 0, 0);
    let c = commit::commit(
        p,
        &store,
        layout,
        run_id,
        &snapshot,
        started_at,
        &plan,
        parent.as_deref(),
        done,
        problems,
    )
    .await?;
    let report = built_report(
        p,
        run_id,
        &snapshot,
        started_at,
        &plan,
        parent.as_deref(),
        &c,
        &stats,
        (partitions, partitions_resumed),
        store.retries(),
    );
    Ok(Finished {
        report,
        manifest: Some(c.manifest),
    })
}

/// The report of a run whose snapshot an earlier attempt (or another finalizer)
/// committed: its figures come from the manifest.
pub(super) fn committed_report(
    p: &Pipeline,
    run_id: &str,
    snapshot: &str,
    started_at: DateTime<Utc>,
    plan: &Plan,
    m: &Manifest,
) -> BackupReport {
    let done = &m.header;
    let status = if !done.unreadable.is_empty() || done.totals.inconsistent > 0 {
        RunStatus::Partial
    } else {
        RunStatus::Ok
    };
    let problems = done
        .unreadable
        .iter()
        .map(|path| extract::Problem {
            path: path.clone(),
            error: "could not be read (recorded by an earlier attempt of this run)".into(),
        })
        .collect();
    BackupReport {
        snapshot: Some(snapshot.to_string()),
        totals: done.totals.clone(),
        kind: if done.chain == 0 {
            "full"
        } else {
            "incremental"
        }
        .into(),
        parent: done.parent.clone(),
        changes: done.changes.clone(),
        problems,
        skipped_damaged: plan.skipped_damaged.clone(),
        ..BackupReport::empty(&p.name, run_id, status, started_at)
    }
}

/// The index of the parent's chunks for a filesystem incremental (`[chunking] index`).
///
/// # Errors
/// Store errors and damaged parent segments.
pub(super) async fn chunk_index(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    plan: &Plan,
    parent: Option<&Manifest>,
    stats: &Stats,
) -> Result<Option<Arc<super::files::ChunkIndex>>> {
    let Some(parent) = parent.filter(|_| plan.reuse && matches!(p.source, SourceConfig::Fs(_)))
    else {
        return Ok(None);
    };
    Ok(
        super::files::ChunkIndex::build(store, layout, parent, p.chunking.index, stats)
            .await
            .ctx("indexing the parent snapshot's chunks")?
            .map(Arc::new),
    )
}

/// The shared context of a run's partitions and its upload pool (await the returned
/// uploaders after dropping every handle on the context).
#[allow(clippy::too_many_arguments)]
pub(super) fn open_ctx(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    plan: &Plan,
    parent: Option<Arc<Manifest>>,
    session: Option<Arc<extract::Session>>,
    blob_source: Option<Arc<crate::store::azure::AzureStore>>,
    chunk_index: Option<Arc<super::files::ChunkIndex>>,
    (cancel, counters, stats): (&Cancel, &Arc<Counters>, &Arc<Stats>),
) -> (Arc<Ctx>, Vec<tokio::task::JoinHandle<()>>) {
    let (uploads, uploaders) = upload::start(
        store,
        p.upload.channel_capacity,
        p.upload.concurrency,
        stats,
        counters,
        cancel,
    );
    let ctx = Arc::new(Ctx {
        pipeline: p.clone(),
        layout: layout.clone(),
        run_id: run_id.to_string(),
        packs: Packs {
            pipeline: p.name.clone(),
            run_id: run_id.to_string(),
            codec: p.compression.codec,
            level: p.compression.level,
            frame_size: p.compression.frame_size,
            block_size: p.upload.block_size,
            tier: p.target.tier,
            store: store.clone(),
            layout: layout.clone(),
            rt: tokio::runtime::Handle::current(),
            key: layout.key().cloned(),
        },
        uploads,
        cancel: cancel.clone(),
        counters: counters.clone(),
        stats: stats.clone(),
        rt: tokio::runtime::Handle::current(),
        parent,
        reuse: plan.reuse,
        session,
        blob_source,
        chunk_index,
    });
    (ctx, uploaders)
}

/// The report of a run this process committed (`c`), with what `stats` counted.
#[allow(clippy::too_many_arguments)]
pub(super) fn built_report(
    p: &Pipeline,
    run_id: &str,
    snapshot: &str,
    started_at: DateTime<Utc>,
    plan: &Plan,
    parent: Option<&Manifest>,
    c: &commit::Committed,
    stats: &Stats,
    (partitions, partitions_resumed): (usize, usize),
    store_retries: u64,
) -> BackupReport {
    let totals = c.manifest.header.totals.clone();
    let added = Added::of(&c.manifest, parent.filter(|_| plan.reuse));
    let bytes_read = if p.source.is_streamed() {
        totals.bytes
    } else {
        stats.bytes_read.load(Ordering::Relaxed)
    };
    let status = if !c.problems.is_empty() || totals.inconsistent > 0 {
        RunStatus::Partial
    } else {
        RunStatus::Ok
    };
    BackupReport {
        pipeline: p.name.clone(),
        run_id: run_id.to_string(),
        status,
        snapshot: Some(snapshot.to_string()),
        started_at,
        finished_at: Utc::now(),
        totals,
        kind: if plan.reuse { "incremental" } else { "full" }.into(),
        parent: plan.parent.clone().filter(|_| plan.reuse),
        changes: c.manifest.header.changes.clone(),
        files_read: stats.files_read.load(Ordering::Relaxed),
        bytes_read,
        new_packs: added.new_packs,
        new_stored_bytes: added.new_bytes,
        reused_packs: added.reused_packs,
        reused_stored_bytes: added.reused_bytes,
        partitions,
        partitions_resumed,
        blocks_staged: stats.blocks_staged.load(Ordering::Relaxed),
        blocks_reused: stats.blocks_reused.load(Ordering::Relaxed),
        max_inflight_blocks: stats.max_inflight_blocks.load(Ordering::Relaxed),
        segments_written: stats.segments_written.load(Ordering::Relaxed),
        segments_reused: stats.segments_reused.load(Ordering::Relaxed),
        max_entries_held: stats.max_entries_held.load(Ordering::Relaxed),
        chunks: super::report::ChunkCounts::of(
            stats,
            match &p.source {
                SourceConfig::Postgres(_) | SourceConfig::Mysql(_) => "tables",
                SourceConfig::Command(_) => "command",
                SourceConfig::Fs(_) | SourceConfig::Blob(_) => "files",
            },
        ),
        retries: store_retries + stats.partition_retries.load(Ordering::Relaxed),
        problems: c.problems.clone(),
        inconsistent: c.inconsistent.clone(),
        verify: None,
        error: None,
        alerts: vec![],
        skipped_damaged: plan.skipped_damaged.clone(),
        protection: None,
        server_side: match &p.source {
            SourceConfig::Blob(b) if b.server_side_min_size.is_some() => {
                stats.server_side.lock().ok().map(|c| c.clone())
            }
            _ => None,
        },
    }
}

/// What a snapshot added to the store against the parent it reused packs from.
struct Added {
    new_packs: u64,
    new_bytes: u64,
    reused_packs: u64,
    reused_bytes: u64,
}

impl Added {
    fn of(m: &Manifest, parent: Option<&Manifest>) -> Added {
        let old: std::collections::HashSet<&str> = parent
            .map(|p| p.packs.iter().map(|k| k.id.as_str()).collect())
            .unwrap_or_default();
        let mut a = Added {
            new_packs: 0,
            new_bytes: 0,
            reused_packs: 0,
            reused_bytes: 0,
        };
        for k in &m.packs {
            if old.contains(k.id.as_str()) {
                a.reused_packs += 1;
                a.reused_bytes += k.size;
            } else {
                a.new_packs += 1;
                a.new_bytes += k.size;
            }
        }
        a
    }
}

pub(super) async fn run_partition_with_retries(
    ctx: Arc<Ctx>,
    piece: Arc<Piece>,
) -> Result<PartResult> {
    let idx = piece.idx;
    let retry = crate::support::retry::RetryPolicy::from(&ctx.pipeline.retry);
    let started = tokio::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let c = ctx.clone();
        let pc = piece.clone();
        let r = tokio::task::spawn_blocking(move || run_partition(&c, &pc))
            .await
            .map_err(|e| Error::internal(format!("partition {idx} worker: {e}")))?;
        let wait = match &r {
            Err(e) if e.is_retryable() && !ctx.cancel.is_cancelled() => {
                retry.next_delay(attempt, started.elapsed(), None)
            }
            _ => None,
        };
        match (r, wait) {
            (Ok(r), _) => return Ok(r),
            (Err(e), Some(wait)) => {
                ctx.stats.partition_retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "partition {idx} attempt {attempt} failed, retrying in {wait:?}: {e}"
                );
                tokio::time::sleep(wait).await;
            }
            (Err(e), None) => return Err(e.context(format!("partition {idx}"))),
        }
    }
}

/// Extract, pack and store one partition; write its part record.
fn run_partition(ctx: &Ctx, piece: &Piece) -> Result<PartResult> {
    match (&ctx.pipeline.source, &ctx.session) {
        (_, Some(session)) => super::streamed::run_partition(ctx, session, piece.idx),
        (SourceConfig::Fs(fs), None) => super::files::run_partition(ctx, fs, piece),
        (SourceConfig::Blob(_), None) => super::blobs::run_partition(ctx, piece),
        _ => Err(Error::internal("no source session for a streamed source")),
    }
}

/// Start producing the run's partitions into `tx`: the walk of a filesystem source (on a
/// blocking thread, cut by [`extract::Splitter`]), or a streamed source's work items.
/// The progress totals grow as the walk finds entries.
pub(super) fn spawn_pieces(
    p: &Pipeline,
    plan: &Plan,
    tx: tokio::sync::mpsc::Sender<Piece>,
    counters: Arc<Counters>,
    cancel: Cancel,
) -> tokio::task::JoinHandle<Result<()>> {
    match &p.source {
        SourceConfig::Fs(fs) => {
            let (fs, split) = (fs.clone(), p.partitions);
            tokio::task::spawn_blocking(move || {
                let (mut entries, mut bytes) = (0u64, 0u64);
                // Until the walk ends its totals are only what it has found so far.
                counters.set_partial_totals(true);
                let r = extract::fs::walk::pieces(&fs, &split, &mut |piece| {
                    if cancel.is_cancelled() {
                        return Err(Error::cancelled());
                    }
                    entries += piece.entries.len() as u64;
                    bytes += piece.bytes();
                    counters.set_total(entries, bytes);
                    tx.blocking_send(piece).map_err(|_| Error::cancelled())
                });
                if r.is_ok() {
                    counters.set_partial_totals(false);
                }
                match r {
                    // The receiver stopped taking partitions (a failure or a signal):
                    // the engine reports why.
                    Err(e) if e.kind() == ErrorKind::Cancelled => Ok(()),
                    r => r,
                }
            })
        }
        _ => {
            let pieces: Vec<Piece> = plan
                .partitions
                .iter()
                .enumerate()
                .map(|(idx, entries)| Piece {
                    idx,
                    lo: None,
                    hi: None,
                    entries: entries.clone(),
                    problems: Vec::new(),
                    digest: format!("item-{idx}"),
                    blobs: Vec::new(),
                })
                .collect();
            tokio::spawn(async move {
                for piece in pieces {
                    if tx.send(piece).await.is_err() {
                        break;
                    }
                }
                Ok(())
            })
        }
    }
}
