//! MySQL/MariaDB TLS (`sslmode`) and `MYSQL_PWD`, against a second, TLS-only MariaDB.
//!
//! `scripts/mariadb-tls start` (called by `scripts/test`) runs it with
//! `require_secure_transport=ON` and a certificate for `DNS:localhost` signed by a test CA,
//! and writes `.tools/mariadb-tls.env` (`BLOBPIPE_TEST_MYSQL_TLS_URL`,
//! `BLOBPIPE_TEST_MYSQL_TLS_CA`, `BLOBPIPE_TEST_MYSQL_TLS_OTHER_CA`). Skipped with a notice
//! when those are unset; failed instead when `BLOBPIPE_REQUIRE_SERVICES=1`.

mod support;

use std::collections::BTreeMap;

use blobpipe::db::mysql::{self as my, connect, session_cipher, SslMode};
use blobpipe::manifest::records::RunStatus;
use blobpipe::pipeline::{BackupOptions, Pipeline};
use blobpipe::restore::config::Strategy;
use blobpipe::restore::db::{restore_db, DbRestoreOptions};
use blobpipe::support::secret::Secret;
use mysql_async::prelude::Queryable;

struct Tls {
    /// `mysql://bp:<pw>@127.0.0.1:<port>/test`
    url: String,
    ca: String,
    other_ca: String,
}

fn tls_server() -> Option<Tls> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("BLOBPIPE_TEST_MYSQL_TLS_URL"),
        get("BLOBPIPE_TEST_MYSQL_TLS_CA"),
        get("BLOBPIPE_TEST_MYSQL_TLS_OTHER_CA"),
    ) {
        (Some(url), Some(ca), Some(other_ca)) => Some(Tls { url, ca, other_ca }),
        _ => {
            if std::env::var("BLOBPIPE_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!(
                    "BLOBPIPE_TEST_MYSQL_TLS_URL unset but BLOBPIPE_REQUIRE_SERVICES=1: \
                     run scripts/mariadb-tls start and source .tools/mariadb-tls.env"
                );
            }
            eprintln!("SKIPPED: no TLS MariaDB (scripts/mariadb-tls start)");
            None
        }
    }
}

/// `url` with `params` as its query string.
fn with(url: &str, params: &str) -> String {
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    if params.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{params}")
    }
}

fn password_of(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .password()
        .unwrap()
        .to_string()
}

