//! `blobpipe drill` of database pipelines, through the binary, against the real
//! PostgreSQL and MariaDB/MySQL: restore into a scratch schema / database, counts and
//! checksums compared, drill record stored, scratch dropped — also when the drill fails.

mod ops_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ops_support::Receiver;

fn bp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn js(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn corrupt_packs(store: &Path, name: &str) {
    let mut packs = vec![];
    walk(&store.join(format!("backups/{name}/packs")), &mut packs);
    assert!(!packs.is_empty());
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x5a;
        std::fs::write(p, b).unwrap();
    }
}

/// A pipeline file reading `schema` of `url` into a file:// store.
fn pipeline(dir: &Path, name: &str, kind: &str, url: &str, schema: &str, extra: &str) -> PathBuf {
    let store = dir.join("store");
    let text = format!(
        "name = \"{name}\"\n[source]\ntype = \"{kind}\"\nurl = \"{url}\"\nschemas = [\"{schema}\"]\nchunk_size = \"64KiB\"\n\
         [target]\nurl = \"file://{}\"\n{extra}\n",
        store.display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ------------------------------------------------------------------------------ PostgreSQL

async fn pg(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

async fn pg_scratch_left(c: &tokio_postgres::Client, name: &str) -> Vec<String> {
    c.query(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1",
        &[&format!("bp_drill_{name}_%")],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A source schema with a few types, a composite key, a table without a key, and
/// enough rows for several chunks. Dropped by the caller.
async fn pg_source(c: &tokio_postgres::Client, src: &str) {
    c.batch_execute(&format!(
        "CREATE SCHEMA {src};
         CREATE TABLE {src}.task (id bigint PRIMARY KEY, state text NOT NULL, n numeric(12,3),
            at timestamptz, tags text[], doc jsonb, raw bytea);
         CREATE TABLE {src}.pair (a int, b text, v float8, PRIMARY KEY (a, b));
         CREATE TABLE {src}.nokey (x text, y int);
         INSERT INTO {src}.task SELECT g, 'state ' || (g % 7), g / 3.0, '2024-01-01'::timestamptz + g * interval '1 min',
            ARRAY['a', g::text], jsonb_build_object('g', g), decode(md5(g::text), 'hex')
            FROM generate_series(1, 4000) g;
         INSERT INTO {src}.pair VALUES (1, 'x', 0.5), (1, 'y', NULL), (2, 'x', -1e300);
         INSERT INTO {src}.nokey VALUES ('dup', 1), ('dup', 1), (NULL, NULL);"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_drill_into_scratch_schema_and_corruption_fails_with_cleanup() {
    let Some(url) = support::postgres() else {
        return;
    };
    let c = pg(&url).await;
    let src = support::unique_ident("drsrc");
    let name = support::unique_ident("pgdrill");
    pg_source(&c, &src).await;
    let rx = Receiver::start(vec![200], "{}").await;
    let t = tempfile::tempdir().unwrap();
    let pf = pipeline(
        t.path(),
        &name,
        "postgres",
        &url,
        &src,
        &format!(
            "[[alerts.webhook]]\nurl = \"{}/drill\"\nformat = \"json\"\non = [\"failure\", \"mismatch\"]\n",
            rx.base
        ),
    );
    let _g = PgCleanup {
        url: url.clone(),
        src: src.clone(),
        name: name.clone(),
    };
    {
        // A database pipeline without a scratch server: told what to pass.
        let o = bp(&["drill", s(&pf)]);
        assert_eq!(code(&o), 2);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--scratch-db") && err.contains("scratch_url"),
            "{err}"
        );
        let o = bp(&[
            "drill",
            s(&pf),
            "--scratch-db",
            "mysql://root@127.0.0.1:3306/test",
        ]);
        assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));

        let o = bp(&["--json", "backup", s(&pf)]);
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));

        let pf2 = pf.clone();
        let u2 = url.clone();
        let o = tokio::task::spawn_blocking(move || {
            bp(&["--json", "drill", s(&pf2), "--scratch-db", &u2])
        })
        .await
        .unwrap();
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
        let d = js(&o);
        assert_eq!(d["ok"], true, "{d}");
        assert_eq!(d["tables"], 3, "{d}");
        assert_eq!(d["rows"], 4006, "{d}");
        assert!(d["rto_seconds"].as_f64().unwrap() > 0.0);
        assert!(d["stored_as"].as_str().unwrap().contains("/drills/"), "{d}");
        let scratch = d["scratch"].as_str().unwrap();
        assert!(
            scratch.contains(&format!("schema bp_drill_{name}_")),
            "{scratch}"
        );
        assert!(d.get("cleanup_error").is_none(), "{d}");
        assert!(
            pg_scratch_left(&c, &name).await.is_empty(),
            "scratch dropped"
        );
        assert!(rx.requests().is_empty(), "no alert for a good drill");
        // The human line names the scratch target and the checks.
        let o = bp(&["drill", s(&pf), "--scratch-db", &url]);
        assert_eq!(code(&o), 0);
        let line = String::from_utf8_lossy(&o.stdout);
        assert!(
            line.contains("drill ok")
                && line.contains("3 tables, 4006 rows")
                && line.contains("scratch dropped"),
            "{line}"
        );
        assert!(pg_scratch_left(&c, &name).await.is_empty());
        let o = bp(&["--json", "status", s(&pf)]);
        assert_eq!(js(&o)["pipelines"][0]["last_drill"]["ok"], true);

        // Corrupt every pack: the drill fails (mismatch), alerts, is recorded, and the
        // scratch schema is dropped all the same.
        corrupt_packs(&t.path().join("store"), &name);
        let pf2 = pf.clone();
        let u2 = url.clone();
        let o = tokio::task::spawn_blocking(move || {
            bp(&["--json", "drill", s(&pf2), "--scratch-db", &u2])
        })
        .await
        .unwrap();
        let d = js(&o);
        assert_eq!(code(&o), 3, "{d}");
        assert_eq!(d["ok"], false, "{d}");
        assert_eq!(d["error_kind"], "Integrity", "{d}");
        assert!(d["stored_as"].is_string(), "a failed drill is recorded too");
        assert!(
            pg_scratch_left(&c, &name).await.is_empty(),
            "scratch dropped after failure"
        );
        let got = rx.requests();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].json()["event"], "mismatch", "{:?}", got[0].json());
        let o = bp(&["--json", "status", s(&pf)]);
        assert_eq!(js(&o)["pipelines"][0]["last_drill"]["ok"], false);
    }
}

