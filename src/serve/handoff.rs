//! Hand-off of long runs through an Azure Storage queue.
//!
//! A Functions worker is a poor place for a run of several hours (`functionTimeout`,
//! platform restarts). A pipeline with `[serve] handoff = "queue"` is therefore not run by
//! `blobpipe serve`: a timer or HTTP trigger puts a [`HandoffMessage`] on the pipeline's
//! queue and answers 202 with the run id, and a queue-triggered Container Apps job runs
//! `blobpipe run-queued <pipelines> --queue URL` ([`run_queued`]): it receives **one**
//! message (invisible to other receivers for the visibility timeout, renewed while the
//! run goes), runs that pipeline **with that run id** (so a retry resumes the run), and
//! deletes the message once the snapshot is committed. A run that fails leaves the
//! message to reappear after `retry_delay`; a message received more than
//! `max_dequeue` times, one that is not a hand-off message, or one naming a pipeline that
//! is not deployed is a poison message: deleted, with an error and a non-zero exit.
//!
//! The queue speaks the Queue service REST API directly (the Rust SDK has no queue
//! client). Credentials come from the same chain as the Azure store
//! ([`credential::resolve_for`]): an account key (or the emulator's key) signs an account
//! SAS for the queue service (`ss=q`), or Entra ID tokens for
//! `https://storage.azure.com/.default` (managed identity needs *Storage Queue Data
//! Contributor*, or *Message Sender* for the Function App and *Message Processor* for the
//! job).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::records::RunStatus;
use crate::pipeline::Pipeline;
use crate::schedule::Runner;
use crate::store::azure::builder::{is_loopback, AzureTarget};
use crate::store::azure::credential::{self, Resolved, SasServices};
use crate::support::cancel::Cancel;
use crate::support::ids;
use crate::support::secret::Secret;

/// Queue service version sent as `x-ms-version`.
pub const QUEUE_VERSION: &str = "2021-12-02";
/// Entra ID scope for Storage (blob and queue).
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// Largest visibility timeout the service accepts (7 days).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A parsed queue URL: `https://acct.queue.core.windows.net/<queue>[?sas]`, or path-style
/// for the emulator: `http://127.0.0.1:PORT/devstoreaccount1/<queue>`.
#[derive(Clone)]
pub struct QueueUrl {
    /// The queue's URL without query.
    pub url: Url,
    /// Service endpoint (queue URL without the queue name).
    pub service: Url,
    /// Storage account.
    pub account: String,
    /// Queue name.
    pub queue: String,
    /// SAS from the URL's query (without `?`).
    pub sas: Option<Secret>,
}

impl std::fmt::Debug for QueueUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueUrl")
            .field("url", &self.url.as_str())
            .field("sas", &self.sas.as_ref().map(|_| "***"))
            .finish()
    }
}

fn valid_queue_name(q: &str) -> bool {
    (3..=63).contains(&q.len())
        && q.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !q.starts_with('-')
        && !q.ends_with('-')
        && !q.contains("--")
}

