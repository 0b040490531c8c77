//! The one place that sets up TLS and builds HTTP clients.
//!
//! reqwest is built with `rustls-no-provider` (so aws-lc-sys is never compiled) and
//! panics when it builds a client with no rustls crypto provider installed; the same holds
//! for the PostgreSQL TLS connector and for the clients `azure_identity` builds for token
//! requests. [`ensure_tls_provider`] installs `ring` once for the whole process, and
//! [`client`] builds every reqwest client the engine uses (Azure store and queue,
//! webhooks) with bounded timeouts, so a stalled peer becomes an error a retry can handle.

use std::sync::Once;
use std::time::Duration;

use crate::error::{Error, Result};

/// Install `ring` as the process-wide rustls crypto provider (once; idempotent).
pub fn ensure_tls_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// How a client bounds its requests.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// Connect timeout.
    pub connect: Duration,
    /// Per-read timeout (a stalled connection fails after it), if any.
    pub read: Option<Duration>,
    /// Whole-request timeout (connect + response), if any.
    pub total: Option<Duration>,
    /// Redirects to follow (0: none).
    pub redirects: usize,
    /// Idle pooled connections are closed after this long, if set.
    pub pool_idle: Option<Duration>,
}

impl ClientConfig {
    /// A storage client: connect within `min(io, 20 s)`, each read within `io`, no
    /// redirects, idle connections closed after 30 s.
    pub fn storage(io: Duration) -> Self {
        Self {
            connect: io.min(Duration::from_secs(20)),
            read: Some(io),
            total: None,
            redirects: 0,
            pool_idle: Some(Duration::from_secs(30)),
        }
    }

    /// A webhook client: connect and the whole request within `timeout`, up to three
    /// redirects.
    pub fn webhook(timeout: Duration) -> Self {
        Self {
            connect: timeout,
            read: None,
            total: Some(timeout),
            redirects: 3,
            pool_idle: None,
        }
    }
}

/// Build a reqwest client (rustls with `ring`) bounded as `cfg` says.
///
/// # Errors
/// `Internal` if the TLS client cannot be built.
pub fn client(cfg: &ClientConfig) -> Result<reqwest::Client> {
    ensure_tls_provider();
    let mut b = reqwest::Client::builder().connect_timeout(cfg.connect);
    if let Some(r) = cfg.read {
        b = b.read_timeout(r);
    }
    if let Some(t) = cfg.total {
        b = b.timeout(t);
    }
    if let Some(p) = cfg.pool_idle {
        b = b.pool_idle_timeout(p);
    }
    b = b.redirect(if cfg.redirects == 0 {
        reqwest::redirect::Policy::none()
    } else {
        reqwest::redirect::Policy::limited(cfg.redirects)
    });
    #[cfg(feature = "testing")]
    {
        b = test_hook(b)?;
    }
    b.build()
        .map_err(|e| Error::internal(format!("building the HTTP client: {}", e.without_url())))
}

/// Test-only (compiled with the `testing` feature, never in a release): trust one more
/// root, the PEM file `BLOBPIPE_TEST_EXTRA_ROOT_CA`, beside the system's, and send the
/// host named by `BLOBPIPE_TEST_RESOLVE=host=ip:port` to that address. This lets the
/// integration tests stand a loopback HTTPS server in for Azure Key Vault (the SDK sends
/// bearer tokens over https only) with a certificate made at test time. Verification is
/// never turned off.
#[cfg(feature = "testing")]
fn test_hook(mut b: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
    if let Ok(p) = std::env::var("BLOBPIPE_TEST_EXTRA_ROOT_CA") {
        let pem = std::fs::read(&p)
            .map_err(|e| Error::internal(format!("BLOBPIPE_TEST_EXTRA_ROOT_CA {p}: {e}")))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| Error::internal(format!("BLOBPIPE_TEST_EXTRA_ROOT_CA {p}: {e}")))?;
        b = b.tls_certs_merge([cert]);
    }
    if let Ok(r) = std::env::var("BLOBPIPE_TEST_RESOLVE") {
        let (host, addr) = r
            .split_once('=')
            .and_then(|(h, a)| Some((h, a.parse::<std::net::SocketAddr>().ok()?)))
            .ok_or_else(|| {
                Error::internal(format!("BLOBPIPE_TEST_RESOLVE {r:?}: not host=ip:port"))
            })?;
        b = b.resolve(host, addr);
    }
    Ok(b)
}
