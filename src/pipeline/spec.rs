//! Pipeline files: TOML in, a checked [`Pipeline`] out.
//!
//! Parsing happens once, here, at the edge. The raw `*Spec` structs mirror the file
//! (`deny_unknown_fields`, so a typo is an error, not a silently ignored key); then
//! [`Pipeline::load`] checks every value and cross-field rule and turns it into the
//! checked types the engine trusts. Every error names the file, line, column and key
//! and says how to fix it. `${VAR}` (and `${VAR:-default}`) in string values is replaced
//! from the environment, so secrets stay out of pipeline files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::store::Tier;
use crate::support::secret::redact_url;

// ---------------------------------------------------------------------------------------
// Raw file shape
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineSpec {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    source: SourceSpec,
    #[serde(default)]
    partitions: PartitionsSpec,
    #[serde(default)]
    compression: CompressionSpec,
    target: TargetSpec,
    #[serde(default)]
    upload: UploadSpec,
    #[serde(default)]
    verify: VerifySpec,
    #[serde(default)]
    retry: RetrySpec,
    #[serde(default)]
    lock: LockSpec,
    #[serde(default)]
    incremental: IncrementalSpec,
    #[serde(default)]
    schedule: Option<ScheduleSpec>,
    #[serde(default)]
    alerts: Option<AlertsSpec>,
    #[serde(default)]
    freshness: Option<FreshnessSpec>,
    #[serde(default)]
    retention: Option<RetentionSpec>,
    #[serde(default)]
    lifecycle: Option<LifecycleSpec>,
    #[serde(default)]
    serve: Option<ServeSpec>,
    #[serde(default)]
    restore: RestoreSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeSpec {
    handoff: Option<Spanned<String>>,
    queue_url: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSpec {
    keep_last: Option<Spanned<i64>>,
    keep_hourly: Option<Spanned<i64>>,
    keep_daily: Option<Spanned<i64>>,
    keep_weekly: Option<Spanned<i64>>,
    keep_monthly: Option<Spanned<i64>>,
    keep_yearly: Option<Spanned<i64>>,
    keep_within: Option<Spanned<String>>,
    prune_grace: Option<Spanned<String>>,
    auto: Option<bool>,
    defer_early_deletion: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleSpec {
    cool_after_days: Option<Spanned<i64>>,
    cold_after_days: Option<Spanned<i64>>,
    archive_after_days: Option<Spanned<i64>>,
    allow_archive_before_full: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FreshnessSpec {
    rpo: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSpec {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    root: Option<Spanned<String>>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    // postgres / mysql
    url: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    #[serde(default)]
    schemas: Vec<Spanned<String>>,
    split_rows: Option<Spanned<i64>>,
    chunk_size: Option<Spanned<SizeValue>>,
    // command
    command: Option<Spanned<Vec<String>>>,
    shell: Option<bool>,
    timeout: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreSpec {
    strategy: Option<Spanned<String>>,
    scratch_url: Option<Spanned<String>>,
    #[serde(default)]
    tables: std::collections::BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionsSpec {
    count: Option<Spanned<CountOrAuto>>,
    max_parallel: Option<Spanned<CountOrAuto>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum CountOrAuto {
    Count(i64),
    Word(AutoWord),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AutoWord {
    Auto,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompressionSpec {
    codec: Option<Spanned<String>>,
    level: Option<Spanned<i64>>,
    frame_size: Option<Spanned<SizeValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSpec {
    url: Spanned<String>,
    container: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    tier: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadSpec {
    block_size: Option<Spanned<SizeValue>>,
    pack_size: Option<Spanned<SizeValue>>,
    concurrency: Option<Spanned<i64>>,
    channel_capacity: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifySpec {
    mode: Option<Spanned<String>>,
    sample: Option<Spanned<FractionValue>>,
    seed: Option<u64>,
    after_backup: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySpec {
    attempts: Option<Spanned<i64>>,
    initial_backoff: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
    budget: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementalSpec {
    enabled: Option<bool>,
    full_every: Option<Spanned<CountOrDuration>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum CountOrDuration {
    Count(i64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockSpec {
    ttl: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSpec {
    cron: Spanned<String>,
    #[serde(default)]
    catch_up: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsSpec {
    #[serde(default)]
    webhook: Vec<WebhookSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSpec {
    url: Spanned<String>,
    format: Option<Spanned<String>>,
    #[serde(default)]
    on: Vec<Spanned<String>>,
}

/// A size written as `"8MiB"`, `"512KiB"`, `"1GB"` or a plain byte count.
#[derive(Debug, Clone, Copy)]
struct SizeValue(u64);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) if n > 0 => Ok(SizeValue(n as u64)),
            Raw::N(n) => Err(serde::de::Error::custom(format!(
                "size must be positive, got {n} (write e.g. \"8MiB\")"
            ))),
            Raw::S(s) => parse_size(&s)
                .map(SizeValue)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A fraction written as `"10%"`, `0.1` or `"0.1"`.
#[derive(Debug, Clone, Copy)]
struct FractionValue(f64);

impl<'de> Deserialize<'de> for FractionValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            F(f64),
            S(String),
        }
        let f = match Raw::deserialize(d)? {
            Raw::F(f) => f,
            Raw::S(s) => parse_fraction(&s).map_err(serde::de::Error::custom)?,
        };
        if !(f > 0.0 && f <= 1.0) {
            return Err(serde::de::Error::custom(format!(
                "sample must be in (0, 1] or a percentage like \"10%\", got {f}"
            )));
        }
        Ok(FractionValue(f))
    }
}

/// Parse `"8MiB"`, `"64 KiB"`, `"1GB"`, `"4096"` into bytes (binary and decimal units).
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB, e.g. \"8MiB\")"
            ))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number with a unit, e.g. \"8MiB\""))?;
    if n <= 0.0 || !n.is_finite() {
        return Err(format!("invalid size {s:?}: must be positive"));
    }
    Ok((n * mult as f64).round() as u64)
}

/// Parse `"10%"` or `"0.1"` into a fraction.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_fraction(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    let bad =
        || format!("invalid fraction {s:?}: write a percentage like \"10%\" or a number like 0.1");
    if let Some(p) = t.strip_suffix('%') {
        p.trim()
            .parse::<f64>()
            .map(|v| v / 100.0)
            .map_err(|_| bad())
    } else {
        t.parse::<f64>().map_err(|_| bad())
    }
}

/// Parse `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"`, `"1w"` into a duration.
///
/// # Errors
/// A message naming the accepted units.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected e.g. \"500ms\", \"30s\", \"5m\", \"2h\", \"7d\"")
    })?;
    let secs = |m: u64| Duration::from_secs(n.saturating_mul(m));
    Ok(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" | "" => secs(1),
        "m" | "min" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "w" => secs(7 * 86_400),
        u => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {u:?} (use ms, s, m, h, d or w)"
            ))
        }
    })
}

// ---------------------------------------------------------------------------------------
// Checked types
// ---------------------------------------------------------------------------------------

/// A checked pipeline: every value valid, every default applied.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Pipeline name (`[a-z0-9_-]`), also the default store prefix.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The file it came from.
    pub file: PathBuf,
    /// What to back up.
    pub source: SourceConfig,
    /// How to split the source.
    pub partitions: PartitionsConfig,
    /// Pack compression.
    pub compression: CompressionConfig,
    /// Where to store.
    pub target: TargetConfig,
    /// Upload shape.
    pub upload: UploadConfig,
    /// Verification policy.
    pub verify: VerifyConfig,
    /// Retry policy for store operations.
    pub retry: RetryConfig,
    /// Incremental backups.
    pub incremental: IncrementalConfig,
    /// Run-lock lease length (15–60 s, Azure's lease range); renewed every third of it.
    /// A killed run's lock expires after this long.
    pub lock_ttl: Duration,
    /// Cron schedule (UTC, 5 fields), stored for the scheduler.
    pub schedule: Option<String>,
    /// Alert webhooks, stored for the alerting stage.
    pub alerts: Vec<WebhookConfig>,
    /// Recovery point objective (`[freshness] rpo`): the newest verified snapshot may be
    /// at most this old; overrides `blobpipe check --max-age`.
    pub rpo: Option<Duration>,
    /// `[schedule] catch_up` (default true): after downtime, run a missed schedule once.
    pub catch_up: bool,
    /// Which snapshots to keep (`[retention]`); `None`: forget/prune refuse to run.
    pub retention: Option<RetentionConfig>,
    /// Tiering of packs by age (`[lifecycle]`), printed as an Azure management policy.
    pub lifecycle: Option<LifecycleConfig>,
    /// `[serve] handoff = "queue"`: `blobpipe serve` enqueues runs of this pipeline for a
    /// queue-triggered job (`blobpipe run-queued`) instead of running them itself.
    pub handoff: Option<HandoffConfig>,
    /// Defaults for `restore --to-db` (database sources).
    pub restore: RestoreConfig,
}

/// Checked `[serve]` hand-off.
#[derive(Debug, Clone)]
pub struct HandoffConfig {
    /// The queue (its URL may carry a SAS: never print it, use `display()`).
    pub queue: crate::serve::handoff::QueueUrl,
}

/// Checked `[retention]`: restic-like keep rules. A snapshot survives `forget` when any
/// rule keeps it; `prune` then deletes packs no surviving manifest references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Keep the newest N snapshots.
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one (UTC).
    pub keep_hourly: u32,
    /// … of each of the last N days.
    pub keep_daily: u32,
    /// … of each of the last N ISO weeks.
    pub keep_weekly: u32,
    /// … of each of the last N months.
    pub keep_monthly: u32,
    /// … of each of the last N years.
    pub keep_yearly: u32,
    /// Keep every snapshot taken within this long of the newest snapshot.
    pub keep_within: Option<Duration>,
    /// Packs (and records of unfinished runs) younger than this are never pruned.
    pub prune_grace: Duration,
    /// Apply forget + prune after every successful, verified backup.
    pub auto: bool,
    /// Keep unreferenced packs whose tier's early-deletion minimum has not passed.
    pub defer_early_deletion: bool,
}

/// Checked `[lifecycle]`: days since a pack was written after which Azure moves it to a
/// colder tier. Only packs; never a delete action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// Move packs to Cool after this many days.
    pub cool_after_days: Option<u32>,
    /// Move packs to Cold after this many days.
    pub cold_after_days: Option<u32>,
    /// Move packs to Archive after this many days.
    pub archive_after_days: Option<u32>,
}

/// A checked source.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A directory tree.
    Fs(FsSourceConfig),
    /// PostgreSQL tables (one exported snapshot shared by all workers).
    Postgres(DbSourceConfig),
    /// MySQL / MariaDB tables.
    Mysql(DbSourceConfig),
    /// The standard output of a command.
    Command(CommandSourceConfig),
}

