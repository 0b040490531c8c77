//! Identifiers: run ids, snapshot ids, pack ids.
//!
//! Snapshot ids start with their UTC creation time (`20261122T031232Z-1a2b3c4d`) so they
//! sort by time as plain strings, in listings and on the command line. Randomness comes
//! from the OS-seeded keys of std's `RandomState` mixed with a clock and a counter:
//! unique enough for names, never used for anything cryptographic.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

/// `n` random bytes as lowercase hex (2n characters).
pub fn random_hex(n: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(n * 2);
    while out.len() < n * 2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n * 2);
    out
}

/// Time format used at the front of snapshot ids and in stored names.
pub const TIME_FMT: &str = "%Y%m%dT%H%M%SZ";

/// A new snapshot id for a snapshot created at `at` (millisecond precision, so two
/// snapshots of one pipeline never tie).
pub fn snapshot_id(at: DateTime<Utc>) -> String {
    format!(
        "{}{:03}Z-{}",
        at.format("%Y%m%dT%H%M%S"),
        at.timestamp_subsec_millis(),
        random_hex(4)
    )
}

/// The snapshot id of run `run_id` planned at `at`: deterministic, so every attempt of
/// one run commits under the same name and a rerun of a committed run finds it.
pub fn snapshot_id_for(at: DateTime<Utc>, run_id: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(run_id.as_bytes());
    format!(
        "{}{:03}Z-{}",
        at.format("%Y%m%dT%H%M%S"),
        at.timestamp_subsec_millis(),
        hex::encode(&h[..4])
    )
}

/// A unique, time-sortable name for a record written at `at` (run records, verify
/// reports): millisecond time plus a random suffix.
pub fn stamp(at: DateTime<Utc>) -> String {
    format!(
        "{}{:03}Z-{}",
        at.format("%Y%m%dT%H%M%S"),
        at.timestamp_subsec_millis(),
        random_hex(2)
    )
}

/// A fresh run id (used when neither `--run-id` nor a Container Apps execution name is given).
pub fn run_id(at: DateTime<Utc>) -> String {
    format!("run-{}-{}", at.format(TIME_FMT), random_hex(4))
}

/// Whether `s` is safe as one path segment of a stored name (run ids come from users).
pub fn is_safe_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_sortable() {
        let a = snapshot_id("2026-01-01T00:00:00Z".parse().unwrap());
        let b = snapshot_id("2026-01-02T00:00:00Z".parse().unwrap());
        assert!(a < b);
        assert_ne!(random_hex(8), random_hex(8));
        let t = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(snapshot_id_for(t, "r1"), snapshot_id_for(t, "r1"));
        assert_ne!(snapshot_id_for(t, "r1"), snapshot_id_for(t, "r2"));
    }

    #[test]
    fn segments() {
        assert!(is_safe_segment("run-1_a.b"));
        assert!(!is_safe_segment("../x"));
        assert!(!is_safe_segment("a/b"));
        assert!(!is_safe_segment(".."));
    }
}
