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
//!    self-references ignored; a cycle is loaded in manifest order and reported), and
//!    **group** them: tables that foreign keys link (directly or through other restored
//!    tables) form one group, loaded in that order on one connection.
//! 3. **Load** on up to `jobs` connections at once, each in its own transaction (unless
//!    `no_transaction`), each taking the heaviest group left ([`fk_groups`]). Why groups
//!    and not single tables: a child's foreign-key check sees only rows its own
//!    transaction wrote or others committed, and nothing commits before every table is
//!    checked, so a child must load where its parents did. `truncate` tables of a group
//!    are emptied in one `TRUNCATE` (without `CASCADE`: a table outside the restore that
//!    references one makes the restore fail rather than silently emptying it); rows are
//!    streamed chunk by chunk, each chunk's SHA-256 checked against the manifest before
//!    it is sent; `skip-existing` loads into a temporary table and inserts with
//!    `ON CONFLICT DO NOTHING` (MySQL: `INSERT IGNORE`); sequences behind serial and
//!    identity columns are moved past the largest restored key.
//! 4. **Compare** with the manifest, still inside the transaction: row counts for every
//!    strategy (exact for `fail-if-not-empty`/`truncate`, the added rows for `append`, at
//!    least the stored rows for `skip-existing`), and the row-set checksum (re-reading the
//!    table) where the table should now hold exactly the stored rows. A mismatch rolls
//!    the transaction back (`Integrity`, exit 3). With `--fk-check bulk` the connections
//!    load with the target's row-by-row foreign-key triggers off and check each foreign
//!    key of a group's tables with one anti-join over the rows they added.
//! 5. **Commit** only when every connection has loaded and checked all its tables: each
//!    first checks its deferred constraints, then they commit one after another. A
//!    failure before that point rolls every connection back; a `COMMIT` itself failing
//!    after an earlier connection's succeeded (a lost connection, a server stop) is the
//!    one case that leaves part of a restore in, and the error names those tables
//!    (docs/databases.md says so; two-phase commit would close it, and needs
//!    `max_prepared_transactions > 0` on the server).

pub mod mysql;
pub mod postgres;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::layout::Layout;
use crate::manifest::{Column, Entry, Manifest, PathBytes, RowsetDigest, TableRecord};
use crate::pack::read::PackCursor;
use crate::restore::config::{FkCheck, Strategy};
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

/// How a database restore loads: connections and the foreign-key check. Apart from
/// [`DbRestoreOptions`] so that code written before these existed keeps compiling
/// ([`restore_db`] uses the defaults).
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Connections to load on at most (groups of tables that no foreign key links load
    /// in parallel); 1: one connection. Engines without parallel loads use one.
    pub jobs: usize,
    /// How the target's foreign keys are checked.
    pub fk_check: FkCheck,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            jobs: crate::restore::config::DEFAULT_JOBS,
            fk_check: FkCheck::Immediate,
        }
    }
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
    /// The connection (0-based) that loaded it.
    pub connection: usize,
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
    /// Connections the tables were loaded on.
    pub connections: usize,
    /// The most tables that were being loaded at the same moment (counted).
    pub max_tables_in_flight: usize,
    /// How foreign keys were checked.
    pub fk_check: FkCheck,
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
            let mut cur = PackCursor::new(&*store, rt, layout.full(&pack.blob), pack)
                .with_key(layout.key().cloned());
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
    restore_db_with(store, layout, m, opts, &LoadOptions::default()).await
}

