//! Restore drills of database pipelines: load the snapshot into a scratch schema
//! (PostgreSQL) or database (MySQL/MariaDB), let `restore --to-db` compare every row
//! count and row-set checksum with the manifest, and drop the scratch again.
//!
//! `restore --to-db` refuses a target without the tables (nothing is written before the
//! target fits), so the drill makes them first, from the manifest's table records: the
//! stored columns in stored order, with the types the source spelled (`format_type()` /
//! `COLUMN_TYPE`), `NOT NULL` where the source had it, and the primary key. That works on
//! any server of the same kind (the source's own or another one) and is exactly the
//! shape the restore checks against. It then adds what the backup recorded of the
//! source's DDL before loading, so the drill pays what a restore into a migrated database
//! pays (index maintenance, foreign-key checks) and its RTO means something:
//! * PostgreSQL: unique, check and exclusion constraints, foreign keys between tables of
//!   the snapshot, and the other indexes;
//! * MySQL/MariaDB: the secondary indexes (`KEY`, `UNIQUE KEY`, `FULLTEXT KEY`…) and
//!   table checks of `SHOW CREATE TABLE`, one `ALTER TABLE` per table, then the foreign
//!   keys between tables of the snapshot, pointed at the scratch database. A table whose
//!   rows a foreign key refuses in stored order (a self-reference to a later row) fails
//!   the drill, as it fails `restore --to-db` into the source's schema.
//!
//! Left out: column defaults (every column is loaded) and checks inside a column's
//! definition, triggers, foreign keys to tables outside the snapshot (logged). Types and
//! functions defined in the source database (enums, domains) must exist on the scratch
//! server.
//!
//! The measured RTO runs from resolving the snapshot to the last table's checksum
//! comparison, including making the tables. The scratch is dropped in every case
//! (`DROP SCHEMA … CASCADE` / `DROP DATABASE`); a failure to drop is recorded in the
//! drill record (`cleanup_error`) and logged, but does not fail a drill whose restore
//! succeeded.

use std::time::Instant;

use chrono::Utc;
use mysql_async::prelude::Queryable;

use crate::db::mysql::parse_backquoted;
use crate::db::sql::Dialect;
use crate::error::{Error, Result};
use crate::extract::config::SourceConfig;
use crate::manifest::layout::Layout;
use crate::manifest::TableRecord;
use crate::pipeline::drill::{conclude, open_snapshot, DrillOptions, DrillRecord};
use crate::pipeline::Pipeline;
use crate::restore::config::Strategy;
use crate::restore::db::{env_password, restore_db_with, DbRestoreOptions, LoadOptions};
use crate::store::Store;
use crate::support::ids;
use crate::support::secret::{redact_url, Secret};

/// Which server kind a pipeline's source needs; `None` for non-database sources.
pub fn db_kind(p: &Pipeline) -> Option<&'static str> {
    match &p.source {
        SourceConfig::Postgres(_) => Some("postgres"),
        SourceConfig::Mysql(_) => Some("mysql"),
        _ => None,
    }
}

/// A unique scratch name: `bp_drill_<pipeline>_<hex>`, lowercase `[a-z0-9_]`, at most 63
/// characters (PostgreSQL's identifier limit; MySQL allows 64).
pub fn scratch_name(pipeline: &str) -> String {
    let clean: String = pipeline
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    format!("bp_drill_{clean}_{}", ids::random_hex(6))
}

fn check_url(pg: bool, url: &Secret) -> Result<()> {
    let u = url.expose();
    let ok = if pg {
        u.starts_with("postgres://") || u.starts_with("postgresql://")
    } else {
        u.starts_with("mysql://") || u.starts_with("mariadb://")
    };
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "scratch database {}: the pipeline's source is {}; pass a {} URL",
            redact_url(u),
            if pg { "PostgreSQL" } else { "MySQL" },
            if pg {
                "postgres://user@host:5432/db"
            } else {
                "mysql://user@host:3306/db"
            }
        )))
    }
}

