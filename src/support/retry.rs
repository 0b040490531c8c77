//! The one retry policy and the one classifier every network loop uses.
//!
//! A retry is data, not a loop written again in each caller: [`RetryPolicy`] holds plain
//! numbers (attempts, first backoff, backoff cap, total budget) and answers two questions —
//! *may I try again?* ([`RetryPolicy::next_delay`]) and *how long do I wait?*
//! ([`RetryPolicy::delay`]: exponential backoff with full jitter, at least the service's
//! `Retry-After`, which is itself capped). [`classify_status`] and [`classify_io`] say
//! whether an HTTP status or an I/O error can be helped by a retry at all.
//!
//! Users: the Azure SDK's retry loop (store/azure/client.rs plugs this policy into it, for
//! blobs and the hand-off queue alike), the engine's partition retries, and webhook
//! delivery. Nothing here imports any stage of the engine.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// HTTP statuses a retry can help: 408, 429, 500, 502, 503, 504.
pub const TRANSIENT_STATUS: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The same request may succeed later (throttling, a busy or restarting service, a
    /// dropped connection, a timeout).
    Transient,
    /// The same request will fail again (bad request, auth, not found, conflict, ...).
    Permanent,
}

impl Class {
    /// `true` for [`Class::Transient`].
    pub fn is_transient(self) -> bool {
        self == Class::Transient
    }
}

/// Classify an HTTP status: [`TRANSIENT_STATUS`] are transient, everything else
/// (other 4xx, other 5xx such as 501 Not Implemented) permanent.
pub fn classify_status(status: u16) -> Class {
    if TRANSIENT_STATUS.contains(&status) {
        Class::Transient
    } else {
        Class::Permanent
    }
}

/// Classify an I/O error kind: resets, aborts, refusals, broken pipes, timeouts, early EOF
/// and interruptions are transient; everything else (not found, permission, invalid
/// data, ...) permanent.
pub fn classify_io(kind: std::io::ErrorKind) -> Class {
    use std::io::ErrorKind as K;
    match kind {
        K::ConnectionReset
        | K::ConnectionAborted
        | K::ConnectionRefused
        | K::NotConnected
        | K::BrokenPipe
        | K::TimedOut
        | K::UnexpectedEof
        | K::Interrupted
        | K::WouldBlock => Class::Transient,
        _ => Class::Permanent,
    }
}

/// Parse a `Retry-After` value given in seconds (the form Azure and webhook receivers
/// send). An HTTP-date is not honoured (`None`: the backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Full jitter: uniform in `[0, max]`.
pub fn jitter(max: Duration) -> Duration {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let frac = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    max.mul_f64(frac)
}

/// Exponential backoff with full jitter, bounded by attempts and a total time budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per operation, including the first (≥ 1).
    pub attempts: u32,
    /// Backoff cap before the first retry; doubles for each later one.
    pub initial: Duration,
    /// Backoff cap; also caps a `Retry-After`.
    pub max: Duration,
    /// Total time for all attempts of one operation; `None`: attempts alone bound it.
    pub budget: Option<Duration>,
}

impl RetryPolicy {
    /// A policy from plain numbers (normalised: at least one attempt, a first backoff of
    /// at least 1 ms, a cap no lower than the first backoff).
    pub fn new(attempts: u32, initial: Duration, max: Duration, budget: Option<Duration>) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            attempts: attempts.max(1),
            initial,
            max: max.max(initial),
            budget,
        }
    }

    /// The backoff cap before retry number `retry` (1-based):
    /// `min(max, initial · 2^(retry-1))`.
    pub fn cap(&self, retry: u32) -> Duration {
        self.initial
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max)
    }

    /// How long to wait before retry number `retry` (1-based): full jitter under
    /// [`RetryPolicy::cap`], but at least `retry_after` (itself capped at `max`).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let d = jitter(self.cap(retry));
        match retry_after {
            Some(ra) => d.max(ra.min(self.max)),
            None => d,
        }
    }

    /// Whether another attempt is allowed after `attempts_made` attempts that took
    /// `elapsed` in all.
    pub fn may_retry(&self, attempts_made: u32, elapsed: Duration) -> bool {
        attempts_made < self.attempts && self.budget.is_none_or(|b| elapsed < b)
    }

    /// The wait before the next attempt, or `None` when the attempts are spent or the
    /// wait would end past the budget. `attempts_made` ≥ 1.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if !self.may_retry(attempts_made, elapsed) {
            return None;
        }
        let d = self.delay(attempts_made, retry_after);
        match self.budget {
            Some(b) if elapsed + d.max(self.cap(attempts_made)) >= b => None,
            _ => Some(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..200 {
            assert!(jitter(ms(50)) <= ms(50));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        // Not a constant: 200 draws under 1 s are not all equal.
        let first = jitter(Duration::from_secs(1));
        assert!((0..200).any(|_| jitter(Duration::from_secs(1)) != first));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let p = RetryPolicy::new(5, ms(100), ms(300), Some(Duration::from_secs(10)));
        assert_eq!(p.cap(1), ms(100));
        assert_eq!(p.cap(2), ms(200));
        assert_eq!(p.cap(3), ms(300));
        assert_eq!(p.cap(40), ms(300));
        for n in 1..10 {
            assert!(p.delay(n, None) <= p.cap(n));
        }
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let p = RetryPolicy::new(5, ms(10), ms(300), None);
        for _ in 0..50 {
            let d = p.delay(1, Some(ms(200)));
            assert!(d >= ms(200) && d <= ms(300), "{d:?}");
        }
        assert_eq!(p.delay(1, Some(Duration::from_secs(60))), ms(300));
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn attempts_and_budget_end_the_loop() {
        let p = RetryPolicy::new(4, ms(100), ms(100), Some(Duration::from_secs(1)));
        assert!(p.next_delay(1, Duration::ZERO, None).is_some());
        assert!(p.next_delay(3, Duration::ZERO, None).is_some());
        assert!(
            p.next_delay(4, Duration::ZERO, None).is_none(),
            "attempts spent"
        );
        assert!(
            p.next_delay(1, ms(950), None).is_none(),
            "wait ends past budget"
        );
        assert!(p.next_delay(1, Duration::from_secs(2), None).is_none());
        assert!(!p.may_retry(1, Duration::from_secs(1)));
        let unbounded = RetryPolicy::new(3, ms(1), ms(1), None);
        assert!(unbounded.may_retry(2, Duration::from_secs(1_000_000)));
        assert!(!unbounded.may_retry(3, Duration::ZERO));
        assert_eq!(RetryPolicy::new(0, ms(0), ms(0), None).attempts, 1);
    }

    #[test]
    fn classifier_table() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(s), Class::Transient, "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 412, 416, 501, 505] {
            assert_eq!(classify_status(s), Class::Permanent, "{s}");
        }
        use std::io::ErrorKind as K;
        for k in [
            K::ConnectionReset,
            K::TimedOut,
            K::UnexpectedEof,
            K::BrokenPipe,
        ] {
            assert!(classify_io(k).is_transient(), "{k:?}");
        }
        for k in [K::NotFound, K::PermissionDenied, K::InvalidData] {
            assert!(!classify_io(k).is_transient(), "{k:?}");
        }
    }
}
