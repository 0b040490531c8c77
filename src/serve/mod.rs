//! `blobpipe serve`: an Azure Functions custom handler (and a Prometheus endpoint).
//!
//! The Functions host starts the binary, waits (up to 60 s) until it answers `GET /` on
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, then POSTs every invocation to `/<FunctionName>` as
//! `{"Data": {<binding>: …}, "Metadata": {…}}` and expects `200` with
//! `{"Outputs": {…}, "Logs": […], "ReturnValue": …}` (`enableForwardingHttpRequest` is
//! false, so HTTP triggers arrive in the same envelope). The functions are the ones
//! [`scaffold`] writes:
//!
//! - **`<pipeline>`** (timer trigger, the pipeline's cron as 6-field NCRONTAB): runs the
//!   pipeline and answers when it ends (`IsPastDue` is logged; the run still happens).
//!   A failed or mismatched run answers 500 so the host records a failed invocation.
//! - **`runs`** (HTTP trigger, route `runs/{pipeline?}`): `POST /api/runs/<pipeline>`
//!   starts a run in the background and answers 202 with its run id;
//!   `GET /api/runs?id=<run-id>` answers the run's state (from memory, else from its
//!   stored run record). HTTP triggers must answer within 230 s, hence the 202.
//!
//! A payload that is not the host's envelope gets 400 with the reason and starts
//! nothing. `GET /metrics` serves Prometheus text metrics: runs by status, failures,
//! bytes, last duration, runs in progress, and the age of each pipeline's newest
//! snapshot (read from the store at scrape time). Runs of one pipeline never overlap
//! within the process (and the run lock keeps them apart across processes). On
//! SIGTERM the server stops accepting, running backups stop resumably, and it exits.

pub mod handoff;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::catalog;
use crate::manifest::layout::Repo;
use crate::manifest::records::{RunRecord, RunStatus};
use crate::pipeline::Pipeline;
use crate::schedule::Runner;
use crate::serve::handoff::HandoffMessage;
use crate::store;
use crate::store::azure::queue::QueueClient;
use crate::support::cancel::Cancel;
use crate::support::ids;

/// Name of the HTTP-trigger function [`scaffold`] writes.
pub const HTTP_FUNCTION: &str = "runs";
/// Largest invocation body accepted.
const MAX_BODY: usize = 1 << 20;
/// Finished runs kept in memory for status queries.
const KEEP_RUNS: usize = 200;

/// Where a run started or handed off by this server is; printed lower-case (`"state"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunPhase {
    /// Handed off to the queue; a job will run it.
    Queued,
    /// Running in this server.
    Running,
    /// Committed and verified.
    Ok,
    /// Committed with unreadable or changing files.
    Partial,
    /// Committed, verification found a mismatch.
    Mismatch,
    /// Nothing committed.
    Failed,
    /// Stopped by a signal.
    Cancelled,
    /// Another run held the pipeline's lock.
    Locked,
}

impl RunPhase {
    /// The lower-case name printed in `"state"` and the metrics' `status` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Queued => "queued",
            RunPhase::Running => "running",
            RunPhase::Ok => "ok",
            RunPhase::Partial => "partial",
            RunPhase::Mismatch => "mismatch",
            RunPhase::Failed => "failed",
            RunPhase::Cancelled => "cancelled",
            RunPhase::Locked => "locked",
        }
    }

    /// The phase a finished run ended in.
    pub fn of_run(s: RunStatus) -> Self {
        match s {
            RunStatus::Ok => RunPhase::Ok,
            RunStatus::Partial => RunPhase::Partial,
            RunStatus::Mismatch => RunPhase::Mismatch,
            RunStatus::Failed => RunPhase::Failed,
            RunStatus::Cancelled => RunPhase::Cancelled,
        }
    }

    /// The phase a run that returned an error ended in.
    pub fn of_error(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Locked => RunPhase::Locked,
            ErrorKind::Cancelled => RunPhase::Cancelled,
            _ => RunPhase::Failed,
        }
    }
}

