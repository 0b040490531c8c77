//! Retention: which snapshots to keep (`forget`) and which packs can go (`prune`).
//!
//! Two steps, on purpose:
//!
//! * [`evaluate`] is pure: given the snapshot ids (their times come from the id, see
//!   [`catalog::id_time`]) and a [`RetentionConfig`], it decides, restic-like, which
//!   snapshots survive and *which rules* keep each survivor. Buckets are UTC hours,
//!   days, ISO weeks, months and years; walking newest first, a rule keeps the newest
//!   snapshot of each bucket until it has kept its count. `keep_last` keeps the newest
//!   N; `keep_within` keeps everything taken within that long of the *newest* snapshot
//!   (not of now: a pipeline that stopped backing up does not lose its history).
//! * [`forget`] deletes the manifests of the snapshots that go — nothing else. A snapshot
//!   exists iff its manifest exists, so this is the whole of "deleting a snapshot".
//! * [`prune`] deletes packs that no remaining manifest references, and only when they
//!   are older than the grace period (blob `last_modified`); it also deletes part
//!   records of runs that committed or were abandoned longer than the grace ago, and the
//!   verify reports of forgotten snapshots.
//!
//! Invariants: both run under the pipeline's run lock ([`RunLock`]), so no backup runs
//! while they change the store; and even without that, a pack younger than the grace
//! period, or referenced by any remaining manifest or by the part records of an
//! unfinished run, is never deleted. Manifests are streamed one at a time: memory grows
//! with the number of packs, not with the number of files or snapshots.

pub mod config;
pub mod immutability;
pub mod lifecycle;
pub mod repack;
pub mod usage;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

use self::config::RetentionConfig;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::manifest::catalog;
use crate::manifest::crypt::EncryptionConfig;
use crate::manifest::layout::Layout;
use crate::manifest::lock::RunLock;
use crate::manifest::moved;
use crate::manifest::records::{PlanHead, RunRecord, RunStatus};
use crate::manifest::Line;
use crate::store::{list_all, BlobStore, Store, Tier};
use crate::support::cancel::Cancel;

/// One rule that keeps a snapshot, with the bucket it kept it for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// `last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`, `within`, `undated`,
    /// `pending-run`, `damaged` (a manifest that cannot be read is never forgotten) or
    /// `immutable` (under an immutability policy or legal hold: the store would refuse;
    /// the bucket says until when).
    pub rule: &'static str,
    /// The bucket (`2026-11-20`, `2026-W47`, …), for bucketed rules.
    pub bucket: Option<String>,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.bucket {
            Some(b) => write!(f, "{} {b}", self.rule),
            None => f.write_str(self.rule),
        }
    }
}

/// The decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Snapshot id.
    pub id: String,
    /// Time from the id (`None` for an id that does not start with one: always kept).
    pub time: Option<DateTime<Utc>>,
    /// Survives `forget`.
    pub keep: bool,
    /// Every rule that keeps it (empty when it goes).
    pub reasons: Vec<Reason>,
}

type Bucket = fn(DateTime<Utc>) -> String;

