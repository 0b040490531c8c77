//! Turning a target string into an endpoint, a container, a root prefix and any credential
//! the string itself carries.
//!
//! The target arrives as a [`Secret`] because it may hold a SAS token or an account key.
//! Parsing happens once, here; the result ([`AzureTarget`]) keeps the secret parts in
//! [`Secret`]s and offers a redacted [`AzureTarget::display`] for messages.
//!
//! Accepted forms:
//! - `azure://<account>/<container>[/prefix]` → `https://<account>.blob.core.windows.net`
//! - `https://<account>.blob.core.windows.net/<container>[/prefix][?<sas>]` (any https host:
//!   custom domains and private endpoints are host-style too)
//! - `http://127.0.0.1:<port>/<account>/<container>[/prefix]` (path-style, emulator; plain
//!   `http` is refused for anything but loopback hosts)
//! - connection strings: `UseDevelopmentStorage=true`, or
//!   `DefaultEndpointsProtocol=…;AccountName=…;AccountKey=…[;EndpointSuffix=…]`,
//!   `BlobEndpoint=…;AccountName=…;AccountKey=…`, `BlobEndpoint=…;SharedAccessSignature=…`.
//!
//! When the URL names no container, the pipeline's `target.container` is used; when it
//! does, the URL wins. A path after the container becomes a root prefix the store adds
//! to (and strips from) every blob name, below the engine's own pipeline prefix.

use std::net::IpAddr;

use url::Url;

use crate::error::{Error, Result};
use crate::support::secret::{redact_url, Secret};

/// Account name of the Azure Storage emulator.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";

/// The emulator's account key. Public and identical in every Azurite install, so it is a
/// constant and not a secret (it is still kept in a [`Secret`] once loaded).
pub const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A parsed Azure target.
#[derive(Clone)]
pub struct AzureTarget {
    /// Service endpoint without trailing `/`: `https://acct.blob.core.windows.net` or
    /// `http://127.0.0.1:10000/devstoreaccount1` (path-style).
    pub service_url: Url,
    /// Storage account name.
    pub account: String,
    /// Container name.
    pub container: String,
    /// Root prefix inside the container (no leading/trailing `/`, may be empty).
    pub root: String,
    /// Account key carried by a connection string.
    pub account_key: Option<Secret>,
    /// SAS token carried by the URL query or a connection string (without leading `?`).
    pub sas: Option<Secret>,
    /// Whether the string was a connection string (for reports).
    pub from_connection_string: bool,
}

impl std::fmt::Debug for AzureTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureTarget")
            .field("service_url", &self.service_url.as_str())
            .field("account", &self.account)
            .field("container", &self.container)
            .field("root", &self.root)
            .field("account_key", &self.account_key.as_ref().map(|_| "***"))
            .field("sas", &self.sas.as_ref().map(|_| "***"))
            .finish()
    }
}

impl AzureTarget {
    /// Parse `location` (see the module docs); `default_container` applies when the
    /// string names none.
    ///
    /// # Errors
    /// `Config` with a redacted copy of the input and the accepted forms.
    pub fn parse(location: &Secret, default_container: &str) -> Result<Self> {
        let raw = location.expose().trim();
        let bad = |why: &str| {
            Error::config(format!(
                "Azure target {}: {why} (use azure://account/container, \
                 https://account.blob.core.windows.net/container[?sas], \
                 http://127.0.0.1:port/devstoreaccount1/container or a connection string)",
                describe_raw(raw)
            ))
        };
        if let Some(rest) = raw.strip_prefix("azure://") {
            let mut parts = rest.trim_matches('/').splitn(3, '/');
            let account = parts.next().unwrap_or_default().to_string();
            if !valid_account(&account) {
                return Err(bad(
                    "invalid account name (3–24 lowercase letters and digits)",
                ));
            }
            let container = parts.next().map(str::to_string);
            let root = parts
                .next()
                .unwrap_or_default()
                .trim_matches('/')
                .to_string();
            let service_url = Url::parse(&format!("https://{account}.blob.core.windows.net"))
                .map_err(|_| bad("invalid account name"))?;
            return Self::finish(
                service_url,
                account,
                container,
                root,
                None,
                None,
                false,
                default_container,
            );
        }
        if raw.starts_with("http://") || raw.starts_with("https://") {
            return Self::parse_url(raw, default_container);
        }
        if raw.contains('=') {
            return Self::parse_connection_string(raw, default_container);
        }
        Err(bad("unrecognised form"))
    }