async fn cipher(url: &str) -> Option<String> {
    let mut c = connect(&Secret::new(url), None).await.unwrap();
    let cipher = session_cipher(&mut c).await.unwrap();
    let _ = c.disconnect().await;
    cipher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_prefer_and_default_connect_encrypted() {
    let Some(t) = tls_server() else {
        return;
    };
    for params in ["sslmode=require", "sslmode=prefer", "", "ssl-mode=REQUIRED"] {
        let c = cipher(&with(&t.url, params)).await;
        eprintln!("{params:?}: Ssl_cipher = {c:?}");
        assert!(c.is_some(), "{params:?} must be encrypted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_is_refused_by_the_server_with_a_clear_message() {
    let Some(t) = tls_server() else {
        return;
    };
    let pw = password_of(&t.url);
    let Err(e) = connect(&Secret::new(with(&t.url, "sslmode=disable")), None).await else {
        panic!("require_secure_transport=ON must refuse a plain connection");
    };
    let msg = e.to_string();
    eprintln!("disable: {msg}");
    assert!(msg.contains("sslmode=disable"), "{msg}");
    assert!(msg.contains("require_secure_transport"), "{msg}");
    assert!(msg.contains("use sslmode=require"), "{msg}");
    assert!(!msg.contains(&pw), "password leaked: {msg}");
    assert!(!e.is_retryable(), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_modes_check_the_certificate() {
    let Some(t) = tls_server() else {
        return;
    };
    let pw = password_of(&t.url);
    // An unrelated CA: verify-full, verify-ca and require-with-a-root all refuse, naming
    // the problem (unknown issuer) and the fix, never the password.
    for mode in ["verify-full", "verify-ca", "require"] {
        let u = with(
            &t.url,
            &format!("sslmode={mode}&sslrootcert={}", t.other_ca),
        );
        let Err(e) = connect(&Secret::new(u), None).await else {
            panic!("{mode} must refuse a certificate from an untrusted issuer");
        };
        let msg = e.to_string();
        eprintln!("{mode} with the wrong CA: {msg}");
        assert!(msg.contains("TLS handshake failed"), "{msg}");
        assert!(msg.contains("certificate"), "{msg}");
        assert!(msg.to_lowercase().contains("issuer"), "{msg}");
        assert!(msg.contains("sslrootcert"), "hint missing: {msg}");
        assert!(!msg.contains(&pw), "password leaked: {msg}");
        assert!(!e.is_retryable(), "{msg}");
    }
    // The system roots do not know the test CA either.
    let u = with(&t.url, "sslmode=verify-full&sslrootcert=system");
    let e = connect(&Secret::new(u), None).await.err().unwrap();
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");

    // The right CA: verify-ca passes whatever the host name (127.0.0.1 is not in the
    // certificate), MySQL's spelling too.
    let root = format!("sslrootcert={}", t.ca);
    assert!(cipher(&with(&t.url, &format!("sslmode=verify-ca&{root}")))
        .await
        .is_some());
    assert!(cipher(&with(
        &t.url,
        &format!("ssl-mode=VERIFY_CA&ssl-ca={}", t.ca)
    ))
    .await
    .is_some());
    // verify-full by IP: the certificate names localhost only.
    let full = with(&t.url, &format!("sslmode=verify-full&{root}"));
    let e = connect(&Secret::new(full), None).await.err().unwrap();
    let msg = e.to_string();
    eprintln!("verify-full by IP: {msg}");
    assert!(msg.contains("not valid for name"), "{msg}");
    assert!(msg.contains("sslmode=verify-ca"), "hint missing: {msg}");
    // …and by the name it holds, it verifies fully.
    let by_name = t.url.replacen("127.0.0.1", "localhost", 1);
    assert!(
        cipher(&with(&by_name, &format!("sslmode=verify-full&{root}")))
            .await
            .is_some()
    );

    // An unreadable sslrootcert is a configuration error naming the file.
    let u = with(
        &t.url,
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    );
    let e = connect(&Secret::new(u), None).await.err().unwrap();
    assert_eq!(e.kind(), blobpipe::ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_pwd_completes_a_url_without_password() {
    let Some(t) = tls_server() else {
        return;
    };
    let pw = password_of(&t.url);
    let no_pw = with(
        &t.url.replacen(&format!(":{pw}@"), "@", 1),
        "sslmode=require",
    );
    let env = |k: &str| (k == "MYSQL_PWD").then(|| pw.clone());
    let spec = my::resolve_with(&Secret::new(&no_pw), None, &env).unwrap();
    assert_eq!(spec.ssl, SslMode::Require);
    let mut c = my::connect_spec(&spec).await.unwrap();
    assert!(session_cipher(&mut c).await.unwrap().is_some());
    let user: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert!(user.unwrap().starts_with("bp@"));
    // Without it the login is refused.
    let spec = my::resolve_with(&Secret::new(&no_pw), None, &|_| None).unwrap();
    assert!(my::connect_spec(&spec).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_over_tls() {
    let Some(t) = tls_server() else {
        return;
    };
    let tls_url = with(&t.url, &format!("sslmode=verify-ca&sslrootcert={}", t.ca));
    let mut c = connect(&Secret::new(&tls_url), None).await.unwrap();
    let (src, dst) = (
        support::unique_ident("mtlssrc"),
        support::unique_ident("mtlsdst"),
    );
    for d in [&src, &dst] {
        c.query_drop(format!("CREATE DATABASE {d}")).await.unwrap();
        c.query_drop(format!(
            "CREATE TABLE {d}.t (id BIGINT PRIMARY KEY, v VARCHAR(100), b BLOB) ENGINE=InnoDB"
        ))
        .await
        .unwrap();
    }
    c.query_drop(format!(
        "INSERT INTO {src}.t SELECT seq, CONCAT('row ', seq), UNHEX(MD5(seq)) FROM seq_1_to_5000"
    ))
    .await
    .unwrap();

    let src_url = tls_url.replacen("/test?", &format!("/{src}?"), 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("my.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"mytls\"\n[source]\ntype = \"mysql\"\nurl = \"{src_url}\"\n\
             [target]\nurl = \"memory://{}\"\n[verify]\nmode = \"full\"\n",
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
    let rep = restore_db(&store, &layout, &m, &o).await.unwrap();
    assert!(rep.tables.iter().all(|t| t.checksum_checked));
    let sums: Vec<Option<(String, Option<u64>)>> = {
        let mut v = Vec::new();
        for d in [&src, &dst] {
            v.push(
                c.query_first(format!("CHECKSUM TABLE {d}.t"))
                    .await
                    .unwrap(),
            );
        }
        v
    };
    assert_eq!(sums[0].as_ref().unwrap().1, sums[1].as_ref().unwrap().1);

    // This server has local_infile off (as MySQL 8 by default): the restore above
    // loaded with INSERTs. One that tries LOAD DATA LOCAL anyway is refused by the
    // server and falls back cleanly, with nothing loaded twice.
    let infile: Option<i64> = c.query_first("SELECT @@local_infile").await.unwrap();
    assert_eq!(
        infile,
        Some(0),
        "scripts/mariadb-tls starts it with --local-infile=0"
    );
    let before = com_load(&mut c).await;
    std::env::set_var("BLOBPIPE_TEST_MYSQL_LOAD", "try-infile");
    o.strategy = Strategy::Truncate;
    let rep = restore_db(&store, &layout, &m, &o).await.unwrap();
    std::env::remove_var("BLOBPIPE_TEST_MYSQL_LOAD");
    assert!(rep
        .tables
        .iter()
        .all(|t| t.checksum_checked && t.rows_after == 5000));
    assert!(com_load(&mut c).await > before, "LOAD DATA was tried");
    let again: Option<(String, Option<u64>)> = c
        .query_first(format!("CHECKSUM TABLE {dst}.t"))
        .await
        .unwrap();
    assert_eq!(again.unwrap().1, sums[0].as_ref().unwrap().1);

    // restore --to-db refuses a server it cannot verify, naming the cause; and a plain
    // connection is refused by the server.
    o.url = Secret::new(with(
        &t.url,
        &format!("sslmode=verify-full&sslrootcert={}", t.other_ca),
    ));
    o.strategy = Strategy::Truncate;
    let e = restore_db(&store, &layout, &m, &o).await.err().unwrap();
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");
    o.url = Secret::new(with(&t.url, "sslmode=disable"));
    let e = restore_db(&store, &layout, &m, &o).await.err().unwrap();
    assert!(e.to_string().contains("require_secure_transport"), "{e}");

    for d in [&src, &dst] {
        let _ = c.query_drop(format!("DROP DATABASE {d}")).await;
    }
}

/// LOAD DATA statements the server has run (tried ones included).
async fn com_load(c: &mut mysql_async::Conn) -> u64 {
    let row: Option<(String, u64)> = c
        .query_first("SHOW GLOBAL STATUS LIKE 'Com_load'")
        .await
        .unwrap();
    row.unwrap().1
}
