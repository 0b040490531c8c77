//! MySQL / MariaDB connections and the reads both backup and restore make: URL handling
//! (`mysql://` or `mariadb://`), TLS, session set-up (`time_zone = '+00:00'`, `utf8mb4`),
//! the table shape from `information_schema`, and streaming a table as CSV rows — the
//! same rows whether the backup writes them or the restore re-reads them for the row-set
//! checksum.
//!
//! **Password.** From the URL; else the one given separately (the pipeline's `password`);
//! else `MYSQL_PWD` (the MySQL clients' variable). It stays a [`Secret`] and never reaches
//! a message.
//!
//! **TLS** (rustls on the `ring` provider, as for PostgreSQL), chosen by `sslmode` in the
//! URL's query — libpq's spelling (`disable`, `prefer`, `require`, `verify-ca`,
//! `verify-full`) or MySQL's (`ssl-mode=DISABLED|PREFERRED|REQUIRED|VERIFY_CA|
//! VERIFY_IDENTITY`), with the PostgreSQL side's meanings:
//! * `disable`: plain TCP;
//! * `prefer` (the default, as for the MySQL clients): TLS when the server offers it,
//!   plain otherwise; the certificate is not checked;
//! * `require`: TLS or fail, certificate not checked — unless `sslrootcert` is given, in
//!   which case it is checked as with `verify-ca`;
//! * `verify-ca`: TLS, the chain must lead to a trusted root (any host name);
//! * `verify-full`: as `verify-ca`, and the certificate must name the host.
//!
//! Trusted roots are the PEM file `sslrootcert` (also spelt `ssl-ca`), else the system's
//! roots (also asked for with `sslrootcert=system`). Client certificates are not
//! supported. When TLS is required, the driver's switch to the server's Unix socket on a
//! loopback host is turned off, so the session is the encrypted TCP one.

use bytes::{BufMut, Bytes, BytesMut};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts, Value};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::db::csv::{csv_field, csv_field_max};
pub use crate::db::postgres::SslMode;
use crate::db::sql::{my_ident, my_is_binary};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{Column, RowsetDigest, TableRecord};
use crate::support::secret::{redact_url, Secret};

/// Map a driver error (never retried: a broken connection loses the snapshot).
pub fn my_err(what: impl std::fmt::Display, e: mysql_async::Error) -> Error {
    Error::caused(ErrorKind::Source, what, e)
}

/// A resolved connection: driver options (password included), TLS mode and roots.
pub struct MyConnSpec {
    /// Driver options. Their `Debug` would show the password: never print them.
    opts: OptsBuilder,
    /// The effective TLS mode.
    pub ssl: SslMode,
    /// `sslrootcert`, when given (a PEM file or `system`).
    pub root_cert: Option<String>,
    /// The URL, safe to print.
    pub display: String,
}

/// MySQL's `--ssl-mode` spelling, or libpq's.
fn parse_ssl_mode(s: &str) -> Option<SslMode> {
    if let Some(m) = SslMode::parse(s) {
        return Some(m);
    }
    Some(match s.to_ascii_uppercase().as_str() {
        "DISABLED" => SslMode::Disable,
        "PREFERRED" => SslMode::Prefer,
        "REQUIRED" => SslMode::Require,
        "VERIFY_CA" => SslMode::VerifyCa,
        "VERIFY_IDENTITY" => SslMode::VerifyFull,
        _ => return None,
    })
}

