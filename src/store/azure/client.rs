//! The HTTP side of the Azure store: transport, the one retry policy, per-try observation,
//! and the translation of SDK errors into blobpipe errors.
//!
//! Retries are data handed to the SDK, not a second loop: [`StoreRetryPolicy`] implements
//! the SDK's `RetryPolicy` (exponential backoff with full jitter, honouring `Retry-After`,
//! bounded by attempts and a total budget from the pipeline's `[retry]`), and the SDK's own
//! retry loop runs it. [`TryObserver`], a per-try policy, counts every retry for the run
//! summary and buffers each response body *inside* the retry loop, so a connection reset or
//! a truncated body mid-download becomes a retried I/O error instead of a failed read after
//! the SDK has already returned. Response bodies are bounded (one ranged read, one listing
//! page), so buffering does not grow with data size.
//!
//! Every message built from an SDK error passes through [`redact_text`], which strips query
//! strings (SAS tokens) from any URL it contains.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind as AzKind;
use azure_core::http::headers::{HeaderName, RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};
use azure_core::http::policies::{
    Policy, PolicyResult, RetryHeaders, RetryPolicy, RetryPolicyCount,
};
use azure_core::http::{AsyncRawResponse, Context, Request, StatusCode};

use crate::error::{Error, ErrorKind, Result};
use crate::store::config::RetryConfig;

/// Install `ring` as the process-wide rustls crypto provider (once).
///
/// reqwest is built with `rustls-no-provider` (so aws-lc-sys is never compiled) and
/// panics when it builds a client with no provider installed; every reqwest client in the
/// process (including those `azure_identity` builds for token requests) needs this first.
pub fn ensure_tls_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Build the HTTP client: rustls with the `ring` provider (no aws-lc build), bounded
/// connect and per-read timeouts (a stalled connection becomes a retried I/O error).
///
/// # Errors
/// `Internal` if the TLS client cannot be built.
pub fn http_client(io_timeout: Duration) -> Result<Arc<reqwest::Client>> {
    ensure_tls_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(io_timeout.min(Duration::from_secs(20)))
        .read_timeout(io_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::internal(format!("building the HTTP client: {e}")))?;
    Ok(Arc::new(client))
}

/// The store's retry policy, run by the SDK's retry loop.
#[derive(Debug)]
pub struct StoreRetryPolicy {
    attempts: u32,
    initial: Duration,
    max: Duration,
    budget: Duration,
    headers: RetryHeaders,
}

impl StoreRetryPolicy {
    /// From the pipeline's `[retry]` settings.
    pub fn new(cfg: &RetryConfig) -> Self {
        Self {
            attempts: cfg.attempts.max(1),
            initial: cfg.initial_backoff.max(Duration::from_millis(1)),
            max: cfg.max_backoff.max(cfg.initial_backoff),
            budget: cfg.budget,
            headers: RetryHeaders {
                retry_headers: vec![X_MS_RETRY_AFTER_MS, RETRY_AFTER_MS, RETRY_AFTER],
            },
        }
    }

    /// Full jitter: uniform in `[0, min(max, initial · 2^(n-1))]`.
    fn jittered(&self, retry_count: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << retry_count.saturating_sub(1).min(20));
        let cap = exp.min(self.max);
        let mut h = RandomState::new().build_hasher();
        h.write_u32(retry_count);
        let r = h.finish();
        let frac = (r >> 11) as f64 / (1u64 << 53) as f64;
        cap.mul_f64(frac)
    }
}

#[async_trait]
impl RetryPolicy for StoreRetryPolicy {
    fn is_expired(&self, since_start: azure_core::time::Duration, retry_count: u32) -> bool {
        let budget = azure_core::time::Duration::try_from(self.budget)
            .unwrap_or(azure_core::time::Duration::MAX);
        retry_count + 1 >= self.attempts || since_start >= budget
    }

    fn retry_headers(&self) -> Option<&RetryHeaders> {
        Some(&self.headers)
    }

    fn retry_status_codes(&self) -> &[StatusCode] {
        // Empty: the SDK's defaults (408, 429, 500, 502, 503, 504).
        &[]
    }

    fn sleep_duration(&self, retry_count: u32) -> azure_core::time::Duration {
        azure_core::time::Duration::try_from(self.jittered(retry_count))
            .unwrap_or(azure_core::time::Duration::ZERO)
    }

    async fn wait(&self, retry_count: u32, retry_after: Option<azure_core::time::Duration>) {
        let mut d = self.jittered(retry_count);
        if let Some(ra) = retry_after.and_then(|r| Duration::try_from(r).ok()) {
            // Honour the service's Retry-After, but never beyond the backoff cap.
            d = d.max(ra.min(self.max));
        }
        tokio::time::sleep(d).await;
    }
}

/// A per-call retry counter, put into the request context by operations that must know
/// whether their request was retried (a retried create-only write may meet its own
/// earlier success).
#[derive(Debug, Default, Clone)]
pub struct CallRetries(pub Arc<AtomicU32>);

