//! `[[alerts.webhook]]`: checked into the alert stage's [`WebhookConfig`]s.

use super::check::Checker;
use super::raw::AlertsSpec;
use crate::alert::config::WebhookConfig;
use crate::support::secret::Secret;

/// Every webhook: URL interpolated (a secret), format `json`/`slack`/`teams`, events
/// known (default: every event but `success`).
pub(super) fn check_alerts(c: &mut Checker<'_>, s: Option<AlertsSpec>) -> Vec<WebhookConfig> {
    let mut alerts = Vec::new();
    for w in s.map(|a| a.webhook).unwrap_or_default() {
        let url = c.interp(&w.url, "alerts.webhook.url");
        let format = w
            .format
            .as_ref()
            .map(|f| f.get_ref().clone())
            .unwrap_or_else(|| "json".into());
        if !matches!(format.as_str(), "json" | "slack" | "teams") {
            let span = w.format.as_ref().map(|f| f.span()).unwrap_or(0..0);
            c.at(
                span,
                "alerts.webhook.format",
                format!("unknown format {format:?}"),
                "use \"json\", \"slack\" or \"teams\"",
            );
        }
        let mut on = Vec::new();
        for ev in &w.on {
            if !matches!(
                ev.get_ref().as_str(),
                "failure" | "partial" | "mismatch" | "stale" | "success"
            ) {
                c.at(
                    ev.span(),
                    "alerts.webhook.on",
                    format!("unknown event {:?}", ev.get_ref()),
                    "use failure, partial, mismatch, stale or success",
                );
            }
            on.push(ev.get_ref().clone());
        }
        if on.is_empty() {
            on = vec![
                "failure".into(),
                "partial".into(),
                "mismatch".into(),
                "stale".into(),
            ];
        }
        alerts.push(WebhookConfig {
            url: Secret::new(url),
            format,
            on,
        });
    }
    alerts
}
