//! Restore into MySQL / MariaDB: the same checks, order and comparisons as
//! [`crate::restore::db`], with MySQL's means.
//!
//! Rows go in as batched, parameterised multi-row `INSERT`s (`LOAD DATA LOCAL INFILE` is
//! off by default on servers and clients, and batched inserts need no server setting).
//! `truncate` uses `DELETE` in reverse foreign-key order, because `TRUNCATE` commits
//! implicitly and is refused on referenced tables; `skip-existing` is
//! `INSERT … ON DUPLICATE KEY UPDATE <first column> = <first column>` (a no-op for rows
//! whose key exists, unlike `INSERT IGNORE`, which would also swallow data errors).
//! `AUTO_INCREMENT` counters move past inserted keys by themselves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use crate::db::csv::parse_csv;
use crate::db::mysql::{self as my, my_err};
use crate::db::sql::{my_ident as ident, my_is_binary as is_binary};
use crate::error::{Error, Result};
use crate::manifest::layout::Layout;
use crate::manifest::{Entry, Manifest, PathBytes, RowsetDigest};
use crate::pipeline::spec::Strategy;
use crate::restore::db::{
    fk_order, plan_tables, prefetch, refuse, DbRestoreOptions, DbRestoreReport, Planned,
    TableReport,
};
use crate::store::Store;
use crate::support::secret::redact_url;

/// Rows per `INSERT` at most (also bounded by 65,535 placeholders).
const ROWS_PER_INSERT: usize = 500;

