//! Queue hand-off against Azurite's queue service: `serve` enqueues a timer/HTTP run of a
//! `[serve] handoff = "queue"` pipeline (202, nothing runs in-process), `run-queued`
//! consumes it (snapshot committed with the message's run id, message deleted), poison
//! messages (unknown pipeline, received too often) are deleted with a non-zero exit, and an
//! empty (or missing) queue exits 0.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use blobpipe::manifest::catalog;
use blobpipe::manifest::layout::Layout;
use blobpipe::schedule::BackupRunner;
use blobpipe::serve::handoff::HandoffMessage;
use blobpipe::serve::Server;
use blobpipe::store;
use blobpipe::store::azure::queue::QueueClient;
use blobpipe::store::azure::queue_url::QueueUrl;
use blobpipe::support::cancel::Cancel;
use common::*;
use serde_json::{json, Value};

fn queue_endpoint() -> Option<String> {
    support::service(
        "AZURITE_QUEUE_ENDPOINT",
        "scripts/azurite start && source .tools/azurite.env",
    )
}

/// A fresh queue name (3–63 lowercase, digits, single hyphens).
fn unique_queue() -> String {
    format!("bp-{}", blobpipe::support::ids::random_hex(8))
}

fn client(url: &str) -> QueueClient {
    blobpipe::support::http::ensure_tls_provider();
    QueueClient::new(&QueueUrl::parse(url).unwrap()).unwrap()
}

fn run_queued(dir: &Path, queue: &str, extra: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(["--json", "run-queued"])
        .arg(dir)
        .args(["--queue", queue])
        .args(extra)
        .env_remove("BLOBPIPE_HANDOFF_QUEUE")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("AZURE_STORAGE_SAS_TOKEN")
        .env_remove("CONTAINER_APP_JOB_EXECUTION_NAME")
        .output()
        .unwrap();
    eprintln!(
        "run-queued exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn out_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

struct Fx {
    _t: tempfile::TempDir,
    dir: PathBuf,
    queue: String,
}

/// A pipelines dir with `home` (hand-off to a fresh queue) and `local` (in-process), both
/// backing up a sample tree into a `file://` store.
fn fixture(endpoint: &str) -> Fx {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let dir = t.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    let store_dir = t.path().join("store");
    let queue = format!("{endpoint}/{}", unique_queue());
    let url = format!("file://{}", store_dir.display());
    write_pipeline(
        &dir,
        "home",
        &src,
        &url,
        &format!(
            "[schedule]\ncron = \"15 1 * * *\"\n[serve]\nhandoff = \"queue\"\nqueue_url = \"{queue}\"\n"
        ),
    );
    write_pipeline(&dir, "local", &src, &url, "");
    Fx { _t: t, dir, queue }
}

fn timer(past_due: bool) -> Value {
    json!({
        "Data": {"timer": {
            "Schedule": {"AdjustForDST": true},
            "ScheduleStatus": {"Last": "2026-01-01T01:15:00+00:00", "Next": "2026-01-02T01:15:00+00:00", "LastUpdated": "2026-01-01T01:15:00+00:00"},
            "IsPastDue": past_due
        }},
        "Metadata": {"sys": {"MethodName": "home", "UtcNow": "2026-01-02T01:15:00.01Z", "RandGuid": "x"}}
    })
}

async fn serve(dir: &Path) -> (String, Cancel, tokio::task::JoinHandle<()>) {
    blobpipe::support::http::ensure_tls_provider();
    let pipelines: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| blobpipe::pipeline::Pipeline::load(&e.unwrap().path()).unwrap())
        .collect();
    let cancel = Cancel::new();
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        pipelines,
        Arc::new(BackupRunner),
        cancel.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let h = tokio::spawn(async move { server.run().await.unwrap() });
    (base, cancel, h)
}

async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (
        code,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
    )
}

async fn snapshots(fx: &Fx, pipeline: &str) -> Vec<String> {
    let target = blobpipe::pipeline::Pipeline::load(&fx.dir.join(format!("{pipeline}.toml")))
        .unwrap()
        .target;
    let s = store::open(&target, &Default::default()).await.unwrap();
    catalog::snapshot_ids(&*s, &Layout::new(&target.prefix))
        .await
        .unwrap()
}

