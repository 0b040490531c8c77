//! Restore into a database: the tables of a database snapshot loaded into a live
//! PostgreSQL (`COPY … FROM STDIN`) or MySQL/MariaDB (batched `INSERT`s).
//!
//! Order of work, so that a refusal writes nothing:
//!
//! 1. **Check** every selected table against the target's catalog: the table exists,
//!    every stored column exists with the same type, every target column left out is
//!    nullable or has a default, `skip-existing` has a key to compare, and
//!    `fail-if-not-empty` tables are empty. All problems are reported together
//!    (`Refused`, exit 7) before anything is written.
//! 2. **Order** the tables by the target's foreign keys (parents first, Kahn's algorithm;
//!    self-references ignored; a cycle is loaded in manifest order and reported).
//! 3. **Load** in one transaction (unless `no_transaction`): `truncate` tables are
//!    emptied in one `TRUNCATE` (without `CASCADE`: a table outside the restore that
//!    references one makes the restore fail rather than silently emptying it); rows are
//!    streamed chunk by chunk, each chunk's SHA-256 checked against the manifest before
//!    it is sent; `skip-existing` loads into a temporary table and inserts with
//!    `ON CONFLICT DO NOTHING` (MySQL: `INSERT IGNORE`); sequences behind serial and
//!    identity columns are moved past the largest restored key.
//! 4. **Compare** with the manifest, still inside the transaction: row counts for every
//!    strategy (exact for `fail-if-not-empty`/`truncate`, the added rows for `append`, at
//!    least the stored rows for `skip-existing`), and the row-set checksum (re-reading the
//!    table) where the table should now hold exactly the stored rows. A mismatch rolls
//!    the transaction back (`Integrity`, exit 3).

pub mod mysql;
pub mod postgres;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::layout::Layout;
use crate::manifest::{Column, Entry, Manifest, PathBytes, RowsetDigest, TableRecord};
use crate::pack::read::PackCursor;
use crate::restore::config::Strategy;
use crate::store::Store;
use crate::support::secret::{redact_url, Secret};

/// What to restore into which database.
#[derive(Debug, Clone)]
pub struct DbRestoreOptions {
    /// Target database URL (`postgres://…` or `mysql://…`).
    pub url: Secret,
    /// Tables to restore (`table` or `schema.table`); empty: all of the snapshot.
    pub tables: Vec<String>,
    /// Strategy for tables not named in `strategies`.
    pub strategy: Strategy,
    /// Per-table strategies (`table` or `schema.table`).
    pub strategies: BTreeMap<String, Strategy>,
    /// Load table by table in autocommit mode (a failure leaves earlier tables loaded).
    pub no_transaction: bool,
    /// Load every table into this schema (PostgreSQL) or database (MySQL) instead of
    /// the one it was read from.
    pub target_schema: Option<String>,
}

/// What happened to one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// `schema.table` in the target.
    pub table: String,
    /// Strategy applied.
    pub strategy: Strategy,
    /// Rows in the snapshot.
    pub rows_stored: u64,
    /// Rows the restore added.
    pub rows_added: u64,
    /// Rows in the table afterwards.
    pub rows_after: u64,
    /// Row-set checksum compared (only where the table holds exactly the stored rows).
    pub checksum_checked: bool,
}

/// What a database restore did.
#[derive(Debug, Clone, Serialize)]
pub struct DbRestoreReport {
    /// Snapshot restored.
    pub snapshot: String,
    /// Target (no credentials).
    pub target: String,
    /// Tables in load order.
    pub tables: Vec<TableReport>,
    /// Whether it ran as one transaction.
    pub transaction: bool,
    /// Foreign-key cycles loaded in manifest order.
    pub cycles: Vec<String>,
    /// Compressed bytes downloaded.
    pub bytes_fetched: u64,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
}

