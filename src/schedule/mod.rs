//! The scheduler for plain machines: `blobpipe schedule pipelines/`.
//!
//! One long-running process runs each pipeline on its `[schedule] cron` (5 fields,
//! UTC, parsed by the maintained `croner` crate — no home-made cron parser):
//!
//! - **No overlap.** A pipeline whose previous run (in this process) is still going
//!   skips the tick and says so; across processes and machines the run lock (a blob
//!   lease) already makes a second run fail fast with `Locked`.
//! - **Catch-up.** At start, the time of the pipeline's newest run record is compared
//!   with its schedule: if a scheduled time passed since then (the machine was down),
//!   the pipeline runs **once** right away (`[schedule] catch_up = false` turns this
//!   off). A pipeline that never ran is not caught up: it waits for its schedule (the
//!   freshness check reports it until then). Ticks missed while a run was going are
//!   never queued: the next run is the next tick after now.
//! - **Resume.** If the newest run record says the run was cancelled (the scheduler or
//!   its machine was stopped), the first run reuses that run id and resumes it; if it
//!   says `committed_unverified`, the first run reuses the id and verifies that snapshot.
//! - **Graceful shutdown.** On SIGTERM/Ctrl-C ([`crate::support::cancel::Cancel`]) no new run
//!   starts; running ones stop at their next checkpoint (nothing committed, resumable)
//!   and the scheduler waits for them before returning.

pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::layout::Repo;
use crate::manifest::records::RunStatus;
use crate::pipeline::{BackupOptions, BackupReport, Pipeline};
use crate::store;
use crate::support::cancel::Cancel;

/// One scheduled pipeline.
#[derive(Debug, Clone)]
pub struct Job {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Its cron expression.
    pub expr: String,
    cron: croner::Cron,
}

impl Job {
    /// The job of a pipeline with a `[schedule]`, `None` without one.
    ///
    /// # Errors
    /// `Config` for an invalid cron expression.
    pub fn from_pipeline(p: Pipeline) -> Result<Option<Job>> {
        match p.schedule.clone() {
            None => Ok(None),
            Some(expr) => Self::with_expr(p, &expr).map(Some),
        }
    }

    /// A job on `expr`: 5 fields, or 6 with seconds first (finer than the pipeline
    /// files allow; used by tests and by `schedule --every-second` style tooling).
    ///
    /// # Errors
    /// `Config` for an invalid cron expression.
    pub fn with_expr(p: Pipeline, expr: &str) -> Result<Job> {
        let cron = croner::Cron::new(expr)
            .with_seconds_optional()
            .parse()
            .map_err(|e| {
                Error::config(format!(
                    "pipeline {}: invalid cron expression {expr:?}: {e}",
                    p.name
                ))
            })?;
        Ok(Job {
            pipeline: p,
            expr: expr.to_string(),
            cron,
        })
    }

    /// The first scheduled time strictly after `t` (UTC).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The next `n` scheduled times after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(x) => {
                    out.push(x);
                    at = x;
                }
                None => break,
            }
        }
        out
    }
}

/// What runs a pipeline (a real backup; tests may substitute their own).
#[async_trait]
pub trait Runner: Send + Sync {
    /// Run `p` once, with `run_id` when resuming, stopping early when `cancel` fires.
    async fn run(
        &self,
        p: &Pipeline,
        run_id: Option<String>,
        cancel: Cancel,
    ) -> Result<BackupReport>;
}

/// Runs [`crate::pipeline::backup`] against the pipeline's store.
#[derive(Debug, Default, Clone, Copy)]
pub struct BackupRunner;

#[async_trait]
impl Runner for BackupRunner {
    async fn run(
        &self,
        p: &Pipeline,
        run_id: Option<String>,
        cancel: Cancel,
    ) -> Result<BackupReport> {
        let store = store::open(&p.target, &p.retry).await?;
        crate::pipeline::backup(
            p,
            store,
            BackupOptions {
                run_id,
                cancel,
                ..Default::default()
            },
        )
        .await
    }
}

/// What a scheduler did, per pipeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Runs started.
    pub started: BTreeMap<String, u64>,
    /// Of those, catch-up runs at start.
    pub caught_up: BTreeMap<String, u64>,
    /// Ticks skipped because the previous run was still going.
    pub skipped_overlap: BTreeMap<String, u64>,
    /// Runs that ended in an error (failed, locked, cancelled).
    pub errors: BTreeMap<String, u64>,
}

fn bump(m: &mut BTreeMap<String, u64>, k: &str) {
    *m.entry(k.to_string()).or_default() += 1;
}

/// Options of [`run`].
#[derive(Debug, Clone, Default)]
pub struct ScheduleOptions {
    /// Override every pipeline's `catch_up` (the CLI's `--no-catch-up`).
    pub no_catch_up: bool,
}

struct Slot {
    job: Job,
    next: Option<DateTime<Utc>>,
    running: Option<tokio::task::JoinHandle<()>>,
    resume: Option<String>,
}

/// What the newest run record says about catching up and resuming.
async fn history(p: &Pipeline) -> Result<(Option<DateTime<Utc>>, Option<String>)> {
    let repo = Repo::open(&p.target, &p.retry).await?;
    let last = crate::schedule::status::last_run(&*repo.store, &repo.layout).await?;
    Ok(match last {
        None => (None, None),
        Some(r) => {
            // A cancelled run resumes; a committed run whose verification could not
            // complete is rerun with its id, which verifies the snapshot.
            let resume = matches!(
                r.status,
                Some(RunStatus::Cancelled | RunStatus::CommittedUnverified)
            )
            .then(|| r.run_id.clone());
            (r.started_at.or(r.finished_at), resume)
        }
    })
}