fn dialect(pg: bool) -> Dialect {
    if pg {
        Dialect::Postgres
    } else {
        Dialect::Mysql
    }
}

/// The `CREATE TABLE` of `t` in `schema`, from its manifest record.
fn create_table(pg: bool, schema: &str, t: &TableRecord) -> String {
    let q = |s: &str| dialect(pg).ident(s);
    let mut cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                q(&c.name),
                c.ty,
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    if !t.primary_key.is_empty() {
        let pk: Vec<String> = t.primary_key.iter().map(|c| q(c)).collect();
        cols.push(format!("PRIMARY KEY ({})", pk.join(", ")));
    }
    format!(
        "CREATE TABLE {}.{} ({})",
        q(schema),
        q(&t.name),
        cols.join(", ")
    )
}

/// A PostgreSQL qualified name (`a.b`, `"A"."b c"`) split and unquoted; `None` when `s`
/// is not exactly one.
fn parse_qualified(s: &str) -> Option<(String, String)> {
    fn part(s: &str) -> Option<(String, &str)> {
        if let Some(rest) = s.strip_prefix('"') {
            let mut out = String::new();
            let mut it = rest.char_indices();
            while let Some((i, ch)) = it.next() {
                if ch == '"' {
                    if rest[i + 1..].starts_with('"') {
                        out.push('"');
                        it.next();
                    } else {
                        return Some((out, &rest[i + 1..]));
                    }
                } else {
                    out.push(ch);
                }
            }
            None
        } else {
            let end = s.find(['.', ' ', '(']).unwrap_or(s.len());
            (end > 0).then(|| (s[..end].to_string(), &s[end..]))
        }
    }
    let (schema, rest) = part(s.trim())?;
    let (name, rest) = part(rest.strip_prefix('.')?)?;
    rest.is_empty().then_some((schema, name))
}

/// `def` (`CREATE [UNIQUE] INDEX name ON [ONLY] schema.table USING …`, as
/// `pg_get_indexdef` prints it) made to build the same index on `table`.
fn retarget_index(def: &str, table: &str) -> Option<String> {
    let on = def.find(" ON ")? + 4;
    let only = if def[on..].starts_with("ONLY ") {
        "ONLY "
    } else {
        ""
    };
    let using = on + def[on..].find(" USING ")?;
    Some(format!("{}{only}{table}{}", &def[..on], &def[using..]))
}

/// The statements that give the scratch copies of `ts` (in schema `scratch`) the
/// source's constraints and indexes, as the manifest recorded them: unique, check and
/// exclusion constraints, then foreign keys whose parent is among `ts` (pointed at its
/// scratch copy), then the other indexes. Returns them with the foreign keys that could
/// not be made (their parent is not in the snapshot).
fn constraints_and_indexes(scratch: &str, ts: &[&TableRecord]) -> (Vec<String>, Vec<String>) {
    let q = |t: &TableRecord| {
        format!(
            "{}.{}",
            Dialect::Postgres.ident(scratch),
            Dialect::Postgres.ident(&t.name)
        )
    };
    let (mut plain, mut fks, mut indexes, mut skipped) = (vec![], vec![], vec![], vec![]);
    for t in ts {
        for c in &t.constraints {
            let Some(at) = c
                .find(" FOREIGN KEY ")
                .filter(|_| c.contains(" REFERENCES "))
            else {
                plain.push(format!("ALTER TABLE {} ADD {c}", q(t)));
                continue;
            };
            // `CONSTRAINT n FOREIGN KEY (cols) REFERENCES schema.parent(cols) …`
            let refs = at + c[at..].find(" REFERENCES ").unwrap_or(0) + 12;
            let open = refs + c[refs..].find('(').unwrap_or(c.len() - refs);
            let parent = parse_qualified(&c[refs..open])
                .and_then(|(sc, n)| ts.iter().find(|p| p.schema == sc && p.name == n).copied());
            match parent {
                Some(pt) => fks.push(format!(
                    "ALTER TABLE {} ADD {}{}{}",
                    q(t),
                    &c[..refs],
                    q(pt),
                    &c[open..]
                )),
                None => skipped.push(format!("{}.{}: {}", t.schema, t.name, c)),
            }
        }
        indexes.extend(t.indexes.iter().filter_map(|d| retarget_index(d, &q(t))));
    }
    plain.extend(fks);
    plain.extend(indexes);
    (plain, skipped)
}