impl SourceConfig {
    /// Whether this source is a database or a command: its runs re-plan on resume and
    /// never reuse part records (a new attempt sees a new snapshot of the data).
    pub fn is_streamed(&self) -> bool {
        !matches!(self, SourceConfig::Fs(_))
    }
}

/// A PostgreSQL or MySQL/MariaDB source.
#[derive(Debug, Clone)]
pub struct DbSourceConfig {
    /// Connection URL (`postgres://user@host:5432/db`, `mysql://user@host:3306/db`);
    /// may carry a password, so it is a secret.
    pub url: crate::support::secret::Secret,
    /// Password given separately (overrides one in the URL).
    pub password: Option<crate::support::secret::Secret>,
    /// Schemas (PostgreSQL) or databases (MySQL) to read. Default: `public` / the URL's
    /// database.
    pub schemas: Vec<String>,
    /// Table patterns (`*` and `?`), matched against `table` and `schema.table`; empty:
    /// every table.
    pub include: Vec<String>,
    /// Table patterns to leave out.
    pub exclude: Vec<String>,
    /// Tables with more (estimated) rows than this are split into primary-key ranges.
    pub split_rows: u64,
    /// Bytes of CSV buffered per tar entry (each chunk becomes one entry).
    pub chunk_size: usize,
}

/// A command source.
#[derive(Debug, Clone)]
pub struct CommandSourceConfig {
    /// Program and arguments (with `shell`, one string run by `sh -c`).
    pub argv: Vec<String>,
    /// Run through `/bin/sh -c`.
    pub shell: bool,
    /// The run fails when the command has not exited after this long.
    pub timeout: Duration,
    /// Name of the stored stream (`command/<name>/…`).
    pub name: String,
    /// Bytes of output buffered per tar entry.
    pub chunk_size: usize,
}

/// How `restore --to-db` treats a table that already has rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Refuse (before writing anything) when the table has rows.
    FailIfNotEmpty,
    /// Empty the table first (in the same transaction).
    Truncate,
    /// Insert every row; a duplicate key fails the restore.
    Append,
    /// Insert only rows whose key is absent.
    SkipExisting,
}

impl Strategy {
    /// Parse `fail-if-not-empty`, `truncate`, `append`, `skip-existing`.
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s.trim() {
            "fail-if-not-empty" => Strategy::FailIfNotEmpty,
            "truncate" => Strategy::Truncate,
            "append" => Strategy::Append,
            "skip-existing" => Strategy::SkipExisting,
            _ => return None,
        })
    }
    /// The name as written in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::FailIfNotEmpty => "fail-if-not-empty",
            Strategy::Truncate => "truncate",
            Strategy::Append => "append",
            Strategy::SkipExisting => "skip-existing",
        }
    }
}

/// Restore defaults for database sources.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// Strategy for tables without their own.
    pub strategy: Strategy,
    /// Per-table strategies (`table` or `schema.table`).
    pub tables: std::collections::BTreeMap<String, Strategy>,
    /// Server that `blobpipe drill` restores into (a scratch schema / database made and
    /// dropped there); `--scratch-db` overrides it. May carry a password: a secret.
    pub scratch_url: Option<crate::support::secret::Secret>,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::FailIfNotEmpty,
            tables: Default::default(),
            scratch_url: None,
        }
    }
}

/// A directory tree source.
#[derive(Debug, Clone)]
pub struct FsSourceConfig {
    /// Root directory (absolute, or resolved against the pipeline file's directory).
    pub root: PathBuf,
    /// Gitignore-style include patterns (empty: everything).
    pub include: Vec<String>,
    /// Gitignore-style exclude patterns.
    pub exclude: Vec<String>,
}

/// Partitioning.
#[derive(Debug, Clone, Copy)]
pub struct PartitionsConfig {
    /// Number of partitions the source is split into.
    pub count: usize,
    /// How many partitions are extracted and compressed at once.
    pub max_parallel: usize,
}

/// Compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Independent gzip members (`.tar.gz`).
    Gzip,
    /// Independent zstd frames (`.tar.zst`).
    Zstd,
}

impl Codec {
    /// Pack file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Gzip => "tar.gz",
            Codec::Zstd => "tar.zst",
        }
    }
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }
}

/// Checked compression settings.
#[derive(Debug, Clone, Copy)]
pub struct CompressionConfig {
    /// Codec.
    pub codec: Codec,
    /// Level (gzip 0–9, zstd 1–22).
    pub level: i32,
    /// Uncompressed bytes per independent frame.
    pub frame_size: usize,
}

/// Where a store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A local directory.
    Local(PathBuf),
    /// The process-wide in-memory store of that name (tests).
    Memory(String),
    /// An Azure (or emulator) URL or connection-string form, interpreted by the Azure backend.
    Azure(crate::support::secret::Secret),
}

/// Checked target.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Store location.
    pub location: StoreLocation,
    /// URL as printable (secrets redacted).
    pub display_url: String,
    /// Container (a directory for local stores).
    pub container: String,
    /// Prefix inside the container (default: the pipeline name).
    pub prefix: String,
    /// Access tier for packs.
    pub tier: Tier,
}

/// Checked upload settings.
#[derive(Debug, Clone, Copy)]
pub struct UploadConfig {
    /// Block size for packs of known size.
    pub block_size: usize,
    /// Uncompressed bytes after which a pack is closed.
    pub pack_size: u64,
    /// Concurrent block uploads.
    pub concurrency: usize,
    /// Sealed blocks waiting for an uploader (the bounded channel).
    pub channel_capacity: usize,
}

/// How much to verify.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "fraction")]
pub enum VerifyMode {
    /// Existence, sizes, block lists, Content-MD5.
    Metadata,
    /// Metadata plus this fraction of blocks re-read.
    Sample(f64),
    /// Every block re-read, every entry hashed.
    Full,
}

/// Checked verify policy.
#[derive(Debug, Clone, Copy)]
pub struct VerifyConfig {
    /// Mode used after a backup and by default for `verify`.
    pub mode: VerifyMode,
    /// Sampling seed (random per run when unset; the report records it).
    pub seed: Option<u64>,
    /// Run verification right after every backup.
    pub after_backup: bool,
}

/// Checked retry policy (one policy for every store call).
#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    /// Attempts per operation, including the first.
    pub attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Total time budget for retries of one operation.
    pub budget: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            budget: Duration::from_secs(300),
        }
    }
}

