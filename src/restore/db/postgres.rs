//! The PostgreSQL [`Loader`]: `COPY … FROM STDIN` per chunk, `TRUNCATE` without
//! `CASCADE` (a table outside the restore that references one makes the restore fail
//! rather than silently emptying it), `skip-existing` through a temporary table and
//! `ON CONFLICT DO NOTHING`, and sequences behind serial and identity columns moved past
//! the largest restored key.
//!
//! Parallel loads open more connections the same way ([`Loader::another`]).
//! `--fk-check bulk` sets `session_replication_role = replica` for the transaction
//! (`SET LOCAL`: the setting ends with it), which stops the foreign-key triggers (and
//! every other trigger and rule not marked `ENABLE ALWAYS`/`REPLICA`), then checks each
//! foreign key of a restored table with one anti-join over the rows this transaction
//! inserted (`xmin` = its transaction id), the set-based form of the trigger's check.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio_postgres::Client;

use crate::db::postgres::{connect, pg_err, table_shape, SESSION_SETTINGS};
use crate::db::sql::{pg_ident, pg_literal, pg_select_list};
use crate::error::{Error, Result};
use crate::manifest::{Column, RowsetDigest};
use crate::restore::config::Strategy;
use crate::restore::db::{env_password, DbRestoreOptions, Loader, Planned, Tx};
use crate::support::secret::Secret;

/// A PostgreSQL target, its session set up as the backup's (so CSV text is canonical).
pub(crate) struct PgLoader {
    c: Client,
    url: Secret,
    password: Option<Secret>,
}

impl PgLoader {
    /// Connect to `opts.url` (password from `PGPASSWORD` when the URL has none).
    ///
    /// # Errors
    /// As [`connect`]; `Source` when the session settings fail.
    pub(crate) async fn connect(opts: &DbRestoreOptions) -> Result<PgLoader> {
        PgLoader::open(opts.url.clone(), env_password(&opts.url, "PGPASSWORD")).await
    }

    async fn open(url: Secret, password: Option<Secret>) -> Result<PgLoader> {
        let c = connect(&url, password.as_ref()).await?;
        c.batch_execute(SESSION_SETTINGS)
            .await
            .map_err(|e| pg_err("session settings", e))?;
        Ok(PgLoader { c, url, password })
    }
}

fn fq(p: &Planned<'_>) -> String {
    format!("{}.{}", pg_ident(&p.schema), pg_ident(&p.rec.name))
}

fn staging(i: usize) -> String {
    format!("blobpipe_restore_{i}")
}

#[async_trait::async_trait]
impl Loader for PgLoader {
    async fn table_shape(
        &mut self,
        schema: &str,
        name: &str,
    ) -> Result<Option<(Vec<Column>, Vec<String>)>> {
        table_shape(&self.c, schema, name).await
    }

    fn same_type(&self, target: &str, stored: &str) -> bool {
        target == stored
    }

    async fn required_columns(&mut self, p: &Planned<'_>) -> Result<Vec<String>> {
        Ok(self
            .c
            .query(
                "SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
                   AND a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''",
                &[&p.schema, &p.rec.name],
            )
            .await
            .map_err(|e| pg_err(format!("reading {}", p.key()), e))?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect())
    }

