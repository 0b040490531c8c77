//! Queue URLs: the one address form of an Azure Storage queue, parsed and checked once.
//!
//! It lives in `store` (below both the pipeline spec that checks `[serve] queue_url` and
//! the hand-off that talks to the queue), so the spec does not import `serve`. A SAS in
//! the URL is kept as a secret and never printed.

use url::Url;

use crate::store::azure::builder::{is_loopback, AzureTarget};
use crate::support::secret::Secret;

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

/// The queue's service, account and credential, as the store's credential chain takes them.
impl From<&QueueUrl> for AzureTarget {
    fn from(q: &QueueUrl) -> Self {
        AzureTarget {
            service_url: q.service.clone(),
            account: q.account.clone(),
            container: q.queue.clone(),
            root: String::new(),
            account_key: None,
            sas: q.sas.clone(),
            from_connection_string: false,
        }
    }
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
}
