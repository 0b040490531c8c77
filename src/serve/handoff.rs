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
//! The queue itself is [`QueueClient`] (store/azure/queue.rs, on the `azure_storage_queue`
//! SDK with the blob store's credential chain and retry policy); this module owns what
//! travels on it and what a received message means.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, Result};
use crate::manifest::records::RunStatus;
use crate::pipeline::Pipeline;
use crate::schedule::Runner;
use crate::store::azure::queue::{self, QueueClient, MAX_VISIBILITY};
use crate::support::cancel::Cancel;
use crate::support::ids;

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
        queue::encode_json(self)
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
    /// The run committed but its verification could not complete; the message
    /// reappears, and the rerun (same run id) finishes the verification.
    #[serde(rename = "committed_unverified")]
    CommittedUnverified,
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
            QueueOutcome::CommittedUnverified => "committed_unverified",
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
            RunStatus::CommittedUnverified => QueueOutcome::CommittedUnverified,
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
            // running the message again cannot do better. A committed run whose
            // verification could not complete is not done: the redelivered message
            // reruns the same run id, which verifies the snapshot.
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
        .map_err(|e| e.context(format!("handing off to {}", client.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
