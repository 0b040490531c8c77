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
use mysql_async::{Conn, Opts, OptsBuilder, Value};
use tokio::sync::{mpsc, Mutex};

use super::{Batcher, Chunk, Done, Item, ItemKind};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{Column, TableRecord};
use crate::pipeline::spec::DbSourceConfig;
use crate::support::secret::{redact_url, Secret};

/// Map a driver error (never retried: a broken connection loses the snapshot).
pub fn my_err(what: impl std::fmt::Display, e: mysql_async::Error) -> Error {
    Error::caused(ErrorKind::Source, what, e)
}

/// Connect to `url` (`mysql://` or `mariadb://`), password override optional.
///
/// # Errors
/// `Config` for a malformed URL, `Source` when the server is unreachable.
pub async fn connect(url: &Secret, password: Option<&Secret>) -> Result<Conn> {
    let raw = url.expose();
    let u = match raw.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => raw.to_string(),
    };
    let opts = Opts::from_url(&u)
        .map_err(|e| Error::config(format!("invalid MySQL URL {}: {e}", redact_url(raw))))?;
    let mut b = OptsBuilder::from_opts(opts);
    if let Some(p) = password {
        b = b.pass(Some(p.expose().to_string()));
    }
    let mut c = Conn::new(b)
        .await
        .map_err(|e| my_err(format!("connecting to {}", redact_url(raw)), e))?;
    c.query_drop("SET SESSION time_zone = '+00:00', NAMES utf8mb4")
        .await
        .map_err(|e| my_err("session settings", e))?;
    Ok(c)
}

/// Quote an identifier with backticks.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Whether a `COLUMN_TYPE` holds bytes rather than text.
pub fn is_binary(ty: &str) -> bool {
    let t = ty.to_ascii_lowercase();
    t.contains("blob")
        || t.starts_with("binary")
        || t.starts_with("varbinary")
        || t.starts_with("bit")
}

