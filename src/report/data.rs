//! What the dashboard shows, read from what a pipeline already stores.
//!
//! Sources, and only these: run records (`runs/`), manifest headers (through the
//! catalog's header reader), verify reports (`verify/`), drill records (`drills/`), the
//! pack listing (`packs/`, for bytes by tier) and [`crate::schedule::status::status`]
//! (the overview's figures are *its* figures, so the page and `status --json` agree).
//! Nothing is written.
//!
//! Memory stays flat with the length of the history: listings are paged and only the
//! newest [`ReportOptions::history`] record names of each kind are kept (a bounded
//! ordered set), records are read with bounded concurrency, and every chart is reduced
//! to at most [`ReportOptions::points`] points (runs grouped in equal buckets, packs
//! summed per day, the RPO curve sampled at fixed times).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::Deserialize;

use crate::error::Result;
use crate::manifest::catalog;
use crate::manifest::layout::{Layout, Repo};
use crate::manifest::records::{DrillRecordView, RunStatus, VerifyRecord};
use crate::manifest::{Changes, Header};
use crate::pipeline::Pipeline;
use crate::schedule::status::{self, PipelineStatus};
use crate::store::{BlobStore, Tier};

/// Records read at once from the store.
const READ_AHEAD: usize = 8;

/// How much history a report reads and how much it draws.
#[derive(Debug, Clone, Copy)]
pub struct ReportOptions {
    /// Newest run records, snapshots, verify reports and drills read per pipeline.
    pub history: usize,
    /// Most points one chart draws (runs beyond are grouped).
    pub points: usize,
    /// Rows of each table.
    pub rows: usize,
    /// "Now" for ages and the RPO curve.
    pub now: DateTime<Utc>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            history: 1000,
            points: 120,
            rows: 30,
            now: Utc::now(),
        }
    }
}

/// One run attempt as the dashboard reads its record.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunRow {
    /// Run id.
    pub run_id: String,
    /// Outcome (`None` for records without one).
    pub status: Option<RunStatus>,
    /// Start.
    pub started_at: Option<DateTime<Utc>>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
    /// Snapshot committed.
    pub snapshot: Option<String>,
    /// Error of a failed run.
    pub error: Option<String>,
    /// `full` or `incremental`.
    pub kind: Option<String>,
    /// Totals of the snapshot.
    pub totals: Option<RunTotals>,
    /// Changes against the parent.
    pub changes: Option<Changes>,
}

/// The totals of a run record the dashboard reads.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct RunTotals {
    /// Files.
    pub files: u64,
    /// Source bytes.
    pub bytes: u64,
    /// Pack bytes the snapshot references.
    pub stored_bytes: u64,
}

impl RunRow {
    /// Run time in seconds (0 when a time is missing).
    pub fn duration(&self) -> f64 {
        match (self.started_at, self.finished_at) {
            (Some(a), Some(b)) => (b - a).num_milliseconds().max(0) as f64 / 1000.0,
            _ => 0.0,
        }
    }

    /// Source bytes new or changed in this run (all of them for a full backup).
    pub fn bytes_added(&self) -> u64 {
        match (&self.changes, &self.totals) {
            (Some(c), _) => c.new_bytes + c.changed_bytes,
            (None, Some(t)) if self.status.is_some_and(RunStatus::committed) => t.bytes,
            _ => 0,
        }
    }

    /// When the run happened (start, else end).
    pub fn at(&self) -> Option<DateTime<Utc>> {
        self.started_at.or(self.finished_at)
    }
}

/// A listed snapshot with what the charts need.
#[derive(Debug, Clone)]
pub struct SnapRow {
    /// Snapshot id.
    pub id: String,
    /// Manifest header, `None` when damaged.
    pub header: Option<Header>,
    /// Why it is damaged.
    pub damaged: Option<String>,
    /// `ok`, `mismatch` or `unverified` (newest report of each mode, as the catalog).
    pub verify: &'static str,
}

/// A verify report.
#[derive(Debug, Clone)]
pub struct VerifyRow {
    /// Snapshot verified.
    pub snapshot: String,
    /// Mode.
    pub mode: String,
    /// End.
    pub at: Option<DateTime<Utc>>,
    /// Mismatches found.
    pub mismatches: usize,
    /// The report listed its mismatches and there were none.
    pub passed: bool,
}