impl std::fmt::Display for RunPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one run started by this server.
#[derive(Debug, Clone, Serialize)]
pub struct RunState {
    /// Run id.
    pub run_id: String,
    /// Pipeline.
    pub pipeline: String,
    /// `queued`, `running`, or how the run ended.
    pub state: RunPhase,
    /// `timer` or `http`.
    pub trigger: String,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
    /// Snapshot committed.
    pub snapshot: Option<String>,
    /// Error of a failed run.
    pub error: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct PipelineMetrics {
    runs: BTreeMap<String, u64>,
    failures: u64,
    source_bytes: u64,
    stored_bytes: u64,
    last_duration: Option<f64>,
    last_finished: Option<DateTime<Utc>>,
    in_progress: u64,
    handoffs: u64,
    handoff_failures: u64,
}

#[derive(Default)]
struct Shared {
    runs: BTreeMap<String, RunState>,
    order: VecDeque<String>,
    active: BTreeMap<String, String>,
    metrics: BTreeMap<String, PipelineMetrics>,
}

struct App {
    pipelines: BTreeMap<String, Pipeline>,
    /// Queue clients of the pipelines with `[serve] handoff = "queue"`.
    handoff: BTreeMap<String, QueueClient>,
    runner: Arc<dyn Runner>,
    cancel: Cancel,
    shared: Mutex<Shared>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A bound server; [`Server::run`] serves until cancelled.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Arc<App>,
}

impl Server {
    /// Bind `addr` for `pipelines` (function names are pipeline names).
    ///
    /// # Errors
    /// `Config` for duplicate pipeline names, `Internal` when the port cannot be bound.
    pub async fn bind(
        addr: SocketAddr,
        pipelines: Vec<Pipeline>,
        runner: Arc<dyn Runner>,
        cancel: Cancel,
    ) -> Result<Server> {
        let mut map = BTreeMap::new();
        for p in pipelines {
            let name = p.name.clone();
            if map.insert(name.clone(), p).is_some() {
                return Err(Error::config(format!(
                    "two pipeline files are named {name:?}: function names must be unique"
                )));
            }
        }
        let mut handoff = BTreeMap::new();
        for (n, p) in &map {
            if let Some(h) = &p.handoff {
                let c =
                    QueueClient::new(&h.queue).map_err(|e| e.context(format!("pipeline {n}")))?;
                tracing::info!(pipeline = %n, queue = %h.queue.display(), credential = %c.credential,
                               "runs are handed off to the queue");
                handoff.insert(n.clone(), c);
            }
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(ErrorKind::Internal, format!("binding {addr}"), e))?;
        let mut shared = Shared::default();
        for n in map.keys() {
            shared.metrics.insert(n.clone(), PipelineMetrics::default());
        }
        Ok(Server {
            listener,
            app: Arc::new(App {
                pipelines: map,
                handoff,
                runner,
                cancel,
                shared: Mutex::new(shared),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The bound address (for `--port 0`).
    ///
    /// # Errors
    /// `Internal` if the socket has no address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io(ErrorKind::Internal, "local address", e))
    }

    /// Serve until the cancel token fires; then wait for running backups to stop.
    ///
    /// # Errors
    /// None in practice (accept errors are logged and retried).
    pub async fn run(self) -> Result<()> {
        let Server { listener, app } = self;
        loop {
            let accepted = tokio::select! {
                _ = app.cancel.cancelled() => break,
                a = listener.accept() => a,
            };
            let (stream, _) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let app = app.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let svc = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(handle(app, req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await
                {
                    tracing::debug!("connection ended: {e}");
                }
            });
        }
        drop(listener);
        tracing::info!(
            "server stopping: waiting for running backups to stop (they stay resumable)"
        );
        let tasks = std::mem::take(&mut *app.tasks.lock().expect("poisoned"));
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", v.to_string())
}

fn bad_request(reason: impl Into<String>) -> Response<Full<Bytes>> {
    let reason = reason.into();
    tracing::warn!("rejected invocation: {reason}");
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"Outputs": {}, "Logs": [format!("rejected: {reason}")], "ReturnValue": null, "error": reason}),
    )
}

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "") | (Method::HEAD, "") => {
            respond(StatusCode::OK, "text/plain", "blobpipe ready\n")
        }
        (Method::GET, "metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics_text(&app).await,
        ),
        (Method::POST, name) if !name.is_empty() && !name.contains('/') => {
            let name = name.to_string();
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return bad_request(format!("cannot read the body: {e}")),
            };
            invoke(app, &name, &body).await
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Which binding a host invocation carries.
enum Trigger<'a> {
    Timer(&'a Value),
    Http(&'a Value),
}

fn classify(data: &serde_json::Map<String, Value>) -> Option<Trigger<'_>> {
    for v in data.values() {
        if let Some(o) = v.as_object() {
            if o.contains_key("Method") || o.contains_key("Url") {
                return Some(Trigger::Http(v));
            }
            if o.contains_key("IsPastDue")
                || o.contains_key("Schedule")
                || o.contains_key("ScheduleStatus")
            {
                return Some(Trigger::Timer(v));
            }
        }
    }
    None
}

async fn invoke(app: Arc<App>, function: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("the body is not JSON: {e}")),
    };
    let Some(env) = v.as_object() else {
        return bad_request("the body is not a JSON object with Data and Metadata");
    };
    let Some(data) = env.get("Data").and_then(Value::as_object) else {
        return bad_request("missing \"Data\" object (expected the Functions host's {\"Data\":{…},\"Metadata\":{…}})");
    };
    if let Some(m) = env.get("Metadata") {
        if !m.is_object() {
            return bad_request("\"Metadata\" must be an object");
        }
    }
    match classify(data) {
        Some(Trigger::Timer(t)) => timer(app, function, t).await,
        Some(Trigger::Http(r)) => http(app, function, r).await,
        None => bad_request(
            "\"Data\" holds neither a timer binding (IsPastDue/Schedule) nor an HTTP request binding (Method/Url)",
        ),
    }
}

