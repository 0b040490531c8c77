//! The MySQL / MariaDB [`Loader`]: the checks, order and comparisons of
//! [`crate::restore::db`], with MySQL's means.
//!
//! **Rows go in** by the fastest way the server allows, one stored chunk per statement,
//! all inside the restore's one transaction:
//!
//! * `LOAD DATA LOCAL INFILE`, fed from memory (the chunk is never written to a file),
//!   when the server's `local_infile` is on. The stored CSV is turned into LOAD DATA's
//!   input on the way: header dropped, NULL (our unquoted empty field) written as the
//!   bare word `NULL`, quoted values passed through (`""` is LOAD DATA's doubled
//!   quote too), binary columns (`\x` + hex) decoded by `UNHEX` in the statement. With
//!   `LOCAL`, the server turns data errors and duplicate keys into *warnings* and goes
//!   on; so a statement that reports any warning fails the restore as a refused
//!   `INSERT` would (`Destination`, naming the server's first warnings), and a row count
//!   other than the rows sent fails it as a mismatch (`Integrity`); either rolls it
//!   back: strictness is kept, not traded for speed.
//! * Otherwise (`local_infile` off, or the server refuses the statement: error 1148 /
//!   3948 / MariaDB 4166, before a byte is read) multi-row parameterised `INSERT`s, each as large as
//!   the server's `max_allowed_packet` allows (at most 4 MiB of values and 65,535
//!   placeholders), the way `mysqldump`'s extended inserts are.
//! * `skip-existing` always uses `INSERT … ON DUPLICATE KEY UPDATE <first column> =
//!   <first column>` (a no-op for rows whose key exists, unlike `INSERT IGNORE` or
//!   LOAD DATA's `IGNORE`, which would also swallow data errors).
//!
//! **Session switches left alone.** `unique_checks = 0` and `foreign_key_checks = 0`
//! would speed a bulk load, but the counts and row-set checksums compared before COMMIT
//! cannot see what they give up: a duplicate in a secondary `UNIQUE` index of the
//! target, or a child row whose parent is missing (the target's keys need not be the
//! source's). Both stay on, so the target's constraints hold after every restore.
//!
//! `truncate` uses `DELETE` in reverse foreign-key order, because `TRUNCATE` commits
//! implicitly and is refused on referenced tables. `AUTO_INCREMENT` counters move past
//! inserted keys by themselves.

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use crate::db::csv::parse_csv;
use crate::db::mysql::{connect, my_err, read_rows, table_shape};
use crate::db::sql::{my_ident, my_is_binary};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{Column, RowsetDigest};
use crate::restore::config::Strategy;
use crate::restore::db::{DbRestoreOptions, Loader, Planned, Tx};

/// Bytes of values per multi-row `INSERT` at most (also bounded by the server's
/// `max_allowed_packet` and 65,535 placeholders).
const INSERT_BYTES: usize = 4 << 20;

/// Bytes per piece of a `LOAD DATA LOCAL` stream (each piece is one protocol packet,
/// which must be under 16 MiB).
const INFILE_PIECE: usize = 1 << 20;

/// How rows are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `LOAD DATA LOCAL INFILE` from memory.
    Infile,
    /// Multi-row parameterised `INSERT`s.
    Insert,
}

/// A failed `LOAD DATA`: refused outright (fall back to `INSERT`s) or failed.
enum Refusal {
    NotAllowed(Error),
    Failed(Error),
}

/// A MySQL / MariaDB target.
pub(crate) struct MyLoader {
    c: Conn,
    /// The target, to open further connections for a parallel load.
    url: crate::support::secret::Secret,
    method: Method,
    /// A method forced by the test hook (no fallback then).
    forced: Option<Method>,
    /// Bytes of values per `INSERT`.
    insert_bytes: usize,
}