/// Drops the source schema and any scratch left behind when the test ends (also on panic).
/// Issue 14: a drill's RTO must cost what a real restore costs, so the scratch tables get
/// the source's constraints, foreign keys and indexes (recorded in the snapshot) before
/// the rows load. Seen from outside: the manifest carries them, and a row that a real
/// restore into the source's schema would reject (it breaks a `NOT VALID` check the
/// source never re-checked) fails the drill — where tables without constraints took it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_drill_builds_the_source_constraints_and_indexes() {
    let Some(url) = support::postgres() else {
        return;
    };
    let c = pg(&url).await;
    let src = support::unique_ident("ddlsrc");
    let name = support::unique_ident("pgddl");
    let _g = PgCleanup {
        url: url.clone(),
        src: src.clone(),
        name: name.clone(),
    };
    c.batch_execute(&format!(
        "CREATE SCHEMA {src};
         CREATE TABLE {src}.run (id int PRIMARY KEY, dag text NOT NULL, UNIQUE (dag, id));
         CREATE TABLE {src}.ti (id int PRIMARY KEY, run_id int NOT NULL REFERENCES {src}.run(id) ON DELETE CASCADE,
            n int, state text);
         CREATE INDEX ti_state ON {src}.ti (state) WHERE state IS NOT NULL;
         INSERT INTO {src}.run SELECT g, 'd' || g FROM generate_series(1, 50) g;
         INSERT INTO {src}.ti SELECT g, 1 + g % 50, g, 'ok' FROM generate_series(1, 500) g;
         INSERT INTO {src}.ti VALUES (501, 1, -1, NULL);
         ALTER TABLE {src}.ti ADD CONSTRAINT ti_n_positive CHECK (n >= 0) NOT VALID;"
    ))
    .await
    .unwrap();
    let t = tempfile::tempdir().unwrap();
    let pf = pipeline(t.path(), &name, "postgres", &url, &src, "");
    let o = bp(&["--json", "backup", s(&pf)]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));

    let p = blobpipe::pipeline::Pipeline::load(&pf).unwrap();
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    let id = js(&o)["snapshot"].as_str().unwrap().to_string();
    let m = blobpipe::manifest::catalog::load(&*store, &layout, &id)
        .await
        .unwrap();
    let ti = m.tables.iter().find(|t| t.name == "ti").unwrap();
    assert_eq!(
        ti.indexes,
        vec![format!(
            "CREATE INDEX ti_state ON {src}.ti USING btree (state) WHERE (state IS NOT NULL)"
        )]
    );
    assert!(
        ti.constraints.contains(&format!(
            "CONSTRAINT ti_run_id_fkey FOREIGN KEY (run_id) REFERENCES {src}.run(id) ON DELETE CASCADE"
        )),
        "{:?}",
        ti.constraints
    );
    assert!(
        ti.constraints
            .contains(&"CONSTRAINT ti_n_positive CHECK ((n >= 0)) NOT VALID".to_string()),
        "{:?}",
        ti.constraints
    );
    let run = m.tables.iter().find(|t| t.name == "run").unwrap();
    assert_eq!(
        run.constraints,
        vec!["CONSTRAINT run_dag_id_key UNIQUE (dag, id)".to_string()]
    );
    assert!(
        run.indexes.is_empty(),
        "the unique constraint's index is not listed twice"
    );

    // The row the check rejects fails the drill, as it would fail a real restore.
    let (pf2, u2) = (pf.clone(), url.clone());
    let o =
        tokio::task::spawn_blocking(move || bp(&["--json", "drill", s(&pf2), "--scratch-db", &u2]))
            .await
            .unwrap();
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stderr));
    let d = js(&o);
    assert_eq!(d["ok"], false, "{d}");
    assert!(
        d["error"].as_str().unwrap().contains("ti_n_positive"),
        "{d}"
    );
    assert!(
        pg_scratch_left(&c, &name).await.is_empty(),
        "scratch dropped"
    );

    // Fixed at the source: the drill loads into the constrained, indexed tables.
    c.batch_execute(&format!("UPDATE {src}.ti SET n = 0 WHERE n < 0"))
        .await
        .unwrap();
    let o = bp(&["backup", s(&pf)]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let (pf2, u2) = (pf.clone(), url.clone());
    let o =
        tokio::task::spawn_blocking(move || bp(&["--json", "drill", s(&pf2), "--scratch-db", &u2]))
            .await
            .unwrap();
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let d = js(&o);
    assert_eq!(
        (d["tables"].as_u64(), d["rows"].as_u64()),
        (Some(2), Some(551)),
        "{d}"
    );
    assert!(
        pg_scratch_left(&c, &name).await.is_empty(),
        "scratch dropped"
    );
}

