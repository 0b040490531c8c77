//! The MySQL / MariaDB [`Loader`]: the checks, order and comparisons of
//! [`crate::restore::db`], with MySQL's means.
//!
//! Rows go in as batched, parameterised multi-row `INSERT`s (`LOAD DATA LOCAL INFILE` is
//! off by default on servers and clients, and batched inserts need no server setting).
//! `truncate` uses `DELETE` in reverse foreign-key order, because `TRUNCATE` commits
//! implicitly and is refused on referenced tables; `skip-existing` is
//! `INSERT … ON DUPLICATE KEY UPDATE <first column> = <first column>` (a no-op for rows
//! whose key exists, unlike `INSERT IGNORE`, which would also swallow data errors).
//! `AUTO_INCREMENT` counters move past inserted keys by themselves.

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use crate::db::csv::parse_csv;
use crate::db::mysql::{connect, my_err, read_rows, table_shape};
use crate::db::sql::{my_ident, my_is_binary};
use crate::error::{Error, Result};
use crate::manifest::{Column, RowsetDigest};
use crate::restore::config::Strategy;
use crate::restore::db::{DbRestoreOptions, Loader, Planned, Tx};

/// Rows per `INSERT` at most (also bounded by 65,535 placeholders).
const ROWS_PER_INSERT: usize = 500;

/// A MySQL / MariaDB target.
pub(crate) struct MyLoader {
    c: Conn,
}

impl MyLoader {
    /// Connect to `opts.url` (password from `MYSQL_PWD` when the URL has none; TLS as
    /// its `sslmode` says).
    ///
    /// # Errors
    /// As [`connect`].
    pub(crate) async fn connect(opts: &DbRestoreOptions) -> Result<MyLoader> {
        Ok(MyLoader {
            c: connect(&opts.url, None).await?,
        })
    }
}

fn fq(p: &Planned<'_>) -> String {
    format!("{}.{}", my_ident(&p.schema), my_ident(&p.rec.name))
}

#[async_trait::async_trait]
impl Loader for MyLoader {
    async fn table_shape(
        &mut self,
        schema: &str,
        name: &str,
    ) -> Result<Option<(Vec<Column>, Vec<String>)>> {
        table_shape(&mut self.c, schema, name).await
    }

    fn same_type(&self, target: &str, stored: &str) -> bool {
        target.eq_ignore_ascii_case(stored)
    }

    async fn required_columns(&mut self, p: &Planned<'_>) -> Result<Vec<String>> {
        self.c
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND IS_NULLABLE = 'NO' \
                   AND COLUMN_DEFAULT IS NULL AND EXTRA NOT LIKE '%auto_increment%' \
                   AND EXTRA NOT LIKE '%GENERATED%' AND EXTRA NOT IN ('VIRTUAL', 'PERSISTENT', 'STORED')",
                (p.schema.as_str(), p.rec.name.as_str()),
            )
            .await
            .map_err(|e| my_err(format!("reading {}", p.key()), e))
    }

    async fn has_unique_index(&mut self, p: &Planned<'_>) -> Result<bool> {
        let uniq: Option<u64> = self
            .c
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0",
                (p.schema.as_str(), p.rec.name.as_str()),
            )
            .await
            .map_err(|e| my_err(format!("reading keys of {}", p.key()), e))?;
        Ok(uniq.unwrap_or(0) != 0)
    }

    async fn count(&mut self, p: &Planned<'_>) -> Result<u64> {
        let n: Option<u64> = self
            .c
            .query_first(format!("SELECT COUNT(*) FROM {}", fq(p)))
            .await
            .map_err(|e| my_err(format!("counting {}", p.key()), e))?;
        Ok(n.unwrap_or(0))
    }

    async fn foreign_keys(&mut self) -> Result<Vec<(String, String)>> {
        self.c
            .query(
                "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME), \
                        CONCAT(REFERENCED_TABLE_SCHEMA, '.', REFERENCED_TABLE_NAME) \
                 FROM information_schema.KEY_COLUMN_USAGE WHERE REFERENCED_TABLE_NAME IS NOT NULL",
            )
            .await
            .map_err(|e| my_err("reading foreign keys", e))
    }

    fn truncate_refuses_referenced(&self) -> bool {
        false
    }

    async fn tx(&mut self, what: Tx) -> Result<()> {
        let sql = match what {
            Tx::Begin => "START TRANSACTION",
            Tx::Commit => "COMMIT",
            Tx::Rollback => "ROLLBACK",
        };
        self.c.query_drop(sql).await.map_err(|e| my_err(sql, e))
    }

    async fn empty(&mut self, tables: &[&Planned<'_>]) -> Result<()> {
        // Children first, so no foreign key is violated while emptying.
        for p in tables.iter().rev() {
            self.c
                .query_drop(format!("DELETE FROM {}", fq(p)))
                .await
                .map_err(|e| my_err(format!("emptying {}", p.key()), e))?;
        }
        Ok(())
    }

    async fn load_rows(
        &mut self,
        _i: usize,
        p: &Planned<'_>,
        chunks: &mut tokio::sync::mpsc::Receiver<Result<(Bytes, u64)>>,
        fetched: &mut u64,
    ) -> Result<(u64, u64)> {
        let (k, target) = (p.key(), fq(p));
        let cols: Vec<String> = p.rec.columns.iter().map(|c| my_ident(&c.name)).collect();
        let binary: Vec<bool> = p.rec.columns.iter().map(|c| my_is_binary(&c.ty)).collect();
        let ncols = cols.len().max(1);
        let per = ROWS_PER_INSERT.min(65_535 / ncols).max(1);
        let row_ph = format!("({})", vec!["?"; ncols].join(", "));
        let suffix = if p.strategy == Strategy::SkipExisting {
            format!(" ON DUPLICATE KEY UPDATE {0} = {0}", cols[0])
        } else {
            String::new()
        };
        let (mut loaded, mut added) = (0u64, 0u64);
        for chunk in &p.rec.chunks {
            let (data, f) = chunks
                .recv()
                .await
                .ok_or_else(|| Error::internal("chunk reader stopped"))??;
            *fetched += f;
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
                self.c
                    .exec_drop(q, params)
                    .await
                    .map_err(|e| my_err(format!("inserting into {k}"), e))?;
                loaded += batch.len() as u64;
                added += self.c.affected_rows();
            }
        }
        Ok((loaded, added))
    }

    async fn settle(&mut self, _i: usize, _p: &Planned<'_>, added: u64) -> Result<u64> {
        // AUTO_INCREMENT counters move past inserted keys by themselves.
        Ok(added)
    }

    async fn rowset(&mut self, p: &Planned<'_>) -> Result<RowsetDigest> {
        let mut d = RowsetDigest::default();
        read_rows(&mut self.c, p.rec, &p.schema, None, &mut d).await?;
        Ok(d)
    }

    async fn close(self: Box<Self>) {
        let _ = self.c.disconnect().await;
    }
}