/// Tests choose the way of loading (`BLOBPIPE_TEST_MYSQL_LOAD`), so each is exercised
/// whatever the server allows: `infile` or `insert` forced (no fallback), or
/// `try-infile`: LOAD DATA even where `local_infile` says off, falling back as when the
/// server refuses it. Returns the method to start with and whether it is forced.
fn test_method() -> Option<(Method, bool)> {
    #[cfg(any(test, feature = "testing"))]
    match std::env::var("BLOBPIPE_TEST_MYSQL_LOAD").as_deref() {
        Ok("infile") => return Some((Method::Infile, true)),
        Ok("insert") => return Some((Method::Insert, true)),
        Ok("try-infile") => return Some((Method::Infile, false)),
        _ => {}
    }
    None
}

impl MyLoader {
    /// Connect to `opts.url` (password from `MYSQL_PWD` when the URL has none; TLS as
    /// its `sslmode` says) and find out how rows can go in (`local_infile`,
    /// `max_allowed_packet`).
    ///
    /// # Errors
    /// As [`connect`].
    pub(crate) async fn connect(opts: &DbRestoreOptions) -> Result<MyLoader> {
        let mut c = connect(&opts.url, None).await?;
        let (infile, packet): (Option<i64>, Option<u64>) = c
            .query_first("SELECT @@local_infile, @@max_allowed_packet")
            .await
            .map_err(|e| my_err("reading local_infile and max_allowed_packet", e))?
            .unwrap_or((None, None));
        let hook = test_method();
        let forced = hook.filter(|h| h.1).map(|h| h.0);
        let method = match hook {
            Some((m, _)) => m,
            None if infile.unwrap_or(0) != 0 => Method::Infile,
            None => {
                tracing::info!(
                    "the server's local_infile is off: loading with multi-row INSERTs \
                     (SET GLOBAL local_infile = 1 allows the faster LOAD DATA LOCAL INFILE)"
                );
                Method::Insert
            }
        };
        Ok(MyLoader {
            c,
            url: opts.url.clone(),
            method,
            forced,
            insert_bytes: insert_bytes(packet.unwrap_or(4 << 20)),
        })
    }

    /// One chunk's rows (`body`, `rows` of them) through `LOAD DATA LOCAL INFILE`;
    /// returns the rows added.
    async fn load_infile(
        &mut self,
        p: &Planned<'_>,
        body: Vec<u8>,
        rows: u64,
    ) -> std::result::Result<u64, Refusal> {
        use futures::StreamExt;
        let k = p.key();
        let stmt = infile_statement(&fq(p), &p.rec.columns);
        // The driver sends each piece as one protocol packet, which must stay below
        // 16 MiB: hand it the chunk in 1 MiB slices (no copies).
        let data = Bytes::from(body);
        let pieces: Vec<std::io::Result<Bytes>> = (0..data.len())
            .step_by(INFILE_PIECE)
            .map(|at| Ok(data.slice(at..(at + INFILE_PIECE).min(data.len()))))
            .collect();
        self.c
            .set_infile_handler(async move { Ok(futures::stream::iter(pieces).boxed()) });
        if let Err(e) = self.c.query_drop(stmt).await {
            let refused = matches!(&e, mysql_async::Error::Server(s) if matches!(s.code, 1148 | 3948 | 3950 | 4166));
            let e = my_err(format!("loading into {k}"), e);
            return Err(if refused {
                Refusal::NotAllowed(e)
            } else {
                Refusal::Failed(e)
            });
        }
        let (added, warnings) = (self.c.affected_rows(), self.c.get_warnings());
        if warnings > 0 || added != rows {
            let shown: Vec<(String, u32, String)> = self
                .c
                .query("SHOW WARNINGS LIMIT 3")
                .await
                .unwrap_or_default();
            let shown: Vec<String> = shown
                .into_iter()
                .map(|(level, code, msg)| format!("{level} {code}: {msg}"))
                .collect();
            let text = format!(
                "{k}: LOAD DATA took {added} of {rows} rows with {warnings} warning(s){}{}",
                if shown.is_empty() { "" } else { ": " },
                shown.join("; ")
            );
            // Warnings: the server refused or changed rows (as an INSERT would have
            // failed: the target's fault, not the snapshot's); a short count without
            // them is a mismatch.
            return Err(Refusal::Failed(if warnings > 0 {
                Error::new(ErrorKind::Source, text)
            } else {
                Error::integrity(text)
            }));
        }
        Ok(added)
    }