/// When a backup reads everything again instead of only what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullEvery {
    /// Never forced (only `--full`, or when there is no parent).
    Never,
    /// After this many incrementals in a row.
    Count(u32),
    /// When the chain's full backup is at least this old.
    Age(Duration),
}

/// Checked incremental settings.
#[derive(Debug, Clone, Copy)]
pub struct IncrementalConfig {
    /// Reuse unchanged entries of the newest snapshot (default true).
    pub enabled: bool,
    /// Force a full backup on this schedule (bounds how old referenced packs get).
    pub full_every: FullEvery,
}

/// Alert webhook.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Destination (may carry a token; treat as secret).
    pub url: crate::support::secret::Secret,
    /// `json`, `slack` or `teams`.
    pub format: String,
    /// Events: `failure`, `partial`, `mismatch`, `stale`, `success`.
    pub on: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Loading and checking
// ---------------------------------------------------------------------------------------

/// Collects located errors while checking one file.
struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<String>,
}

impl Checker<'_> {
    fn at(
        &mut self,
        span: std::ops::Range<usize>,
        key: &str,
        msg: impl std::fmt::Display,
        fix: &str,
    ) {
        let (line, col) = line_col(self.text, span.start);
        let mut s = format!("{}:{line}:{col}: {key}: {msg}", self.file.display());
        if !fix.is_empty() {
            s.push_str(&format!("\n  fix: {fix}"));
        }
        self.errors.push(s);
    }

    fn missing(&mut self, key: &str, fix: &str) {
        self.errors.push(format!(
            "{}: missing key {key}\n  fix: {fix}",
            self.file.display()
        ));
    }

    /// `${VAR}` / `${VAR:-default}` interpolation; `$${` escapes a literal `${`.
    fn interp(&mut self, v: &Spanned<String>, key: &str) -> String {
        match interpolate(v.get_ref()) {
            Ok(s) => s,
            Err(var) => {
                self.at(
                    v.span(),
                    key,
                    format!("environment variable {var} is not set (or empty)"),
                    &format!("export {var}=… before running, or write ${{{var}:-default}}"),
                );
                String::new()
            }
        }
    }
}

/// Replace `${VAR}` and `${VAR:-default}` from the environment.
///
/// # Errors
/// The name of the first unset variable without a default.
pub fn interpolate(s: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let Some(end) = r.find('}') else {
                out.push_str(after);
                rest = "";
                break;
            };
            let expr = &r[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            // Set-but-empty counts as unset: an empty store URL or root must never
            // silently become "somewhere else".
            match (std::env::var(name), default) {
                (Ok(v), _) if !v.is_empty() => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (_, None) => return Err(name.to_string()),
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, col)
}

/// The `[table] key` a parse error at `offset` is about, read off the file text.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && l.ends_with(']')).then(|| l.trim_matches(['[', ']']).to_string())
        })
        .unwrap_or_default();
    match (table.is_empty(), key.is_empty() || key.starts_with('[')) {
        (true, _) => key.to_string(),
        (false, true) => format!("[{table}]"),
        (false, false) => format!("{table}.{key}"),
    }
}

fn pos_count(
    c: &mut Checker<'_>,
    v: &Option<Spanned<i64>>,
    key: &str,
    default: usize,
    max: i64,
) -> usize {
    match v {
        None => default,
        Some(s) if *s.get_ref() >= 1 && *s.get_ref() <= max => *s.get_ref() as usize,
        Some(s) => {
            c.at(
                s.span(),
                key,
                format!("must be between 1 and {max}, got {}", s.get_ref()),
                "",
            );
            default
        }
    }
}

impl Pipeline {
    /// Read, parse and check a pipeline file.
    ///
    /// # Errors
    /// `Config` with every problem found, each located by file, line and key.
    pub fn load(path: &Path) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read pipeline file {}: {e}", path.display()))
        })?;
        Self::parse(path, &text)
    }

    /// Parse and check pipeline text as if read from `path` (relative paths in it resolve
    /// against `path`'s directory).
    ///
    /// # Errors
    /// `Config` with every problem found.
    pub fn parse(path: &Path, text: &str) -> Result<Pipeline> {
        let spec: PipelineSpec = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, col) = line_col(text, span.start);
            let key = key_at(text, span.start);
            let msg = e.message().trim().to_string();
            let fix = if msg.contains("unknown field") {
                "remove or rename the key; see docs/pipeline-reference.md for the keys each table accepts"
            } else if msg.contains("missing field") {
                "add the key; see docs/pipeline-reference.md"
            } else {
                "see docs/pipeline-reference.md for the expected type and format"
            };
            let key = if key.is_empty() { String::new() } else { format!("{key}: ") };
            Error::config(format!("{}:{line}:{col}: {key}{msg}\n  fix: {fix}", path.display()))
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let mut c = Checker {
            file: path,
            text,
            errors: Vec::new(),
        };
        let p = check(&mut c, spec, &base);
        if c.errors.is_empty() {
            Ok(p)
        } else {
            Err(Error::config(c.errors.join("\n")))
        }
    }
}