/// Resolve `url` (plus `password` when given, else `MYSQL_PWD`).
///
/// # Errors
/// `Config` for a malformed URL, an unknown `sslmode` or an unsupported TLS option.
pub fn resolve(url: &Secret, password: Option<&Secret>) -> Result<MyConnSpec> {
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
) -> Result<MyConnSpec> {
    let raw = url.expose();
    let display = redact_url(raw);
    let u = match raw.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => raw.to_string(),
    };
    let (rest, params) = split_tls_params(&u);
    let mut mode = None;
    let mut root_cert = None;
    for (k, v) in params {
        match k.as_str() {
            "sslmode" | "ssl-mode" | "ssl_mode" => {
                mode = Some(parse_ssl_mode(&v).ok_or_else(|| {
                    Error::config(format!(
                        "MySQL URL {display}: unknown sslmode {v:?}: use disable, prefer, \
                         require, verify-ca or verify-full"
                    ))
                })?)
            }
            "sslrootcert" | "ssl-ca" | "ssl_ca" => root_cert = Some(v),
            "require_ssl" | "verify_ca" | "verify_identity" | "built_in_roots" => {
                return Err(Error::config(format!(
                    "MySQL URL {display}: {k} is not used by blobpipe: write sslmode=require, \
                     verify-ca or verify-full (and sslrootcert=<CA PEM file>)"
                )))
            }
            _ => {
                return Err(Error::config(format!(
                    "MySQL URL {display}: {k} is not supported (client certificates are not)"
                )))
            }
        }
    }
    let opts = Opts::from_url(&rest)
        .map_err(|e| Error::config(format!("invalid MySQL URL {display}: {e}")))?;
    let url_has_password = opts.pass().is_some_and(|p| !p.is_empty());
    let mut b = OptsBuilder::from_opts(opts);
    if let Some(p) = password {
        b = b.pass(Some(p.expose().to_string()));
    } else if !url_has_password {
        if let Some(p) = env("MYSQL_PWD") {
            b = b.pass(Some(p));
        }
    }
    let mut ssl = mode.unwrap_or(SslMode::Prefer);
    if ssl == SslMode::Require && root_cert.is_some() {
        ssl = SslMode::VerifyCa;
    }
    if matches!(
        ssl,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
    ) {
        b = b.prefer_socket(false);
    }
    Ok(MyConnSpec {
        opts: b,
        ssl,
        root_cert,
        display,
    })
}

/// Take the TLS parameters out of a URL's query string; the rest is returned as written.
fn split_tls_params(url: &str) -> (String, Vec<(String, String)>) {
    let Some(q) = url.find('?') else {
        return (url.to_string(), Vec::new());
    };
    let (base, query) = (&url[..q], &url[q + 1..]);
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k);
        let tls = key.starts_with("ssl")
            || matches!(
                key.as_str(),
                "require_ssl" | "verify_ca" | "verify_identity" | "built_in_roots"
            );
        if tls {
            taken.push((key, percent_decode(v)));
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

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The trusted roots as DER: the PEM file `root_cert`, or the system's.
fn roots(root_cert: Option<&str>) -> Result<Vec<Vec<u8>>> {
    let ders: Vec<Vec<u8>> = match root_cert {
        Some(path) if path != "system" => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<std::result::Result<_, _>>())
                .map_err(|e| {
                    Error::config(format!(
                        "sslrootcert {path}: cannot read PEM certificates: {e}"
                    ))
                })?;
            if certs.is_empty() {
                return Err(Error::config(format!(
                    "sslrootcert {path}: no certificate in the file"
                )));
            }
            certs.into_iter().map(|c| c.to_vec()).collect()
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                return Err(Error::config(
                    "no system root certificates found for sslmode verify-ca/verify-full: \
                     set sslrootcert to the CA's PEM file",
                ));
            }
            found.certs.into_iter().map(|c| c.to_vec()).collect()
        }
    };
    Ok(ders)
}

/// The driver's TLS options for `spec` (`None`: plain), with the host name to verify
/// against when it differs from the URL's.
fn ssl_opts(spec: &MyConnSpec, name_override: Option<&str>) -> Result<Option<SslOpts>> {
    Ok(match spec.ssl {
        SslMode::Disable => None,
        SslMode::Prefer | SslMode::Require => {
            Some(SslOpts::default().with_danger_accept_invalid_certs(true))
        }
        SslMode::VerifyCa | SslMode::VerifyFull => Some(
            SslOpts::default()
                .with_root_certs(
                    roots(spec.root_cert.as_deref())?
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                )
                .with_disable_built_in_roots(true)
                .with_danger_tls_hostname_override(name_override.map(str::to_string)),
        ),
    })
}