/// Append one CSV field: NULL unquoted and empty, everything else quoted.
pub fn csv_field(out: &mut Vec<u8>, v: Option<&[u8]>, binary: bool) {
    let Some(v) = v else { return };
    out.push(b'"');
    if binary {
        out.extend_from_slice(b"\\x");
        out.extend_from_slice(hex::encode(v).as_bytes());
    } else {
        for &b in v {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
    }
    out.push(b'"');
}

/// One row as a CSV line.
pub fn csv_row(values: Vec<Value>, binary: &[bool]) -> Bytes {
    let mut out = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let b = binary.get(i).copied().unwrap_or(false);
        match v {
            Value::NULL => {}
            Value::Bytes(bytes) => csv_field(&mut out, Some(&bytes), b),
            other => {
                // The text protocol sends bytes; keep other forms readable anyway.
                let s = other.as_sql(true);
                csv_field(&mut out, Some(s.trim_matches('\'').as_bytes()), false)
            }
        }
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// The CSV header line for `cols`.
pub fn csv_header(cols: &[Column]) -> Bytes {
    let mut out = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_field(&mut out, Some(c.name.as_bytes()), false);
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// Parse CSV as written by either source into records of optional fields (`None` =
/// NULL: an unquoted empty field).
///
/// # Errors
/// `Integrity` for an unterminated quote.
pub fn parse_csv(data: &[u8]) -> Result<Vec<Vec<Option<Vec<u8>>>>> {
    let mut out = Vec::new();
    let mut rec: Vec<Option<Vec<u8>>> = Vec::new();
    let mut field = Vec::new();
    let (mut quoted, mut in_quotes, mut any) = (false, false, false);
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if in_quotes {
            if b == b'"' {
                if data.get(i + 1) == Some(&b'"') {
                    field.push(b'"');
                    i += 1;
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(b);
            }
        } else {
            match b {
                b'"' => {
                    in_quotes = true;
                    quoted = true;
                }
                b',' => {
                    rec.push(if quoted || !field.is_empty() {
                        Some(std::mem::take(&mut field))
                    } else {
                        None
                    });
                    quoted = false;
                }
                b'\n' | b'\r' => {
                    if b == b'\r' && data.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                    rec.push(if quoted || !field.is_empty() {
                        Some(std::mem::take(&mut field))
                    } else {
                        None
                    });
                    quoted = false;
                    out.push(std::mem::take(&mut rec));
                    any = false;
                    i += 1;
                    continue;
                }
                _ => field.push(b),
            }
        }
        any = true;
        i += 1;
    }
    if in_quotes {
        return Err(Error::integrity("CSV chunk ends inside a quoted field"));
    }
    if any {
        rec.push(if quoted || !field.is_empty() {
            Some(field)
        } else {
            None
        });
        out.push(rec);
    }
    Ok(out)
}

/// Columns (non-generated) and primary key of a table, `None` when it does not exist.
///
/// # Errors
/// Server errors.
pub async fn table_shape(
    c: &mut Conn,
    schema: &str,
    name: &str,
) -> Result<Option<(Vec<Column>, Vec<String>)>> {
    let rows: Vec<(String, String, String)> = c
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
               AND EXTRA NOT LIKE '%GENERATED%' AND EXTRA NOT IN ('VIRTUAL', 'PERSISTENT', 'STORED') \
             ORDER BY ORDINAL_POSITION",
            (schema, name),
        )
        .await
        .map_err(|e| my_err(format!("reading columns of {schema}.{name}"), e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let cols = rows
        .into_iter()
        .map(|(n, t, nl)| Column {
            name: n,
            ty: t,
            nullable: nl == "YES",
        })
        .collect();
    let pk: Vec<String> = c
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY ORDINAL_POSITION",
            (schema, name),
        )
        .await
        .map_err(|e| my_err(format!("reading the primary key of {schema}.{name}"), e))?;
    Ok(Some((cols, pk)))
}

/// Where [`read_rows`] sends CSV rows.
#[async_trait::async_trait]
pub trait RowSink: Send {
    /// Take one row; `Err` stops reading.
    async fn row(&mut self, row: Bytes) -> std::result::Result<(), ()>;
}

#[async_trait::async_trait]
impl RowSink for Batcher {
    async fn row(&mut self, row: Bytes) -> std::result::Result<(), ()> {
        self.push(row).await
    }
}

#[async_trait::async_trait]
impl RowSink for crate::manifest::RowsetDigest {
    async fn row(&mut self, row: Bytes) -> std::result::Result<(), ()> {
        self.add_row(&row);
        Ok(())
    }
}

/// Stream `SELECT cols FROM table ORDER BY key` as CSV rows into `sink`.
///
/// # Errors
/// Server errors.
pub async fn read_rows(
    c: &mut Conn,
    t: &TableRecord,
    schema: &str,
    sink: &mut dyn RowSink,
) -> Result<()> {
    let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
    let binary: Vec<bool> = t.columns.iter().map(|c| is_binary(&c.ty)).collect();
    let mut q = format!(
        "SELECT {} FROM {}.{}",
        cols.join(", "),
        ident(schema),
        ident(&t.name)
    );
    if !t.primary_key.is_empty() {
        let k: Vec<String> = t.primary_key.iter().map(|k| ident(k)).collect();
        q.push_str(&format!(" ORDER BY {}", k.join(", ")));
    }
    let fq = format!("{schema}.{}", t.name);
    let mut res = c
        .query_iter(q)
        .await
        .map_err(|e| my_err(format!("reading {fq}"), e))?;
    while let Some(row) = res
        .next()
        .await
        .map_err(|e| my_err(format!("reading {fq}"), e))?
    {
        if sink.row(csv_row(row.unwrap(), &binary)).await.is_err() {
            break;
        }
    }
    drop(res);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip_keeps_null_empty_quotes_newlines_and_bytes() {
        let row = csv_row(
            vec![
                Value::Bytes(b"a,\"b\"\nc".to_vec()),
                Value::NULL,
                Value::Bytes(vec![]),
                Value::Bytes(vec![0, 255, 10]),
            ],
            &[false, false, false, true],
        );
        assert_eq!(&row[..], &b"\"a,\"\"b\"\"\nc\",,\"\",\"\\x00ff0a\"\n"[..]);
        let mut two = row.to_vec();
        two.extend_from_slice(b"x,\r\n");
        let recs = parse_csv(&two).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0][0].as_deref(), Some(&b"a,\"b\"\nc"[..]));
        assert_eq!(recs[0][1], None);
        assert_eq!(recs[0][2].as_deref(), Some(&b""[..]));
        assert_eq!(recs[0][3].as_deref(), Some(&b"\\x00ff0a"[..]));
        assert_eq!(recs[1], vec![Some(b"x".to_vec()), None]);
        assert!(parse_csv(b"\"open").is_err());
        assert!(is_binary("longblob") && is_binary("varbinary(16)") && !is_binary("text"));
    }
}
