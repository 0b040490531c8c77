//! `[retention]`, `[lifecycle]` and `[immutability]`: checked into the retention stage's
//! own config types.

use std::time::Duration;

use toml::Spanned;

use super::check::Checker;
use super::raw::{ImmutabilitySpec, LifecycleSpec, RetentionSpec};
use super::{FullEvery, IncrementalConfig};
use crate::retention::config::{ImmutabilityConfig, LifecycleConfig, MaxUnused, RetentionConfig};
use crate::store::config::{StoreLocation, TargetConfig};
use crate::store::LockMode;
use crate::support::units::parse_duration;

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

/// `[retention]`: keep counts, `keep_within`, `prune_grace`; a table that would keep
/// nothing is an error.
pub(super) fn check_retention(
    c: &mut Checker<'_>,
    r: Option<&RetentionSpec>,
) -> Option<RetentionConfig> {
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
        max_unused: r.max_unused.as_ref().and_then(|v| {
            match v.get_ref().parse::<MaxUnused>() {
                Ok(m) => Some(m),
                Err(e) => {
                    c.at(
                        v.span(),
                        "retention.max_unused",
                        e,
                        "write a share like \"10%\" (prune repacks partly used packs until at most that much of what is stored is unused)",
                    );
                    None
                }
            }
        }),
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

/// `[lifecycle]`: tier ages that get colder with age, and never archiving packs the
/// newest incremental snapshots still need (unless `allow_archive_before_full`).
pub(super) fn check_lifecycle(
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

/// Longest policy accepted (Azure's limit for time-based retention: 146,000 days).
const MAX_IMMUTABLE_DAYS: i64 = 146_000;

/// `[immutability]`: `days` (required, 1–146000), `mode` (`unlocked` default, or
/// `locked`), `legal_hold`; refused for a local target (a directory cannot be made
/// write-once, so the promise would be false).
pub(super) fn check_immutability(
    c: &mut Checker<'_>,
    s: Option<&ImmutabilitySpec>,
    target: &TargetConfig,
) -> Option<ImmutabilityConfig> {
    let s = s?;
    let days = match &s.days {
        None => {
            c.missing(
                "immutability.days",
                "add days = 30 (each snapshot stays undeletable that many days after its commit)",
            );
            1
        }
        Some(d) if (1..=MAX_IMMUTABLE_DAYS).contains(d.get_ref()) => *d.get_ref() as u32,
        Some(d) => {
            c.at(
                d.span(),
                "immutability.days",
                format!(
                    "must be between 1 and {MAX_IMMUTABLE_DAYS}, got {}",
                    d.get_ref()
                ),
                "write the number of days each snapshot must stay undeletable, e.g. days = 30",
            );
            1
        }
    };
    let mode = match &s.mode {
        None => LockMode::Unlocked,
        Some(m) => match m.get_ref().to_ascii_lowercase().as_str() {
            "unlocked" => LockMode::Unlocked,
            "locked" => LockMode::Locked,
            other => {
                c.at(
                    m.span(),
                    "immutability.mode",
                    format!("unknown mode {other:?}"),
                    "write mode = \"unlocked\" (can still be shortened; for trying it out) or \"locked\" (can only be extended; nobody can delete early)",
                );
                LockMode::Unlocked
            }
        },
    };
    if let StoreLocation::Local(_) = target.location {
        let span = s.days.as_ref().map(|d| d.span());
        let msg = "a local directory cannot be made write-once, so [immutability] would promise protection it cannot give";
        let fix = "back up to an Azure container with version-level immutability enabled (bicep: enableImmutability), or remove [immutability]";
        match span {
            Some(sp) => c.at(sp, "immutability", msg, fix),
            None => c.missing("immutability", &format!("{msg}; {fix}")),
        }
    }
    Some(ImmutabilityConfig {
        days,
        mode,
        legal_hold: s.legal_hold.unwrap_or(false),
    })
}