    fn parse_url(raw: &str, default_container: &str) -> Result<Self> {
        let shown = redact_url(raw);
        let bad = |why: &str| Error::config(format!("Azure target {shown}: {why}"));
        let url = Url::parse(raw).map_err(|e| bad(&format!("not a URL ({e})")))?;
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_string();
        let loopback = is_loopback(&host);
        if url.scheme() == "http" && !loopback {
            return Err(bad(
                "plain http is refused except for a loopback emulator (127.0.0.1, ::1, localhost); use https",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("user-info in the URL is not supported"));
        }
        let sas = url
            .query()
            .filter(|q| !q.is_empty())
            .map(|q| Secret::new(q.to_string()));
        let segs: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|x| !x.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let mut base = url.clone();
        base.set_query(None);
        base.set_fragment(None);
        base.set_path("");
        let (service_url, account, rest) = if loopback {
            // Path-style (emulator): /<account>/<container>/…
            let account = segs
                .first()
                .cloned()
                .ok_or_else(|| bad("path-style URL needs /<account>/<container>"))?;
            let mut svc = base;
            svc.set_path(&account);
            (svc, account, segs[1..].to_vec())
        } else {
            let account = host
                .split('.')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            (base, account, segs)
        };
        let container = rest.first().cloned();
        let root = rest.get(1..).map(|r| r.join("/")).unwrap_or_default();
        Self::finish(
            service_url,
            account,
            container,
            root,
            None,
            sas,
            false,
            default_container,
        )
    }

    fn parse_connection_string(raw: &str, default_container: &str) -> Result<Self> {
        let mut kv = std::collections::BTreeMap::new();
        for part in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(Error::config(
                    "Azure connection string: a part is not key=value (value not shown)",
                ));
            };
            kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let bad = |why: &str| Error::config(format!("Azure connection string: {why}"));
        if kv
            .get("usedevelopmentstorage")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            let proxy = kv
                .get("developmentstorageproxyuri")
                .map(|s| s.trim_end_matches('/').to_string())
                .unwrap_or_else(|| "http://127.0.0.1".to_string());
            let svc = format!("{proxy}:10000/{EMULATOR_ACCOUNT}");
            let service_url =
                Url::parse(&svc).map_err(|_| bad("invalid DevelopmentStorageProxyUri"))?;
            // The emulator key signs every request: never send it in clear off this host.
            if service_url.scheme() != "https" && !service_url.host_str().is_some_and(is_loopback) {
                return Err(bad(
                    "plain http DevelopmentStorageProxyUri is refused except for a loopback \
                     emulator (127.0.0.1, ::1, localhost); use https",
                ));
            }
            return Self::finish(
                service_url,
                EMULATOR_ACCOUNT.to_string(),
                None,
                String::new(),
                Some(Secret::new(EMULATOR_KEY)),
                None,
                true,
                default_container,
            );
        }
        let account_key = kv.get("accountkey").map(|k| Secret::new(k.clone()));
        let sas = kv
            .get("sharedaccesssignature")
            .map(|s| Secret::new(s.trim_start_matches('?').to_string()));
        let service_url = if let Some(ep) = kv.get("blobendpoint") {
            let u =
                Url::parse(ep.trim_end_matches('/')).map_err(|_| bad("invalid BlobEndpoint"))?;
            let host = u.host_str().unwrap_or_default().to_string();
            if u.scheme() == "http" && !is_loopback(&host) {
                return Err(bad(
                    "plain http BlobEndpoint is refused except for a loopback emulator; use https",
                ));
            }
            let mut u = u;
            let p = u.path().trim_end_matches('/').to_string();
            u.set_path(&p);
            u
        } else {
            let account = kv
                .get("accountname")
                .ok_or_else(|| bad("needs AccountName or BlobEndpoint"))?;
            let proto = kv
                .get("defaultendpointsprotocol")
                .map(String::as_str)
                .unwrap_or("https");
            if proto != "https" {
                return Err(bad("DefaultEndpointsProtocol must be https"));
            }
            let suffix = kv
                .get("endpointsuffix")
                .map(String::as_str)
                .unwrap_or("core.windows.net");
            Url::parse(&format!("https://{account}.blob.{suffix}"))
                .map_err(|_| bad("invalid AccountName or EndpointSuffix"))?
        };
        let account = match kv.get("accountname") {
            Some(a) => a.clone(),
            None => {
                let host = service_url.host_str().unwrap_or_default();
                if is_loopback(host) {
                    service_url
                        .path_segments()
                        .and_then(|mut s| s.next())
                        .unwrap_or_default()
                        .to_string()
                } else {
                    host.split('.').next().unwrap_or_default().to_string()
                }
            }
        };
        if account_key.is_none() && sas.is_none() {
            return Err(bad("needs AccountKey or SharedAccessSignature"));
        }
        Self::finish(
            service_url,
            account,
            None,
            String::new(),
            account_key,
            sas,
            true,
            default_container,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        service_url: Url,
        account: String,
        container: Option<String>,
        root: String,
        account_key: Option<Secret>,
        sas: Option<Secret>,
        from_connection_string: bool,
        default_container: &str,
    ) -> Result<Self> {
        let container = container.unwrap_or_else(|| default_container.to_string());
        if !valid_container(&container) {
            return Err(Error::config(format!(
                "Azure target {}: invalid container name {container:?} \
                 (3–63 characters of a–z, 0–9 and single '-')",
                redact_url(service_url.as_str())
            )));
        }
        if account.is_empty() {
            return Err(Error::config(format!(
                "Azure target {}: cannot tell the account name",
                redact_url(service_url.as_str())
            )));
        }
        let root = root.trim_matches('/').to_string();
        Ok(Self {
            service_url,
            account,
            container,
            root,
            account_key,
            sas,
            from_connection_string,
        })
    }

