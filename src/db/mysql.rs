//! MySQL / MariaDB connections and the reads both backup and restore make: URL handling
//! (`mysql://` or `mariadb://`), session set-up (`time_zone = '+00:00'`, `utf8mb4`), the
//! table shape from `information_schema`, and streaming a table as CSV rows — the same
//! rows whether the backup writes them or the restore re-reads them for the row-set
//! checksum.
//!
//! **TLS** is not enabled (the driver is built without TLS features): use a private
//! network.

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Value};

use crate::db::csv::csv_field;
use crate::db::sql::{my_ident, my_is_binary};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{Column, RowsetDigest, TableRecord};
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
impl RowSink for RowsetDigest {
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
    let cols: Vec<String> = t.columns.iter().map(|c| my_ident(&c.name)).collect();
    let binary: Vec<bool> = t.columns.iter().map(|c| my_is_binary(&c.ty)).collect();
    let mut q = format!(
        "SELECT {} FROM {}.{}",
        cols.join(", "),
        my_ident(schema),
        my_ident(&t.name)
    );
    if !t.primary_key.is_empty() {
        let k: Vec<String> = t.primary_key.iter().map(|k| my_ident(k)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::csv::parse_csv;

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
        assert!(my_is_binary("longblob") && my_is_binary("varbinary(16)") && !my_is_binary("text"));
    }
}
