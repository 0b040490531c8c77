//! `[verify]`, `[lock]` and `[incremental]`: how a run checks itself, holds its lock and
//! decides between a full and an incremental backup.

use std::time::Duration;

use super::check::Checker;
use super::raw::{CountOrDuration, IncrementalSpec, LockSpec, VerifySpec};
use super::{FullEvery, IncrementalConfig};
use crate::support::units::parse_duration;
use crate::verify::config::{VerifyConfig, VerifyMode};

/// `[verify]`: mode (default: a 10% sample), seed, whether to verify after a backup, and
/// the stored bytes of packs one scale-out verify message covers (`batch`, default 1 GiB).
pub(super) fn check_verify(c: &mut Checker<'_>, s: &VerifySpec) -> VerifyConfig {
    let fraction = s.sample.as_ref().map(|f| f.get_ref().0).unwrap_or(0.1);
    let mode = match s.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
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
    VerifyConfig {
        mode,
        seed: s.seed,
        after_backup: s.after_backup.unwrap_or(true),
        batch: super::check::size_in(c, &s.batch, "verify.batch", 1 << 30, 64 << 10, 1 << 40)
            as u64,
    }
}

/// `[lock] ttl`: 15–60 s (Azure's lease range), default 60 s.
pub(super) fn check_lock_ttl(c: &mut Checker<'_>, s: &LockSpec) -> Duration {
    match &s.ttl {
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
    }
}

/// `[incremental]`: on by default; `full_every` a count, an age (≥ 1m) or `"never"`.
pub(super) fn check_incremental(c: &mut Checker<'_>, s: &IncrementalSpec) -> IncrementalConfig {
    let full_every = match &s.full_every {
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
    IncrementalConfig {
        enabled: s.enabled.unwrap_or(true),
        full_every,
    }
}