/// The rustls error behind a failed connection, if TLS is what failed.
fn tls_cause(e: &mysql_async::Error) -> Option<rustls::Error> {
    use mysql_async::{IoError, TlsError};
    if let mysql_async::Error::Io(io) = e {
        match io {
            IoError::Tls(TlsError::Tls(r)) => return Some(r.clone()),
            IoError::Io(io) => {
                if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    return Some(r.clone());
                }
            }
            _ => {}
        }
    }
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(r.clone());
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r.clone());
            }
        }
        cur = c.source();
    }
    None
}

/// For `verify-ca`: the first name the certificate presents, when the chain verified but
/// the host name did not match (webpki checks the chain before the name).
fn presented_name(e: &mysql_async::Error) -> Option<String> {
    let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
        presented,
        ..
    })) = tls_cause(e)
    else {
        return None;
    };
    presented.iter().find_map(|n| {
        let inner = n
            .strip_prefix("DnsName(\"")
            .and_then(|r| r.strip_suffix("\")"))
            .or_else(|| {
                n.strip_prefix("IpAddress(")
                    .and_then(|r| r.strip_suffix(')'))
            })?;
        (!inner.starts_with('*')).then(|| inner.to_string())
    })
}

async fn try_connect(
    spec: &MyConnSpec,
    ssl: Option<SslOpts>,
) -> std::result::Result<Conn, mysql_async::Error> {
    Conn::new(spec.opts.clone().ssl_opts(ssl)).await
}

/// Connect per `spec`.
///
/// # Errors
/// `Source`: transient when the server is unreachable; permanent for a server error (a
/// refused login, or plain TCP where the server requires TLS) or a failed TLS handshake
/// (a certificate that does not verify). `Config` when the roots cannot be read.
pub async fn connect_spec(spec: &MyConnSpec) -> Result<Conn> {
    crate::support::http::ensure_tls_provider();
    let mut r = try_connect(spec, ssl_opts(spec, None)?).await;
    match (&r, spec.ssl) {
        (
            Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)),
            SslMode::Prefer,
        ) => {
            r = try_connect(spec, None).await;
        }
        (Err(e), SslMode::VerifyCa) => {
            // The chain verified, the name did not: verify-ca does not check names, so
            // connect again verifying the chain against a name the certificate holds.
            if let Some(name) = presented_name(e) {
                r = try_connect(spec, ssl_opts(spec, Some(&name))?).await;
            }
        }
        _ => {}
    }
    r.map_err(|e| connect_error(spec, e))
}

fn connect_error(spec: &MyConnSpec, e: mysql_async::Error) -> Error {
    let what = format!(
        "connecting to {} (sslmode={})",
        spec.display,
        spec.ssl.as_str()
    );
    if let Some(tls) = tls_cause(&e) {
        let tls = tls.to_string();
        let hint = match spec.ssl {
            SslMode::VerifyFull if tls.contains("not valid for name") => {
                " — connect by a host name the certificate names, or use sslmode=verify-ca \
                 to check the chain only"
            }
            SslMode::VerifyCa | SslMode::VerifyFull => {
                " — set sslrootcert to the PEM file of the CA that signed the server's \
                 certificate (Azure Database for MySQL: see docs/databases.md), or use \
                 sslmode=require to encrypt without verifying it"
            }
            _ => "",
        };
        return Error::new(
            ErrorKind::Source,
            format!("{what}: TLS handshake failed: {tls}{hint}"),
        );
    }
    match &e {
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            Error::new(
                ErrorKind::Source,
                format!(
                    "{what}: the server does not offer TLS — enable TLS on the server, or use \
                     sslmode=prefer or disable on a private network"
                ),
            )
        }
        mysql_async::Error::Server(s) => {
            let hint = match (s.code, spec.ssl) {
                (3159, _) => {
                    " — the server requires encrypted connections \
                     (require_secure_transport=ON): use sslmode=require, verify-ca or verify-full"
                }
                (1045, SslMode::Disable | SslMode::Prefer) => {
                    " — if the server requires encrypted connections \
                     (require_secure_transport=ON, the default on Azure Database for MySQL), \
                     MariaDB refuses plain ones this way: use sslmode=require, verify-ca or \
                     verify-full"
                }
                _ => "",
            };
            let text = format!("{s}{hint}");
            Error::new(ErrorKind::Source, what).with_cause(text, e)
        }
        _ => Error::caused(ErrorKind::Source, what, e).retryable(),
    }
}

