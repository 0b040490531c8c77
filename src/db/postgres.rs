//! PostgreSQL connections: a libpq-style URL completed from libpq's environment variables,
//! and TLS chosen by libpq's `sslmode`.
//!
//! **Environment.** What the URL leaves out comes from `PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE` and `PGSSLROOTCERT`, as libpq does; the URL
//! always wins. The password stays a [`Secret`] and never reaches a message.
//!
//! **TLS** (rustls, `ring` provider), per `sslmode`:
//! * `disable`: plain TCP;
//! * `prefer` (the default): TLS when the server offers it, plain otherwise; the
//!   certificate is not checked (libpq's behaviour);
//! * `require`: TLS or fail, certificate not checked — unless `sslrootcert` is given, in
//!   which case it is checked as with `verify-ca` (libpq's behaviour);
//! * `verify-ca`: TLS, the chain must lead to a trusted root;
//! * `verify-full`: as `verify-ca`, and the certificate must name the host.
//!
//! Trusted roots are the PEM file `sslrootcert` (or `PGSSLROOTCERT`), else
//! `~/.postgresql/root.crt` when it exists, else the system's roots (also asked for with
//! `sslrootcert=system`). Client certificates (`sslcert`/`sslkey`) are not supported.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Client;

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::Column;
use crate::support::secret::{redact_url, Secret};

/// libpq's `sslmode` values (`allow` is treated as `prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, certificate unchecked.
    Prefer,
    /// TLS or fail, certificate unchecked.
    Require,
    /// TLS, certificate chain checked against trusted roots.
    VerifyCa,
    /// TLS, chain checked and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// Parse libpq's spelling.
    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A resolved connection: driver config (password included), TLS mode and roots.
pub struct ConnSpec {
    /// The driver's configuration. Its `Debug` would show the password: never print it.
    pub cfg: tokio_postgres::Config,
    /// The effective TLS mode.
    pub ssl: SslMode,
    /// `sslrootcert`, when given (a PEM file or `system`).
    pub root_cert: Option<String>,
    /// The URL, safe to print.
    pub display: String,
}

/// Resolve `url` (plus `password` when given) with libpq's environment variables.
///
/// # Errors
/// `Config` for a malformed URL or an unknown `sslmode`/`PGPORT`.
pub fn resolve(url: &Secret, password: Option<&Secret>) -> Result<ConnSpec> {
    resolve_with(url, password, &|k| {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    })
}

/// [`resolve`] with the environment as a function (for tests).
///
/// # Errors
/// As [`resolve`].
pub fn resolve_with(
    url: &Secret,
    password: Option<&Secret>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ConnSpec> {
    let display = redact_url(url.expose());
    let (mut rest, params) = split_tls_params(url.expose());
    if let Some(p) = env("PGPORT") {
        let port: u16 = p
            .parse()
            .map_err(|_| Error::config(format!("PGPORT {p:?} is not a port number")))?;
        rest = with_default_port(&rest, port);
    }
    let mut cfg: tokio_postgres::Config = if rest.trim().is_empty() {
        tokio_postgres::Config::new()
    } else {
        rest.parse()
            .map_err(|e| Error::config(format!("invalid PostgreSQL URL {display}: {e}")))?
    };
    let mut sslmode = None;
    let mut root_cert = None;
    for (k, v) in params {
        match k.as_str() {
            "sslmode" => sslmode = Some(v),
            "sslrootcert" => root_cert = Some(v),
            _ => {
                return Err(Error::config(format!(
                    "PostgreSQL URL {display}: {k} is not supported (client certificates are not)"
                )))
            }
        }
    }
    if cfg.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(h) => {
                for h in h.split(',') {
                    cfg.host(h);
                }
            }
            None => {
                cfg.host("localhost");
            }
        }
    }
    if cfg.get_ports().is_empty() {
        if let Some(p) = env("PGPORT").and_then(|p| p.parse().ok()) {
            cfg.port(p);
        }
    }
    if cfg.get_user().is_none() {
        if let Some(u) = env("PGUSER").or_else(|| env("USER")) {
            cfg.user(u);
        }
    }
    if cfg.get_dbname().is_none() {
        if let Some(d) = env("PGDATABASE") {
            cfg.dbname(d);
        }
    }
    if let Some(p) = password {
        cfg.password(p.expose());
    } else if cfg.get_password().is_none() {
        if let Some(p) = env("PGPASSWORD") {
            cfg.password(p);
        }
    }
    let sslmode = sslmode.or_else(|| env("PGSSLMODE"));
    let mut ssl = match sslmode {
        None => SslMode::Prefer,
        Some(s) => SslMode::parse(&s).ok_or_else(|| {
            Error::config(format!(
                "unknown sslmode {s:?}: use disable, prefer, require, verify-ca or verify-full"
            ))
        })?,
    };
    let root_cert = root_cert.or_else(|| env("PGSSLROOTCERT"));
    if ssl == SslMode::Require && root_cert.is_some() {
        ssl = SslMode::VerifyCa;
    }
    cfg.ssl_mode(match ssl {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    Ok(ConnSpec {
        cfg,
        ssl,
        root_cert,
        display,
    })
}

/// Take libpq's TLS parameters the driver does not know (`sslmode` with the verify modes,
/// `sslrootcert`, and the unsupported `sslcert`/`sslkey`/`sslpassword`) out of a URL's
/// query string; the rest of the URL is returned as written.
fn split_tls_params(url: &str) -> (String, Vec<(String, String)>) {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return (url.to_string(), Vec::new());
    }
    let Some(q) = url.find('?') else {
        return (url.to_string(), Vec::new());
    };
    let (base, query) = (&url[..q], &url[q + 1..]);
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode(s);
        let key = decode(k);
        if matches!(
            key.as_str(),
            "sslmode" | "sslrootcert" | "sslcert" | "sslkey" | "sslpassword"
        ) {
            taken.push((key, decode(v)));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, taken)
}