/// The MySQL statements that give the scratch copies of `ts` (in database `scratch`) the
/// source's indexes and constraints as the manifest recorded them: per table one
/// `ALTER TABLE` adding its indexes and checks, then per table one adding the foreign
/// keys whose parent is among `ts` (pointed at its scratch copy). Returns them with the
/// foreign keys that could not be made (their parent is not in the snapshot).
fn my_constraints_and_indexes(scratch: &str, ts: &[&TableRecord]) -> (Vec<String>, Vec<String>) {
    let q = |t: &TableRecord| {
        format!(
            "{}.{}",
            Dialect::Mysql.ident(scratch),
            Dialect::Mysql.ident(&t.name)
        )
    };
    let (mut plain, mut fks, mut skipped) = (vec![], vec![], vec![]);
    for t in ts {
        let mut adds: Vec<String> = t.indexes.clone();
        let mut keys = Vec::new();
        for c in &t.constraints {
            let Some(at) = c
                .find(" REFERENCES ")
                .filter(|_| c.contains(" FOREIGN KEY "))
            else {
                adds.push(c.clone());
                continue;
            };
            // `CONSTRAINT n FOREIGN KEY (cols) REFERENCES `db`.`parent` (cols) …`
            let refs = at + 12;
            let parent = parse_backquoted(&c[refs..]).and_then(|(db, rest)| {
                let (name, rest) = parse_backquoted(rest.strip_prefix('.')?)?;
                let pt = ts.iter().find(|p| p.schema == db && p.name == name)?;
                Some((pt, rest))
            });
            match parent {
                Some((pt, rest)) => keys.push(format!("{} REFERENCES {}{rest}", &c[..at], q(pt))),
                None => skipped.push(format!("{}.{}: {}", t.schema, t.name, c)),
            }
        }
        let alter = |v: &[String]| {
            let adds: Vec<String> = v.iter().map(|d| format!("ADD {d}")).collect();
            format!("ALTER TABLE {} {}", q(t), adds.join(", "))
        };
        if !adds.is_empty() {
            plain.push(alter(&adds));
        }
        if !keys.is_empty() {
            fks.push(alter(&keys));
        }
    }
    plain.extend(fks);
    (plain, skipped)
}

/// The scratch schemas: one per source schema (suffix `_1`, `_2`… when there are
/// several, so same-named tables of different schemas do not collide), with the tables
/// each receives.
fn groups<'a>(base: &str, tables: &'a [TableRecord]) -> Vec<(String, Vec<&'a TableRecord>)> {
    let mut by: Vec<(String, Vec<&TableRecord>)> = Vec::new();
    for t in tables {
        match by.iter_mut().find(|(s, _)| *s == t.schema) {
            Some((_, v)) => v.push(t),
            None => by.push((t.schema.clone(), vec![t])),
        }
    }
    let many = by.len() > 1;
    by.into_iter()
        .enumerate()
        .map(|(i, (_, v))| {
            let name = if many {
                format!("{base}_{}", i + 1)
            } else {
                base.to_string()
            };
            (name, v)
        })
        .collect()
}

