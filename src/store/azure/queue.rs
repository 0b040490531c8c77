//! An Azure Storage queue on Microsoft's `azure_storage_queue` 1.x SDK: the transport of
//! the run hand-off (`serve` puts, `run-queued` receives, renews and deletes).
//!
//! The queue shares everything with the blob store but the service: the credential chain
//! ([`credential::resolve_for`] with [`SasServices::Queue`]: an account key — or the
//! emulator's key on loopback — signs an account SAS for the queue service, a SAS from the
//! URL or the environment, or Entra ID tokens for `https://storage.azure.com/.default`),
//! the HTTP client, the [`StoreRetryPolicy`] run by the SDK's retry loop, and the per-try
//! [`TryObserver`]. The SDK speaks the REST API and its XML; this module only picks the
//! options the hand-off needs and turns SDK errors into blobpipe errors without a secret.
//!
//! Managed identity needs *Storage Queue Data Contributor* (or *Message Sender* for the
//! Function App and *Message Processor* for the job).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use azure_core::error::ErrorKind as AzKind;
use azure_core::http::headers::HeaderName;
use azure_core::http::policies::Policy;
use azure_core::http::{ClientOptions, RequestContent, RetryOptions, Transport, XmlFormat};
use azure_storage_queue::models::{
    QueueClientPeekMessagesOptions, QueueClientReceiveMessagesOptions,
    QueueClientSendMessageOptions, QueueMessage,
};
use azure_storage_queue::QueueClientOptions;
use serde::Serialize;

use super::builder::AzureTarget;
use super::client::{self, http_parts, redact_text, StoreRetryPolicy, TryObserver};
use super::credential::{self, EnvLookup, Resolved, SasServices};
use super::queue_url::QueueUrl;
use crate::error::{Error, ErrorKind, Result};
use crate::store::config::RetryConfig;
use crate::store::queue::WorkQueue;
use crate::support::retry;

/// Largest visibility timeout the service accepts (7 days).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most messages one peek returns.
const PEEK_MAX: i32 = 32;

/// Settings of a queue client.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Retry policy handed to the SDK.
    pub retry: RetryConfig,
    /// Connect and per-read timeout.
    pub io_timeout: Duration,
}

impl Default for QueueOptions {
    /// 4 attempts, 0.4 s → 4 s backoff within 60 s, 30 s per read: a hand-off is small and
    /// its caller (a trigger, a job start) should learn of a dead queue within a minute.
    fn default() -> Self {
        Self {
            retry: RetryConfig {
                attempts: 4,
                initial_backoff: Duration::from_millis(400),
                max_backoff: Duration::from_secs(4),
                budget: Duration::from_secs(60),
            },
            io_timeout: Duration::from_secs(30),
        }
    }
}

pub use crate::store::queue::Received;

/// A client for one queue.
#[derive(Clone)]
pub struct QueueClient {
    inner: Arc<azure_storage_queue::QueueClient>,
    display: String,
    /// Where the credential came from (never its value).
    pub credential: String,
}

