//! MySQL / MariaDB source: one consistent snapshot read by parallel connections, tables
//! split by integer-key range, as for PostgreSQL.
//!
//! **Consistency.** MySQL and MariaDB cannot export a snapshot to other connections (no
//! `pg_export_snapshot`). Several `START TRANSACTION WITH CONSISTENT SNAPSHOT`s see one
//! instant only if they are all taken while writes are paused, so [`MySession::open`]
//! does what `mysqldump --single-transaction --master-data` and `mydumper` do: it opens
//! `[partitions] max_parallel` reader connections (at most [`MAX_READERS`], and no more
//! than there are tables and key ranges to read) and a locker, takes `FLUSH TABLES WITH
//! READ LOCK` on the locker (waiting at most [`LOCK_WAIT_SECS`] for running statements),
//! starts `REPEATABLE READ` + `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` on
//! every reader, then `UNLOCK TABLES`: writes stall only for those few round trips, and
//! every reader sees the same InnoDB read view (a concurrent writer's transaction is in
//! every table and key range, or in none).
//!
//! **Fallback.** Where the lock is not granted (it needs the `RELOAD` privilege, which
//! managed services such as Azure Database for MySQL do not give the admin user) or not
//! had in time, no second snapshot could be made consistent with the first; blobpipe
//! keeps consistency and gives up parallel reading: one connection, one snapshot, tables
//! and key ranges read one after another (compression and upload still overlap). A
//! warning says so. Tables of non-transactional engines (MyISAM, Aria) are not covered by
//! a read view in either case.
//!
//! **Chunking.** Partitions are tables; a table whose estimated row count
//! (`information_schema.TABLES.TABLE_ROWS`) exceeds `split_rows` and whose primary key is
//! one signed-range integer column is split into equal key ranges between `MIN` and `MAX`
//! of the key (read in the snapshot). Planning runs inside the snapshot too.
//!
//! **Format.** Rows are read with the text protocol and written as CSV in the same
//! layout as the PostgreSQL source (a header line per entry, RFC 4180 quoting): every
//! non-NULL value is quoted, NULL is the only unquoted empty field, and binary columns
//! (`*blob`, `binary`, `varbinary`, `bit`) are written as `\x` + hex. The session uses
//! `time_zone = '+00:00'`, so `TIMESTAMP` values are UTC.
//!
//! **Connections** use TLS per the URL's `sslmode` (see [`crate::db::mysql`]).

use std::sync::Arc;

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::{mpsc, Mutex, Semaphore};

use super::{Batcher, Chunk, Done, Item, ItemKind};
use crate::db::csv::csv_header;
use crate::db::mysql::{connect, my_err, read_rows, table_ddl, table_shape, RowSink};
use crate::db::sql::my_ident;
use crate::error::{Error, ErrorKind, Result};
use crate::extract::config::DbSourceConfig;
use crate::manifest::TableRecord;
use crate::support::secret::redact_url;

/// Reader connections a session opens at most, whatever `[partitions] max_parallel`
/// says (the pipeline check refuses more; `"auto"` is capped here).
pub const MAX_READERS: usize = 64;

/// How long `FLUSH TABLES WITH READ LOCK` may wait for running statements before the
/// session falls back to one connection.
pub const LOCK_WAIT_SECS: u32 = 10;

#[async_trait::async_trait]
impl RowSink for Batcher {
    async fn row(&mut self, row: Bytes) -> std::result::Result<(), ()> {
        self.push(row).await
    }
}

/// Connections that share one snapshot; a reader takes one, returns it when its item is
/// read, and drops it when it broke (a new one could not join the snapshot).
struct Pool {
    idle: Mutex<Vec<Conn>>,
    free: Semaphore,
    alive: std::sync::atomic::AtomicUsize,
}

/// An open MySQL source: connections inside one consistent snapshot.
pub struct MySession {
    url: String,
    pool: Arc<Pool>,
    /// How many connections read in parallel (1 after the fallback).
    pub connections: usize,
    /// One item per partition.
    pub items: Vec<Item>,
}