struct PgCleanup {
    url: String,
    src: String,
    name: String,
}

impl Drop for PgCleanup {
    fn drop(&mut self) {
        let (url, src, name) = (self.url.clone(), self.src.clone(), self.name.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let c = pg(&url).await;
                let _ = c
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {src} CASCADE"))
                    .await;
                for n in pg_scratch_left(&c, &name).await {
                    let _ = c.batch_execute(&format!("DROP SCHEMA {n} CASCADE")).await;
                }
            });
        })
        .join()
        .unwrap();
    }
}

// ----------------------------------------------------------------------------------- MySQL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_drill_into_scratch_database() {
    use mysql_async::prelude::Queryable;
    let Some(url) = support::mysql() else {
        return;
    };
    let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
        .await
        .unwrap();
    let src = support::unique_ident("drsrc");
    let name = support::unique_ident("mydrill");
    c.query_drop(format!(
        "CREATE DATABASE {src}; CREATE TABLE {src}.task (id bigint PRIMARY KEY, state varchar(40) NOT NULL, n decimal(12,3), at datetime(3), raw varbinary(64));
         CREATE TABLE {src}.nokey (x text, y int);
         INSERT INTO {src}.task VALUES (1, 'a', 1.5, '2024-01-01 00:00:00.123', X'00ff'), (2, 'b', NULL, NULL, NULL), (3, 'ü ✓', -2, '1999-12-31 23:59:59', '');
         INSERT INTO {src}.nokey VALUES ('dup', 1), ('dup', 1), (NULL, NULL);"
    ))
    .await
    .unwrap();
    let t = tempfile::tempdir().unwrap();
    let pf = pipeline(
        t.path(),
        &name,
        "mysql",
        &url,
        &src,
        &format!("[restore]\nscratch_url = \"{url}\"\n"),
    );
    let left = format!(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'bp\\_drill\\_{name}\\_%'"
    );
    let o = bp(&["--json", "backup", s(&pf)]);
    let backed_up = code(&o);
    let o = if backed_up == 0 {
        let pf2 = pf.clone();
        Some(
            tokio::task::spawn_blocking(move || bp(&["--json", "drill", s(&pf2)]))
                .await
                .unwrap(),
        )
    } else {
        None
    };
    let remaining: Vec<String> = c.query(&left).await.unwrap();
    for n in &remaining {
        let _ = c.query_drop(format!("DROP DATABASE {n}")).await;
    }
    c.query_drop(format!("DROP DATABASE {src}")).await.unwrap();
    assert_eq!(backed_up, 0);
    let o = o.unwrap();
    let d = js(&o);
    assert_eq!(code(&o), 0, "{d} {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(d["ok"], true, "{d}");
    assert_eq!(d["tables"], 2, "{d}");
    assert_eq!(d["rows"], 6, "{d}");
    assert!(
        d["scratch"]
            .as_str()
            .unwrap()
            .contains("database bp_drill_"),
        "{d}"
    );
    assert!(
        remaining.is_empty(),
        "scratch database dropped: {remaining:?}"
    );
}

