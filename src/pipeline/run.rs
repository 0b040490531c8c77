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
use crate::extract::{self, Plan, PlannedEntry};
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
    /// The incremental parent, when unchanged entries may be reused.
    pub(super) reuse: Option<Arc<Manifest>>,
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
        let m = crate::manifest::catalog::load(&*store, layout, &snapshot)
            .await
            .ctx("loading the snapshot this run committed")?;
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
        let report = BackupReport {
            pipeline: p.name.clone(),
            run_id: run_id.to_string(),
            status,
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
            bytes_read: 0,
            new_packs: 0,
            new_stored_bytes: 0,
            reused_packs: 0,
            reused_stored_bytes: 0,
            partitions: plan.partitions.len(),
            partitions_resumed: plan.partitions.len(),
            blocks_staged: 0,
            blocks_reused: 0,
            max_inflight_blocks: 0,
            retries: 0,
            problems,
            inconsistent: vec![],
            verify: None,
            error: None,
            alerts: vec![],
            skipped_damaged: plan.skipped_damaged.clone(),
        };
        return Ok(Finished {
            report,
            manifest: Some(m),
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
    let ctx_streamed = session.is_some();
    if ctx_streamed {
        // A database or command source: its size is known only once read.
        counters.begin(Phase::Uploading, Some("chunks"), 0, 0);
    } else {
        counters.begin(
            Phase::Uploading,
            None,
            plan.total_entries() as u64,
            plan.total_bytes(),
        );
    }

    // Partitions finished by an earlier attempt of this run.
    let mut problems = plan.problems.clone();
    let mut done = plan::resume(
        &store,
        layout,
        run_id,
        &plan,
        session.is_some(),
        &counters,
        &mut problems,
    )
    .await?;
    let partitions_resumed = done.iter().filter(|d| d.is_some()).count();

    let (uploads, uploaders) = upload::start(
        &store,
        p.upload.channel_capacity,
        p.upload.concurrency,
        &stats,
        &counters,
        &cancel,
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
        },
        uploads,
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

    counters.begin(Phase::Committing, None, 0, 0);
    let c = commit::commit(
        p,
        &store,
        layout,
        run_id,
        &snapshot,
        started_at,
        &plan,
        parent.as_ref(),
        done,
        problems,
    )
    .await?;
    let totals = c.manifest.header.totals.clone();
    let added = Added::of(&c.manifest, parent.as_deref().filter(|_| plan.reuse));
    let bytes_read = if ctx_streamed {
        totals.bytes
    } else {
        stats.bytes_read.load(Ordering::Relaxed)
    };
    let status = if !c.problems.is_empty() || totals.inconsistent > 0 {
        RunStatus::Partial
    } else {
        RunStatus::Ok
    };
    let report = BackupReport {
        pipeline: p.name.clone(),
        run_id: run_id.to_string(),
        status,
        snapshot: Some(snapshot),
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
        partitions: plan.partitions.len(),
        partitions_resumed,
        blocks_staged: stats.blocks_staged.load(Ordering::Relaxed),
        blocks_reused: stats.blocks_reused.load(Ordering::Relaxed),
        max_inflight_blocks: stats.max_inflight_blocks.load(Ordering::Relaxed),
        retries: store.retries() + stats.partition_retries.load(Ordering::Relaxed),
        problems: c.problems,
        inconsistent: c.inconsistent,
        verify: None,
        error: None,
        alerts: vec![],
        skipped_damaged: plan.skipped_damaged.clone(),
    };
    Ok(Finished {
        report,
        manifest: Some(c.manifest),
    })
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

async fn run_partition_with_retries(
    ctx: Arc<Ctx>,
    plan: Arc<Plan>,
    idx: usize,
) -> Result<PartResult> {
    let retry = crate::support::retry::RetryPolicy::from(&ctx.pipeline.retry);
    let started = tokio::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let c = ctx.clone();
        let pl = plan.clone();
        let r = tokio::task::spawn_blocking(move || run_partition(&c, &pl.partitions[idx], idx))
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
fn run_partition(ctx: &Ctx, planned: &[PlannedEntry], idx: usize) -> Result<PartResult> {
    match (&ctx.pipeline.source, &ctx.session) {
        (_, Some(session)) => super::streamed::run_partition(ctx, session, idx),
        (SourceConfig::Fs(fs), None) => super::files::run_partition(ctx, fs, planned, idx),
        _ => Err(Error::internal("no source session for a streamed source")),
    }
}