/// [`restore_db`] with the connections and foreign-key check of `load`.
///
/// # Errors
/// As [`restore_db`]; `Config` for `--fk-check bulk` with `--no-transaction`; `Refused`
/// (nothing written) when bulk checking is asked for and the role may not turn the
/// target's triggers off.
pub async fn restore_db_with(
    store: &Store,
    layout: &Layout,
    m: &Manifest,
    opts: &DbRestoreOptions,
    load: &LoadOptions,
) -> Result<DbRestoreReport> {
    let url = opts.url.expose();
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
    run(db, store, layout, m, opts, load, planned)
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
    /// The row-set digest and the row count of the target table as it is now; engines
    /// that can count while re-reading save a pass over the table.
    async fn rowset_and_count(&mut self, p: &Planned<'_>) -> Result<(RowsetDigest, u64)> {
        let d = self.rowset(p).await?;
        Ok((d, self.count(p).await?))
    }
    /// Close the connection after a commit.
    async fn close(self: Box<Self>);

    // Parallel loads and the bulk foreign-key check (additive; an engine that does not
    // override them loads on one connection and refuses `--fk-check bulk`).

    /// Whether [`Loader::another`] opens more connections, so groups of tables that no
    /// foreign key links may load at the same time.
    fn parallel_loads(&self) -> bool {
        false
    }
    /// Another connection to the same target, set up like this one (`None`: none).
    async fn another(&mut self) -> Result<Option<Box<dyn Loader>>> {
        Ok(None)
    }
    /// Called on every connection after all tables are loaded and compared and before
    /// the first `COMMIT`: run the checks a commit would (deferred constraints), so a
    /// failure still rolls every connection back.
    async fn before_commit(&mut self) -> Result<()> {
        Ok(())
    }
    /// Inside a transaction: stop the target checking foreign keys row by row for the
    /// rest of it (`--fk-check bulk`). An error means the role may not.
    async fn fk_checks_off(&mut self) -> Result<()> {
        Err(Error::refused(
            "this database does not support --fk-check bulk; use --fk-check immediate",
        ))
    }
    /// After [`Loader::fk_checks_off`] and a group's loads: check every foreign key of
    /// table `p` over the rows this transaction added, in one set-based query per key;
    /// `Integrity`-free: a violation is a `Destination` error naming the key, like the
    /// target's own check.
    async fn validate_foreign_keys(&mut self, p: &Planned<'_>) -> Result<()> {
        let _ = p;
        Ok(())
    }
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
    load: &LoadOptions,
    planned: Vec<Planned<'_>>,
) -> Result<DbRestoreReport> {
    let started_at = Utc::now();
    let bulk = load.fk_check == FkCheck::Bulk;
    if bulk && opts.no_transaction {
        return Err(Error::config(
            "--fk-check bulk needs the enclosing transaction (its checks run before commit); \
             it cannot be combined with --no-transaction",
        ));
    }
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
    if bulk {
        // Whether this role may turn the triggers off, tried in a transaction of its own
        // that writes nothing.
        db.tx(Tx::Begin).await?;
        let allowed = db.fk_checks_off().await;
        db.tx(Tx::Rollback).await?;
        if let Err(e) = allowed {
            problems.push(format!(
                "--fk-check bulk: {e} (use --fk-check immediate, or grant the right: \
                 PostgreSQL 15+ `GRANT SET ON PARAMETER session_replication_role TO <role>`, \
                 or a superuser)"
            ));
        }
    }
    refuse(problems)?;

    // 2. Foreign-key order from the target's catalog, and the groups of tables that
    // foreign keys link (each loads on one connection, in that order).
    let (order, cycles) = fk_order(&names, &deps);
    if !cycles.is_empty() {
        tracing::warn!(
            "foreign-key cycle among {}: loaded in snapshot order",
            cycles.join(", ")
        );
    }
    let by_key: HashMap<String, &Planned> = planned.iter().map(|p| (p.key(), p)).collect();
    let weights: Vec<u64> = order
        .iter()
        .map(|k| by_key[k].rec.bytes.max(by_key[k].rec.rows))
        .collect();
    let groups = fk_groups(&order, &deps, &weights);
    let jobs = if db.parallel_loads() {
        load.jobs.clamp(1, groups.len().max(1))
    } else {
        1
    };
    let tx = !opts.no_transaction;

    // 3. Load, 4. compare: on `jobs` connections, the lead first.
    let mut dbs = vec![db];
    for _ in 1..jobs {
        match dbs[0].another().await {
            Ok(Some(more)) => dbs.push(more),
            Ok(None) => break,
            Err(e) => {
                for d in dbs {
                    d.close().await;
                }
                return Err(e.context("opening another connection for a parallel load"));
            }
        }
    }
    let shared = Shared {
        store,
        layout,
        man: Arc::new(m.clone()),
        by_path: Arc::new(
            m.entries
                .iter()
                .map(|e| (e.path.clone(), e.clone()))
                .collect(),
        ),
        order: &order,
        by_key: &by_key,
        before: &before,
        queue: std::sync::Mutex::new(groups.into_iter().collect()),
        stop: AtomicBool::new(false),
        flight: Flight::default(),
        bulk,
        tx,
    };
    let results = futures::future::join_all(
        dbs.iter_mut()
            .enumerate()
            .map(|(w, d)| worker(&mut **d, w, &shared)),
    )
    .await;
    let mut tables: Vec<(usize, TableReport)> = Vec::new();
    let mut fetched = 0;
    let mut first_err: Option<Error> = None;
    for r in results {
        match r {
            Ok(w) => {
                tables.extend(w.tables);
                fetched += w.fetched;
            }
            Err(e) => {
                // The first real failure; the others' "stopped" says nothing new.
                let replace = match &first_err {
                    None => true,
                    Some(f) => {
                        f.kind() == crate::error::ErrorKind::Cancelled
                            && e.kind() != crate::error::ErrorKind::Cancelled
                    }
                };
                if replace {
                    first_err = Some(e);
                }
            }
        }
    }
    if let Some(e) = first_err {
        if tx {
            for d in &mut dbs {
                let _ = d.tx(Tx::Rollback).await;
            }
            for d in dbs {
                d.close().await;
            }
            return Err(e.context("restore rolled back, nothing was written"));
        }
        for d in dbs {
            d.close().await;
        }
        return Err(e.context(
            "restore stopped (--no-transaction: tables loaded before the failure stay loaded)",
        ));
    }
    tables.sort_by_key(|(i, _)| *i);
    if tx {
        commit_all(&mut dbs, &tables).await?;
    }
    let connections = dbs.len();
    for d in dbs {
        d.close().await;
    }
    Ok(DbRestoreReport {
        snapshot: m.header.snapshot.clone(),
        target: redact_url(opts.url.expose()),
        tables: tables.into_iter().map(|(_, t)| t).collect(),
        transaction: tx,
        cycles,
        bytes_fetched: fetched,
        connections,
        max_tables_in_flight: shared.flight.peak.load(Ordering::SeqCst),
        fk_check: load.fk_check,
        started_at,
        finished_at: Utc::now(),
    })
}