/// Issue 14 for MySQL: the backup records the source's secondary indexes, checks and
/// foreign keys (`SHOW CREATE TABLE`), and the drill builds them on its scratch tables
/// before loading — seen directly (the scratch kept by the test hook has the source's
/// indexes and a foreign key pointing at the scratch parent) and from outside: an orphan
/// child row that a real restore into the source's schema would reject (written with
/// `foreign_key_checks = 0`) fails the drill, naming the foreign key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_drill_builds_the_source_indexes_and_foreign_keys() {
    use mysql_async::prelude::Queryable;
    let Some(url) = support::mysql() else {
        return;
    };
    let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
        .await
        .unwrap();
    let src = support::unique_ident("myddl");
    let name = support::unique_ident("myddl");
    let _g = MyCleanup {
        url: url.clone(),
        dbs: vec![src.clone()],
        scratch_like: format!("bp\\_drill\\_{name}\\_%"),
    };
    c.query_drop(format!(
        "CREATE DATABASE {src};
         CREATE TABLE {src}.run (id INT PRIMARY KEY, dag VARCHAR(40) NOT NULL, UNIQUE KEY run_dag (dag, id)) ENGINE=InnoDB;
         CREATE TABLE {src}.ti (id INT PRIMARY KEY, run_id INT NOT NULL, n INT, state VARCHAR(20),
            KEY ti_state (state, n),
            CONSTRAINT ti_run_fk FOREIGN KEY (run_id) REFERENCES {src}.run (id) ON DELETE CASCADE,
            CONSTRAINT ti_n_positive CHECK (n >= 0)) ENGINE=InnoDB;
         INSERT INTO {src}.run SELECT seq, CONCAT('d', seq) FROM seq_1_to_50;
         INSERT INTO {src}.ti SELECT seq, 1 + seq % 50, seq, 'ok' FROM seq_1_to_500;"
    ))
    .await
    .unwrap();
    let t = tempfile::tempdir().unwrap();
    let pf = pipeline(t.path(), &name, "mysql", &url, &src, "");
    let o = bp(&["--json", "backup", s(&pf)]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));

    let p = blobpipe::pipeline::Pipeline::load(&pf).unwrap();
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    let id = js(&o)["snapshot"].as_str().unwrap().to_string();
    let m = blobpipe::manifest::catalog::load(&*store, &layout, &id)
        .await
        .unwrap();
    let ti = m.tables.iter().find(|t| t.name == "ti").unwrap();
    // InnoDB's own index behind the foreign key is a source index like any other.
    assert_eq!(
        ti.indexes,
        vec![
            "KEY `ti_state` (`state`,`n`)".to_string(),
            "KEY `ti_run_fk` (`run_id`)".to_string()
        ]
    );
    assert!(
        ti.constraints.contains(&format!(
            "CONSTRAINT `ti_run_fk` FOREIGN KEY (`run_id`) REFERENCES `{src}`.`run` (`id`) ON DELETE CASCADE"
        )),
        "{:?}",
        ti.constraints
    );
    assert!(
        ti.constraints
            .iter()
            .any(|c| c.starts_with("CONSTRAINT `ti_n_positive` CHECK")),
        "{:?}",
        ti.constraints
    );

    // The drill's scratch tables, kept by the test hook: the source's indexes and checks,
    // and the foreign key pointing at the scratch copy of its parent.
    std::env::set_var("BLOBPIPE_TEST_DRILL_KEEP_SCRATCH", "1");
    let rec = blobpipe::pipeline::drill_db::drill_db(
        &p,
        store.clone(),
        &blobpipe::pipeline::drill::DrillOptions {
            snapshot: None,
            scratch_in: None,
        },
        &blobpipe::support::secret::Secret::new(&url),
    )
    .await
    .unwrap();
    std::env::remove_var("BLOBPIPE_TEST_DRILL_KEEP_SCRATCH");
    assert!(rec.ok, "{rec:?}");
    let scratch = rec
        .scratch
        .as_deref()
        .and_then(|s| s.rsplit(' ').next())
        .unwrap()
        .to_string();
    assert!(scratch.starts_with("bp_drill_"), "{scratch}");
    let indexes = |db: String| {
        format!(
            "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) \
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = '{db}' \
             GROUP BY TABLE_NAME, INDEX_NAME, NON_UNIQUE ORDER BY TABLE_NAME, INDEX_NAME"
        )
    };
    let want: Vec<(String, String, i64, String)> = c.query(indexes(src.clone())).await.unwrap();
    let got: Vec<(String, String, i64, String)> = c.query(indexes(scratch.clone())).await.unwrap();
    assert_eq!(got, want);
    assert!(want.iter().any(|r| r.1 == "ti_state") && want.iter().any(|r| r.1 == "run_dag"));
    let fks: Vec<(String, String, String, String)> = c
        .query(format!(
            "SELECT CONSTRAINT_NAME, TABLE_NAME, UNIQUE_CONSTRAINT_SCHEMA, DELETE_RULE \
             FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = '{scratch}'"
        ))
        .await
        .unwrap();
    assert_eq!(
        fks,
        vec![(
            "ti_run_fk".to_string(),
            "ti".to_string(),
            scratch.clone(),
            "CASCADE".to_string()
        )]
    );
    let checks: Vec<String> = c
        .query(format!(
            "SELECT CONSTRAINT_NAME FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = '{scratch}'"
        ))
        .await
        .unwrap();
    assert_eq!(checks, vec!["ti_n_positive".to_string()]);
    c.query_drop(format!("DROP DATABASE {scratch}"))
        .await
        .unwrap();

    // An orphan child row (let in with foreign_key_checks = 0 at the source) fails the
    // drill, as it would fail a real restore; the scratch is dropped.
    c.query_drop(format!(
        "SET SESSION foreign_key_checks = 0; INSERT INTO {src}.ti VALUES (501, 999, 1, 'orphan'); \
         SET SESSION foreign_key_checks = 1"
    ))
    .await
    .unwrap();
    let o = bp(&["backup", s(&pf)]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let (pf2, u2) = (pf.clone(), url.clone());
    let o =
        tokio::task::spawn_blocking(move || bp(&["--json", "drill", s(&pf2), "--scratch-db", &u2]))
            .await
            .unwrap();
    let d = js(&o);
    assert_eq!(code(&o), 1, "{d} {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(d["ok"], false, "{d}");
    assert!(d["error"].as_str().unwrap().contains("ti_run_fk"), "{d}");
    let left: Vec<String> = c
        .query(format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'bp\\_drill\\_{name}\\_%'"
        ))
        .await
        .unwrap();
    assert!(left.is_empty(), "scratch dropped: {left:?}");
}

/// Drops the source databases and any scratch left behind (also on panic).
struct MyCleanup {
    url: String,
    dbs: Vec<String>,
    scratch_like: String,
}

impl Drop for MyCleanup {
    fn drop(&mut self) {
        use mysql_async::prelude::Queryable;
        let (url, dbs, like) = (
            self.url.clone(),
            self.dbs.clone(),
            self.scratch_like.clone(),
        );
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let mut c = mysql_async::Conn::from_url(&url).await.unwrap();
                let left: Vec<String> = c
                    .query(format!(
                        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '{like}'"
                    ))
                    .await
                    .unwrap_or_default();
                for d in dbs.into_iter().chain(left) {
                    let _ = c.query_drop(format!("DROP DATABASE IF EXISTS {d}")).await;
                }
            })
        })
        .join()
        .unwrap();
    }
}