/// A drill record.
#[derive(Debug, Clone)]
pub struct DrillRow {
    /// Snapshot restored.
    pub snapshot: Option<String>,
    /// End.
    pub at: Option<DateTime<Utc>>,
    /// Passed.
    pub ok: bool,
    /// Measured restore time (seconds).
    pub rto_seconds: f64,
    /// Error.
    pub error: Option<String>,
}

/// Pack bytes uploaded on one UTC day, by the tier the packs have now.
#[derive(Debug, Clone, Default)]
pub struct DayBytes {
    /// The day (midnight UTC).
    pub day: Option<DateTime<Utc>>,
    /// Bytes per tier: hot, cool, cold, archive.
    pub by_tier: [u64; 4],
}

/// Everything one pipeline page shows.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    /// The status (what `status --json` prints for the pipeline).
    pub status: PipelineStatus,
    /// File name of its page (`p-<name>.html`).
    pub page: String,
    /// Run records stored (all of them; only the newest `history` are read).
    pub runs_stored: usize,
    /// The newest run records read, oldest first.
    pub runs: Vec<RunRow>,
    /// Snapshots stored.
    pub snapshots_stored: usize,
    /// The newest snapshots read, oldest first.
    pub snapshots: Vec<SnapRow>,
    /// The newest verify reports read, oldest first.
    pub verifies: Vec<VerifyRow>,
    /// The newest drills read, oldest first.
    pub drills: Vec<DrillRow>,
    /// Pack bytes per upload day, oldest first.
    pub days: Vec<DayBytes>,
    /// When this report was read.
    pub now: DateTime<Utc>,
    /// What could not be read (the page says so instead of failing).
    pub error: Option<String>,
}

/// The whole dashboard.
#[derive(Debug, Clone)]
pub struct Site {
    /// One report per pipeline, in file order.
    pub pipelines: Vec<PipelineReport>,
    /// Pipeline files that did not load.
    pub errors: Vec<String>,
    /// When it was generated.
    pub generated_at: DateTime<Utc>,
    /// The options it was generated with.
    pub options: ReportOptions,
}

/// The page file name of pipeline `name`: `p-<name>.html`, characters outside
/// `[A-Za-z0-9_-]` replaced, so any name is one safe path segment.
pub fn page_name(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("p-{slug}.html")
}

/// Read the dashboard of `pipelines` (file, load result) — one bad file or unreadable
/// store does not stop the others.
pub async fn gather(
    pipelines: Vec<(std::path::PathBuf, Result<Pipeline>)>,
    opts: ReportOptions,
) -> Site {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut pages = BTreeSet::new();
    for (file, p) in pipelines {
        match p {
            Ok(p) => {
                let mut r = pipeline_report(&p, opts).await;
                // Two names that slug the same get distinct pages.
                let mut n = 2;
                let base = r.page.trim_end_matches(".html").to_string();
                while !pages.insert(r.page.clone()) {
                    r.page = format!("{base}-{n}.html");
                    n += 1;
                }
                out.push(r);
            }
            Err(e) => errors.push(format!("{}: {e}", file.display())),
        }
    }
    Site {
        pipelines: out,
        errors,
        generated_at: opts.now,
        options: opts,
    }
}

/// Read one pipeline's report. Store errors end up in `error`, never as a failure.
pub async fn pipeline_report(p: &Pipeline, opts: ReportOptions) -> PipelineReport {
    let mut r = PipelineReport {
        status: status::status(p, opts.now).await,
        page: page_name(&p.name),
        runs_stored: 0,
        runs: vec![],
        snapshots_stored: 0,
        snapshots: vec![],
        verifies: vec![],
        drills: vec![],
        days: vec![],
        now: opts.now,
        error: None,
    };
    if let Err(e) = fill(p, &mut r, opts).await {
        r.error = Some(e.to_string());
    }
    r
}

