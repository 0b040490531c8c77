//! `GET /metrics`: Prometheus text (format 0.0.4) for the runs of this process.
//!
//! Counters and gauges come from what [`super::runs`] records as runs end; the age of each
//! pipeline's newest snapshot is read from the store at scrape time, so it stays true for
//! snapshots written by other processes (a hand-off job, a cron on another host).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::App;
use crate::manifest::catalog;
use crate::manifest::layout::Repo;

/// Per-pipeline counters, updated as runs start, end or are handed off.
#[derive(Debug, Default, Clone)]
pub(super) struct PipelineMetrics {
    /// Finished runs by phase name.
    pub(super) runs: BTreeMap<String, u64>,
    /// Runs that failed or found a mismatch.
    pub(super) failures: u64,
    /// Source bytes of committed snapshots.
    pub(super) source_bytes: u64,
    /// Stored bytes of committed snapshots.
    pub(super) stored_bytes: u64,
    /// Seconds the last finished run took.
    pub(super) last_duration: Option<f64>,
    /// When the last run finished.
    pub(super) last_finished: Option<DateTime<Utc>>,
    /// Runs going now.
    pub(super) in_progress: u64,
    /// Runs put on the hand-off queue.
    pub(super) handoffs: u64,
    /// Hand-offs that could not be put on the queue.
    pub(super) handoff_failures: u64,
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) async fn metrics_text(app: &App) -> String {
    let metrics = app.shared.lock().expect("poisoned").metrics.clone();
    let mut ages = BTreeMap::new();
    for p in app.pipelines.values() {
        let age = async {
            let repo = Repo::open(&p.target, &p.retry).await.ok()?;
            let ids = catalog::snapshot_ids(&*repo.store, &repo.layout)
                .await
                .ok()?;
            let t = catalog::id_time(ids.last()?)?;
            Some((Utc::now() - t).num_milliseconds() as f64 / 1000.0)
        }
        .await;
        if let Some(a) = age {
            ages.insert(p.name.clone(), a);
        }
    }
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in rows {
            out.push_str(&format!("{name}{{{labels}}} {v}\n"));
        }
    };
    let per = |f: &dyn Fn(&PipelineMetrics) -> Option<String>| -> Vec<(String, String)> {
        metrics
            .iter()
            .filter_map(|(n, m)| f(m).map(|v| (format!("pipeline=\"{}\"", label(n)), v)))
            .collect()
    };
    let mut runs = Vec::new();
    for (n, m) in &metrics {
        for (status, c) in &m.runs {
            runs.push((
                format!("pipeline=\"{}\",status=\"{}\"", label(n), label(status)),
                c.to_string(),
            ));
        }
    }
    family(
        "blobpipe_runs_total",
        "counter",
        "Runs finished by this process, by outcome.",
        runs,
    );
    family(
        "blobpipe_run_failures_total",
        "counter",
        "Runs that failed or found a mismatch.",
        per(&|m| Some(m.failures.to_string())),
    );
    family(
        "blobpipe_runs_in_progress",
        "gauge",
        "Runs going now.",
        per(&|m| Some(m.in_progress.to_string())),
    );
    family(
        "blobpipe_source_bytes_total",
        "counter",
        "Source bytes of the snapshots committed by this process.",
        per(&|m| Some(m.source_bytes.to_string())),
    );
    family(
        "blobpipe_stored_bytes_total",
        "counter",
        "Stored (compressed) bytes of the snapshots committed by this process.",
        per(&|m| Some(m.stored_bytes.to_string())),
    );
    family(
        "blobpipe_handoffs_total",
        "counter",
        "Runs put on the hand-off queue.",
        per(&|m| Some(m.handoffs.to_string())),
    );
    family(
        "blobpipe_handoff_failures_total",
        "counter",
        "Hand-offs that could not be put on the queue.",
        per(&|m| Some(m.handoff_failures.to_string())),
    );
    family(
        "blobpipe_last_run_duration_seconds",
        "gauge",
        "Duration of the last finished run.",
        per(&|m| m.last_duration.map(|d| format!("{d:.3}"))),
    );
    family(
        "blobpipe_last_run_finished_timestamp_seconds",
        "gauge",
        "Unix time the last run finished.",
        per(&|m| m.last_finished.map(|t| t.timestamp().to_string())),
    );
    family(
        "blobpipe_newest_snapshot_age_seconds",
        "gauge",
        "Age of the newest snapshot in the store (from its id; see `blobpipe check` for verified freshness).",
        ages.iter().map(|(n, a)| (format!("pipeline=\"{}\"", label(n)), format!("{a:.3}"))).collect(),
    );
    out
}