    /// The container URL (no SAS, no trailing `/`).
    pub fn container_url(&self) -> Url {
        let mut u = self.service_url.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty().push(&self.container);
        }
        u
    }

    /// Whether the endpoint is a loopback emulator.
    pub fn is_loopback(&self) -> bool {
        self.service_url.host_str().is_some_and(is_loopback)
    }

    /// Printable form, no secrets: `azure://<account>/<container>[/<root>]`, followed by
    /// ` at <scheme://host[:port]>` when the endpoint is not the account's default
    /// (`https://<account>.blob.core.windows.net`): an emulator, a custom domain, a
    /// private endpoint. Never a query string, a key or user-info.
    pub fn display(&self) -> String {
        let mut s = format!("azure://{}/{}", self.account, self.container);
        if !self.root.is_empty() {
            s.push('/');
            s.push_str(&self.root);
        }
        let host = self.service_url.host_str().unwrap_or_default();
        let default_host = format!("{}.blob.core.windows.net", self.account);
        let default_endpoint = self.service_url.scheme() == "https"
            && host.eq_ignore_ascii_case(&default_host)
            && self.service_url.port().is_none();
        if !default_endpoint {
            s.push_str(" at ");
            s.push_str(self.service_url.scheme());
            s.push_str("://");
            s.push_str(host);
            if let Some(port) = self.service_url.port() {
                s.push_str(&format!(":{port}"));
            }
        }
        s
    }

    /// What credential the target string itself carries: `account key`, `SAS`, or
    /// `credential chain` (none: the chain picks one from the environment at open).
    pub fn credential_label(&self) -> &'static str {
        if self.account_key.is_some() {
            "account key"
        } else if self.sas.is_some() {
            "SAS"
        } else {
            "credential chain"
        }
    }

    /// The one rendering of a target for people and records: [`Self::display`] plus the
    /// credential kind, e.g. `azure://acct/backups (account key)`.
    pub fn summary(&self) -> String {
        format!("{} ({})", self.display(), self.credential_label())
    }
}