    async fn has_unique_index(&mut self, p: &Planned<'_>) -> Result<bool> {
        Ok(self
            .c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique)",
                &[&p.schema, &p.rec.name],
            )
            .await
            .map_err(|e| pg_err(format!("reading keys of {}", p.key()), e))?
            .get(0))
    }

    async fn count(&mut self, p: &Planned<'_>) -> Result<u64> {
        let n: i64 = self
            .c
            .query_one(&format!("SELECT count(*) FROM {}", fq(p)), &[])
            .await
            .map_err(|e| pg_err(format!("counting {}", p.key()), e))?
            .get(0);
        Ok(n as u64)
    }

    async fn foreign_keys(&mut self) -> Result<Vec<(String, String)>> {
        Ok(self
            .c
            .query(
                "SELECT cn.nspname || '.' || cc.relname, pn.nspname || '.' || pc.relname \
                 FROM pg_constraint k \
                 JOIN pg_class cc ON cc.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace \
                 JOIN pg_class pc ON pc.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
                 WHERE k.contype = 'f'",
                &[],
            )
            .await
            .map_err(|e| pg_err("reading foreign keys", e))?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect())
    }

    fn truncate_refuses_referenced(&self) -> bool {
        true
    }

    async fn tx(&mut self, what: Tx) -> Result<()> {
        let sql = match what {
            Tx::Begin => "BEGIN",
            Tx::Commit => "COMMIT",
            Tx::Rollback => "ROLLBACK",
        };
        self.c.batch_execute(sql).await.map_err(|e| pg_err(sql, e))
    }

    async fn empty(&mut self, tables: &[&Planned<'_>]) -> Result<()> {
        let names: Vec<String> = tables.iter().map(|p| fq(p)).collect();
        self.c
            .batch_execute(&format!("TRUNCATE {}", names.join(", ")))
            .await
            .map_err(|e| pg_err("TRUNCATE", e))
    }

    async fn load_rows(
        &mut self,
        i: usize,
        p: &Planned<'_>,
        chunks: &mut tokio::sync::mpsc::Receiver<Result<(Bytes, u64)>>,
        fetched: &mut u64,
    ) -> Result<(u64, u64)> {
        let (c, k, target) = (&self.c, p.key(), fq(p));
        let cols = pg_select_list(&p.rec.columns);
        let into = if p.strategy == Strategy::SkipExisting {
            let tmp = staging(i);
            c.batch_execute(&format!(
                "DROP TABLE IF EXISTS pg_temp.{tmp}; CREATE TEMP TABLE {tmp} AS SELECT {cols} FROM {target} WITH NO DATA"
            ))
            .await
            .map_err(|e| pg_err(format!("staging table for {k}"), e))?;
            tmp
        } else {
            target
        };
        let copy = format!("COPY {into} ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true)");
        let mut loaded = 0u64;
        for chunk in &p.rec.chunks {
            let (data, f) = chunks
                .recv()
                .await
                .ok_or_else(|| Error::internal("chunk reader stopped"))??;
            *fetched += f;
            let sink = c
                .copy_in::<_, Bytes>(&copy)
                .await
                .map_err(|e| pg_err(format!("COPY into {k}"), e))?;
            futures::pin_mut!(sink);
            sink.send(data)
                .await
                .map_err(|e| pg_err(format!("COPY into {k}"), e))?;
            loaded += sink
                .finish()
                .await
                .map_err(|e| pg_err(format!("COPY into {k} ({})", chunk.display()), e))?;
        }
        Ok((loaded, loaded))
    }

    async fn settle(&mut self, i: usize, p: &Planned<'_>, added: u64) -> Result<u64> {
        let (c, k, target) = (&self.c, p.key(), fq(p));
        let cols = pg_select_list(&p.rec.columns);
        let added = if p.strategy == Strategy::SkipExisting {
            let tmp = staging(i);
            let n = c
                .execute(
                    &format!(
                        "INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {tmp} ON CONFLICT DO NOTHING"
                    ),
                    &[],
                )
                .await
                .map_err(|e| pg_err(format!("inserting new rows into {k}"), e))?;
            c.batch_execute(&format!("DROP TABLE pg_temp.{tmp}"))
                .await
                .map_err(|e| pg_err("dropping the staging table", e))?;
            n
        } else {
            added
        };
        // Sequences behind serial/identity columns move past the restored keys (one
        // catalog query for the table, not one per column).
        let seqs = c
            .query(
                "SELECT a.attname::text, pg_get_serial_sequence($1, a.attname::text) \
                 FROM pg_attribute a WHERE a.attrelid = $1::text::regclass \
                   AND a.attnum > 0 AND NOT a.attisdropped",
                &[&target],
            )
            .await
            .map_err(|e| pg_err(format!("sequences of {k}"), e))?;
        for row in seqs {
            let (name, seq): (String, Option<String>) = (row.get(0), row.get(1));
            if !p.rec.columns.iter().any(|col| col.name == name) {
                continue;
            }
            if let Some(seq) = seq {
                let cn = pg_ident(&name);
                c.batch_execute(&format!(
                    "SELECT setval({}, GREATEST(COALESCE((SELECT max({cn}) FROM {target}), 0), 1), (SELECT max({cn}) FROM {target}) IS NOT NULL)",
                    pg_literal(&seq)
                ))
                .await
                .map_err(|e| pg_err(format!("advancing {seq}"), e))?;
            }
        }
        Ok(added)
    }

    async fn rowset(&mut self, p: &Planned<'_>) -> Result<RowsetDigest> {
        Ok(pg_rowset_counted(&self.c, &fq(p), &p.rec.columns).await?.0)
    }

    async fn rowset_and_count(&mut self, p: &Planned<'_>) -> Result<(RowsetDigest, u64)> {
        pg_rowset_counted(&self.c, &fq(p), &p.rec.columns).await
    }

    async fn close(self: Box<Self>) {}

    fn parallel_loads(&self) -> bool {
        true
    }

    async fn another(&mut self) -> Result<Option<Box<dyn Loader>>> {
        Ok(Some(Box::new(
            PgLoader::open(self.url.clone(), self.password.clone()).await?,
        )))
    }

    async fn before_commit(&mut self) -> Result<()> {
        self.c
            .batch_execute("SET CONSTRAINTS ALL IMMEDIATE")
            .await
            .map_err(|e| pg_err("checking deferred constraints before commit", e))
    }

    async fn fk_checks_off(&mut self) -> Result<()> {
        self.c
            .batch_execute("SET LOCAL session_replication_role = replica")
            .await
            .map_err(|e| {
                let text = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string());
                Error::refused(format!(
                    "this role may not set session_replication_role ({text})"
                ))
            })
    }

    async fn validate_foreign_keys(&mut self, p: &Planned<'_>) -> Result<()> {
        validate_fks(&self.c, p).await
    }
}

