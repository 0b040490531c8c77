//! The shipped `pipelines/airflow-metadata.toml` on the real metadata schema of Airflow
//! 2.10.5 (`tests/fixtures/airflow-2.10.5-schema.sql`: what `airflow db migrate` leaves,
//! every table, key, index and foreign key): back up, drop everything, migrate an empty
//! schema again, restore with the pipeline's strategies, and compare counts and contents.
//! Also: which strategies the restore suggests on that schema, and that PostgreSQL's
//! DETAIL line reaches the user.

mod support;

use blobpipe::manifest::records::RunStatus;
use blobpipe::manifest::Manifest;
use blobpipe::pipeline::{BackupOptions, Pipeline};
use blobpipe::restore::config::Strategy;
use blobpipe::restore::db::{restore_db, DbRestoreOptions};
use blobpipe::store::Store;
use blobpipe::support::secret::Secret;
use blobpipe::ErrorKind;
use tokio_postgres::{Client, NoTls};

/// `airflow db migrate` of Airflow 2.10.5, into schema `{s}`.
const MIGRATED: &str = include_str!("fixtures/airflow-2.10.5-schema.sql");

/// A small but complete history: every table the pipeline ships has rows.
const DATA: &str = r#"
INSERT INTO {s}.variable (key, val, description, is_encrypted) VALUES
  ('env', 'prod', NULL, false), ('secret_token', 'gAAAAABm-fernet-ciphertext==', 'encrypted', true),
  ('multiline', E'a\nb,"c"', '', false);
INSERT INTO {s}.connection (conn_id, conn_type, host, login, password, port, is_encrypted, is_extra_encrypted, extra) VALUES
  ('warehouse', 'postgres', 'db.internal', 'etl', 'gAAAAABm-encrypted-password', 5432, true, true, 'gAAAAABm-encrypted-extra'),
  ('http_default', 'http', 'example.com', NULL, NULL, NULL, false, false, NULL);
INSERT INTO {s}.slot_pool (pool, slots, description, include_deferred) VALUES ('etl', 8, 'ETL', true);
INSERT INTO {s}.ab_role (name) VALUES ('Admin'), ('Viewer'), ('etl-operators');
INSERT INTO {s}.ab_permission (name) VALUES ('can_read'), ('can_edit');
INSERT INTO {s}.ab_view_menu (name) VALUES ('DAGs'), ('DAG:etl');
INSERT INTO {s}.ab_permission_view (permission_id, view_menu_id) VALUES (1, 1), (2, 1), (2, 2);
INSERT INTO {s}.ab_permission_view_role (permission_view_id, role_id) VALUES (1, 1), (2, 1), (3, 3), (1, 2);
INSERT INTO {s}.ab_user (first_name, last_name, username, password, active, email, created_on) VALUES
  ('Ada', 'Admin', 'admin', 'pbkdf2:sha256:260000$x$y', true, 'admin@example.com', '2024-01-01'),
  ('Otto', 'Operator', 'otto', 'pbkdf2:sha256:260000$a$b', true, 'otto@example.com', '2024-01-02');
UPDATE {s}.ab_user SET created_by_fk = 1 WHERE id = 2;
INSERT INTO {s}.ab_user_role (user_id, role_id) VALUES (1, 1), (2, 3);
INSERT INTO {s}.dag (dag_id, is_paused, is_active, fileloc, max_active_tasks, max_consecutive_failed_dag_runs, has_task_concurrency_limits, timetable_description)
  SELECT 'dag_' || g, g = 3, true, '/dags/dag_' || g || '.py', 16, 0, false, 'Hourly' FROM generate_series(0, 6) g;
INSERT INTO {s}.job (dag_id, state, job_type, start_date, hostname)
  SELECT 'dag_' || (g % 7), 'success', 'LocalTaskJob', timestamptz '2024-02-01' - g * interval '1 minute', 'worker-1' FROM generate_series(1, 300) g;
INSERT INTO {s}.dag_run (dag_id, execution_date, state, run_id, run_type, conf, log_template_id, data_interval_start, clear_number)
  SELECT 'dag_' || (g % 7), timestamptz '2024-01-01' + g * interval '1 hour', CASE WHEN g = 200 THEN 'running' ELSE 'success' END,
         'scheduled__' || g, 'scheduled', '\x80049500'::bytea, 1, timestamptz '2024-01-01' + g * interval '1 hour', 0
  FROM generate_series(1, 200) g;