/// `url` with `:port` added to each host of its authority that has none (the driver
/// would otherwise fill in 5432 where libpq takes `PGPORT`).
fn with_default_port(url: &str, port: u16) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    let hosts_at = authority.rfind('@').map_or(0, |i| i + 1);
    let hosts = &authority[hosts_at..];
    if hosts.is_empty() || url[end..].contains("port=") {
        return url.to_string();
    }
    let hosts: Vec<String> = hosts
        .split(',')
        .map(|h| {
            let has_port = if h.starts_with('[') {
                h.contains("]:")
            } else {
                h.contains(':')
            };
            if has_port || h.is_empty() {
                h.to_string()
            } else {
                format!("{h}:{port}")
            }
        })
        .collect();
    format!(
        "{}{}{}",
        &url[..start + hosts_at],
        hosts.join(","),
        &url[end..]
    )
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The rustls configuration for `mode`.
///
/// # Errors
/// `Config` when the root certificates cannot be read or none are found.
pub fn tls_config(mode: SslMode, root_cert: Option<&str>) -> Result<rustls::ClientConfig> {
    crate::support::http::ensure_tls_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS configuration: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(NoVerify(provider)),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(roots(root_cert)?);
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| Error::config(format!("TLS root certificates: {e}")))?;
            if mode == SslMode::VerifyCa {
                Arc::new(ChainOnly(inner))
            } else {
                inner
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn roots(root_cert: Option<&str>) -> Result<RootCertStore> {
    let default_file = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
        .filter(|p| p.is_file());
    let file = match root_cert {
        Some("system") => None,
        Some(f) => Some(PathBuf::from(f)),
        None => default_file,
    };
    let mut store = RootCertStore::empty();
    match file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<std::result::Result<_, _>>())
                .map_err(|e| {
                    Error::config(format!(
                        "sslrootcert {}: cannot read PEM certificates: {e}",
                        path.display()
                    ))
                })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::config(format!(
                    "sslrootcert {}: no usable certificate",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(Error::config(
                    "no system root certificates found for sslmode verify-ca/verify-full: \
                     set sslrootcert to the CA's PEM file",
                ));
            }
        }
    }
    Ok(store)
}

/// Accept any certificate (libpq's `prefer`/`require`): encryption without authentication.
/// Handshake signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A driver error with its causes (the driver's `Display` shows only the outermost).
pub fn error_chain(e: &tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The rustls error behind a failed connection, if TLS is what failed.
fn tls_cause(e: &tokio_postgres::Error) -> Option<String> {
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r.to_string());
            }
        }
        cur = c.source();
    }
    None
}