fn host_answer(
    status: StatusCode,
    outputs: Value,
    logs: Vec<String>,
    ret: Value,
) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"Outputs": outputs, "Logs": logs, "ReturnValue": ret}),
    )
}

fn start(
    app: &Arc<App>,
    p: &Pipeline,
    run_id: String,
    trigger: &str,
) -> std::result::Result<tokio::sync::oneshot::Receiver<RunState>, String> {
    let state = RunState {
        run_id: run_id.clone(),
        pipeline: p.name.clone(),
        state: RunPhase::Running,
        trigger: trigger.into(),
        started_at: Utc::now(),
        finished_at: None,
        snapshot: None,
        error: None,
    };
    {
        let mut sh = app.shared.lock().expect("poisoned");
        if let Some(r) = sh.active.get(&p.name) {
            return Err(r.clone());
        }
        sh.active.insert(p.name.clone(), run_id.clone());
        sh.runs.insert(run_id.clone(), state.clone());
        sh.order.push_back(run_id.clone());
        while sh.order.len() > KEEP_RUNS {
            if let Some(old) = sh.order.pop_front() {
                if sh
                    .runs
                    .get(&old)
                    .is_some_and(|r| r.state != RunPhase::Running)
                {
                    sh.runs.remove(&old);
                } else {
                    sh.order.push_back(old);
                    break;
                }
            }
        }
        sh.metrics.entry(p.name.clone()).or_default().in_progress += 1;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let app2 = app.clone();
    let p = p.clone();
    let handle = tokio::spawn(async move {
        let res = app2
            .runner
            .run(&p, Some(run_id.clone()), app2.cancel.clone())
            .await;
        let mut st = state;
        st.finished_at = Some(Utc::now());
        let mut sh = app2.shared.lock().expect("poisoned");
        let m = sh.metrics.entry(p.name.clone()).or_default();
        m.in_progress = m.in_progress.saturating_sub(1);
        match res {
            Ok(r) => {
                st.state = RunPhase::of_run(r.status);
                st.snapshot = r.snapshot.clone();
                st.error = r.error.clone();
                m.source_bytes += r.totals.bytes;
                m.stored_bytes += r.totals.stored_bytes;
                if matches!(r.status, RunStatus::Failed | RunStatus::Mismatch) {
                    m.failures += 1;
                }
            }
            Err(e) => {
                st.state = RunPhase::of_error(e.kind());
                if st.state == RunPhase::Failed {
                    m.failures += 1;
                }
                st.error = Some(e.to_string());
            }
        }
        *m.runs.entry(st.state.as_str().to_string()).or_default() += 1;
        m.last_duration = Some(
            (st.finished_at.unwrap_or(st.started_at) - st.started_at).num_milliseconds() as f64
                / 1000.0,
        );
        m.last_finished = st.finished_at;
        sh.runs.insert(st.run_id.clone(), st.clone());
        sh.active.remove(&p.name);
        drop(sh);
        let _ = tx.send(st);
    });
    let mut tasks = app.tasks.lock().expect("poisoned");
    tasks.retain(|t| !t.is_finished());
    tasks.push(handle);
    Ok(rx)
}

async fn timer(app: Arc<App>, function: &str, t: &Value) -> Response<Full<Bytes>> {
    let Some(p) = app.pipelines.get(function).cloned() else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"Outputs": {}, "Logs": [format!("no pipeline is mapped to function {function:?}")], "ReturnValue": null,
                    "error": format!("no pipeline named {function:?} (function names are pipeline names)")}),
        );
    };
    let mut logs = Vec::new();
    if t.get("IsPastDue").and_then(Value::as_bool) == Some(true) {
        let msg = format!(
            "timer for {} is past due (the host was down or busy); running now",
            p.name
        );
        tracing::warn!("{msg}");
        logs.push(msg);
    }
    let run_id = ids::run_id(Utc::now());
    if app.handoff.contains_key(&p.name) {
        let past_due = t.get("IsPastDue").and_then(Value::as_bool) == Some(true);
        return match hand_off(&app, &p, run_id, "timer", past_due, &mut logs).await {
            Ok(v) => host_answer(StatusCode::ACCEPTED, json!({}), logs, v),
            Err(v) => host_answer(StatusCode::INTERNAL_SERVER_ERROR, json!({}), logs, v),
        };
    }
    let rx = match start(&app, &p, run_id.clone(), "timer") {
        Ok(rx) => rx,
        Err(running) => {
            let msg = format!(
                "a run of {} is still going ({running}); this tick is skipped",
                p.name
            );
            tracing::warn!("{msg}");
            logs.push(msg);
            return host_answer(
                StatusCode::OK,
                json!({}),
                logs,
                json!({"skipped": true, "running": running}),
            );
        }
    };
    logs.push(format!("run {run_id} of {} started (timer)", p.name));
    let st = match rx.await {
        Ok(st) => st,
        Err(_) => {
            return host_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({}),
                logs,
                json!({"run_id": run_id, "state": "failed", "error": "run task ended unexpectedly"}),
            );
        }
    };
    logs.push(format!(
        "run {} of {} ended: {}{}",
        st.run_id,
        st.pipeline,
        st.state,
        st.error
            .as_deref()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default()
    ));
    let code = match st.state {
        RunPhase::Ok | RunPhase::Partial | RunPhase::Locked => StatusCode::OK,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    host_answer(
        code,
        json!({}),
        logs,
        serde_json::to_value(&st).unwrap_or(Value::Null),
    )
}

