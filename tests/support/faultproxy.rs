//! A small fault-injecting HTTP/1.1 proxy for tests.
//!
//! Sits between a client and a real service (Azurite) and, for a configurable share of
//! requests, answers 503/500/429 (with `Retry-After`), resets the connection (after the
//! request reached the service, so the client must cope with a lost success), stalls past
//! the client's read timeout, or truncates the response body. Decisions come from a seeded
//! hash of the request number, so a run is reproducible up to request interleaving.
//!
//! Each forwarded request uses its own upstream connection with `Connection: close`, and
//! every response to the client is followed by closing the connection: simple framing,
//! at the cost of one connection per request (fine for tests).
//!
//! A [`Filter`] limits faults to some requests (e.g. only `comp=blocklist` PUTs); the
//! proxy also records each request's method, path and `comp`/`blockid` parameters (never
//! the rest of the query: a SAS lives there) and counts bytes in both directions, so a
//! test can assert what reached the service.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 503 Server Busy with `Retry-After: 1`.
    Busy503,
    /// 500 Internal Error.
    Internal500,
    /// 429 Too Many Requests with `Retry-After: 1`.
    Throttle429,
    /// Forward the request, then reset the client connection without an answer.
    ResetAfterForward,
    /// Hold the connection silently for the stall time, then close it.
    Stall,
    /// Forward, then send the head and only half the body, then close.
    Truncate,
    /// 403 `AuthorizationPermissionMismatch` (what Azure answers a role without a
    /// permission, e.g. blob index tags for Storage Blob Data Contributor).
    Forbidden403,
    /// 412 `ConditionNotMet`: what a conditional read (`If-Match`) of a blob that changed
    /// meanwhile gets.
    Precondition412,
}

/// What to inject.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Share of requests faulted, 0.0–1.0.
    pub rate: f64,
    /// Seed of the decisions.
    pub seed: u64,
    /// Faults to choose from (uniformly).
    pub kinds: Vec<Fault>,
    /// How long a stall lasts.
    pub stall: Duration,
}

impl FaultConfig {
    /// No faults.
    pub fn none() -> Self {
        Self {
            rate: 0.0,
            seed: 1,
            kinds: Vec::new(),
            stall: Duration::from_secs(2),
        }
    }

    /// Every fault kind at `rate`.
    pub fn all(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            seed,
            kinds: vec![
                Fault::Busy503,
                Fault::Internal500,
                Fault::Throttle429,
                Fault::ResetAfterForward,
                Fault::Stall,
                Fault::Truncate,
            ],
            stall: Duration::from_secs(2),
        }
    }
}

/// One request as the proxy saw it (no secrets: only `comp` and `blockid` of the query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// HTTP method.
    pub method: String,
    /// Path, percent-decoded (`/devstoreaccount1/<container>/<blob>`).
    pub path: String,
    /// The `comp` query parameter, if any (`block`, `blocklist`, `lease`, `list`, …).
    pub comp: Option<String>,
    /// The `blockid` query parameter, if any (percent-decoded).
    pub blockid: Option<String>,
    /// Whether the request set blob index tags (`x-ms-tags`).
    pub tags: bool,
    /// Whether this request was faulted.
    pub faulted: bool,
}

impl Seen {
    /// A Put Block request.
    pub fn is_put_block(&self) -> bool {
        self.method == "PUT" && self.comp.as_deref() == Some("block")
    }

    /// A Put Block List request.
    pub fn is_put_block_list(&self) -> bool {
        self.method == "PUT" && self.comp.as_deref() == Some("blocklist")
    }
}

/// Decides which requests may be faulted (the others always pass through).
pub type Filter = Arc<dyn Fn(&Seen) -> bool + Send + Sync>;