fn check(c: &mut Checker<'_>, s: PipelineSpec, base: &Path) -> Pipeline {
    let name = s.name.get_ref().clone();
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        c.at(
            s.name.span(),
            "name",
            format!("invalid pipeline name {name:?}"),
            "use 1–63 characters of a–z, 0–9, '-' and '_'",
        );
    }

    let source = check_source(c, &s.source, base);

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let count_of =
        |c: &mut Checker<'_>, v: &Option<Spanned<CountOrAuto>>, key: &str, auto: usize| match v {
            None => auto,
            Some(sp) => match *sp.get_ref() {
                CountOrAuto::Word(AutoWord::Auto) => auto,
                CountOrAuto::Count(n) if (1..=4096).contains(&n) => n as usize,
                CountOrAuto::Count(n) => {
                    c.at(
                        sp.span(),
                        key,
                        format!("must be 1–4096 or \"auto\", got {n}"),
                        "",
                    );
                    auto
                }
            },
        };
    let partitions = PartitionsConfig {
        count: count_of(
            c,
            &s.partitions.count,
            "partitions.count",
            (cores * 4).max(4),
        ),
        max_parallel: count_of(
            c,
            &s.partitions.max_parallel,
            "partitions.max_parallel",
            cores,
        ),
    };

    let codec = match &s.compression.codec {
        None => Codec::Zstd,
        Some(v) => match v.get_ref().as_str() {
            "gzip" | "gz" => Codec::Gzip,
            "zstd" | "zst" => Codec::Zstd,
            other => {
                c.at(
                    v.span(),
                    "compression.codec",
                    format!("unknown codec {other:?}"),
                    "use \"gzip\" or \"zstd\"",
                );
                Codec::Zstd
            }
        },
    };
    let (lmin, lmax, ldef) = match codec {
        Codec::Gzip => (0, 9, 6),
        Codec::Zstd => (1, 22, 3),
    };
    let level = match &s.compression.level {
        None => ldef,
        Some(v) if (lmin..=lmax).contains(v.get_ref()) => *v.get_ref() as i32,
        Some(v) => {
            c.at(
                v.span(),
                "compression.level",
                format!(
                    "{} level must be {lmin}–{lmax}, got {}",
                    codec.as_str(),
                    v.get_ref()
                ),
                "",
            );
            ldef
        }
    };
    let frame_size = size_in(
        c,
        &s.compression.frame_size,
        "compression.frame_size",
        1 << 20,
        64 << 10,
        64 << 20,
    );

    let target = check_target(c, &s.target, &name, base);

    let block_size = size_in(
        c,
        &s.upload.block_size,
        "upload.block_size",
        8 << 20,
        64 << 10,
        4000 << 20,
    );
    let pack_size = size_in(
        c,
        &s.upload.pack_size,
        "upload.pack_size",
        256 << 20,
        1 << 20,
        1 << 40,
    ) as u64;
    let upload = UploadConfig {
        block_size,
        pack_size,
        concurrency: pos_count(c, &s.upload.concurrency, "upload.concurrency", 4, 256),
        channel_capacity: pos_count(
            c,
            &s.upload.channel_capacity,
            "upload.channel_capacity",
            4,
            1024,
        ),
    };

    let fraction = s
        .verify
        .sample
        .as_ref()
        .map(|f| f.get_ref().0)
        .unwrap_or(0.1);
    let mode = match s
        .verify
        .mode
        .as_ref()
        .map(|m| (m.get_ref().as_str(), m.span()))
    {
        None | Some(("sample", _)) => VerifyMode::Sample(fraction),
        Some(("metadata", _)) => VerifyMode::Metadata,
        Some(("full", _)) => VerifyMode::Full,
        Some((other, span)) => {
            c.at(
                span,
                "verify.mode",
                format!("unknown verify mode {other:?}"),
                "use \"metadata\", \"sample\" or \"full\"",
            );
            VerifyMode::Metadata
        }
    };
    let verify = VerifyConfig {
        mode,
        seed: s.verify.seed,
        after_backup: s.verify.after_backup.unwrap_or(true),
    };

    let d = RetryConfig::default();
    let dur = |c: &mut Checker<'_>, v: &Option<Spanned<String>>, key: &str, def: Duration| match v {
        None => def,
        Some(v) => match parse_duration(v.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                c.at(v.span(), key, e, "");
                def
            }
        },
    };
    let retry = RetryConfig {
        attempts: pos_count(
            c,
            &s.retry.attempts,
            "retry.attempts",
            d.attempts as usize,
            100,
        ) as u32,
        initial_backoff: dur(
            c,
            &s.retry.initial_backoff,
            "retry.initial_backoff",
            d.initial_backoff,
        ),
        max_backoff: dur(c, &s.retry.max_backoff, "retry.max_backoff", d.max_backoff),
        budget: dur(c, &s.retry.budget, "retry.budget", d.budget),
    };
    if retry.initial_backoff > retry.max_backoff {
        if let Some(v) = &s.retry.initial_backoff {
            c.at(
                v.span(),
                "retry.initial_backoff",
                "is larger than retry.max_backoff",
                "make initial_backoff ≤ max_backoff",
            );
        }
    }

    let lock_ttl = match &s.lock.ttl {
        None => Duration::from_secs(60),
        Some(v) => match parse_duration(v.get_ref()) {
            Ok(d) if (Duration::from_secs(15)..=Duration::from_secs(60)).contains(&d) => d,
            Ok(_) => {
                c.at(
                    v.span(),
                    "lock.ttl",
                    "must be between 15s and 60s (Azure lease limits)",
                    "",
                );
                Duration::from_secs(60)
            }
            Err(e) => {
                c.at(v.span(), "lock.ttl", e, "");
                Duration::from_secs(60)
            }
        },
    };
    let full_every = match &s.incremental.full_every {
        None => FullEvery::Age(Duration::from_secs(7 * 86_400)),
        Some(v) => match v.get_ref() {
            CountOrDuration::Count(n) if (1..=10_000).contains(n) => FullEvery::Count(*n as u32),
            CountOrDuration::Count(n) => {
                c.at(
                    v.span(),
                    "incremental.full_every",
                    format!("count must be 1–10000, got {n}"),
                    "write a count like 7 or an age like \"7d\"",
                );
                FullEvery::Never
            }
            CountOrDuration::Text(t) if t == "never" => FullEvery::Never,
            CountOrDuration::Text(t) => match parse_duration(t) {
                Ok(d) if d >= Duration::from_secs(60) => FullEvery::Age(d),
                Ok(_) => {
                    c.at(
                        v.span(),
                        "incremental.full_every",
                        "must be at least 1m",
                        "",
                    );
                    FullEvery::Never
                }
                Err(e) => {
                    c.at(
                        v.span(),
                        "incremental.full_every",
                        e,
                        "write a count like 7, an age like \"7d\", or \"never\"",
                    );
                    FullEvery::Never
                }
            },
        },
    };
    let incremental = IncrementalConfig {
        enabled: s.incremental.enabled.unwrap_or(true),
        full_every,
    };
    let schedule = s.schedule.as_ref().map(|sc| {
        let cron = sc.cron.get_ref().trim().to_string();
        if cron.split_whitespace().count() != 5 {
            c.at(
                sc.cron.span(),
                "schedule.cron",
                format!("{cron:?} is not a 5-field cron expression"),
                "write minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\" (UTC)",
            );
        } else if let Err(e) = croner::Cron::new(&cron).parse() {
            c.at(
                sc.cron.span(),
                "schedule.cron",
                format!("invalid cron expression {cron:?}: {e}"),
                "write minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\" (UTC)",
            );
        }
        cron
    });
    let catch_up = s
        .schedule
        .as_ref()
        .and_then(|sc| sc.catch_up)
        .unwrap_or(true);
    let rpo = match s.freshness.as_ref().and_then(|f| f.rpo.as_ref()) {
        None => None,
        Some(v) => match parse_duration(v.get_ref()) {
            Ok(d) if d >= Duration::from_secs(60) => Some(d),
            Ok(_) => {
                c.at(
                    v.span(),
                    "freshness.rpo",
                    "must be at least 1m",
                    "write e.g. \"1h\" or \"26h\"",
                );
                None
            }
            Err(e) => {
                c.at(v.span(), "freshness.rpo", e, "write e.g. \"1h\" or \"26h\"");
                None
            }
        },
    };

    let mut alerts = Vec::new();
    for w in s.alerts.map(|a| a.webhook).unwrap_or_default() {
        let url = c.interp(&w.url, "alerts.webhook.url");
        let format = w
            .format
            .as_ref()
            .map(|f| f.get_ref().clone())
            .unwrap_or_else(|| "json".into());
        if !matches!(format.as_str(), "json" | "slack" | "teams") {
            let span = w.format.as_ref().map(|f| f.span()).unwrap_or(0..0);
            c.at(
                span,
                "alerts.webhook.format",
                format!("unknown format {format:?}"),
                "use \"json\", \"slack\" or \"teams\"",
            );
        }
        let mut on = Vec::new();
        for ev in &w.on {
            if !matches!(
                ev.get_ref().as_str(),
                "failure" | "partial" | "mismatch" | "stale" | "success"
            ) {
                c.at(
                    ev.span(),
                    "alerts.webhook.on",
                    format!("unknown event {:?}", ev.get_ref()),
                    "use failure, partial, mismatch, stale or success",
                );
            }
            on.push(ev.get_ref().clone());
        }
        if on.is_empty() {
            on = vec![
                "failure".into(),
                "partial".into(),
                "mismatch".into(),
                "stale".into(),
            ];
        }
        alerts.push(WebhookConfig {
            url: crate::support::secret::Secret::new(url),
            format,
            on,
        });
    }

    let restore = check_restore(c, &s.restore, &source);
    Pipeline {
        name,
        description: s.description,
        file: c.file.to_path_buf(),
        source,
        partitions,
        compression: CompressionConfig {
            codec,
            level,
            frame_size,
        },
        target,
        upload,
        verify,
        retry,
        incremental,
        lock_ttl,
        schedule,
        alerts,
        rpo,
        catch_up,
        retention: check_retention(c, s.retention.as_ref()),
        lifecycle: check_lifecycle(c, s.lifecycle.as_ref(), &incremental),
        handoff: check_serve(c, s.serve.as_ref()),
        restore,
    }
}

fn check_serve(c: &mut Checker<'_>, s: Option<&ServeSpec>) -> Option<HandoffConfig> {
    let s = s?;
    let fix_url =
        "write e.g. queue_url = \"https://<account>.queue.core.windows.net/blobpipe-runs\" \
                   (or \"${BLOBPIPE_HANDOFF_QUEUE}\")";
    let mode = match &s.handoff {
        None => {
            if let Some(u) = &s.queue_url {
                c.at(
                    u.span(),
                    "serve.queue_url",
                    "is set but serve.handoff is not",
                    "add handoff = \"queue\" (or remove queue_url)",
                );
            }
            return None;
        }
        Some(h) => h,
    };
    match mode.get_ref().as_str() {
        "none" => {
            return None;
        }
        "queue" => {}
        "job" => {
            c.at(
                mode.span(),
                "serve.handoff",
                "\"job\" (starting the Container Apps job through ARM) is not implemented",
                "use handoff = \"queue\" with an event-triggered job (docs/deploy.md §12.8)",
            );
            return None;
        }
        other => {
            c.at(
                mode.span(),
                "serve.handoff",
                format!("unknown hand-off {other:?}"),
                "use \"queue\" (or \"none\" to run in the handler)",
            );
            return None;
        }
    }
    let Some(u) = &s.queue_url else {
        c.missing("serve.queue_url", fix_url);
        return None;
    };
    let url = c.interp(u, "serve.queue_url");
    if url.is_empty() {
        if !c.errors.iter().any(|e| e.contains("serve.queue_url")) {
            c.at(u.span(), "serve.queue_url", "is empty", fix_url);
        }
        return None;
    }
    match crate::serve::handoff::QueueUrl::parse(&url) {
        Ok(queue) => Some(HandoffConfig { queue }),
        Err(e) => {
            c.at(u.span(), "serve.queue_url", e, "");
            None
        }
    }
}

