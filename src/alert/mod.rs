//! Alerts: webhooks that tell a team something needs attention.
//!
//! A pipeline's `[[alerts.webhook]]` entries name a URL, a payload format (`json`,
//! `slack`, `teams`) and the events they want (`failure`, `partial`, `mismatch`,
//! `stale`, `success`). [`notify`] builds the payload for each subscribed webhook and
//! delivers it with a bounded retry (exponential backoff with full jitter, `Retry-After`
//! honoured up to the cap, a per-request timeout): delivery costs at most a few seconds
//! and **never fails the operation that raised the alert**. Each attempt's outcome is
//! returned as an [`AlertOutcome`] so the caller can store it in its record (run record,
//! drill record, freshness report).
//!
//! Webhook URLs are secrets (Slack and Teams put the token in the path): an outcome or a
//! log line names only the scheme and host ([`webhook_label`]), and transport errors are
//! stripped of the URL before they are kept.

pub mod config;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use self::config::WebhookConfig;
use crate::manifest::records::RunStatus;
use crate::support::{http, retry};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// A run (or a drill) failed.
    Failure,
    /// A run committed, but some files could not be read or kept changing.
    Partial,
    /// Stored data did not match its hashes.
    Mismatch,
    /// The newest verified snapshot is older than allowed (RPO).
    Stale,
    /// A run succeeded.
    Success,
}

impl Event {
    /// The name used in pipeline files and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Partial => "partial",
            Event::Mismatch => "mismatch",
            Event::Stale => "stale",
            Event::Success => "success",
        }
    }

    /// The event a finished run raises (`None` for a cancelled run: it is resumable
    /// and the signal came from an operator or the platform).
    pub fn of_run(status: RunStatus) -> Option<Event> {
        match status {
            RunStatus::Ok => Some(Event::Success),
            RunStatus::Partial => Some(Event::Partial),
            RunStatus::Mismatch => Some(Event::Mismatch),
            // Not proven restorable: subscribers to failures hear about it (the alert's
            // title and status say what happened).
            RunStatus::CommittedUnverified | RunStatus::Failed => Some(Event::Failure),
            RunStatus::Cancelled => None,
        }
    }

    fn emoji(self) -> &'static str {
        match self {
            Event::Failure => ":x:",
            Event::Partial => ":warning:",
            Event::Mismatch => ":rotating_light:",
            Event::Stale => ":hourglass:",
            Event::Success => ":white_check_mark:",
        }
    }

    fn teams_color(self) -> &'static str {
        match self {
            Event::Success => "Good",
            Event::Partial | Event::Stale => "Warning",
            Event::Failure | Event::Mismatch => "Attention",
        }
    }
}

/// One alert, independent of the payload format.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Pipeline name.
    pub pipeline: String,
    /// What happened.
    pub event: Event,
    /// One-line headline.
    pub title: String,
    /// A sentence or two: what happened and what to do.
    pub summary: String,
    /// Run id, when the alert is about a run.
    pub run_id: Option<String>,
    /// Snapshot concerned, if any.
    pub snapshot: Option<String>,
    /// Label/value pairs shown as facts (never secrets).
    pub facts: Vec<(String, String)>,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// The recorded outcome of delivering one alert to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertOutcome {
    /// Event sent.
    pub event: Event,
    /// Payload format.
    pub format: String,
    /// Scheme and host of the webhook (the rest of the URL is secret).
    pub target: String,
    /// Whether the receiver accepted it (2xx).
    pub delivered: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Last HTTP status received, if any.
    #[serde(default)]
    pub status: Option<u16>,
    /// Last error, when not delivered.
    #[serde(default)]
    pub error: Option<String>,
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// Attempts per webhook (≥ 1).
    pub attempts: u32,
    /// Backoff before the second attempt; doubles each time (full jitter).
    pub initial_backoff: Duration,
    /// Backoff cap (also caps `Retry-After`).
    pub max_backoff: Duration,
    /// Per-request timeout (connect + response).
    pub timeout: Duration,
}

impl Delivery {
    /// The attempts and backoff as the one retry primitive (no budget: the per-request
    /// timeout bounds each attempt).
    pub fn policy(&self) -> retry::RetryPolicy {
        retry::RetryPolicy::new(self.attempts, self.initial_backoff, self.max_backoff, None)
    }
}

