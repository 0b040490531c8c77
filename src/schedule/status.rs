//! Freshness (RPO) checks and the status of pipelines.
//!
//! The question a heartbeat must answer is not "did the last job exit 0" but "do we
//! hold a recent backup we know is good". [`check_pipeline`] therefore looks only at
//! **verified** snapshots (newest verify report without mismatches) and compares the
//! time the newest one was taken (its run's start: the data is at least that old) with
//! the pipeline's RPO (`[freshness] rpo`, else the `--max-age` default). A pipeline with
//! no verified snapshot, or whose store cannot be read, is stale: nothing proves it
//! fresh. Stale pipelines raise a `stale` alert on their webhooks.
//!
//! [`status`] gathers what an operator wants on one screen: last run and its outcome
//! (run records), newest verified snapshot and its age against the RPO, stored bytes by
//! access tier (a listing of `packs/`), the last verify report and the last restore
//! drill with its measured restore time.

use crate::support::out::outln;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alert::{self, Alert, AlertOutcome, Event};
use crate::error::{Error, Result};
use crate::manifest::catalog;
use crate::manifest::layout::{Layout, Repo};
use crate::manifest::records::{DrillRecordView, RunRecord, RunStatus, VerifyRecord};
use crate::pipeline::{Needs, Pipeline};
use crate::store::{list_all, BlobStore, ListItem};
use crate::support::units::human;

/// Load one pipeline file, or every `*.toml` in a directory (sorted by name). Each file
/// keeps its own result so one bad file does not hide the others.
///
/// # Errors
/// `Config` when `path` is neither a readable file nor a directory.
pub fn load_pipelines(path: &Path, needs: Needs) -> Result<Vec<(PathBuf, Result<Pipeline>)>> {
    if path.is_dir() {
        let rd = std::fs::read_dir(path)
            .map_err(|e| Error::config(format!("cannot read directory {}: {e}", path.display())))?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::config(format!(
                "no pipeline files (*.toml) in {}",
                path.display()
            )));
        }
        Ok(files
            .into_iter()
            .map(|f| {
                let p = Pipeline::load_for(&f, needs);
                (f, p)
            })
            .collect())
    } else if path.is_file() {
        Ok(vec![(path.to_path_buf(), Pipeline::load_for(path, needs))])
    } else {
        Err(Error::config(format!(
            "{} is neither a pipeline file nor a directory of them",
            path.display()
        )))
    }
}

/// The newest readable snapshot whose newest verify report has no mismatch (a damaged
/// snapshot, whose manifest cannot be read, never counts).
///
/// # Errors
/// Store errors.
pub async fn newest_verified(
    store: &dyn BlobStore,
    layout: &Layout,
) -> Result<Option<catalog::SnapshotInfo>> {
    Ok(catalog::list(store, layout)
        .await?
        .into_iter()
        .rev()
        .find(catalog::SnapshotInfo::verified))
}

/// Freshness of one pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// Pipeline name.
    pub pipeline: String,
    /// Pipeline file.
    pub file: PathBuf,
    /// Allowed age in seconds (the pipeline's RPO, else `--max-age`).
    pub max_age_seconds: u64,
    /// Where the limit came from: `rpo` or `max-age`.
    pub limit_from: String,
    /// Newest verified snapshot.
    pub newest_verified: Option<String>,
    /// When that snapshot's run started (the data is at least this old).
    pub taken_at: Option<DateTime<Utc>>,
    /// Its age in seconds.
    pub age_seconds: Option<f64>,
    /// Older than allowed, none at all, or unknown (store unreadable).
    pub stale: bool,
    /// One line for humans.
    pub reason: String,
    /// Store error, if the check could not read the store.
    pub error: Option<String>,
    /// Stale alerts delivered (or not).
    pub alerts: Vec<AlertOutcome>,
}