fn rules(p: &RetentionConfig) -> [(&'static str, u32, Bucket); 5] {
    [
        ("hourly", p.keep_hourly, |t| {
            t.format("%Y-%m-%dT%H").to_string()
        }),
        ("daily", p.keep_daily, |t| t.format("%Y-%m-%d").to_string()),
        ("weekly", p.keep_weekly, |t| {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }),
        ("monthly", p.keep_monthly, |t| t.format("%Y-%m").to_string()),
        ("yearly", p.keep_yearly, |t| t.format("%Y").to_string()),
    ]
}

/// Decide which of `ids` survive `policy`. Returns one decision per id, newest first.
pub fn evaluate(policy: &RetentionConfig, ids: &[String]) -> Vec<Decision> {
    let mut out: Vec<Decision> = ids
        .iter()
        .map(|id| Decision {
            id: id.clone(),
            time: catalog::id_time(id),
            keep: false,
            reasons: vec![],
        })
        .collect();
    // Newest first; ties (never, in practice) by id.
    out.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
    for d in out.iter_mut().filter(|d| d.time.is_none()) {
        d.reasons.push(Reason {
            rule: "undated",
            bucket: None,
        });
    }
    let dated: Vec<usize> = (0..out.len()).filter(|&i| out[i].time.is_some()).collect();
    for &i in dated.iter().take(policy.keep_last as usize) {
        out[i].reasons.push(Reason {
            rule: "last",
            bucket: None,
        });
    }
    for (name, count, bucket) in rules(policy) {
        let mut last: Option<String> = None;
        let mut kept = 0u32;
        for &i in &dated {
            if kept >= count {
                break;
            }
            let b = bucket(out[i].time.unwrap_or_default());
            if last.as_ref() != Some(&b) {
                out[i].reasons.push(Reason {
                    rule: name,
                    bucket: Some(b.clone()),
                });
                kept += 1;
                last = Some(b);
            }
        }
    }
    if let (Some(within), Some(&first)) = (policy.keep_within, dated.first()) {
        let newest = out[first].time.unwrap_or_default();
        let cutoff = newest - chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
        for &i in &dated {
            if out[i].time.is_some_and(|t| t >= cutoff) {
                out[i].reasons.push(Reason {
                    rule: "within",
                    bucket: None,
                });
            }
        }
    }
    for d in &mut out {
        d.keep = !d.reasons.is_empty();
    }
    out
}

/// Options shared by `forget` and `prune`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Decide and report, change nothing (no lock taken).
    pub dry_run: bool,
    /// Wait for a running backup to release the run lock instead of failing.
    pub wait_lock: bool,
    /// Override `[retention] prune_grace`.
    pub grace: Option<Duration>,
    /// Keep unreferenced packs whose tier's early-deletion minimum has not passed
    /// (in addition to `[retention] defer_early_deletion`).
    pub defer_early_deletion: bool,
    /// Cancellation (while waiting for the lock).
    pub cancel: Cancel,
    /// Prune: repack partly used packs until at most this share of the stored bytes is
    /// unused (overrides `[retention] max_unused`).
    pub max_unused: Option<config::MaxUnused>,
    /// Prune: what copies records when repacking (the engine's pack writer).
    pub repacker: Option<repack::RepackWith>,
    /// Prune: extents sorted in memory before spilling ([`usage::DEFAULT_SORT_BUFFER`]
    /// when `None`).
    pub sort_buffer: Option<usize>,
}

/// What `forget` decided (and did).
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Every snapshot, newest first, with the rules keeping it.
    pub decisions: Vec<Decision>,
    /// Snapshots whose manifests were (or would be) deleted.
    pub forgotten: Vec<String>,
    /// Snapshots kept.
    pub kept: usize,
}

/// A run with records under `parts/<run-id>/`.
#[derive(Debug, Clone)]
struct RunParts {
    run: String,
    /// Its snapshot exists (the run committed).
    committed: bool,
    /// The incremental parent named by its plan.
    parent: Option<String>,
    /// Newest record time.
    newest: DateTime<Utc>,
    /// Every blob under its prefix, with sizes.
    blobs: Vec<(String, u64)>,
}

impl RunParts {
    /// Committed, or untouched for the grace period: its records can go.
    fn stale(&self, now: DateTime<Utc>, grace: Duration) -> bool {
        self.committed || age(now, self.newest) >= grace
    }
}

fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    now.signed_duration_since(then).to_std().unwrap_or_default()
}

async fn run_parts(store: &dyn BlobStore, layout: &Layout) -> Result<Vec<RunParts>> {
    let prefix = layout.parts_all();
    let mut by_run: BTreeMap<String, RunParts> = BTreeMap::new();
    for item in list_all(store, &prefix).await? {
        let Some((run, _)) = item.name[prefix.len()..].split_once('/') else {
            continue;
        };
        let e = by_run.entry(run.to_string()).or_insert_with(|| RunParts {
            run: run.to_string(),
            committed: false,
            parent: None,
            newest: item.last_modified,
            blobs: vec![],
        });
        e.newest = e.newest.max(item.last_modified);
        e.blobs.push((item.name.clone(), item.size));
    }
    for r in by_run.values_mut() {
        let plan = layout.plan(&r.run);
        if !r.blobs.iter().any(|(n, _)| *n == plan) {
            continue;
        }
        // Read the plan loosely (only the fields needed), so plan changes elsewhere do
        // not break prune.
        let bytes = match store.get(&plan, None).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.context(format!("reading {plan}"))),
        };
        let Ok(bytes) = layout.open(&plan, bytes) else {
            continue;
        };
        let mut s = Vec::new();
        if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut s)
            .is_err()
        {
            continue;
        }
        let plan: PlanHead = serde_json::from_slice(&s).unwrap_or_default();
        r.parent = plan.parent;
        if let Some(t) = plan.started_at {
            let snap = crate::support::ids::snapshot_id_for(t, &r.run);
            r.committed = store.head(&layout.snapshot(&snap)).await?.is_some();
        }
    }
    // A run whose snapshot was forgotten since still committed: its run record says so.
    for r in by_run.values_mut().filter(|r| !r.committed) {
        let prefix = layout.run_records(&r.run);
        for rec in list_all(store, &prefix).await? {
            let Ok(body) = store.get(&rec.name, None).await else {
                continue;
            };
            let rec: RunRecord = serde_json::from_slice(&body).unwrap_or_default();
            if rec.run_id == r.run && rec.snapshot.is_some() {
                r.committed = true;
                break;
            }
        }
    }
    Ok(by_run.into_values().collect())
}

