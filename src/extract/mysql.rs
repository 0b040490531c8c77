//! MySQL / MariaDB source: every table read through **one** consistent-snapshot
//! connection.
//!
//! **Consistency.** MySQL and MariaDB cannot export a snapshot to other connections (no
//! `pg_export_snapshot` equivalent). Parallel workers would each need their own
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT`, and those are mutually consistent only
//! if taken while writes are paused — which needs `FLUSH TABLES WITH READ LOCK` (the
//! RELOAD privilege, and a global write stall) or, on MySQL 8, `LOCK INSTANCE FOR
//! BACKUP`, which does not block DML. blobpipe chooses correctness without locks: one
//! connection opens `REPEATABLE READ` + `START TRANSACTION WITH CONSISTENT SNAPSHOT`
//! and reads every table in turn, so the whole backup is one InnoDB read view (tables
//! of non-transactional engines such as MyISAM are not covered by it). Reading is
//! therefore serial — partitions take the connection one at a time — while
//! compression and upload of finished chunks still overlap with the next table's read.
//! Tables are not split into key ranges (one reader gains nothing from it).
//!
//! **Format.** Rows are read with the text protocol and written as CSV in the same
//! layout as the PostgreSQL source (a header line per entry, RFC 4180 quoting): every
//! non-NULL value is quoted, NULL is the only unquoted empty field, and binary columns
//! (`*blob`, `binary`, `varbinary`, `bit`) are written as `\x` + hex. The session uses
//! `time_zone = '+00:00'`, so `TIMESTAMP` values are UTC.
//!
//! **TLS** is not enabled (the driver is built without TLS features): use a private
//! network.

use std::sync::Arc;

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::{mpsc, Mutex};

use super::{Batcher, Chunk, Done, Item, ItemKind};
use crate::db::csv::csv_header;
use crate::db::mysql::{connect, my_err, read_rows, table_shape, RowSink};
use crate::error::{Error, Result};
use crate::extract::config::DbSourceConfig;
use crate::manifest::TableRecord;
use crate::support::secret::redact_url;

#[async_trait::async_trait]
impl RowSink for Batcher {
    async fn row(&mut self, row: Bytes) -> std::result::Result<(), ()> {
        self.push(row).await
    }
}

/// An open MySQL source: one connection inside one consistent snapshot.
pub struct MySession {
    url: String,
    conn: Arc<Mutex<Conn>>,
    /// One item per table.
    pub items: Vec<Item>,
}

impl MySession {
    /// Connect, start the consistent snapshot and list the tables inside it.
    ///
    /// # Errors
    /// `Source` for connection or catalog errors, `Config` when no table matches.
    pub async fn open(cfg: &DbSourceConfig) -> Result<MySession> {
        let mut c = connect(&cfg.url, cfg.password.as_ref()).await?;
        c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(|e| my_err("isolation level", e))?;
        c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
            .map_err(|e| my_err("starting the consistent snapshot", e))?;
        let mut items = Vec::new();
        for schema in &cfg.schemas {
            let names: Vec<String> = c
                .exec(
                    "SELECT TABLE_NAME FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                    (schema.as_str(),),
                )
                .await
                .map_err(|e| my_err("listing tables", e))?;
            for name in names {
                if !super::table_selected(&cfg.include, &cfg.exclude, schema, &name) {
                    continue;
                }
                let Some((columns, pk)) = table_shape(&mut c, schema, &name).await? else {
                    continue;
                };
                let template = Arc::new(TableRecord {
                    source: "mysql".into(),
                    schema: schema.clone(),
                    name: name.clone(),
                    columns,
                    primary_key: pk,
                    rows: 0,
                    checksum: String::new(),
                    bytes: 0,
                    chunks: vec![],
                    range: 0,
                });
                items.push(Item {
                    kind: ItemKind::Table { template },
                    range: 0,
                    bounds: None,
                    base: format!("mysql/{}/0000", super::table_segment(schema, &name)),
                    ext: "csv",
                    chunk_size: cfg.chunk_size,
                });
            }
        }
        if items.is_empty() {
            return Err(Error::config(format!(
                "no table of database(s) {} matches the pipeline's include/exclude patterns",
                cfg.schemas.join(", ")
            )));
        }
        Ok(MySession {
            url: redact_url(cfg.url.expose()),
            conn: Arc::new(Mutex::new(c)),
            items,
        })
    }

    /// `mysql:<host>/<db>` (no credentials).
    pub fn describe(&self) -> String {
        format!("mysql:{}", self.url)
    }

    /// Spawn the reader of `item`; it waits for the shared snapshot connection.
    pub fn start(&self, item: Item, tx: mpsc::Sender<Result<Chunk>>) {
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let mut b = Batcher::new(tx);
            let ItemKind::Table { template: t } = &item.kind else {
                return b.fail(Error::internal("mysql item is not a table")).await;
            };
            let mut c = conn.lock().await;
            if b.send(Chunk::Header(csv_header(&t.columns))).await.is_err() {
                return;
            }
            let r = read_rows(&mut c, t, &t.schema, &mut b).await;
            drop(c);
            match r {
                Err(e) => b.fail(e).await,
                Ok(()) => {
                    if b.flush().await.is_ok() {
                        let _ = b.send(Chunk::Done(Done::default())).await;
                    }
                }
            }
        });
    }
}