/// The limit for `p`: its RPO, else `default`.
///
/// # Errors
/// `Config` when the pipeline has no RPO and no default was given.
pub fn limit_for(p: &Pipeline, default: Option<Duration>) -> Result<(Duration, &'static str)> {
    match (p.rpo, default) {
        (Some(r), _) => Ok((r, "rpo")),
        (None, Some(d)) => Ok((d, "max-age")),
        (None, None) => Err(Error::config(format!(
            "pipeline {} has no [freshness] rpo; pass --max-age (e.g. 26h) or add `[freshness] rpo = \"26h\"` to {}",
            p.name,
            p.file.display()
        ))),
    }
}

/// Check `p` against its RPO (or `default_max_age`) at `now`, opening its store, and send
/// `stale` alerts when it is stale.
///
/// # Errors
/// `Config` when no limit applies. Store errors are not errors: they make the pipeline
/// stale, with the error in the result.
pub async fn check_pipeline(
    p: &Pipeline,
    default_max_age: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Freshness> {
    let (limit, from) = limit_for(p, default_max_age)?;
    let found = match Repo::open(&p.target, &p.retry).await {
        Ok(repo) => newest_verified(&*repo.store, &repo.layout).await,
        Err(e) => Err(e),
    };
    let mut f = Freshness {
        pipeline: p.name.clone(),
        file: p.file.clone(),
        max_age_seconds: limit.as_secs(),
        limit_from: from.to_string(),
        newest_verified: None,
        taken_at: None,
        age_seconds: None,
        stale: true,
        reason: String::new(),
        error: None,
        alerts: vec![],
    };
    match found {
        Err(e) => {
            f.reason = format!("cannot read the store, so nothing proves a recent backup: {e}");
            f.error = Some(e.to_string());
        }
        Ok(None) => {
            f.reason = "no verified snapshot at all".into();
        }
        Ok(Some(s)) => {
            let taken = s.header.as_ref().map_or(now, |h| h.started_at);
            let age = (now - taken).to_std().unwrap_or(Duration::ZERO);
            f.newest_verified = Some(s.id.clone());
            f.taken_at = Some(taken);
            f.age_seconds = Some(age.as_secs_f64());
            f.stale = age > limit;
            f.reason = format!(
                "newest verified snapshot {} is {} old ({} {})",
                s.id,
                fmt_age(age),
                if f.stale {
                    "over the limit of"
                } else {
                    "within"
                },
                fmt_age(limit)
            );
        }
    }
    if f.stale {
        let mut facts = vec![
            ("pipeline".to_string(), p.name.clone()),
            ("limit".to_string(), format!("{} ({from})", fmt_age(limit))),
            (
                "newest verified".to_string(),
                f.newest_verified.clone().unwrap_or_else(|| "none".into()),
            ),
        ];
        if let Some(a) = f.age_seconds {
            facts.push(("age".into(), fmt_age(Duration::from_secs_f64(a))));
        }
        facts.push(("target".into(), p.target.display_url.clone()));
        let a = Alert {
            pipeline: p.name.clone(),
            event: Event::Stale,
            title: format!("blobpipe {}: backups are STALE", p.name),
            summary: format!(
                "{}. Check the schedule and the last runs (`blobpipe status`).",
                f.reason
            ),
            run_id: None,
            snapshot: f.newest_verified.clone(),
            facts,
            at: now,
        };
        f.alerts = alert::notify(&p.alerts, &a).await;
    }
    Ok(f)
}

/// `90s`, `5m 3s`, `26h 0m`, `3d 4h`.
pub fn fmt_age(d: Duration) -> String {
    let s = d.as_secs();
    if s < 1 {
        format!("{}ms", d.as_millis())
    } else if s < 120 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m {}s", s / 60, s % 60)
    } else if s < 3 * 86_400 {
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d {}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// The last run of a pipeline, from its newest run record.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// How the run ended (printed `""` for a record without one, e.g. the retention
    /// record stored after the run's own).
    #[serde(serialize_with = "status_or_empty")]
    pub status: Option<RunStatus>,
    /// Start.
    pub started_at: Option<DateTime<Utc>>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
    /// Snapshot committed.
    pub snapshot: Option<String>,
    /// Error of a failed run.
    pub error: Option<String>,
    /// Alert deliveries that failed in that run.
    pub alerts_failed: usize,
}

/// The newest verify report of any snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    /// Snapshot verified.
    pub snapshot: String,
    /// When it finished.
    pub at: Option<DateTime<Utc>>,
    /// metadata, sample, full.
    pub mode: String,
    /// Mismatches found.
    pub mismatches: usize,
}