/// Connect to `url` (`mysql://` or `mariadb://`), password override optional, TLS as the
/// URL's `sslmode` says (see the module docs); sets the session's time zone and charset.
///
/// # Errors
/// `Config` for a malformed URL, `Source` when the server is unreachable or refuses (see
/// [`connect_spec`]).
pub async fn connect(url: &Secret, password: Option<&Secret>) -> Result<Conn> {
    let spec = resolve(url, password)?;
    let mut c = connect_spec(&spec).await?;
    c.query_drop("SET SESSION time_zone = '+00:00', NAMES utf8mb4")
        .await
        .map_err(|e| my_err("session settings", e))?;
    Ok(c)
}

#[cfg(any(test, feature = "testing"))]
/// The session's TLS cipher (`Ssl_cipher`), `None` for a plain session.
///
/// # Errors
/// `Source` when the query fails.
pub async fn session_cipher(c: &mut Conn) -> Result<Option<String>> {
    let row: Option<(String, String)> = c
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .map_err(|e| my_err("reading Ssl_cipher", e))?;
    Ok(row.map(|(_, v)| v).filter(|v| !v.is_empty()))
}

/// One row as a CSV line.
pub fn csv_row(values: Vec<Value>, binary: &[bool]) -> Bytes {
    let mut out = BytesMut::new();
    csv_row_into(&mut out, &values, binary);
    out.freeze()
}

/// Append one row as a CSV line to `out`, reserving room for all of it first (one
/// allocation at most, none while the arena has room).
pub fn csv_row_into(out: &mut BytesMut, values: &[Value], binary: &[bool]) {
    let need: usize = values
        .iter()
        .map(|v| match v {
            Value::Bytes(b) => csv_field_max(b.len()) + 1,
            _ => 64,
        })
        .sum::<usize>()
        + 1;
    out.reserve(need);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        let b = binary.get(i).copied().unwrap_or(false);
        match v {
            Value::NULL => {}
            Value::Bytes(bytes) => csv_field(out, Some(bytes), b),
            other => {
                // The text protocol sends bytes; keep other forms readable anyway.
                let s = other.as_sql(true);
                csv_field(out, Some(s.trim_matches('\'').as_bytes()), false)
            }
        }
    }
    out.put_u8(b'\n');
}

/// Bytes of one row arena of [`read_rows`]: rows are written into it and split off as
/// `Bytes` that share it, so a row costs no allocation of its own.
const ROW_ARENA: usize = 1 << 20;

