//! MySQL/MariaDB source and `restore --to-db mysql://…` against the real server.
//! Each test uses its own databases (unique names) and drops them at the end.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use blobpipe::manifest::records::RunStatus;
use blobpipe::manifest::Manifest;
use blobpipe::pipeline::{BackupOptions, Pipeline};
use blobpipe::restore::config::Strategy;
use blobpipe::restore::db::{restore_db, DbRestoreOptions};
use blobpipe::store::Store;
use blobpipe::support::secret::Secret;
use blobpipe::ErrorKind;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

struct Dbs {
    url: String,
    names: Vec<String>,
}

impl Drop for Dbs {
    fn drop(&mut self) {
        let (url, names) = (self.url.clone(), self.names.clone());
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let mut c = Conn::from_url(&url).await.unwrap();
                for n in names {
                    let _ = c.query_drop(format!("DROP DATABASE IF EXISTS {n}")).await;
                }
            })
        })
        .join()
        .unwrap();
    }
}

async fn dbs(url: &str, tags: &[&str]) -> (Conn, Dbs) {
    let mut c = Conn::from_url(url).await.unwrap();
    let names: Vec<String> = tags.iter().map(|t| support::unique_ident(t)).collect();
    for n in &names {
        c.query_drop(format!("CREATE DATABASE {n}")).await.unwrap();
    }
    (
        c,
        Dbs {
            url: url.into(),
            names,
        },
    )
}

fn db_url(url: &str, db: &str) -> String {
    let base = url.rsplit_once('/').unwrap().0;
    format!("{base}/{db}")
}

fn pipeline(dir: &Path, url: &str) -> Pipeline {
    let text = format!(
        "name = \"mytest\"\n[source]\ntype = \"mysql\"\nurl = \"{url}\"\nchunk_size = \"64KiB\"\n\
         [target]\nurl = \"memory://{}\"\n[verify]\nmode = \"full\"\n",
        support::unique_ident("mem")
    );
    let p = dir.join("my.toml");
    std::fs::write(&p, text).unwrap();
    Pipeline::load(&p).unwrap()
}

async fn backup(p: &Pipeline) -> (Store, Manifest) {
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let r = blobpipe::pipeline::backup(p, store.clone(), BackupOptions::default())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Ok);
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    let m = blobpipe::manifest::catalog::load(&*store, &layout, r.snapshot.as_ref().unwrap())
        .await
        .unwrap();
    (store, m)
}

async fn restore(
    p: &Pipeline,
    store: &Store,
    m: &Manifest,
    url: &str,
    schema: &str,
    strategy: Strategy,
    tables: &[&str],
) -> blobpipe::Result<blobpipe::restore::db::DbRestoreReport> {
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    let o = DbRestoreOptions {
        url: Secret::new(url),
        tables: tables.iter().map(|t| t.to_string()).collect(),
        strategy,
        strategies: BTreeMap::new(),
        no_transaction: false,
        target_schema: Some(schema.into()),
    };
    restore_db(store, &layout, m, &o).await
}

async fn checksum(c: &mut Conn, t: &str) -> (u64, Option<u64>) {
    let n: Option<u64> = c
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .unwrap();
    let row: Option<(String, Option<u64>)> =
        c.query_first(format!("CHECKSUM TABLE {t}")).await.unwrap();
    (n.unwrap(), row.unwrap().1)
}

const DDL: &str = "
CREATE TABLE {d}.types (id BIGINT PRIMARY KEY, d DECIMAL(20,6), t TEXT, b BLOB, j JSON,
  ts TIMESTAMP(6) NULL, dt DATETIME, f DOUBLE, flag TINYINT(1), bin VARBINARY(16), e ENUM('a','b')) ENGINE=InnoDB;
CREATE TABLE {d}.big (id INT PRIMARY KEY, payload VARCHAR(200) NOT NULL) ENGINE=InnoDB;
CREATE TABLE {d}.parent (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50) UNIQUE) ENGINE=InnoDB;
CREATE TABLE {d}.child (id INT PRIMARY KEY, parent_id INT NOT NULL, FOREIGN KEY (parent_id) REFERENCES {d}.parent(id)) ENGINE=InnoDB;";