/// Put a run of `p` on its hand-off queue. `Ok`: what to answer (run id, `queued`);
/// `Err`: the failure, as an answer body.
async fn hand_off(
    app: &Arc<App>,
    p: &Pipeline,
    run_id: String,
    trigger: &str,
    past_due: bool,
    logs: &mut Vec<String>,
) -> std::result::Result<Value, Value> {
    let Some(client) = app.handoff.get(&p.name) else {
        return Err(json!({"error": "no hand-off queue"}));
    };
    let msg = HandoffMessage {
        pipeline: p.name.clone(),
        run_id: run_id.clone(),
        requested_at: Utc::now(),
        past_due,
        trigger: Some(trigger.to_string()),
    };
    let queue = client.display();
    match crate::serve::handoff::enqueue(client, &msg).await {
        Ok(message_id) => {
            let line = format!(
                "run {run_id} of {} handed off to {queue} ({trigger}, message {message_id})",
                p.name
            );
            tracing::info!("{line}");
            logs.push(line);
            let st = RunState {
                run_id: run_id.clone(),
                pipeline: p.name.clone(),
                state: RunPhase::Queued,
                trigger: trigger.into(),
                started_at: msg.requested_at,
                finished_at: None,
                snapshot: None,
                error: None,
            };
            let mut sh = app.shared.lock().expect("poisoned");
            sh.metrics.entry(p.name.clone()).or_default().handoffs += 1;
            if sh.runs.insert(run_id.clone(), st).is_none() {
                sh.order.push_back(run_id.clone());
                while sh.order.len() > KEEP_RUNS {
                    let Some(old) = sh.order.pop_front() else {
                        break;
                    };
                    if sh
                        .runs
                        .get(&old)
                        .is_some_and(|r| r.state == RunPhase::Running)
                    {
                        sh.order.push_back(old);
                        break;
                    }
                    sh.runs.remove(&old);
                }
            }
            Ok(
                json!({"run_id": run_id, "pipeline": p.name, "state": "queued",
                      "queue": queue, "message_id": message_id}),
            )
        }
        Err(e) => {
            let line = format!("hand-off of {} failed: {e}", p.name);
            tracing::error!("{line}");
            logs.push(line);
            app.shared
                .lock()
                .expect("poisoned")
                .metrics
                .entry(p.name.clone())
                .or_default()
                .handoff_failures += 1;
            Err(
                json!({"run_id": run_id, "pipeline": p.name, "state": "failed",
                       "error": format!("hand-off to {queue} failed: {e}")}),
            )
        }
    }
}

