//! Checked `[retention]` and `[lifecycle]` settings: which snapshots survive `forget`,
//! when `prune` may delete, and after how many days packs move to colder tiers.

use std::time::Duration;

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
    /// Repack partly used packs (after every prune, including automatic ones) until at
    /// most this share of the stored bytes is unused. `None`: never repack.
    pub max_unused: Option<MaxUnused>,
}

/// The share of a pipeline's stored bytes `prune` tolerates as unused before it repacks
/// partly used packs (`--max-unused`, `[retention] max_unused`), in hundredths of a
/// percent. Written `"10%"`, `"2.5%"` or `"0%"` (repack every partly used pack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxUnused(u32);

impl MaxUnused {
    /// As a fraction (0.0 to 1.0).
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

impl std::str::FromStr for MaxUnused {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let num = t
            .strip_suffix('%')
            .ok_or_else(|| format!("{s:?} is not a percentage (write e.g. \"10%\")"))?;
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a percentage (write e.g. \"10%\")"))?;
        if !(0.0..=100.0).contains(&v) {
            return Err(format!("{s:?} must be between 0% and 100%"));
        }
        Ok(MaxUnused((v * 100.0).round() as u32))
    }
}

impl std::fmt::Display for MaxUnused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", f64::from(self.0) / 100.0)
    }
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

/// Checked `[immutability]`: after each commit, the snapshot's blobs (manifest, packs,
/// segments) get an Azure version-level immutability policy (and optionally a legal
/// hold), so neither a leaked key nor a compromised admin can delete them early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImmutabilityConfig {
    /// Each snapshot stays undeletable at least this many days after its commit.
    pub days: u32,
    /// `unlocked` (can be shortened by someone allowed to) or `locked` (only extended).
    pub mode: crate::store::LockMode,
    /// Also set a legal hold (no expiry; cleared by hand).
    pub legal_hold: bool,
}

impl ImmutabilityConfig {
    /// Days beyond `days` a policy is set for, so that the next runs find the blobs they
    /// share with their parent still covered and protect only their new blobs: up to
    /// a quarter of `days`, at least 1 and at most 7. A snapshot is protected for at
    /// least `days` and at most `days + margin_days()`.
    pub fn margin_days(&self) -> u32 {
        self.days.div_ceil(4).clamp(1, 7)
    }
}