impl Default for Delivery {
    /// 4 attempts, 0.5 s → 4 s backoff, 10 s per request: at most ~50 s for a receiver
    /// that hangs, a few seconds for one that refuses connections.
    fn default() -> Self {
        Self {
            attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(4),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Scheme and host (and port) of a webhook URL: everything that is safe to print.
pub fn webhook_label(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}/***", u.scheme()),
                None => format!("{}://{host}/***", u.scheme()),
            }
        }
        Err(_) => crate::support::secret::redact_url(url)
            .split('/')
            .take(3)
            .collect::<Vec<_>>()
            .join("/"),
    }
}

/// The payload for `format` (`json`, `slack`, `teams`).
pub fn payload(format: &str, a: &Alert) -> Value {
    match format {
        "slack" => slack_payload(a),
        "teams" => teams_payload(a),
        _ => json_payload(a),
    }
}

fn json_payload(a: &Alert) -> Value {
    let details: serde_json::Map<String, Value> = a
        .facts
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "source": "blobpipe",
        "version": 1,
        "event": a.event.as_str(),
        "pipeline": a.pipeline,
        "title": a.title,
        "summary": a.summary,
        "run_id": a.run_id,
        "snapshot": a.snapshot,
        "details": details,
        "time": a.at.to_rfc3339(),
    })
}

fn slack_payload(a: &Alert) -> Value {
    let text = format!("{} {}: {}", a.event.emoji(), a.title, a.summary);
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&a.title, 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&format!("{} {}", a.event.emoji(), a.summary), 3000)}}),
    ];
    // Slack allows at most 10 fields per section.
    let fields: Vec<Value> = a
        .facts
        .iter()
        .take(10)
        .map(|(k, v)| json!({"type": "mrkdwn", "text": truncate(&format!("*{k}*\n{v}"), 2000)}))
        .collect();
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("blobpipe · {} · {}", a.pipeline, a.at.to_rfc3339())}
    ]}));
    json!({"text": text, "blocks": blocks})
}

/// An Adaptive Card in a `message` envelope: what Teams Workflows ("When a Teams webhook
/// request is received") and the incoming-webhook connector both accept.
fn teams_payload(a: &Alert) -> Value {
    let facts: Vec<Value> = a
        .facts
        .iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "size": "Large", "weight": "Bolder", "wrap": true,
                     "color": a.event.teams_color(), "text": a.title},
                    {"type": "TextBlock", "wrap": true, "text": a.summary},
                    {"type": "FactSet", "facts": facts},
                    {"type": "TextBlock", "isSubtle": true, "size": "Small", "wrap": true,
                     "text": format!("blobpipe · {} · {}", a.pipeline, a.at.to_rfc3339())},
                ],
            },
        }],
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Send `alert` to every webhook subscribed to its event, with the default [`Delivery`].
/// Never fails: each webhook's outcome is in the result (empty when none subscribes).
pub async fn notify(hooks: &[WebhookConfig], alert: &Alert) -> Vec<AlertOutcome> {
    notify_with(hooks, alert, &Delivery::default()).await
}

/// [`notify`] with an explicit delivery policy. Webhooks are served concurrently.
pub async fn notify_with(
    hooks: &[WebhookConfig],
    alert: &Alert,
    delivery: &Delivery,
) -> Vec<AlertOutcome> {
    let wanted: Vec<&WebhookConfig> = hooks
        .iter()
        .filter(|h| h.on.iter().any(|e| e == alert.event.as_str()))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let client = match http::client(&http::ClientConfig::webhook(delivery.timeout)) {
        Ok(c) => c,
        Err(e) => {
            let msg = e.to_string();
            return wanted
                .iter()
                .map(|h| AlertOutcome {
                    event: alert.event,
                    format: h.format.clone(),
                    target: webhook_label(h.url.expose()),
                    delivered: false,
                    attempts: 0,
                    status: None,
                    error: Some(msg.clone()),
                })
                .collect();
        }
    };
    let sends = wanted.iter().map(|h| deliver(&client, h, alert, delivery));
    let out = futures::future::join_all(sends).await;
    for o in &out {
        if o.delivered {
            tracing::info!(
                event = o.event.as_str(),
                webhook = %o.target,
                attempts = o.attempts,
                "alert delivered"
            );
        } else {
            tracing::warn!(
                event = o.event.as_str(),
                webhook = %o.target,
                attempts = o.attempts,
                error = o.error.as_deref().unwrap_or(""),
                "alert NOT delivered"
            );
        }
    }
    out
}

async fn deliver(
    client: &reqwest::Client,
    hook: &WebhookConfig,
    alert: &Alert,
    d: &Delivery,
) -> AlertOutcome {
    let url = hook.url.expose();
    let target = webhook_label(url);
    let body = serde_json::to_vec(&payload(&hook.format, alert)).unwrap_or_default();
    let mut outcome = AlertOutcome {
        event: alert.event,
        format: hook.format.clone(),
        target,
        delivered: false,
        attempts: 0,
        status: None,
        error: None,
    };
    let policy = d.policy();
    for attempt in 1.. {
        outcome.attempts = attempt;
        let res = client
            .post(url)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("blobpipe/", env!("CARGO_PKG_VERSION")),
            )
            .body(body.clone())
            .send()
            .await;
        let (retry, retry_after) = match res {
            Ok(r) => {
                let status = r.status();
                outcome.status = Some(status.as_u16());
                if status.is_success() {
                    outcome.delivered = true;
                    outcome.error = None;
                    return outcome;
                }
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry::parse_retry_after);
                let text = r.text().await.unwrap_or_default();
                outcome.error = Some(scrub(
                    &format!("HTTP {status}: {}", truncate(text.trim(), 200)),
                    url,
                ));
                (
                    retry::classify_status(status.as_u16()).is_transient(),
                    retry_after,
                )
            }
            Err(e) => {
                outcome.status = None;
                let e = e.without_url();
                let mut full = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    full.push_str(": ");
                    full.push_str(&s.to_string());
                    src = s.source();
                }
                outcome.error = Some(scrub(&full, url));
                (true, None)
            }
        };
        if !retry {
            break;
        }
        // Attempts bound delivery (no budget: the per-request timeout bounds each one).
        match policy.next_delay(attempt, Duration::ZERO, retry_after) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => break,
        }
    }
    outcome
}

/// Remove the URL (and its path, which may hold the token) from an error message.
fn scrub(msg: &str, url: &str) -> String {
    let mut m = msg.replace(url, "<webhook>");
    if let Ok(u) = url::Url::parse(url) {
        let path = u.path();
        if path.len() > 1 {
            m = m.replace(path, "/***");
        }
        if let Some(q) = u.query() {
            m = m.replace(q, "***");
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(event: Event) -> Alert {
        Alert {
            pipeline: "home".into(),
            event,
            title: "blobpipe home: backup FAILED".into(),
            summary: "boom".into(),
            run_id: Some("r1".into()),
            snapshot: None,
            facts: vec![("run".into(), "r1".into())],
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn payload_shapes() {
        let a = alert(Event::Failure);
        let j = payload("json", &a);
        assert_eq!(j["event"], "failure");
        assert_eq!(j["pipeline"], "home");
        assert_eq!(j["details"]["run"], "r1");
        let s = payload("slack", &a);
        assert!(s["text"].as_str().unwrap().contains("FAILED"));
        assert_eq!(s["blocks"][0]["type"], "header");
        let t = payload("teams", &a);
        assert_eq!(t["type"], "message");
        let card = &t["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(card["content"]["body"][2]["facts"][0]["value"], "r1");
    }

    #[test]
    fn labels_and_errors_hide_the_secret_part() {
        let u = "https://hooks.slack.com/services/T000/B000/SECRETTOKEN?x=1";
        assert_eq!(webhook_label(u), "https://hooks.slack.com/***");
        assert_eq!(
            webhook_label("http://127.0.0.1:9/hook"),
            "http://127.0.0.1:9/***"
        );
        let m = scrub(&format!("error sending request for url ({u})"), u);
        assert!(!m.contains("SECRETTOKEN"), "{m}");
        let m = scrub("failed at /services/T000/B000/SECRETTOKEN", u);
        assert!(!m.contains("SECRETTOKEN"), "{m}");
    }

    #[test]
    fn delivery_backoff_stays_in_range() {
        let p = Delivery {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(50),
            ..Delivery::default()
        }
        .policy();
        for _ in 0..100 {
            assert!(p.delay(1, None) <= Duration::from_millis(50));
        }
        assert_eq!(p.attempts, 4);
    }
}