/// Connect per `spec`, spawning the connection task.
///
/// # Errors
/// `Source`: transient when the server is unreachable; permanent for a server error or a
/// failed TLS handshake (a certificate that does not verify).
pub async fn connect_spec(spec: &ConnSpec) -> Result<Client> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
        spec.ssl,
        spec.root_cert.as_deref(),
    )?);
    let (client, conn) = spec.cfg.connect(tls).await.map_err(|e| {
        let what = format!(
            "connecting to {} (sslmode={})",
            spec.display,
            spec.ssl.as_str()
        );
        if let Some(tls) = tls_cause(&e) {
            let hint = match spec.ssl {
                SslMode::VerifyFull if tls.contains("not valid for name") => {
                    " — connect by a host name the certificate names, or use sslmode=verify-ca \
                     to check the chain only"
                }
                SslMode::VerifyCa | SslMode::VerifyFull => {
                    " — set sslrootcert to the PEM file of the CA that signed the server's \
                     certificate, or use sslmode=require to encrypt without verifying it"
                }
                _ => "",
            };
            return Error::new(
                ErrorKind::Source,
                format!("{what}: TLS handshake failed: {tls}{hint}"),
            );
        }
        match e.as_db_error() {
            Some(db) => {
                let text = db_error_text(db);
                Error::new(ErrorKind::Source, what).with_cause(text, e)
            }
            None => {
                let text = error_chain(&e);
                Error::new(ErrorKind::Source, what)
                    .with_cause(text, e)
                    .retryable()
            }
        }
    })?;
    // Drive the connection ourselves: the driver would log every server NOTICE at INFO
    // (`schema "pg_temp" does not exist, skipping` on each restore). Notices are debug
    // detail; warnings the server raises stay warnings.
    let mut conn = conn;
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = futures::StreamExt::next(&mut messages).await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notice(n)) if n.severity() == "WARNING" => {
                    tracing::warn!("postgres: {}", db_error_text(&n));
                }
                Ok(tokio_postgres::AsyncMessage::Notice(n)) => {
                    tracing::debug!("postgres {}: {}", n.severity(), db_error_text(&n));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("postgres connection ended: {e}");
                    break;
                }
            }
        }
    });
    Ok(client)
}

/// Session settings shared by backup and the restore check, so CSV text is canonical.
pub const SESSION_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET client_encoding = 'UTF8'";

/// A server error as PostgreSQL's own tools print it: the message and SQLSTATE, then
/// the `DETAIL` (which often names the other table or row involved) and `HINT` lines.
pub fn db_error_text(db: &tokio_postgres::error::DbError) -> String {
    let mut text = format!("{} ({})", db.message(), db.code().code());
    if let Some(d) = db.detail() {
        text.push_str(&format!("\n  DETAIL: {d}"));
    }
    if let Some(h) = db.hint() {
        text.push_str(&format!("\n  HINT: {h}"));
    }
    text
}

/// Turn a driver error into ours: connection-level failures are transient, errors the
/// server reports are not (their `DETAIL` and `HINT` are kept, see [`db_error_text`]).
pub fn pg_err(what: impl std::fmt::Display, e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => {
            let text = db_error_text(db);
            Error::new(ErrorKind::Source, what.to_string()).with_cause(text, e)
        }
        None => Error::caused(ErrorKind::Source, what, e).retryable(),
    }
}

/// Connect to `url` (password from `password` when given, else the URL's, else
/// `PGPASSWORD`), completing the URL from libpq's environment variables and using TLS as
/// `sslmode` says (see the module docs); spawns the connection task.
///
/// # Errors
/// `Config` for a malformed URL, `Source` (transient) when the server is unreachable,
/// `Source` (permanent) when the server refuses or the certificate does not verify.
pub async fn connect(url: &Secret, password: Option<&Secret>) -> Result<Client> {
    let mut spec = resolve(url, password)?;
    spec.cfg.application_name("blobpipe");
    spec.cfg.connect_timeout(std::time::Duration::from_secs(30));
    connect_spec(&spec).await
}