    /// One chunk's rows through multi-row `INSERT`s; returns rows sent and added.
    async fn insert_chunk(
        &mut self,
        p: &Planned<'_>,
        data: &[u8],
        what: &str,
    ) -> Result<(u64, u64)> {
        let (k, target) = (p.key(), fq(p));
        let cols: Vec<String> = p.rec.columns.iter().map(|c| my_ident(&c.name)).collect();
        let binary: Vec<bool> = p.rec.columns.iter().map(|c| my_is_binary(&c.ty)).collect();
        let ncols = cols.len().max(1);
        let max_rows = (65_535 / ncols).max(1);
        let row_ph = format!("({})", vec!["?"; ncols].join(", "));
        let suffix = if p.strategy == Strategy::SkipExisting {
            format!(" ON DUPLICATE KEY UPDATE {0} = {0}", cols[0])
        } else {
            String::new()
        };
        let recs = parse_csv(data)?;
        let (mut loaded, mut added) = (0u64, 0u64);
        let mut rest = &recs[1.min(recs.len())..];
        while !rest.is_empty() {
            // As many rows as fit the byte budget (at least one).
            let (mut n, mut bytes) = (0, 0);
            while n < rest.len() && n < max_rows && (n == 0 || bytes < self.insert_bytes) {
                bytes += rest[n]
                    .iter()
                    .map(|v| v.as_ref().map_or(4, |b| b.len() + 4))
                    .sum::<usize>();
                n += 1;
            }
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            let mut params = Vec::with_capacity(batch.len() * ncols);
            for r in batch {
                if r.len() != ncols {
                    return Err(Error::integrity(format!(
                        "{what}: a row has {} fields, the table {ncols} columns",
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
                                        "{what}: binary value not in \\x hex form"
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
        Ok((loaded, added))
    }
}

/// Bytes of values per `INSERT` for a server whose `max_allowed_packet` is `packet`:
/// half of it (placeholders and framing need room too), at most [`INSERT_BYTES`], at
/// least 64 KiB.
fn insert_bytes(packet: u64) -> usize {
    ((packet / 2) as usize).clamp(64 << 10, INSERT_BYTES)
}

/// The `LOAD DATA LOCAL INFILE` statement for `target`'s `columns` in stored order:
/// binary columns go through a user variable and `UNHEX`, BIT columns through `CONV`
/// (a binary string does not convert into BIT).
fn infile_statement(target: &str, columns: &[Column]) -> String {
    let mut list = Vec::new();
    let mut sets = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        if my_is_binary(&c.ty) {
            let v = format!("@v{i}");
            let base = c.ty.trim().to_ascii_lowercase();
            let expr = if base.starts_with("bit") {
                format!("CAST(CONV(SUBSTRING({v}, 3), 16, 10) AS UNSIGNED)")
            } else {
                format!("UNHEX(SUBSTRING({v}, 3))")
            };
            sets.push(format!("{} = {expr}", my_ident(&c.name)));
            list.push(v);
        } else {
            list.push(my_ident(&c.name));
        }
    }
    // The line terminator is a real newline inside the quotes: `'\n'` would mean a
    // backslash and an `n` under NO_BACKSLASH_ESCAPES.
    let mut s = format!(
        "LOAD DATA LOCAL INFILE 'blobpipe-chunk' INTO TABLE {target} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY ',' ENCLOSED BY '\"' ESCAPED BY '' LINES TERMINATED BY '\n' ({})",
        list.join(", ")
    );
    if !sets.is_empty() {
        s.push_str(&format!(" SET {}", sets.join(", ")));
    }
    s
}

/// A stored CSV chunk (see [`crate::db::csv`]) as `LOAD DATA` input: the header line
/// dropped, every NULL (an unquoted empty field) written as the bare word `NULL`,
/// `\r\n` line ends made `\n`, quoted fields passed through as they are. Returns the
/// bytes and the number of rows.
///
/// # Errors
/// `Integrity` when a row has another number of fields than `ncols`, or the chunk ends
/// inside a quoted field.
pub(crate) fn infile_body(data: &[u8], ncols: usize, what: &str) -> Result<(Vec<u8>, u64)> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    let mut rows = 0u64;
    let mut i = 0;
    // Skip the header line (it is quoted like every value).
    let mut header = true;
    while i < data.len() {
        let line_start = out.len();
        let mut fields = 0usize;
        loop {
            // At the start of a field.
            fields += 1;
            match data.get(i) {
                Some(b'"') => {
                    let from = i;
                    i += 1;
                    loop {
                        match data[i..].iter().position(|&b| b == b'"') {
                            None => {
                                return Err(Error::integrity(format!(
                                    "{what}: the chunk ends inside a quoted field"
                                )))
                            }
                            Some(q) => {
                                i += q + 1;
                                if data.get(i) == Some(&b'"') {
                                    i += 1;
                                } else {
                                    break;
                                }
                            }
                        }
                    }
                    out.extend_from_slice(&data[from..i]);
                }
                Some(b',') | Some(b'\n') | Some(b'\r') | None => out.extend_from_slice(b"NULL"),
                Some(_) => {
                    let from = i;
                    while i < data.len() && !matches!(data[i], b',' | b'\n' | b'\r') {
                        i += 1;
                    }
                    out.extend_from_slice(&data[from..i]);
                }
            }
            match data.get(i) {
                Some(b',') => {
                    out.push(b',');
                    i += 1;
                }
                Some(b'\r') if data.get(i + 1) == Some(&b'\n') => {
                    i += 2;
                    break;
                }
                Some(b'\n') | Some(b'\r') => {
                    i += 1;
                    break;
                }
                None => break,
                Some(_) => {
                    return Err(Error::integrity(format!(
                        "{what}: text after a closing quote"
                    )))
                }
            }
        }
        if header {
            header = false;
            out.truncate(line_start);
            continue;
        }
        if fields != ncols {
            return Err(Error::integrity(format!(
                "{what}: a row has {fields} fields, the table {ncols} columns"
            )));
        }
        out.push(b'\n');
        rows += 1;
    }
    Ok((out, rows))
}

fn fq(p: &Planned<'_>) -> String {
    format!("{}.{}", my_ident(&p.schema), my_ident(&p.rec.name))
}

#[async_trait::async_trait]
impl Loader for MyLoader {
    fn parallel_loads(&self) -> bool {
        true
    }

    async fn another(&mut self) -> Result<Option<Box<dyn Loader>>> {
        // Same target, same way of loading: what the first connection found out about
        // local_infile and max_allowed_packet holds for the server, not the session.
        let c = connect(&self.url, None).await?;
        Ok(Some(Box::new(MyLoader {
            c,
            url: self.url.clone(),
            method: self.method,
            forced: self.forced,
            insert_bytes: self.insert_bytes,
        })))
    }

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
        let (mut loaded, mut added) = (0u64, 0u64);
        for chunk in &p.rec.chunks {
            let (data, f) = chunks
                .recv()
                .await
                .ok_or_else(|| Error::internal("chunk reader stopped"))??;
            *fetched += f;
            let what = chunk.display().to_string();
            // skip-existing needs the per-row duplicate handling of INSERT … ON DUPLICATE
            // KEY UPDATE; LOAD DATA LOCAL would skip duplicates *and* turn data errors
            // into warnings with one switch.
            if self.method == Method::Infile && p.strategy != Strategy::SkipExisting {
                let (body, rows) = infile_body(&data, p.rec.columns.len(), &what)?;
                if rows == 0 {
                    continue;
                }
                match self.load_infile(p, body, rows).await {
                    Ok(n) => {
                        loaded += rows;
                        added += n;
                        continue;
                    }
                    Err(Refusal::NotAllowed(e)) if self.forced.is_none() => {
                        // Refused before reading a byte: nothing of this chunk is in.
                        tracing::warn!(
                            "LOAD DATA LOCAL INFILE refused by the server ({e}): loading with \
                             multi-row INSERTs instead"
                        );
                        self.method = Method::Insert;
                    }
                    Err(Refusal::NotAllowed(e)) | Err(Refusal::Failed(e)) => return Err(e),
                }
            }
            let (l, a) = self.insert_chunk(p, &data, &what).await?;
            loaded += l;
            added += a;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::mysql::csv_row;

    fn col(name: &str, ty: &str) -> Column {
        Column {
            name: name.into(),
            ty: ty.into(),
            nullable: true,
        }
    }

    #[test]
    fn infile_body_drops_the_header_and_spells_null() {
        let mut csv = crate::db::csv::csv_header(&[col("a", "text"), col("b", "int")]).to_vec();
        for r in [
            vec![Value::Bytes(b"x,\"y\"\r\nz".to_vec()), Value::NULL],
            vec![Value::Bytes(vec![]), Value::Bytes(b"NULL".to_vec())],
            vec![Value::NULL, Value::NULL],
        ] {
            csv.extend_from_slice(&csv_row(r, &[false, false]));
        }
        let (body, rows) = infile_body(&csv, 2, "c").unwrap();
        assert_eq!(rows, 3);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "\"x,\"\"y\"\"\r\nz\",NULL\n\"\",\"NULL\"\nNULL,NULL\n"
        );
        // CRLF line ends and a missing final newline; one-column NULL rows.
        let (body, rows) = infile_body(b"\"h\"\r\n\"1\"\r\n\n\"3\"", 1, "c").unwrap();
        assert_eq!((body.as_slice(), rows), (&b"\"1\"\nNULL\n\"3\"\n"[..], 3));
        assert_eq!(infile_body(b"\"h\"\n", 1, "c").unwrap().1, 0);
    }

    #[test]
    fn infile_body_refuses_what_it_cannot_load() {
        let e = infile_body(b"\"a\",\"b\"\n\"1\"\n", 2, "t/0001.csv").unwrap_err();
        assert!(
            e.to_string().contains("a row has 1 fields, the table 2"),
            "{e}"
        );
        let e = infile_body(b"\"a\"\n\"open\n", 1, "c").unwrap_err();
        assert!(e.to_string().contains("inside a quoted field"), "{e}");
        let e = infile_body(b"\"a\"\n\"x\"y\n", 1, "c").unwrap_err();
        assert!(e.to_string().contains("after a closing quote"), "{e}");
    }

    #[test]
    fn infile_statement_decodes_binary_and_bit_columns() {
        let s = infile_statement(
            "`d`.`t`",
            &[col("id", "int"), col("b", "longblob"), col("f", "bit(5)")],
        );
        assert!(s.starts_with("LOAD DATA LOCAL INFILE"), "{s}");
        assert!(
            s.contains("ESCAPED BY '' LINES TERMINATED BY '\n' (`id`, @v1, @v2)"),
            "{s}"
        );
        assert!(s.ends_with(
            " SET `b` = UNHEX(SUBSTRING(@v1, 3)), `f` = CAST(CONV(SUBSTRING(@v2, 3), 16, 10) AS UNSIGNED)"
        ), "{s}");
        assert_eq!(insert_bytes(16 << 20), 4 << 20);
        assert_eq!(insert_bytes(1 << 20), 512 << 10);
        assert_eq!(insert_bytes(1024), 64 << 10);
    }
}