/// The strategy for `t`: `schema.table`, then `table`, then the default.
pub fn strategy_for(o: &DbRestoreOptions, t: &TableRecord) -> Strategy {
    o.strategies
        .get(&format!("{}.{}", t.schema, t.name))
        .or_else(|| o.strategies.get(&t.name))
        .copied()
        .unwrap_or(o.strategy)
}

/// The tables of `m` selected by `names` (all when empty).
///
/// # Errors
/// `NotFound` for a name the snapshot does not hold, or a snapshot without tables.
pub fn select_tables<'a>(m: &'a Manifest, names: &[String]) -> Result<Vec<&'a TableRecord>> {
    if m.tables.is_empty() {
        return Err(Error::not_found(format!(
            "snapshot {} holds no database tables (source {})",
            m.header.snapshot, m.header.source
        )));
    }
    if names.is_empty() {
        return Ok(m.tables.iter().collect());
    }
    let mut out = Vec::new();
    for n in names {
        let hit: Vec<&TableRecord> = m
            .tables
            .iter()
            .filter(|t| &t.name == n || &format!("{}.{}", t.schema, t.name) == n)
            .collect();
        if hit.is_empty() {
            return Err(Error::not_found(format!(
                "snapshot {} has no table {n:?}",
                m.header.snapshot
            )));
        }
        for t in hit {
            if !out.iter().any(|o: &&TableRecord| std::ptr::eq(*o, t)) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// The tables (`child` of `deps`, child → parent) that reference `table` by foreign key
/// and are not among `restored`, sorted, without self-references.
pub fn outside_referrers(
    table: &str,
    restored: &[String],
    deps: &[(String, String)],
) -> Vec<String> {
    let mut v: Vec<String> = deps
        .iter()
        .filter(|(child, parent)| {
            parent == table && child != parent && !restored.iter().any(|r| r == child)
        })
        .map(|(child, _)| child.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Order `names` so that every table comes after the tables it references (`deps`:
/// child → parents). Returns the order and the tables left in cycles.
pub fn fk_order(names: &[String], deps: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let set: HashSet<&String> = names.iter().collect();
    let mut indeg: HashMap<&String, usize> = names.iter().map(|n| (n, 0)).collect();
    let mut children: HashMap<&String, Vec<&String>> = HashMap::new();
    let mut seen = HashSet::new();
    for (child, parent) in deps {
        if child == parent || !set.contains(child) || !set.contains(parent) {
            continue;
        }
        if !seen.insert((child, parent)) {
            continue;
        }
        *indeg.entry(child).or_default() += 1;
        children.entry(parent).or_default().push(child);
    }
    let mut order = Vec::new();
    let mut done = HashSet::new();
    // Lowest manifest position among the ready ones: a stable, readable order.
    while let Some(next) = names
        .iter()
        .find(|n| !done.contains(*n) && indeg.get(n) == Some(&0))
    {
        done.insert(next);
        order.push(next.clone());
        for c in children.get(next).cloned().unwrap_or_default() {
            if let Some(d) = indeg.get_mut(c) {
                *d -= 1;
            }
        }
    }
    let cycles: Vec<String> = names
        .iter()
        .filter(|n| !done.contains(*n))
        .cloned()
        .collect();
    order.extend(cycles.iter().cloned());
    (order, cycles)
}

/// Read one chunk entry's bytes from its pack and check its SHA-256.
pub(crate) async fn read_chunk(
    store: &Store,
    layout: &Layout,
    m: &Arc<Manifest>,
    by_path: &Arc<HashMap<PathBytes, Entry>>,
    path: &PathBytes,
) -> Result<(Bytes, u64)> {
    let e = by_path.get(path).cloned().ok_or_else(|| {
        Error::integrity(format!(
            "chunk {} is listed by a table but not by the manifest",
            path.display()
        ))
    })?;
    let (store, layout, m) = (store.clone(), layout.clone(), m.clone());
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> Result<(Bytes, u64)> {
        let mut data = Vec::with_capacity(e.size as usize);
        let mut fetched = 0;
        if e.size > 0 {
            let pid = e.pack.as_deref().unwrap_or("");
            let pack = m.pack(pid).ok_or_else(|| {
                Error::integrity(format!(
                    "{}: refers to pack {pid:?}, which the manifest does not list",
                    e.path.display()
                ))
            })?;
            let mut cur = PackCursor::new(&*store, rt, layout.full(&pack.blob), pack);
            let end = e.data_offset + e.size;
            cur.read(e.data_offset..end, end, &mut |b| {
                data.extend_from_slice(b);
                Ok(())
            })?;
            fetched = cur.fetched;
        }
        let got = hex::encode(Sha256::digest(&data));
        if Some(got.as_str()) != e.sha256.as_deref() {
            return Err(Error::integrity(format!(
                "{}: stored chunk has SHA-256 {got}, the manifest says {}; nothing of it was loaded",
                e.path.display(),
                e.sha256.as_deref().unwrap_or("(none)")
            )));
        }
        Ok((Bytes::from(data), fetched))
    })
    .await
    .map_err(|e| Error::internal(format!("restore reader: {e}")))?
}

/// Chunks read ahead of the load, per table.
const PREFETCH: usize = 2;

/// Read `chunks` in order on a task, handing them over through a bounded channel.
pub(crate) fn prefetch(
    store: &Store,
    layout: &Layout,
    m: &Arc<Manifest>,
    by_path: &Arc<HashMap<PathBytes, Entry>>,
    chunks: Vec<PathBytes>,
) -> tokio::sync::mpsc::Receiver<Result<(Bytes, u64)>> {
    let (tx, rx) = tokio::sync::mpsc::channel(PREFETCH);
    let (store, layout, m, by_path) = (store.clone(), layout.clone(), m.clone(), by_path.clone());
    tokio::spawn(async move {
        for c in chunks {
            let r = read_chunk(&store, &layout, &m, &by_path, &c).await;
            let failed = r.is_err();
            if tx.send(r).await.is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// Restore the tables of snapshot `m` into the database `opts.url`.
///
/// # Errors
/// `NotFound` (no such table), `Refused` (schema mismatch, non-empty table, missing key;
/// nothing written), `Integrity` (a chunk's hash, or the counts/checksums after loading,
/// differ; the transaction is rolled back), `Destination` (the target database failed).
pub async fn restore_db(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    opts: &DbRestoreOptions,
) -> Result<DbRestoreReport> {
    let url = opts.url.expose();
    let started_at = Utc::now();
    let pg = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !pg && !url.starts_with("mysql://") && !url.starts_with("mariadb://") {
        return Err(Error::config(format!(
            "--to-db {}: use a postgres://… or mysql://… URL",
            redact_url(url)
        )));
    }
    let planned = plan_tables(m, opts)?;
    let db: Box<dyn Loader> = if pg {
        Box::new(
            postgres::PgLoader::connect(opts)
                .await
                .map_err(at_destination)?,
        )
    } else {
        Box::new(
            mysql::MyLoader::connect(opts)
                .await
                .map_err(at_destination)?,
        )
    };
    run(db, store, layout, m, opts, planned, started_at)
        .await
        .map_err(at_destination)
}

/// The shared database code reports server errors as `Source` (what a backup reads); in
/// a restore the server is the destination.
pub fn at_destination(e: Error) -> Error {
    if e.kind() == crate::error::ErrorKind::Source {
        e.with_kind(crate::error::ErrorKind::Destination)
    } else {
        e
    }
}

/// The password from `var` when the URL carries none (libpq's `PGPASSWORD`, MySQL's
/// `MYSQL_PWD`), so it need not appear on a command line.
pub(crate) fn env_password(url: &Secret, var: &str) -> Option<Secret> {
    let has = url::Url::parse(url.expose())
        .ok()
        .is_some_and(|u| u.password().is_some());
    if has {
        return None;
    }
    std::env::var(var)
        .ok()
        .filter(|p| !p.is_empty())
        .map(Secret::new)
}

/// A selected table with its target name and strategy.
pub(crate) struct Planned<'a> {
    pub(crate) rec: &'a TableRecord,
    pub(crate) schema: String,
    pub(crate) strategy: Strategy,
}

impl Planned<'_> {
    pub(crate) fn key(&self) -> String {
        format!("{}.{}", self.schema, self.rec.name)
    }
}

pub(crate) fn plan_tables<'a>(
    m: &'a Manifest,
    opts: &DbRestoreOptions,
) -> Result<Vec<Planned<'a>>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for rec in select_tables(m, &opts.tables)? {
        let schema = opts
            .target_schema
            .clone()
            .unwrap_or_else(|| rec.schema.clone());
        let p = Planned {
            rec,
            schema,
            strategy: strategy_for(opts, rec),
        };
        if !seen.insert(p.key()) {
            return Err(Error::config(format!(
                "two stored tables would load into {}; restore them separately",
                p.key()
            )));
        }
        out.push(p);
    }
    Ok(out)
}

/// Render problems as one `Refused` error.
pub(crate) fn refuse(problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::refused(format!(
        "the target does not fit the snapshot; nothing was written:\n  - {}",
        problems.join("\n  - ")
    )))
}

/// One target database as the restore sees it: the catalog questions the check asks,
/// the transaction, and loading one table. [`run`] holds the control flow (check every
/// table, foreign-key order, load, compare counts and checksums) once for every engine.
#[async_trait::async_trait]
pub(crate) trait Loader: Send {
    /// Columns and primary key of a target table, `None` when it does not exist.
    async fn table_shape(
        &mut self,
        schema: &str,
        name: &str,
    ) -> Result<Option<(Vec<Column>, Vec<String>)>>;
    /// Whether a target column type matches the stored one.
    fn same_type(&self, target: &str, stored: &str) -> bool;
    /// Target columns that are NOT NULL without a default (nor generated/identity).
    async fn required_columns(&mut self, p: &Planned<'_>) -> Result<Vec<String>>;
    /// Whether the target table has a unique index (a primary key counts).
    async fn has_unique_index(&mut self, p: &Planned<'_>) -> Result<bool>;
    /// Rows in the target table now.
    async fn count(&mut self, p: &Planned<'_>) -> Result<u64>;
    /// Foreign keys of the target, as `(child, parent)` `schema.table` pairs.
    async fn foreign_keys(&mut self) -> Result<Vec<(String, String)>>;
    /// Whether emptying a table for `truncate` fails whenever another table references
    /// it by foreign key, whatever the rows (PostgreSQL's `TRUNCATE`; MySQL deletes).
    fn truncate_refuses_referenced(&self) -> bool;
    /// Run a transaction statement (`BEGIN`, `COMMIT`, `ROLLBACK` in the engine's words).
    async fn tx(&mut self, what: Tx) -> Result<()>;
    /// Empty the `truncate` tables (in foreign-key order, parents first).
    async fn empty(&mut self, tables: &[&Planned<'_>]) -> Result<()>;
    /// Load the rows of table number `i` from `chunks`, adding the bytes downloaded to
    /// `fetched`. Returns the rows sent and the rows added so far.
    async fn load_rows(
        &mut self,
        i: usize,
        p: &Planned<'_>,
        chunks: &mut tokio::sync::mpsc::Receiver<Result<(Bytes, u64)>>,
        fetched: &mut u64,
    ) -> Result<(u64, u64)>;
    /// Finish table `i` after its rows were checked (move staged rows in, advance
    /// sequences); returns the rows added.
    async fn settle(&mut self, i: usize, p: &Planned<'_>, added: u64) -> Result<u64>;
    /// The row-set digest of the target table as it is now.
    async fn rowset(&mut self, p: &Planned<'_>) -> Result<RowsetDigest>;
    /// Close the connection after a commit.
    async fn close(self: Box<Self>);
}

/// A transaction statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tx {
    /// Start.
    Begin,
    /// Commit.
    Commit,
    /// Roll back.
    Rollback,
}

/// Restore `m` into the database behind `db`: check, order, load, compare.
async fn run(
    mut db: Box<dyn Loader>,
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    opts: &DbRestoreOptions,
    planned: Vec<Planned<'_>>,
    started_at: DateTime<Utc>,
) -> Result<DbRestoreReport> {
    // 1. Check, all tables, before writing.
    let mut problems = Vec::new();
    let mut before: HashMap<String, u64> = HashMap::new();
    let deps = db.foreign_keys().await?;
    let names: Vec<String> = planned.iter().map(Planned::key).collect();
    for p in &planned {
        let Some((cols, pk)) = db.table_shape(&p.schema, &p.rec.name).await? else {
            problems.push(format!("table {} does not exist", p.key()));
            continue;
        };
        let target: HashMap<&str, &Column> = cols.iter().map(|c| (c.name.as_str(), c)).collect();
        for sc in &p.rec.columns {
            match target.get(sc.name.as_str()) {
                None => problems.push(format!("{}: column {:?} is missing", p.key(), sc.name)),
                Some(tc) if !db.same_type(&tc.ty, &sc.ty) => problems.push(format!(
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
        for col in db.required_columns(p).await? {
            if !stored.contains(col.as_str()) {
                problems.push(format!(
                    "{}: column {col:?} is NOT NULL without a default and not in the snapshot",
                    p.key()
                ));
            }
        }
        let keyed = !pk.is_empty() || db.has_unique_index(p).await?;
        if p.strategy == Strategy::SkipExisting && !keyed {
            problems.push(format!(
                "{}: skip-existing needs a primary key or unique index to compare",
                p.key()
            ));
        }
        // Tables outside the restore whose foreign keys point at this one: PostgreSQL's
        // TRUNCATE (without CASCADE, which would empty them too) refuses such a table.
        let referrers = if db.truncate_refuses_referenced() {
            outside_referrers(&p.key(), &names, &deps)
        } else {
            Vec::new()
        };
        let n = db.count(p).await?;
        if p.strategy == Strategy::Truncate && !referrers.is_empty() {
            problems.push(format!(
                "{}: truncate cannot empty it: {} outside this restore reference{} it by foreign key                  (TRUNCATE refuses, and CASCADE would empty them too); {}",
                p.key(),
                referrers.join(", "),
                if referrers.len() == 1 { "s" } else { "" },
                if keyed {
                    format!(
                        "use --strategy {0}=skip-existing (keep the target's rows, add the missing ones)                          or {0}=append, or restore the referencing tables too",
                        p.rec.name
                    )
                } else {
                    format!(
                        "use --strategy {}=append, or restore the referencing tables too",
                        p.rec.name
                    )
                }
            ));
        }
        if p.strategy == Strategy::FailIfNotEmpty && n > 0 {
            let mut ways = Vec::new();
            if keyed {
                ways.push("skip-existing");
            }
            if referrers.is_empty() {
                ways.push("truncate");
            }
            ways.push("append");
            let why = if referrers.is_empty() {
                String::new()
            } else {
                format!(
                    "; truncate cannot work: {} outside this restore reference{} it",
                    referrers.join(", "),
                    if referrers.len() == 1 { "s" } else { "" }
                )
            };
            problems.push(format!(
                "{} has {n} row(s) and its strategy is fail-if-not-empty (use --strategy {}={}{why})",
                p.key(),
                p.rec.name,
                ways.join("|")
            ));
        }
        before.insert(p.key(), n);
    }
    refuse(problems)?;

    // 2. Foreign-key order from the target's catalog.
    let (order, cycles) = fk_order(&names, &deps);
    if !cycles.is_empty() {
        tracing::warn!(
            "foreign-key cycle among {}: loaded in snapshot order",
            cycles.join(", ")
        );
    }
    let by_key: HashMap<String, &Planned> = planned.iter().map(|p| (p.key(), p)).collect();

    // 3. Load, 4. compare.
    let tx = !opts.no_transaction;
    if tx {
        db.tx(Tx::Begin).await?;
    }
    match load(&mut *db, store, layout, m, &order, &by_key, &before).await {
        Ok((tables, fetched)) => {
            if tx {
                db.tx(Tx::Commit).await?;
            }
            db.close().await;
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
                let _ = db.tx(Tx::Rollback).await;
                Err(e.context("restore rolled back, nothing was written"))
            } else {
                Err(e.context("restore stopped (--no-transaction: earlier tables stay loaded)"))
            }
        }
    }
}

async fn load(
    db: &mut dyn Loader,
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
    let trunc: Vec<&Planned> = order
        .iter()
        .filter_map(|k| by_key.get(k).copied())
        .filter(|p| p.strategy == Strategy::Truncate)
        .collect();
    if !trunc.is_empty() {
        db.empty(&trunc).await?;
    }
    let mut reports = Vec::new();
    let mut fetched = 0;
    for (i, k) in order.iter().enumerate() {
        let p = by_key[k];
        // Read (download, decompress, hash-check) the next chunks while this one loads:
        // at most PREFETCH chunks wait in memory.
        let mut rx = prefetch(store, layout, &man, &by_path, p.rec.chunks.clone());
        let (loaded, added) = db.load_rows(i, p, &mut rx, &mut fetched).await?;
        if loaded != p.rec.rows {
            return Err(Error::integrity(format!(
                "{k}: loaded {loaded} rows, the manifest says {}",
                p.rec.rows
            )));
        }
        let added = db.settle(i, p, added).await?;
        let after = db.count(p).await?;
        let prior = before.get(k).copied().unwrap_or(0);
        let stored = p.rec.rows;
        let exact = matches!(p.strategy, Strategy::FailIfNotEmpty | Strategy::Truncate)
            || (p.strategy == Strategy::Append && prior == 0)
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
            let got = db.rowset(p).await?;
            if got.to_checksum() != p.rec.checksum {
                return Err(Error::integrity(format!(
                    "{k}: row-set checksum after restore {} differs from the snapshot's {}",
                    got.to_checksum(),
                    p.rec.checksum
                )));
            }
        }
        tracing::info!(table = %k, rows = added, "restored");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fk_order_parents_first_and_cycles_reported() {
        let names = s(&["p.ti", "p.dag_run", "p.log", "p.dag"]);
        let deps = vec![
            ("p.ti".to_string(), "p.dag_run".to_string()),
            ("p.dag_run".to_string(), "p.dag".to_string()),
            ("p.ti".to_string(), "p.ti".to_string()),
            ("p.x".to_string(), "p.ti".to_string()),
        ];
        let (order, cycles) = fk_order(&names, &deps);
        assert!(cycles.is_empty());
        let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
        assert!(pos("p.dag") < pos("p.dag_run"));
        assert!(pos("p.dag_run") < pos("p.ti"));
        assert_eq!(order.len(), 4);
        let (order, cycles) = fk_order(
            &s(&["a", "b", "c"]),
            &[
                ("a".into(), "b".into()),
                ("b".into(), "a".into()),
                ("c".into(), "a".into()),
            ],
        );
        assert_eq!(order.len(), 3);
        assert_eq!(cycles, s(&["a", "b", "c"]));
    }

    #[test]
    fn outside_referrers_leave_out_restored_tables_and_self_references() {
        let deps = vec![
            ("p.ti".to_string(), "p.dag_run".to_string()),
            ("p.xcom".to_string(), "p.dag_run".to_string()),
            ("p.note".to_string(), "p.dag_run".to_string()),
            ("p.note".to_string(), "p.dag_run".to_string()),
            ("p.dag_run".to_string(), "p.dag_run".to_string()),
        ];
        assert_eq!(
            outside_referrers("p.dag_run", &s(&["p.dag_run", "p.ti"]), &deps),
            s(&["p.note", "p.xcom"])
        );
        assert!(outside_referrers("p.ti", &s(&["p.ti"]), &deps).is_empty());
    }
}
