//! `[encryption] key_vault_key` end to end, through the binary, against a loopback HTTPS
//! stand-in for Azure Key Vault (not against Azure: see docs/encryption.md).
//!
//! The stand-in checks what the real service requires and does a real, reversible wrap
//! (AES-256-GCM under a secret per key version, which the client cannot tell from
//! RSA-OAEP): the bearer challenge (first request without a token, answered 401 with
//! `WWW-Authenticate`), then `POST /keys/<name>/<version>/wrapkey|unwrapkey?api-version=…`
//! with `Authorization: Bearer <token>` equal to the token the managed-identity stand-in
//! (`IDENTITY_ENDPOINT`) issued, and a JSON body `{"alg":"RSA-OAEP-256","value":<base64url>}`.
//!
//! TLS: a CA and a server certificate for `kv1.vault.azure.net` are made at test time with
//! the `openssl` CLI (valid two days); the binary trusts the CA and sends that host to the
//! stand-in through `support::http`'s test-only hook (`BLOBPIPE_TEST_EXTRA_ROOT_CA`,
//! `BLOBPIPE_TEST_RESOLVE`, compiled only with the `testing` feature).

mod common;
mod ops_support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const HOST: &str = "kv1.vault.azure.net";
const PASS: &str = "a passphrase before the vault 0815";

/// One request the stand-in saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    auth: Option<String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct Vault {
    token: String,
    /// (key name, version) → wrapping secret; a name's last version is its current one.
    keys: Vec<(String, String, [u8; 32])>,
    /// Answer 403 to every authorized request.
    forbid: bool,
    /// Answer 503 to every authorized request (the vault is down).
    down: bool,
    seen: Vec<Seen>,
    /// Every data key it was asked to wrap (to prove none is ever printed or stored).
    wrapped_plain: Vec<Vec<u8>>,
}

fn b64u(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn json(status: u16, v: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

fn error(status: u16, code: &str) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::json!({"error": {"code": code, "message": format!("stand-in: {code}")}}),
    )
}

async fn handle(
    v: Arc<Mutex<Vault>>,
    port: u16,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .map(String::from);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let mut v = v.lock().unwrap();
    v.seen.push(Seen {
        method: method.clone(),
        target: target.clone(),
        auth: auth.clone(),
        body: body.clone(),
    });
    let Some(auth) = auth else {
        return Ok(Response::builder()
            .status(401)
            .header(
                "www-authenticate",
                "Bearer authorization=\"https://login.microsoftonline.com/tenant\", resource=\"https://vault.azure.net\"",
            )
            .body(Full::new(Bytes::new()))
            .unwrap());
    };
    if auth != format!("Bearer {}", v.token) {
        return Ok(error(401, "Unauthorized"));
    }
    if v.forbid {
        return Ok(error(403, "Forbidden"));
    }
    if v.down {
        return Ok(error(503, "ServiceUnavailable"));
    }
    let url = url::Url::parse(&format!("https://{HOST}{target}")).unwrap();
    if method != "POST"
        || !url
            .query_pairs()
            .any(|(k, v)| k == "api-version" && !v.is_empty())
    {
        return Ok(error(400, "BadRequest"));
    }
    let segs: Vec<&str> = url.path_segments().unwrap().collect();
    let (name, version, op) = match segs.as_slice() {
        ["keys", n, ver, op] => (n.to_string(), ver.to_string(), op.to_string()),
        ["keys", n, op] => (n.to_string(), String::new(), op.to_string()),
        _ => return Ok(error(404, "NotFound")),
    };
    let Ok(b) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Ok(error(400, "BadParameter"));
    };
    let value = b["value"].as_str().and_then(|s| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()
    });
    let (Some(value), Some("RSA-OAEP-256")) = (value, b["alg"].as_str()) else {
        return Ok(error(400, "BadParameter"));
    };
    let Some((version, secret)) = v
        .keys
        .iter()
        .rfind(|(n, ver, _)| *n == name && (version.is_empty() || *ver == version))
        .map(|(_, ver, s)| (ver.clone(), *s))
    else {
        return Ok(error(404, "KeyNotFound"));
    };
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &secret).unwrap());
    let kid = format!("https://{HOST}:{port}/keys/{name}/{version}");
    match op.as_str() {
        "wrapkey" => {
            v.wrapped_plain.push(value.clone());
            let nonce: [u8; 12] = rand_bytes();
            let mut out = value;
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut out,
            )
            .unwrap();
            let mut sealed = nonce.to_vec();
            sealed.extend_from_slice(&out);
            Ok(json(
                200,
                serde_json::json!({"kid": kid, "value": b64u(&sealed)}),
            ))
        }
        "unwrapkey" if value.len() > 12 => {
            let nonce = Nonce::try_assume_unique_for_key(&value[..12]).unwrap();
            let mut buf = value[12..].to_vec();
            match key.open_in_place(nonce, Aad::empty(), &mut buf) {
                Ok(plain) => Ok(json(
                    200,
                    serde_json::json!({"kid": kid, "value": b64u(plain)}),
                )),
                Err(_) => Ok(error(400, "BadParameter")),
            }
        }
        _ => Ok(error(400, "BadParameter")),
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA and a server certificate for [`HOST`], made with the openssl CLI.
fn certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut a = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=blobpipe test CA",
    ];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &a);
    let mut a = vec!["req", "-nodes", "-subj", "/CN=kv1.vault.azure.net"];
    a.extend(ec);
    a.extend(["-keyout", "srv.key", "-out", "srv.csr"]);
    openssl(dir, &a);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:kv1.vault.azure.net\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "srv.pem",
        ],
    );
}

