//! PostgreSQL source and `restore --to-db` against the real server.
//!
//! Every test works in its own schemas (unique names) and drops them at the end, so
//! tests run in parallel. Skipped with a notice when PostgreSQL is unreachable, failed
//! when `BLOBPIPE_REQUIRE_SERVICES=1`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use blobpipe::manifest::records::RunStatus;
use blobpipe::manifest::Manifest;
use blobpipe::pipeline::{BackupOptions, Pipeline};
use blobpipe::restore::config::{FkCheck, Strategy};
use blobpipe::restore::db::{restore_db, restore_db_with, DbRestoreOptions, LoadOptions};
use blobpipe::store::Store;
use blobpipe::support::secret::Secret;
use blobpipe::ErrorKind;
use tokio_postgres::{Client, NoTls};

async fn client(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

/// Drops the schemas when the test ends (also on panic).
struct Schemas {
    url: String,
    names: Vec<String>,
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let names = self.names.clone();
        let url = self.url.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let c = client(&url).await;
                for n in names {
                    let _ = c
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {n} CASCADE"))
                        .await;
                }
            });
        })
        .join()
        .unwrap();
    }
}

async fn schemas(url: &str, tags: &[&str]) -> (Client, Schemas) {
    let c = client(url).await;
    let names: Vec<String> = tags.iter().map(|t| support::unique_ident(t)).collect();
    for n in &names {
        c.batch_execute(&format!("CREATE SCHEMA {n}"))
            .await
            .unwrap();
    }
    (
        c,
        Schemas {
            url: url.to_string(),
            names,
        },
    )
}

fn pipeline(dir: &Path, url: &str, schema: &str, extra_source: &str) -> Pipeline {
    let text = format!(
        "name = \"pgtest\"\n[source]\ntype = \"postgres\"\nurl = \"{url}\"\nschemas = [\"{schema}\"]\n{extra_source}\n\
         [target]\nurl = \"memory://{}\"\n[verify]\nmode = \"full\"\n",
        support::unique_ident("mem")
    );
    let p = dir.join("pg.toml");
    std::fs::write(&p, text).unwrap();
    Pipeline::load(&p).unwrap()
}

async fn backup(p: &Pipeline) -> (Store, Manifest) {
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let r = blobpipe::pipeline::backup(p, store.clone(), BackupOptions::default())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    let m = blobpipe::manifest::catalog::load(&*store, &layout, r.snapshot.as_ref().unwrap())
        .await
        .unwrap();
    (store, m)
}

fn opts(url: &str, schema: &str, strategy: Strategy) -> DbRestoreOptions {
    DbRestoreOptions {
        url: Secret::new(url),
        tables: vec![],
        strategy,
        strategies: BTreeMap::new(),
        no_transaction: false,
        target_schema: Some(schema.to_string()),
    }
}

async fn restore(
    p: &Pipeline,
    store: &Store,
    m: &Manifest,
    o: &DbRestoreOptions,
) -> blobpipe::Result<blobpipe::restore::db::DbRestoreReport> {
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    restore_db(store, &layout, m, o).await
}

/// A text fingerprint of a table's content (works for json, which has no `=`).
async fn fingerprint(c: &Client, table: &str, order: &str) -> (i64, String) {
    let r = c
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY {order})), '') FROM {table} t"
            ),
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

const TYPES_DDL: &str = "CREATE TABLE {s}.types (
    id bigint PRIMARY KEY,
    n numeric(20,6), t text, b bytea, j json, jb jsonb, arr int[], tarr text[],
    ts timestamptz, d date, f float8, ok boolean, u uuid, iv interval)";
const BIG_DDL: &str = "CREATE TABLE {s}.big (id int PRIMARY KEY, payload text NOT NULL)";
const NOPK_DDL: &str = "CREATE TABLE {s}.nopk (x text, y int)";

/// Table `schema.big` (BIG_DDL) with `rows` rows whose payload is `payload` (SQL over the
/// row number `g`), analyzed.
async fn big_table(c: &Client, schema: &str, payload: &str, rows: u32) {
    c.batch_execute(&format!(
        "{}; INSERT INTO {schema}.big SELECT g, {payload} FROM generate_series(1, {rows}) g; ANALYZE {schema}.big;",
        ddl(BIG_DDL, schema)
    ))
    .await
    .unwrap();
}