fn size_in(
    c: &mut Checker<'_>,
    v: &Option<Spanned<SizeValue>>,
    key: &str,
    default: usize,
    min: usize,
    max: usize,
) -> usize {
    match v {
        None => default,
        Some(s) if (min as u64..=max as u64).contains(&s.get_ref().0) => s.get_ref().0 as usize,
        Some(s) => {
            c.at(
                s.span(),
                key,
                format!("{} bytes is out of range", s.get_ref().0),
                &format!(
                    "use a size between {} and {}",
                    human(min as u64),
                    human(max as u64)
                ),
            );
            default
        }
    }
}

/// Bytes as a short human string (binary units).
pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn check_source(c: &mut Checker<'_>, s: &SourceSpec, base: &Path) -> SourceConfig {
    let kind = s.kind.get_ref().as_str();
    // Keys that belong to other source types are errors, not silently ignored.
    let foreign = |c: &mut Checker<'_>, allowed: &[&str]| {
        let present: [(&str, Option<std::ops::Range<usize>>); 11] = [
            ("root", s.root.as_ref().map(|v| v.span())),
            ("url", s.url.as_ref().map(|v| v.span())),
            ("password", s.password.as_ref().map(|v| v.span())),
            ("schemas", s.schemas.first().map(|v| v.span())),
            ("split_rows", s.split_rows.as_ref().map(|v| v.span())),
            ("chunk_size", s.chunk_size.as_ref().map(|v| v.span())),
            ("command", s.command.as_ref().map(|v| v.span())),
            ("shell", s.shell.map(|_| s.kind.span())),
            ("timeout", s.timeout.as_ref().map(|v| v.span())),
            ("name", s.name.as_ref().map(|v| v.span())),
            (
                "include/exclude",
                s.include.first().or(s.exclude.first()).map(|v| v.span()),
            ),
        ];
        for (key, span) in present {
            if let Some(span) = span {
                if !allowed.contains(&key) {
                    c.at(
                        span,
                        &format!("source.{key}"),
                        format!("is not a key of a {kind:?} source"),
                        &format!(
                            "remove it; a {kind:?} source takes: type, {}",
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }
    };
    match kind {
        "fs" => {
            foreign(c, &["root", "include/exclude"]);
            SourceConfig::Fs(check_fs_source(c, s, base))
        }
        "postgres" | "postgresql" | "mysql" | "mariadb" => {
            foreign(
                c,
                &[
                    "url",
                    "password",
                    "schemas",
                    "include/exclude",
                    "split_rows",
                    "chunk_size",
                ],
            );
            let pg = kind.starts_with("postgres");
            let db = check_db_source(c, s, pg);
            if pg {
                SourceConfig::Postgres(db)
            } else {
                SourceConfig::Mysql(db)
            }
        }
        "command" => {
            foreign(c, &["command", "shell", "timeout", "name", "chunk_size"]);
            SourceConfig::Command(check_command_source(c, s))
        }
        _ => {
            c.at(
                s.kind.span(),
                "source.type",
                format!("unknown source type {kind:?}"),
                "use \"fs\" (directory tree), \"postgres\", \"mysql\" or \"command\"",
            );
            SourceConfig::Fs(FsSourceConfig {
                root: PathBuf::new(),
                include: vec![],
                exclude: vec![],
            })
        }
    }
}

fn chunk_size_of(c: &mut Checker<'_>, s: &SourceSpec) -> usize {
    size_in(
        c,
        &s.chunk_size,
        "source.chunk_size",
        16 << 20,
        64 << 10,
        256 << 20,
    )
}

/// Table patterns: `*` and `?` wildcards over `[A-Za-z0-9_.$-]`.
fn table_patterns(c: &mut Checker<'_>, list: &[Spanned<String>], key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in list {
        let v = p.get_ref().trim();
        let ok = !v.is_empty()
            && v.chars()
                .all(|ch| ch.is_alphanumeric() || matches!(ch, '_' | '.' | '$' | '-' | '*' | '?'));
        if !ok {
            c.at(
                p.span(),
                key,
                format!("invalid table pattern {:?}", p.get_ref()),
                "use a table name or `schema.table`, with * and ? as wildcards, e.g. \"task_*\"",
            );
        }
        out.push(v.to_string());
    }
    out
}

fn check_db_source(c: &mut Checker<'_>, s: &SourceSpec, pg: bool) -> DbSourceConfig {
    let scheme_ok = |u: &str| {
        if pg {
            u.starts_with("postgres://") || u.starts_with("postgresql://")
        } else {
            u.starts_with("mysql://") || u.starts_with("mariadb://")
        }
    };
    let url = match &s.url {
        Some(v) => {
            let u = c.interp(v, "source.url");
            if !u.is_empty() && !scheme_ok(&u) {
                c.at(
                    v.span(),
                    "source.url",
                    format!("not a {} URL: {:?}", if pg { "PostgreSQL" } else { "MySQL" }, redact_url(&u)),
                    if pg {
                        "write postgres://user@host:5432/dbname (password via `password` or ${PGPASSWORD})"
                    } else {
                        "write mysql://user@host:3306/dbname (password via `password`)"
                    },
                );
            } else if !u.is_empty() && url::Url::parse(&u).is_err() {
                c.at(
                    v.span(),
                    "source.url",
                    format!("malformed URL {:?}", redact_url(&u)),
                    "percent-encode special characters in user and password",
                );
            }
            u
        }
        None if pg => match libpq_env_url() {
            Some(u) => u,
            None => {
                c.missing(
                    "source.url",
                    "add url = \"postgres://user@host:5432/db\" or set PGHOST/PGDATABASE",
                );
                String::new()
            }
        },
        None => {
            c.missing("source.url", "add url = \"mysql://user@host:3306/db\"");
            String::new()
        }
    };
    let password = match &s.password {
        Some(v) => {
            let p = c.interp(v, "source.password");
            (!p.is_empty()).then(|| crate::support::secret::Secret::new(p))
        }
        // PostgreSQL: the connection falls back to the URL's password, then PGPASSWORD.
        None => None,
    };
    let mut schemas = Vec::new();
    for sc in &s.schemas {
        let v = c.interp(sc, "source.schemas");
        if v.is_empty() || v.contains(['"', '`', '\0']) {
            c.at(
                sc.span(),
                "source.schemas",
                format!("invalid schema name {v:?}"),
                "",
            );
        }
        schemas.push(v);
    }
    if schemas.is_empty() {
        if pg {
            schemas.push("public".into());
        } else if let Some(db) = url::Url::parse(&url)
            .ok()
            .map(|u| u.path().trim_matches('/').to_string())
            .filter(|d| !d.is_empty())
        {
            schemas.push(db);
        } else if !url.is_empty() {
            let span = s.url.as_ref().map(|v| v.span()).unwrap_or(0..0);
            c.at(
                span,
                "source.url",
                "names no database",
                "add the database to the URL (mysql://user@host/db) or list schemas = [\"db\"]",
            );
        }
    }
    let split_rows = match &s.split_rows {
        None => 1_000_000,
        Some(v) if *v.get_ref() >= 1000 => *v.get_ref() as u64,
        Some(v) => {
            c.at(
                v.span(),
                "source.split_rows",
                format!("must be at least 1000, got {}", v.get_ref()),
                "tables above this many rows are split by primary-key range; e.g. 1000000",
            );
            1_000_000
        }
    };
    DbSourceConfig {
        url: crate::support::secret::Secret::new(url),
        password,
        schemas,
        include: table_patterns(c, &s.include, "source.include"),
        exclude: table_patterns(c, &s.exclude, "source.exclude"),
        split_rows,
        chunk_size: chunk_size_of(c, s),
    }
}

/// A `postgres://` URL standing for libpq's environment variables, when `PGHOST` or
/// `PGDATABASE` is set: the connection fills host, port, user, database, password and
/// `sslmode` from `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, `PGSSLMODE`.
fn libpq_env_url() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    (var("PGHOST").is_some() || var("PGDATABASE").is_some()).then(|| "postgres://".to_string())
}

fn check_command_source(c: &mut Checker<'_>, s: &SourceSpec) -> CommandSourceConfig {
    let shell = s.shell.unwrap_or(false);
    let argv = match &s.command {
        None => {
            c.missing(
                "source.command",
                "add command = [\"pg_dump\", \"-Fc\", \"mydb\"] (an argument list; no shell unless shell = true)",
            );
            vec![]
        }
        Some(v) => {
            let mut out = Vec::new();
            for a in v.get_ref() {
                match interpolate(a) {
                    Ok(x) => out.push(x),
                    Err(var) => c.at(
                        v.span(),
                        "source.command",
                        format!("environment variable {var} is not set"),
                        &format!("export {var}=… before running"),
                    ),
                }
            }
            if out.is_empty() || out[0].is_empty() {
                c.at(
                    v.span(),
                    "source.command",
                    "is empty",
                    "name the program first",
                );
            } else if shell && out.len() != 1 {
                c.at(
                    v.span(),
                    "source.command",
                    "with shell = true, give one string (the script for sh -c)",
                    "e.g. command = [\"pg_dump mydb | gzip -1\"]",
                );
            }
            out
        }
    };
    let timeout = match &s.timeout {
        None => Duration::from_secs(3600),
        Some(v) => match parse_duration(v.get_ref()) {
            Ok(d) if d >= Duration::from_millis(100) => d,
            Ok(_) => {
                c.at(v.span(), "source.timeout", "must be at least 100ms", "");
                Duration::from_secs(3600)
            }
            Err(e) => {
                c.at(v.span(), "source.timeout", e, "");
                Duration::from_secs(3600)
            }
        },
    };
    let name = match &s.name {
        None => "stdout".to_string(),
        Some(v) => {
            let n = v.get_ref().clone();
            if !crate::support::ids::is_safe_segment(&n) {
                c.at(
                    v.span(),
                    "source.name",
                    format!("invalid stream name {n:?}"),
                    "use letters, digits, '-', '_' and '.'",
                );
            }
            n
        }
    };
    CommandSourceConfig {
        argv,
        shell,
        timeout,
        name,
        chunk_size: chunk_size_of(c, s),
    }
}

fn check_restore(c: &mut Checker<'_>, r: &RestoreSpec, source: &SourceConfig) -> RestoreConfig {
    let fix = "use \"fail-if-not-empty\", \"truncate\", \"append\" or \"skip-existing\"";
    let parse = |c: &mut Checker<'_>, v: &Spanned<String>, key: &str| {
        Strategy::parse(v.get_ref()).unwrap_or_else(|| {
            c.at(
                v.span(),
                key,
                format!("unknown strategy {:?}", v.get_ref()),
                fix,
            );
            Strategy::FailIfNotEmpty
        })
    };
    let strategy = r
        .strategy
        .as_ref()
        .map(|v| parse(c, v, "restore.strategy"))
        .unwrap_or(Strategy::FailIfNotEmpty);
    let mut tables = std::collections::BTreeMap::new();
    for (t, v) in &r.tables {
        let st = parse(c, v, &format!("restore.tables.{t}"));
        tables.insert(t.clone(), st);
    }
    let scratch_url = r.scratch_url.as_ref().and_then(|v| {
        let u = c.interp(v, "restore.scratch_url");
        if u.is_empty() {
            return None;
        }
        let (pg, fix) = match source {
            SourceConfig::Postgres(_) => (
                true,
                "write postgres://user@host:5432/dbname (a server the drill may CREATE SCHEMA on)",
            ),
            SourceConfig::Mysql(_) => (
                false,
                "write mysql://user@host:3306/dbname (a server the drill may CREATE DATABASE on)",
            ),
            _ => {
                c.at(
                    v.span(),
                    "restore.scratch_url",
                    "only database sources (postgres, mysql) are drilled into a scratch database",
                    "remove it: a drill of this pipeline restores into a scratch directory",
                );
                return None;
            }
        };
        let ok = if pg {
            u.starts_with("postgres://") || u.starts_with("postgresql://")
        } else {
            u.starts_with("mysql://") || u.starts_with("mariadb://")
        };
        if !ok {
            c.at(
                v.span(),
                "restore.scratch_url",
                format!(
                    "not a {} URL: {:?} (a {} source is drilled into a server of the same kind)",
                    if pg { "PostgreSQL" } else { "MySQL" },
                    redact_url(&u),
                    if pg { "postgres" } else { "mysql" }
                ),
                fix,
            );
            return None;
        }
        if url::Url::parse(&u).is_err() {
            c.at(
                v.span(),
                "restore.scratch_url",
                format!("malformed URL {:?}", redact_url(&u)),
                "percent-encode special characters in user and password",
            );
            return None;
        }
        Some(crate::support::secret::Secret::new(u))
    });
    RestoreConfig {
        strategy,
        tables,
        scratch_url,
    }
}