impl QueueUrl {
    /// Parse a queue URL.
    ///
    /// # Errors
    /// A reason (never echoing a SAS) naming the accepted forms.
    pub fn parse(raw: &str) -> std::result::Result<QueueUrl, String> {
        let forms = "use https://<account>.queue.core.windows.net/<queue> or, for the emulator, \
                     http://127.0.0.1:<port>/devstoreaccount1/<queue>";
        let raw = raw.trim();
        let mut url = Url::parse(raw).map_err(|e| format!("not a URL ({e}); {forms}"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(format!("scheme {:?} is not http(s); {forms}", url.scheme()));
        }
        let host = url.host_str().unwrap_or_default().to_string();
        let loopback = is_loopback(&host);
        if url.scheme() == "http" && !loopback {
            return Err(format!(
                "plain http is only allowed on loopback (the emulator); {forms}"
            ));
        }
        let sas = url
            .query()
            .filter(|q| !q.is_empty())
            .map(|q| Secret::new(q.to_string()));
        url.set_query(None);
        url.set_fragment(None);
        let segs: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|x| !x.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let (account, queue, service_path) = if loopback {
            match segs.as_slice() {
                [a, q] => (a.clone(), q.clone(), format!("/{a}")),
                _ => {
                    return Err(format!(
                        "a loopback (emulator) queue URL is path-style: /<account>/<queue>; {forms}"
                    ))
                }
            }
        } else {
            let account = host.split('.').next().unwrap_or_default().to_string();
            match segs.as_slice() {
                [q] => (account, q.clone(), String::new()),
                _ => return Err(format!("the path must be exactly the queue name; {forms}")),
            }
        };
        if !valid_queue_name(&queue) {
            return Err(format!(
                "{queue:?} is not a valid queue name (3–63 lowercase letters, digits and single \
                 hyphens, starting and ending with a letter or digit)"
            ));
        }
        if account.is_empty() {
            return Err(format!("no account name in the URL; {forms}"));
        }
        let mut service = url.clone();
        service.set_path(&service_path);
        let mut clean = service.clone();
        clean.set_path(&format!("{service_path}/{queue}"));
        Ok(QueueUrl {
            url: clean,
            service,
            account,
            queue,
            sas,
        })
    }

    /// Printable form (no SAS).
    pub fn display(&self) -> String {
        self.url.to_string()
    }
}

/// What goes on the queue (JSON, base64-encoded as the Azure tools and the Functions queue
/// trigger expect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffMessage {
    /// Pipeline name (its file must be in the job's pipelines directory).
    pub pipeline: String,
    /// Run id the job uses (a retry of the job resumes this run).
    pub run_id: String,
    /// When the trigger asked for the run.
    pub requested_at: DateTime<Utc>,
    /// The timer was past due when it fired.
    #[serde(default)]
    pub past_due: bool,
    /// `timer` or `http`.
    #[serde(default)]
    pub trigger: Option<String>,
}