/// Commit every connection's transaction, after all of them loaded and checked their
/// tables. Deferred constraints are checked on each first (`SET CONSTRAINTS ALL
/// IMMEDIATE`), so what can still fail is the `COMMIT` itself (a lost connection, a
/// server stop); if one does after another connection committed, the error names the
/// tables that are in.
async fn commit_all(dbs: &mut [Box<dyn Loader>], tables: &[(usize, TableReport)]) -> Result<()> {
    for d in dbs.iter_mut() {
        if let Err(e) = d.before_commit().await {
            for d in dbs.iter_mut() {
                let _ = d.tx(Tx::Rollback).await;
            }
            return Err(e.context("restore rolled back, nothing was written"));
        }
    }
    for (c, d) in dbs.iter_mut().enumerate() {
        if let Err(e) = d.tx(Tx::Commit).await {
            if c == 0 {
                for d in dbs.iter_mut().skip(1) {
                    let _ = d.tx(Tx::Rollback).await;
                }
                return Err(e.context("restore rolled back, nothing was written"));
            }
            let done: Vec<&str> = tables
                .iter()
                .filter(|(_, t)| t.connection < c)
                .map(|(_, t)| t.table.as_str())
                .collect();
            for d in dbs.iter_mut().skip(c + 1) {
                let _ = d.tx(Tx::Rollback).await;
            }
            return Err(e.context(format!(
                "the COMMIT of connection {} of {} failed after the others before it committed: \
                 these tables ARE restored: {}; the rest are not (empty them, or restore again \
                 with --strategy skip-existing)",
                c + 1,
                dbs.len(),
                done.join(", ")
            )));
        }
    }
    Ok(())
}

