//! The alerts a backup run raises: the runner, which owns a run, turns its report into
//! an [`Alert`] and hands it to the `alert` stage, which delivers it (the engine itself
//! never calls alerting).

use super::report::BackupReport;
use super::spec::Pipeline;
use crate::alert::{notify, Alert, AlertOutcome, Event};
use crate::manifest::records::RunStatus;
use crate::support::units::human;

/// The alert a finished backup run raises, if any.
pub fn run_alert(p: &Pipeline, r: &BackupReport) -> Option<Alert> {
    let event = Event::of_run(r.status)?;
    let secs = (r.finished_at - r.started_at).num_milliseconds() as f64 / 1000.0;
    let (title, summary) = match event {
        Event::Success => (
            format!("blobpipe {}: backup ok", p.name),
            format!(
                "Snapshot {} committed and verified.",
                r.snapshot.as_deref().unwrap_or("-")
            ),
        ),
        Event::Partial => (
            format!("blobpipe {}: backup PARTIAL", p.name),
            format!(
                "Snapshot {} committed, but {} file(s) could not be read and {} kept changing. Check the run record's problems.",
                r.snapshot.as_deref().unwrap_or("-"),
                r.problems.len(),
                r.inconsistent.len()
            ),
        ),
        Event::Mismatch => (
            format!("blobpipe {}: verification MISMATCH", p.name),
            format!(
                "Snapshot {} was committed but verification found {} mismatch(es): stored data differs from its hashes. Run `blobpipe verify --full` and check the store.",
                r.snapshot.as_deref().unwrap_or("-"),
                r.verify.as_ref().map(|v| v.mismatches.len()).unwrap_or(0)
            ),
        ),
        Event::Failure if r.status == RunStatus::CommittedUnverified => (
            format!("blobpipe {}: backup committed but UNVERIFIED", p.name),
            format!(
                "Snapshot {} was committed, but its verification could not complete: {}. Nothing proves it restores and it does not count as verified. Rerun with --run-id {} to verify it.",
                r.snapshot.as_deref().unwrap_or("-"),
                r.error.as_deref().unwrap_or("unknown error"),
                r.run_id
            ),
        ),
        Event::Failure => (
            format!("blobpipe {}: backup FAILED", p.name),
            format!(
                "Nothing was committed: {}. Rerun with --run-id {} to resume.",
                r.error.as_deref().unwrap_or("unknown error"),
                r.run_id
            ),
        ),
        Event::Stale => return None,
    };
    let mut facts = vec![
        ("pipeline".to_string(), p.name.clone()),
        ("run".to_string(), r.run_id.clone()),
        ("status".to_string(), r.status.to_string()),
        ("duration".to_string(), format!("{secs:.1} s")),
    ];
    if let Some(s) = &r.snapshot {
        facts.push(("snapshot".into(), s.clone()));
    }
    if r.status != RunStatus::Failed {
        facts.push(("files".into(), r.totals.files.to_string()));
        facts.push(("stored".into(), human(r.totals.stored_bytes)));
    }
    facts.push(("target".into(), p.target.display_url.clone()));
    Some(Alert {
        pipeline: p.name.clone(),
        event,
        title,
        summary,
        run_id: Some(r.run_id.clone()),
        snapshot: r.snapshot.clone(),
        facts,
        at: r.finished_at,
    })
}

/// Alert the pipeline's webhooks about a finished run; the outcomes for its run record.
pub async fn on_run(p: &Pipeline, r: &BackupReport) -> Vec<AlertOutcome> {
    if p.alerts.is_empty() {
        return Vec::new();
    }
    match run_alert(p, r) {
        Some(a) => notify(&p.alerts, &a).await,
        None => Vec::new(),
    }
}