/// Answers some requests itself instead of forwarding them (a stand-in for a service
/// feature the upstream lacks, e.g. Azure's immutability policies on Azurite): given the
/// request head (request line and headers, query included) and the request, returns the
/// whole raw HTTP response, or `None` to forward as usual.
pub type Responder = Arc<dyn Fn(&str, &Seen) -> Option<String> + Send + Sync>;

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests seen.
    pub requests: AtomicU64,
    /// Requests faulted.
    pub faulted: AtomicU64,
    /// Kinds injected, in order.
    pub injected: Mutex<Vec<Fault>>,
    /// Every request, in arrival order.
    pub seen: Mutex<Vec<Seen>>,
    /// Request bytes (head + body) received from clients.
    pub bytes_up: AtomicU64,
    /// Response bytes sent to clients.
    pub bytes_down: AtomicU64,
}

impl Stats {
    /// Distinct fault kinds injected so far.
    pub fn kinds(&self) -> Vec<Fault> {
        let mut k = self.injected.lock().expect("poisoned").clone();
        k.sort_by_key(|f| *f as u8);
        k.dedup();
        k
    }

    /// A copy of the requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("poisoned").clone()
    }

    /// Forget the requests seen and the byte counts (start of a measured phase).
    pub fn reset_seen(&self) {
        self.seen.lock().expect("poisoned").clear();
        self.bytes_up.store(0, Ordering::Relaxed);
        self.bytes_down.store(0, Ordering::Relaxed);
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// Address clients connect to.
    pub addr: SocketAddr,
    /// Live configuration (change it between phases of a test).
    pub config: Arc<Mutex<FaultConfig>>,
    /// Counters.
    pub stats: Arc<Stats>,
    filter: Arc<Mutex<Option<Filter>>>,
    responder: Arc<Mutex<Option<Responder>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Start a proxy on a free loopback port forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: SocketAddr, config: FaultConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let config = Arc::new(Mutex::new(config));
        let stats = Arc::new(Stats::default());
        let filter: Arc<Mutex<Option<Filter>>> = Arc::new(Mutex::new(None));
        let responder: Arc<Mutex<Option<Responder>>> = Arc::new(Mutex::new(None));
        let (c, s, f, r) = (
            config.clone(),
            stats.clone(),
            filter.clone(),
            responder.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (c, s, f, r) = (c.clone(), s.clone(), f.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, upstream, c, s, f, r).await;
                });
            }
        });
        Ok(Self {
            addr,
            config,
            stats,
            filter,
            responder,
            task,
        })
    }

    /// Fault only requests `f` accepts (`None`: any request may be faulted).
    pub fn set_filter(&self, f: Option<Filter>) {
        *self.filter.lock().expect("poisoned") = f;
    }

    /// Answer the requests `r` takes (`None`: forward everything).
    pub fn set_responder(&self, r: Option<Responder>) {
        *self.responder.lock().expect("poisoned") = r;
    }

    /// Replace the configuration.
    pub fn set(&self, config: FaultConfig) {
        *self.config.lock().expect("poisoned") = config;
    }

    /// The blob endpoint through the proxy for an upstream endpoint URL.
    pub fn endpoint(&self, account: &str) -> String {
        format!("http://{}/{account}", self.addr)
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

async fn serve(
    sock: TcpStream,
    upstream: SocketAddr,
    config: Arc<Mutex<FaultConfig>>,
    stats: Arc<Stats>,
    filter: Arc<Mutex<Option<Filter>>>,
    responder: Arc<Mutex<Option<Responder>>>,
) -> std::io::Result<()> {
    let mut client = BufReader::new(sock);
    // Request head.
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = client.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if head.len() > 64 * 1024 {
            return Ok(());
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let len: usize = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    client.read_exact(&mut body).await?;

    stats
        .bytes_up
        .fetch_add((head.len() + body.len()) as u64, Ordering::Relaxed);
    let mut seen = describe(&text);
    let n = stats.requests.fetch_add(1, Ordering::Relaxed);
    let answer = responder
        .lock()
        .expect("poisoned")
        .as_ref()
        .and_then(|r| r(&text, &seen));
    if let Some(rsp) = answer {
        stats.seen.lock().expect("poisoned").push(seen);
        let mut sock = client.into_inner();
        stats
            .bytes_down
            .fetch_add(rsp.len() as u64, Ordering::Relaxed);
        sock.write_all(rsp.as_bytes()).await?;
        return sock.shutdown().await;
    }
    let cfg = config.lock().expect("poisoned").clone();
    let eligible = match &*filter.lock().expect("poisoned") {
        Some(f) => f(&seen),
        None => true,
    };
    let r = mix(cfg.seed ^ mix(n));
    let faulted =
        eligible && !cfg.kinds.is_empty() && ((r >> 11) as f64 / (1u64 << 53) as f64) < cfg.rate;
    let fault = faulted.then(|| cfg.kinds[(mix(r) % cfg.kinds.len() as u64) as usize]);
    if let Some(f) = fault {
        stats.faulted.fetch_add(1, Ordering::Relaxed);
        stats.injected.lock().expect("poisoned").push(f);
    }
    seen.faulted = fault.is_some();
    stats.seen.lock().expect("poisoned").push(seen);
    let mut sock = client.into_inner();
    let status = |code: &str, reason: &str, retry_after: bool| {
        format!(
            "HTTP/1.1 {code} {reason}\r\n{}x-ms-error-code: InjectedFault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            if retry_after { "Retry-After: 1\r\n" } else { "" }
        )
    };
    match fault {
        Some(Fault::Forbidden403) => {
            let rsp = "HTTP/1.1 403 This request is not authorized to perform this operation using this permission.\r\nx-ms-error-code: AuthorizationPermissionMismatch\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            sock.write_all(rsp.as_bytes()).await?;
            return sock.shutdown().await;
        }
        Some(Fault::Precondition412) => {
            let rsp = "HTTP/1.1 412 The condition specified using HTTP conditional header(s) is not met.\r\nx-ms-error-code: ConditionNotMet\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            sock.write_all(rsp.as_bytes()).await?;
            return sock.shutdown().await;
        }
        Some(Fault::Busy503) => {
            sock.write_all(status("503", "Server Busy", true).as_bytes())
                .await?;
            return sock.shutdown().await;
        }
        Some(Fault::Internal500) => {
            sock.write_all(status("500", "Internal Server Error", false).as_bytes())
                .await?;
            return sock.shutdown().await;
        }
        Some(Fault::Throttle429) => {
            sock.write_all(status("429", "Too Many Requests", true).as_bytes())
                .await?;
            return sock.shutdown().await;
        }
        Some(Fault::Stall) => {
            tokio::time::sleep(cfg.stall).await;
            return Ok(());
        }
        _ => {}
    }
    // Forward with Connection: close.
    let mut fwd = String::new();
    for (i, l) in text.split("\r\n").enumerate() {
        if l.is_empty() {
            continue;
        }
        if i > 0 {
            if let Some((k, _)) = l.split_once(':') {
                if k.trim().eq_ignore_ascii_case("connection") {
                    continue;
                }
            }
        }
        fwd.push_str(l);
        fwd.push_str("\r\n");
    }
    fwd.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(fwd.as_bytes()).await?;
    up.write_all(&body).await?;
    let mut rsp = Vec::new();
    up.read_to_end(&mut rsp).await?;
    match fault {
        Some(Fault::ResetAfterForward) => {
            sock.set_zero_linger()?;
            drop(sock);
            Ok(())
        }
        Some(Fault::Truncate) => {
            let head_end = rsp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(rsp.len(), |p| p + 4);
            let body_len = rsp.len() - head_end;
            let cut = if body_len > 1 {
                head_end + body_len / 2
            } else {
                head_end / 2
            };
            stats.bytes_down.fetch_add(cut as u64, Ordering::Relaxed);
            sock.write_all(&rsp[..cut]).await?;
            sock.shutdown().await
        }
        _ => {
            stats
                .bytes_down
                .fetch_add(rsp.len() as u64, Ordering::Relaxed);
            sock.write_all(&rsp).await?;
            sock.shutdown().await
        }
    }
}

/// Method, path and the non-secret query parameters of a request head.
fn describe(head: &str) -> Seen {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut comp = None;
    let mut blockid = None;
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "comp" => comp = Some(percent_decode(v)),
            "blockid" => blockid = Some(percent_decode(v)),
            _ => {}
        }
    }
    let tags = head.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("x-ms-tags"))
    });
    Seen {
        method,
        path: percent_decode(path),
        comp,
        blockid,
        tags,
        faulted: false,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