fn check_fs_source(c: &mut Checker<'_>, s: &SourceSpec, base: &Path) -> FsSourceConfig {
    let root = match &s.root {
        Some(r) => {
            let v = c.interp(r, "source.root");
            if v.trim().is_empty() && !c.errors.iter().any(|e| e.contains("source.root")) {
                c.at(
                    r.span(),
                    "source.root",
                    "is empty",
                    "give the directory to back up",
                );
            }
            let p = PathBuf::from(&v);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        }
        None => {
            c.missing("source.root", "add root = \"/path/to/dir\" to [source]");
            PathBuf::new()
        }
    };
    let mut globs = |list: &[Spanned<String>], key: &str| -> Vec<String> {
        let mut out = Vec::new();
        for g in list {
            let mut b = ignore::gitignore::GitignoreBuilder::new("/");
            if let Err(e) = b
                .add_line(None, g.get_ref())
                .and_then(|b| b.build().map(|_| b))
            {
                c.at(
                    g.span(),
                    key,
                    format!("invalid glob {:?}: {e}", g.get_ref()),
                    "use gitignore syntax, e.g. \"*.log\", \"target/\", \"docs/**/*.md\"",
                );
            }
            out.push(g.get_ref().clone());
        }
        out
    };
    let include = globs(&s.include, "source.include");
    let exclude = globs(&s.exclude, "source.exclude");
    FsSourceConfig {
        root,
        include,
        exclude,
    }
}

fn check_target(c: &mut Checker<'_>, t: &TargetSpec, name: &str, base: &Path) -> TargetConfig {
    let url = c.interp(&t.url, "target.url");
    let display_url = redact_url(&url);
    if url.trim().is_empty() && !c.errors.iter().any(|e| e.contains("target.url")) {
        c.at(
            t.url.span(),
            "target.url",
            "is empty",
            "give a store URL such as file:///var/backups or azure://account/container",
        );
    }
    let location = if let Some(rest) = url.strip_prefix("file://") {
        let p = PathBuf::from(rest);
        StoreLocation::Local(if p.is_absolute() { p } else { base.join(p) })
    } else if let Some(rest) = url.strip_prefix("memory://") {
        StoreLocation::Memory(rest.to_string())
    } else if url.starts_with("azure://")
        || url.starts_with("https://")
        || url.starts_with("http://")
        || url.starts_with("UseDevelopmentStorage=")
        || url.contains("AccountName=")
    {
        StoreLocation::Azure(crate::support::secret::Secret::new(url.clone()))
    } else {
        if !url.is_empty() {
            c.at(
                t.url.span(),
                "target.url",
                format!("unsupported store URL {display_url:?}"),
                "use file:///abs/dir, file://relative/dir, azure://account/container or https://account.blob.core.windows.net/container",
            );
        }
        StoreLocation::Memory(String::new())
    };
    let container = match &t.container {
        Some(v) => {
            let s = c.interp(v, "target.container");
            let ok = (3..=63).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
                && !s.contains("--");
            if !ok {
                c.at(
                    v.span(),
                    "target.container",
                    format!("invalid container name {s:?}"),
                    "use 3–63 characters of a–z, 0–9 and single '-' (Azure container rules)",
                );
            }
            s
        }
        None => "backups".to_string(),
    };
    let prefix = match &t.prefix {
        Some(v) => {
            let s = c.interp(v, "target.prefix");
            let s = s.trim_matches('/').to_string();
            if s.split('/')
                .any(|seg| !crate::support::ids::is_safe_segment(seg))
            {
                c.at(
                    v.span(),
                    "target.prefix",
                    format!("invalid prefix {s:?}"),
                    "use '/'-separated segments of letters, digits, '-', '_' and '.'",
                );
            }
            s
        }
        None => name.to_string(),
    };
    let tier = match &t.tier {
        None => Tier::Hot,
        Some(v) => Tier::parse(v.get_ref()).unwrap_or_else(|| {
            c.at(
                v.span(),
                "target.tier",
                format!("unknown access tier {:?}", v.get_ref()),
                "use \"hot\", \"cool\", \"cold\" or \"archive\"",
            );
            Tier::Hot
        }),
    };
    TargetConfig {
        location,
        display_url,
        container,
        prefix,
        tier,
    }
}