async fn fill(p: &Pipeline, r: &mut PipelineReport, opts: ReportOptions) -> Result<()> {
    let Repo { store, layout } = Repo::open(&p.target, &p.retry).await?;
    let store = &*store;
    let keep = opts.history.max(1);

    // Run records, newest `keep` by their time-sorted file name.
    let (names, total) = newest_names(store, &layout.runs(), keep, |n| {
        n.ends_with(".json") && !n.ends_with("-retention.json")
    })
    .await?;
    r.runs_stored = total;
    let mut runs: Vec<RunRow> = read_all(store, names).await;
    runs.sort_by_key(|x| x.at());
    r.runs = runs;

    // Snapshots: ids sort by time.
    let (ids, total) = newest_names(store, &layout.snapshots(), keep, |n| {
        Layout::snapshot_id_of(n).is_some()
    })
    .await?;
    r.snapshots_stored = total;
    let ids: Vec<String> = ids
        .iter()
        .filter_map(|n| Layout::snapshot_id_of(n).map(str::to_string))
        .collect();
    let headers: Vec<(String, Option<std::result::Result<Header, String>>)> =
        stream::iter(ids.into_iter().map(|id| async {
            let h = catalog::check_header(store, &layout, &id)
                .await
                .ok()
                .flatten();
            (id, h)
        }))
        .buffered(READ_AHEAD)
        .collect()
        .await;

    // Verify reports: the newest `keep` of any snapshot, plus every report of the
    // snapshots shown (their status is decided by the newest report of each mode).
    let wanted: BTreeSet<String> = headers.iter().map(|(id, _)| id.clone()).collect();
    let vprefix = layout.verify_all();
    let (vnames, _) = newest_names(store, &vprefix, keep, |n| {
        n.ends_with(".json") && !Layout::is_copied_report(n)
    })
    .await?;
    let reports: Vec<(String, VerifyRecord)> = stream::iter(vnames.into_iter().map(|n| async {
        let v: Option<VerifyRecord> = read_json(store, &n).await;
        v.map(|v| (n, v))
    }))
    .buffered(READ_AHEAD)
    .filter_map(|x| async { x })
    .collect()
    .await;
    let mut by_snap: BTreeMap<&str, Vec<(String, bool)>> = BTreeMap::new();
    for (_, v) in &reports {
        if wanted.contains(&v.snapshot) {
            let mode = v.mode.clone().unwrap_or_else(|| "?".into());
            let e = by_snap.entry(v.snapshot.as_str()).or_default();
            e.retain(|(m, _)| *m != mode);
            e.push((mode, v.passed()));
        }
    }
    r.snapshots = headers
        .into_iter()
        .filter_map(|(id, h)| {
            let h = h?;
            let verify = match by_snap.get(id.as_str()) {
                None => "unverified",
                Some(v) if v.iter().any(|(_, ok)| !ok) => "mismatch",
                Some(_) => "ok",
            };
            let (header, damaged) = match h {
                Ok(h) => (Some(h), None),
                Err(e) => (None, Some(e)),
            };
            Some(SnapRow {
                id,
                header,
                damaged,
                verify,
            })
        })
        .collect();
    let mut verifies: Vec<VerifyRow> = reports
        .into_iter()
        .map(|(_, v)| VerifyRow {
            passed: v.passed(),
            mismatches: v.mismatch_count(),
            mode: v.mode.unwrap_or_default(),
            at: v.finished_at,
            snapshot: v.snapshot,
        })
        .collect();
    verifies.sort_by_key(|v| v.at);
    r.verifies = verifies;

    // Drills: names are time stamps.
    let (dnames, _) = newest_names(store, &layout.drills(), keep, |n| n.ends_with(".json")).await?;
    let drills: Vec<DrillRecordView> = read_all(store, dnames).await;
    let mut drills: Vec<DrillRow> = drills
        .into_iter()
        .map(|d| DrillRow {
            snapshot: d.snapshot,
            at: d.finished_at,
            ok: d.ok,
            rto_seconds: d.rto_seconds,
            error: d.error,
        })
        .collect();
    drills.sort_by_key(|d| d.at);
    r.drills = drills;

    // Pack bytes per upload day, paged.
    let mut days: BTreeMap<chrono::NaiveDate, [u64; 4]> = BTreeMap::new();
    let mut marker = None;
    loop {
        let page = store.list(&layout.packs(), marker, 5000).await?;
        for it in page.items {
            let t = days.entry(it.last_modified.date_naive()).or_default();
            t[tier_index(it.tier)] += it.size;
        }
        match page.next {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    r.days = days
        .into_iter()
        .map(|(d, by_tier)| DayBytes {
            day: d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()),
            by_tier,
        })
        .collect();
    Ok(())
}

/// Index of a tier in [`DayBytes::by_tier`].
pub fn tier_index(t: Tier) -> usize {
    match t {
        Tier::Hot => 0,
        Tier::Cool => 1,
        Tier::Cold => 2,
        Tier::Archive => 3,
    }
}

/// The record stamp of a name: its last segment (time-sorted for run, verify and drill
/// records; the id for manifests).
fn stamp(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The newest `keep` names under `prefix` that pass `want` (by their last segment), in
/// stamp order, and how many passed in all. Pages through the listing; holds at most
/// `keep` names.
async fn newest_names(
    store: &dyn BlobStore,
    prefix: &str,
    keep: usize,
    want: impl Fn(&str) -> bool,
) -> Result<(Vec<String>, usize)> {
    let mut top: BTreeSet<(String, String)> = BTreeSet::new();
    let mut total = 0;
    let mut marker = None;
    loop {
        let page = store.list(prefix, marker, 5000).await?;
        for it in page.items {
            if !want(&it.name) {
                continue;
            }
            total += 1;
            top.insert((stamp(&it.name).to_string(), it.name));
            if top.len() > keep {
                top.pop_first();
            }
        }
        match page.next {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    Ok((top.into_iter().map(|(_, n)| n).collect(), total))
}

/// Read a JSON record; an unreadable one is skipped with a warning (the page shows what
/// can be read).
async fn read_json<T: serde::de::DeserializeOwned>(store: &dyn BlobStore, name: &str) -> Option<T> {
    match store.get(name, None).await {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("dashboard: ignoring malformed record {name}: {e}");
                None
            }
        },
        Err(e) => {
            tracing::warn!("dashboard: cannot read {name}: {e}");
            None
        }
    }
}

async fn read_all<T: serde::de::DeserializeOwned>(
    store: &dyn BlobStore,
    names: Vec<String>,
) -> Vec<T> {
    stream::iter(
        names
            .into_iter()
            .map(|n| async move { read_json::<T>(store, &n).await }),
    )
    .buffered(READ_AHEAD)
    .filter_map(|x| async { x })
    .collect()
    .await
}

/// Groups `n` items into at most `max` consecutive buckets of near-equal size; each
/// bucket is a range of indices.
pub fn buckets(n: usize, max: usize) -> Vec<std::ops::Range<usize>> {
    let max = max.max(1);
    if n <= max {
        return (0..n).map(|i| i..i + 1).collect();
    }
    (0..max)
        .map(|b| (b * n / max)..((b + 1) * n / max))
        .collect()
}

/// The age of the newest verified snapshot at `t`, given verified snapshots as (commit
/// time, taken time) sorted by commit time; `None` before the first.
pub fn age_at(verified: &[(DateTime<Utc>, DateTime<Utc>)], t: DateTime<Utc>) -> Option<f64> {
    let k = verified.partition_point(|(c, _)| *c <= t);
    if k == 0 {
        return None;
    }
    // The newest taken among those committed by `t` (commit order ≈ taken order).
    let taken = verified[..k].iter().map(|(_, s)| *s).max()?;
    Some((t - taken).num_milliseconds().max(0) as f64 / 1000.0)
}

impl PipelineReport {
    /// Verified snapshots as (commit time, taken time), by commit time.
    pub fn verified_times(&self) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut v: Vec<_> = self
            .snapshots
            .iter()
            .filter(|s| s.verify == "ok")
            .filter_map(|s| s.header.as_ref().map(|h| (h.committed_at, h.started_at)))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_everything_once() {
        assert_eq!(buckets(3, 10), vec![0..1, 1..2, 2..3]);
        let b = buckets(1000, 120);
        assert_eq!(b.len(), 120);
        assert_eq!(b[0].start, 0);
        assert_eq!(b.last().unwrap().end, 1000);
        for w in b.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert!(!w[0].is_empty());
        }
        assert!(buckets(0, 5).is_empty());
    }

    #[test]
    fn page_names_are_one_safe_segment() {
        assert_eq!(page_name("db-main"), "p-db-main.html");
        assert_eq!(page_name("../x y"), "p-___x_y.html");
    }

    #[test]
    fn age_follows_the_newest_verified_snapshot() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let h = chrono::Duration::hours(1);
        let v = vec![(t0 + h, t0), (t0 + h * 5, t0 + h * 4)];
        assert_eq!(age_at(&v, t0), None);
        assert_eq!(age_at(&v, t0 + h * 2), Some(7200.0));
        assert_eq!(age_at(&v, t0 + h * 6), Some(7200.0));
    }
}
