//! `[serve]`: whether `blobpipe serve` hands runs of this pipeline to a queue.

use super::check::Checker;
use super::raw::ServeSpec;
use super::HandoffConfig;
use crate::store::azure::queue_url::QueueUrl;

/// `handoff = "queue"` needs a valid `queue_url` (a SAS in it is never echoed); `"none"`
/// or no table: run in the handler.
pub(super) fn check_serve(c: &mut Checker<'_>, s: Option<&ServeSpec>) -> Option<HandoffConfig> {
    let s = s?;
    let fix_url =
        "write e.g. queue_url = \"https://<account>.queue.core.windows.net/blobpipe-runs\" \
                   (or \"${BLOBPIPE_HANDOFF_QUEUE}\")";
    let mode = match &s.handoff {
        None => {
            if let Some(u) = &s.queue_url {
                c.at(
                    u.span(),
                    "serve.queue_url",
                    "is set but serve.handoff is not",
                    "add handoff = \"queue\" (or remove queue_url)",
                );
            }
            return None;
        }
        Some(h) => h,
    };
    match mode.get_ref().as_str() {
        "none" => {
            return None;
        }
        "queue" => {}
        "job" => {
            c.at(
                mode.span(),
                "serve.handoff",
                "\"job\" (starting the Container Apps job through ARM) is not implemented",
                "use handoff = \"queue\" with an event-triggered job (docs/deploy.md §12.8)",
            );
            return None;
        }
        other => {
            c.at(
                mode.span(),
                "serve.handoff",
                format!("unknown hand-off {other:?}"),
                "use \"queue\" (or \"none\" to run in the handler)",
            );
            return None;
        }
    }
    let Some(u) = &s.queue_url else {
        c.missing("serve.queue_url", fix_url);
        return None;
    };
    let url = c.interp(u, "serve.queue_url");
    if url.is_empty() {
        if !c.errors.iter().any(|e| e.contains("serve.queue_url")) {
            c.at(u.span(), "serve.queue_url", "is empty", fix_url);
        }
        return None;
    }
    match QueueUrl::parse(&url) {
        Ok(queue) => Some(HandoffConfig { queue }),
        Err(e) => {
            c.at(u.span(), "serve.queue_url", e, "");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{parse, GOOD};

    #[test]
    fn serve_handoff_is_checked_and_located() {
        let p = parse(&format!(
            "{GOOD}[serve]\nhandoff = \"queue\"\nqueue_url = \"https://acct.queue.core.windows.net/blobpipe-runs\"\n"
        ))
        .unwrap();
        let h = p.handoff.expect("handoff");
        assert_eq!(h.queue.queue, "blobpipe-runs");
        assert!(parse(GOOD).unwrap().handoff.is_none());
        let e = parse(&format!("{GOOD}[serve]\nhandoff = \"queue\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing key serve.queue_url"), "{e}");
        let e = parse(&format!(
            "{GOOD}[serve]\nhandoff = \"queue\"\nqueue_url = \"https://acct.queue.core.windows.net/Bad_Name?sig=SECRET\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains(":11:") && e.contains("serve.queue_url"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
        let e = parse(&format!("{GOOD}[serve]\nhandoff = \"carrier-pigeon\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(":10:") && e.contains("serve.handoff"), "{e}");
        let e = parse(&format!(
            "{GOOD}[serve]\nhandoff = \"queue\"\nqueue_url = \"${{BP_TEST_NO_QUEUE_7}}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("BP_TEST_NO_QUEUE_7 is not set"), "{e}");
    }
}