async fn fixture(c: &mut Conn, src: &str, dst: &str) {
    for d in [src, dst] {
        for stmt in DDL
            .replace("{d}", d)
            .split(';')
            .filter(|s| !s.trim().is_empty())
        {
            c.query_drop(stmt).await.unwrap();
        }
    }
    c.query_drop(format!(
        r#"INSERT INTO {src}.types VALUES
        (1, 12345678.123456, 'line1\nline2, "quoted" \\ back\r\nend', X'00FF10', '{{"a": [1, "x"]}}',
         '2024-02-29 23:59:59.123456', '2000-01-01 12:00:00', 1e-300, 1, X'DEADBEEF', 'a'),
        (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (3, -0.5, '', X'', '[]', '1970-01-02 00:00:00', '1000-01-01 00:00:00', -0.0, 0, X'', 'b'),
        (4, 0, 'ünïcødé ✓ 😀', REPEAT(X'AB', 5000), 'null', NULL, NULL, 3.141592653589793, NULL, NULL, NULL)"#
    ))
    .await
    .unwrap();
    c.query_drop(format!(
        "INSERT INTO {src}.big SELECT seq, REPEAT(MD5(seq), 3) FROM seq_1_to_5000"
    ))
    .await
    .unwrap();
    c.query_drop(format!(
        "INSERT INTO {src}.parent (name) SELECT CONCAT('p', seq) FROM seq_1_to_20;
         INSERT INTO {src}.child SELECT seq, 1 + seq % 20 FROM seq_1_to_100"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_fk_order_and_strategies() {
    let Some(url) = support::mysql() else {
        return;
    };
    let (mut c, g) = dbs(&url, &["src", "dst"]).await;
    let (src, dst) = (g.names[0].clone(), g.names[1].clone());
    fixture(&mut c, &src, &dst).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &db_url(&url, &src));
    let (store, m) = backup(&p).await;
    assert_eq!(m.tables.len(), 4);
    let big = m.tables.iter().find(|t| t.name == "big").unwrap();
    assert_eq!(big.rows, 5000);
    assert!(big.chunks.len() > 1, "cut into 64 KiB chunks");
    assert!(m.header.source.starts_with("mysql:"));

    let r = restore(&p, &store, &m, &url, &dst, Strategy::FailIfNotEmpty, &[])
        .await
        .unwrap();
    assert!(r.tables.iter().all(|t| t.checksum_checked));
    let order: Vec<&str> = r.tables.iter().map(|t| t.table.as_str()).collect();
    let pos = |n: &str| order.iter().position(|t| t.ends_with(n)).unwrap();
    assert!(pos(".parent") < pos(".child"), "{order:?}");
    // Three groups no foreign key links (types; big; parent + child) load on three
    // connections that commit together; a child stays on its parent's connection.
    assert_eq!(r.connections, 3, "{r:?}");
    let conn = |n: &str| {
        r.tables
            .iter()
            .find(|t| t.table.ends_with(n))
            .unwrap()
            .connection
    };
    assert_eq!(conn(".parent"), conn(".child"), "{r:?}");
    let mut used = vec![conn(".types"), conn(".big"), conn(".parent")];
    used.sort_unstable();
    used.dedup();
    assert_eq!(used.len(), 3, "each group on its own connection: {r:?}");
    for t in ["types", "big", "parent", "child"] {
        assert_eq!(
            checksum(&mut c, &format!("{src}.{t}")).await,
            checksum(&mut c, &format!("{dst}.{t}")).await,
            "{t}"
        );
    }

    // fail-if-not-empty refuses now; truncate replaces; skip-existing keeps local rows.
    let e = restore(
        &p,
        &store,
        &m,
        &url,
        &dst,
        Strategy::FailIfNotEmpty,
        &["parent"],
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    c.query_drop(format!(
        "UPDATE {dst}.big SET payload = 'local' WHERE id = 1; DELETE FROM {dst}.big WHERE id = 2"
    ))
    .await
    .unwrap();
    let r = restore(&p, &store, &m, &url, &dst, Strategy::SkipExisting, &["big"])
        .await
        .unwrap();
    assert_eq!(r.tables[0].rows_added, 1);
    let v: Option<String> = c
        .query_first(format!("SELECT payload FROM {dst}.big WHERE id = 1"))
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("local"));
    restore(&p, &store, &m, &url, &dst, Strategy::Truncate, &["big"])
        .await
        .unwrap();
    assert_eq!(
        checksum(&mut c, &format!("{src}.big")).await,
        checksum(&mut c, &format!("{dst}.big")).await
    );

    // Schema mismatch: refused with nothing written.
    c.query_drop(format!("ALTER TABLE {dst}.types MODIFY f FLOAT"))
        .await
        .unwrap();
    c.query_drop(format!("DELETE FROM {dst}.types"))
        .await
        .unwrap();
    let e = restore(
        &p,
        &store,
        &m,
        &url,
        &dst,
        Strategy::FailIfNotEmpty,
        &["types"],
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("\"f\" is float"), "{e}");
    assert_eq!(checksum(&mut c, &format!("{dst}.types")).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_snapshot_for_all_tables_under_a_concurrent_writer() {
    let Some(url) = support::mysql() else {
        return;
    };
    let (mut c, g) = dbs(&url, &["mcons"]).await;
    let src = g.names[0].clone();
    for t in ["a1", "a2"] {
        c.query_drop(format!(
            "CREATE TABLE {src}.{t} (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB"
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "INSERT INTO {src}.{t} SELECT seq * 2, REPEAT('x', 200) FROM seq_1_to_30000"
        ))
        .await
        .unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, src, stop) = (url.clone(), src.clone(), stop.clone());
        tokio::spawn(async move {
            let mut w = Conn::from_url(&url).await.unwrap();
            let mut id = -1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && id < 59_000 {
                id += 2;
                w.query_drop(format!(
                    "START TRANSACTION; INSERT INTO {src}.a2 VALUES ({id}, 'w'); INSERT INTO {src}.a1 VALUES ({id}, 'w'); COMMIT"
                ))
                .await
                .unwrap();
            }
            (id + 1) / 2
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &db_url(&url, &src));
    let (_store, m) = backup(&p).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0);
    let rows = |n: &str| m.tables.iter().find(|t| t.name == n).unwrap().rows;
    assert_eq!(rows("a1"), rows("a2"));
}

fn split_pipeline(dir: &Path, url: &str) -> Pipeline {
    let text = format!(
        "name = \"mysplit\"\n[source]\ntype = \"mysql\"\nurl = \"{url}\"\nsplit_rows = 1000\n\
         chunk_size = \"64KiB\"\n[target]\nurl = \"memory://{}\"\n[verify]\nmode = \"full\"\n",
        support::unique_ident("mem")
    );
    let p = dir.join("split.toml");
    std::fs::write(&p, text).unwrap();
    Pipeline::load(&p).unwrap()
}

fn db_cfg(url: &str, db: &str) -> blobpipe::extract::config::DbSourceConfig {
    blobpipe::extract::config::DbSourceConfig {
        url: Secret::new(db_url(url, db)),
        password: None,
        schemas: vec![db.to_string()],
        include: vec![],
        exclude: vec![],
        split_rows: 1000,
        split_bytes: 0,
        chunk_size: 64 << 10,
    }
}

async fn two_tables(c: &mut Conn, db: &str, rows: u32) {
    for t in ["a1", "a2"] {
        c.query_drop(format!(
            "CREATE TABLE {db}.{t} (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB"
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "INSERT INTO {db}.{t} SELECT seq * 2, REPEAT('x', 200) FROM seq_1_to_{rows}"
        ))
        .await
        .unwrap();
        c.query_drop(format!("ANALYZE TABLE {db}.{t}"))
            .await
            .unwrap();
    }
}

/// The PostgreSQL consistency test's twin: tables split into key ranges read by several
/// connections while a writer commits transactions that insert into both tables; every
/// transaction is in the backup in both tables, or in neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_parallel_backup_under_a_concurrent_writer_is_all_in_or_all_out() {
    let Some(url) = support::mysql() else {
        return;
    };
    let (mut c, g) = dbs(&url, &["msplit", "msplitdst"]).await;
    let (src, dst) = (g.names[0].clone(), g.names[1].clone());
    two_tables(&mut c, &src, 20_000).await;
    for t in ["a1", "a2"] {
        c.query_drop(format!(
            "CREATE TABLE {dst}.{t} (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB"
        ))
        .await
        .unwrap();
    }
    // Several connections in one snapshot (the local root may FLUSH TABLES WITH READ LOCK).
    let s = blobpipe::extract::mysql::MySession::open(&db_cfg(&url, &src), 4, &[])
        .await
        .unwrap();
    assert!(
        s.items.len() > 2,
        "split into key ranges: {}",
        s.items.len()
    );
    assert_eq!(s.connections, 4);
    drop(s);
    // The reader count is the pipeline's [partitions] max_parallel, and never more than
    // there are items.
    let s = blobpipe::extract::mysql::MySession::open(&db_cfg(&url, &src), 2, &[])
        .await
        .unwrap();
    assert_eq!(s.connections, 2);
    drop(s);
    let s = blobpipe::extract::mysql::MySession::open(&db_cfg(&url, &src), 4096, &[])
        .await
        .unwrap();
    assert_eq!(
        s.connections,
        s.items.len().min(blobpipe::extract::mysql::MAX_READERS)
    );
    drop(s);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, src, stop) = (url.clone(), src.clone(), stop.clone());
        tokio::spawn(async move {
            let mut w = Conn::from_url(&url).await.unwrap();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 20_000 {
                // Odd ids, unique (7919 is prime to 20,000), spread over the key range
                // so every range sees writes.
                let id = (u64::from(n) * 7919 % 20_000) * 2 + 1;
                w.query_drop(format!(
                    "START TRANSACTION; INSERT INTO {src}.a2 VALUES ({id}, 'w'); \
                     INSERT INTO {src}.a1 VALUES ({id}, 'w'); COMMIT"
                ))
                .await
                .unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // Each test runs in a process of its own (nextest): the gap between two readers'
    // snapshots lets the writer commit in between unless the read lock holds it back.
    std::env::set_var("BLOBPIPE_TEST_MYSQL_SNAPSHOT_GAP_MS", "50");
    let dir = tempfile::tempdir().unwrap();
    let p = split_pipeline(dir.path(), &db_url(&url, &src));
    let (store, m) = backup(&p).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0);
    let rows = |n: &str| m.tables.iter().find(|t| t.name == n).unwrap().rows;
    assert!(rows("a1") >= 20_000);
    assert_eq!(rows("a1"), rows("a2"));
    assert!(m.tables.iter().all(|t| t.chunks.len() > 2));

    // Same ids on both sides, not just the same count.
    restore(&p, &store, &m, &url, &dst, Strategy::FailIfNotEmpty, &[])
        .await
        .unwrap();
    let missing: Option<u64> = c
        .query_first(format!(
            "SELECT COUNT(*) FROM {dst}.a1 x LEFT JOIN {dst}.a2 y ON x.id = y.id WHERE y.id IS NULL"
        ))
        .await
        .unwrap();
    assert_eq!(missing, Some(0));
}

/// Without the RELOAD privilege (as on Azure Database for MySQL) the global read lock is
/// refused: one connection, one snapshot, every key range read through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reload_privilege_one_consistent_connection_reads_everything() {
    let Some(url) = support::mysql() else {
        return;
    };
    let (mut c, g) = dbs(&url, &["mnolock"]).await;
    let src = g.names[0].clone();
    two_tables(&mut c, &src, 5_000).await;
    let user = format!("{}u", &src[..src.len().min(20)]);
    c.query_drop(format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'nolock-pw'; \
         GRANT SELECT, SHOW VIEW ON {src}.* TO '{user}'@'%'"
    ))
    .await
    .unwrap();
    let u = url::Url::parse(&url).unwrap();
    let limited = format!(
        "mysql://{user}:nolock-pw@{}:{}/{src}",
        u.host_str().unwrap(),
        u.port().unwrap_or(3306)
    );
    let s = blobpipe::extract::mysql::MySession::open(&db_cfg(&limited, &src), 4, &[])
        .await
        .unwrap();
    assert_eq!(s.connections, 1);
    assert!(s.items.len() > 2, "still split: {}", s.items.len());
    drop(s);
    let dir = tempfile::tempdir().unwrap();
    let p = split_pipeline(dir.path(), &limited);
    let (_store, m) = backup(&p).await;
    let rows = |n: &str| m.tables.iter().find(|t| t.name == n).unwrap().rows;
    assert_eq!((rows("a1"), rows("a2")), (5_000, 5_000));
    let _ = c.query_drop(format!("DROP USER '{user}'@'%'")).await;
}

/// Every common MySQL/MariaDB column type, through backup and `restore --to-db` by the
/// way the server allows (LOAD DATA LOCAL INFILE on the test server): the restore's own
/// row-set checksum passes and `CHECKSUM TABLE` agrees on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_common_type_round_trips() {
    types_round_trip(None).await;
}

/// The same through `LOAD DATA LOCAL INFILE`, forced (no fallback to INSERTs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_common_type_round_trips_through_load_data() {
    types_round_trip(Some("infile")).await;
}