fn ddl(t: &str, s: &str) -> String {
    t.replace("{s}", s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_of_common_types_and_key_range_split() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["src", "dst"]).await;
    let (src, dst) = (&g.names[0], &g.names[1]);
    for s in [src, dst] {
        for t in [TYPES_DDL, BIG_DDL, NOPK_DDL] {
            c.batch_execute(&ddl(t, s)).await.unwrap();
        }
    }
    c.batch_execute(&format!(
        r#"INSERT INTO {src}.types VALUES
        (1, 12345678.123456, E'line1\nline2, "quoted" \\ back\r\nend', '\x00ff10'::bytea,
         '{{"a": [1, "x\n"]}}', '{{"k": {{"n": null}}}}', '{{1,2,NULL}}', ARRAY['a,b', 'c"d', NULL, ''],
         '2024-02-29 23:59:59.123456+05:30', '2000-01-01', 1.0e-300, true,
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day 02:03:04'),
        (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (3, -0.5, '', ''::bytea, '[]', '[]', '{{}}', '{{}}', '-infinity', 'infinity', 'NaN', false,
         NULL, '-1 mon'),
        (4, 0, 'ünïcødé ✓ 😀', decode(repeat('ab', 5000), 'hex'), 'null', '"s"', '{{-1}}',
         '{{"\\\\"}}', '1970-01-01 00:00:00+00', '1999-12-31', 3.141592653589793, NULL, NULL, NULL);
        INSERT INTO {src}.big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 5000) g;
        INSERT INTO {src}.nopk VALUES ('dup', 1), ('dup', 1), (NULL, NULL), ('', 0);
        ANALYZE {src}.big;"#
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        &url,
        src,
        "split_rows = 1000\nchunk_size = \"64KiB\"",
    );
    let (store, m) = backup(&p).await;

    // Manifest: per-table columns, counts, checksums and ordered chunks.
    assert_eq!(m.tables.len(), 3, "{:?}", m.tables);
    let big = m.tables.iter().find(|t| t.name == "big").unwrap();
    assert_eq!(big.rows, 5000);
    assert_eq!(big.primary_key, vec!["id".to_string()]);
    assert!(big.checksum.starts_with("rowset-sha256:"));
    let ranges: std::collections::BTreeSet<String> = big
        .chunks
        .iter()
        .map(|c| c.display().split('/').nth(2).unwrap()[..4].to_string())
        .collect();
    assert!(
        ranges.len() >= 4,
        "big table split by key range: {ranges:?}"
    );
    assert!(
        big.chunks.len() > ranges.len(),
        "ranges cut into 64 KiB chunks"
    );
    let mut sorted = big.chunks.clone();
    sorted.sort();
    assert_eq!(sorted, big.chunks, "chunks listed in key order");
    let types = m.tables.iter().find(|t| t.name == "types").unwrap();
    assert_eq!(types.rows, 4);
    let col = |n: &str| {
        types
            .columns
            .iter()
            .find(|c| c.name == n)
            .unwrap()
            .ty
            .clone()
    };
    assert_eq!(col("n"), "numeric(20,6)");
    assert_eq!(col("arr"), "integer[]");
    assert_eq!(col("ts"), "timestamp with time zone");
    assert_eq!(m.tables.iter().find(|t| t.name == "nopk").unwrap().rows, 4);
    // Every chunk is a standalone CSV file with the header line.
    let first = m.entries.iter().find(|e| e.path == big.chunks[1]).unwrap();
    assert!(first.size > 0);

    // Restore into the empty copy of the schema; contents equal.
    let r = restore(&p, &store, &m, &opts(&url, dst, Strategy::FailIfNotEmpty))
        .await
        .unwrap();
    assert_eq!(r.tables.len(), 3);
    assert!(r.tables.iter().all(|t| t.checksum_checked));
    for (t, order) in [("types", "id"), ("big", "id"), ("nopk", "t::text")] {
        assert_eq!(
            fingerprint(&c, &format!("{src}.{t}"), order).await,
            fingerprint(&c, &format!("{dst}.{t}"), order).await,
            "{t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writer_transactions_are_all_in_or_all_out() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["cons", "consdst"]).await;
    let (src, dst) = (g.names[0].clone(), g.names[1].clone());
    for s in [&src, &dst] {
        c.batch_execute(&format!(
            "CREATE TABLE {s}.a1 (id int PRIMARY KEY, v text); CREATE TABLE {s}.a2 (id int PRIMARY KEY, v text)"
        ))
        .await
        .unwrap();
    }
    c.batch_execute(&format!(
        "INSERT INTO {src}.a1 SELECT 2 * g, repeat('x', 200) FROM generate_series(1, 20000) g;
         INSERT INTO {src}.a2 SELECT 2 * g, repeat('y', 200) FROM generate_series(1, 20000) g;
         ANALYZE {src}.a1; ANALYZE {src}.a2;"
    ))
    .await
    .unwrap();
    // The writer: each transaction inserts one odd id (inside the key ranges the plan
    // reads) into both tables. Without a shared snapshot the ranges read later would see
    // more of its transactions than those read earlier.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, src, stop) = (url.clone(), src.clone(), stop.clone());
        tokio::spawn(async move {
            let w = client(&url).await;
            let mut id = -1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && id < 39_000 {
                id += 2;
                w.batch_execute(&format!(
                    "BEGIN; INSERT INTO {src}.a2 VALUES ({id}, 'w'); INSERT INTO {src}.a1 VALUES ({id}, 'w'); COMMIT;"
                ))
                .await
                .unwrap();
            }
            (id + 1) / 2
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        &url,
        &src,
        "split_rows = 1000\nchunk_size = \"64KiB\"\n[partitions]\nmax_parallel = 2",
    );
    let (store, m) = backup(&p).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0, "the writer ran during the backup");
    let a1 = m.tables.iter().find(|t| t.name == "a1").unwrap();
    let a2 = m.tables.iter().find(|t| t.name == "a2").unwrap();
    assert_eq!(a1.rows, a2.rows, "same writer transactions in both tables");
    restore(&p, &store, &m, &opts(&url, &dst, Strategy::FailIfNotEmpty))
        .await
        .unwrap();
    let only_one: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM (SELECT id FROM {dst}.a1 EXCEPT SELECT id FROM {dst}.a2) x"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(only_one, 0);
}

const FK_DDL: &str = "
    CREATE TABLE {s}.parent (id serial PRIMARY KEY, name text UNIQUE NOT NULL);
    CREATE TABLE {s}.child (id serial PRIMARY KEY, parent_id int NOT NULL REFERENCES {s}.parent(id), v text);
    CREATE TABLE {s}.grandchild (id int PRIMARY KEY, child_id int REFERENCES {s}.child(id), note text);
    CREATE TABLE {s}.other (k text PRIMARY KEY, v int);";

async fn fk_fixture(c: &Client, src: &str, dst: &str) {
    for s in [src, dst] {
        c.batch_execute(&ddl(FK_DDL, s)).await.unwrap();
    }
    c.batch_execute(&format!(
        "INSERT INTO {src}.parent (name) SELECT 'p' || g FROM generate_series(1, 50) g;
         INSERT INTO {src}.child (parent_id, v) SELECT 1 + g % 50, 'c' || g FROM generate_series(1, 300) g;
         INSERT INTO {src}.grandchild SELECT g, 1 + g % 300, NULL FROM generate_series(1, 600) g;
         INSERT INTO {src}.other VALUES ('a', 1), ('b', 2), ('c', 3);"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fk_ordered_restore_into_empty_schema_and_sequences_advance() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["fk", "fkdst"]).await;
    let (src, dst) = (&g.names[0], &g.names[1]);
    fk_fixture(&c, src, dst).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &url, src, "");
    let (store, m) = backup(&p).await;
    // Snapshot order is alphabetical (child before parent): the FK order must fix it.
    let r = restore(&p, &store, &m, &opts(&url, dst, Strategy::FailIfNotEmpty))
        .await
        .unwrap();
    let order: Vec<&str> = r.tables.iter().map(|t| t.table.as_str()).collect();
    let pos = |n: &str| order.iter().position(|t| t.ends_with(n)).unwrap();
    assert!(pos(".parent") < pos(".child"), "{order:?}");
    assert!(pos(".child") < pos(".grandchild"), "{order:?}");
    for t in ["parent", "child", "grandchild", "other"] {
        assert_eq!(
            fingerprint(&c, &format!("{src}.{t}"), "1").await.0,
            fingerprint(&c, &format!("{dst}.{t}"), "1").await.0
        );
    }
    // The serial sequence moved past the restored ids: a new row does not collide.
    let id: i32 = c
        .query_one(
            &format!("INSERT INTO {dst}.parent (name) VALUES ('new') RETURNING id"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_strategies() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["st", "stdst"]).await;
    let (src, dst) = (&g.names[0], &g.names[1]);
    fk_fixture(&c, src, dst).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &url, src, "");
    let (store, m) = backup(&p).await;
    let only = |tables: &[&str], s: Strategy| {
        let mut o = opts(&url, dst, s);
        o.tables = tables.iter().map(|t| t.to_string()).collect();
        o
    };
    let count = |t: &'static str| {
        let c = &c;
        let dst = dst.clone();
        async move {
            c.query_one(&format!("SELECT count(*) FROM {dst}.{t}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    c.batch_execute(&format!(
        "INSERT INTO {dst}.other VALUES ('a', 100), ('z', 26)"
    ))
    .await
    .unwrap();

    // fail-if-not-empty: refused before anything is written (parent stays empty too).
    let e = restore(
        &p,
        &store,
        &m,
        &only(&["other", "parent"], Strategy::FailIfNotEmpty),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("fail-if-not-empty"), "{e}");
    assert_eq!(count("parent").await, 0);

    // skip-existing: keeps ('a', 100), adds b and c, keeps z.
    let r = restore(&p, &store, &m, &only(&["other"], Strategy::SkipExisting))
        .await
        .unwrap();
    assert_eq!(r.tables[0].rows_added, 2);
    let a: i32 = c
        .query_one(&format!("SELECT v FROM {dst}.other WHERE k = 'a'"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(a, 100);
    assert_eq!(count("other").await, 4);

    // append: duplicate keys fail and roll back the whole restore.
    let e = restore(
        &p,
        &store,
        &m,
        &only(&["parent", "other"], Strategy::Append),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Destination, "{e}");
    assert!(e.to_string().contains("rolled back"), "{e}");
    assert_eq!(count("parent").await, 0, "parent load rolled back");
    assert_eq!(count("other").await, 4);

    // truncate: exactly the snapshot afterwards, checksum checked.
    let r = restore(&p, &store, &m, &only(&["other"], Strategy::Truncate))
        .await
        .unwrap();
    assert!(r.tables[0].checksum_checked);
    assert_eq!(count("other").await, 3);

    // append into an empty table works; per-table override via strategies map.
    let mut o = only(&["parent", "child"], Strategy::FailIfNotEmpty);
    o.strategies.insert("parent".into(), Strategy::Append);
    restore(&p, &store, &m, &o).await.unwrap();
    assert_eq!(count("parent").await, 50);
    assert_eq!(count("child").await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_mismatch_is_refused_with_nothing_written() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["mm", "mmdst"]).await;
    let (src, dst) = (&g.names[0], &g.names[1]);
    fk_fixture(&c, src, dst).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &url, src, "");
    let (store, m) = backup(&p).await;
    c.batch_execute(&format!(
        "ALTER TABLE {dst}.child DROP COLUMN v;
         ALTER TABLE {dst}.other ALTER COLUMN v TYPE bigint;
         ALTER TABLE {dst}.grandchild ADD COLUMN must int NOT NULL;"
    ))
    .await
    .unwrap();
    let e = restore(&p, &store, &m, &opts(&url, dst, Strategy::FailIfNotEmpty))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("column \"v\" is missing"), "{msg}");
    assert!(msg.contains("is bigint in the target but integer"), "{msg}");
    assert!(
        msg.contains("\"must\" is NOT NULL without a default"),
        "{msg}"
    );
    assert!(msg.contains("nothing was written"), "{msg}");
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {dst}.parent"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    c.batch_execute(&format!("DROP TABLE {dst}.grandchild"))
        .await
        .unwrap();
    let e = restore(&p, &store, &m, &opts(&url, dst, Strategy::FailIfNotEmpty))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_fails_the_run_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "postgres://postgres:s3cr3t-pw@127.0.0.1:1/nope",
        "public",
        "",
    );
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let mut p = p;
    p.retry.attempts = 1;
    let e = blobpipe::pipeline::backup(&p, store.clone(), BackupOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source, "{e}");
    assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    assert!(blobpipe::manifest::catalog::list(&*store, &layout)
        .await
        .unwrap()
        .is_empty());
}

// ---- Parallel loads (--jobs) and the bulk foreign-key check (--fk-check bulk) ----

/// Three groups that no foreign key links: `a_parent ← a_child`, `b_parent ← b_child`,
/// and `c_solo`; a few thousand rows each.
const GROUPS_DDL: &str = "
    CREATE TABLE {s}.a_parent (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE {s}.a_child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES {s}.a_parent(id), v text);
    CREATE TABLE {s}.b_parent (k text PRIMARY KEY, n int);
    CREATE TABLE {s}.b_child (id int PRIMARY KEY, k text REFERENCES {s}.b_parent(k), v text);
    CREATE TABLE {s}.c_solo (id int PRIMARY KEY, v text);";

const GROUP_TABLES: [&str; 5] = ["a_parent", "a_child", "b_parent", "b_child", "c_solo"];

async fn groups_fixture(c: &Client, src: &str, dsts: &[&str]) {
    for s in std::iter::once(&src).chain(dsts) {
        c.batch_execute(&ddl(GROUPS_DDL, s)).await.unwrap();
    }
    c.batch_execute(&format!(
        "INSERT INTO {src}.a_parent SELECT g, 'a' || g FROM generate_series(1, 2000) g;
         INSERT INTO {src}.a_child SELECT g, 1 + g % 2000, md5(g::text) FROM generate_series(1, 6000) g;
         INSERT INTO {src}.b_parent SELECT 'k' || g, g FROM generate_series(1, 1000) g;
         INSERT INTO {src}.b_child SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'k' || (1 + g % 1000) END, 'bad' || (g = 4321)
           FROM generate_series(1, 5000) g;
         INSERT INTO {src}.c_solo SELECT g, repeat('x', g % 50) FROM generate_series(1, 3000) g;"
    ))
    .await
    .unwrap();
}

fn load(jobs: usize, fk_check: FkCheck) -> LoadOptions {
    LoadOptions { jobs, fk_check }
}

async fn restore_with(
    p: &Pipeline,
    store: &Store,
    m: &Manifest,
    o: &DbRestoreOptions,
    l: LoadOptions,
) -> blobpipe::Result<blobpipe::restore::db::DbRestoreReport> {
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    restore_db_with(store, &layout, m, o, &l).await
}

async fn fingerprints(c: &Client, schema: &str) -> Vec<(i64, String)> {
    let mut v = Vec::new();
    for t in GROUP_TABLES {
        v.push(fingerprint(c, &format!("{schema}.{t}"), "1").await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_restore_equals_the_serial_one_and_loads_groups_at_the_same_time() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["par", "serial", "parallel"]).await;
    let (src, d1, d3) = (&g.names[0], &g.names[1], &g.names[2]);
    groups_fixture(&c, src, &[d1, d3]).await;
    // The first table of each group announces itself with an advisory lock (held until
    // its transaction ends, i.e. until the restore commits) and waits, a counted number
    // of polls (at most 12,000 × 10 ms: a loaded CI machine may start the second
    // connection late), until another group's connection has announced itself too; it records
    // how many it saw. A serial load never sees two, so this fails unless groups really
    // load at the same time.
    c.batch_execute(&format!(
        "CREATE TABLE {d3}.probe (tbl text, seen int);
         CREATE FUNCTION {d3}.rendezvous() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE n int := 0; k int := hashtext('{d3}') & 2147483647;
         BEGIN
           IF EXISTS (SELECT 1 FROM {d3}.probe WHERE tbl = TG_TABLE_NAME) THEN RETURN NULL; END IF;
           PERFORM pg_advisory_xact_lock(k, hashtext(TG_TABLE_NAME) & 2147483647);
           FOR i IN 1..12000 LOOP
             SELECT count(*) INTO n FROM pg_locks
              WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = k::oid;
             EXIT WHEN n >= 2;
             PERFORM pg_sleep(0.01);
           END LOOP;
           INSERT INTO {d3}.probe VALUES (TG_TABLE_NAME, n);
           RETURN NULL;
         END $$;
         CREATE TRIGGER r BEFORE INSERT ON {d3}.a_parent FOR EACH STATEMENT EXECUTE FUNCTION {d3}.rendezvous();
         CREATE TRIGGER r BEFORE INSERT ON {d3}.b_parent FOR EACH STATEMENT EXECUTE FUNCTION {d3}.rendezvous();"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &url, src, "chunk_size = \"64KiB\"");
    let (store, m) = backup(&p).await;
    let serial = restore_with(
        &p,
        &store,
        &m,
        &opts(&url, d1, Strategy::FailIfNotEmpty),
        load(1, FkCheck::Immediate),
    )
    .await
    .unwrap();
    assert_eq!(serial.connections, 1);
    assert_eq!(
        serial.max_tables_in_flight, 1,
        "one connection, one table at a time"
    );
    let par = restore_with(
        &p,
        &store,
        &m,
        &opts(&url, d3, Strategy::FailIfNotEmpty),
        load(8, FkCheck::Immediate),
    )
    .await
    .unwrap();
    // Three groups: three connections at most, however many jobs were allowed.
    assert_eq!(par.connections, 3, "{par:?}");
    assert!(par.max_tables_in_flight >= 2, "{par:?}");
    let probes = c
        .query(
            &format!("SELECT tbl, seen FROM {d3}.probe ORDER BY tbl"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        probes.len(),
        2,
        "the probe ran once per group's first table"
    );
    for r in &probes {
        let (t, n): (String, i32) = (r.get(0), r.get(1));
        assert!(
            n >= 2,
            "{t}: saw {n} group(s) loading at once; the groups were loaded one after another"
        );
    }
    // Parents load before children on the same connection; same content as serial.
    let conn = |r: &blobpipe::restore::db::DbRestoreReport, t: &str| {
        r.tables
            .iter()
            .find(|x| x.table.ends_with(&format!(".{t}")))
            .unwrap()
            .connection
    };
    assert_eq!(conn(&par, "a_parent"), conn(&par, "a_child"));
    assert_eq!(conn(&par, "b_parent"), conn(&par, "b_child"));
    let want = fingerprints(&c, src).await;
    assert_eq!(fingerprints(&c, d1).await, want);
    assert_eq!(fingerprints(&c, d3).await, want);
    let rows = |r: &blobpipe::restore::db::DbRestoreReport| {
        let mut v: Vec<(String, u64, u64, bool)> = r
            .tables
            .iter()
            .map(|t| {
                (
                    t.table.rsplit('.').next().unwrap().to_string(),
                    t.rows_stored,
                    t.rows_after,
                    t.checksum_checked,
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(rows(&serial), rows(&par));
    assert!(par.tables.iter().all(|t| t.checksum_checked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_on_one_connection_leaves_the_target_as_it_was() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["parf", "parfdst"]).await;
    let (src, dst) = (&g.names[0], &g.names[1]);
    groups_fixture(&c, src, &[dst]).await;
    // The target holds rows the restore must not lose, and one stored row of b_child
    // breaks a CHECK the target has (the source does not).
    c.batch_execute(&format!(
        "INSERT INTO {dst}.c_solo VALUES (900001, 'keep'), (900002, 'me');
         INSERT INTO {dst}.a_parent VALUES (900001, 'old');
         INSERT INTO {dst}.a_child VALUES (900001, 900001, 'old');
         ALTER TABLE {dst}.b_child ADD CONSTRAINT no_bad CHECK (v <> 'badtrue');"
    ))
    .await
    .unwrap();
    let before = fingerprints(&c, dst).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &url, src, "chunk_size = \"64KiB\"");
    let (store, m) = backup(&p).await;
    let mut o = opts(&url, dst, Strategy::Append);
    o.strategies
        .insert("c_solo".to_string(), Strategy::Truncate);
    for fk in [FkCheck::Immediate, FkCheck::Bulk] {
        let e = restore_with(&p, &store, &m, &o, load(3, fk))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.kind(), ErrorKind::Destination, "{text}");
        assert!(text.contains("no_bad"), "names the constraint: {text}");
        assert!(text.contains("rolled back, nothing was written"), "{text}");
        assert_eq!(
            fingerprints(&c, dst).await,
            before,
            "{fk:?}: all or nothing"
        );
    }
    // No connection of this restore is left behind holding a transaction open.
    let open: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'blobpipe' \
                 AND xact_start IS NOT NULL AND query LIKE '%{dst}%'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_fk_check_restores_the_same_rows_and_catches_a_missing_parent() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["bulk", "bulkdst", "bulkorphan"]).await;
    let (src, dst, orphan) = (&g.names[0], &g.names[1], &g.names[2]);
    groups_fixture(&c, src, &[dst, orphan]).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &url, src, "chunk_size = \"64KiB\"");
    let (store, m) = backup(&p).await;
    let r = restore_with(
        &p,
        &store,
        &m,
        &opts(&url, dst, Strategy::FailIfNotEmpty),
        load(2, FkCheck::Bulk),
    )
    .await
    .unwrap();
    assert_eq!(r.fk_check, FkCheck::Bulk);
    assert_eq!(fingerprints(&c, dst).await, fingerprints(&c, src).await);
    // The replica role was for the restore's transactions only.
    let role: String = c
        .query_one("SHOW session_replication_role", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, "origin");

    // Children without their parents: the triggers are off, the anti-join must catch it
    // (in a parent that exists but lacks the keys, and in a composite-free text key).
    c.batch_execute(&format!(
        "INSERT INTO {orphan}.a_parent SELECT g, 'a' || g FROM generate_series(1, 1999) g;"
    ))
    .await
    .unwrap();
    let before = fingerprints(&c, orphan).await;
    for (tables, key, missing) in [
        (vec!["a_child"], "(parent_id)=(2000)", "a_parent"),
        (vec!["b_child"], "(k)=(k", "b_parent"),
    ] {
        let mut o = opts(&url, orphan, Strategy::FailIfNotEmpty);
        o.tables = tables.iter().map(|t| t.to_string()).collect();
        let e = restore_with(&p, &store, &m, &o, load(2, FkCheck::Bulk))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.kind(), ErrorKind::Destination, "{text}");
        assert!(
            text.contains("violates foreign key constraint")
                && text.contains(key)
                && text.contains(&format!("is not present in table \"{missing}\"")),
            "{text}"
        );
        assert!(text.contains("rolled back, nothing was written"), "{text}");
        assert_eq!(fingerprints(&c, orphan).await, before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_fk_check_is_refused_for_a_role_that_may_not_turn_triggers_off() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["bulkrole", "bulkroledst"]).await;
    let (src, dst) = (&g.names[0], &g.names[1]);
    groups_fixture(&c, src, &[dst]).await;
    let role = support::unique_ident("norep");
    c.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN;
         GRANT USAGE ON SCHEMA {dst} TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {dst} TO {role};"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &url, src, "");
    let (store, m) = backup(&p).await;
    let mut u = url::Url::parse(&url).unwrap();
    u.set_username(&role).unwrap();
    u.set_password(None).unwrap();
    let o = opts(u.as_str(), dst, Strategy::FailIfNotEmpty);
    let refused = restore_with(&p, &store, &m, &o, load(2, FkCheck::Bulk)).await;
    // The same role loads fine with the triggers on: only the bulk check needs the right.
    let immediate = restore_with(&p, &store, &m, &o, load(2, FkCheck::Immediate)).await;
    c.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await
        .unwrap();
    let e = refused.unwrap_err();
    let text = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Refused, "{text}");
    assert!(
        text.contains("--fk-check bulk")
            && text.contains("session_replication_role")
            && text.contains("nothing was written"),
        "{text}"
    );
    immediate.unwrap();
    assert_eq!(fingerprints(&c, dst).await, fingerprints(&c, src).await);
}

/// Issue 12: a table with 1% of its rows updated is backed up as the parent's chunks for
/// every key range whose rows are unchanged (whatever their order on disk), new chunks
/// for the rest; the counts, checksums and a restore into the database stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_updated_table_reuses_unchanged_ranges_and_restores_exactly() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["src", "dst"]).await;
    let (src, dst) = (&g.names[0], &g.names[1]);
    for s in [src, dst] {
        c.batch_execute(&ddl(BIG_DDL, s)).await.unwrap();
    }
    c.batch_execute(&format!(
        "INSERT INTO {src}.big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 20000) g;
         ANALYZE {src}.big;"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        &url,
        src,
        "split_rows = 1000\nchunk_size = \"64KiB\"",
    );
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    let run = |full: bool| {
        let (p, store, layout) = (&p, store.clone(), &layout);
        async move {
            let r = blobpipe::pipeline::backup(
                p,
                store.clone(),
                BackupOptions {
                    full,
                    ..BackupOptions::default()
                },
            )
            .await
            .unwrap();
            assert_eq!(r.status, RunStatus::Ok, "{r:?}");
            let m =
                blobpipe::manifest::catalog::load(&*store, layout, r.snapshot.as_ref().unwrap())
                    .await
                    .unwrap();
            (r, m)
        }
    };
    let (r1, m1) = run(false).await;
    let t1 = m1.tables.iter().find(|t| t.name == "big").unwrap().clone();
    assert_eq!(t1.ranges.len(), 20, "{:?}", t1.ranges);
    assert_eq!(r1.chunks.source, "tables");
    assert_eq!(
        (r1.chunks.new, r1.chunks.reused),
        (t1.chunks.len() as u64, 0)
    );

    // 1% of the rows change (ids 1..=200, all in the first key range); another range's
    // rows are rewritten unchanged, which moves them on disk (a new row version at the
    // end of the heap): its rows come in another order, its row set is the same.
    c.batch_execute(&format!(
        "UPDATE {src}.big SET payload = 'changed ' || payload WHERE id <= 200;
         UPDATE {src}.big SET payload = payload WHERE id BETWEEN 5001 AND 5500;"
    ))
    .await
    .unwrap();
    let (r2, m2) = run(false).await;
    let t2 = m2.tables.iter().find(|t| t.name == "big").unwrap().clone();
    assert_eq!(r2.kind, "incremental");
    let bounds =
        |t: &blobpipe::manifest::TableRecord| t.ranges.iter().map(|r| r.bounds).collect::<Vec<_>>();
    assert_eq!(bounds(&t2), bounds(&t1), "the parent's key ranges are kept");
    let first = t1.ranges[0].chunks as u64;
    assert_eq!(
        (r2.chunks.new, r2.chunks.reused),
        (first, t1.chunks.len() as u64 - first),
        "only the first range is stored again: {:?}",
        r2.chunks
    );
    assert!(
        r2.chunks.reused_bytes * 100 / (r2.chunks.reused_bytes + r2.chunks.new_bytes) >= 90,
        "{:?}",
        r2.chunks
    );
    assert_eq!(t2.ranges[0].rows, 1000);
    assert_ne!(t2.ranges[0].checksum, t1.ranges[0].checksum);
    assert_eq!(&t2.ranges[1..], &t1.ranges[1..]);
    assert_eq!(&t2.chunks[first as usize..], &t1.chunks[first as usize..]);
    // Reused chunks point into the first snapshot's packs; the manifest carries them.
    let old: std::collections::HashSet<&str> = m1.packs.iter().map(|k| k.id.as_str()).collect();
    let e = m2
        .entries
        .iter()
        .find(|e| e.path == t2.chunks[first as usize])
        .unwrap();
    assert!(old.contains(e.pack.as_deref().unwrap()));
    assert!(m2.pack(e.pack.as_deref().unwrap()).is_some());

    // The counts and checksum equal those of a full read of the same data.
    let (r3, m3) = run(true).await;
    let t3 = m3.tables.iter().find(|t| t.name == "big").unwrap();
    assert_eq!(r3.chunks.reused, 0);
    assert_eq!((t2.rows, &t2.checksum), (t3.rows, &t3.checksum));
    assert_ne!(t2.checksum, t1.checksum);

    // Restore the incremental into the database: counts and checksums checked, rows equal.
    let r = restore(&p, &store, &m2, &opts(&url, dst, Strategy::FailIfNotEmpty))
        .await
        .unwrap();
    assert!(r.tables.iter().all(|t| t.checksum_checked), "{r:?}");
    assert_eq!(
        fingerprint(&c, &format!("{src}.big"), "id").await,
        fingerprint(&c, &format!("{dst}.big"), "id").await
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 8, .. proptest::prelude::ProptestConfig::default() })]
    /// Issue 12: forget + prune over random histories of a table whose incrementals
    /// reuse the parent's key-range chunks never break a survivor: each restores into the
    /// database with the rows it was taken with.
    #[test]
    fn forget_and_prune_never_break_a_snapshot_sharing_table_chunks(
        steps in proptest::collection::vec((0u8..4, 0i64..5, proptest::prelude::any::<bool>()), 2..6),
        forgets in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..3),
        keep_last in 1u32..4,
        repacks in proptest::collection::vec(proptest::prelude::any::<bool>(), 3),
    ) {
        let Some(url) = support::postgres() else {
            return Ok(());
        };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            use blobpipe::manifest::catalog;
            use blobpipe::retention::{self, Options};
            let (c, g) = schemas(&url, &["src"]).await;
            let src = &g.names[0];
            big_table(&c, src, "md5(g::text)", 5000).await;
            let dir = tempfile::tempdir().unwrap();
            let p = pipeline(
                dir.path(),
                &url,
                src,
                &format!("split_rows = 1000\nchunk_size = \"64KiB\"\n[incremental]\nfull_every = 100\n[retention]\nkeep_last = {keep_last}\nprune_grace = \"0s\""),
            );
            let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
            let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
            let mut expected = std::collections::BTreeMap::new();
            let mut reused = 0;
            for (i, (kind, at, full)) in steps.iter().enumerate() {
                let a = at * 1000 + 1;
                match kind {
                    0 => c.batch_execute(&format!("UPDATE {src}.big SET payload = payload || 'x' WHERE id BETWEEN {a} AND {}", a + 50)).await.unwrap(),
                    1 => c.batch_execute(&format!("DELETE FROM {src}.big WHERE id BETWEEN {a} AND {}", a + 9)).await.unwrap(),
                    2 => c.batch_execute(&format!("INSERT INTO {src}.big SELECT g, 'new' FROM generate_series((SELECT max(id) + 1 FROM {src}.big), (SELECT max(id) + 100 FROM {src}.big)) g")).await.unwrap(),
                    _ => {}
                }
                let r = blobpipe::pipeline::backup(&p, store.clone(), BackupOptions { full: *full, no_verify: true, ..Default::default() }).await.unwrap();
                assert_eq!(r.status, RunStatus::Ok, "step {i}: {r:?}");
                reused += r.chunks.reused;
                expected.insert(r.snapshot.unwrap(), fingerprint(&c, &format!("{src}.big"), "id").await);
            }
            if steps.iter().skip(1).any(|(_, _, full)| !full) {
                assert!(reused > 0, "an incremental reuses unchanged ranges");
            }
            for (k, ix) in forgets.iter().enumerate() {
                let ids = catalog::snapshot_ids(&*store, &layout).await.unwrap();
                if ids.len() > 1 {
                    store.delete(&layout.snapshot(&ids[ix.index(ids.len())])).await.unwrap();
                }
                if k % 2 == 0 {
                    retention::prune(&p.retention_scope(), &store, &repack_opts(&p, repacks[k % 3])).await.unwrap();
                }
            }
            retention::forget(&p.retention_scope(), &store, &Options::default()).await.unwrap();
            // Repacking (`--max-unused 0%`) moves the live table chunks of partly used
            // packs into new packs; survivors read them through the moved records.
            let r = retention::prune(&p.retention_scope(), &store, &repack_opts(&p, repacks[2])).await.unwrap();
            assert_eq!(r.packs_referenced + r.packs_deleted + r.packs_moved_deleted, r.packs_total, "{r:?}");
            if repacks[2] {
                let dry = retention::prune(&p.retention_scope(), &store, &Options { dry_run: true, ..Default::default() }).await.unwrap();
                assert_eq!(dry.usage.expect("accounted").unused_bytes, 0, "nothing unused after a 0% repack");
            }
            let survivors = catalog::snapshot_ids(&*store, &layout).await.unwrap();
            assert!(!survivors.is_empty() && survivors.len() <= keep_last as usize);
            for snap in &survivors {
                let m = catalog::load(&*store, &layout, snap).await.unwrap();
                let dst = support::unique_ident("dst");
                c.batch_execute(&format!("CREATE SCHEMA {dst}; {}", ddl(BIG_DDL, &dst))).await.unwrap();
                let got = restore(&p, &store, &m, &opts(&url, &dst, Strategy::FailIfNotEmpty)).await;
                let fp = fingerprint(&c, &format!("{dst}.big"), "id").await;
                c.batch_execute(&format!("DROP SCHEMA {dst} CASCADE")).await.unwrap();
                let got = got.unwrap();
                assert!(got.tables.iter().all(|t| t.checksum_checked), "{snap}");
                assert_eq!(fp, expected[snap], "{snap} restores the rows it was taken with");
            }
        });
    }
}

/// Prune options; with `repack`, `--max-unused 0%`.
fn repack_opts(p: &blobpipe::pipeline::Pipeline, repack: bool) -> blobpipe::retention::Options {
    blobpipe::retention::Options {
        max_unused: repack.then(|| "0%".parse().unwrap()),
        repacker: Some(blobpipe::pipeline::repack::PackRepacker::handle(p)),
        ..Default::default()
    }
}

/// Issue 12: a key range larger than `[chunking] range_buffer` is stored as read (memory
/// stays bounded by the setting), never reused, and its counts stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_larger_than_the_range_buffer_is_stored_again_not_held() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["src"]).await;
    let src = &g.names[0];
    big_table(&c, src, "repeat(md5(g::text), 3)", 3000).await;
    let dir = tempfile::tempdir().unwrap();
    // Ranges of 1000 rows (~100 KiB of CSV), cut into 64 KiB chunks; the buffer holds one.
    let p = pipeline(
        dir.path(),
        &url,
        src,
        "split_rows = 1000\nchunk_size = \"64KiB\"\n[chunking]\nrange_buffer = \"64KiB\"",
    );
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = blobpipe::pipeline::backup(&p, store.clone(), BackupOptions::default())
            .await
            .unwrap();
        assert_eq!(r.status, RunStatus::Ok, "{r:?}");
        let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
        let m = blobpipe::manifest::catalog::load(&*store, &layout, r.snapshot.as_ref().unwrap())
            .await
            .unwrap();
        let t = m.tables.iter().find(|t| t.name == "big").unwrap().clone();
        seen.push((r, t));
    }
    let (r2, t2) = &seen[1];
    assert_eq!(r2.kind, "incremental");
    assert_eq!(r2.chunks.reused, 0, "{:?}", r2.chunks);
    assert_eq!(r2.chunks.new, t2.chunks.len() as u64);
    assert!(
        t2.chunks.len() > t2.ranges.len(),
        "ranges span several chunks"
    );
    assert_eq!(
        (t2.rows, &t2.checksum),
        (seen[0].1.rows, &seen[0].1.checksum)
    );
}

/// Issue 12: without `split_rows`, a table of few but wide rows is split by its size so
/// each key range fits `[chunking] range_buffer` (the defaults would otherwise read it as
/// ranges too large to hold, reusing nothing); after 1% of its rows change in one key
/// region, the incremental stores only that region's range and the restore is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_rows_are_split_by_size_so_unchanged_ranges_are_reused() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, g) = schemas(&url, &["src", "dst"]).await;
    let (src, dst) = (&g.names[0], &g.names[1]);
    big_table(&c, src, "repeat(md5(g::text), 30)", 2000).await;
    c.batch_execute(&ddl(BIG_DDL, dst)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 2000 rows of ~1 KiB: far below split_rows' default of 1,000,000 rows, but ~2 MiB on
    // disk; half of a 256 KiB range buffer makes ranges of ~128 KiB.
    let p = pipeline(
        dir.path(),
        &url,
        src,
        "chunk_size = \"64KiB\"\n[chunking]\nrange_buffer = \"256KiB\"",
    );
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    let r1 = blobpipe::pipeline::backup(&p, store.clone(), BackupOptions::default())
        .await
        .unwrap();
    assert_eq!(r1.status, RunStatus::Ok, "{r1:?}");
    let m1 = blobpipe::manifest::catalog::load(&*store, &layout, r1.snapshot.as_ref().unwrap())
        .await
        .unwrap();
    let ranges = m1
        .tables
        .iter()
        .find(|t| t.name == "big")
        .unwrap()
        .ranges
        .len();
    assert!(
        ranges >= 8,
        "split by size into ranges that fit the buffer: {ranges}"
    );
    // 1% of the rows, all in the first key region.
    c.batch_execute(&format!(
        "UPDATE {src}.big SET payload = payload || 'x' WHERE id <= 20"
    ))
    .await
    .unwrap();
    let r2 = blobpipe::pipeline::backup(&p, store.clone(), BackupOptions::default())
        .await
        .unwrap();
    assert_eq!(r2.status, RunStatus::Ok, "{r2:?}");
    let ch = &r2.chunks;
    assert!(ch.reused > 0, "{ch:?}");
    assert!(
        ch.reused_bytes >= 4 * ch.new_bytes,
        "most of the table is reused: {ch:?}"
    );
    let m2 = blobpipe::manifest::catalog::load(&*store, &layout, r2.snapshot.as_ref().unwrap())
        .await
        .unwrap();
    let got = restore(&p, &store, &m2, &opts(&url, dst, Strategy::FailIfNotEmpty))
        .await
        .unwrap();
    assert!(got.tables.iter().all(|t| t.checksum_checked), "{got:?}");
    assert_eq!(
        fingerprint(&c, &format!("{dst}.big"), "id").await,
        fingerprint(&c, &format!("{src}.big"), "id").await
    );
}