impl std::fmt::Debug for QueueClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueClient")
            .field("queue", &self.display)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl QueueClient {
    /// A client for the queue `target` names (`service_url` is the queue service, the
    /// "container" is the queue name), with the credential chain's choice from the
    /// process environment and the default [`QueueOptions`]. Makes no network call.
    ///
    /// # Errors
    /// `Config` when no credential applies; `Internal` if the HTTP client cannot be built.
    pub fn new(target: impl Into<AzureTarget>) -> Result<QueueClient> {
        Self::open(
            &target.into(),
            &QueueOptions::default(),
            &credential::process_env,
        )
    }

    /// [`QueueClient::new`] with explicit options and environment.
    ///
    /// # Errors
    /// As [`QueueClient::new`].
    pub fn open(target: &AzureTarget, opts: &QueueOptions, env: EnvLookup<'_>) -> Result<Self> {
        let url = target.container_url();
        let display = url.to_string();
        let chosen = credential::resolve_for(target, env, SasServices::Queue)
            .map_err(|e| e.context(format!("hand-off queue {display}")))?;
        let mut per_try: Vec<Arc<dyn Policy>> = vec![Arc::new(TryObserver {
            retries: Arc::new(AtomicU64::new(0)),
        })];
        let token = match chosen.resolved {
            Resolved::Sas(p) => {
                per_try.push(p);
                None
            }
            Resolved::Token(t) => Some(t),
        };
        let client_options = ClientOptions {
            per_try_policies: per_try,
            retry: RetryOptions::custom(Arc::new(StoreRetryPolicy::new(&opts.retry))),
            transport: Some(Transport::new(client::http_client(opts.io_timeout)?)),
            ..Default::default()
        };
        let inner = azure_storage_queue::QueueClient::new(
            url,
            token,
            Some(QueueClientOptions {
                client_options,
                ..Default::default()
            }),
        )
        .map_err(|e| map_error("opening", e))?;
        Ok(QueueClient {
            inner: Arc::new(inner),
            display,
            credential: format!("{} ({})", chosen.kind.as_str(), chosen.source),
        })
    }

    /// Printable queue URL (no SAS).
    pub fn display(&self) -> String {
        self.display.clone()
    }

    /// Create the queue; an existing queue is fine.
    ///
    /// # Errors
    /// Service or network errors.
    pub async fn create_if_missing(&self) -> Result<()> {
        match self.inner.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 409) => Ok(()),
            Err(e) => Err(map_error("create", e)),
        }
    }

    /// Put `msg` as base64 JSON ([`encode_json`]) on the queue, never expiring, creating
    /// the queue if it is missing. Returns the message id.
    ///
    /// # Errors
    /// Service or network errors.
    pub async fn put<T: Serialize>(&self, msg: &T) -> Result<String> {
        self.put_text(&encode_json(msg)).await
    }

    /// Put a message text (as stored; [`QueueClient::put`] base64-encodes JSON) on the queue, never expiring, creating the queue
    /// if it is missing. Returns the message id.
    ///
    /// # Errors
    /// Service or network errors.
    pub async fn put_text(&self, text: &str) -> Result<String> {
        let op = "put message";
        let mut created = false;
        loop {
            let body: RequestContent<QueueMessage, XmlFormat> = QueueMessage {
                message_text: Some(text.to_string()),
            }
            .try_into()
            .map_err(|e| map_error(op, e))?;
            let opts = QueueClientSendMessageOptions {
                message_time_to_live: Some(-1),
                ..Default::default()
            };
            match self.inner.send_message(body, Some(opts)).await {
                Ok(rsp) => {
                    let sent = rsp
                        .into_model()
                        .and_then(|l| l.into_message())
                        .map_err(|e| map_error(op, e))?;
                    return Ok(sent.message_id.unwrap_or_default());
                }
                Err(e) if !created && http_parts(&e).is_some_and(|(s, _)| s == 404) => {
                    self.create_if_missing().await?;
                    created = true;
                }
                Err(e) => return Err(map_error(op, e)),
            }
        }
    }

    /// Receive at most one message, invisible to others for `visibility`. `None` when the
    /// queue is empty or does not exist.
    ///
    /// # Errors
    /// Service or network errors.
    pub async fn receive(&self, visibility: Duration) -> Result<Option<Received>> {
        let opts = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(1),
            visibility_timeout: Some(seconds(visibility)),
            ..Default::default()
        };
        let list = match self.inner.receive_messages(Some(opts)).await {
            Ok(rsp) => rsp.into_model().map_err(|e| map_error("receive", e))?,
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 404) => return Ok(None),
            Err(e) => return Err(map_error("receive", e)),
        };
        let Some(m) = list.items.and_then(|v| v.into_iter().next()) else {
            return Ok(None);
        };
        let Some(id) = m.message_id else {
            return Ok(None);
        };
        Ok(Some(Received {
            id,
            pop_receipt: m.pop_receipt.unwrap_or_default(),
            dequeue_count: m
                .dequeue_count
                .and_then(|d| u32::try_from(d).ok())
                .unwrap_or(1),
            text: m.message_text.unwrap_or_default(),
        }))
    }

    /// The texts of up to 32 visible messages, without receiving them.
    ///
    /// # Errors
    /// Service or network errors.
    pub async fn peek(&self) -> Result<Vec<String>> {
        let opts = QueueClientPeekMessagesOptions {
            number_of_messages: Some(PEEK_MAX),
            ..Default::default()
        };
        let list = match self.inner.peek_messages(Some(opts)).await {
            Ok(rsp) => rsp.into_model().map_err(|e| map_error("peek", e))?,
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 404) => return Ok(Vec::new()),
            Err(e) => return Err(map_error("peek", e)),
        };
        Ok(list
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.message_text)
            .collect())
    }

    /// Delete a received message.
    ///
    /// # Errors
    /// Service or network errors (404: already gone, and a stale pop receipt, are fine).
    pub async fn delete(&self, id: &str, pop_receipt: &str) -> Result<()> {
        match self.inner.delete_message(id, pop_receipt, None).await {
            Ok(_) => Ok(()),
            // Gone, or received again elsewhere since (its new receiver deletes it).
            Err(e) if http_parts(&e).is_some_and(|(s, c)| s == 404 || stale_receipt(s, &c)) => {
                Ok(())
            }
            Err(e) => Err(map_error("delete message", e)),
        }
    }

    /// Make a received message invisible for `visibility` from now (0: visible again now).
    /// Returns the new pop receipt.
    ///
    /// # Errors
    /// Service or network errors.
    pub async fn set_visibility(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<String> {
        let rsp = self
            .inner
            .update_message(id, pop_receipt, seconds(visibility), None)
            .await
            .map_err(|e| map_error("update message", e))?;
        Ok(rsp
            .headers()
            .get_optional_str(&HeaderName::from_static("x-ms-popreceipt"))
            .unwrap_or(pop_receipt)
            .to_string())
    }
}