async fn lock(
    store: &Store,
    layout: &Layout,
    what: &str,
    ttl: Duration,
    opts: &Options,
) -> Result<RunLock> {
    let id = format!("{what}-{}", crate::support::ids::stamp(Utc::now()));
    RunLock::acquire(
        store.clone(),
        layout,
        &id,
        ttl,
        opts.wait_lock,
        &opts.cancel,
    )
    .await
    .ctx(what)
}

/// What forget and prune need of one pipeline: its checked `[retention]`, where its
/// blobs live, its lock lease and the file it came from (for messages). `pipeline`
/// builds it from a whole `Pipeline` (`Pipeline::retention_scope`).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The pipeline file, named in errors.
    pub file: &'a Path,
    /// The store prefix (`target.prefix`) the pipeline's blobs live under.
    pub prefix: &'a str,
    /// `[retention]`; `None`: forget and prune refuse to run.
    pub policy: Option<&'a RetentionConfig>,
    /// Run-lock lease length.
    pub lock_ttl: Duration,
    /// `[encryption]`: prune opens manifests and part records with the pipeline's key.
    pub encryption: Option<&'a EncryptionConfig>,
}

impl Scope<'_> {
    fn policy(&self) -> Result<&RetentionConfig> {
        self.policy.ok_or_else(|| {
            Error::config(format!(
                "{}: the pipeline has no [retention] table, so nothing decides what to keep (add e.g. keep_daily = 30; see docs/retention.md)",
                self.file.display()
            ))
        })
    }
}

/// Delete the manifests of the snapshots `p`'s `[retention]` does not keep.
///
/// The parent of an unfinished run (one that may still resume) is kept too, with the
/// reason `pending-run`.
///
/// # Errors
/// `Config` without `[retention]`, `Locked` when a backup holds the lock (unless
/// waiting), store errors.
pub async fn forget(p: &Scope<'_>, store: &Store, opts: &Options) -> Result<ForgetReport> {
    let policy = p.policy()?;
    let mut layout = Layout::new(p.prefix);
    if let Some(k) = crate::manifest::layout::unlock(&**store, &layout, p.encryption, false).await?
    {
        layout = layout.with_key(k);
    }
    let guard = if opts.dry_run {
        None
    } else {
        Some(lock(store, &layout, "forget", p.lock_ttl, opts).await?)
    };
    let res = forget_locked(store, &layout, policy, opts).await;
    if let Some(g) = guard {
        g.release().await;
    }
    res
}