INSERT INTO {s}.dag_run_note (user_id, dag_run_id, content, created_at, updated_at) VALUES (1, 5, 'rerun after the outage', '2024-01-02', '2024-01-02');
INSERT INTO {s}.trigger (classpath, kwargs, created_date) VALUES ('airflow.triggers.temporal.DateTimeTrigger', '{"moment": "2030-01-01"}', '2024-01-01');
INSERT INTO {s}.task_instance (task_id, dag_id, run_id, map_index, state, try_number, max_tries, pool, pool_slots, duration, next_kwargs, trigger_id, priority_weight, operator)
  SELECT 't' || t, d.dag_id, d.run_id, -1, CASE WHEN t = 3 THEN 'failed' WHEN t = 4 AND d.id = 1 THEN 'deferred' ELSE 'success' END, 1, 0, 'default_pool', 1, 1.5 * t,
         CASE WHEN t = 2 THEN '{"k": [1, 2]}'::json END, CASE WHEN t = 4 AND d.id = 1 THEN 1 END, 1, 'PythonOperator'
  FROM {s}.dag_run d, generate_series(1, 4) t;
INSERT INTO {s}.task_instance_note (user_id, task_id, dag_id, run_id, map_index, content, created_at, updated_at)
  SELECT 2, task_id, dag_id, run_id, map_index, 'flaky upstream', '2024-01-03', '2024-01-03' FROM {s}.task_instance WHERE state = 'failed' LIMIT 3;
INSERT INTO {s}.task_instance_history (task_id, dag_id, run_id, map_index, try_number, state, pool, pool_slots)
  SELECT task_id, dag_id, run_id, map_index, 1, 'up_for_retry', pool, pool_slots FROM {s}.task_instance WHERE state = 'failed';
INSERT INTO {s}.task_fail (task_id, dag_id, run_id, map_index, duration)
  SELECT task_id, dag_id, run_id, map_index, 3 FROM {s}.task_instance WHERE state = 'failed';
INSERT INTO {s}.task_reschedule (task_id, dag_id, run_id, map_index, try_number, start_date, end_date, duration, reschedule_date)
  SELECT task_id, dag_id, run_id, map_index, 1, '2024-01-01', '2024-01-01 00:01', 60, '2024-01-01 00:05' FROM {s}.task_instance WHERE task_id = 't1' LIMIT 10;
INSERT INTO {s}.task_map (dag_id, task_id, run_id, map_index, length, keys)
  SELECT dag_id, task_id, run_id, map_index, 3, NULL FROM {s}.task_instance WHERE task_id = 't2' LIMIT 5;
INSERT INTO {s}.xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, value, timestamp)
  SELECT d.id, ti.task_id, ti.map_index, 'return_value', ti.dag_id, ti.run_id, convert_to('{"rows": ' || d.id || '}', 'UTF8'), '2024-01-01'
  FROM {s}.task_instance ti JOIN {s}.dag_run d USING (dag_id, run_id) WHERE ti.task_id IN ('t1', 't2');
INSERT INTO {s}.sla_miss (task_id, dag_id, execution_date, email_sent, notification_sent) VALUES ('t1', 'dag_1', '2024-01-01 01:00+00', true, true);
INSERT INTO {s}.log (dttm, dag_id, task_id, event, owner, extra)
  SELECT timestamptz '2024-02-01' - g * interval '1 second', 'dag_' || (g % 7), 't1', 'cli_task_run', 'airflow', '{"host_name": "w1"}' FROM generate_series(1, 3000) g;
INSERT INTO {s}.dataset (uri, extra, created_at, updated_at, is_orphaned) VALUES
  ('s3://lake/orders', '{}', '2024-01-01', '2024-01-01', false), ('s3://lake/customers', '{}', '2024-01-01', '2024-01-01', false);
INSERT INTO {s}.dataset_alias (name) VALUES ('daily-exports');
INSERT INTO {s}.dataset_alias_dataset (alias_id, dataset_id) VALUES (1, 1);
INSERT INTO {s}.dataset_event (dataset_id, extra, source_task_id, source_dag_id, source_run_id, source_map_index, timestamp)
  SELECT 1 + g % 2, '{}', 't1', 'dag_1', 'scheduled__' || g, -1, timestamptz '2024-01-01' + g * interval '1 hour' FROM generate_series(1, 20) g;
INSERT INTO {s}.dataset_alias_dataset_event (alias_id, event_id) VALUES (1, 1);
INSERT INTO {s}.dagrun_dataset_event (dag_run_id, event_id) VALUES (2, 1), (2, 2);
INSERT INTO {s}.dataset_dag_run_queue (dataset_id, target_dag_id, created_at) VALUES (1, 'dag_2', '2024-01-09');
"#;