/// Whether `s` has the shape of an Azure target string (a URL the Azure backend takes, or
/// a connection string naming any of its keys). Says nothing about whether it parses.
pub fn looks_like_azure(s: &str) -> bool {
    let s = s.trim();
    if s.starts_with("azure://") || s.starts_with("https://") || s.starts_with("http://") {
        return true;
    }
    const KEYS: [&str; 7] = [
        "usedevelopmentstorage",
        "defaultendpointsprotocol",
        "accountname",
        "accountkey",
        "blobendpoint",
        "sharedaccesssignature",
        "endpointsuffix",
    ];
    s.split(';').any(|part| {
        part.split_once('=')
            .is_some_and(|(k, _)| KEYS.contains(&k.trim().to_ascii_lowercase().as_str()))
    })
}

/// A printable rendering of an unparsed target string.
fn describe_raw(raw: &str) -> String {
    if raw.starts_with("http://") || raw.starts_with("https://") || raw.starts_with("azure://") {
        redact_url(raw)
    } else {
        "(connection string, not shown)".to_string()
    }
}

/// 127.0.0.0/8, ::1 or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn valid_account(a: &str) -> bool {
    (3..=24).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn valid_container(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<AzureTarget> {
        AzureTarget::parse(&Secret::new(s), "backups")
    }

    #[test]
    fn azure_scheme() {
        let t = p("azure://myacct/data/team/a").expect("parses");
        assert_eq!(
            t.service_url.as_str(),
            "https://myacct.blob.core.windows.net/"
        );
        assert_eq!(t.account, "myacct");
        assert_eq!(t.container, "data");
        assert_eq!(t.root, "team/a");
        assert_eq!(
            t.container_url().as_str(),
            "https://myacct.blob.core.windows.net/data"
        );
        let t = p("azure://myacct").expect("parses");
        assert_eq!(t.container, "backups");
        assert!(p("azure://My_Acct/c").is_err());
    }

    #[test]
    fn https_with_sas() {
        let t =
            p("https://acct.blob.core.windows.net/cont?sv=2022-11-02&sig=SECRETSIG").expect("ok");
        assert_eq!(t.account, "acct");
        assert_eq!(t.container, "cont");
        assert_eq!(
            t.sas.as_ref().map(Secret::expose),
            Some("sv=2022-11-02&sig=SECRETSIG")
        );
        assert!(!t.display().contains("SECRETSIG"));
        assert!(!format!("{t:?}").contains("SECRETSIG"));
        let t = p("https://acct.blob.core.windows.net").expect("ok");
        assert_eq!(t.container, "backups");
        assert!(t.sas.is_none());
    }

    #[test]
    fn emulator_path_style() {
        let t = p("http://127.0.0.1:10000/devstoreaccount1/c01/pre/fix").expect("ok");
        assert_eq!(
            t.service_url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(t.account, "devstoreaccount1");
        assert_eq!(t.container, "c01");
        assert_eq!(t.root, "pre/fix");
        assert_eq!(
            t.container_url().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/c01"
        );
        assert!(t.is_loopback());
        assert!(p("http://localhost:10000/devstoreaccount1/c01").is_ok());
        assert!(p("http://[::1]:10000/devstoreaccount1/c01").is_ok());
    }

    /// issue 14: a development-storage proxy off loopback got the emulator key over http.
    #[test]
    fn plain_http_dev_storage_proxy_refused_off_loopback() {
        let e = p("UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://example.com")
            .expect_err("refused");
        assert!(
            e.to_string()
                .contains("plain http DevelopmentStorageProxyUri"),
            "{e}"
        );
        assert!(
            p("UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://127.0.0.1").is_ok()
        );
    }

    #[test]
    fn plain_http_refused_off_loopback() {
        let e = p("http://acct.blob.core.windows.net/c?sig=S3CRET").expect_err("refused");
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        assert!(e.to_string().contains("plain http"));
        assert!(!e.to_string().contains("S3CRET"));
        assert!(p("http://10.0.0.5:10000/devstoreaccount1/cont").is_err());
        assert!(p("http://127.0.0.1.evil.example/devstoreaccount1/cont").is_err());
        assert!(
            p("BlobEndpoint=http://storage.example/acct;AccountName=acct;AccountKey=a2V5").is_err()
        );
    }

    #[test]
    fn connection_strings() {
        let t = p("UseDevelopmentStorage=true").expect("ok");
        assert_eq!(
            t.service_url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            t.account_key.as_ref().map(Secret::expose),
            Some(EMULATOR_KEY)
        );
        assert_eq!(t.container, "backups");

        let t = p("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=S3CRETKEY==;EndpointSuffix=core.windows.net")
            .expect("ok");
        assert_eq!(
            t.service_url.as_str(),
            "https://acct.blob.core.windows.net/"
        );
        assert_eq!(t.account, "acct");
        assert!(!format!("{t:?}").contains("S3CRETKEY"));

        let t = p(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={EMULATOR_KEY};BlobEndpoint=http://127.0.0.1:4321/devstoreaccount1;"
        ))
        .expect("ok");
        assert_eq!(
            t.service_url.as_str(),
            "http://127.0.0.1:4321/devstoreaccount1"
        );
        assert_eq!(t.account, "devstoreaccount1");

        let t = p(
            "BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=sv=1&sig=S3CRET",
        )
        .expect("ok");
        assert_eq!(t.sas.as_ref().map(Secret::expose), Some("sv=1&sig=S3CRET"));
        assert_eq!(t.account, "acct");

        let e = p("AccountName=acct;AccountKey=S3CRETKEY;DefaultEndpointsProtocol=http")
            .expect_err("http");
        assert!(!e.to_string().contains("S3CRETKEY"));
        let e = p("AccountName=acct").expect_err("no key");
        assert!(e.to_string().contains("AccountKey"));
    }

    #[test]
    fn summary_names_account_container_and_credential_only() {
        let t = p("DefaultEndpointsProtocol=https;AccountName=prodacct;AccountKey=S3CRETKEY==")
            .expect("ok");
        assert_eq!(t.summary(), "azure://prodacct/backups (account key)");
        let t = p(
            "BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=sv=1&sig=S3CRET",
        )
        .expect("ok");
        assert_eq!(t.summary(), "azure://acct/backups (SAS)");
        let t = p("https://acct.blob.core.windows.net/cont/r/s?sv=1&sig=S3CRET").expect("ok");
        assert_eq!(t.summary(), "azure://acct/cont/r/s (SAS)");
        let t = p("http://127.0.0.1:10000/devstoreaccount1/c01").expect("ok");
        assert_eq!(
            t.summary(),
            "azure://devstoreaccount1/c01 at http://127.0.0.1:10000 (credential chain)"
        );
        let t = p("azure://acct/cont").expect("ok");
        assert_eq!(t.summary(), "azure://acct/cont (credential chain)");
    }

    #[test]
    fn azure_shapes_are_recognised() {
        for s in [
            "azure://a/b",
            "https://a.blob.core.windows.net",
            "UseDevelopmentStorage=true",
            "BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=1&sig=x",
            "AccountName=a;AccountKey=k",
            "blobendpoint=https://x",
        ] {
            assert!(looks_like_azure(s), "{s}");
        }
        for s in [
            "file:///x",
            "memory://m",
            "ftp://h/c?sig=x",
            "garbage",
            "a=b;c=d",
        ] {
            assert!(!looks_like_azure(s), "{s}");
        }
    }

    #[test]
    fn unknown_forms_do_not_echo_secrets() {
        let e = p("garbage-with-S3CRET").expect_err("bad");
        assert!(!e.to_string().contains("S3CRET"));
    }
}
