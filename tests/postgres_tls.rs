//! PostgreSQL TLS (`sslmode`) and libpq environment variables, against the real server.
//!
//! The test server runs with `ssl = on` and Debian's self-signed "snakeoil" certificate
//! (`CN=localhost`, `SAN DNS:localhost`). Skipped with a notice when PostgreSQL is
//! unreachable or has TLS off; failed instead when `BLOBPIPE_REQUIRE_SERVICES=1`.

mod support;

use std::collections::BTreeMap;

use blobpipe::db::postgres::connect;
use blobpipe::db::postgres::{self as pg_conn, session_is_encrypted};
use blobpipe::manifest::records::RunStatus;
use blobpipe::pipeline::{BackupOptions, Pipeline};
use blobpipe::restore::config::Strategy;
use blobpipe::restore::db::{restore_db, DbRestoreOptions};
use blobpipe::support::secret::Secret;

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// `url` with `params` added to its query string (any `sslmode` it had is dropped).
fn with(url: &str, params: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut q: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslmode=") && !p.starts_with("sslrootcert="))
        .collect();
    q.push(params);
    format!("{base}?{}", q.join("&"))
}

/// The test server's URL when it is up and has TLS on.
async fn tls_server() -> Option<String> {
    let url = support::postgres()?;
    let c = connect(&Secret::new(with(&url, "sslmode=disable")), None)
        .await
        .unwrap();
    let on: String = c.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if on == "on" {
        return Some(url);
    }
    if std::env::var("BLOBPIPE_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("the test PostgreSQL has ssl = off but BLOBPIPE_REQUIRE_SERVICES=1");
    }
    eprintln!("SKIPPED: the test PostgreSQL has ssl = off");
    None
}