/// The tables the shipped pipeline backs up (docs/databases.md#which-tables).
const TABLES: [&str; 32] = [
    "variable",
    "connection",
    "slot_pool",
    "log_template",
    "dag",
    "dag_run",
    "dag_run_note",
    "task_instance",
    "task_instance_note",
    "task_instance_history",
    "task_fail",
    "task_reschedule",
    "task_map",
    "xcom",
    "trigger",
    "sla_miss",
    "job",
    "log",
    "dataset",
    "dataset_alias",
    "dataset_alias_dataset",
    "dataset_event",
    "dataset_alias_dataset_event",
    "dagrun_dataset_event",
    "dataset_dag_run_queue",
    "ab_user",
    "ab_role",
    "ab_user_role",
    "ab_permission",
    "ab_view_menu",
    "ab_permission_view",
    "ab_permission_view_role",
];

async fn client(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

async fn fingerprint(c: &Client, s: &str, t: &str) -> (i64, String) {
    let r = c
        .query_one(
            &format!("SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {s}.{t} x"),
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// A schema with the migrated Airflow tables and the data, backed up with the shipped
/// pipeline into a memory store.
struct Backed {
    c: Client,
    url: String,
    s: String,
    p: Pipeline,
    store: Store,
    m: Manifest,
}

impl Backed {
    fn sql(&self, text: &str) -> String {
        text.replace("{s}", &self.s)
    }

    /// Drop the schema and migrate it again: the new, empty environment.
    async fn new_environment(&self) {
        self.c
            .batch_execute(&format!(
                "DROP SCHEMA {0} CASCADE; CREATE SCHEMA {0}",
                self.s
            ))
            .await
            .unwrap();
        self.c.batch_execute(&self.sql(MIGRATED)).await.unwrap();
    }

    fn opts(&self) -> DbRestoreOptions {
        DbRestoreOptions {
            url: Secret::new(&self.url),
            tables: vec![],
            strategy: self.p.restore.strategy,
            strategies: self.p.restore.tables.clone(),
            no_transaction: false,
            target_schema: None,
        }
    }

    async fn restore(
        &self,
        o: &DbRestoreOptions,
    ) -> blobpipe::Result<blobpipe::restore::db::DbRestoreReport> {
        let layout = blobpipe::manifest::layout::Layout::new(&self.p.target.prefix);
        restore_db(&self.store, &layout, &self.m, o).await
    }
}

impl Drop for Backed {
    fn drop(&mut self) {
        let (url, s) = (self.url.clone(), self.s.clone());
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let c = client(&url).await;
                let _ = c
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                    .await;
            })
        })
        .join()
        .unwrap();
    }
}