/// The newest restore drill.
#[derive(Debug, Clone, Serialize)]
pub struct DrillSummary {
    /// Snapshot restored.
    pub snapshot: Option<String>,
    /// When it finished.
    pub at: Option<DateTime<Utc>>,
    /// Whether everything restored and every hash matched.
    pub ok: bool,
    /// Measured restore time (seconds).
    pub rto_seconds: f64,
    /// Error, if it failed.
    pub error: Option<String>,
}

/// Stored packs of one access tier.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TierBytes {
    /// Pack blobs.
    pub packs: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Everything `blobpipe status` shows for one pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    /// Pipeline name.
    pub pipeline: String,
    /// Pipeline file.
    pub file: PathBuf,
    /// Target (redacted).
    pub target: String,
    /// Cron schedule, if any.
    pub schedule: Option<String>,
    /// Last run.
    pub last_run: Option<RunSummary>,
    /// Snapshots stored.
    pub snapshots: usize,
    /// Snapshots whose manifests cannot be read (damaged), oldest first.
    pub damaged: Vec<String>,
    /// Newest verified snapshot.
    pub newest_verified: Option<String>,
    /// Its age (seconds).
    pub age_seconds: Option<f64>,
    /// The pipeline's RPO (seconds), if set.
    pub rpo_seconds: Option<u64>,
    /// Whether the newest verified snapshot is within the RPO (`None` without an RPO).
    pub within_rpo: Option<bool>,
    /// Pack bytes by access tier.
    pub stored_by_tier: BTreeMap<String, TierBytes>,
    /// Last verify report.
    pub last_verify: Option<VerifySummary>,
    /// Last restore drill.
    pub last_drill: Option<DrillSummary>,
    /// `[immutability]`: how many snapshots are write-once and until when (absent when
    /// none is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub immutability: Option<ImmutabilityStatus>,
    /// Error reading the store.
    pub error: Option<String>,
}

/// Which snapshots are under an immutability policy or legal hold now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImmutabilityStatus {
    /// Snapshots that cannot be deleted now.
    pub protected: usize,
    /// Snapshots stored.
    pub of: usize,
    /// The soonest a protected snapshot's policy ends.
    pub first_until: Option<DateTime<Utc>>,
    /// The latest a protected snapshot's policy ends (the newest snapshot's, usually).
    pub last_until: Option<DateTime<Utc>>,
    /// Snapshots under a legal hold (no end date).
    pub legal_holds: usize,
    /// Per protected snapshot: id and until when (oldest snapshot first).
    pub snapshots: Vec<(String, Option<DateTime<Utc>>)>,
}

/// The last path segment without `.json`: the stamp records are named by.
fn stamp_of(item: &ListItem) -> &str {
    item.name
        .rsplit('/')
        .next()
        .unwrap_or("")
        .trim_end_matches(".json")
}

fn newest(items: &[ListItem]) -> Option<&ListItem> {
    items
        .iter()
        .filter(|i| i.name.ends_with(".json"))
        .max_by(|a, b| stamp_of(a).cmp(stamp_of(b)))
}

fn status_or_empty<S: serde::Serializer>(s: &Option<RunStatus>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.map_or("", RunStatus::as_str))
}

/// Read a stored record back as `T` (an undecodable record is `Integrity`).
async fn read_record<T: serde::de::DeserializeOwned>(
    store: &dyn BlobStore,
    name: &str,
) -> Result<T> {
    let body = store.get(name, None).await?;
    serde_json::from_slice(&body)
        .map_err(|e| Error::decode(format!("malformed JSON record {name}"), e))
}