async fn run_sql(pg: bool, url: &Secret, stmts: &[String]) -> Result<()> {
    if pg {
        let pw = env_password(url, "PGPASSWORD");
        let c = crate::db::postgres::connect(url, pw.as_ref()).await?;
        for s in stmts {
            c.batch_execute(s)
                .await
                .map_err(|e| crate::db::postgres::pg_err(first_words(s), e))?;
        }
    } else {
        let pw = env_password(url, "MYSQL_PWD");
        let mut c = crate::db::mysql::connect(url, pw.as_ref()).await?;
        for s in stmts {
            c.query_drop(s.as_str())
                .await
                .map_err(|e| crate::db::mysql::my_err(first_words(s), e))?;
        }
        let _ = c.disconnect().await;
    }
    Ok(())
}

/// Tests look at the scratch tables a drill made (`BLOBPIPE_TEST_DRILL_KEEP_SCRATCH=1`:
/// not dropped; the test drops them).
fn keep_scratch() -> bool {
    #[cfg(any(test, feature = "testing"))]
    if std::env::var("BLOBPIPE_TEST_DRILL_KEEP_SCRATCH").as_deref() == Ok("1") {
        return true;
    }
    false
}

fn first_words(s: &str) -> String {
    s.split(" (").next().unwrap_or(s).to_string()
}