async fn forget_locked(
    store: &Store,
    layout: &Layout,
    policy: &RetentionConfig,
    opts: &Options,
) -> Result<ForgetReport> {
    // Damaged snapshots (manifests that cannot be read) neither count towards the keep
    // rules, which would let them push out restorable snapshots, nor go: they are kept
    // for a person to look at (and prune deletes nothing while one exists).
    let mut readable = Vec::new();
    let mut damaged = Vec::new();
    for id in catalog::snapshot_ids(&**store, layout).await? {
        match catalog::check_header(&**store, layout, &id).await? {
            Some(Ok(_)) => readable.push(id),
            Some(Err(e)) => {
                tracing::warn!(snapshot = %id, "damaged snapshot kept by forget: {e}");
                damaged.push(id);
            }
            None => {}
        }
    }
    let mut decisions = evaluate(policy, &readable);
    for id in damaged {
        decisions.push(Decision {
            time: catalog::id_time(&id),
            id,
            keep: true,
            reasons: vec![Reason {
                rule: "damaged",
                bucket: None,
            }],
        });
    }
    decisions.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
    let now = Utc::now();
    let grace = opts.grace.unwrap_or(policy.prune_grace);
    for r in run_parts(&**store, layout).await? {
        if r.stale(now, grace) {
            continue;
        }
        if let Some(d) = decisions
            .iter_mut()
            .find(|d| Some(&d.id) == r.parent.as_ref())
        {
            d.reasons.push(Reason {
                rule: "pending-run",
                bucket: Some(r.run.clone()),
            });
            d.keep = true;
        }
    }
    // Snapshots under an immutability policy or legal hold stay: the store would refuse
    // to delete them anyway, and a dry run should say so.
    let protected = catalog::protections(&**store, layout).await?;
    for d in decisions.iter_mut().filter(|d| !d.keep) {
        if let Some(r) = protected.get(&d.id).filter(|r| r.holds(now)) {
            d.keep = true;
            d.reasons.push(immutable_reason(r.legal_hold, r.until));
        }
    }
    let mut forgotten: Vec<String> = Vec::new();
    for d in decisions.iter_mut().filter(|d| !d.keep) {
        if !opts.dry_run {
            match store.delete(&layout.snapshot(&d.id)).await {
                Ok(_) => tracing::info!(snapshot = %d.id, "forgot snapshot"),
                // Protected by hand, or its record is missing: kept, and said.
                Err(e) if e.kind() == ErrorKind::Immutable => {
                    tracing::warn!(snapshot = %d.id, "kept: {e}");
                    d.keep = true;
                    d.reasons.push(immutable_reason(false, None));
                    continue;
                }
                Err(e) => return Err(e.context(format!("forgetting snapshot {}", d.id))),
            }
        }
        forgotten.push(d.id.clone());
    }
    Ok(ForgetReport {
        dry_run: opts.dry_run,
        kept: decisions.len() - forgotten.len(),
        decisions,
        forgotten,
    })
}

fn immutable_reason(legal_hold: bool, until: Option<DateTime<Utc>>) -> Reason {
    Reason {
        rule: "immutable",
        bucket: Some(match (legal_hold, until) {
            (true, _) => "legal hold".to_string(),
            (false, Some(u)) => format!("until {}", u.format("%Y-%m-%dT%H:%M:%SZ")),
            (false, None) => "the store refused the delete".to_string(),
        }),
    }
}

/// Days a blob must stay in `tier` before deleting it costs nothing extra.
pub fn early_deletion_days(tier: Tier) -> u32 {
    match tier {
        Tier::Hot => 0,
        Tier::Cool => 30,
        Tier::Cold => 90,
        Tier::Archive => 180,
    }
}

/// Unreferenced packs of one tier still inside its early-deletion minimum.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EarlyDeletion {
    /// Packs.
    pub packs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Whether they were kept (deferred) rather than deleted (an early-deletion charge).
    pub deferred: bool,
    /// When the last of them passes its minimum.
    pub free_after: Option<DateTime<Utc>>,
}

/// What `prune` found (and did).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Grace period applied.
    pub grace_secs: u64,
    /// Remaining snapshots whose manifests were read.
    pub snapshots: usize,
    /// Packs in the store.
    pub packs_total: u64,
    /// Packs referenced by a remaining manifest or an unfinished run.
    pub packs_referenced: u64,
    /// Unreferenced packs kept because they are younger than the grace period.
    pub packs_young: u64,
    /// Unreferenced packs deleted (or that would be).
    pub packs_deleted: u64,
    /// Manifest segments stored.
    pub segments_total: u64,
    /// Unreferenced manifest segments deleted (or that would be).
    pub segments_deleted: u64,
    /// Bytes of the deleted packs.
    pub bytes_freed: u64,
    /// Per tier: unreferenced packs inside the tier's early-deletion minimum.
    pub early_deletion: BTreeMap<String, EarlyDeletion>,
    /// Runs whose part records were deleted (committed, or abandoned past the grace).
    pub runs_cleaned: Vec<String>,
    /// Blobs of those part records and plans.
    pub part_blobs_deleted: u64,
    /// Verify reports of snapshots that no longer exist, deleted.
    pub verify_reports_deleted: u64,
    /// Bytes of part records and verify reports deleted.
    pub record_bytes_freed: u64,
    /// Unreferenced blobs kept because the store refused to delete them: they are under
    /// an immutability policy or legal hold (`[immutability]`), and go in a later prune.
    pub immutable_kept: u64,
    /// Their bytes.
    pub immutable_bytes: u64,
    /// The first of them (at most 100), by name.
    pub immutable_examples: Vec<String>,
    /// Repacked packs whose moved record is older than the grace period, deleted (their
    /// live records are in the packs the record names).
    pub packs_moved_deleted: u64,
    /// Repacked packs kept until their moved record is older than the grace period.
    pub packs_moved_waiting: u64,
    /// Moved records no remaining snapshot needs, deleted.
    pub moved_records_deleted: u64,
    /// How much of the referenced packs' bytes the remaining snapshots use (a dry run,
    /// or a prune with `--max-unused`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<usage::SpaceUsage>,
    /// What `--max-unused` repacked (or would).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repack: Option<repack::RepackReport>,
}