/// The newest run record of a pipeline.
///
/// # Errors
/// Store errors.
pub async fn last_run(store: &dyn BlobStore, layout: &Layout) -> Result<Option<RunSummary>> {
    let items = list_all(store, &layout.runs()).await?;
    let Some(item) = newest(&items) else {
        return Ok(None);
    };
    let r: RunRecord = read_record(store, &item.name).await?;
    Ok(Some(RunSummary {
        alerts_failed: r.alerts_failed(),
        run_id: r.run_id,
        status: r.status,
        started_at: r.started_at,
        finished_at: r.finished_at,
        snapshot: r.snapshot,
        error: r.error,
    }))
}

/// When the newest run of a pipeline started (from its newest run record).
///
/// # Errors
/// Store errors.
pub async fn last_run_time(
    store: &dyn BlobStore,
    layout: &Layout,
) -> Result<Option<DateTime<Utc>>> {
    Ok(last_run(store, layout)
        .await?
        .and_then(|r| r.started_at.or(r.finished_at)))
}

/// Status of one pipeline at `now`.
pub async fn status(p: &Pipeline, now: DateTime<Utc>) -> PipelineStatus {
    let mut st = PipelineStatus {
        pipeline: p.name.clone(),
        file: p.file.clone(),
        target: format!(
            "{} container {} prefix {}",
            p.target.display_url, p.target.container, p.target.prefix
        ),
        schedule: p.schedule.clone(),
        last_run: None,
        snapshots: 0,
        damaged: vec![],
        newest_verified: None,
        age_seconds: None,
        rpo_seconds: p.rpo.map(|d| d.as_secs()),
        within_rpo: None,
        stored_by_tier: BTreeMap::new(),
        last_verify: None,
        last_drill: None,
        immutability: None,
        error: None,
    };
    if let Err(e) = fill(p, &mut st, now).await {
        st.error = Some(e.to_string());
    }
    st
}

async fn fill(p: &Pipeline, st: &mut PipelineStatus, now: DateTime<Utc>) -> Result<()> {
    let Repo { store: s, layout } = Repo::open(&p.target, &p.retry).await?;
    let store = &*s;
    st.last_run = last_run(store, &layout).await?;
    let list = catalog::list(store, &layout).await?;
    st.snapshots = list.len();
    st.damaged = list
        .iter()
        .filter(|s| s.damaged.is_some())
        .map(|s| s.id.clone())
        .collect();
    if let Some((v, h)) = list
        .iter()
        .rev()
        .filter(|s| s.verified())
        .find_map(|s| s.header.as_ref().map(|h| (s, h)))
    {
        let age = (now - h.started_at).to_std().unwrap_or(Duration::ZERO);
        st.newest_verified = Some(v.id.clone());
        st.age_seconds = Some(age.as_secs_f64());
        st.within_rpo = p.rpo.map(|r| age <= r);
    } else if p.rpo.is_some() {
        st.within_rpo = Some(false);
    }
    let held: Vec<_> = list
        .iter()
        .filter_map(|s| {
            s.protection
                .as_ref()
                .filter(|r| r.holds(now))
                .map(|r| (s, r))
        })
        .collect();
    if !held.is_empty() {
        let untils = held.iter().filter_map(|(_, r)| r.until);
        st.immutability = Some(ImmutabilityStatus {
            protected: held.len(),
            of: list.len(),
            first_until: untils.clone().min(),
            last_until: untils.max(),
            legal_holds: held.iter().filter(|(_, r)| r.legal_hold).count(),
            snapshots: held.iter().map(|(s, r)| (s.id.clone(), r.until)).collect(),
        });
    }
    for item in list_all(store, &layout.packs()).await? {
        let t = st
            .stored_by_tier
            .entry(item.tier.as_str().to_string())
            .or_default();
        t.packs += 1;
        t.bytes += item.size;
    }
    let mut reports = list_all(store, &layout.verify_all()).await?;
    reports.retain(|i| !Layout::is_copied_report(&i.name));
    if let Some(item) = newest(&reports) {
        let v: VerifyRecord = read_record(store, &item.name).await?;
        st.last_verify = Some(VerifySummary {
            mismatches: v.mismatch_count(),
            snapshot: v.snapshot,
            at: v.finished_at,
            mode: v.mode.unwrap_or_default(),
        });
    }
    let drills = list_all(store, &layout.drills()).await?;
    if let Some(item) = newest(&drills) {
        let d: DrillRecordView = read_record(store, &item.name).await?;
        st.last_drill = Some(DrillSummary {
            snapshot: d.snapshot,
            at: d.finished_at,
            ok: d.ok,
            rto_seconds: d.rto_seconds,
            error: d.error,
        });
    }
    Ok(())
}

