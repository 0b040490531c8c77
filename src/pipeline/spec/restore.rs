//! `[restore]`: default and per-table strategies, and the scratch server a drill of a
//! database source restores into (checked against the source's kind).

use std::collections::BTreeMap;

use toml::Spanned;

use super::check::Checker;
use super::raw::RestoreSpec;
use crate::extract::config::SourceConfig;
use crate::restore::config::{FkCheck, RestoreConfig, Strategy, DEFAULT_JOBS, MAX_JOBS};
use crate::support::secret::{redact_url, Secret};

/// Strategies by name; `scratch_url` only for database sources, of the same kind.
pub(super) fn check_restore(
    c: &mut Checker<'_>,
    r: &RestoreSpec,
    source: &SourceConfig,
) -> RestoreConfig {
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
    let mut tables = BTreeMap::new();
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
        Some(Secret::new(u))
    });
    let jobs = match &r.jobs {
        None => DEFAULT_JOBS,
        Some(v) if (1..=MAX_JOBS as i64).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            c.at(
                v.span(),
                "restore.jobs",
                format!("jobs = {} is out of range", v.get_ref()),
                &format!("use 1 (one connection) to {MAX_JOBS}"),
            );
            DEFAULT_JOBS
        }
    };
    let fk_check = match &r.fk_check {
        None => FkCheck::Immediate,
        Some(v) => FkCheck::parse(v.get_ref()).unwrap_or_else(|| {
            c.at(
                v.span(),
                "restore.fk_check",
                format!("unknown fk_check {:?}", v.get_ref()),
                "use \"immediate\" (the target's triggers, row by row) or \"bulk\" (one anti-join per foreign key before commit)",
            );
            FkCheck::Immediate
        }),
    };
    RestoreConfig {
        strategy,
        tables,
        scratch_url,
        jobs,
        fk_check,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{parse, GOOD, PG};

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
    fn restore_jobs_and_fk_check_are_checked_where_written() {
        let p = parse(&PG.replace(
            "strategy = \"truncate\"",
            "strategy = \"truncate\"\njobs = 2\nfk_check = \"bulk\"",
        ))
        .unwrap();
        assert_eq!(p.restore.jobs, 2);
        assert_eq!(p.restore.fk_check, crate::restore::config::FkCheck::Bulk);
        let p = parse(PG).unwrap();
        assert_eq!(p.restore.jobs, crate::restore::config::DEFAULT_JOBS);
        assert_eq!(
            p.restore.fk_check,
            crate::restore::config::FkCheck::Immediate
        );
        let e = parse(&PG.replace(
            "strategy = \"truncate\"",
            "strategy = \"truncate\"\njobs = 0\nfk_check = \"later\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(":15:") && e.contains("restore.jobs") && e.contains("out of range"),
            "{e}"
        );
        assert!(
            e.contains(":16:") && e.contains("restore.fk_check") && e.contains("\"later\""),
            "both errors are collected: {e}"
        );
    }
}