impl PruneReport {
    /// Delete `name` (unless a dry run); a blob the store refuses because it is
    /// immutable is counted as kept, not an error. Returns whether it went (or would).
    async fn delete(&mut self, store: &dyn BlobStore, name: &str, size: u64) -> Result<bool> {
        if self.dry_run {
            return Ok(true);
        }
        match store.delete(name).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::Immutable => {
                self.immutable_kept += 1;
                self.immutable_bytes += size;
                if self.immutable_examples.len() < 100 {
                    self.immutable_examples.push(name.to_string());
                }
                Ok(false)
            }
            Err(e) => Err(e.context(format!("deleting {name}"))),
        }
    }
}

fn pack_id_of(name: &str) -> &str {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.split_once('.').map(|(id, _)| id).unwrap_or(file)
}

/// The key a referenced segment has in prune's set (beside pack ids).
fn segment_key(sha256: &str) -> String {
    format!("segment:{sha256}")
}

/// Add every pack id and segment `blob` (a manifest or part record) references to `out`,
/// reading it line by line.
async fn referenced_by(
    store: &dyn BlobStore,
    layout: &Layout,
    blob: &str,
    out: &mut HashSet<String>,
) -> Result<()> {
    let bytes = crate::manifest::open_stored(layout, blob, store.get(blob, None).await?)?;
    let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(&bytes[..]));
    for (i, line) in r.lines().enumerate() {
        let line = line.map_err(|e| Error::integrity(format!("{blob} is not valid gzip: {e}")))?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Line>(&line)
            .map_err(|e| Error::integrity(format!("{blob} line {}: {e}", i + 1)))?
        {
            Line::Pack(p) => {
                out.insert(pack_id_of(&p.blob).to_string());
                out.insert(p.id);
            }
            Line::Entry(e) => {
                if let Some(p) = e.pack {
                    out.insert(p);
                }
            }
            Line::Segment(r) => {
                out.insert(segment_key(&r.sha256));
            }
            Line::Part(h) => {
                if let Some(r) = h.segment {
                    out.insert(segment_key(&r.sha256));
                }
            }
            Line::Header(_) | Line::Table(_) | Line::Stream(_) => {}
        }
    }
    Ok(())
}

/// Delete packs no remaining manifest references (older than the grace period), stale
/// part records and verify reports of forgotten snapshots.
///
/// A manifest that cannot be read stops the prune before anything is deleted: an
/// unreadable manifest's packs must not be taken for garbage.
///
/// # Errors
/// `Config` without `[retention]`, `Locked` when a backup holds the lock (unless
/// waiting), `Integrity` for an unreadable manifest, store errors.
pub async fn prune(p: &Scope<'_>, store: &Store, opts: &Options) -> Result<PruneReport> {
    let policy = p.policy()?;
    let mut layout = Layout::new(p.prefix);
    if let Some(k) = crate::manifest::layout::unlock(&**store, &layout, p.encryption, false).await?
    {
        layout = layout.with_key(k);
    }
    let guard = if opts.dry_run {
        None
    } else {
        Some(lock(store, &layout, "prune", p.lock_ttl, opts).await?)
    };
    let grace = opts.grace.unwrap_or(policy.prune_grace);
    let defer = opts.defer_early_deletion || policy.defer_early_deletion;
    let space = Space {
        max_unused: opts.max_unused.or(policy.max_unused),
        repacker: opts.repacker.clone(),
        sort_buffer: opts.sort_buffer.unwrap_or(usage::DEFAULT_SORT_BUFFER),
    };
    let res = prune_locked(store, &layout, grace, defer, opts.dry_run, &space).await;
    if let Some(g) = guard {
        g.release().await;
    }
    res
}