impl HandoffMessage {
    /// The queue message text: base64 of the JSON.
    pub fn encode(&self) -> String {
        crate::store::b64(&serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decode a message text: base64 JSON, or plain JSON (messages put by tools that do not
    /// encode).
    ///
    /// # Errors
    /// Why it is not a hand-off message.
    pub fn decode(text: &str) -> std::result::Result<HandoffMessage, String> {
        use base64::Engine;
        let t = text.trim();
        let raw = if t.starts_with('{') {
            t.as_bytes().to_vec()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|_| "the message is neither base64 nor JSON".to_string())?
        };
        let m: HandoffMessage = serde_json::from_slice(&raw)
            .map_err(|e| format!("the message is not a hand-off message: {e}"))?;
        if !ids::is_safe_segment(&m.run_id) {
            return Err(format!("run id {:?} is not a safe path segment", m.run_id));
        }
        Ok(m)
    }
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    /// Message id.
    pub id: String,
    /// Pop receipt (needed to delete or update it; changes on every update).
    pub pop_receipt: String,
    /// How many times the message has been received, this time included.
    pub dequeue_count: u32,
    /// The message text as stored.
    pub text: String,
}

#[derive(Clone)]
enum Auth {
    Sas(Arc<credential::SasPolicy>),
    Token(Arc<dyn azure_core::credentials::TokenCredential>),
}

/// A minimal Queue service client for one queue.
#[derive(Clone)]
pub struct QueueClient {
    http: Arc<reqwest::Client>,
    queue: QueueUrl,
    auth: Auth,
    /// Where the credential came from (never its value).
    pub credential: String,
}

impl std::fmt::Debug for QueueClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueClient")
            .field("queue", &self.queue.display())
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn xml_tag(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml_unescape(&xml[start..end]))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn service_error(op: &str, status: u16, body: &str) -> Error {
    let code = xml_tag(body, "Code").unwrap_or_default();
    let msg = xml_tag(body, "Message")
        .map(|m| m.lines().next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let kind = match status {
        401 | 403 => ErrorKind::Config,
        404 => ErrorKind::NotFound,
        _ => ErrorKind::Internal,
    };
    let hint = match status {
        401 | 403 => " (the credential cannot use this queue: give the identity Storage Queue Data Contributor, or check the key/SAS)",
        _ => "",
    };
    Error::new(
        kind,
        format!("queue {op}: HTTP {status} {code} {msg}{hint}")
            .trim()
            .to_string(),
    )
}

impl QueueClient {
    /// A client for `queue`, with the credential chain's choice (the URL's SAS, an account
    /// key from the environment, Entra ID, or the emulator key on loopback).
    ///
    /// # Errors
    /// `Config` when no credential applies.
    pub fn new(queue: &QueueUrl) -> Result<QueueClient> {
        Self::with_env(queue, &credential::process_env)
    }

    /// [`QueueClient::new`] with an injected environment.
    ///
    /// # Errors
    /// As [`QueueClient::new`].
    pub fn with_env(queue: &QueueUrl, env: credential::EnvLookup<'_>) -> Result<QueueClient> {
        let target = AzureTarget {
            service_url: queue.service.clone(),
            account: queue.account.clone(),
            container: queue.queue.clone(),
            root: String::new(),
            account_key: None,
            sas: queue.sas.clone(),
            from_connection_string: false,
        };
        let chosen = credential::resolve_for(&target, env, SasServices::Queue)
            .map_err(|e| e.context(format!("hand-off queue {}", queue.display())))?;
        let auth = match chosen.resolved {
            Resolved::Sas(p) => Auth::Sas(p),
            Resolved::Token(t) => Auth::Token(t),
        };
        Ok(QueueClient {
            http: crate::store::azure::client::http_client(Duration::from_secs(30))?,
            queue: queue.clone(),
            auth,
            credential: format!("{} ({})", chosen.kind.as_str(), chosen.source),
        })
    }

    /// The queue.
    pub fn queue(&self) -> &QueueUrl {
        &self.queue
    }

    async fn send(
        &self,
        op: &str,
        method: reqwest::Method,
        suffix: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> Result<(u16, reqwest::header::HeaderMap, String)> {
        let mut url = self.queue.url.clone();
        if !suffix.is_empty() {
            let p = format!("{}/{suffix}", url.path());
            url.set_path(&p);
        }
        {
            let mut qp = url.query_pairs_mut();
            for (k, v) in query {
                qp.append_pair(k, v);
            }
        }
        let mut bearer = None;
        match &self.auth {
            Auth::Sas(p) => {
                let sas = p.current(Utc::now());
                let merged = match url.query() {
                    Some(q) if !q.is_empty() => format!("{q}&{}", sas.expose()),
                    _ => sas.expose().to_string(),
                };
                url.set_query(Some(&merged));
            }
            Auth::Token(t) => {
                let tok = t
                    .get_token(&[STORAGE_SCOPE], None)
                    .await
                    .map_err(|e| Error::config(format!("queue {op}: getting a token: {e}")))?;
                bearer = Some(format!("Bearer {}", tok.token.secret()));
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let mut last = None;
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
            }
            let mut rb = self
                .http
                .request(method.clone(), url.clone())
                .header("x-ms-version", QUEUE_VERSION)
                .header(
                    "x-ms-date",
                    Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
                );
            if let Some(b) = &bearer {
                rb = rb.header("authorization", b);
            }
            rb = match &body {
                Some(b) => rb.header("content-type", "application/xml").body(b.clone()),
                None => rb.header("content-length", "0"),
            };
            match rb.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let headers = r.headers().clone();
                    let text = r.text().await.unwrap_or_default();
                    if status >= 500 || status == 429 {
                        last = Some(service_error(op, status, &text));
                        continue;
                    }
                    return Ok((status, headers, text));
                }
                Err(e) => {
                    // reqwest errors carry the URL; drop it (it may hold a SAS).
                    let e = e.without_url();
                    last = Some(Error::new(
                        ErrorKind::Internal,
                        format!("queue {op}: {} unreachable: {e}", self.queue.display()),
                    ));
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::internal(format!("queue {op}: failed"))))
    }

    /// Create the queue; an existing queue is fine.
    ///
    /// # Errors
    /// Service or network errors.
    pub async fn create_if_missing(&self) -> Result<()> {
        let (status, _, body) = self
            .send("create", reqwest::Method::PUT, "", &[], None)
            .await?;
        match status {
            201 | 204 | 409 => Ok(()),
            s => Err(service_error("create", s, &body)),
        }
    }

    /// Put `msg` on the queue (never expiring), creating the queue if it is missing.
    /// Returns the message id.
    ///
    /// # Errors
    /// Service or network errors.
    pub async fn put(&self, msg: &HandoffMessage) -> Result<String> {
        self.put_text(&msg.encode()).await
    }

    /// Put a raw message text (as stored; [`QueueClient::put`] base64-encodes JSON).
    ///
    /// # Errors
    /// Service or network errors.
    pub async fn put_text(&self, text: &str) -> Result<String> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessage><MessageText>{}</MessageText></QueueMessage>",
            xml_escape(text)
        );
        let q = [("messagettl", "-1".to_string())];
        let mut created = false;
        loop {
            let (status, _, text) = self
                .send(
                    "put message",
                    reqwest::Method::POST,
                    "messages",
                    &q,
                    Some(body.clone()),
                )
                .await?;
            match status {
                201 => return Ok(xml_tag(&text, "MessageId").unwrap_or_default()),
                404 if !created => {
                    self.create_if_missing().await?;
                    created = true;
                }
                s => return Err(service_error("put message", s, &text)),
            }
        }
    }

    /// Receive at most one message, invisible to others for `visibility`. `None` when the
    /// queue is empty or does not exist.
    ///
    /// # Errors
    /// Service or network errors.
    pub async fn receive(&self, visibility: Duration) -> Result<Option<Received>> {
        let vis = visibility.min(MAX_VISIBILITY).as_secs();
        let q = [
            ("numofmessages", "1".to_string()),
            ("visibilitytimeout", vis.to_string()),
        ];
        let (status, _, text) = self
            .send("receive", reqwest::Method::GET, "messages", &q, None)
            .await?;
        match status {
            200 => {}
            404 => return Ok(None),
            s => return Err(service_error("receive", s, &text)),
        }
        let Some(id) = xml_tag(&text, "MessageId") else {
            return Ok(None);
        };
        Ok(Some(Received {
            id,
            pop_receipt: xml_tag(&text, "PopReceipt").unwrap_or_default(),
            dequeue_count: xml_tag(&text, "DequeueCount")
                .and_then(|d| d.trim().parse().ok())
                .unwrap_or(1),
            text: xml_tag(&text, "MessageText").unwrap_or_default(),
        }))
    }

    /// The texts of up to 32 visible messages, without receiving them.
    ///
    /// # Errors
    /// Service or network errors.
    pub async fn peek(&self) -> Result<Vec<String>> {
        let q = [
            ("peekonly", "true".to_string()),
            ("numofmessages", "32".to_string()),
        ];
        let (status, _, text) = self
            .send("peek", reqwest::Method::GET, "messages", &q, None)
            .await?;
        match status {
            200 => {}
            404 => return Ok(Vec::new()),
            s => return Err(service_error("peek", s, &text)),
        }
        Ok(text
            .split("<QueueMessage>")
            .skip(1)
            .filter_map(|m| xml_tag(m, "MessageText"))
            .collect())
    }

    /// Delete a received message.
    ///
    /// # Errors
    /// Service or network errors (404: already gone, is fine).
    pub async fn delete(&self, id: &str, pop_receipt: &str) -> Result<()> {
        let q = [("popreceipt", pop_receipt.to_string())];
        let (status, _, text) = self
            .send(
                "delete message",
                reqwest::Method::DELETE,
                &format!("messages/{id}"),
                &q,
                None,
            )
            .await?;
        match status {
            204 | 200 | 404 => Ok(()),
            s => Err(service_error("delete message", s, &text)),
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
        let q = [
            ("popreceipt", pop_receipt.to_string()),
            (
                "visibilitytimeout",
                visibility.min(MAX_VISIBILITY).as_secs().to_string(),
            ),
        ];
        let (status, headers, text) = self
            .send(
                "update message",
                reqwest::Method::PUT,
                &format!("messages/{id}"),
                &q,
                None,
            )
            .await?;
        match status {
            204 | 200 => Ok(headers
                .get("x-ms-popreceipt")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(pop_receipt)
                .to_string()),
            s => Err(service_error("update message", s, &text)),
        }
    }
}

/// Options of [`run_queued`].
#[derive(Debug, Clone)]
pub struct RunQueuedOptions {
    /// Invisibility of the received message; renewed every third of it while the run goes.
    pub visibility: Duration,
    /// After a failed run, the message reappears after this long.
    pub retry_delay: Duration,
    /// A message received more often than this is poison.
    pub max_dequeue: u32,
}

impl Default for RunQueuedOptions {
    fn default() -> Self {
        Self {
            visibility: Duration::from_secs(2 * 3600),
            retry_delay: Duration::from_secs(300),
            max_dequeue: 5,
        }
    }
}

/// How one receive from the hand-off queue ended; printed lower-case (`"outcome"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueOutcome {
    /// No message was waiting.
    Empty,
    /// The run committed and verified.
    Ok,
    /// The run committed with unreadable or changing files.
    Partial,
    /// The run committed but verification found a mismatch.
    Mismatch,
    /// The run failed; the message reappears after the retry delay.
    Failed,
    /// The run was cancelled; the message reappears.
    Cancelled,
    /// Another run holds the pipeline's lock; the message reappears.
    Locked,
    /// The message could not be used (bad JSON, unknown pipeline, received too often)
    /// and was deleted.
    Poison,
}

impl QueueOutcome {
    /// The lower-case name printed in `"outcome"`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueOutcome::Empty => "empty",
            QueueOutcome::Ok => "ok",
            QueueOutcome::Partial => "partial",
            QueueOutcome::Mismatch => "mismatch",
            QueueOutcome::Failed => "failed",
            QueueOutcome::Cancelled => "cancelled",
            QueueOutcome::Locked => "locked",
            QueueOutcome::Poison => "poison",
        }
    }
}

