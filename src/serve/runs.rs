//! Runs started or handed off by this server: their state, starting them, and finding them.
//!
//! A run of one pipeline never overlaps another within the process (the `active` map; the
//! run lock keeps processes apart). Finished runs stay in memory, newest [`KEEP_RUNS`], for
//! the status query; older ones, and runs from before a restart or run by a hand-off job,
//! are answered from their stored run record. Each finished run also feeds the counters
//! that [`super::metrics`] prints.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::handoff::HandoffMessage;
use super::App;
use crate::error::ErrorKind;
use crate::manifest::layout::Repo;
use crate::manifest::records::{RunRecord, RunStatus};
use crate::pipeline::Pipeline;
use crate::store;
use crate::support::ids;

/// Finished runs kept in memory for status queries.
const KEEP_RUNS: usize = 200;

/// Where a run started or handed off by this server is; printed lower-case (`"state"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunPhase {
    /// Handed off to the queue; a job will run it.
    Queued,
    /// Running in this server.
    Running,
    /// Committed and verified.
    Ok,
    /// Committed with unreadable or changing files.
    Partial,
    /// Committed, verification found a mismatch.
    Mismatch,
    /// Committed, but the verification could not complete (not ok; rerun the run id).
    #[serde(rename = "committed_unverified")]
    CommittedUnverified,
    /// Nothing committed.
    Failed,
    /// Stopped by a signal.
    Cancelled,
    /// Another run held the pipeline's lock.
    Locked,
}

impl RunPhase {
    /// The lower-case name printed in `"state"` and the metrics' `status` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Queued => "queued",
            RunPhase::Running => "running",
            RunPhase::Ok => "ok",
            RunPhase::Partial => "partial",
            RunPhase::Mismatch => "mismatch",
            RunPhase::CommittedUnverified => "committed_unverified",
            RunPhase::Failed => "failed",
            RunPhase::Cancelled => "cancelled",
            RunPhase::Locked => "locked",
        }
    }

    /// The phase a finished run ended in.
    pub fn of_run(s: RunStatus) -> Self {
        match s {
            RunStatus::Ok => RunPhase::Ok,
            RunStatus::Partial => RunPhase::Partial,
            RunStatus::Mismatch => RunPhase::Mismatch,
            RunStatus::CommittedUnverified => RunPhase::CommittedUnverified,
            RunStatus::Failed => RunPhase::Failed,
            RunStatus::Cancelled => RunPhase::Cancelled,
        }
    }

    /// The phase a run that returned an error ended in.
    pub fn of_error(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Locked => RunPhase::Locked,
            ErrorKind::Cancelled => RunPhase::Cancelled,
            _ => RunPhase::Failed,
        }
    }
}

impl std::fmt::Display for RunPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one run started by this server.
#[derive(Debug, Clone, Serialize)]
pub struct RunState {
    /// Run id.
    pub run_id: String,
    /// Pipeline.
    pub pipeline: String,
    /// `queued`, `running`, or how the run ended.
    pub state: RunPhase,
    /// `timer` or `http`.
    pub trigger: String,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
    /// Snapshot committed.
    pub snapshot: Option<String>,
    /// Error of a failed run.
    pub error: Option<String>,
}