/// Restore into MySQL / MariaDB.
///
/// # Errors
/// As [`crate::restore::db::restore_db`].
pub async fn restore_mysql(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    opts: &DbRestoreOptions,
) -> Result<DbRestoreReport> {
    let started_at = Utc::now();
    let planned = plan_tables(m, opts)?;
    let pw = crate::restore::db::env_password(&opts.url, "MYSQL_PWD");
    let mut c = my::connect(&opts.url, pw.as_ref()).await?;

    let mut problems = Vec::new();
    let mut before: HashMap<String, u64> = HashMap::new();
    for p in &planned {
        let Some((cols, pk)) = my::table_shape(&mut c, &p.schema, &p.rec.name).await? else {
            problems.push(format!("table {} does not exist", p.key()));
            continue;
        };
        let target: HashMap<&str, &crate::manifest::Column> =
            cols.iter().map(|c| (c.name.as_str(), c)).collect();
        for sc in &p.rec.columns {
            match target.get(sc.name.as_str()) {
                None => problems.push(format!("{}: column {:?} is missing", p.key(), sc.name)),
                Some(tc) if !tc.ty.eq_ignore_ascii_case(&sc.ty) => problems.push(format!(
                    "{}: column {:?} is {} in the target but {} in the snapshot",
                    p.key(),
                    sc.name,
                    tc.ty,
                    sc.ty
                )),
                _ => {}
            }
        }
        let stored: HashSet<&str> = p.rec.columns.iter().map(|c| c.name.as_str()).collect();
        let required: Vec<String> = c
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND IS_NULLABLE = 'NO' \
                   AND COLUMN_DEFAULT IS NULL AND EXTRA NOT LIKE '%auto_increment%' \
                   AND EXTRA NOT LIKE '%GENERATED%' AND EXTRA NOT IN ('VIRTUAL', 'PERSISTENT', 'STORED')",
                (p.schema.as_str(), p.rec.name.as_str()),
            )
            .await
            .map_err(|e| my_err(format!("reading {}", p.key()), e))?;
        for col in required {
            if !stored.contains(col.as_str()) {
                problems.push(format!(
                    "{}: column {col:?} is NOT NULL without a default and not in the snapshot",
                    p.key()
                ));
            }
        }
        if p.strategy == Strategy::SkipExisting && pk.is_empty() {
            let uniq: Option<u64> = c
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.STATISTICS \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0",
                    (p.schema.as_str(), p.rec.name.as_str()),
                )
                .await
                .map_err(|e| my_err(format!("reading keys of {}", p.key()), e))?;
            if uniq.unwrap_or(0) == 0 {
                problems.push(format!(
                    "{}: skip-existing needs a primary key or unique index to compare",
                    p.key()
                ));
            }
        }
        let n: Option<u64> = c
            .query_first(format!(
                "SELECT COUNT(*) FROM {}.{}",
                ident(&p.schema),
                ident(&p.rec.name)
            ))
            .await
            .map_err(|e| my_err(format!("counting {}", p.key()), e))?;
        let n = n.unwrap_or(0);
        if p.strategy == Strategy::FailIfNotEmpty && n > 0 {
            problems.push(format!(
                "{} has {n} row(s) and its strategy is fail-if-not-empty (use --strategy {}=truncate|append|skip-existing)",
                p.key(),
                p.rec.name
            ));
        }
        before.insert(p.key(), n);
    }
    refuse(problems)?;

    let names: Vec<String> = planned.iter().map(Planned::key).collect();
    let deps: Vec<(String, String)> = c
        .query(
            "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME), \
                    CONCAT(REFERENCED_TABLE_SCHEMA, '.', REFERENCED_TABLE_NAME) \
             FROM information_schema.KEY_COLUMN_USAGE WHERE REFERENCED_TABLE_NAME IS NOT NULL",
        )
        .await
        .map_err(|e| my_err("reading foreign keys", e))?;
    let (order, cycles) = fk_order(&names, &deps);
    let by_key: HashMap<String, &Planned> = planned.iter().map(|p| (p.key(), p)).collect();

    let tx = !opts.no_transaction;
    if tx {
        c.query_drop("START TRANSACTION")
            .await
            .map_err(|e| my_err("START TRANSACTION", e))?;
    }
    match load(&mut c, store, layout, m, &order, &by_key, &before).await {
        Ok((tables, fetched)) => {
            if tx {
                c.query_drop("COMMIT")
                    .await
                    .map_err(|e| my_err("COMMIT", e))?;
            }
            let _ = c.disconnect().await;
            Ok(DbRestoreReport {
                snapshot: m.header.snapshot.clone(),
                target: redact_url(opts.url.expose()),
                tables,
                transaction: tx,
                cycles,
                bytes_fetched: fetched,
                started_at,
                finished_at: Utc::now(),
            })
        }
        Err(e) => {
            if tx {
                let _ = c.query_drop("ROLLBACK").await;
                Err(e.context("restore rolled back, nothing was written"))
            } else {
                Err(e.context("restore stopped (--no-transaction: earlier tables stay loaded)"))
            }
        }
    }
}