/// Columns (non-generated) and primary key of a table, `None` when it does not exist.
///
/// # Errors
/// Server errors.
pub async fn table_shape(
    c: &mut Conn,
    schema: &str,
    name: &str,
) -> Result<Option<(Vec<Column>, Vec<String>)>> {
    let rows: Vec<(String, String, String)> = c
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
               AND EXTRA NOT LIKE '%GENERATED%' AND EXTRA NOT IN ('VIRTUAL', 'PERSISTENT', 'STORED') \
             ORDER BY ORDINAL_POSITION",
            (schema, name),
        )
        .await
        .map_err(|e| my_err(format!("reading columns of {schema}.{name}"), e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let cols = rows
        .into_iter()
        .map(|(n, t, nl)| Column {
            name: n,
            ty: t,
            nullable: nl == "YES",
        })
        .collect();
    let pk: Vec<String> = c
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY ORDINAL_POSITION",
            (schema, name),
        )
        .await
        .map_err(|e| my_err(format!("reading the primary key of {schema}.{name}"), e))?;
    Ok(Some((cols, pk)))
}

/// A table's secondary indexes and its foreign-key and check constraints, as the lines
/// of `SHOW CREATE TABLE` print them (`KEY …`, `UNIQUE KEY …`, `FULLTEXT KEY …`,
/// `CONSTRAINT … FOREIGN KEY … REFERENCES …`, `CONSTRAINT … CHECK …`), with every
/// referenced table written `` `database`.`table` `` so a drill can point it at its
/// scratch copy. The primary key is not among them (the table record carries it), nor
/// are checks written inside a column's definition.
///
/// # Errors
/// Server errors.
pub async fn table_ddl(
    c: &mut Conn,
    schema: &str,
    name: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let row: Option<(String, String)> = c
        .query_first(format!(
            "SHOW CREATE TABLE {}.{}",
            my_ident(schema),
            my_ident(name)
        ))
        .await
        .map_err(|e| {
            my_err(
                format!("reading the indexes and constraints of {schema}.{name}"),
                e,
            )
        })?;
    Ok(row.map_or_else(Default::default, |(_, ddl)| {
        split_create_table(&ddl, schema)
    }))
}

/// The index and constraint lines of a `SHOW CREATE TABLE` text (see [`table_ddl`]).
pub fn split_create_table(ddl: &str, schema: &str) -> (Vec<String>, Vec<String>) {
    let (mut indexes, mut constraints) = (Vec::new(), Vec::new());
    for line in ddl.lines().skip(1) {
        let l = line.trim().trim_end_matches(',');
        if [
            "KEY ",
            "UNIQUE KEY ",
            "FULLTEXT KEY ",
            "SPATIAL KEY ",
            "VECTOR KEY ",
        ]
        .iter()
        .any(|p| l.starts_with(p))
        {
            indexes.push(l.to_string());
        } else if l.starts_with("CONSTRAINT ") {
            constraints.push(qualify_references(l, schema));
        }
    }
    (indexes, constraints)
}

/// `` REFERENCES `t` ( `` → `` REFERENCES `schema`.`t` ( `` (MySQL leaves out the database
/// of a table in the same one).
fn qualify_references(l: &str, schema: &str) -> String {
    let Some(at) = l.find(" REFERENCES ") else {
        return l.to_string();
    };
    let rest = &l[at + 12..];
    match parse_backquoted(rest) {
        Some((_, after)) if !after.starts_with('.') => {
            format!("{} REFERENCES {}.{rest}", &l[..at], my_ident(schema))
        }
        _ => l.to_string(),
    }
}

/// One backquoted identifier at the start of `s` (`` ` `` doubled inside), and the rest.
pub fn parse_backquoted(s: &str) -> Option<(String, &str)> {
    let rest = s.strip_prefix('`')?;
    let mut out = String::new();
    let mut it = rest.char_indices();
    while let Some((i, ch)) = it.next() {
        if ch == '`' {
            if rest[i + 1..].starts_with('`') {
                out.push('`');
                it.next();
            } else {
                return Some((out, &rest[i + 1..]));
            }
        } else {
            out.push(ch);
        }
    }
    None
}

/// Where [`read_rows`] sends CSV rows.
#[async_trait::async_trait]
pub trait RowSink: Send {
    /// Take one row; `Err` stops reading.
    async fn row(&mut self, row: Bytes) -> std::result::Result<(), ()>;
}