async fn begin_snapshot(c: &mut Conn) -> Result<()> {
    c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(|e| my_err("isolation level", e))?;
    c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(|e| my_err("starting the consistent snapshot", e))
}

/// Open `n` reader connections in one snapshot under a brief global read lock; `Ok(None)`
/// when the lock is refused or not had in time (the caller falls back).
async fn synchronized(cfg: &DbSourceConfig, n: usize) -> Result<Option<Vec<Conn>>> {
    let mut locker = connect(&cfg.url, cfg.password.as_ref()).await?;
    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        readers.push(connect(&cfg.url, cfg.password.as_ref()).await?);
    }
    locker
        .query_drop(format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_SECS}"))
        .await
        .map_err(|e| my_err("lock_wait_timeout", e))?;
    if let Err(e) = locker.query_drop("FLUSH TABLES WITH READ LOCK").await {
        tracing::warn!(
            "FLUSH TABLES WITH READ LOCK not possible ({e}): reading through one \
             consistent-snapshot connection, without parallel reads"
        );
        for r in readers {
            let _ = r.disconnect().await;
        }
        let _ = locker.disconnect().await;
        return Ok(None);
    }
    let mut started = Ok(());
    for r in &mut readers {
        started = begin_snapshot(r).await;
        if started.is_err() {
            break;
        }
        test_gap().await;
    }
    let unlocked = locker.query_drop("UNLOCK TABLES").await;
    let _ = locker.disconnect().await;
    started?;
    unlocked.map_err(|e| my_err("UNLOCK TABLES", e))?;
    Ok(Some(readers))
}

/// Tests widen the moment between two readers' snapshots (`BLOBPIPE_TEST_MYSQL_SNAPSHOT_GAP_MS`)
/// so that a writer would land between them if the lock did not hold it back.
async fn test_gap() {
    #[cfg(any(test, feature = "testing"))]
    if let Some(ms) = std::env::var("BLOBPIPE_TEST_MYSQL_SNAPSHOT_GAP_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

impl MySession {
    /// Connect, start the consistent snapshot(s) with `readers` connections (1 to
    /// [`MAX_READERS`]) and plan the items inside it; readers beyond the number of items
    /// are closed again.
    ///
    /// # Errors
    /// `Source` for connection or catalog errors, `Config` when no table matches.
    /// `prior` are the parent snapshot's tables (their key ranges are kept).
    pub async fn open(
        cfg: &DbSourceConfig,
        readers: usize,
        prior: &[TableRecord],
    ) -> Result<MySession> {
        let readers = readers.clamp(1, MAX_READERS);
        // One reader needs no lock: its own snapshot is the consistent one.
        let together = if readers > 1 {
            synchronized(cfg, readers).await?
        } else {
            None
        };
        let mut conns = match together {
            Some(c) => c,
            None => {
                let mut c = connect(&cfg.url, cfg.password.as_ref()).await?;
                begin_snapshot(&mut c).await?;
                vec![c]
            }
        };
        let items = plan(&mut conns[0], cfg, prior).await?;
        while conns.len() > items.len().max(1) {
            if let Some(c) = conns.pop() {
                let _ = c.disconnect().await;
            }
        }
        let n = conns.len();
        Ok(MySession {
            url: redact_url(cfg.url.expose()),
            pool: Arc::new(Pool {
                idle: Mutex::new(conns),
                free: Semaphore::new(n),
                alive: std::sync::atomic::AtomicUsize::new(n),
            }),
            connections: n,
            items,
        })
    }

    /// `mysql:<host>/<db>` (no credentials).
    pub fn describe(&self) -> String {
        format!("mysql:{}", self.url)
    }

    /// Spawn the reader of `item`; it waits for a free snapshot connection.
    pub fn start(&self, item: Item, tx: mpsc::Sender<Result<Chunk>>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut b = Batcher::new(tx);
            let ItemKind::Table { template: t } = &item.kind else {
                return b.fail(Error::internal("mysql item is not a table")).await;
            };
            let Ok(permit) = pool.free.acquire().await else {
                return b
                    .fail(Error::new(
                        ErrorKind::Source,
                        "every connection of the consistent snapshot broke: the backup \
                         must start again",
                    ))
                    .await;
            };
            let Some(mut c) = pool.idle.lock().await.pop() else {
                return b.fail(Error::internal("snapshot pool out of step")).await;
            };
            if b.send(Chunk::Header(csv_header(&t.columns))).await.is_err() {
                pool.idle.lock().await.push(c);
                return;
            }
            let r = read_rows(&mut c, t, &t.schema, item.bounds, &mut b).await;
            match r {
                Err(e) => {
                    // A broken connection cannot rejoin the snapshot: drop it.
                    permit.forget();
                    if pool.alive.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                        pool.free.close();
                    }
                    drop(c);
                    b.fail(e).await
                }
                Ok(()) => {
                    pool.idle.lock().await.push(c);
                    drop(permit);
                    if b.flush().await.is_ok() {
                        let _ = b.send(Chunk::Done(Done::default())).await;
                    }
                }
            }
        });
    }
}