async fn load(
    c: &mut Conn,
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    order: &[String],
    by_key: &HashMap<String, &Planned<'_>>,
    before: &HashMap<String, u64>,
) -> Result<(Vec<TableReport>, u64)> {
    let man = Arc::new(m.clone());
    let by_path: Arc<HashMap<PathBytes, Entry>> = Arc::new(
        m.entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect(),
    );
    let fq = |p: &Planned| format!("{}.{}", ident(&p.schema), ident(&p.rec.name));
    // Children first, so no foreign key is violated while emptying.
    for k in order.iter().rev() {
        let p = by_key[k];
        if p.strategy == Strategy::Truncate {
            c.query_drop(format!("DELETE FROM {}", fq(p)))
                .await
                .map_err(|e| my_err(format!("emptying {k}"), e))?;
        }
    }
    let mut reports = Vec::new();
    let mut fetched = 0;
    for k in order {
        let p = by_key[k];
        let target = fq(p);
        let cols: Vec<String> = p.rec.columns.iter().map(|c| ident(&c.name)).collect();
        let binary: Vec<bool> = p.rec.columns.iter().map(|c| is_binary(&c.ty)).collect();
        let ncols = cols.len().max(1);
        let per = ROWS_PER_INSERT.min(65_535 / ncols).max(1);
        let row_ph = format!("({})", vec!["?"; ncols].join(", "));
        let suffix = if p.strategy == Strategy::SkipExisting {
            format!(" ON DUPLICATE KEY UPDATE {0} = {0}", cols[0])
        } else {
            String::new()
        };
        let (mut loaded, mut added) = (0u64, 0u64);
        let mut rx = prefetch(store, layout, &man, &by_path, p.rec.chunks.clone());
        for chunk in &p.rec.chunks {
            let (data, f) = rx
                .recv()
                .await
                .ok_or_else(|| Error::internal("chunk reader stopped"))??;
            fetched += f;
            let recs = parse_csv(&data)?;
            for batch in recs[1.min(recs.len())..].chunks(per) {
                let mut params = Vec::with_capacity(batch.len() * ncols);
                for r in batch {
                    if r.len() != ncols {
                        return Err(Error::integrity(format!(
                            "{}: a row has {} fields, the table {ncols} columns",
                            chunk.display(),
                            r.len()
                        )));
                    }
                    for (i, v) in r.iter().enumerate() {
                        params.push(match v {
                            None => Value::NULL,
                            Some(b) if binary[i] => Value::Bytes(
                                b.strip_prefix(b"\\x")
                                    .and_then(|h| hex::decode(h).ok())
                                    .ok_or_else(|| {
                                        Error::integrity(format!(
                                            "{}: binary value not in \\x hex form",
                                            chunk.display()
                                        ))
                                    })?,
                            ),
                            Some(b) => Value::Bytes(b.clone()),
                        });
                    }
                }
                let q = format!(
                    "INSERT INTO {target} ({}) VALUES {}{suffix}",
                    cols.join(", "),
                    vec![row_ph.as_str(); batch.len()].join(", ")
                );
                c.exec_drop(q, params)
                    .await
                    .map_err(|e| my_err(format!("inserting into {k}"), e))?;
                loaded += batch.len() as u64;
                added += c.affected_rows();
            }
        }
        if loaded != p.rec.rows {
            return Err(Error::integrity(format!(
                "{k}: loaded {loaded} rows, the manifest says {}",
                p.rec.rows
            )));
        }
        let after: Option<u64> = c
            .query_first(format!("SELECT COUNT(*) FROM {target}"))
            .await
            .map_err(|e| my_err(format!("counting {k}"), e))?;
        let after = after.unwrap_or(0);
        let prior = before.get(k).copied().unwrap_or(0);
        let stored = p.rec.rows;
        let prior_now = if p.strategy == Strategy::Truncate {
            0
        } else {
            prior
        };
        let exact = prior_now == 0 && p.strategy != Strategy::SkipExisting
            || (p.strategy == Strategy::SkipExisting && prior == 0);
        let counts_ok = match p.strategy {
            Strategy::FailIfNotEmpty | Strategy::Truncate => after == stored,
            Strategy::Append => after == prior + stored,
            Strategy::SkipExisting => after >= stored && after == prior + added,
        };
        if !counts_ok {
            return Err(Error::integrity(format!(
                "{k}: {after} rows after restore ({prior} before, {stored} stored, strategy {})",
                p.strategy.as_str()
            )));
        }
        if exact {
            let mut d = RowsetDigest::default();
            my::read_rows(c, p.rec, &p.schema, &mut d).await?;
            if d.to_checksum() != p.rec.checksum {
                return Err(Error::integrity(format!(
                    "{k}: row-set checksum after restore {} differs from the snapshot's {}",
                    d.to_checksum(),
                    p.rec.checksum
                )));
            }
        }
        reports.push(TableReport {
            table: k.clone(),
            strategy: p.strategy,
            rows_stored: stored,
            rows_added: added,
            rows_after: after,
            checksum_checked: exact,
        });
    }
    Ok((reports, fetched))
}
