//! The Functions custom handler over real HTTP with host-shaped payloads (timer, past-due
//! timer, HTTP start + status, malformed), Prometheus metrics, and `functions scaffold`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use blobpipe::manifest::layout::Layout;
use blobpipe::schedule::BackupRunner;
use blobpipe::serve::Server;
use blobpipe::store::list_all;
use blobpipe::support::cancel::Cancel;
use common::*;
use serde_json::{json, Value};

struct Fx {
    _t: tempfile::TempDir,
    base: String,
    cancel: Cancel,
    stores: Vec<(blobpipe::pipeline::Pipeline, blobpipe::store::Store)>,
    server: tokio::task::JoinHandle<()>,
    client: reqwest::Client,
}

async fn start() -> Fx {
    blobpipe::support::http::ensure_tls_provider();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let mut pipelines = vec![];
    let mut stores = vec![];
    for name in ["home", "db"] {
        let pf = write_pipeline(
            t.path(),
            name,
            &src,
            &format!("memory://{}", unique("serve")),
            "[schedule]\ncron = \"15 1 * * *\"\n[verify]\nmode = \"full\"\n",
        );
        let (p, s) = open(&pf).await;
        pipelines.push(p.clone());
        stores.push((p, s));
    }
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
    let server = tokio::spawn(async move { server.run().await.unwrap() });
    Fx {
        _t: t,
        base,
        cancel,
        stores,
        server,
        client: reqwest::Client::new(),
    }
}

impl Fx {
    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    async fn runs(&self, i: usize) -> usize {
        let (p, s) = &self.stores[i];
        list_all(&**s, &Layout::new(&p.target.prefix).runs())
            .await
            .unwrap()
            .len()
    }
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.server)
            .await
            .unwrap()
            .unwrap();
    }
}

fn timer(past_due: bool) -> Value {
    json!({
        "Data": {"timer": {
            "Schedule": {"AdjustForDST": true},
            "ScheduleStatus": {"Last": "2026-01-01T01:15:00+00:00", "Next": "2026-01-02T01:15:00+00:00", "LastUpdated": "2026-01-01T01:15:00+00:00"},
            "IsPastDue": past_due
        }},
        "Metadata": {"sys": {"MethodName": "home", "UtcNow": "2026-01-02T01:15:00.01Z", "RandGuid": "0c7f4e4e-5d0e-4f3c-9d0c-1f7f0b8f4a11"}}
    })
}