impl std::fmt::Display for QueueOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<RunStatus> for QueueOutcome {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Ok => QueueOutcome::Ok,
            RunStatus::Partial => QueueOutcome::Partial,
            RunStatus::Mismatch => QueueOutcome::Mismatch,
            RunStatus::Failed => QueueOutcome::Failed,
            RunStatus::Cancelled => QueueOutcome::Cancelled,
        }
    }
}

/// What [`run_queued`] did.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedOutcome {
    /// How the receive ended.
    pub outcome: QueueOutcome,
    /// The message id, when one was received.
    pub message_id: Option<String>,
    /// How often it had been received.
    pub dequeue_count: Option<u32>,
    /// The hand-off, when it decoded.
    pub message: Option<HandoffMessage>,
    /// Snapshot committed.
    pub snapshot: Option<String>,
    /// Whether the message was deleted.
    pub deleted: bool,
    /// Error (failed run or poison reason).
    pub error: Option<String>,
}

/// Receive one hand-off message from `client` and run its pipeline (one of `pipelines`)
/// with its run id; see the module docs for what happens to the message.
///
/// # Errors
/// Queue errors before a message was received. A run's own failure is in the outcome.
pub async fn run_queued(
    pipelines: &[Pipeline],
    client: &QueueClient,
    runner: Arc<dyn Runner>,
    opts: &RunQueuedOptions,
    cancel: Cancel,
) -> Result<QueuedOutcome> {
    let mut out = QueuedOutcome {
        outcome: QueueOutcome::Empty,
        message_id: None,
        dequeue_count: None,
        message: None,
        snapshot: None,
        deleted: false,
        error: None,
    };
    let visibility = opts
        .visibility
        .clamp(Duration::from_secs(1), MAX_VISIBILITY);
    let Some(msg) = client.receive(visibility).await? else {
        return Ok(out);
    };
    out.message_id = Some(msg.id.clone());
    out.dequeue_count = Some(msg.dequeue_count);
    let decoded = HandoffMessage::decode(&msg.text);
    let poison = match &decoded {
        _ if msg.dequeue_count > opts.max_dequeue => Some(format!(
            "message {} was received {} times (more than {}): its runs keep failing",
            msg.id, msg.dequeue_count, opts.max_dequeue
        )),
        Err(e) => Some(format!("message {}: {e}", msg.id)),
        Ok(m) if !pipelines.iter().any(|p| p.name == m.pipeline) => Some(format!(
            "message {} names pipeline {:?}, which is not in the pipelines directory (have: {})",
            msg.id,
            m.pipeline,
            pipelines
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(_) => None,
    };
    out.message = decoded.as_ref().ok().cloned();
    if let Some(why) = poison {
        tracing::error!("poison hand-off message deleted: {why}");
        client.delete(&msg.id, &msg.pop_receipt).await?;
        out.outcome = QueueOutcome::Poison;
        out.deleted = true;
        out.error = Some(why);
        return Ok(out);
    }
    let Ok(m) = decoded else {
        return Ok(out);
    };
    let Some(p) = pipelines.iter().find(|p| p.name == m.pipeline) else {
        return Ok(out);
    };
    tracing::info!(
        pipeline = %m.pipeline, run_id = %m.run_id, message = %msg.id,
        dequeue_count = msg.dequeue_count, "running a handed-off run"
    );

    // Keep the message invisible while the run goes.
    let pop = Arc::new(Mutex::new(msg.pop_receipt.clone()));
    let renew_stop = Cancel::new();
    let renewer = {
        let client = client.clone();
        let pop = pop.clone();
        let stop = renew_stop.clone();
        let id = msg.id.clone();
        let every = visibility / 3;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
                let cur = pop.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match client.set_visibility(&id, &cur, visibility).await {
                    Ok(new) => *pop.lock().unwrap_or_else(|p| p.into_inner()) = new,
                    Err(e) => tracing::warn!("renewing the hand-off message's visibility: {e}"),
                }
            }
        })
    };
    let res = runner.run(p, Some(m.run_id.clone()), cancel).await;
    renew_stop.cancel();
    let _ = renewer.await;
    let pop = pop.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let done = match &res {
        Ok(r) => {
            out.outcome = r.status.into();
            out.snapshot = r.snapshot.clone();
            out.error = r.error.clone();
            // Committed (even with unreadable files or a verify mismatch, which alerted):
            // running the message again cannot do better.
            matches!(
                r.status,
                RunStatus::Ok | RunStatus::Partial | RunStatus::Mismatch
            )
        }
        Err(e) => {
            out.outcome = match e.kind() {
                ErrorKind::Locked => QueueOutcome::Locked,
                ErrorKind::Cancelled => QueueOutcome::Cancelled,
                _ => QueueOutcome::Failed,
            };
            out.error = Some(e.to_string());
            false
        }
    };
    if done {
        client.delete(&msg.id, &pop).await?;
        out.deleted = true;
    } else {
        // Let it reappear (for this or another replica) after the retry delay.
        if let Err(e) = client.set_visibility(&msg.id, &pop, opts.retry_delay).await {
            tracing::warn!("could not shorten the failed message's invisibility: {e}");
        }
    }
    Ok(out)
}