/// What the workers of one restore share.
struct Shared<'a, 'p> {
    store: &'a Store,
    layout: &'a Layout,
    man: Arc<Manifest>,
    by_path: Arc<HashMap<PathBytes, Entry>>,
    order: &'a [String],
    by_key: &'a HashMap<String, &'a Planned<'p>>,
    before: &'a HashMap<String, u64>,
    /// Groups not yet taken, heaviest first.
    queue: std::sync::Mutex<std::collections::VecDeque<Vec<usize>>>,
    /// Set by the first failure: the others take no new table.
    stop: AtomicBool,
    flight: Flight,
    bulk: bool,
    tx: bool,
}

/// Tables being loaded right now, and the most at once: counted, so a test can tell a
/// parallel load from a serial one without a clock.
#[derive(Default)]
struct Flight {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Flight {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one worker loaded.
struct Worked {
    tables: Vec<(usize, TableReport)>,
    fetched: u64,
}

/// One connection's work: open its transaction, then take groups off the queue until it
/// is empty, loading each group's tables in foreign-key order. The transaction stays
/// open; [`run`] commits or rolls back all connections together.
async fn worker(db: &mut dyn Loader, w: usize, sh: &Shared<'_, '_>) -> Result<Worked> {
    let mut out = Worked {
        tables: Vec::new(),
        fetched: 0,
    };
    let r: Result<()> = async {
        if sh.tx {
            db.tx(Tx::Begin).await?;
            if sh.bulk {
                db.fk_checks_off().await?;
            }
        }
        loop {
            let next = sh.queue.lock().ok().and_then(|mut q| q.pop_front());
            let Some(group) = next else { break };
            let ps: Vec<&Planned> = group.iter().map(|&i| sh.by_key[&sh.order[i]]).collect();
            let trunc: Vec<&Planned> = ps
                .iter()
                .copied()
                .filter(|p| p.strategy == Strategy::Truncate)
                .collect();
            if !trunc.is_empty() {
                db.empty(&trunc).await?;
            }
            for (&i, p) in group.iter().zip(&ps) {
                if sh.stop.load(Ordering::SeqCst) {
                    return Err(Error::cancelled());
                }
                sh.flight.enter();
                let r = load_table(db, i, p, sh, &mut out.fetched).await;
                sh.flight.leave();
                let mut t = r?;
                t.connection = w;
                out.tables.push((i, t));
            }
            if sh.bulk {
                for p in &ps {
                    db.validate_foreign_keys(p).await?;
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = r {
        sh.stop.store(true, Ordering::SeqCst);
        return Err(e);
    }
    Ok(out)
}

/// Load table number `i` (its position in foreign-key order) and compare it with the
/// manifest, inside the connection's transaction.
async fn load_table(
    db: &mut dyn Loader,
    i: usize,
    p: &Planned<'_>,
    sh: &Shared<'_, '_>,
    fetched: &mut u64,
) -> Result<TableReport> {
    let k = p.key();
    // Read (download, decompress, hash-check) the next chunks while this one loads:
    // at most PREFETCH chunks wait in memory.
    let mut rx = prefetch(
        sh.store,
        sh.layout,
        &sh.man,
        &sh.by_path,
        p.rec.chunks.clone(),
    );
    let (loaded, added) = db.load_rows(i, p, &mut rx, fetched).await?;
    if loaded != p.rec.rows {
        return Err(Error::integrity(format!(
            "{k}: loaded {loaded} rows, the manifest says {}",
            p.rec.rows
        )));
    }
    let added = db.settle(i, p, added).await?;
    let prior = sh.before.get(&k).copied().unwrap_or(0);
    let stored = p.rec.rows;
    let exact = matches!(p.strategy, Strategy::FailIfNotEmpty | Strategy::Truncate)
        || (p.strategy == Strategy::Append && prior == 0)
        || (p.strategy == Strategy::SkipExisting && prior == 0);
    // Where the table is re-read for its checksum anyway, that pass counts it too.
    let (after, digest) = if exact {
        let (d, n) = db.rowset_and_count(p).await?;
        (n, Some(d))
    } else {
        (db.count(p).await?, None)
    };
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
    if let Some(got) = digest {
        if got.to_checksum() != p.rec.checksum {
            return Err(Error::integrity(format!(
                "{k}: row-set checksum after restore {} differs from the snapshot's {}",
                got.to_checksum(),
                p.rec.checksum
            )));
        }
    }
    tracing::info!(table = %k, rows = added, "restored");
    Ok(TableReport {
        table: k,
        strategy: p.strategy,
        rows_stored: stored,
        rows_added: added,
        rows_after: after,
        checksum_checked: exact,
        connection: 0,
    })
}

/// The tables of `order` (foreign-key order) in groups that foreign keys (`deps`, child →
/// parent) link, directly or through other restored tables; each group keeps `order`'s
/// order, and groups come heaviest first (`weights`, by position in `order`), so the big
/// ones start first and the small ones fill in.
///
/// A group is the unit a connection loads: a child's foreign-key check (immediate
/// mode) sees only rows its own transaction wrote or others committed, so a table must
/// load on the connection that loaded its parents, and nothing commits before the end.
pub fn fk_groups(order: &[String], deps: &[(String, String)], weights: &[u64]) -> Vec<Vec<usize>> {
    let pos: HashMap<&String, usize> = order.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut root: Vec<usize> = (0..order.len()).collect();
    fn find(root: &mut [usize], mut i: usize) -> usize {
        while root[i] != i {
            root[i] = root[root[i]];
            i = root[i];
        }
        i
    }
    for (c, p) in deps {
        if let (Some(&a), Some(&b)) = (pos.get(c), pos.get(p)) {
            let (ra, rb) = (find(&mut root, a), find(&mut root, b));
            if ra != rb {
                root[ra.max(rb)] = ra.min(rb);
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..order.len() {
        let r = find(&mut root, i);
        groups.entry(r).or_default().push(i);
    }
    let mut out: Vec<Vec<usize>> = groups.into_values().collect();
    let weight = |g: &Vec<usize>| {
        g.iter()
            .map(|&i| weights.get(i).copied().unwrap_or(0))
            .sum::<u64>()
    };
    // Stable: equal weights keep foreign-key order.
    out.sort_by_key(|g| std::cmp::Reverse(weight(g)));
    out
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
    fn fk_groups_link_through_restored_tables_keep_order_and_put_heavy_first() {
        // FK order: dag, dag_run, ti, xcom, user, role, user_role, variable.
        let order = s(&[
            "p.dag",
            "p.dag_run",
            "p.ti",
            "p.xcom",
            "p.user",
            "p.role",
            "p.user_role",
            "p.variable",
        ]);
        let deps = vec![
            ("p.dag_run".to_string(), "p.dag".to_string()),
            ("p.ti".to_string(), "p.dag_run".to_string()),
            ("p.xcom".to_string(), "p.ti".to_string()),
            ("p.user_role".to_string(), "p.user".to_string()),
            ("p.user_role".to_string(), "p.role".to_string()),
            ("p.variable".to_string(), "p.variable".to_string()),
            // Outside the restore: links nothing.
            ("p.note".to_string(), "p.ti".to_string()),
            ("p.note".to_string(), "p.user".to_string()),
        ];
        let weights = [1, 10, 1000, 5, 1, 1, 1, 2];
        let g = fk_groups(&order, &deps, &weights);
        assert_eq!(g, vec![vec![0, 1, 2, 3], vec![4, 5, 6], vec![7]]);
        // Heavier first; foreign-key order inside a group.
        let g = fk_groups(&order, &deps, &[1, 1, 1, 1, 1, 1, 1, 50]);
        assert_eq!(g, vec![vec![7], vec![0, 1, 2, 3], vec![4, 5, 6]]);
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