fn http_req(method: &str, url: &str, query: Value, params: Value) -> Value {
    json!({
        "Data": {"req": {
            "Url": url, "Method": method, "Query": query,
            "Headers": {"Content-Type": ["application/json"]},
            "Params": params, "Body": "", "Identities": []
        }},
        "Metadata": {"sys": {"MethodName": "runs", "UtcNow": "2026-01-02T01:15:00Z", "RandGuid": "x"}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_timer_and_past_due_timer() {
    let fx = start().await;
    let r = fx.client.get(format!("{}/", fx.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let (code, v) = fx.post("/home", timer(false).to_string()).await;
    assert_eq!(code, 200, "{v}");
    assert!(v["Outputs"].is_object());
    assert!(v["Logs"].is_array());
    assert_eq!(v["ReturnValue"]["state"], "ok", "{v}");
    assert_eq!(v["ReturnValue"]["trigger"], "timer");
    assert!(v["ReturnValue"]["snapshot"].is_string());
    assert_eq!(fx.runs(0).await, 1);

    let (code, v) = fx.post("/home", timer(true).to_string()).await;
    assert_eq!(code, 200, "{v}");
    let logs = v["Logs"].to_string();
    assert!(logs.contains("past due"), "{logs}");
    assert_eq!(v["ReturnValue"]["state"], "ok");
    assert_eq!(fx.runs(0).await, 2);
    assert_eq!(fx.runs(1).await, 0, "only the mapped pipeline ran");

    // A timer for a function that maps to no pipeline.
    let (code, _) = fx.post("/nosuch", timer(false).to_string()).await;
    assert_eq!(code, 404);

    // Metrics.
    let m = fx
        .client
        .get(format!("{}/metrics", fx.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("blobpipe_runs_total{pipeline=\"home\",status=\"ok\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("blobpipe_run_failures_total{pipeline=\"home\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("blobpipe_newest_snapshot_age_seconds{pipeline=\"home\"}"),
        "{m}"
    );
    assert!(
        !m.contains("blobpipe_newest_snapshot_age_seconds{pipeline=\"db\"}"),
        "{m}"
    );
    assert!(m.contains("# TYPE blobpipe_last_run_duration_seconds gauge"));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_start_then_status() {
    let fx = start().await;
    let (code, v) = fx
        .post(
            "/runs",
            http_req(
                "POST",
                "http://localhost:7071/api/runs/db",
                json!({}),
                json!({"pipeline": "db"}),
            )
            .to_string(),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let res = &v["Outputs"]["res"];
    assert_eq!(res["statusCode"], 202, "{v}");
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    let id = body["run_id"].as_str().unwrap().to_string();
    assert_eq!(body["pipeline"], "db");

    // Poll the status until the run ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let state = loop {
        let (code, v) = fx
            .post(
                "/runs",
                http_req(
                    "GET",
                    "http://localhost:7071/api/runs",
                    json!({"id": id}),
                    json!({}),
                )
                .to_string(),
            )
            .await;
        assert_eq!(code, 200);
        assert_eq!(v["Outputs"]["res"]["statusCode"], 200, "{v}");
        let b: Value = serde_json::from_str(v["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(b["run_id"], id.as_str());
        if b["state"] != "running" {
            break b;
        }
        assert!(std::time::Instant::now() < deadline, "run did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(state["state"], "ok", "{state}");
    assert_eq!(state["trigger"], "http");
    assert_eq!(fx.runs(1).await, 1);
    // The run record carries the same run id.
    let (p, s) = &fx.stores[1];
    let recs = list_all(&**s, &Layout::new(&p.target.prefix).runs())
        .await
        .unwrap();
    assert!(recs[0].name.contains(&id));

    // Unknown run and unknown pipeline.
    let (_, v) = fx
        .post(
            "/runs",
            http_req("GET", "u", json!({"id": "nope"}), json!({})).to_string(),
        )
        .await;
    assert_eq!(v["Outputs"]["res"]["statusCode"], 404);
    let (_, v) = fx
        .post(
            "/runs",
            http_req("POST", "u", json!({}), json!({"pipeline": "nope"})).to_string(),
        )
        .await;
    assert_eq!(v["Outputs"]["res"]["statusCode"], 404);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_get_400_and_start_nothing() {
    let fx = start().await;
    for (body, why) in [
        ("not json".to_string(), "not JSON"),
        ("[1,2]".to_string(), "object"),
        (json!({"Metadata": {}}).to_string(), "Data"),
        (
            json!({"Data": {"x": 1}, "Metadata": {}}).to_string(),
            "neither",
        ),
        (
            json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": 3}).to_string(),
            "Metadata",
        ),
    ] {
        let (code, v) = fx.post("/home", body.clone()).await;
        assert_eq!(code, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{body}: {v}");
    }
    let (code, v) = fx.post("/runs", "{").await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(fx.runs(0).await, 0);
    assert_eq!(fx.runs(1).await, 0);
    fx.stop().await;
}

#[test]
fn scaffold_writes_host_and_functions() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    write_pipeline(
        &dir,
        "home",
        t.path(),
        "memory://x",
        "[schedule]\ncron = \"30 2 * * *\"\n",
    );
    write_pipeline(
        &dir,
        "db",
        t.path(),
        "memory://x",
        "[schedule]\ncron = \"*/15 * * * 1-5\"\n",
    );
    write_pipeline(&dir, "adhoc", t.path(), "memory://x", "");
    let out = t.path().join("func");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args([
            "functions",
            "scaffold",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |rel: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(rel)).unwrap()).unwrap()
    };
    let host = read("host.json");
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "blobpipe"
    );
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], false);
    let args = host["customHandler"]["description"]["arguments"].to_string();
    assert!(args.contains("\"serve\""), "{args}");
    for (name, cron) in [("home", "0 30 2 * * *"), ("db", "0 */15 * * * 1-5")] {
        let f = read(&format!("{name}/function.json"));
        let b = &f["bindings"][0];
        assert_eq!(b["type"], "timerTrigger");
        assert_eq!(b["direction"], "in");
        assert_eq!(b["schedule"], cron);
        assert_eq!(
            b["schedule"].as_str().unwrap().split_whitespace().count(),
            6
        );
    }
    assert!(!out.join("adhoc").exists(), "no timer without a schedule");
    let h = read("runs/function.json");
    assert_eq!(h["bindings"][0]["type"], "httpTrigger");
    assert_eq!(h["bindings"][0]["route"], "runs/{pipeline?}");
    assert_eq!(h["bindings"][1]["type"], "http");
    assert_eq!(h["bindings"][1]["name"], "res");

    // A pipeline name that cannot be a function name is refused.
    write_pipeline(&dir, "9lives", t.path(), "memory://x", "");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args([
            "functions",
            "scaffold",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
