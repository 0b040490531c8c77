//! Checked `[alerts]` settings: the webhooks that hear about runs.

use crate::support::secret::Secret;

/// Alert webhook.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Destination (may carry a token; treat as secret).
    pub url: Secret,
    /// `json`, `slack` or `teams`.
    pub format: String,
    /// Events: `failure`, `partial`, `mismatch`, `stale`, `success`.
    pub on: Vec<String>,
}