/// Print one pipeline's status for humans.
pub fn print_status(s: &PipelineStatus) {
    outln!("{} ({})", s.pipeline, s.file.display());
    outln!("  target:          {}", s.target);
    if let Some(c) = &s.schedule {
        outln!("  schedule:        {c} (UTC)");
    }
    if let Some(e) = &s.error {
        outln!("  ERROR:           {e}");
        return;
    }
    match &s.last_run {
        None => outln!("  last run:        none"),
        Some(r) => outln!(
            "  last run:        {} {} at {}{}{}",
            r.run_id,
            r.status.map_or("", RunStatus::as_str),
            r.finished_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_default(),
            r.error
                .as_deref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default(),
            if r.alerts_failed > 0 {
                format!(" ({} alert deliveries FAILED)", r.alerts_failed)
            } else {
                String::new()
            }
        ),
    }
    let rpo = s
        .rpo_seconds
        .map(|r| format!(" / RPO {}", fmt_age(Duration::from_secs(r))))
        .unwrap_or_default();
    match (&s.newest_verified, s.age_seconds) {
        (Some(id), Some(age)) => outln!(
            "  newest verified: {id}, {} old{rpo}{}",
            fmt_age(Duration::from_secs_f64(age)),
            match s.within_rpo {
                Some(false) => " — STALE",
                _ => "",
            }
        ),
        _ => outln!(
            "  newest verified: none{rpo}{}",
            if s.within_rpo == Some(false) {
                " — STALE"
            } else {
                ""
            }
        ),
    }
    outln!("  snapshots:       {}", s.snapshots);
    if let Some(i) = &s.immutability {
        let fmt = |t: Option<DateTime<Utc>>| {
            t.map(|t| t.format("%Y-%m-%d %H:%MZ").to_string())
                .unwrap_or_else(|| "-".into())
        };
        outln!(
            "  immutable:       {} of {} snapshots, until {} … {}{}",
            i.protected,
            i.of,
            fmt(i.first_until),
            fmt(i.last_until),
            if i.legal_holds > 0 {
                format!(" ({} under legal hold)", i.legal_holds)
            } else {
                String::new()
            }
        );
    }
    if !s.damaged.is_empty() {
        outln!(
            "  DAMAGED:         {} (manifest unreadable; skipped by backup and restore latest)",
            s.damaged.join(", ")
        );
    }
    if s.stored_by_tier.is_empty() {
        outln!("  stored:          nothing");
    }
    for (tier, t) in &s.stored_by_tier {
        outln!(
            "  stored ({tier:>7}): {} in {} packs",
            human(t.bytes),
            t.packs
        );
    }
    match &s.last_verify {
        None => outln!("  last verify:     none"),
        Some(v) => outln!(
            "  last verify:     {} of {} at {}: {}",
            v.mode,
            v.snapshot,
            v.at.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_default(),
            if v.mismatches == 0 {
                "ok".to_string()
            } else {
                format!("{} MISMATCHES", v.mismatches)
            }
        ),
    }
    match &s.last_drill {
        None => outln!("  last drill:      none"),
        Some(d) => outln!(
            "  last drill:      {} at {}: {} (restore took {:.1} s){}",
            d.snapshot.as_deref().unwrap_or("-"),
            d.at.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_default(),
            if d.ok { "ok" } else { "FAILED" },
            d.rto_seconds,
            d.error
                .as_deref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(fmt_age(Duration::from_millis(5)), "5ms");
        assert_eq!(fmt_age(Duration::from_secs(90)), "90s");
        assert_eq!(fmt_age(Duration::from_secs(26 * 3600)), "26h 0m");
        assert_eq!(fmt_age(Duration::from_secs(4 * 86_400)), "4d 0h");
    }
}