impl CallRetries {
    /// Retries seen so far by this call.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-try policy: counts retries and buffers response bodies inside the retry loop.
#[derive(Debug)]
pub struct TryObserver {
    /// Total retries across the store.
    pub retries: Arc<AtomicU64>,
}

#[async_trait]
impl Policy for TryObserver {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if ctx.value::<RetryPolicyCount>().is_some_and(|n| **n > 0) {
            self.retries.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = ctx.value::<CallRetries>() {
                c.0.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(
                method = ?request.method(),
                path = request.url().path(),
                "retrying Azure request"
            );
        }
        let rsp = next[0].send(ctx, request, &next[1..]).await?;
        let is_head = request.method() == azure_core::http::Method::Head;
        let (status, headers, body) = rsp.deconstruct();
        let bytes = body.collect().await.map_err(|e| {
            azure_core::Error::with_message(
                AzKind::Io,
                format!("reading the response body: {}", redact_text(&e.to_string())),
            )
        })?;
        let declared: Option<usize> = headers
            .get_optional_str(&HeaderName::from_static("content-length"))
            .and_then(|v| v.parse().ok());
        if let (Some(n), false) = (declared, is_head) {
            if n != bytes.len() {
                return Err(azure_core::Error::with_message(
                    AzKind::Io,
                    format!(
                        "response body truncated: {} of {n} bytes (status {status})",
                        bytes.len()
                    ),
                ));
            }
        }
        Ok(AsyncRawResponse::from_bytes(status, headers, bytes))
    }
}

/// The HTTP status and service error code of an SDK error, if it was an HTTP response.
pub fn http_parts(e: &azure_core::Error) -> Option<(u16, String)> {
    match e.kind() {
        AzKind::HttpResponse {
            status, error_code, ..
        } => Some((u16::from(*status), error_code.clone().unwrap_or_default())),
        _ => None,
    }
}

/// Translate an SDK error from `op` into a blobpipe error of the right kind, with a
/// retryability mark and no secret.
pub fn map_error(op: &str, e: azure_core::Error) -> Error {
    if let Some((status, code)) = http_parts(&e) {
        let msg = format!(
            "{op}: HTTP {status}{}{}",
            if code.is_empty() { "" } else { " " },
            code
        );
        let kind = match (status, code.as_str()) {
            (404, _) => ErrorKind::NotFound,
            (409, "BlobArchived") => ErrorKind::Archived,
            (409, "LeaseAlreadyPresent") => ErrorKind::Locked,
            (409, _) | (412, _) => ErrorKind::Conflict,
            (400, "Md5Mismatch" | "InvalidMd5" | "InvalidBlockList" | "InvalidBlockId")
            | (416, _) => ErrorKind::Integrity,
            _ => ErrorKind::Store,
        };
        let hint = match (status, kind) {
            (403, _) => {
                " (authorization failed: check the credential, its expiry, and that the identity \
                 has the Storage Blob Data Contributor role on the container)"
            }
            (_, ErrorKind::Archived) => " (the blob is in the Archive tier: rehydrate it first)",
            _ => "",
        };
        let msg = format!("{msg}{hint}");
        return if matches!(status, 408 | 429 | 500 | 502 | 503 | 504) {
            Error::transient(ErrorKind::Store, format!("{msg} (retries exhausted)"))
        } else {
            Error::new(kind, msg)
        };
    }
    let text = redact_text(&error_chain(&e));
    match e.kind() {
        AzKind::Io | AzKind::Connection => Error::transient(
            ErrorKind::Store,
            format!("{op}: network error (retries exhausted): {text}"),
        ),
        AzKind::Credential => Error::new(
            ErrorKind::Store,
            format!("{op}: could not get an Azure token: {text}"),
        ),
        _ => Error::new(ErrorKind::Store, format!("{op}: {text}")),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Remove query strings (SAS tokens) from every URL in `s`, and any stray `sig=` value.
pub fn redact_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        // Start of the URL: back up over the scheme letters.
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '.' || c == '-'))
            .map_or(0, |p| p + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .map_or(rest.len(), |p| i + p);
        out.push_str(&rest[..start]);
        out.push_str(&crate::support::secret::redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    // Belt and braces: a signature outside a URL.
    while let Some(i) = out.find("sig=") {
        let vstart = i + 4;
        let vend = out[vstart..]
            .find(|c: char| c == '&' || c.is_whitespace() || c == ')' || c == '"')
            .map_or(out.len(), |p| vstart + p);
        if &out[vstart..vend] == "***" {
            break;
        }
        out.replace_range(vstart..vend, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_urls_in_text() {
        let s = "error sending request for url (http://127.0.0.1:1/a/b?sv=1&sig=SECRET): reset";
        let r = redact_text(s);
        assert!(!r.contains("SECRET"), "{r}");
        assert!(r.contains("http://127.0.0.1:1/a/b?***"), "{r}");
        assert_eq!(redact_text("x sig=ABC&y"), "x sig=***&y");
        assert_eq!(redact_text("plain"), "plain");
    }

    #[test]
    fn full_jitter_stays_under_the_cap() {
        let p = StoreRetryPolicy::new(&RetryConfig {
            attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            budget: Duration::from_secs(10),
        });
        for n in 1..10 {
            assert!(p.jittered(n) <= Duration::from_millis(300));
        }
        assert!(p.jittered(1) <= Duration::from_millis(100));
        assert!(!p.is_expired(azure_core::time::Duration::ZERO, 3));
        assert!(p.is_expired(azure_core::time::Duration::ZERO, 4));
        assert!(p.is_expired(azure_core::time::Duration::seconds(11), 0));
    }
}