/// The tables (and key ranges) to read, planned inside the snapshot of `c`.
async fn plan(c: &mut Conn, cfg: &DbSourceConfig, prior: &[TableRecord]) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for schema in &cfg.schemas {
        let tables: Vec<(String, Option<u64>, Option<u64>)> = c
            .exec(
                "SELECT TABLE_NAME, TABLE_ROWS, DATA_LENGTH FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                (schema.as_str(),),
            )
            .await
            .map_err(|e| my_err("listing tables", e))?;
        for (name, est, bytes) in tables {
            if !super::table_selected(&cfg.include, &cfg.exclude, schema, &name) {
                continue;
            }
            let Some((columns, pk)) = table_shape(c, schema, &name).await? else {
                continue;
            };
            let int_pk = pk.len() == 1 && {
                let ty = columns
                    .iter()
                    .find(|c| c.name == pk[0])
                    .map(|c| c.ty.to_ascii_lowercase())
                    .unwrap_or_default();
                let base = ty.split('(').next().unwrap_or("");
                matches!(
                    base,
                    "tinyint" | "smallint" | "mediumint" | "int" | "bigint"
                ) && !(base == "bigint" && ty.contains("unsigned"))
            };
            let mut ranges: Vec<Option<(i64, i64)>> = vec![None];
            let est = est.unwrap_or(0);
            let before = super::prior_bounds(
                prior
                    .iter()
                    .find(|t| t.source == "mysql" && &t.schema == schema && t.name == name),
                &pk,
            );
            let (split, n) = super::range_count(
                est as f64,
                bytes.unwrap_or(0),
                cfg.split_rows,
                cfg.split_bytes,
            );
            if int_pk && (split || !before.is_empty()) {
                let fq = format!("{}.{}", my_ident(schema), my_ident(&name));
                let k = my_ident(&pk[0]);
                let bounds: Option<(Option<i64>, Option<i64>)> = c
                    .query_first(format!(
                        "SELECT CAST(MIN({k}) AS SIGNED), CAST(MAX({k}) AS SIGNED) FROM {fq}"
                    ))
                    .await
                    .map_err(|e| my_err(format!("key bounds of {fq}"), e))?;
                if let Some((Some(lo), Some(hi))) = bounds {
                    ranges = super::stable_ranges(&before, lo, hi, n)
                        .into_iter()
                        .map(Some)
                        .collect();
                }
            }
            let (indexes, constraints) = table_ddl(c, schema, &name).await?;
            let template = Arc::new(TableRecord {
                source: "mysql".into(),
                schema: schema.clone(),
                name: name.clone(),
                columns,
                primary_key: pk,
                indexes,
                constraints,
                rows: 0,
                checksum: String::new(),
                bytes: 0,
                chunks: vec![],
                range: 0,
                ranges: vec![],
            });
            items.extend(Item::table_ranges(
                "mysql",
                &template,
                ranges,
                cfg.chunk_size,
            ));
        }
    }
    if items.is_empty() {
        return Err(Error::config(format!(
            "no table of database(s) {} matches the pipeline's include/exclude patterns",
            cfg.schemas.join(", ")
        )));
    }
    Ok(items)
}
