//! `plan`, `work`, `finalize`: the scale-out coordinator, worker and finalizer
//! ([`crate::pipeline::scale`]). Each job replica runs `work`; one (or a separate step)
//! runs `plan` first.

use std::time::Duration;

use crate::cli::args::{FinalizeArgs, PlanArgs, WorkArgs};
use crate::cli::exit;
use crate::cli::render::{self, emit};
use crate::error::{Error, Result};
use crate::pipeline::scale::{self, FinalizeOutcome, WorkOptions};
use crate::pipeline::Pipeline;
use crate::store::{self, queue};
use crate::support::cancel::Cancel;
use crate::support::units::parse_duration;

/// The Container Apps job execution's name: every replica of one execution shares it, so
/// it is the run id of the coordinator and the workers by default.
fn execution_name() -> Option<String> {
    std::env::var("CONTAINER_APP_JOB_EXECUTION_NAME")
        .ok()
        .filter(|s| !s.is_empty())
}

fn dur(flag: &str, v: &str) -> Result<Duration> {
    parse_duration(v).map_err(|e| Error::config(format!("--{flag}: {e}")))
}

/// `blobpipe plan FILE --queue URL`.
///
/// # Errors
/// Config, lock, source, store and queue errors.
pub async fn plan(a: PlanArgs, json: bool) -> Result<i32> {
    let p = Pipeline::load(&a.pipeline)?;
    scale::check_source(&p)?;
    let q = queue::open(&a.queue).map_err(|e| e.context("--queue"))?;
    let store = store::open(&p.target, &p.retry).await?;
    let cancel = Cancel::new();
    cancel.on_signals();
    let run_id = a.run_id.or_else(execution_name);
    let c = scale::plan_run(&p, store, run_id, a.full, a.wait_lock, &*q, &cancel).await?;
    emit(json, &c, || render::planned(&c));
    Ok(exit::OK)
}

/// `blobpipe work PIPELINES --queue URL`.
///
/// # Errors
/// Config errors; queue and store errors that outlast their retries.
pub async fn work(a: WorkArgs, json: bool) -> Result<i32> {
    let pipelines = super::ops::all_valid(&a.pipelines)?;
    for p in &pipelines {
        scale::check_source(p)?;
    }
    let q = queue::open(&a.queue).map_err(|e| e.context("--queue"))?;
    let cancel = Cancel::new();
    cancel.on_signals();
    let run_id = match (a.run_id, a.any_run) {
        (Some(r), _) => Some(r),
        (None, true) => None,
        (None, false) => execution_name(),
    };
    if a.coordinate {
        let (Some(run), [p]) = (&run_id, pipelines.as_slice()) else {
            return Err(Error::config(
                "--coordinate needs one pipeline file and a run id (--run-id, or \
                 $CONTAINER_APP_JOB_EXECUTION_NAME)",
            ));
        };
        let store = store::open(&p.target, &p.retry).await?;
        match scale::plan_run(p, store, Some(run.clone()), false, false, &*q, &cancel).await {
            Ok(c) => tracing::info!(
                run_id = %c.run_id,
                partitions = c.partitions,
                enqueued = c.enqueued,
                "coordinated"
            ),
            // Another replica holds the lease: it is the coordinator.
            Err(e) if e.kind() == crate::error::ErrorKind::Locked => {
                tracing::info!("another replica is coordinating run {run}: {e}")
            }
            Err(e) => return Err(e),
        }
    }
    let parallel = a.parallel.unwrap_or_else(|| {
        pipelines
            .iter()
            .map(|p| p.partitions.max_parallel)
            .max()
            .unwrap_or(1)
    });
    let opts = WorkOptions {
        run_id,
        visibility: dur("visibility", &a.visibility)?.max(Duration::from_secs(1)),
        retry_delay: dur("retry-delay", &a.retry_delay)?,
        max_dequeue: a.max_dequeue.max(1),
        poll: dur("poll", &a.poll)?,
        finalize: !a.no_finalize,
        parallel: parallel.max(1),
        plan_wait: dur("plan-wait", &a.plan_wait)?,
        cancel,
    };
    let s = scale::work(&pipelines, q, &opts).await?;
    emit(json, &s, || render::worked(&s));
    if s.failed() {
        return Ok(exit::FAILED);
    }
    Ok(s.runs
        .iter()
        .filter_map(|r| r.report.as_ref())
        .map(|r| exit::for_run(r.status))
        .max()
        .unwrap_or(exit::OK))
}

/// `blobpipe finalize FILE --run-id ID`.
///
/// # Errors
/// Lock, store and integrity errors; dead-lettered partitions.
pub async fn finalize(a: FinalizeArgs, json: bool) -> Result<i32> {
    let p = Pipeline::load(&a.pipeline)?;
    scale::check_source(&p)?;
    let repo = scale::open_repo(&p).await?;
    let cancel = Cancel::new();
    cancel.on_signals();
    let stats = Default::default();
    // No queue here: `finalize` verifies in this process.
    let o = scale::finalize_run(&p, &repo, &a.run_id, &stats, &cancel, None).await?;
    emit(json, &o, || render::finalized(&o));
    Ok(match &o {
        FinalizeOutcome::Committed { report } => exit::for_run(report.status),
        FinalizeOutcome::AlreadyCommitted { .. } => exit::OK,
        FinalizeOutcome::NotReady { .. } => exit::NOT_FOUND,
        FinalizeOutcome::Verifying { .. } => exit::OK,
    })
}