#[async_trait::async_trait]
impl RowSink for RowsetDigest {
    async fn row(&mut self, row: Bytes) -> std::result::Result<(), ()> {
        self.add_row(&row);
        Ok(())
    }
}

/// Stream `SELECT cols FROM table [WHERE lo <= key < hi] ORDER BY key` as CSV rows into
/// `sink` (`bounds` applies to the first primary-key column).
///
/// # Errors
/// Server errors.
pub async fn read_rows(
    c: &mut Conn,
    t: &TableRecord,
    schema: &str,
    bounds: Option<(i64, i64)>,
    sink: &mut dyn RowSink,
) -> Result<()> {
    let cols: Vec<String> = t.columns.iter().map(|c| my_ident(&c.name)).collect();
    let binary: Vec<bool> = t.columns.iter().map(|c| my_is_binary(&c.ty)).collect();
    let mut q = format!(
        "SELECT {} FROM {}.{}",
        cols.join(", "),
        my_ident(schema),
        my_ident(&t.name)
    );
    if let (Some((lo, hi)), Some(k)) = (bounds, t.primary_key.first()) {
        let k = my_ident(k);
        q.push_str(&format!(" WHERE {k} >= {lo} AND {k} < {hi}"));
    }
    if !t.primary_key.is_empty() {
        let k: Vec<String> = t.primary_key.iter().map(|k| my_ident(k)).collect();
        q.push_str(&format!(" ORDER BY {}", k.join(", ")));
    }
    let fq = format!("{schema}.{}", t.name);
    let mut res = c
        .query_iter(q)
        .await
        .map_err(|e| my_err(format!("reading {fq}"), e))?;
    let mut arena = BytesMut::with_capacity(ROW_ARENA);
    while let Some(row) = res
        .next()
        .await
        .map_err(|e| my_err(format!("reading {fq}"), e))?
    {
        csv_row_into(&mut arena, &row.unwrap(), &binary);
        if sink.row(arena.split().freeze()).await.is_err() {
            break;
        }
    }
    drop(res);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::csv::parse_csv;

    fn spec(url: &str, pw: Option<&str>, env_pw: Option<&'static str>) -> Result<MyConnSpec> {
        let env = move |k: &str| {
            (k == "MYSQL_PWD")
                .then(|| env_pw.map(str::to_string))
                .flatten()
        };
        resolve_with(&Secret::new(url), pw.map(Secret::new).as_ref(), &env)
    }

    #[test]
    fn sslmode_in_both_spellings_and_require_with_a_root_is_verify_ca() {
        let mode = |u: &str| spec(u, None, None).unwrap().ssl;
        assert_eq!(mode("mysql://u@h/db"), SslMode::Prefer);
        assert_eq!(mode("mysql://u@h/db?sslmode=disable"), SslMode::Disable);
        assert_eq!(mode("mariadb://u@h/db?ssl-mode=REQUIRED"), SslMode::Require);
        assert_eq!(mode("mysql://u@h/db?ssl-mode=VERIFY_CA"), SslMode::VerifyCa);
        assert_eq!(
            mode("mysql://u@h/db?ssl-mode=VERIFY_IDENTITY&pool_min=1"),
            SslMode::VerifyFull
        );
        let s = spec(
            "mysql://u@h/db?sslmode=require&sslrootcert=%2Ftmp%2Fca.pem",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            (s.ssl, s.root_cert.as_deref()),
            (SslMode::VerifyCa, Some("/tmp/ca.pem"))
        );
        assert!(!Opts::from(s.opts.clone()).prefer_socket());

        let e = spec("mysql://u:pw@h/db?sslmode=sometimes", None, None)
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.to_string().contains("verify-full") && !e.to_string().contains("pw@"),
            "{e}"
        );
        for bad in ["sslcert=/c.pem", "require_ssl=true", "verify_identity=true"] {
            let e = spec(&format!("mysql://u@h/db?{bad}"), None, None)
                .err()
                .unwrap();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn show_create_table_lines_become_indexes_and_qualified_constraints() {
        let ddl = "CREATE TABLE `child` (\n  `id` int(11) NOT NULL,\n  `p` int(11) NOT NULL,\n  \
            `n` int(11) DEFAULT NULL CHECK (`n` > 0),\n  PRIMARY KEY (`id`),\n  \
            UNIQUE KEY `u` (`p`,`n`),\n  KEY `p` (`p`),\n  FULLTEXT KEY `ft` (`s`),\n  \
            CONSTRAINT `fk``1` FOREIGN KEY (`p`) REFERENCES `parent` (`id`) ON DELETE CASCADE,\n  \
            CONSTRAINT `fk2` FOREIGN KEY (`p`) REFERENCES `other`.`t` (`id`),\n  \
            CONSTRAINT `CONSTRAINT_1` CHECK (`p` <> 0)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
        let (ix, cs) = split_create_table(ddl, "app");
        assert_eq!(
            ix,
            [
                "UNIQUE KEY `u` (`p`,`n`)",
                "KEY `p` (`p`)",
                "FULLTEXT KEY `ft` (`s`)"
            ]
        );
        assert_eq!(
            cs,
            [
                "CONSTRAINT `fk``1` FOREIGN KEY (`p`) REFERENCES `app`.`parent` (`id`) ON DELETE CASCADE",
                "CONSTRAINT `fk2` FOREIGN KEY (`p`) REFERENCES `other`.`t` (`id`)",
                "CONSTRAINT `CONSTRAINT_1` CHECK (`p` <> 0)",
            ]
        );
        assert_eq!(parse_backquoted("`a``b`.`c`"), Some(("a`b".into(), ".`c`")));
        assert_eq!(parse_backquoted("`open"), None);
    }

    #[test]
    fn password_from_argument_then_url_then_mysql_pwd() {
        let pass = |s: MyConnSpec| Opts::from(s.opts).pass().map(str::to_string);
        let p = pass(spec("mysql://u@h/db", None, Some("envpw")).unwrap());
        assert_eq!(p.as_deref(), Some("envpw"));
        let p = pass(spec("mysql://u:urlpw@h/db", None, Some("envpw")).unwrap());
        assert_eq!(p.as_deref(), Some("urlpw"));
        let p = pass(spec("mysql://u:urlpw@h/db", Some("given"), Some("envpw")).unwrap());
        assert_eq!(p.as_deref(), Some("given"));
        let s = spec("mysql://u:urlpw@h/db?sslmode=require", None, None).unwrap();
        assert!(!s.display.contains("urlpw"), "{}", s.display);
    }

    #[test]
    fn csv_round_trip_keeps_null_empty_quotes_newlines_and_bytes() {
        let row = csv_row(
            vec![
                Value::Bytes(b"a,\"b\"\nc".to_vec()),
                Value::NULL,
                Value::Bytes(vec![]),
                Value::Bytes(vec![0, 255, 10]),
            ],
            &[false, false, false, true],
        );
        assert_eq!(&row[..], &b"\"a,\"\"b\"\"\nc\",,\"\",\"\\x00ff0a\"\n"[..]);
        let mut two = row.to_vec();
        two.extend_from_slice(b"x,\r\n");
        let recs = parse_csv(&two).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0][0].as_deref(), Some(&b"a,\"b\"\nc"[..]));
        assert_eq!(recs[0][1], None);
        assert_eq!(recs[0][2].as_deref(), Some(&b""[..]));
        assert_eq!(recs[0][3].as_deref(), Some(&b"\\x00ff0a"[..]));
        assert_eq!(recs[1], vec![Some(b"x".to_vec()), None]);
        assert!(parse_csv(b"\"open").is_err());
        assert!(my_is_binary("longblob") && my_is_binary("varbinary(16)") && !my_is_binary("text"));
    }
}
