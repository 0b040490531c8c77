//! The shipped `pipelines/airflow-metadata.toml` on a schema shaped like Airflow's
//! metadata database (hand-written minimal DDL with the real tables' keys and foreign
//! keys): back up, drop everything, re-create the empty "freshly migrated" schema,
//! restore with the pipeline's strategies, and compare counts and contents.

mod support;

use blobpipe::manifest::records::RunStatus;
use blobpipe::pipeline::{BackupOptions, Pipeline};
use blobpipe::restore::db::{restore_db, DbRestoreOptions};
use blobpipe::support::secret::Secret;
use tokio_postgres::{Client, NoTls};

const DDL: &str = r#"
CREATE TABLE {s}.log_template (id serial PRIMARY KEY, filename text NOT NULL, elasticsearch_id text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE {s}.variable (id serial PRIMARY KEY, key varchar(250) UNIQUE, val text, description text, is_encrypted boolean);
CREATE TABLE {s}.connection (id serial PRIMARY KEY, conn_id varchar(250) NOT NULL UNIQUE, conn_type varchar(500) NOT NULL, description text, host varchar(500), schema varchar(500), login text, password text, port int, is_encrypted boolean, is_extra_encrypted boolean, extra text);
CREATE TABLE {s}.slot_pool (id serial PRIMARY KEY, pool varchar(256) UNIQUE, slots int, description text, include_deferred boolean NOT NULL);
CREATE TABLE {s}.log (id serial PRIMARY KEY, dttm timestamptz, dag_id varchar(250), task_id varchar(250), map_index int, event varchar(60), execution_date timestamptz, run_id varchar(250), owner varchar(500), extra text);
CREATE TABLE {s}.job (id serial PRIMARY KEY, dag_id varchar(250), state varchar(20), job_type varchar(30), start_date timestamptz, end_date timestamptz, latest_heartbeat timestamptz, executor_class varchar(500), hostname varchar(500), unixname varchar(1000));
CREATE TABLE {s}.dag_run (id serial PRIMARY KEY, dag_id varchar(250) NOT NULL, queued_at timestamptz, execution_date timestamptz NOT NULL, start_date timestamptz, end_date timestamptz, state varchar(50), run_id varchar(250) NOT NULL, creating_job_id int, external_trigger boolean, run_type varchar(50) NOT NULL, conf bytea, data_interval_start timestamptz, data_interval_end timestamptz, log_template_id int REFERENCES {s}.log_template(id), updated_at timestamptz, clear_number int NOT NULL DEFAULT 0, UNIQUE (dag_id, run_id), UNIQUE (dag_id, execution_date));
CREATE TABLE {s}.trigger (id serial PRIMARY KEY, classpath varchar(1000) NOT NULL, kwargs text NOT NULL, created_date timestamptz NOT NULL, triggerer_id int);
CREATE TABLE {s}.task_instance (task_id varchar(250) NOT NULL, dag_id varchar(250) NOT NULL, run_id varchar(250) NOT NULL, map_index int NOT NULL DEFAULT -1, start_date timestamptz, end_date timestamptz, duration float8, state varchar(20), try_number int, max_tries int DEFAULT -1, hostname varchar(1000), job_id int, pool varchar(256) NOT NULL, pool_slots int NOT NULL, queue varchar(256), priority_weight int, operator varchar(1000), queued_dttm timestamptz, pid int, executor_config bytea, updated_at timestamptz, trigger_id int REFERENCES {s}.trigger(id) ON DELETE CASCADE, next_method varchar(1000), next_kwargs json, PRIMARY KEY (dag_id, task_id, run_id, map_index), FOREIGN KEY (dag_id, run_id) REFERENCES {s}.dag_run(dag_id, run_id) ON DELETE CASCADE);
CREATE TABLE {s}.task_fail (id serial PRIMARY KEY, task_id varchar(250) NOT NULL, dag_id varchar(250) NOT NULL, run_id varchar(250) NOT NULL, map_index int NOT NULL DEFAULT -1, start_date timestamptz, end_date timestamptz, duration int, FOREIGN KEY (dag_id, task_id, run_id, map_index) REFERENCES {s}.task_instance(dag_id, task_id, run_id, map_index) ON DELETE CASCADE);
CREATE TABLE {s}.xcom (dag_run_id int NOT NULL, task_id varchar(250) NOT NULL, map_index int NOT NULL DEFAULT -1, key varchar(512) NOT NULL, dag_id varchar(250) NOT NULL, run_id varchar(250) NOT NULL, value bytea, timestamp timestamptz NOT NULL, PRIMARY KEY (dag_run_id, task_id, map_index, key));
"#;

/// What `airflow db migrate` and the first scheduler start leave in an empty database.
const MIGRATED: &str = r#"
INSERT INTO {s}.log_template (filename, elasticsearch_id, created_at) VALUES
  ('dag_id={{ ti.dag_id }}/run_id={{ ti.run_id }}/task_id={{ ti.task_id }}/attempt={{ try_number }}.log', '{dag_id}-{task_id}-{run_id}-{map_index}-{try_number}', '2024-01-01 00:00:00+00');
INSERT INTO {s}.slot_pool (pool, slots, description, include_deferred) VALUES ('default_pool', 128, 'Default pool', false);
"#;

const DATA: &str = r#"
INSERT INTO {s}.variable (key, val, description, is_encrypted) VALUES
  ('env', 'prod', NULL, false), ('secret_token', 'gAAAAABm-fernet-ciphertext==', 'encrypted', true),
  ('multiline', E'a\nb,"c"', '', false);
INSERT INTO {s}.connection (conn_id, conn_type, host, login, password, port, is_encrypted, is_extra_encrypted, extra) VALUES
  ('warehouse', 'postgres', 'db.internal', 'etl', 'gAAAAABm-encrypted-password', 5432, true, true, 'gAAAAABm-encrypted-extra'),
  ('http_default', 'http', 'example.com', NULL, NULL, NULL, false, false, NULL);
INSERT INTO {s}.slot_pool (pool, slots, description, include_deferred) VALUES ('etl', 8, 'ETL', true);
INSERT INTO {s}.job (dag_id, state, job_type, start_date, hostname)
  SELECT 'dag_' || (g % 7), 'success', 'LocalTaskJob', now() - g * interval '1 minute', 'worker-1' FROM generate_series(1, 300) g;
INSERT INTO {s}.dag_run (dag_id, execution_date, state, run_id, run_type, conf, log_template_id, data_interval_start)
  SELECT 'dag_' || (g % 7), timestamptz '2024-01-01' + g * interval '1 hour', 'success',
         'scheduled__' || g, 'scheduled', '\x80049500'::bytea, 1, timestamptz '2024-01-01' + g * interval '1 hour'
  FROM generate_series(1, 200) g;
INSERT INTO {s}.trigger (classpath, kwargs, created_date) VALUES ('airflow.triggers.temporal.DateTimeTrigger', '{"moment": "2030-01-01"}', now());
INSERT INTO {s}.task_instance (task_id, dag_id, run_id, state, try_number, pool, pool_slots, duration, next_kwargs, trigger_id)
  SELECT 't' || t, d.dag_id, d.run_id, CASE WHEN t = 3 THEN 'failed' ELSE 'success' END, 1, 'default_pool', 1, 1.5 * t,
         CASE WHEN t = 2 THEN '{"k": [1, 2]}'::json END, CASE WHEN t = 4 AND d.id = 1 THEN 1 END
  FROM {s}.dag_run d, generate_series(1, 4) t;
INSERT INTO {s}.task_fail (task_id, dag_id, run_id, start_date, end_date, duration)
  SELECT task_id, dag_id, run_id, start_date, end_date, 3 FROM {s}.task_instance WHERE state = 'failed';
INSERT INTO {s}.log (dttm, dag_id, task_id, event, owner, extra)
  SELECT now() - g * interval '1 second', 'dag_' || (g % 7), 't1', 'cli_task_run', 'airflow', '{"host_name": "w1"}' FROM generate_series(1, 3000) g;
INSERT INTO {s}.xcom VALUES (1, 't1', -1, 'return_value', 'dag_1', 'scheduled__1', '\x01', now());
"#;

const TABLES: [&str; 10] = [
    "variable",
    "connection",
    "slot_pool",
    "log",
    "job",
    "dag_run",
    "trigger",
    "task_instance",
    "task_fail",
    "log_template",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_metadata_backup_drop_restore() {
    let Some(url) = support::postgres() else {
        return;
    };
    let s = support::unique_ident("airflow");
    let c = client(&url).await;
    let setup = |sql: &str| sql.replace("{s}", &s);
    c.batch_execute(&format!("CREATE SCHEMA {s}"))
        .await
        .unwrap();
    c.batch_execute(&setup(DDL)).await.unwrap();
    c.batch_execute(&setup(MIGRATED)).await.unwrap();
    c.batch_execute(&setup(DATA)).await.unwrap();
    let mut before = Vec::new();
    for t in TABLES {
        before.push(fingerprint(&c, &s, t).await);
    }

    // The shipped pipeline file, pointed at this schema and a memory store.
    std::env::set_var("AIRFLOW_DB_URL", &url);
    std::env::set_var("AIRFLOW_DB_SCHEMA", &s);
    std::env::set_var("BLOBPIPE_TARGET_URL", format!("memory://{s}"));
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/airflow-metadata.toml");
    let p = Pipeline::load(&file).unwrap();
    assert_eq!(p.schedule.as_deref(), Some("0 * * * *"));
    assert_eq!(p.verify.mode, blobpipe::verify::config::VerifyMode::Full);
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
    let mut names: Vec<&str> = m.tables.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    let mut want = TABLES.to_vec();
    want.sort();
    assert_eq!(names, want, "xcom is optional and off by default");

    // Disaster: the database is gone. A new environment runs `airflow db migrate`.
    c.batch_execute(&format!("DROP SCHEMA {s} CASCADE; CREATE SCHEMA {s}"))
        .await
        .unwrap();
    c.batch_execute(&setup(DDL)).await.unwrap();
    c.batch_execute(&setup(MIGRATED)).await.unwrap();

    let opts = DbRestoreOptions {
        url: Secret::new(&url),
        tables: vec![],
        strategy: p.restore.strategy,
        strategies: p.restore.tables.clone(),
        no_transaction: false,
        target_schema: None,
    };
    let rep = restore_db(&store, &layout, &m, &opts).await.unwrap();
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
    for (t, b) in TABLES.iter().zip(&before) {
        assert_eq!(&fingerprint(&c, &s, t).await, b, "{t}");
    }
    // Every table's stored count and checksum matched inside the transaction; the new
    // environment can keep writing (sequences advanced past restored ids).
    c.batch_execute(&setup(
        "INSERT INTO {s}.log (dttm, event) VALUES (now(), 'after-restore');
         INSERT INTO {s}.dag_run (dag_id, execution_date, run_id, run_type) VALUES ('d', now(), 'manual__1', 'manual');",
    ))
    .await
    .unwrap();
    c.batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}