/// Drill a database pipeline into a scratch schema/database on `scratch_url`. A failed
/// restore is not an `Err`: the record says so (and is stored, and alerted).
///
/// # Errors
/// `Config` when the pipeline is not a database pipeline or the URL is of the wrong kind.
pub async fn drill_db(
    p: &Pipeline,
    store: Store,
    opts: &DrillOptions,
    scratch_url: &Secret,
) -> Result<DrillRecord> {
    let Some(kind) = db_kind(p) else {
        return Err(Error::config(format!(
            "pipeline {} does not read a database; drill it into a scratch directory (leave out --scratch-db)",
            p.name
        )));
    };
    let pg = kind == "postgres";
    check_url(pg, scratch_url)?;
    let mut layout = Layout::new(&p.target.prefix);
    if let Some(k) =
        crate::manifest::layout::unlock(&*store, &layout, p.encryption.as_ref(), false).await?
    {
        layout = layout.with_key(k);
    }
    let base = scratch_name(&p.name);
    let word = if pg { "schema" } else { "database" };
    let started_at = Utc::now();
    let t0 = Instant::now();
    let mut snapshot = None;
    let mut made: Vec<String> = Vec::new();
    let mut tables = 0u64;
    let mut rows = 0u64;
    let mut fetched = 0u64;
    let res: Result<()> = async {
        let (id, m) = open_snapshot(&store, &layout, opts, &mut snapshot).await?;
        if m.tables.is_empty() {
            return Err(Error::not_found(format!(
                "snapshot {id} holds no database tables"
            )));
        }
        for (name, ts) in groups(&base, &m.tables) {
            let mut ddl = vec![format!(
                "CREATE {} {}",
                if pg { "SCHEMA" } else { "DATABASE" },
                dialect(pg).ident(&name)
            )];
            made.push(name.clone());
            ddl.extend(ts.iter().map(|t| create_table(pg, &name, t)));
            let (more, skipped) = if pg {
                constraints_and_indexes(&name, &ts)
            } else {
                my_constraints_and_indexes(&name, &ts)
            };
            ddl.extend(more);
            if !skipped.is_empty() {
                tracing::info!(
                    "drill: {} foreign key(s) point at tables outside the snapshot and were not made: {}",
                    skipped.len(),
                    skipped.join("; ")
                );
            }
            run_sql(pg, scratch_url, &ddl)
                .await
                .map_err(crate::restore::db::at_destination)?;
            let r = restore_db_with(
                &store,
                &layout,
                &m,
                &DbRestoreOptions {
                    url: scratch_url.clone(),
                    tables: ts
                        .iter()
                        .map(|t| format!("{}.{}", t.schema, t.name))
                        .collect(),
                    strategy: Strategy::FailIfNotEmpty,
                    strategies: Default::default(),
                    no_transaction: false,
                    target_schema: Some(name.clone()),
                },
                // What a real restore of this pipeline would do, so the RTO is its.
                &LoadOptions {
                    jobs: p.restore.jobs,
                    fk_check: p.restore.fk_check,
                },
            )
            .await?;
            tables += r.tables.len() as u64;
            rows += r.tables.iter().map(|t| t.rows_after).sum::<u64>();
            fetched += r.bytes_fetched;
        }
        Ok(())
    }
    .await;
    let rto = t0.elapsed().as_secs_f64();
    let finished_at = Utc::now();
    let mut cleanup_error = None;
    if !made.is_empty() && !keep_scratch() {
        let drops: Vec<String> = made
            .iter()
            .map(|n| {
                if pg {
                    format!(
                        "DROP SCHEMA IF EXISTS {} CASCADE",
                        Dialect::Postgres.ident(n)
                    )
                } else {
                    format!("DROP DATABASE IF EXISTS {}", Dialect::Mysql.ident(n))
                }
            })
            .collect();
        if let Err(e) = run_sql(pg, scratch_url, &drops).await {
            tracing::warn!("could not drop the drill's scratch {word} {made:?}: {e}");
            cleanup_error = Some(format!("{word} {}: {e}", made.join(", ")));
        }
    }
    let mut rec = DrillRecord::new(
        p,
        snapshot,
        started_at,
        finished_at,
        rto,
        res.as_ref().err(),
    );
    rec.scratch = Some(format!(
        "{} {word} {}",
        redact_url(scratch_url.expose()),
        if made.is_empty() {
            base.clone()
        } else {
            made.join(", ")
        }
    ));
    rec.tables = tables;
    rec.rows = rows;
    rec.bytes_fetched = fetched;
    rec.cleanup_error = cleanup_error;
    Ok(conclude(p, &store, &layout, rec, res.as_ref().err()).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Column;

    fn t(schema: &str, name: &str) -> TableRecord {
        TableRecord {
            source: "postgres".into(),
            schema: schema.into(),
            name: name.into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: "bigint".into(),
                    nullable: false,
                },
                Column {
                    name: "n\"ote".into(),
                    ty: "numeric(20,6)".into(),
                    nullable: true,
                },
            ],
            primary_key: vec!["id".into()],
            indexes: vec![],
            constraints: vec![],
            rows: 0,
            checksum: String::new(),
            bytes: 0,
            chunks: vec![],
            range: 0,
        }
    }

    #[test]
    fn ddl_from_manifest_records() {
        assert_eq!(
            create_table(true, "bp_x", &t("public", "a")),
            r#"CREATE TABLE "bp_x"."a" ("id" bigint NOT NULL, "n""ote" numeric(20,6), PRIMARY KEY ("id"))"#
        );
        assert_eq!(
            create_table(false, "bp_x", &t("app", "a")),
            "CREATE TABLE `bp_x`.`a` (`id` bigint NOT NULL, `n\"ote` numeric(20,6), PRIMARY KEY (`id`))"
        );
    }

    #[test]
    fn source_indexes_and_constraints_are_pointed_at_the_scratch_copies() {
        assert_eq!(
            parse_qualified(r#""My ""S"".x"."t 1""#),
            Some((r#"My "S".x"#.to_string(), "t 1".to_string()))
        );
        assert_eq!(
            parse_qualified("public.dag_run"),
            Some(("public".into(), "dag_run".into()))
        );
        assert_eq!(parse_qualified("dag_run"), None);
        let mut child = t("public", "ti");
        child.indexes = vec![
            "CREATE INDEX ti_state ON public.ti USING btree (state) WHERE (state IS NOT NULL)"
                .into(),
            "CREATE UNIQUE INDEX ti_u ON ONLY public.ti USING btree (a, b)".into(),
        ];
        child.constraints = vec![
            "CONSTRAINT ti_pos CHECK ((n > 0))".into(),
            "CONSTRAINT ti_run_fk FOREIGN KEY (dag_id, run_id) REFERENCES public.dag_run(dag_id, run_id) ON DELETE CASCADE".into(),
            "CONSTRAINT ti_trigger_fk FOREIGN KEY (trigger_id) REFERENCES public.\"trigger\"(id)".into(),
        ];
        let parent = t("public", "dag_run");
        let (sql, skipped) = constraints_and_indexes("bp_s", &[&child, &parent]);
        assert_eq!(
            sql,
            vec![
                r#"ALTER TABLE "bp_s"."ti" ADD CONSTRAINT ti_pos CHECK ((n > 0))"#.to_string(),
                r#"ALTER TABLE "bp_s"."ti" ADD CONSTRAINT ti_run_fk FOREIGN KEY (dag_id, run_id) REFERENCES "bp_s"."dag_run"(dag_id, run_id) ON DELETE CASCADE"#.into(),
                r#"CREATE INDEX ti_state ON "bp_s"."ti" USING btree (state) WHERE (state IS NOT NULL)"#.into(),
                r#"CREATE UNIQUE INDEX ti_u ON ONLY "bp_s"."ti" USING btree (a, b)"#.into(),
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("ti_trigger_fk"), "{skipped:?}");
    }

    #[test]
    fn mysql_indexes_checks_and_foreign_keys_are_pointed_at_the_scratch_copies() {
        let mut child = t("app", "ti");
        child.indexes = vec![
            "UNIQUE KEY `u` (`a`,`b`)".into(),
            "KEY `s` (`state`)".into(),
        ];
        child.constraints = vec![
            "CONSTRAINT `fk_run` FOREIGN KEY (`run_id`) REFERENCES `app`.`run` (`id`) ON DELETE CASCADE".into(),
            "CONSTRAINT `fk_out` FOREIGN KEY (`x`) REFERENCES `other`.`run` (`id`)".into(),
            "CONSTRAINT `pos` CHECK (`n` > 0)".into(),
        ];
        let mut parent = t("app", "run");
        parent.constraints =
            vec!["CONSTRAINT `self` FOREIGN KEY (`up`) REFERENCES `app`.`run` (`id`)".into()];
        let (sql, skipped) = my_constraints_and_indexes("bp_s", &[&child, &parent]);
        assert_eq!(
            sql,
            vec![
                "ALTER TABLE `bp_s`.`ti` ADD UNIQUE KEY `u` (`a`,`b`), ADD KEY `s` (`state`), ADD CONSTRAINT `pos` CHECK (`n` > 0)".to_string(),
                "ALTER TABLE `bp_s`.`ti` ADD CONSTRAINT `fk_run` FOREIGN KEY (`run_id`) REFERENCES `bp_s`.`run` (`id`) ON DELETE CASCADE".into(),
                "ALTER TABLE `bp_s`.`run` ADD CONSTRAINT `self` FOREIGN KEY (`up`) REFERENCES `bp_s`.`run` (`id`)".into(),
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("fk_out"), "{skipped:?}");
    }

    #[test]
    fn scratch_names_are_safe_and_one_per_source_schema() {
        let n = scratch_name("Nightly-DB.prod");
        assert!(n.starts_with("bp_drill_nightly_db_prod_"), "{n}");
        assert!(n.len() <= 63);
        assert!(scratch_name(&"x".repeat(200)).len() <= 63);
        let ts = [t("a", "x"), t("b", "x"), t("a", "y")];
        let g = groups("s", &ts);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].0.as_str(), g[0].1.len()), ("s_1", 2));
        assert_eq!((g[1].0.as_str(), g[1].1.len()), ("s_2", 1));
        assert_eq!(groups("s", &ts[..1])[0].0, "s");
    }
}