async fn run_records(fx: &Fx, pipeline: &str, run_id: &str) -> usize {
    let target = blobpipe::pipeline::Pipeline::load(&fx.dir.join(format!("{pipeline}.toml")))
        .unwrap()
        .target;
    let s = store::open(&target, &Default::default()).await.unwrap();
    let prefix = format!("{}{run_id}/", Layout::new(&target.prefix).runs());
    store::list_all(&*s, &prefix).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_hands_off_and_run_queued_commits() {
    let Some(ep) = queue_endpoint() else { return };
    let fx = fixture(&ep);
    let q = client(&fx.queue);
    let (base, cancel, server) = serve(&fx.dir).await;

    // The timer for a hand-off pipeline: 202, queued, nothing runs here.
    let (code, v) = post(&base, "/home", &timer(true)).await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["ReturnValue"]["state"], "queued", "{v}");
    let run_id = v["ReturnValue"]["run_id"].as_str().unwrap().to_string();
    assert!(v["Logs"].to_string().contains("handed off"), "{v}");
    let texts = q.peek().await.unwrap();
    assert_eq!(texts.len(), 1, "{texts:?}");
    let m = HandoffMessage::decode(&texts[0]).unwrap();
    assert_eq!(m.pipeline, "home");
    assert_eq!(m.run_id, run_id);
    assert!(m.past_due);
    assert_eq!(m.trigger.as_deref(), Some("timer"));
    // The message text is base64, as Azure queue tools expect.
    assert!(!texts[0].trim_start().starts_with('{'));
    assert!(snapshots(&fx, "home").await.is_empty());

    // The status of the handed-off run while queued.
    let (code, v) = post(
        &base,
        "/runs",
        &json!({"Data": {"req": {"Url": "http://localhost/api/runs", "Method": "GET",
                "Query": {"id": run_id}, "Headers": {}, "Params": {}, "Body": ""}}, "Metadata": {}}),
    )
    .await;
    assert_eq!(code, 200);
    let body: Value = serde_json::from_str(v["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["state"], "queued", "{body}");

    // Metrics count hand-offs.
    let m = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("blobpipe_handoffs_total{pipeline=\"home\"} 1"),
        "{m}"
    );

    // The job: consumes the message, runs with its run id, deletes it.
    let o = run_queued(&fx.dir, &fx.queue, &[]);
    assert_eq!(o.status.code(), Some(0));
    let out = out_json(&o);
    assert_eq!(out["outcome"], "ok", "{out}");
    assert_eq!(out["deleted"], true);
    assert_eq!(out["message"]["run_id"], run_id.as_str());
    let snaps = snapshots(&fx, "home").await;
    assert_eq!(snaps.len(), 1);
    assert_eq!(Some(snaps[0].as_str()), out["snapshot"].as_str());
    assert_eq!(
        run_records(&fx, "home", &run_id).await,
        1,
        "run record under the message's run id"
    );
    assert!(q.peek().await.unwrap().is_empty(), "message deleted");

    // The HTTP status query now answers from the job's run record.
    let (_, v) = post(
        &base,
        "/runs",
        &json!({"Data": {"req": {"Url": "http://localhost/api/runs", "Method": "GET",
                "Query": {"id": run_id}, "Headers": {}, "Params": {}, "Body": ""}}, "Metadata": {}}),
    )
    .await;
    let body: Value = serde_json::from_str(v["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["state"], "ok", "{body}");

    // Then the queue is empty: exit 0, nothing runs.
    let o = run_queued(&fx.dir, &fx.queue, &[]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(out_json(&o)["outcome"], "empty");
    assert_eq!(snapshots(&fx, "home").await.len(), 1);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_trigger_hands_off_with_a_given_run_id_and_local_pipelines_still_run_in_process() {
    let Some(ep) = queue_endpoint() else { return };
    let fx = fixture(&ep);
    let q = client(&fx.queue);
    let (base, cancel, server) = serve(&fx.dir).await;
    let req = |pipeline: &str, body: &str| {
        json!({"Data": {"req": {"Url": format!("http://localhost/api/runs/{pipeline}"), "Method": "POST",
               "Query": {}, "Headers": {}, "Params": {"pipeline": pipeline}, "Body": body}}, "Metadata": {}})
    };
    let (code, v) = post(&base, "/runs", &req("home", r#"{"run_id":"given-1"}"#)).await;
    assert_eq!(code, 200, "{v}");
    let res = &v["Outputs"]["res"];
    assert_eq!(res["statusCode"], 202, "{v}");
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["run_id"], "given-1");
    assert_eq!(body["state"], "queued");
    let texts = q.peek().await.unwrap();
    assert_eq!(texts.len(), 1);
    let m = HandoffMessage::decode(&texts[0]).unwrap();
    assert_eq!(
        (m.pipeline.as_str(), m.run_id.as_str()),
        ("home", "given-1")
    );
    assert!(!m.past_due);

    // An unsafe run id is refused, nothing queued.
    let (_, v) = post(&base, "/runs", &req("home", r#"{"run_id":"../x"}"#)).await;
    assert_eq!(v["Outputs"]["res"]["statusCode"], 400, "{v}");
    assert_eq!(q.peek().await.unwrap().len(), 1);

    // A pipeline without hand-off still runs in the handler.
    let (_, v) = post(&base, "/runs", &req("local", "")).await;
    let body: Value = serde_json::from_str(v["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["state"], "running", "{body}");
    assert_eq!(q.peek().await.unwrap().len(), 1);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .unwrap()
        .unwrap();

    // The job picks the default queue from the pipelines' [serve] when --queue is absent.
    let o = Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(["--json", "run-queued"])
        .arg(&fx.dir)
        .env_remove("BLOBPIPE_HANDOFF_QUEUE")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(out_json(&o)["message"]["run_id"], "given-1");
    assert_eq!(run_records(&fx, "home", "given-1").await, 1);
    assert!(q.peek().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_deleted_with_an_error() {
    let Some(ep) = queue_endpoint() else { return };
    let fx = fixture(&ep);
    let q = client(&fx.queue);

    // A queue that does not exist yet is empty.
    let o = run_queued(&fx.dir, &fx.queue, &[]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(out_json(&o)["outcome"], "empty");

    // Unknown pipeline.
    let msg = |p: &str| HandoffMessage {
        pipeline: p.into(),
        run_id: blobpipe::support::ids::run_id(chrono::Utc::now()),
        requested_at: chrono::Utc::now(),
        past_due: false,
        trigger: Some("http".into()),
    };
    q.put(&msg("nosuch")).await.unwrap();
    let o = run_queued(&fx.dir, &fx.queue, &[]);
    assert_eq!(o.status.code(), Some(2));
    let out = out_json(&o);
    assert_eq!(out["outcome"], "poison", "{out}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("poison"));
    assert!(out["error"].as_str().unwrap().contains("nosuch"));
    assert!(q.peek().await.unwrap().is_empty(), "poison message deleted");

    // Not a hand-off message at all.
    q.put_text("hello").await.unwrap();
    let o = run_queued(&fx.dir, &fx.queue, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(q.peek().await.unwrap().is_empty());

    // Received too often (its runs keep failing): deleted, exit 1, nothing runs.
    q.put(&msg("home")).await.unwrap();
    for _ in 0..5 {
        let r = q.receive(Duration::from_secs(1)).await.unwrap().unwrap();
        q.set_visibility(&r.id, &r.pop_receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    let o = run_queued(&fx.dir, &fx.queue, &[]);
    assert_eq!(o.status.code(), Some(1));
    let out = out_json(&o);
    assert_eq!(out["outcome"], "poison", "{out}");
    assert_eq!(out["dequeue_count"], 6);
    assert!(q.peek().await.unwrap().is_empty());
    assert!(snapshots(&fx, "home").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_leaves_the_message_to_reappear() {
    let Some(ep) = queue_endpoint() else { return };
    let fx = fixture(&ep);
    let q = client(&fx.queue);
    // Break the source: the run fails, the message stays.
    let home = fx.dir.join("home.toml");
    let text = std::fs::read_to_string(&home).unwrap();
    let root_line = text.lines().find(|l| l.starts_with("root = ")).unwrap();
    std::fs::write(
        &home,
        text.replace(root_line, "root = \"/nonexistent/blobpipe-handoff\""),
    )
    .unwrap();
    q.put(&HandoffMessage {
        pipeline: "home".into(),
        run_id: "fail-1".into(),
        requested_at: chrono::Utc::now(),
        past_due: false,
        trigger: None,
    })
    .await
    .unwrap();
    let o = run_queued(&fx.dir, &fx.queue, &["--retry-delay", "1s"]);
    assert_ne!(o.status.code(), Some(0));
    let out = out_json(&o);
    assert_eq!(out["deleted"], false, "{out}");
    // Invisible for the retry delay, then back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let texts = q.peek().await.unwrap();
    assert_eq!(texts.len(), 1, "message reappeared");
}