/// Run `jobs` until `cancel` fires; then wait for running backups to stop.
///
/// # Errors
/// `Config` when `jobs` is empty.
pub async fn run(
    jobs: Vec<Job>,
    runner: Arc<dyn Runner>,
    cancel: Cancel,
    opts: &ScheduleOptions,
) -> Result<Summary> {
    if jobs.is_empty() {
        return Err(Error::config(
            "no pipeline has a [schedule] cron; nothing to schedule",
        ));
    }
    let summary = Arc::new(std::sync::Mutex::new(Summary::default()));
    let now = Utc::now();
    let mut slots = Vec::with_capacity(jobs.len());
    for job in jobs {
        let name = job.pipeline.name.clone();
        let mut slot = Slot {
            next: job.next_after(now),
            job,
            running: None,
            resume: None,
        };
        match history(&slot.job.pipeline).await {
            Ok((last, resume)) => {
                slot.resume = resume;
                let catch_up = slot.job.pipeline.catch_up && !opts.no_catch_up;
                if let Some(last) = last {
                    if let Some(due) = slot.job.next_after(last) {
                        if due <= now {
                            if catch_up {
                                tracing::warn!(pipeline = %name, missed = %due.to_rfc3339(), last_run = %last.to_rfc3339(), "a scheduled run was missed; catching up once now");
                                bump(&mut summary.lock().expect("poisoned").caught_up, &name);
                                slot.next = Some(now);
                            } else {
                                tracing::warn!(pipeline = %name, missed = %due.to_rfc3339(), "a scheduled run was missed; catch_up is off, waiting for the next one");
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(pipeline = %name, "cannot read run history (no catch-up): {e}")
            }
        }
        tracing::info!(
            pipeline = %name,
            cron = %slot.job.expr,
            next = %slot.next.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into()),
            "scheduled"
        );
        slots.push(slot);
    }

    loop {
        let now = Utc::now();
        for slot in slots.iter_mut() {
            let Some(due) = slot.next else { continue };
            if due > now {
                continue;
            }
            let name = slot.job.pipeline.name.clone();
            if slot.running.as_ref().is_some_and(|h| !h.is_finished()) {
                tracing::warn!(pipeline = %name, "previous run still going; skipping this tick");
                bump(
                    &mut summary.lock().expect("poisoned").skipped_overlap,
                    &name,
                );
            } else {
                bump(&mut summary.lock().expect("poisoned").started, &name);
                let p = slot.job.pipeline.clone();
                let runner = runner.clone();
                let c = cancel.clone();
                let resume = slot.resume.take();
                let sum = summary.clone();
                slot.running = Some(tokio::spawn(async move {
                    tracing::info!(pipeline = %p.name, resume = resume.as_deref().unwrap_or(""), "run starting");
                    match runner.run(&p, resume, c).await {
                        Ok(r) => {
                            tracing::info!(pipeline = %p.name, run = %r.run_id, status = ?r.status, snapshot = r.snapshot.as_deref().unwrap_or(""), "run finished")
                        }
                        Err(e) => {
                            tracing::error!(pipeline = %p.name, "run failed: {e}");
                            bump(&mut sum.lock().expect("poisoned").errors, &p.name);
                        }
                    }
                }));
            }
            // Ticks missed while running are not queued: the next one after now.
            slot.next = slot.job.next_after(now.max(due));
        }
        let earliest = slots.iter().filter_map(|s| s.next).min();
        let wait = earliest
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600))
            // Wake at least every minute so clock jumps are noticed.
            .min(Duration::from_secs(60))
            + Duration::from_millis(5);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!("scheduler stopping: waiting for running backups to stop (they stay resumable)");
    for slot in slots.iter_mut() {
        if let Some(h) = slot.running.take() {
            let _ = h.await;
        }
    }
    let s = summary.lock().expect("poisoned").clone();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(cron: Option<&str>) -> Pipeline {
        let text = format!(
            "name = \"p\"\n[source]\ntype = \"fs\"\nroot = \"/tmp\"\n[target]\nurl = \"memory://sched-unit\"\n{}",
            cron.map(|c| format!("[schedule]\ncron = \"{c}\"\n"))
                .unwrap_or_default()
        );
        Pipeline::parse(std::path::Path::new("p.toml"), &text).unwrap()
    }

    #[test]
    fn next_times_are_utc_cron() {
        let j = Job::from_pipeline(pipeline(Some("30 2 * * *")))
            .unwrap()
            .unwrap();
        let t: DateTime<Utc> = "2026-03-01T02:30:00Z".parse().unwrap();
        assert_eq!(
            j.upcoming(t, 2),
            vec![
                "2026-03-02T02:30:00Z".parse::<DateTime<Utc>>().unwrap(),
                "2026-03-03T02:30:00Z".parse().unwrap()
            ]
        );
        assert!(Job::from_pipeline(pipeline(None)).unwrap().is_none());
        let s = Job::with_expr(pipeline(None), "*/2 * * * * *").unwrap();
        let t: DateTime<Utc> = "2026-03-01T00:00:01Z".parse().unwrap();
        assert_eq!(
            s.next_after(t),
            Some("2026-03-01T00:00:02Z".parse().unwrap())
        );
    }

    #[test]
    fn bad_cron_is_a_config_error() {
        let text = "name = \"p\"\n[source]\ntype = \"fs\"\nroot = \"/tmp\"\n[target]\nurl = \"memory://x\"\n[schedule]\ncron = \"61 * * * *\"\n";
        let e = Pipeline::parse(std::path::Path::new("p.toml"), text).unwrap_err();
        assert!(e.to_string().contains("schedule.cron"), "{e}");
    }
}
