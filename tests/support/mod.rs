//! Shared helpers for integration tests that need external services.
//!
//! Services are optional on a developer machine and mandatory in CI: a test asks
//! [`azurite`] for the emulator endpoint; when `AZURITE_BLOB_ENDPOINT` is unset it prints a
//! skip notice and the test returns early, unless `BLOBPIPE_REQUIRE_SERVICES=1` (set by
//! `scripts/test`), in which case a missing service fails the test.

#![allow(dead_code)]

pub mod faultproxy;
pub mod standin;

/// The Azurite blob endpoint (`http://127.0.0.1:PORT/devstoreaccount1`), or `None` after
/// printing a skip notice.
///
/// # Panics
/// When the endpoint is unset and `BLOBPIPE_REQUIRE_SERVICES=1`.
pub fn azurite() -> Option<String> {
    service(
        "AZURITE_BLOB_ENDPOINT",
        "scripts/azurite start && source .tools/azurite.env",
    )
}

/// The value of `var`, or `None` after a skip notice (panics when services are required).
pub fn service(var: &str, how: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().trim_end_matches('/').to_string()),
        _ => {
            if std::env::var("BLOBPIPE_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{var} is not set but BLOBPIPE_REQUIRE_SERVICES=1 (start it with: {how})");
            }
            eprintln!("SKIPPED: {var} not set (start the service with: {how})");
            None
        }
    }
}

/// The emulator's public account key.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A connection string for the Azurite instance at `endpoint`.
pub fn azurite_connection_string(endpoint: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )
}

/// A fresh, valid container name (tests never share containers).
pub fn unique_container(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t-{tag}-{}-{n}-{nanos:x}", std::process::id())
}

/// A service URL from `var`, else `default` if its host:port accepts TCP connections;
/// `None` (after a skip notice) when unreachable, a panic when services are required.
pub fn reachable(var: &str, default: &str, how: &str) -> Option<String> {
    let url = std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string());
    let hostport = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .map(|hp| hp.rsplit('@').next().unwrap_or(hp).to_string())
        .unwrap_or_default();
    let ok = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
        });
    if ok {
        return Some(url);
    }
    if std::env::var("BLOBPIPE_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{hostport} ({var}) is unreachable but BLOBPIPE_REQUIRE_SERVICES=1 (start it with: {how})");
    }
    eprintln!("SKIPPED: {hostport} ({var}) unreachable (start the service with: {how})");
    None
}

/// The test PostgreSQL (`BLOBPIPE_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
pub fn postgres() -> Option<String> {
    reachable(
        "BLOBPIPE_TEST_PG_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        "scripts/test (starts PostgreSQL) or pg_ctlcluster 15 main start",
    )
}

/// The test MariaDB/MySQL (`BLOBPIPE_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`).
pub fn mysql() -> Option<String> {
    reachable(
        "BLOBPIPE_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
        "scripts/test (starts MariaDB)",
    )
}

/// A unique lowercase identifier for a test schema or database.
pub fn unique_ident(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("bp_{tag}_{}_{n}_{nanos:x}", std::process::id())
}
