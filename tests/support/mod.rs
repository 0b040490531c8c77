//! Shared helpers for integration tests that need external services.
//!
//! Services are optional on a developer machine and mandatory in CI: a test asks
//! [`azurite`] for the emulator endpoint; when `AZURITE_BLOB_ENDPOINT` is unset it prints a
//! skip notice and the test returns early, unless `BLOBPIPE_REQUIRE_SERVICES=1` (set by
//! `scripts/test`), in which case a missing service fails the test.

#![allow(dead_code)]

pub mod faultproxy;

/// The Azurite blob endpoint (`http://127.0.0.1:PORT/devstoreaccount1`), or `None` after
/// printing a skip notice.
///
/// # Panics
/// When the endpoint is unset and `BLOBPIPE_REQUIRE_SERVICES=1`.
pub fn azurite() -> Option<String> {
    service(
        "AZURITE_BLOB_ENDPOINT",
        "scripts/azurite start && set -a && . .tools/azurite.env",
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
