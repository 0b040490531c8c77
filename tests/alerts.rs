//! Webhook alerts: each payload format reaches a loopback receiver; a dead receiver never
//! fails the backup and the run record shows the failed delivery; the webhook URL (a
//! secret) never reaches the run record.

mod common;
mod ops_support;

use common::*;
use ops_support::{dead_url, Receiver};

use blobpipe::manifest::layout::Layout;
use blobpipe::manifest::records::RunStatus;
use blobpipe::store::list_all;

fn hooks(list: &[(&str, &str, &str)]) -> String {
    list.iter()
        .map(|(url, format, on)| {
            format!("[[alerts.webhook]]\nurl = \"{url}\"\nformat = \"{format}\"\non = [{on}]\n")
        })
        .collect()
}

async fn run_records(s: &blobpipe::store::Store, prefix: &str) -> Vec<serde_json::Value> {
    let mut out = vec![];
    for i in list_all(&**s, &Layout::new(prefix).runs()).await.unwrap() {
        let b = s.get(&i.name, None).await.unwrap();
        out.push(serde_json::from_slice(&b).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_format_reaches_the_receiver_and_is_recorded() {
    let rx = Receiver::start(vec![200], "{}").await;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"hello").unwrap();
    let json_url = format!("{}/json/SECRET-json-token", rx.base);
    let slack_url = format!("{}/services/T0/B0/SECRET-slack-token", rx.base);
    let teams_url = format!("{}/teams/SECRET-teams-token?sig=SECRET-sig", rx.base);
    let pf = write_pipeline(
        t.path(),
        "alerted",
        &src,
        &format!("memory://{}", unique("alerts")),
        &hooks(&[
            (&json_url, "json", "\"success\""),
            (&slack_url, "slack", "\"success\", \"failure\""),
            (&teams_url, "teams", "\"success\""),
        ]),
    );
    let (p, s) = open(&pf).await;
    let r = backup(&p, &s).await;
    assert_eq!(r.status, RunStatus::Ok);
    assert_eq!(r.alerts.len(), 3, "{:?}", r.alerts);
    assert!(
        r.alerts.iter().all(|a| a.delivered && a.attempts == 1),
        "{:?}",
        r.alerts
    );

    let got = rx.requests();
    assert_eq!(got.len(), 3);
    let by = |needle: &str| got.iter().find(|g| g.target.contains(needle)).unwrap();
    let j = by("/json/").json();
    assert_eq!(j["event"], "success");
    assert_eq!(j["pipeline"], "alerted");
    assert_eq!(j["run_id"], r.run_id.as_str());
    assert_eq!(j["snapshot"], r.snapshot.as_deref().unwrap());
    assert_eq!(
        by("/json/").header("content-type"),
        Some("application/json")
    );
    let sl = by("/services/").json();
    assert!(sl["text"].as_str().unwrap().contains("alerted"));
    assert_eq!(sl["blocks"][0]["type"], "header");
    assert!(sl["blocks"].as_array().unwrap().len() >= 2);
    let tm = by("/teams/").json();
    assert_eq!(tm["type"], "message");
    assert_eq!(
        tm["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(tm["attachments"][0]["content"]["type"], "AdaptiveCard");

    // The run record holds the outcomes, and no part of a webhook URL's secret.
    let recs = run_records(&s, &p.target.prefix).await;
    assert_eq!(recs.len(), 1);
    let text = recs[0].to_string();
    assert_eq!(recs[0]["alerts"].as_array().unwrap().len(), 3);
    assert!(!text.contains("SECRET"), "{text}");
    assert!(!format!("{:?}", r.alerts).contains("SECRET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_never_fails_the_backup() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"hello").unwrap();
    let pf = write_pipeline(
        t.path(),
        "deadhook",
        &src,
        &format!("memory://{}", unique("alerts")),
        &hooks(&[(&dead_url(), "json", "\"success\"")]),
    );
    let (p, s) = open(&pf).await;
    let r = backup(&p, &s).await;
    assert_eq!(r.status, RunStatus::Ok);
    assert_eq!(r.alerts.len(), 1);
    let a = &r.alerts[0];
    assert!(!a.delivered);
    assert_eq!(a.attempts, 4, "bounded retries: {a:?}");
    assert!(a.error.is_some());
    let recs = run_records(&s, &p.target.prefix).await;
    assert_eq!(recs[0]["status"], "ok");
    assert_eq!(recs[0]["alerts"][0]["delivered"], false);
    assert!(!recs[0].to_string().contains("SECRET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_and_failures_alerted() {
    // 503 first, then accepted: one retry.
    let rx = Receiver::start(vec![503, 200], "{}").await;
    let t = tempfile::tempdir().unwrap();
    let pf = write_pipeline(
        t.path(),
        "failing",
        &t.path().join("does-not-exist"),
        &format!("memory://{}", unique("alerts")),
        &hooks(&[(&format!("{}/hook", rx.base), "json", "\"failure\"")]),
    );
    let (p, s) = open(&pf).await;
    let e = blobpipe::pipeline::backup(&p, s.clone(), Default::default())
        .await
        .unwrap_err();
    let got = rx.requests();
    assert_eq!(got.len(), 2, "{e}");
    assert_eq!(got[1].json()["event"], "failure");
    assert!(got[1].json()["summary"]
        .as_str()
        .unwrap()
        .contains("Nothing was committed"));
    let recs = run_records(&s, &p.target.prefix).await;
    assert_eq!(recs[0]["status"], "failed");
    assert_eq!(recs[0]["alerts"][0]["delivered"], true);
    assert_eq!(recs[0]["alerts"][0]["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_not_retried() {
    let rx = Receiver::start(vec![404], "{}").await;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let pf = write_pipeline(
        t.path(),
        "gone",
        &src,
        &format!("memory://{}", unique("alerts")),
        &hooks(&[(&format!("{}/hook", rx.base), "slack", "\"success\"")]),
    );
    let (p, s) = open(&pf).await;
    let r = backup(&p, &s).await;
    assert_eq!(r.alerts[0].attempts, 1);
    assert_eq!(r.alerts[0].status, Some(404));
    assert!(!r.alerts[0].delivered);
}