/// Columns (stored, non-generated, in attribute order) and primary key of a table.
///
/// # Errors
/// Server errors.
pub async fn table_shape(
    c: &Client,
    schema: &str,
    name: &str,
) -> Result<Option<(Vec<Column>, Vec<String>)>> {
    let q = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
               AND a.attgenerated = '' ORDER BY a.attnum";
    let rows = c
        .query(q, &[&schema, &name])
        .await
        .map_err(|e| pg_err(format!("reading columns of {schema}.{name}"), e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let cols = rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            ty: r.get(1),
            nullable: r.get(2),
        })
        .collect();
    let q = "SELECT a.attname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) ON true \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary ORDER BY k.ord";
    let pk = c
        .query(q, &[&schema, &name])
        .await
        .map_err(|e| pg_err(format!("reading the primary key of {schema}.{name}"), e))?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok(Some((cols, pk)))
}

#[cfg(any(test, feature = "testing"))]
/// Whether `client`'s session is encrypted (`pg_stat_ssl`).
///
/// # Errors
/// `Source` when the query fails.
pub async fn session_is_encrypted(client: &Client) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
            &[],
        )
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Source,
                format!("pg_stat_ssl: {}", error_chain(&e)),
            )
        })?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn url_wins_env_fills_gaps() {
        let env = env_of(&[
            ("PGHOST", "envhost"),
            ("PGPORT", "6543"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
            ("PGPASSWORD", "envpw"),
            ("PGSSLMODE", "require"),
        ]);
        let s = resolve_with(
            &Secret::new("postgres://u@h/db?sslmode=verify-full&connect_timeout=5"),
            None,
            &env,
        )
        .unwrap();
        assert_eq!(s.ssl, SslMode::VerifyFull);
        assert_eq!(s.cfg.get_user(), Some("u"));
        assert_eq!(s.cfg.get_dbname(), Some("db"));
        assert_eq!(s.cfg.get_ports(), &[6543]);
        assert_eq!(s.cfg.get_password(), Some(&b"envpw"[..]));

        let s = resolve_with(&Secret::new("postgres://"), None, &env).unwrap();
        assert_eq!(s.ssl, SslMode::Require);
        assert_eq!(s.cfg.get_user(), Some("envuser"));
        assert_eq!(s.cfg.get_dbname(), Some("envdb"));
        assert!(
            matches!(&s.cfg.get_hosts()[0], tokio_postgres::config::Host::Tcp(h) if h == "envhost")
        );

        // A password in the URL beats PGPASSWORD; an explicit one beats both.
        let s = resolve_with(&Secret::new("postgres://u:urlpw@h/db"), None, &env).unwrap();
        assert_eq!(s.cfg.get_password(), Some(&b"urlpw"[..]));
        let s = resolve_with(
            &Secret::new("postgres://u:urlpw@h/db"),
            Some(&Secret::new("x")),
            &env,
        )
        .unwrap();
        assert_eq!(s.cfg.get_password(), Some(&b"x"[..]));
    }

    #[test]
    fn pgport_fills_hosts_without_one() {
        assert_eq!(
            with_default_port("postgres://u:p@h/db", 7),
            "postgres://u:p@h:7/db"
        );
        assert_eq!(
            with_default_port("postgres://a,b:9,[::1]/db?x=1", 7),
            "postgres://a:7,b:9,[::1]:7/db?x=1"
        );
        assert_eq!(with_default_port("postgres://", 7), "postgres://");
        assert_eq!(
            with_default_port("postgres://h/db?port=9", 7),
            "postgres://h/db?port=9"
        );
    }

    #[test]
    fn sslmodes() {
        let none = env_of(&[]);
        let r = |u: &str| resolve_with(&Secret::new(u), None, &none);
        assert_eq!(r("postgres://u@h/d").unwrap().ssl, SslMode::Prefer);
        assert_eq!(
            r("postgres://u@h/d?sslmode=disable").unwrap().ssl,
            SslMode::Disable
        );
        assert_eq!(
            r("postgres://u@h/d?sslmode=require&sslrootcert=%2Ftmp%2Fca.pem")
                .unwrap()
                .ssl,
            SslMode::VerifyCa
        );
        assert_eq!(
            r("postgres://u@h/d?sslrootcert=/tmp/ca.pem")
                .unwrap()
                .root_cert
                .as_deref(),
            Some("/tmp/ca.pem")
        );
        let e = r("postgres://u:hunter2@h/d?sslmode=bogus")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("bogus") && !e.contains("hunter2"), "{e}");
        let e = r("postgres://u:hunter2@h/d?sslcert=/c.pem")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslcert") && !e.contains("hunter2"), "{e}");
    }
}