/// The same through multi-row INSERTs, forced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_common_type_round_trips_through_inserts() {
    types_round_trip(Some("insert")).await;
}

async fn types_round_trip(method: Option<&str>) {
    let Some(url) = support::mysql() else {
        return;
    };
    // Each test runs in a process of its own (nextest).
    if let Some(m) = method {
        std::env::set_var("BLOBPIPE_TEST_MYSQL_LOAD", m);
    }
    let (mut c, g) = dbs(&url, &["mtypes", "mtypesdst"]).await;
    let (src, dst) = (g.names[0].clone(), g.names[1].clone());
    let ddl = "(id INT PRIMARY KEY, ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, \
        bi BIGINT UNSIGNED, de DECIMAL(30,10), fl FLOAT, db DOUBLE, bt BIT(5), \
        dt DATE, tm TIME(3), yr YEAR, dtm DATETIME(6), ts TIMESTAMP NULL, \
        ch CHAR(5), vc VARCHAR(300), tx MEDIUMTEXT, bn BINARY(4), vb VARBINARY(20), \
        bl LONGBLOB, en ENUM('x','y z'), st SET('a','b','c'), js JSON, u UUID, ip INET6) \
        ENGINE=InnoDB";
    for d in [&src, &dst] {
        c.query_drop(format!("CREATE TABLE {d}.all_types {ddl}"))
            .await
            .unwrap();
    }
    c.query_drop(format!(
        r#"INSERT INTO {src}.all_types VALUES
        (1, -128, 65535, -8388608, 18446744073709551615, -12345678901234567890.0123456789,
         3.14159, 2.2250738585072014e-308, b'10101', '2024-02-29', '-838:59:59.000', 2155,
         '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07', 'ab', 'tab	and ''quote''',
         'multi
line', X'00000001', X'', X'FF00FF', 'y z', 'a,c', '{{"k": [true, null, 1.5]}}',
         '123e4567-e89b-12d3-a456-426614174000', '2001:db8::1'),
        (2, 127, 0, 8388607, 0, 0, -1.25, -0.0, b'0', '1000-01-01', '00:00:00.001', 1901,
         '1000-01-01 00:00:00', '1970-01-01 00:00:01', '', '', '', X'FFFFFFFF', X'00', X'00',
         'x', '', '[]', '00000000-0000-0000-0000-000000000000', '::ffff:192.0.2.1'),
        (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"#
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &db_url(&url, &src));
    let (store, m) = backup(&p).await;
    let r = restore(&p, &store, &m, &url, &dst, Strategy::FailIfNotEmpty, &[])
        .await
        .unwrap();
    assert!(r.tables.iter().all(|t| t.checksum_checked));
    assert_eq!(
        checksum(&mut c, &format!("{src}.all_types")).await,
        checksum(&mut c, &format!("{dst}.all_types")).await
    );
}

/// LOAD DATA LOCAL turns a duplicate key into a warning and skips the row; the restore
/// must fail instead (naming the server's warning), roll back, and leave the target's
/// rows as they were. The INSERT path fails on the duplicate itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_target_refuses_fails_the_restore_on_either_path() {
    let Some(url) = support::mysql() else {
        return;
    };
    let (mut c, g) = dbs(&url, &["mdup", "mdupdst"]).await;
    let (src, dst) = (g.names[0].clone(), g.names[1].clone());
    c.query_drop(format!(
        "CREATE TABLE {src}.t (id INT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB; \
         INSERT INTO {src}.t SELECT seq, CONCAT('n', seq) FROM seq_1_to_20000; \
         CREATE TABLE {dst}.t (id INT PRIMARY KEY, name VARCHAR(20), UNIQUE KEY u (name)) ENGINE=InnoDB; \
         INSERT INTO {dst}.t VALUES (100000, 'n2500')"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &db_url(&url, &src));
    let (store, m) = backup(&p).await;
    assert!(m.tables[0].chunks.len() > 1);
    for method in ["infile", "insert"] {
        std::env::set_var("BLOBPIPE_TEST_MYSQL_LOAD", method);
        let e = restore(&p, &store, &m, &url, &dst, Strategy::Append, &[])
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("n2500") && text.contains("rolled back"),
            "{method}: {text}"
        );
        // The target refused a row: its fault, not the snapshot's (exit 5, not 3).
        assert_eq!(e.kind(), ErrorKind::Destination, "{method}: {text}");
        if method == "infile" {
            assert!(text.contains("warning"), "{text}");
        }
        let left: Vec<(i32, String)> = c
            .query(format!("SELECT id, name FROM {dst}.t"))
            .await
            .unwrap();
        assert_eq!(left, vec![(100000, "n2500".to_string())], "{method}");
    }
}

/// Regression: a stored chunk larger than one protocol packet (16 MiB; chunks may be up
/// to 256 MiB) failed LOAD DATA LOCAL with "packet too large" — it was sent as one piece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_larger_than_a_packet_loads_through_load_data() {
    let Some(url) = support::mysql() else {
        return;
    };
    std::env::set_var("BLOBPIPE_TEST_MYSQL_LOAD", "infile");
    let (mut c, g) = dbs(&url, &["mbig", "mbigdst"]).await;
    let (src, dst) = (g.names[0].clone(), g.names[1].clone());
    for d in [&src, &dst] {
        c.query_drop(format!(
            "CREATE TABLE {d}.t (id INT PRIMARY KEY, v VARCHAR(300)) ENGINE=InnoDB"
        ))
        .await
        .unwrap();
    }
    c.query_drop(format!(
        "INSERT INTO {src}.t SELECT seq, REPEAT(MD5(seq), 8) FROM seq_1_to_80000"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "name = \"mybig\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\nchunk_size = \"64MiB\"\n\
         [target]\nurl = \"memory://{}\"\n[verify]\nmode = \"metadata\"\n",
        db_url(&url, &src),
        support::unique_ident("mem")
    );
    let pf = dir.path().join("big.toml");
    std::fs::write(&pf, text).unwrap();
    let p = Pipeline::load(&pf).unwrap();
    let (store, m) = backup(&p).await;
    assert_eq!(m.tables[0].chunks.len(), 1);
    assert!(m.tables[0].bytes > 20 << 20, "{}", m.tables[0].bytes);
    let r = restore(&p, &store, &m, &url, &dst, Strategy::FailIfNotEmpty, &[])
        .await
        .unwrap();
    assert!(r.tables[0].checksum_checked);
    assert_eq!(r.tables[0].rows_after, 80_000);
}

/// Issue 12: the MySQL twin of the PostgreSQL reuse test — an incremental reads the
/// parent's key ranges, points at the parent's chunks of the unchanged ones, stores the
/// changed one, and restores with exact counts and checksums.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_key_ranges_are_the_parents_and_the_restore_is_exact() {
    let Some(url) = support::mysql() else {
        return;
    };
    let (mut c, g) = dbs(&url, &["src", "dst"]).await;
    let (src, dst) = (&g.names[0], &g.names[1]);
    two_tables(&mut c, src, 3000).await;
    c.query_drop(format!("CREATE TABLE {dst}.a1 LIKE {src}.a1"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = split_pipeline(dir.path(), &db_url(&url, src));
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    let mut run = Vec::new();
    for step in 0..2 {
        if step == 1 {
            // 1% of a1's rows, all in its first key range.
            c.query_drop(format!("UPDATE {src}.a1 SET v = 'changed' WHERE id <= 60"))
                .await
                .unwrap();
        }
        let r = blobpipe::pipeline::backup(&p, store.clone(), BackupOptions::default())
            .await
            .unwrap();
        assert_eq!(r.status, RunStatus::Ok, "{r:?}");
        let m = blobpipe::manifest::catalog::load(&*store, &layout, r.snapshot.as_ref().unwrap())
            .await
            .unwrap();
        run.push((r, m));
    }
    let a1 = |m: &Manifest| m.tables.iter().find(|t| t.name == "a1").unwrap().clone();
    let (t1, t2) = (a1(&run[0].1), a1(&run[1].1));
    assert!(t1.ranges.len() >= 3, "{:?}", t1.ranges);
    let bounds =
        |t: &blobpipe::manifest::TableRecord| t.ranges.iter().map(|r| r.bounds).collect::<Vec<_>>();
    assert_eq!(bounds(&t1), bounds(&t2));
    let all: usize = run[0].1.tables.iter().map(|t| t.chunks.len()).sum();
    let first = t1.ranges[0].chunks as u64;
    let r2 = &run[1].0;
    assert_eq!(r2.chunks.source, "tables");
    assert_eq!(
        (r2.chunks.new, r2.chunks.reused),
        (first, all as u64 - first),
        "{:?}",
        r2.chunks
    );
    assert_ne!(t1.checksum, t2.checksum);
    let r = restore(
        &p,
        &store,
        &run[1].1,
        &url,
        dst,
        Strategy::FailIfNotEmpty,
        &["a1"],
    )
    .await
    .unwrap();
    assert!(r.tables.iter().all(|t| t.checksum_checked), "{r:?}");
    assert_eq!(
        checksum(&mut c, &format!("{src}.a1")).await,
        checksum(&mut c, &format!("{dst}.a1")).await
    );
}