/// The shipped pipeline's environment is process-wide: tests that load it take turns.
static ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn backed(url: &str) -> Backed {
    let s = support::unique_ident("airflow");
    let c = client(url).await;
    c.batch_execute(&format!("CREATE SCHEMA {s}"))
        .await
        .unwrap();
    c.batch_execute(&MIGRATED.replace("{s}", &s)).await.unwrap();
    c.batch_execute(&DATA.replace("{s}", &s)).await.unwrap();
    let p = {
        let _env = ENV.lock().await;
        std::env::set_var("AIRFLOW_DB_URL", url);
        std::env::set_var("AIRFLOW_DB_SCHEMA", &s);
        std::env::set_var("BLOBPIPE_TARGET_URL", format!("memory://{s}"));
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("pipelines/airflow-metadata.toml");
        Pipeline::load(&file).unwrap()
    };
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let r = blobpipe::pipeline::backup(&p, store.clone(), BackupOptions::default())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Ok);
    assert!(r.verify.as_ref().unwrap().ok());
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    let m = blobpipe::manifest::catalog::load(&*store, &layout, r.snapshot.as_ref().unwrap())
        .await
        .unwrap();
    Backed {
        c,
        url: url.to_string(),
        s,
        p,
        store,
        m,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_metadata_backup_drop_restore() {
    let Some(url) = support::postgres() else {
        return;
    };
    let b = backed(&url).await;
    assert_eq!(b.p.schedule.as_deref(), Some("0 * * * *"));
    assert_eq!(b.p.verify.mode, blobpipe::verify::config::VerifyMode::Full);
    let mut names: Vec<&str> = b.m.tables.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    let mut want = TABLES.to_vec();
    want.sort();
    assert_eq!(names, want, "the shipped table set");
    let mut before = Vec::new();
    for t in TABLES {
        let f = fingerprint(&b.c, &b.s, t).await;
        assert!(f.0 > 0, "{t} has rows in the fixture");
        before.push(f);
    }

    // Disaster: the database is gone. A new environment runs `airflow db migrate`.
    b.new_environment().await;
    let rep = b.restore(&b.opts()).await.unwrap();
    let order: Vec<&str> = rep
        .tables
        .iter()
        .map(|t| t.table.rsplit('.').next().unwrap())
        .collect();
    let pos = |n: &str| order.iter().position(|t| *t == n).unwrap();
    assert!(pos("log_template") < pos("dag_run"));
    assert!(pos("dag_run") < pos("task_instance"));
    assert!(pos("trigger") < pos("task_instance"));
    assert!(pos("task_instance") < pos("task_fail"));
    assert!(pos("task_instance") < pos("xcom"));
    assert!(pos("ab_user") < pos("task_instance_note"));
    assert!(pos("dataset_event") < pos("dagrun_dataset_event"));
    for (t, b4) in TABLES.iter().zip(&before) {
        assert_eq!(&fingerprint(&b.c, &b.s, t).await, b4, "{t}");
    }
    // The new environment can keep writing (sequences advanced past restored ids).
    b.c.batch_execute(&b.sql(
        "INSERT INTO {s}.log (dttm, event) VALUES (now(), 'after-restore');
         INSERT INTO {s}.dag_run (dag_id, execution_date, run_id, run_type, clear_number) VALUES ('d', now(), 'manual__1', 'manual', 0);
         INSERT INTO {s}.ab_user (first_name, last_name, username, email) VALUES ('N', 'N', 'new', 'n@example.com');",
    ))
    .await
    .unwrap();
}

/// Issue 14: on the real schema, tables outside the snapshot (`rendered_task_instance_fields`,
/// `dag_tag`, …) reference restored ones, so PostgreSQL's `TRUNCATE` cannot empty them:
/// the restore must not suggest it, and refuses it before writing, naming the referrers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_is_suggested_only_where_it_can_work() {
    let Some(url) = support::postgres() else {
        return;
    };
    let b = backed(&url).await;
    // The database still holds everything: fail-if-not-empty refuses every table.
    let e = b.restore(&b.opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    let msg = e.to_string();
    let line = |t: &str| {
        msg.lines()
            .find(|l| l.contains(&format!("{}.{t} has", b.s)))
            .unwrap_or_else(|| panic!("no line for {t}: {msg}"))
            .to_string()
    };
    // task_instance: referenced by rendered_task_instance_fields, outside the snapshot.
    let ti = line("task_instance");
    assert!(ti.contains("task_instance=skip-existing|append"), "{ti}");
    assert!(ti.contains("truncate cannot work"), "{ti}");
    assert!(ti.contains("rendered_task_instance_fields"), "{ti}");
    // dag: dag_tag, dag_owner_attributes, … are outside.
    assert!(line("dag").contains("dag_tag"), "{msg}");
    // xcom: nothing references it, so truncate can work and is offered.
    assert!(
        line("xcom").contains("xcom=skip-existing|truncate|append"),
        "{msg}"
    );

    // Asked for anyway: refused before anything is written, naming who references it.
    let mut o = b.opts();
    o.strategy = Strategy::Truncate;
    o.strategies.clear();
    let before = fingerprint(&b.c, &b.s, "xcom").await;
    let e = b.restore(&o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "{0}.task_instance: truncate cannot empty it: {0}.rendered_task_instance_fields",
            b.s
        )),
        "{msg}"
    );
    assert!(!msg.contains(&format!("{}.xcom: truncate", b.s)), "{msg}");
    assert_eq!(
        fingerprint(&b.c, &b.s, "xcom").await,
        before,
        "nothing written"
    );

    // Truncating only tables nobody outside references works.
    let mut o = b.opts();
    o.tables = vec!["xcom".into(), "task_map".into()];
    o.strategy = Strategy::Truncate;
    o.strategies.clear();
    let rep = b.restore(&o).await.unwrap();
    assert_eq!(rep.tables.len(), 2);
    assert_eq!(fingerprint(&b.c, &b.s, "xcom").await, before);
}

/// Issue 14: a server error keeps PostgreSQL's DETAIL (the key and the table it is
/// missing from) and is a failure of the restore's destination, not of a "source".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_keep_detail_and_are_destination_errors() {
    let Some(url) = support::postgres() else {
        return;
    };
    let b = backed(&url).await;
    b.new_environment().await;
    // task_instance alone, into a database without its dag runs: a foreign-key violation.
    let mut o = b.opts();
    o.tables = vec!["task_instance".into()];
    let e = b.restore(&o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Destination, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("violates foreign key constraint"), "{msg}");
    assert!(
        msg.contains("DETAIL: Key (dag_id, run_id)=(")
            && msg.contains("is not present in table \"dag_run\""),
        "{msg}"
    );
    assert!(msg.contains("rolled back"), "{msg}");
    assert_eq!(fingerprint(&b.c, &b.s, "task_instance").await.0, 0);
}