async fn encrypted(url: &str) -> bool {
    let c = connect(&Secret::new(url), None).await.unwrap();
    session_is_encrypted(&c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_decides_encryption() {
    let Some(url) = tls_server().await else {
        return;
    };
    assert!(!encrypted(&with(&url, "sslmode=disable")).await, "disable");
    assert!(encrypted(&with(&url, "sslmode=prefer")).await, "prefer");
    assert!(encrypted(&with(&url, "sslmode=require")).await, "require");
    // No sslmode at all is libpq's default, prefer.
    let (base, _) = url.split_once('?').unwrap_or((&url, ""));
    assert!(encrypted(base).await, "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_modes_check_the_certificate() {
    let Some(url) = tls_server().await else {
        return;
    };
    let host_is_ip = url.contains("@127.0.0.1") || url.contains("//127.0.0.1");

    // The system roots do not trust a self-signed certificate: a clear, permanent error
    // that names the problem and never the password.
    let secret_url = with(
        &url.replacen(
            "postgres://postgres@",
            "postgres://postgres:hunter2secret@",
            1,
        ),
        "sslmode=verify-full&sslrootcert=system",
    );
    let pw = Secret::new("hunter2secret");
    let Err(e) = connect(&Secret::new(&secret_url), Some(&pw)).await else {
        panic!("verify-full must refuse a self-signed certificate");
    };
    let msg = e.to_string();
    eprintln!("verify-full error: {msg}");
    assert!(msg.contains("TLS handshake failed"), "{msg}");
    assert!(msg.contains("certificate"), "{msg}");
    assert!(msg.contains(" — "), "hint missing: {msg}");
    assert!(!msg.contains("hunter2secret"), "password leaked: {msg}");
    assert!(
        !e.is_retryable(),
        "a bad certificate is not worth retrying: {msg}"
    );

    // Trusting an unrelated CA: the chain fails, verify-ca and verify-full alike.
    let other_ca = "/etc/ssl/certs/ISRG_Root_X1.pem";
    if std::path::Path::new(other_ca).is_file() {
        for mode in ["verify-ca", "verify-full"] {
            let u = with(&url, &format!("sslmode={mode}&sslrootcert={other_ca}"));
            let Err(e) = connect(&Secret::new(u), None).await else {
                panic!("{mode} must refuse a certificate from an untrusted issuer");
            };
            let msg = e.to_string();
            eprintln!("{mode} unknown issuer: {msg}");
            assert!(msg.contains("TLS handshake failed"), "{msg}");
            assert!(msg.to_lowercase().contains("issuer"), "{msg}");
            assert!(msg.contains("sslrootcert"), "hint missing: {msg}");
        }
    }

    if !std::path::Path::new(SNAKEOIL).is_file() {
        eprintln!("SKIPPED (partly): {SNAKEOIL} not readable");
        return;
    }
    let root = format!("sslrootcert={SNAKEOIL}");
    // Trusting the snakeoil certificate itself: verify-ca passes whatever the host name.
    assert!(encrypted(&with(&url, &format!("sslmode=verify-ca&{root}"))).await);
    // require + sslrootcert behaves as verify-ca (libpq).
    assert!(encrypted(&with(&url, &format!("sslmode=require&{root}"))).await);
    if host_is_ip {
        // The certificate names localhost, not 127.0.0.1.
        let full = with(&url, &format!("sslmode=verify-full&{root}"));
        let Err(e) = connect(&Secret::new(full), None).await else {
            panic!("verify-full must refuse a certificate for another name");
        };
        let msg = e.to_string();
        assert!(
            msg.contains("TLS handshake failed") && msg.contains("certificate"),
            "{msg}"
        );
        // …and by its name it verifies fully.
        let by_name = url.replacen("127.0.0.1", "localhost", 1);
        assert!(encrypted(&with(&by_name, &format!("sslmode=verify-full&{root}"))).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libpq_environment_variables_complete_the_url() {
    let Some(url) = tls_server().await else {
        return;
    };
    let u = url::Url::parse(&url).unwrap();
    let vars: Vec<(String, String)> = vec![
        ("PGHOST".into(), u.host_str().unwrap().to_string()),
        ("PGPORT".into(), u.port().unwrap_or(5432).to_string()),
        ("PGUSER".into(), u.username().to_string()),
        ("PGDATABASE".into(), u.path().trim_matches('/').to_string()),
        ("PGSSLMODE".into(), "require".into()),
    ];
    let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let spec = pg_conn::resolve_with(&Secret::new("postgres://"), None, &env).unwrap();
    assert_eq!(spec.ssl, pg_conn::SslMode::Require);
    let c = pg_conn::connect_spec(&spec).await.unwrap();
    assert!(session_is_encrypted(&c).await.unwrap());
    let (db, user): (String, String) = {
        let r = c
            .query_one("SELECT current_database()::text, current_user::text", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(db, u.path().trim_matches('/'));
    assert_eq!(user, u.username());

    // The URL wins over the environment.
    let spec = pg_conn::resolve_with(
        &Secret::new(with("postgres://", "sslmode=disable")),
        None,
        &env,
    )
    .unwrap();
    let c = pg_conn::connect_spec(&spec).await.unwrap();
    assert!(!session_is_encrypted(&c).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_over_tls() {
    let Some(url) = tls_server().await else {
        return;
    };
    let tls_url = with(&url, "sslmode=require");
    let c = connect(&Secret::new(&tls_url), None).await.unwrap();
    let (src, dst) = (
        support::unique_ident("tlssrc"),
        support::unique_ident("tlsdst"),
    );
    c.batch_execute(&format!(
        "CREATE SCHEMA {src}; CREATE SCHEMA {dst};
         CREATE TABLE {src}.t (id bigint PRIMARY KEY, v text);
         INSERT INTO {src}.t SELECT g, 'row ' || g FROM generate_series(1, 5000) g;
         CREATE TABLE {dst}.t (id bigint PRIMARY KEY, v text);"
    ))
    .await
    .unwrap();
    let cleanup = async {
        let _ = c
            .batch_execute(&format!(
                "DROP SCHEMA {src} CASCADE; DROP SCHEMA {dst} CASCADE"
            ))
            .await;
    };

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pg.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"pgtls\"\n[source]\ntype = \"postgres\"\nurl = \"{tls_url}\"\nschemas = [\"{src}\"]\n\
             split_rows = 1000\n[target]\nurl = \"memory://{}\"\n[verify]\nmode = \"full\"\n",
            support::unique_ident("mem")
        ),
    )
    .unwrap();
    let p = Pipeline::load(&path).unwrap();
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let r = blobpipe::pipeline::backup(&p, store.clone(), BackupOptions::default())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
    let m = blobpipe::manifest::catalog::load(&*store, &layout, r.snapshot.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(m.tables.iter().map(|t| t.rows).sum::<u64>(), 5000);

    let mut o = DbRestoreOptions {
        url: Secret::new(&tls_url),
        tables: vec![],
        strategy: Strategy::FailIfNotEmpty,
        strategies: BTreeMap::new(),
        no_transaction: false,
        target_schema: Some(dst.clone()),
    };
    restore_db(&store, &layout, &m, &o).await.unwrap();
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {dst}.t"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5000);

    // restore --to-db refuses an unverifiable server under verify-full, naming the cause.
    o.url = Secret::new(with(&url, "sslmode=verify-full&sslrootcert=system"));
    o.strategy = Strategy::Truncate;
    let e = restore_db(&store, &layout, &m, &o).await.err().unwrap();
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");
    cleanup.await;
}