/// How `prune` treats the space inside packs that are still referenced.
#[derive(Debug, Clone, Default)]
pub struct Space {
    /// Repack until at most this share of the stored bytes is unused (`None`: no repack).
    pub max_unused: Option<config::MaxUnused>,
    /// What copies records when repacking.
    pub repacker: Option<repack::RepackWith>,
    /// Extents sorted in memory before spilling.
    pub sort_buffer: usize,
}

/// [`prune`] on a store and layout, without taking the lock (the caller holds it).
///
/// # Errors
/// As [`prune`].
pub async fn prune_locked(
    store: &Store,
    layout: &Layout,
    grace: Duration,
    defer_early: bool,
    dry_run: bool,
    space: &Space,
) -> Result<PruneReport> {
    let now = Utc::now();
    let mut rep = PruneReport {
        dry_run,
        grace_secs: grace.as_secs(),
        ..Default::default()
    };
    // 1. What is referenced: every remaining manifest, and unfinished runs' part records.
    let ids = catalog::snapshot_ids(&**store, layout).await?;
    rep.snapshots = ids.len();
    let mut referenced = HashSet::new();
    for id in &ids {
        match referenced_by(&**store, layout, &layout.snapshot(id), &mut referenced).await {
            Ok(()) => {}
            // Forgotten by a concurrent forget between the listing and the read.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.kind() == ErrorKind::Integrity => {
                return Err(e.context(format!(
                    "snapshot {id} is damaged (its manifest cannot be read), so the packs it \
                     references cannot be told from garbage; nothing was pruned. Prune runs \
                     again once the damaged manifest {} is removed (by hand, after saving what \
                     other snapshots hold)",
                    layout.snapshot(id)
                )))
            }
            Err(e) => return Err(e.context(format!("reading snapshot {id}; nothing was pruned"))),
        }
    }
    let runs = run_parts(&**store, layout).await?;
    // Packs unfinished runs point into: referenced, and never repacked or moved away.
    let mut pinned = HashSet::new();
    for r in &runs {
        if r.stale(now, grace) {
            continue;
        }
        for (name, _) in &r.blobs {
            if name.ends_with(".jsonl.gz") {
                referenced_by(&**store, layout, name, &mut pinned)
                    .await
                    .ctx(format!("reading part record {name}; nothing was pruned"))?;
            }
        }
    }
    referenced.extend(pinned.iter().cloned());
    // 1b. Repacked packs: a referenced pack with a moved record is needed through the
    // record (kept) and the packs it names (referenced); its own blob is not.
    let moved_listed = moved::list(&**store, layout).await?;
    let mut relocated: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut queue: Vec<String> = referenced
        .iter()
        .filter(|id| moved_listed.contains_key(id.as_str()))
        .cloned()
        .collect();
    while let Some(id) = queue.pop() {
        let Some(item) = moved_listed.get(&id) else {
            continue;
        };
        if relocated.insert(id.clone(), item.last_modified).is_some() {
            continue;
        }
        let r = moved::load(&**store, layout, &id, true)
            .await
            .ctx("reading a moved record; nothing was pruned")?;
        for q in r.into {
            if moved_listed.contains_key(&q.id) && !relocated.contains_key(&q.id) {
                queue.push(q.id.clone());
            }
            referenced.insert(q.id);
        }
    }
    let pack_items = list_all(&**store, &layout.packs()).await?;
    // 1c. Space accounting (a dry run, or repacking), then the repack.
    if dry_run || space.max_unused.is_some() {
        let protected: HashSet<String> = catalog::protections(&**store, layout)
            .await?
            .into_iter()
            .filter(|(_, r)| r.holds(now))
            .map(|(id, _)| id)
            .collect();
        let use_ = usage::measure(&**store, layout, &ids, &protected, space.sort_buffer)
            .await
            .ctx("counting what the remaining snapshots use; nothing was pruned")?;
        rep.usage = Some(use_.summary());
        if let Some(max) = space.max_unused {
            let listed: HashMap<String, (DateTime<Utc>, crate::store::Tier)> = pack_items
                .iter()
                .map(|i| (pack_id_of(&i.name).to_string(), (i.last_modified, i.tier)))
                .collect();
            let rules = repack::Rules {
                now,
                defer_early,
                listed: &listed,
                pinned: &pinned,
            };
            let mut sel = repack::select(&use_, max.fraction(), &rules);
            if !dry_run && !sel.selected.is_empty() {
                let repacker = space.repacker.clone().ok_or_else(|| {
                    Error::internal("prune was asked to repack without a repacker")
                })?;
                let want: HashSet<String> = sel
                    .selected
                    .iter()
                    .map(|&i| use_.packs[i as usize].id.clone())
                    .collect();
                let records = usage::pack_records(&**store, layout, &ids, &want).await?;
                let done = repack::run(store, layout, &use_, &mut sel, &records, &*repacker.0)
                    .await
                    .ctx("repacking")?;
                tracing::info!(
                    packs = done.moved.len(),
                    new_packs = sel.report.new_packs,
                    "repacked partly used packs"
                );
                relocated.extend(done.moved.into_iter().map(|id| (id, now)));
                // The new packs are referenced through the records just stored.
                referenced.extend(done.written);
            }
            rep.repack = Some(sel.report);
        }
    }
    // 2. Packs.
    let pack_items = if rep.repack.as_ref().is_some_and(|r| r.new_packs > 0) {
        list_all(&**store, &layout.packs()).await?
    } else {
        pack_items
    };
    for item in pack_items {
        rep.packs_total += 1;
        let id = pack_id_of(&item.name);
        if let Some(at) = relocated.get(id).filter(|_| !pinned.contains(id)) {
            // Its live records are in the packs its moved record names.
            if age(now, (*at).max(item.last_modified)) < grace {
                rep.packs_moved_waiting += 1;
                continue;
            }
            if !rep.delete(&**store, &item.name, item.size).await? {
                continue;
            }
            rep.packs_moved_deleted += 1;
            rep.bytes_freed += item.size;
            continue;
        }
        if referenced.contains(id) {
            rep.packs_referenced += 1;
            continue;
        }
        let a = age(now, item.last_modified);
        if a < grace {
            rep.packs_young += 1;
            continue;
        }
        let min = Duration::from_secs(u64::from(early_deletion_days(item.tier)) * 86_400);
        if a < min {
            let e = rep
                .early_deletion
                .entry(item.tier.as_str().to_string())
                .or_default();
            e.packs += 1;
            e.bytes += item.size;
            e.deferred = defer_early;
            let free = item.last_modified
                + chrono::Duration::days(i64::from(early_deletion_days(item.tier)));
            e.free_after = Some(e.free_after.map_or(free, |f| f.max(free)));
            if defer_early {
                continue;
            }
        }
        if !rep.delete(&**store, &item.name, item.size).await? {
            continue;
        }
        rep.packs_deleted += 1;
        rep.bytes_freed += item.size;
    }
    // 2a. Moved records of packs no remaining snapshot (or unfinished run) names (the
    // records this prune wrote are all of relocated packs).
    for (id, item) in moved_listed {
        if relocated.contains_key(&id) {
            continue;
        }
        if !rep.delete(&**store, &item.name, item.size).await? {
            continue;
        }
        rep.moved_records_deleted += 1;
        rep.record_bytes_freed += item.size;
    }
    // 2b. Manifest segments: the same rule as packs (referenced, or young, stays).
    for item in list_all(&**store, &layout.segments()).await? {
        rep.segments_total += 1;
        let sha = pack_id_of(&item.name);
        if referenced.contains(&segment_key(sha)) || age(now, item.last_modified) < grace {
            continue;
        }
        if !rep.delete(&**store, &item.name, item.size).await? {
            continue;
        }
        rep.segments_deleted += 1;
        rep.record_bytes_freed += item.size;
    }
    // 3. Part records of runs that committed or were abandoned past the grace.
    for r in runs.iter().filter(|r| r.stale(now, grace)) {
        for (name, size) in &r.blobs {
            if !dry_run {
                store.delete(name).await.ctx(format!("deleting {name}"))?;
            }
            rep.part_blobs_deleted += 1;
            rep.record_bytes_freed += size;
        }
        rep.runs_cleaned.push(r.run.clone());
    }
    // 4. Verify reports and protection records of snapshots that no longer exist.
    let live: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let pprefix = layout.protections();
    for item in list_all(&**store, &pprefix).await? {
        let snap = item.name[pprefix.len()..].trim_end_matches(".json");
        if live.contains(snap) {
            continue;
        }
        if !dry_run {
            store
                .delete(&item.name)
                .await
                .ctx(format!("deleting {}", item.name))?;
        }
        rep.record_bytes_freed += item.size;
    }
    let vprefix = layout.verify_all();
    for item in list_all(&**store, &vprefix).await? {
        let snap = item.name[vprefix.len()..].split('/').next().unwrap_or("");
        if live.contains(snap) {
            continue;
        }
        if !dry_run {
            store
                .delete(&item.name)
                .await
                .ctx(format!("deleting {}", item.name))?;
        }
        rep.verify_reports_deleted += 1;
        rep.record_bytes_freed += item.size;
    }
    if rep.immutable_kept > 0 {
        tracing::warn!(
            blobs = rep.immutable_kept,
            bytes = rep.immutable_bytes,
            "unreferenced blobs kept: still under an immutability policy or legal hold"
        );
    }
    tracing::info!(
        packs_deleted = rep.packs_deleted,
        bytes_freed = rep.bytes_freed,
        dry_run,
        "prune"
    );
    Ok(rep)
}