fn keep_count(c: &mut Checker<'_>, v: &Option<Spanned<i64>>, key: &str) -> u32 {
    match v {
        None => 0,
        Some(s) if (0..=1_000_000).contains(s.get_ref()) => *s.get_ref() as u32,
        Some(s) => {
            c.at(
                s.span(),
                key,
                format!("must be a count between 0 and 1000000, got {}", s.get_ref()),
                "",
            );
            0
        }
    }
}

fn check_retention(c: &mut Checker<'_>, r: Option<&RetentionSpec>) -> Option<RetentionConfig> {
    let r = r?;
    let keep_within = r
        .keep_within
        .as_ref()
        .and_then(|v| match parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                c.at(
                    v.span(),
                    "retention.keep_within",
                    "must be longer than 0",
                    "write an age like \"30d\", or remove the key",
                );
                None
            }
            Err(e) => {
                c.at(
                    v.span(),
                    "retention.keep_within",
                    e,
                    "write an age like \"30d\"",
                );
                None
            }
        });
    let prune_grace = match &r.prune_grace {
        None => Duration::from_secs(2 * 86_400),
        Some(v) => match parse_duration(v.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                c.at(
                    v.span(),
                    "retention.prune_grace",
                    e,
                    "write an age like \"2d\" (packs younger than this are never pruned)",
                );
                Duration::from_secs(2 * 86_400)
            }
        },
    };
    let cfg = RetentionConfig {
        keep_last: keep_count(c, &r.keep_last, "retention.keep_last"),
        keep_hourly: keep_count(c, &r.keep_hourly, "retention.keep_hourly"),
        keep_daily: keep_count(c, &r.keep_daily, "retention.keep_daily"),
        keep_weekly: keep_count(c, &r.keep_weekly, "retention.keep_weekly"),
        keep_monthly: keep_count(c, &r.keep_monthly, "retention.keep_monthly"),
        keep_yearly: keep_count(c, &r.keep_yearly, "retention.keep_yearly"),
        keep_within,
        prune_grace,
        auto: r.auto.unwrap_or(false),
        defer_early_deletion: r.defer_early_deletion.unwrap_or(false),
    };
    let counts = [
        cfg.keep_last,
        cfg.keep_hourly,
        cfg.keep_daily,
        cfg.keep_weekly,
        cfg.keep_monthly,
        cfg.keep_yearly,
    ];
    let bad_key = c.errors.iter().any(|e| e.contains("retention."));
    if counts.iter().all(|&n| n == 0) && cfg.keep_within.is_none() && !bad_key {
        let span = [
            &r.keep_last,
            &r.keep_hourly,
            &r.keep_daily,
            &r.keep_weekly,
            &r.keep_monthly,
            &r.keep_yearly,
        ]
        .iter()
        .find_map(|v| v.as_ref().map(|s| s.span()));
        let msg =
            "every keep rule is 0 and there is no keep_within: forget would delete every snapshot";
        let fix = "set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly above 0, or keep_within = \"30d\"";
        match span {
            Some(sp) => c.at(sp, "retention", msg, fix),
            None => c.missing("retention.keep_*", &format!("{msg}; {fix}")),
        }
    }
    Some(cfg)
}

