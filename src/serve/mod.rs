//! `blobpipe serve`: an Azure Functions custom handler (and a Prometheus endpoint).
//!
//! The Functions host starts the binary, waits (up to 60 s) until it answers `GET /` on
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, then POSTs every invocation to `/<FunctionName>` as
//! `{"Data": {<binding>: …}, "Metadata": {…}}` and expects `200` with
//! `{"Outputs": {…}, "Logs": […], "ReturnValue": …}` (`enableForwardingHttpRequest` is
//! false, so HTTP triggers arrive in the same envelope). The functions are the ones
//! [`scaffold`](scaffold::scaffold) writes:
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

//!
//! `GET /dashboard/` serves the HTML dashboard ([`crate::report`]) read-only, when the
//! operator turned it on (`--dashboard easy-auth|anonymous`; off by default: 404).
//!
//! This file is the server itself (bind, accept, route); the envelope is in [`functions`],
//! runs in [`runs`], the metrics text in [`metrics`], the app layout in [`scaffold`], and
//! queue hand-off to jobs in [`handoff`].

pub mod dashboard;
pub mod functions;
pub mod handoff;
pub mod metrics;
pub mod runs;
pub mod scaffold;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Pipeline;
use crate::schedule::Runner;
use crate::store::azure::queue::QueueClient;
use crate::support::cancel::Cancel;
use metrics::PipelineMetrics;
use runs::RunState;

/// Largest invocation body accepted.
const MAX_BODY: usize = 1 << 20;

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
    /// Who may see `/dashboard/` (off unless the operator says).
    dashboard: dashboard::Access,
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
                dashboard: dashboard::Access::Off,
            }),
        })
    }

    /// Serve the dashboard at `/dashboard/` to `access` (off by default).
    ///
    /// # Panics
    /// Never: the app is not shared before [`Server::run`].
    #[must_use]
    pub fn with_dashboard(mut self, access: dashboard::Access) -> Server {
        if let Some(app) = Arc::get_mut(&mut self.app) {
            app.dashboard = access;
        }
        self
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

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "") | (Method::HEAD, "") => {
            respond(StatusCode::OK, "text/plain", "blobpipe ready\n")
        }
        (Method::GET, "metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics::metrics_text(&app).await,
        ),
        (Method::GET | Method::HEAD, p) if p == "dashboard" || p.starts_with("dashboard/") => {
            dashboard::handle(&app, req.headers(), p).await
        }
        (Method::POST, name) if !name.is_empty() && !name.contains('/') => {
            let name = name.to_string();
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return functions::bad_request(format!("cannot read the body: {e}")),
            };
            functions::invoke(app, &name, &body).await
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}