/// What automatic retention did after a backup (stored as
/// `runs/<run-id>/<time>-retention.json`).
#[derive(Debug, Clone, Serialize)]
pub struct AutoReport {
    /// The backup run.
    pub run_id: String,
    /// Forget, when it ran.
    pub forget: Option<ForgetReport>,
    /// Prune, when it ran.
    pub prune: Option<PruneReport>,
    /// Why it stopped, when it did.
    pub error: Option<String>,
}

/// The hook `pipeline::backup` calls after run `run_id`: when `[retention] auto = true`
/// and the run is `ok` *and verified*, forget and prune. Failures are logged and
/// recorded, never turned into a failed backup (the snapshot is committed and verified).
pub async fn after_backup(
    p: &Scope<'_>,
    store: &Store,
    run_id: &str,
    status: RunStatus,
    verified: bool,
    repacker: Option<repack::RepackWith>,
) -> Option<AutoReport> {
    let policy = p.policy.filter(|r| r.auto)?;
    if status != RunStatus::Ok || !verified {
        tracing::info!("automatic retention skipped: the run was not ok and verified");
        return None;
    }
    let opts = Options {
        defer_early_deletion: policy.defer_early_deletion,
        repacker,
        ..Default::default()
    };
    let mut out = AutoReport {
        run_id: run_id.to_string(),
        forget: None,
        prune: None,
        error: None,
    };
    match forget(p, store, &opts).await {
        Ok(f) => {
            tracing::info!(
                forgotten = f.forgotten.len(),
                kept = f.kept,
                "retention: forget"
            );
            out.forget = Some(f);
            match prune(p, store, &opts).await {
                Ok(r) => out.prune = Some(r),
                Err(e) => out.error = Some(format!("prune: {e}")),
            }
        }
        Err(e) => out.error = Some(format!("forget: {e}")),
    }
    if let Some(e) = &out.error {
        tracing::warn!("automatic retention did not complete (the backup itself is fine): {e}");
    }
    let layout = Layout::new(p.prefix);
    let name = layout.run_record(
        run_id,
        &format!("{}-retention", crate::support::ids::stamp(Utc::now())),
    );
    if let Ok(body) = serde_json::to_vec_pretty(&out) {
        if let Err(e) = store.put(&name, bytes::Bytes::from(body), true).await {
            tracing::warn!("could not store the retention record {name}: {e}");
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(times: &[&str]) -> Vec<String> {
        times
            .iter()
            .map(|t| crate::support::ids::snapshot_id_for(t.parse().unwrap(), "r"))
            .collect()
    }

    #[test]
    fn keep_last_and_within() {
        let ids = ids(&[
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "2026-01-03T00:00:00Z",
            "2026-01-10T00:00:00Z",
        ]);
        let p = RetentionConfig {
            keep_last: 1,
            keep_within: Some(Duration::from_secs(8 * 86_400)),
            ..Default::default()
        };
        let d = evaluate(&p, &ids);
        let kept: Vec<&str> = d.iter().filter(|d| d.keep).map(|d| &d.id[..8]).collect();
        assert_eq!(kept, ["20260110", "20260103", "20260102"]);
        assert_eq!(d[0].reasons.len(), 2);
        assert!(!d[3].keep && d[3].reasons.is_empty());
    }

    #[test]
    fn undated_ids_are_kept() {
        let d = evaluate(
            &RetentionConfig {
                keep_last: 1,
                ..Default::default()
            },
            &["not-a-time".to_string()],
        );
        assert!(d[0].keep);
        assert_eq!(d[0].reasons[0].rule, "undated");
    }

    #[test]
    fn pack_ids_from_names() {
        assert_eq!(pack_id_of("p/packs/ab/ab12.tar.zst"), "ab12");
        assert_eq!(pack_id_of("packs/ab/ab12.tar.gz"), "ab12");
    }
}