/// Put a hand-off for `p` on its queue (the `serve` side).
///
/// # Errors
/// Queue errors.
pub async fn enqueue(client: &QueueClient, msg: &HandoffMessage) -> Result<String> {
    client
        .put(msg)
        .await
        .map_err(|e| e.context(format!("handing off to {}", client.queue().display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls() {
        let q = QueueUrl::parse("https://acct.queue.core.windows.net/blobpipe-runs?sv=1&sig=S")
            .unwrap();
        assert_eq!(q.account, "acct");
        assert_eq!(q.queue, "blobpipe-runs");
        assert_eq!(q.service.as_str(), "https://acct.queue.core.windows.net/");
        assert_eq!(
            q.display(),
            "https://acct.queue.core.windows.net/blobpipe-runs"
        );
        assert!(!format!("{q:?}").contains("sig=S"));
        let q = QueueUrl::parse("http://127.0.0.1:10001/devstoreaccount1/runs").unwrap();
        assert_eq!(q.account, "devstoreaccount1");
        assert_eq!(
            q.service.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1"
        );
        assert!(QueueUrl::parse("http://acct.queue.core.windows.net/runs").is_err());
        assert!(QueueUrl::parse("https://acct.queue.core.windows.net/Runs").is_err());
        assert!(QueueUrl::parse("https://acct.queue.core.windows.net/a/b").is_err());
        assert!(QueueUrl::parse("ftp://x/y").is_err());
    }

    #[test]
    fn message_round_trip_and_plain_json() {
        let m = HandoffMessage {
            pipeline: "home".into(),
            run_id: "r-1".into(),
            requested_at: Utc::now(),
            past_due: true,
            trigger: Some("timer".into()),
        };
        assert_eq!(HandoffMessage::decode(&m.encode()).unwrap(), m);
        let plain = r#"{"pipeline":"db","run_id":"x","requested_at":"2024-01-01T00:00:00Z"}"#;
        assert_eq!(HandoffMessage::decode(plain).unwrap().pipeline, "db");
        assert!(HandoffMessage::decode("bm90IGpzb24=").is_err());
        let bad = r#"{"pipeline":"db","run_id":"../x","requested_at":"2024-01-01T00:00:00Z"}"#;
        assert!(HandoffMessage::decode(bad).is_err());
    }

    #[test]
    fn xml_fields() {
        let x = "<QueueMessagesList><QueueMessage><MessageId>m1</MessageId><PopReceipt>a&amp;b</PopReceipt><DequeueCount>3</DequeueCount><MessageText>eyJ9</MessageText></QueueMessage></QueueMessagesList>";
        assert_eq!(xml_tag(x, "PopReceipt").unwrap(), "a&b");
        assert_eq!(xml_tag(x, "DequeueCount").unwrap(), "3");
        assert!(xml_tag(x, "Nope").is_none());
    }
}