pub(super) fn start(
    app: &Arc<App>,
    p: &Pipeline,
    run_id: String,
    trigger: &str,
) -> std::result::Result<tokio::sync::oneshot::Receiver<RunState>, String> {
    let state = RunState {
        run_id: run_id.clone(),
        pipeline: p.name.clone(),
        state: RunPhase::Running,
        trigger: trigger.into(),
        started_at: Utc::now(),
        finished_at: None,
        snapshot: None,
        error: None,
    };
    {
        let mut sh = app.shared.lock().expect("poisoned");
        if let Some(r) = sh.active.get(&p.name) {
            return Err(r.clone());
        }
        sh.active.insert(p.name.clone(), run_id.clone());
        sh.runs.insert(run_id.clone(), state.clone());
        sh.order.push_back(run_id.clone());
        while sh.order.len() > KEEP_RUNS {
            if let Some(old) = sh.order.pop_front() {
                if sh
                    .runs
                    .get(&old)
                    .is_some_and(|r| r.state != RunPhase::Running)
                {
                    sh.runs.remove(&old);
                } else {
                    sh.order.push_back(old);
                    break;
                }
            }
        }
        sh.metrics.entry(p.name.clone()).or_default().in_progress += 1;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let app2 = app.clone();
    let p = p.clone();
    let handle = tokio::spawn(async move {
        let res = app2
            .runner
            .run(&p, Some(run_id.clone()), app2.cancel.clone())
            .await;
        let mut st = state;
        st.finished_at = Some(Utc::now());
        let mut sh = app2.shared.lock().expect("poisoned");
        let m = sh.metrics.entry(p.name.clone()).or_default();
        m.in_progress = m.in_progress.saturating_sub(1);
        match res {
            Ok(r) => {
                st.state = RunPhase::of_run(r.status);
                st.snapshot = r.snapshot.clone();
                st.error = r.error.clone();
                m.source_bytes += r.totals.bytes;
                m.stored_bytes += r.totals.stored_bytes;
                if matches!(
                    r.status,
                    RunStatus::Failed | RunStatus::Mismatch | RunStatus::CommittedUnverified
                ) {
                    m.failures += 1;
                }
            }
            Err(e) => {
                st.state = RunPhase::of_error(e.kind());
                if st.state == RunPhase::Failed {
                    m.failures += 1;
                }
                st.error = Some(e.to_string());
            }
        }
        *m.runs.entry(st.state.as_str().to_string()).or_default() += 1;
        m.last_duration = Some(
            (st.finished_at.unwrap_or(st.started_at) - st.started_at).num_milliseconds() as f64
                / 1000.0,
        );
        m.last_finished = st.finished_at;
        sh.runs.insert(st.run_id.clone(), st.clone());
        sh.active.remove(&p.name);
        drop(sh);
        let _ = tx.send(st);
    });
    let mut tasks = app.tasks.lock().expect("poisoned");
    tasks.retain(|t| !t.is_finished());
    tasks.push(handle);
    Ok(rx)
}

/// Put a run of `p` on its hand-off queue. `Ok`: what to answer (run id, `queued`);
/// `Err`: the failure, as an answer body.
pub(super) async fn hand_off(
    app: &Arc<App>,
    p: &Pipeline,
    run_id: String,
    trigger: &str,
    past_due: bool,
    logs: &mut Vec<String>,
) -> std::result::Result<Value, Value> {
    let Some(client) = app.handoff.get(&p.name) else {
        return Err(json!({"error": "no hand-off queue"}));
    };
    let msg = HandoffMessage {
        pipeline: p.name.clone(),
        run_id: run_id.clone(),
        requested_at: Utc::now(),
        past_due,
        trigger: Some(trigger.to_string()),
    };
    let queue = client.display();
    match super::handoff::enqueue(client, &msg).await {
        Ok(message_id) => {
            let line = format!(
                "run {run_id} of {} handed off to {queue} ({trigger}, message {message_id})",
                p.name
            );
            tracing::info!("{line}");
            logs.push(line);
            let st = RunState {
                run_id: run_id.clone(),
                pipeline: p.name.clone(),
                state: RunPhase::Queued,
                trigger: trigger.into(),
                started_at: msg.requested_at,
                finished_at: None,
                snapshot: None,
                error: None,
            };
            let mut sh = app.shared.lock().expect("poisoned");
            sh.metrics.entry(p.name.clone()).or_default().handoffs += 1;
            if sh.runs.insert(run_id.clone(), st).is_none() {
                sh.order.push_back(run_id.clone());
                while sh.order.len() > KEEP_RUNS {
                    let Some(old) = sh.order.pop_front() else {
                        break;
                    };
                    if sh
                        .runs
                        .get(&old)
                        .is_some_and(|r| r.state == RunPhase::Running)
                    {
                        sh.order.push_back(old);
                        break;
                    }
                    sh.runs.remove(&old);
                }
            }
            Ok(
                json!({"run_id": run_id, "pipeline": p.name, "state": "queued",
                      "queue": queue, "message_id": message_id}),
            )
        }
        Err(e) => {
            let line = format!("hand-off of {} failed: {e}", p.name);
            tracing::error!("{line}");
            logs.push(line);
            app.shared
                .lock()
                .expect("poisoned")
                .metrics
                .entry(p.name.clone())
                .or_default()
                .handoff_failures += 1;
            Err(
                json!({"run_id": run_id, "pipeline": p.name, "state": "failed",
                       "error": format!("hand-off to {queue} failed: {e}")}),
            )
        }
    }
}

/// The status query for run `id`: from memory, except that a handed-off run answers its
/// job's run record once it has one; else the newest stored run record.
pub(super) async fn find(app: &App, id: &str, pipeline: Option<&str>) -> Option<Value> {
    let known = app.shared.lock().expect("poisoned").runs.get(id).cloned();
    match known {
        // A handed-off run: the job's run record, once it has one.
        Some(st) if st.state == RunPhase::Queued => {
            match stored_run(app, id, Some(&st.pipeline)).await {
                Some(v) => Some(v),
                None => Some(serde_json::to_value(st).unwrap_or(Value::Null)),
            }
        }
        Some(st) => Some(serde_json::to_value(st).unwrap_or(Value::Null)),
        None => stored_run(app, id, pipeline).await,
    }
}

/// The newest 50 runs in memory (of `pipeline`, if given) and the pipelines served.
pub(super) fn recent(app: &App, pipeline: Option<&str>) -> Value {
    let sh = app.shared.lock().expect("poisoned");
    let runs: Vec<&RunState> = sh
        .order
        .iter()
        .rev()
        .filter_map(|id| sh.runs.get(id))
        .filter(|r| pipeline.is_none_or(|p| r.pipeline == p))
        .take(50)
        .collect();
    json!({"runs": runs, "pipelines": app.pipelines.keys().collect::<Vec<_>>()})
}

/// A run's newest stored run record (runs from before a restart).
async fn stored_run(app: &App, id: &str, pipeline: Option<&str>) -> Option<Value> {
    if !ids::is_safe_segment(id) {
        return None;
    }
    for p in app.pipelines.values() {
        if pipeline.is_some_and(|n| n != p.name) {
            continue;
        }
        let Ok(Repo { store: s, layout }) = Repo::open(&p.target, &p.retry).await else {
            continue;
        };
        let prefix = layout.run_records(id);
        let Ok(items) = store::list_all(&*s, &prefix).await else {
            continue;
        };
        if let Some(newest) = items.iter().map(|i| &i.name).max() {
            if let Ok(b) = s.get(newest, None).await {
                // The record is answered as stored (every field, in order), with the
                // run's state taken from its typed status.
                let typed = serde_json::from_slice::<RunRecord>(&b);
                let raw = serde_json::from_slice::<serde_json::Map<String, Value>>(&b);
                if let (Ok(rec), Ok(mut v)) = (typed, raw) {
                    v.insert("state".into(), serde_json::to_value(rec.status).ok()?);
                    return Some(Value::Object(v));
                }
            }
        }
    }
    None
}