fn check_lifecycle(
    c: &mut Checker<'_>,
    l: Option<&LifecycleSpec>,
    incremental: &IncrementalConfig,
) -> Option<LifecycleConfig> {
    let l = l?;
    let mut days = |v: &Option<Spanned<i64>>, key: &str| -> Option<(u32, std::ops::Range<usize>)> {
        let v = v.as_ref()?;
        if (0..=99_999).contains(v.get_ref()) {
            Some((*v.get_ref() as u32, v.span()))
        } else {
            c.at(
                v.span(),
                key,
                format!(
                    "must be a day count between 0 and 99999, got {}",
                    v.get_ref()
                ),
                "",
            );
            None
        }
    };
    let cool = days(&l.cool_after_days, "lifecycle.cool_after_days");
    let cold = days(&l.cold_after_days, "lifecycle.cold_after_days");
    let archive = days(&l.archive_after_days, "lifecycle.archive_after_days");
    let set: Vec<(&str, u32, std::ops::Range<usize>)> = [
        ("cool_after_days", cool.clone()),
        ("cold_after_days", cold.clone()),
        ("archive_after_days", archive.clone()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|(d, sp)| (k, d, sp)))
    .collect();
    if set.is_empty() && c.errors.iter().all(|e| !e.contains("lifecycle.")) {
        c.missing(
            "lifecycle.*_after_days",
            "[lifecycle] has no tier rule: set cool_after_days, cold_after_days and/or archive_after_days, or remove the table",
        );
    }
    for w in set.windows(2) {
        let ((ka, da, _), (kb, db, sb)) = ((&w[0].0, w[0].1, &w[0].2), (&w[1].0, w[1].1, &w[1].2));
        if db <= da {
            c.at(
                sb.clone(),
                &format!("lifecycle.{kb}"),
                format!(
                    "{kb} = {db} is not later than {ka} = {da}: tiers must get colder with age"
                ),
                "make cool_after_days < cold_after_days < archive_after_days",
            );
        }
    }
    if let Some((a, sp)) = &archive {
        if incremental.enabled && !l.allow_archive_before_full.unwrap_or(false) {
            let archive_age = Duration::from_secs(u64::from(*a) * 86_400);
            let problem = match incremental.full_every {
                FullEvery::Never => Some(
                    "incrementals are on and full_every is \"never\", so the newest snapshot can reference packs of any age"
                        .to_string(),
                ),
                FullEvery::Age(d) if archive_age <= d => Some(format!(
                    "packs are archived after {a} days but a full backup comes only every {} days, so the newest incremental snapshots reference archived packs",
                    d.as_secs_f64() / 86_400.0
                )),
                // A count of incrementals has no age; the check cannot know it.
                _ => None,
            };
            if let Some(p) = problem {
                c.at(
                    sp.clone(),
                    "lifecycle.archive_after_days",
                    format!("{p}: restoring the latest snapshot would need hours of rehydration first"),
                    "archive later than incremental.full_every (or make full_every shorter), or set allow_archive_before_full = true if slow restores are acceptable",
                );
            }
        }
    }
    Some(LifecycleConfig {
        cool_after_days: cool.map(|x| x.0),
        cold_after_days: cold.map(|x| x.0),
        archive_after_days: archive.map(|x| x.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "demo"
[source]
type = "fs"
root = "data"
exclude = ["*.tmp", "target/"]
[target]
url = "file://store"
"#;

    fn parse(text: &str) -> Result<Pipeline> {
        Pipeline::parse(Path::new("/etc/bp/demo.toml"), text)
    }

    #[test]
    fn good_file_gets_defaults_and_resolved_paths() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.name, "demo");
        assert_eq!(p.target.prefix, "demo");
        assert_eq!(p.target.container, "backups");
        assert_eq!(
            p.target.location,
            StoreLocation::Local(PathBuf::from("/etc/bp/store"))
        );
        let SourceConfig::Fs(fs) = &p.source else {
            panic!("fs source expected")
        };
        assert_eq!(fs.root, PathBuf::from("/etc/bp/data"));
        assert_eq!(p.upload.block_size, 8 << 20);
        assert_eq!(p.compression.codec, Codec::Zstd);
        assert_eq!(p.verify.mode, VerifyMode::Sample(0.1));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = GOOD.replace("[target]\n", "[target]\nbogus = 1\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("demo.toml:8:1"), "{e}");
        assert!(e.contains("target.bogus"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
        assert!(e.contains("fix:"), "{e}");
    }

    #[test]
    fn bad_size_is_located() {
        let text = format!("{GOOD}[upload]\nblock_size = \"8 parsecs\"\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(":10:"), "{e}");
        assert!(e.contains("upload.block_size"), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn out_of_range_size_and_wrong_type() {
        let e = parse(&format!("{GOOD}[upload]\nblock_size = \"1KiB\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("upload.block_size") && e.contains("out of range"),
            "{e}"
        );
        let e = parse(&format!("{GOOD}[upload]\nconcurrency = \"four\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("upload.concurrency"), "{e}");
    }

    #[test]
    fn bad_glob_is_located() {
        let text = GOOD.replace("\"*.tmp\"", "\"a/{b,c\"");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("source.exclude") && e.contains("invalid glob"),
            "{e}"
        );
        assert!(e.contains(":6:"), "{e}");
    }

    #[test]
    fn env_interpolation_and_missing_var() {
        std::env::set_var("BP_TEST_ROOT", "/srv/data");
        let p = parse(&GOOD.replace("root = \"data\"", "root = \"${BP_TEST_ROOT}\"")).unwrap();
        let SourceConfig::Fs(fs) = &p.source else {
            panic!("fs source expected")
        };
        assert_eq!(fs.root, PathBuf::from("/srv/data"));
        let e = parse(&GOOD.replace("root = \"data\"", "root = \"${BP_TEST_NOPE_42}\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("BP_TEST_NOPE_42 is not set"), "{e}");
        assert_eq!(
            interpolate("a$${b}c${BP_TEST_NOPE_42:-d}").unwrap(),
            "a${b}cd"
        );
    }

    #[test]
    fn serve_handoff_is_checked_and_located() {
        let p = parse(&format!(
            "{GOOD}[serve]\nhandoff = \"queue\"\nqueue_url = \"https://acct.queue.core.windows.net/blobpipe-runs\"\n"
        ))
        .unwrap();
        let h = p.handoff.expect("handoff");
        assert_eq!(h.queue.queue, "blobpipe-runs");
        assert!(parse(GOOD).unwrap().handoff.is_none());
        let e = parse(&format!("{GOOD}[serve]\nhandoff = \"queue\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing key serve.queue_url"), "{e}");
        let e = parse(&format!(
            "{GOOD}[serve]\nhandoff = \"queue\"\nqueue_url = \"https://acct.queue.core.windows.net/Bad_Name?sig=SECRET\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains(":11:") && e.contains("serve.queue_url"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
        let e = parse(&format!("{GOOD}[serve]\nhandoff = \"carrier-pigeon\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(":10:") && e.contains("serve.handoff"), "{e}");
        let e = parse(&format!(
            "{GOOD}[serve]\nhandoff = \"queue\"\nqueue_url = \"${{BP_TEST_NO_QUEUE_7}}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("BP_TEST_NO_QUEUE_7 is not set"), "{e}");
    }

    #[test]
    fn empty_url_or_root_is_an_error_not_a_default() {
        std::env::set_var("BP_TEST_EMPTY", "");
        let e = parse(&GOOD.replace("file://store", "${BP_TEST_EMPTY}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("target.url") && e.contains("BP_TEST_EMPTY"),
            "{e}"
        );
        let e = parse(&GOOD.replace("file://store", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("target.url") && e.contains("is empty"), "{e}");
        let e = parse(&GOOD.replace("root = \"data\"", "root = \"\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.root") && e.contains("is empty"), "{e}");
    }

    #[test]
    fn secrets_in_url_are_not_echoed() {
        let text = GOOD.replace("file://store", "ftp://host/c?sig=TOPSECRET");
        let e = parse(&text).unwrap_err().to_string();
        assert!(!e.contains("TOPSECRET"), "{e}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("1.5 KiB").unwrap(), 1536);
        assert_eq!(parse_size("2MB").unwrap(), 2_000_000);
        assert!(parse_size("-1MiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("3 fortnights").is_err());
        assert_eq!(parse_fraction("10%").unwrap(), 0.1);
    }

    const PG: &str = r#"
name = "db"
[source]
type = "postgres"
url = "postgres://app:${BP_TEST_PGPW:-pw}@db:5432/app"
schemas = ["public", "audit"]
include = ["task_*", "public.variable"]
exclude = ["task_fail"]
split_rows = 5000
chunk_size = "8MiB"
[target]
url = "memory://x"
[restore]
strategy = "truncate"
[restore.tables]
variable = "skip-existing"
"#;

    #[test]
    fn postgres_source_is_checked() {
        let p = parse(PG).unwrap();
        let SourceConfig::Postgres(db) = &p.source else {
            panic!("postgres expected")
        };
        assert_eq!(db.url.expose(), "postgres://app:pw@db:5432/app");
        assert!(
            !format!("{:?}", p.source).contains(":pw@"),
            "URL is a secret"
        );
        assert_eq!(db.schemas, vec!["public", "audit"]);
        assert_eq!(db.include, vec!["task_*", "public.variable"]);
        assert_eq!(db.split_rows, 5000);
        assert_eq!(db.chunk_size, 8 << 20);
        assert_eq!(p.restore.strategy, Strategy::Truncate);
        assert_eq!(p.restore.tables["variable"], Strategy::SkipExisting);
        assert!(p.source.is_streamed());
    }

    #[test]
    fn restore_scratch_url_is_checked_against_the_source() {
        let p = parse(&PG.replace(
            "strategy = \"truncate\"",
            "strategy = \"truncate\"\nscratch_url = \"postgres://drill:${BP_TEST_PGPW:-pw}@scratch:5432/x\"",
        ))
        .unwrap();
        let u = p.restore.scratch_url.as_ref().unwrap();
        assert_eq!(u.expose(), "postgres://drill:pw@scratch:5432/x");
        assert!(!format!("{:?}", p.restore).contains(":pw@"), "a secret");
        let e = parse(&PG.replace(
            "strategy = \"truncate\"",
            "strategy = \"truncate\"\nscratch_url = \"mysql://root:pw@h/x\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(":15:")
                && e.contains("restore.scratch_url")
                && e.contains("not a PostgreSQL URL"),
            "{e}"
        );
        assert!(!e.contains(":pw@"), "{e}");
        let e = parse(&format!(
            "{GOOD}[restore]\nscratch_url = \"postgres://h/x\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("restore.scratch_url") && e.contains("only database sources"),
            "{e}"
        );
    }

    #[test]
    fn database_source_errors_are_located() {
        let e = parse(&PG.replace("postgres://app", "mysql://app"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("source.url") && e.contains("not a PostgreSQL URL"),
            "{e}"
        );
        assert!(!e.contains(":pw@"), "{e}");
        let e = parse(&PG.replace("split_rows = 5000", "split_rows = 5"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(":9:") && e.contains("source.split_rows"), "{e}");
        let e = parse(&PG.replace("\"task_*\"", "\"task/*\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid table pattern"), "{e}");
        let e = parse(&PG.replace("schemas = [", "root = \"/x\"\nschemas = ["))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("source.root") && e.contains("not a key of a \"postgres\" source"),
            "{e}"
        );
        let e = parse(&PG.replace("\"skip-existing\"", "\"merge\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("restore.tables.variable") && e.contains("unknown strategy"),
            "{e}"
        );
    }

    #[test]
    fn mysql_database_comes_from_the_url() {
        let text = PG
            .replace("type = \"postgres\"", "type = \"mysql\"")
            .replace(
                "postgres://app:${BP_TEST_PGPW:-pw}@db:5432/app",
                "mysql://root@db:3306/shop",
            )
            .replace("schemas = [\"public\", \"audit\"]\n", "");
        let p = parse(&text).unwrap();
        let SourceConfig::Mysql(db) = &p.source else {
            panic!("mysql expected")
        };
        assert_eq!(db.schemas, vec!["shop"]);
        let e = parse(&text.replace("/shop", "")).unwrap_err().to_string();
        assert!(e.contains("names no database"), "{e}");
    }

    #[test]
    fn command_source_is_checked() {
        let text = r#"
name = "cmd"
[source]
type = "command"
command = ["pg_dump", "-Fc", "app"]
timeout = "30m"
name = "pg_dump"
[target]
url = "memory://x"
"#;
        let p = parse(text).unwrap();
        let SourceConfig::Command(c) = &p.source else {
            panic!("command expected")
        };
        assert_eq!(c.argv, vec!["pg_dump", "-Fc", "app"]);
        assert_eq!(c.timeout, Duration::from_secs(1800));
        assert!(!c.shell);
        let e = parse(&text.replace("\"30m\"", "\"soon\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.timeout"), "{e}");
        let e = parse(&text.replace("timeout = \"30m\"", "shell = true"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("with shell = true, give one string"), "{e}");
        let e = parse(&text.replace("command = [\"pg_dump\", \"-Fc\", \"app\"]\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing key source.command"), "{e}");
        let e = parse(&text.replace("name = \"pg_dump\"", "name = \"../x\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid stream name"), "{e}");
    }

    #[test]
    fn several_errors_reported_together() {
        let text = r#"
name = "Bad Name"
[source]
type = "ftp"
root = "x"
[target]
url = "file://s"
tier = "lukewarm"
"#;
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("invalid pipeline name"), "{e}");
        assert!(e.contains("unknown source type"), "{e}");
        assert!(e.contains("unknown access tier"), "{e}");
    }
}