/// [`WorkQueue`] on an Azure Storage queue, with its dead-letter queue `<queue>-poison`
/// beside it (the name the Functions queue trigger uses for its poison messages).
#[derive(Debug, Clone)]
pub struct AzureWorkQueue {
    main: QueueClient,
    poison: QueueClient,
}

impl AzureWorkQueue {
    /// Clients for queue `url` and its dead-letter queue. Makes no network call.
    ///
    /// # Errors
    /// `Config` for a bad URL, a queue name too long for `-poison`, or no credential.
    pub fn open(url: &str) -> Result<AzureWorkQueue> {
        let q = QueueUrl::parse(url).map_err(|e| Error::config(format!("work queue: {e}")))?;
        let mut dead = q.clone();
        dead.queue = format!("{}-poison", q.queue);
        if dead.queue.len() > 63 {
            return Err(Error::config(format!(
                "work queue {:?}: at most 56 characters, so that its dead-letter queue \
                 {:?} is a valid queue name",
                q.queue, dead.queue
            )));
        }
        Ok(AzureWorkQueue {
            main: QueueClient::new(&q)?,
            poison: QueueClient::new(&dead)?,
        })
    }
}

#[async_trait::async_trait]
impl WorkQueue for AzureWorkQueue {
    fn display(&self) -> String {
        self.main.display()
    }
    async fn put(&self, text: &str) -> Result<()> {
        if text.len() > crate::store::queue::MAX_MESSAGE {
            return Err(Error::refused(format!(
                "queue message of {} bytes (at most {})",
                text.len(),
                crate::store::queue::MAX_MESSAGE
            )));
        }
        self.main.put_text(text).await.map(|_| ())
    }
    async fn receive(&self, visibility: Duration) -> Result<Option<Received>> {
        // The service takes 1 s to 7 days (0 is `OutOfRangeQueryParameterValue`).
        self.main
            .receive(visibility.max(Duration::from_secs(1)))
            .await
    }
    async fn set_visibility(&self, m: &Received, visibility: Duration) -> Result<String> {
        self.main
            .set_visibility(&m.id, &m.pop_receipt, visibility)
            .await
    }
    async fn delete(&self, m: &Received) -> Result<()> {
        self.main.delete(&m.id, &m.pop_receipt).await
    }
    async fn dead_letter(&self, m: &Received) -> Result<()> {
        self.poison.put_text(&m.text).await?;
        self.main.delete(&m.id, &m.pop_receipt).await
    }
}

/// A message text as the Azure tools and the Functions queue trigger expect: base64 of
/// the JSON.
pub fn encode_json<T: Serialize>(msg: &T) -> String {
    crate::store::b64(&serde_json::to_vec(msg).unwrap_or_default())
}

/// A pop receipt that is no longer the message's: Azure answers 400
/// `PopReceiptMismatch` (not 404) once the message was received again.
fn stale_receipt(status: u16, code: &str) -> bool {
    status == 400 && code == "PopReceiptMismatch"
}

/// A visibility timeout in whole seconds, capped at [`MAX_VISIBILITY`].
fn seconds(d: Duration) -> i32 {
    i32::try_from(d.min(MAX_VISIBILITY).as_secs()).unwrap_or(i32::MAX)
}

/// Translate an SDK error from queue operation `op`: an identity without access is a
/// configuration problem (with the role to grant), a missing queue `NotFound`, what the
/// one classifier calls transient stays retryable (the SDK's retries are spent), and no
/// message carries a secret.
fn map_error(op: &str, e: azure_core::Error) -> Error {
    if let Some((status, code)) = http_parts(&e) {
        let msg = format!("queue {op}: HTTP {status} {code}")
            .trim()
            .to_string();
        return match status {
            401 | 403 => Error::config(format!(
                "{msg} (the credential cannot use this queue: give the identity Storage Queue \
                 Data Contributor, or check the key/SAS)"
            )),
            404 => Error::new(ErrorKind::NotFound, msg),
            s if stale_receipt(s, &code) => Error::new(
                ErrorKind::NotFound,
                format!(
                    "{msg} (the pop receipt is stale: the message was received again elsewhere)"
                ),
            ),
            s if retry::classify_status(s).is_transient() => {
                Error::transient(ErrorKind::Store, format!("{msg} (retries exhausted)"))
            }
            _ => Error::new(ErrorKind::Store, msg),
        };
    }
    match e.kind() {
        AzKind::Credential => Error::config(format!(
            "queue {op}: getting a token: {}",
            redact_text(&e.to_string())
        )),
        _ => client::map_error(&format!("queue {op}"), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_is_whole_seconds_and_capped() {
        assert_eq!(seconds(Duration::ZERO), 0);
        assert_eq!(seconds(Duration::from_millis(2500)), 2);
        assert_eq!(seconds(Duration::from_secs(30 * 24 * 3600)), 7 * 24 * 3600);
    }

    #[test]
    fn defaults_retry_like_the_store() {
        let o = QueueOptions::default();
        let p = retry::RetryPolicy::from(&o.retry);
        assert_eq!(p.attempts, 4);
        assert_eq!(p.budget, Some(Duration::from_secs(60)));
    }
}
