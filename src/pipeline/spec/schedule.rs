//! `[schedule]` and `[freshness]`: when the scheduler runs a pipeline and how old its
//! newest verified snapshot may get.

use std::time::Duration;

use super::check::Checker;
use super::raw::{FreshnessSpec, ScheduleSpec};
use crate::support::units::parse_duration;

/// `[schedule]`: a 5-field UTC cron expression (checked by `croner`) and `catch_up`
/// (default true).
pub(super) fn check_schedule(
    c: &mut Checker<'_>,
    s: Option<&ScheduleSpec>,
) -> (Option<String>, bool) {
    let schedule = s.map(|sc| {
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
    let catch_up = s.and_then(|sc| sc.catch_up).unwrap_or(true);
    (schedule, catch_up)
}

/// `[freshness] rpo`: at least one minute.
pub(super) fn check_freshness(c: &mut Checker<'_>, s: Option<&FreshnessSpec>) -> Option<Duration> {
    match s.and_then(|f| f.rpo.as_ref()) {
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
    }
}