/// Check every foreign key of `p`'s table over the rows this transaction inserted: one
/// anti-join per key, `MATCH SIMPLE` (a row with a NULL key column is not checked) or
/// `MATCH FULL` (all or none NULL) as the constraint says. Rows that were there before
/// were checked when they were written.
///
/// # Errors
/// `Destination`-bound server errors; a violation, as PostgreSQL words its own
/// (`violates foreign key constraint`, with the key in `DETAIL`).
async fn validate_fks(c: &Client, p: &Planned<'_>) -> Result<()> {
    let target = fq(p);
    let keys = c
        .query(
            "SELECT k.conname::text, quote_ident(pn.nspname) || '.' || quote_ident(pc.relname), \
                    pc.relname::text, k.confmatchtype::text, \
                    ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, o) \
                          JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.o), \
                    ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, o) \
                          JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.o) \
             FROM pg_constraint k JOIN pg_class pc ON pc.oid = k.confrelid \
             JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
             WHERE k.contype = 'f' AND k.conrelid = $1::text::regclass ORDER BY k.conname",
            &[&target],
        )
        .await
        .map_err(|e| pg_err(format!("reading the foreign keys of {}", p.key()), e))?;
    if keys.is_empty() {
        return Ok(());
    }
    // This transaction's id as `xmin` holds it (32 bits, no epoch).
    let xid: String = c
        .query_one(
            "SELECT (pg_current_xact_id()::text::numeric % 4294967296)::text",
            &[],
        )
        .await
        .map_err(|e| pg_err("reading the transaction id", e))?
        .get(0);
    for k in keys {
        let (name, parent, parent_name, matchtype): (String, String, String, String) =
            (k.get(0), k.get(1), k.get(2), k.get(3));
        let (cols, pcols): (Vec<String>, Vec<String>) = (k.get(4), k.get(5));
        let on: Vec<String> = cols
            .iter()
            .zip(&pcols)
            .map(|(c, pc)| format!("p.{} = c.{}", pg_ident(pc), pg_ident(c)))
            .collect();
        let not_null: Vec<String> = cols
            .iter()
            .map(|c| format!("c.{} IS NOT NULL", pg_ident(c)))
            .collect();
        let shown: Vec<String> = cols
            .iter()
            .map(|c| format!("c.{}::text", pg_ident(c)))
            .collect();
        let listed: Vec<String> = cols.iter().map(|c| pg_ident(c)).collect();
        let mut bad = format!(
            "({}) AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {})",
            not_null.join(" AND "),
            on.join(" AND ")
        );
        if matchtype == "f" && cols.len() > 1 {
            bad = format!(
                "({bad}) OR num_nonnulls({}) NOT IN (0, {})",
                listed
                    .iter()
                    .map(|c| format!("c.{c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                cols.len()
            );
        }
        let q = format!(
            "SELECT {} FROM {target} c WHERE c.xmin = {}::xid AND ({bad}) LIMIT 1",
            shown.join(", "),
            pg_literal(&xid)
        );
        let hit = c
            .query_opt(&q, &[])
            .await
            .map_err(|e| pg_err(format!("checking foreign key {name} of {}", p.key()), e))?;
        if let Some(row) = hit {
            let vals: Vec<String> = (0..cols.len())
                .map(|i| {
                    row.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "null".into())
                })
                .collect();
            return Err(Error::new(
                crate::error::ErrorKind::Destination,
                format!(
                    "--fk-check bulk: {}: a restored row violates foreign key constraint {name:?}\n  \
                     DETAIL: Key ({})=({}) is not present in table {parent_name:?}",
                    p.key(),
                    cols.join(", "),
                    vals.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The row-set digest of a table as it is now (same CSV settings as the backup).
///
/// # Errors
/// Database errors.
pub async fn pg_rowset(c: &Client, fq: &str, cols: &[Column]) -> Result<RowsetDigest> {
    Ok(pg_rowset_counted(c, fq, cols).await?.0)
}

/// [`pg_rowset`] and the number of rows read.
///
/// # Errors
/// Database errors.
pub async fn pg_rowset_counted(
    c: &Client,
    fq: &str,
    cols: &[Column],
) -> Result<(RowsetDigest, u64)> {
    let q = format!(
        "COPY (SELECT {} FROM {fq}) TO STDOUT WITH (FORMAT csv)",
        pg_select_list(cols)
    );
    let stream = c
        .copy_out(&q)
        .await
        .map_err(|e| pg_err(format!("re-reading {fq}"), e))?;
    futures::pin_mut!(stream);
    let (mut d, mut n) = (RowsetDigest::default(), 0u64);
    while let Some(row) = stream.next().await {
        d.add_row(&row.map_err(|e| pg_err(format!("re-reading {fq}"), e))?);
        n += 1;
    }
    Ok((d, n))
}