struct Fx {
    t: tempfile::TempDir,
    /// Runs the stand-ins (dropping it stops them).
    _rt: tokio::runtime::Runtime,
    vault: Arc<Mutex<Vault>>,
    port: u16,
    src: PathBuf,
    pipeline: PathBuf,
    store: PathBuf,
    env: Vec<(String, String)>,
    printed: std::cell::RefCell<Vec<u8>>,
}

fn fixture(encryption: &str) -> Fx {
    blobpipe::support::http::ensure_tls_provider();
    let t = tempfile::tempdir().unwrap();
    certificates(t.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token = format!("kv-token-{}", hex::encode(rand_bytes::<12>()));
    let vault = Arc::new(Mutex::new(Vault {
        token: token.clone(),
        keys: vec![
            ("bp-kek".into(), "v1".into(), rand_bytes()),
            ("bp-other".into(), "o1".into(), rand_bytes()),
        ],
        ..Default::default()
    }));
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(t.path().join("srv.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(t.path().join("srv.key")).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = l.local_addr().unwrap().port();
    let v = vault.clone();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let (acc, v) = (acceptor.clone(), v.clone());
            tokio::spawn(async move {
                let Ok(tls) = acc.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |r| handle(v.clone(), port, r));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    // The managed-identity endpoint (Container Apps / Functions) issues the token.
    let expires = chrono::Utc::now().timestamp() + 3600;
    let body: &'static str = Box::leak(
        format!(
            "{{\"access_token\":\"{token}\",\"expires_on\":\"{expires}\",\"resource\":\"https://vault.azure.net\",\"token_type\":\"Bearer\"}}"
        )
        .into_boxed_str(),
    );
    let msi = rt.block_on(ops_support::Receiver::start(vec![200], body));
    let env = vec![
        (
            "IDENTITY_ENDPOINT".into(),
            format!("{}/msi/token", msi.base),
        ),
        ("IDENTITY_HEADER".into(), "msi-header-secret".into()),
        (
            "BLOBPIPE_TEST_EXTRA_ROOT_CA".into(),
            t.path().join("ca.pem").display().to_string(),
        ),
        (
            "BLOBPIPE_TEST_RESOLVE".into(),
            format!("{HOST}=127.0.0.1:{port}"),
        ),
        ("BLOBPIPE_PASS".into(), PASS.into()),
    ];
    std::mem::forget(msi);
    let src = t.path().join("src");
    sample_tree(&src);
    let store = t.path().join("store");
    let pipeline = write_pipeline(
        t.path(),
        "kv",
        &src,
        &format!("file://{}", store.display()),
        &format!(
            "[upload]\nblock_size = \"128KiB\"\npack_size = \"1MiB\"\n\n{}\n",
            encryption.replace("PORT", &port.to_string())
        ),
    );
    Fx {
        t,
        _rt: rt,
        vault,
        port,
        src,
        pipeline,
        store,
        env,
        printed: Default::default(),
    }
}

impl Fx {
    fn p(&self) -> &str {
        self.pipeline.to_str().unwrap()
    }
    fn key_url(&self, name: &str) -> String {
        format!("https://{HOST}:{}/keys/{name}", self.port)
    }
    fn bp(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_blobpipe"));
        c.args(args).env("RUST_LOG", "debug");
        for k in [
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "BLOBPIPE_AZURE_CREDENTIAL",
        ] {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        self.printed.borrow_mut().extend_from_slice(&o.stdout);
        self.printed.borrow_mut().extend_from_slice(&o.stderr);
        o
    }
    fn state(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            let Ok(rd) = std::fs::read_dir(d) else { return };
            for e in rd {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        let mut m = BTreeMap::new();
        walk(&self.store, &mut m);
        m
    }
    fn key_record(&self) -> serde_json::Value {
        let recs: Vec<_> = self
            .state()
            .into_iter()
            .filter(|(p, _)| p.to_string_lossy().contains("/keys/"))
            .collect();
        assert_eq!(recs.len(), 1, "one key record");
        serde_json::from_slice(&recs[0].1).unwrap()
    }
    fn set_encryption(&self, line: &str) {
        let text = std::fs::read_to_string(&self.pipeline).unwrap();
        let (head, _) = text.split_once("[encryption]").unwrap();
        std::fs::write(&self.pipeline, format!("{head}[encryption]\n{line}\n")).unwrap();
    }
    fn restore_same(&self, tag: &str) {
        let out = self.t.path().join(tag);
        let o = self.bp(&["restore", self.p(), "latest", "--to", out.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{}", err(&o));
        assert_same_tree(&self.src, &out);
    }
    fn seen(&self) -> Vec<Seen> {
        self.vault.lock().unwrap().seen.clone()
    }
    /// Nothing printed or stored holds the token or a wrapped data key (raw, hex, base64).
    fn assert_no_secret(&self) {
        let v = self.vault.lock().unwrap();
        let mut needles = vec![v.token.as_bytes().to_vec(), b"msi-header-secret".to_vec()];
        for k in &v.wrapped_plain {
            needles.push(k.clone());
            needles.push(hex::encode(k).into_bytes());
            needles.push(b64u(k).into_bytes());
            needles.push(
                base64::engine::general_purpose::STANDARD
                    .encode(k)
                    .into_bytes(),
            );
        }
        assert!(!v.wrapped_plain.is_empty());
        let printed = self.printed.borrow();
        for n in &needles {
            assert!(!contains(&printed, n), "printed output holds a secret");
            for (p, bytes) in self.state() {
                assert!(!contains(&bytes, n), "{} holds a secret", p.display());
            }
        }
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn vault_key_round_trip_records_the_version_and_sends_what_key_vault_expects() {
    let f =
        fixture("[encryption]\nkey_vault_key = \"https://kv1.vault.azure.net:PORT/keys/bp-kek\"");
    let o = f.bp(&["backup", f.p()]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let rec = f.key_record();
    assert_eq!(rec["kek"]["kind"], "key-vault", "{rec}");
    assert_eq!(rec["key_vault"]["alg"], "RSA-OAEP-256", "{rec}");
    assert_eq!(
        rec["key_vault"]["key"],
        format!("{}/v1", f.key_url("bp-kek")),
        "the version that wrapped is recorded: {rec}"
    );
    // The vault moves to a new current version: the record's version still unwraps.
    f.vault
        .lock()
        .unwrap()
        .keys
        .push(("bp-kek".into(), "v2".into(), rand_bytes()));
    let before = f.seen().len();
    f.restore_same("r1");
    let calls: Vec<Seen> = f.seen()[before..]
        .iter()
        .filter(|s| s.auth.is_some())
        .cloned()
        .collect();
    assert_eq!(calls.len(), 1, "one unwrap per command: {calls:?}");
    let u = &calls[0];
    assert_eq!(u.method, "POST");
    let url = url::Url::parse(&format!("https://x{}", u.target)).unwrap();
    assert_eq!(url.path(), "/keys/bp-kek/v1/unwrapkey");
    assert!(
        url.query_pairs().any(|(k, _)| k == "api-version"),
        "{}",
        u.target
    );
    let body: serde_json::Value = serde_json::from_slice(&u.body).unwrap();
    assert_eq!(body["alg"], "RSA-OAEP-256");
    assert!(body["value"]
        .as_str()
        .is_some_and(|s| !s.contains('=') && !s.contains('+') && !s.contains('/')));
    let token = f.vault.lock().unwrap().token.clone();
    assert_eq!(u.auth.as_deref(), Some(format!("Bearer {token}").as_str()));
    // The wrap went to the key's current version (none pinned), through the challenge.
    let all = f.seen();
    let wrap = all
        .iter()
        .find(|s| s.target.contains("/wrapkey") && s.auth.is_some())
        .unwrap();
    assert!(wrap.target.starts_with("/keys/bp-kek/"), "{}", wrap.target);
    assert!(
        all.iter().any(|s| s.auth.is_none() && s.body.is_empty()),
        "the first request goes without a token or body (the bearer challenge)"
    );
    // Rotating onto the vault's new current version: only the record changes, and the
    // next unwrap asks for v2.
    let o = f.bp(&[
        "key",
        "rotate",
        f.p(),
        "--from-key-vault-key",
        &f.key_url("bp-kek"),
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let rec2 = f.key_record();
    assert_eq!(
        rec2["key_vault"]["key"],
        format!("{}/v2", f.key_url("bp-kek"))
    );
    assert_eq!(rec2["id"], rec["id"], "same data key");
    let before = f.seen().len();
    f.restore_same("r1b");
    assert!(
        f.seen()[before..]
            .iter()
            .any(|s| s.auth.is_some() && s.target.starts_with("/keys/bp-kek/v2/unwrapkey")),
        "unwrap asks for the version that wrapped"
    );
    // Verify and an incremental backup open the same data key.
    std::fs::write(f.src.join("after.txt"), b"after").unwrap();
    let o = f.bp(&["backup", f.p()]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = f.bp(&["verify", f.p(), "latest", "--full"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    f.restore_same("r2");
    f.assert_no_secret();
}

#[test]
fn rotate_from_a_passphrase_to_the_vault_and_back_leaves_packs_alone() {
    let f = fixture("[encryption]\npassphrase_env = \"BLOBPIPE_PASS\"");
    let o = f.bp(&["backup", f.p()]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    // Packs, segments and manifests (not the key record, not the local store's sidecars).
    let data = |f: &Fx| -> BTreeMap<PathBuf, Vec<u8>> {
        f.state()
            .into_iter()
            .filter(|(p, _)| {
                let p = p.to_string_lossy();
                ["/packs/", "/segments/", "/snapshots/"]
                    .iter()
                    .any(|d| p.contains(&format!("/backups/kv{d}")))
            })
            .collect()
    };
    let before = data(&f);
    f.set_encryption(&format!("key_vault_key = \"{}\"", f.key_url("bp-kek")));
    let o = f.bp(&[
        "key",
        "rotate",
        f.p(),
        "--from-passphrase-env",
        "BLOBPIPE_PASS",
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("to key-vault"));
    assert_eq!(f.key_record()["kek"]["kind"], "key-vault");
    f.restore_same("r1");
    // And back to a passphrase, the vault key given as the old one.
    f.set_encryption("passphrase_env = \"BLOBPIPE_PASS\"");
    let o = f.bp(&[
        "key",
        "rotate",
        f.p(),
        "--from-key-vault-key",
        &f.key_url("bp-kek"),
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(f.key_record()["kek"]["kind"], "passphrase");
    assert!(f.key_record().get("key_vault").is_none());
    f.restore_same("r2");
    assert!(before.len() >= 3, "{:?}", before.keys());
    assert!(data(&f) == before, "no pack, segment or manifest changed");
    f.assert_no_secret();
}

#[test]
fn a_wrong_or_forbidden_vault_key_is_exit_11_and_changes_nothing() {
    let f =
        fixture("[encryption]\nkey_vault_key = \"https://kv1.vault.azure.net:PORT/keys/bp-kek\"");
    let o = f.bp(&["backup", f.p()]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let before = f.state();
    // Another key of the same vault: refused from the record alone.
    f.set_encryption(&format!("key_vault_key = \"{}\"", f.key_url("bp-other")));
    let calls = f.seen().len();
    for args in [vec!["backup", f.p()], vec!["ls", f.p(), "latest"]] {
        let o = f.bp(&args);
        assert_eq!(code(&o), 11, "{args:?}: {}", err(&o));
        assert!(err(&o).contains("wrong key-vault key"), "{}", err(&o));
    }
    assert_eq!(
        f.seen().len(),
        calls,
        "no vault call for a key the record does not name"
    );
    // A rotation whose old key is wrong changes nothing either.
    let o = f.bp(&[
        "key",
        "rotate",
        f.p(),
        "--from-key-vault-key",
        &f.key_url("bp-other"),
    ]);
    assert_eq!(code(&o), 11, "{}", err(&o));
    // The right key, but the identity may not use it (HTTP 403).
    f.set_encryption(&format!("key_vault_key = \"{}\"", f.key_url("bp-kek")));
    f.vault.lock().unwrap().forbid = true;
    let o = f.bp(&["backup", f.p()]);
    assert_eq!(code(&o), 11, "{}", err(&o));
    assert!(
        err(&o).contains("Key Vault Crypto Service Encryption User"),
        "{}",
        err(&o)
    );
    // The vault answers, but with another data key than the record's (its wrapped value
    // swapped for another record's): the check value refuses it.
    f.vault.lock().unwrap().forbid = false;
    assert!(f.state() == before, "nothing stored changed");
    let mut rec = f.key_record();
    let o = f.bp(&[
        "key",
        "rotate",
        f.p(),
        "--from-key-vault-key",
        &f.key_url("bp-kek"),
    ]);
    assert_eq!(
        code(&o),
        0,
        "a rotation onto the same key re-wraps: {}",
        err(&o)
    );
    let fresh = f.key_record();
    assert_ne!(fresh["wrapped"], rec["wrapped"]);
    rec["wrapped"] = {
        // A different data key wrapped by the same vault key version.
        let dk = rand_bytes::<32>();
        let v = f.vault.lock().unwrap();
        let secret = v.keys[0].2;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &secret).unwrap());
        let nonce: [u8; 12] = rand_bytes();
        let mut out = dk.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut out)
            .unwrap();
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&out);
        serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(sealed))
    };
    let path = f
        .state()
        .into_keys()
        .find(|p| p.to_string_lossy().contains("/keys/"))
        .unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
    let mid = f.state();
    let o = f.bp(&["backup", f.p()]);
    assert_eq!(code(&o), 11, "{}", err(&o));
    assert!(err(&o).contains("check value"), "{}", err(&o));
    assert!(f.state() == mid, "nothing stored changed");
    f.assert_no_secret();
}

#[test]
fn without_an_entra_token_the_vault_key_is_a_config_error() {
    let f =
        fixture("[encryption]\nkey_vault_key = \"https://kv1.vault.azure.net:PORT/keys/bp-kek\"");
    let mut c = Command::new(env!("CARGO_BIN_EXE_blobpipe"));
    c.args(["backup", f.p()]).env("PATH", "/nonexistent");
    for k in [
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "BLOBPIPE_AZURE_CREDENTIAL",
    ] {
        c.env_remove(k);
    }
    let o = c.output().unwrap();
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("managed identity"), "{}", err(&o));
    assert!(err(&o).contains("AZURE_CLIENT_SECRET"), "{}", err(&o));
    let state = f.state();
    assert!(state.is_empty(), "nothing written: {:?}", state.keys());
}

#[test]
fn a_vault_that_stays_down_is_retried_then_a_clear_transient_error() {
    let f =
        fixture("[encryption]\nkey_vault_key = \"https://kv1.vault.azure.net:PORT/keys/bp-kek\"");
    let o = f.bp(&["backup", f.p()]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let before = f.state();
    f.vault.lock().unwrap().down = true;
    let calls = f.seen().len();
    let o = f.bp(&["ls", f.p(), "latest"]);
    assert_eq!(code(&o), 1, "{}", err(&o));
    assert!(err(&o).contains("Key Vault unwrapKey"), "{}", err(&o));
    assert!(err(&o).contains("retries exhausted"), "{}", err(&o));
    let tries = f.seen()[calls..]
        .iter()
        .filter(|s| s.auth.is_some() && s.target.contains("/unwrapkey"))
        .count();
    assert_eq!(tries, 6, "the one retry policy: 6 attempts");
    assert!(f.state() == before, "nothing stored changed");
    // Back up: the same record opens again.
    f.vault.lock().unwrap().down = false;
    f.restore_same("r");
}