fn http_out(status: u16, body: &Value) -> Value {
    json!({"res": {"statusCode": status, "body": body.to_string(), "headers": {"Content-Type": "application/json"}}})
}

fn query<'a>(req: &'a Value, key: &str) -> Option<&'a str> {
    req.get("Query")
        .and_then(|q| q.get(key))
        .and_then(|v| match v {
            Value::String(s) => Some(s.as_str()),
            Value::Array(a) => a.first().and_then(Value::as_str),
            _ => None,
        })
}

async fn http(app: Arc<App>, function: &str, req: &Value) -> Response<Full<Bytes>> {
    let Some(method) = req.get("Method").and_then(Value::as_str) else {
        return bad_request("the HTTP request binding has no \"Method\"");
    };
    // The pipeline: route parameter, query, JSON body, or the function name itself.
    let body_json: Option<Value> = match req.get("Body") {
        Some(Value::String(s)) if !s.trim().is_empty() => serde_json::from_str(s).ok(),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        _ => None,
    };
    let pipeline = req
        .get("Params")
        .and_then(|p| p.get("pipeline"))
        .and_then(Value::as_str)
        .or_else(|| query(req, "pipeline"))
        .or_else(|| {
            body_json
                .as_ref()
                .and_then(|b| b.get("pipeline"))
                .and_then(Value::as_str)
        })
        .map(str::to_string)
        .or_else(|| (function != HTTP_FUNCTION).then(|| function.to_string()));
    let mut logs = Vec::new();
    match method.to_ascii_uppercase().as_str() {
        "POST" => {
            let Some(name) = pipeline else {
                let b = json!({"error": "say which pipeline: POST /api/runs/<pipeline>"});
                return host_answer(StatusCode::OK, http_out(400, &b), logs, Value::Null);
            };
            let Some(p) = app.pipelines.get(&name).cloned() else {
                let b = json!({"error": format!("no pipeline named {name:?}"), "pipelines": app.pipelines.keys().collect::<Vec<_>>()});
                return host_answer(StatusCode::OK, http_out(404, &b), logs, Value::Null);
            };
            let given = query(req, "run_id").map(str::to_string).or_else(|| {
                body_json
                    .as_ref()
                    .and_then(|b| b.get("run_id"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            let run_id = match given {
                Some(id) if !ids::is_safe_segment(&id) => {
                    let b = json!({"error": format!("run_id {id:?} is not a safe id (letters, digits, - _ .)")});
                    return host_answer(StatusCode::OK, http_out(400, &b), logs, Value::Null);
                }
                Some(id) => id,
                None => ids::run_id(Utc::now()),
            };
            if app.handoff.contains_key(&p.name) {
                return match hand_off(&app, &p, run_id, "http", false, &mut logs).await {
                    Ok(mut v) => {
                        v["status_query"] = json!(format!(
                            "/api/{HTTP_FUNCTION}?id={}",
                            v["run_id"].as_str().unwrap_or_default()
                        ));
                        host_answer(StatusCode::OK, http_out(202, &v), logs, Value::Null)
                    }
                    Err(v) => host_answer(StatusCode::OK, http_out(503, &v), logs, Value::Null),
                };
            }
            match start(&app, &p, run_id.clone(), "http") {
                Ok(_) => {
                    logs.push(format!("run {run_id} of {name} started (HTTP)"));
                    let b = json!({"run_id": run_id, "pipeline": name, "state": "running",
                                   "status_query": format!("/api/{HTTP_FUNCTION}?id={run_id}")});
                    host_answer(StatusCode::OK, http_out(202, &b), logs, Value::Null)
                }
                Err(running) => {
                    let b = json!({"error": format!("a run of {name} is already going"), "run_id": running});
                    host_answer(StatusCode::OK, http_out(409, &b), logs, Value::Null)
                }
            }
        }
        "GET" => {
            if let Some(id) = query(req, "id") {
                let known = app.shared.lock().expect("poisoned").runs.get(id).cloned();
                let found = match known {
                    // A handed-off run: the job's run record, once it has one.
                    Some(st) if st.state == RunPhase::Queued => {
                        match stored_run(&app, id, Some(&st.pipeline)).await {
                            Some(v) => Some(v),
                            None => Some(serde_json::to_value(st).unwrap_or(Value::Null)),
                        }
                    }
                    Some(st) => Some(serde_json::to_value(st).unwrap_or(Value::Null)),
                    None => stored_run(&app, id, pipeline.as_deref()).await,
                };
                return match found {
                    Some(v) => host_answer(StatusCode::OK, http_out(200, &v), logs, Value::Null),
                    None => host_answer(
                        StatusCode::OK,
                        http_out(404, &json!({"error": format!("no run {id:?}")})),
                        logs,
                        Value::Null,
                    ),
                };
            }
            let sh = app.shared.lock().expect("poisoned");
            let runs: Vec<&RunState> = sh
                .order
                .iter()
                .rev()
                .filter_map(|id| sh.runs.get(id))
                .filter(|r| pipeline.as_deref().is_none_or(|p| r.pipeline == p))
                .take(50)
                .collect();
            let b = json!({"runs": runs, "pipelines": app.pipelines.keys().collect::<Vec<_>>()});
            drop(logs);
            host_answer(StatusCode::OK, http_out(200, &b), Vec::new(), Value::Null)
        }
        other => {
            let b = json!({"error": format!("method {other} not allowed: POST starts a run, GET queries one")});
            host_answer(StatusCode::OK, http_out(405, &b), logs, Value::Null)
        }
    }
}

/// A run's newest stored run record (runs from before a restart).
async fn stored_run(app: &App, id: &str, pipeline: Option<&str>) -> Option<Value> {
    if !ids::is_safe_segment(id) {
        return None;
    }
    for p in app.pipelines.values() {
        if pipeline.is_some_and(|n| n != p.name) {
            continue;
        }
        let Ok(Repo { store: s, layout }) = Repo::open(&p.target, &p.retry).await else {
            continue;
        };
        let prefix = layout.run_records(id);
        let Ok(items) = store::list_all(&*s, &prefix).await else {
            continue;
        };
        if let Some(newest) = items.iter().map(|i| &i.name).max() {
            if let Ok(b) = s.get(newest, None).await {
                // The record is answered as stored (every field, in order), with the
                // run's state taken from its typed status.
                let typed = serde_json::from_slice::<RunRecord>(&b);
                let raw = serde_json::from_slice::<serde_json::Map<String, Value>>(&b);
                if let (Ok(rec), Ok(mut v)) = (typed, raw) {
                    v.insert("state".into(), serde_json::to_value(rec.status).ok()?);
                    return Some(Value::Object(v));
                }
            }
        }
    }
    None
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics_text(app: &App) -> String {
    let metrics = app.shared.lock().expect("poisoned").metrics.clone();
    let mut ages = BTreeMap::new();
    for p in app.pipelines.values() {
        let age = async {
            let repo = Repo::open(&p.target, &p.retry).await.ok()?;
            let ids = catalog::snapshot_ids(&*repo.store, &repo.layout)
                .await
                .ok()?;
            let t = catalog::id_time(ids.last()?)?;
            Some((Utc::now() - t).num_milliseconds() as f64 / 1000.0)
        }
        .await;
        if let Some(a) = age {
            ages.insert(p.name.clone(), a);
        }
    }
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in rows {
            out.push_str(&format!("{name}{{{labels}}} {v}\n"));
        }
    };
    let per = |f: &dyn Fn(&PipelineMetrics) -> Option<String>| -> Vec<(String, String)> {
        metrics
            .iter()
            .filter_map(|(n, m)| f(m).map(|v| (format!("pipeline=\"{}\"", label(n)), v)))
            .collect()
    };
    let mut runs = Vec::new();
    for (n, m) in &metrics {
        for (status, c) in &m.runs {
            runs.push((
                format!("pipeline=\"{}\",status=\"{}\"", label(n), label(status)),
                c.to_string(),
            ));
        }
    }
    family(
        "blobpipe_runs_total",
        "counter",
        "Runs finished by this process, by outcome.",
        runs,
    );
    family(
        "blobpipe_run_failures_total",
        "counter",
        "Runs that failed or found a mismatch.",
        per(&|m| Some(m.failures.to_string())),
    );
    family(
        "blobpipe_runs_in_progress",
        "gauge",
        "Runs going now.",
        per(&|m| Some(m.in_progress.to_string())),
    );
    family(
        "blobpipe_source_bytes_total",
        "counter",
        "Source bytes of the snapshots committed by this process.",
        per(&|m| Some(m.source_bytes.to_string())),
    );
    family(
        "blobpipe_stored_bytes_total",
        "counter",
        "Stored (compressed) bytes of the snapshots committed by this process.",
        per(&|m| Some(m.stored_bytes.to_string())),
    );
    family(
        "blobpipe_handoffs_total",
        "counter",
        "Runs put on the hand-off queue.",
        per(&|m| Some(m.handoffs.to_string())),
    );
    family(
        "blobpipe_handoff_failures_total",
        "counter",
        "Hand-offs that could not be put on the queue.",
        per(&|m| Some(m.handoff_failures.to_string())),
    );
    family(
        "blobpipe_last_run_duration_seconds",
        "gauge",
        "Duration of the last finished run.",
        per(&|m| m.last_duration.map(|d| format!("{d:.3}"))),
    );
    family(
        "blobpipe_last_run_finished_timestamp_seconds",
        "gauge",
        "Unix time the last run finished.",
        per(&|m| m.last_finished.map(|t| t.timestamp().to_string())),
    );
    family(
        "blobpipe_newest_snapshot_age_seconds",
        "gauge",
        "Age of the newest snapshot in the store (from its id; see `blobpipe check` for verified freshness).",
        ages.iter().map(|(n, a)| (format!("pipeline=\"{}\"", label(n)), format!("{a:.3}"))).collect(),
    );
    out
}

/// Turn a 5-field cron (UTC) into the 6-field NCRONTAB a timer trigger needs (`0 ` in
/// front: second zero).
///
/// # Errors
/// `Config` when `cron` does not have 5 fields.
pub fn ncrontab(cron: &str) -> Result<String> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(Error::config(format!(
            "{cron:?} is not a 5-field cron expression"
        )));
    }
    Ok(format!("0 {}", fields.join(" ")))
}

/// What [`scaffold`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Scaffold {
    /// Files written, relative to the output directory.
    pub files: Vec<String>,
    /// Timer functions: (function name, NCRONTAB schedule).
    pub timers: Vec<(String, String)>,
    /// Pipelines without a `[schedule]` (HTTP only).
    pub unscheduled: Vec<String>,
}

fn valid_function_name(n: &str) -> bool {
    n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && n.len() <= 127
}

/// Write a Functions app layout for `pipelines` into `out`: `host.json` (custom handler
/// running `blobpipe serve <pipeline_dir>`), one timer function per scheduled pipeline,
/// and the `runs` HTTP function.
///
/// # Errors
/// `Config` for a pipeline name that cannot be a function name (or clashes with `runs`),
/// `Internal` for write errors.
pub fn scaffold(pipelines: &[Pipeline], pipeline_dir: &str, out: &Path) -> Result<Scaffold> {
    let mut s = Scaffold {
        files: vec![],
        timers: vec![],
        unscheduled: vec![],
    };
    for p in pipelines {
        if !valid_function_name(&p.name) || p.name == HTTP_FUNCTION {
            return Err(Error::config(format!(
                "pipeline name {:?} cannot be a function name (it must start with a letter and not be {HTTP_FUNCTION:?}); rename the pipeline",
                p.name
            )));
        }
    }
    let write = |rel: &str, v: &Value| -> Result<()> {
        let path = out.join(rel);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| {
                Error::io(ErrorKind::Internal, format!("creating {}", d.display()), e)
            })?;
        }
        let text = serde_json::to_string_pretty(v).map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(|e| {
            Error::io(
                ErrorKind::Internal,
                format!("writing {}", path.display()),
                e,
            )
        })
    };
    let host = json!({
        "version": "2.0",
        "logging": {"logLevel": {"default": "Information"}},
        "extensionBundle": {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"},
        "functionTimeout": "-1",
        "customHandler": {
            "description": {
                "defaultExecutablePath": "blobpipe",
                "workingDirectory": "",
                "arguments": ["--log-format", "json", "--quiet", "serve", pipeline_dir]
            },
            "enableForwardingHttpRequest": false
        }
    });
    write("host.json", &host)?;
    s.files.push("host.json".into());
    for p in pipelines {
        match &p.schedule {
            Some(cron) => {
                let nc = ncrontab(cron)?;
                let f = json!({
                    "bindings": [{
                        "type": "timerTrigger",
                        "direction": "in",
                        "name": "timer",
                        "schedule": nc,
                        "runOnStartup": false,
                        "useMonitor": true
                    }]
                });
                let rel = format!("{}/function.json", p.name);
                write(&rel, &f)?;
                s.files.push(rel);
                s.timers.push((p.name.clone(), nc));
            }
            None => s.unscheduled.push(p.name.clone()),
        }
    }
    let http = json!({
        "bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function",
             "methods": ["get", "post"], "route": format!("{HTTP_FUNCTION}/{{pipeline?}}")},
            {"type": "http", "direction": "out", "name": "res"}
        ]
    });
    let rel = format!("{HTTP_FUNCTION}/function.json");
    write(&rel, &http)?;
    s.files.push(rel);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_become_ncrontab() {
        assert_eq!(ncrontab("30 2 * * *").unwrap(), "0 30 2 * * *");
        assert_eq!(ncrontab(" */15  * * * 1-5 ").unwrap(), "0 */15 * * * 1-5");
        assert!(ncrontab("0 30 2 * * *").is_err());
    }

    #[test]
    fn function_names() {
        assert!(valid_function_name("home-db_1"));
        assert!(!valid_function_name("1home"));
        assert!(!valid_function_name(""));
    }
}
