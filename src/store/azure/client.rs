//! The HTTP side of the Azure store: transport, the one retry policy, per-try observation,
//! and the translation of SDK errors into blobpipe errors.
//!
//! Retries are data handed to the SDK, not a second loop: [`StoreRetryPolicy`] implements
//! the SDK's `RetryPolicy` on top of the one [`retry::RetryPolicy`] (exponential backoff
//! with full jitter, honouring `Retry-After`, bounded by attempts and a total budget from
//! the pipeline's `[retry]`) and retries the one classifier's transient statuses; the
//! SDK's own retry loop runs it, for the blob store and the hand-off queue alike. [`TryObserver`], a per-try policy, counts every retry for the run
//! summary and buffers each response body *inside* the retry loop, so a connection reset or
//! a truncated body mid-download becomes a retried I/O error instead of a failed read after
//! the SDK has already returned. Response bodies are bounded (one ranged read, one listing
//! page), so buffering does not grow with data size.
//!
//! Every message built from an SDK error passes through [`redact_text`], which strips query
//! strings (SAS tokens) from any URL it contains.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
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
use crate::support::{http, retry};

/// Build the store's HTTP client ([`http::ClientConfig::storage`]): rustls with `ring`,
/// bounded connect and per-read timeouts (a stalled connection becomes a retried I/O error).
///
/// # Errors
/// `Internal` if the TLS client cannot be built.
pub fn http_client(io_timeout: Duration) -> Result<Arc<reqwest::Client>> {
    Ok(Arc::new(http::client(&http::ClientConfig::storage(
        io_timeout,
    ))?))
}

/// The pipeline's `[retry]` settings as the one retry primitive (used by the SDK policy
/// below and by the engine's partition retries).
impl From<&RetryConfig> for retry::RetryPolicy {
    fn from(cfg: &RetryConfig) -> Self {
        retry::RetryPolicy::new(
            cfg.attempts,
            cfg.initial_backoff,
            cfg.max_backoff,
            Some(cfg.budget),
        )
    }
}

/// The one [`retry::RetryPolicy`] run by the SDK's retry loop.
#[derive(Debug)]
pub struct StoreRetryPolicy {
    policy: retry::RetryPolicy,
    headers: RetryHeaders,
    statuses: Vec<StatusCode>,
}

impl StoreRetryPolicy {
    /// From the pipeline's `[retry]` settings.
    pub fn new(cfg: &RetryConfig) -> Self {
        Self::from_policy(cfg.into())
    }

    /// From a retry policy.
    pub fn from_policy(policy: retry::RetryPolicy) -> Self {
        Self {
            policy,
            headers: RetryHeaders {
                retry_headers: vec![X_MS_RETRY_AFTER_MS, RETRY_AFTER_MS, RETRY_AFTER],
            },
            statuses: retry::TRANSIENT_STATUS
                .iter()
                .map(|&c| StatusCode::from(c))
                .collect(),
        }
    }
}

#[async_trait]
impl RetryPolicy for StoreRetryPolicy {
    fn is_expired(&self, since_start: azure_core::time::Duration, retry_count: u32) -> bool {
        let elapsed = Duration::try_from(since_start).unwrap_or(Duration::ZERO);
        !self.policy.may_retry(retry_count + 1, elapsed)
    }

    fn retry_headers(&self) -> Option<&RetryHeaders> {
        Some(&self.headers)
    }

    fn retry_status_codes(&self) -> &[StatusCode] {
        // The one classifier's transient statuses.
        &self.statuses
    }

    fn sleep_duration(&self, retry_count: u32) -> azure_core::time::Duration {
        azure_core::time::Duration::try_from(self.policy.delay(retry_count, None))
            .unwrap_or(azure_core::time::Duration::ZERO)
    }

    async fn wait(&self, retry_count: u32, retry_after: Option<azure_core::time::Duration>) {
        let ra = retry_after.and_then(|r| Duration::try_from(r).ok());
        tokio::time::sleep(self.policy.delay(retry_count, ra)).await;
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
            (409, "BlobImmutableDueToPolicy" | "BlobImmutableDueToLegalHold") => {
                ErrorKind::Immutable
            }
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
            (_, ErrorKind::Immutable) => {
                " (the blob is under an immutability policy or a legal hold: it can be deleted once that ends)"
            }
            _ => "",
        };
        let msg = format!("{msg}{hint}");
        return if retry::classify_status(status).is_transient() {
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
    fn sdk_policy_follows_the_retry_primitive() {
        let p = StoreRetryPolicy::new(&RetryConfig {
            attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            budget: Duration::from_secs(10),
        });
        for n in 1..10 {
            let d = Duration::try_from(p.sleep_duration(n)).unwrap();
            assert!(d <= Duration::from_millis(300));
        }
        assert!(Duration::try_from(p.sleep_duration(1)).unwrap() <= Duration::from_millis(100));
        assert!(!p.is_expired(azure_core::time::Duration::ZERO, 3));
        assert!(p.is_expired(azure_core::time::Duration::ZERO, 4));
        assert!(p.is_expired(azure_core::time::Duration::seconds(11), 0));
        assert_eq!(p.retry_status_codes().len(), 6);
        assert!(p
            .retry_status_codes()
            .contains(&StatusCode::ServiceUnavailable));
    }
}
