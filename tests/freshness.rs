//! `check` (freshness / RPO), `status` and `drill`, through the binary as the freshness
//! job and an operator run them.

mod common;
mod ops_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use ops_support::Receiver;

fn bp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn js(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

struct Fx {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
    pipeline: PathBuf,
}

fn fixture(name: &str, extra: &str) -> Fx {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let store = t.path().join("store");
    let dir = t.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = write_pipeline(
        &dir,
        name,
        &src,
        &format!("file://{}", store.display()),
        &format!("[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"128KiB\"\npack_size = \"1MiB\"\n{extra}"),
    );
    Fx {
        _t: t,
        dir,
        store,
        pipeline,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_goes_red_when_stale_and_alerts() {
    let rx = Receiver::start(vec![200], "{}").await;
    let f = fixture(
        "fresh",
        &format!(
            "[[alerts.webhook]]\nurl = \"{}/stale/SECRET\"\nformat = \"json\"\non = [\"stale\"]\n",
            rx.base
        ),
    );
    let dir = f.dir.clone();
    // No snapshot yet: stale.
    let o = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || bp(&["--json", "check", s(&dir), "--max-age", "26h"])
    })
    .await
    .unwrap();
    assert_eq!(code(&o), 9, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        js(&o)["pipelines"][0]["reason"],
        "no verified snapshot at all"
    );

    let o = bp(&["--json", "backup", s(&f.pipeline)]);
    assert_eq!(code(&o), 0);
    let o = bp(&["--json", "check", s(&dir), "--max-age", "26h"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
    let v = js(&o);
    assert_eq!(v["pipelines"][0]["stale"], false);
    assert!(v["pipelines"][0]["newest_verified"].is_string());

    let before = rx.requests().len();
    let o = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || bp(&["--json", "check", s(&dir), "--max-age", "1ms"])
    })
    .await
    .unwrap();
    assert_eq!(code(&o), 9);
    let v = js(&o);
    assert_eq!(v["pipelines"][0]["stale"], true);
    assert_eq!(v["pipelines"][0]["alerts"][0]["delivered"], true);
    let got = rx.requests();
    assert_eq!(got.len(), before + 1);
    let alert = got.last().unwrap().json();
    assert_eq!(alert["event"], "stale");
    assert_eq!(alert["pipeline"], "fresh");
    assert!(!o.stdout.windows(6).any(|w| w == b"SECRET"));

    // Without a limit anywhere: a usage error.
    let o = bp(&["check", s(&dir)]);
    assert_eq!(code(&o), 2);
}

#[test]
fn rpo_overrides_max_age_and_unverified_snapshots_do_not_count() {
    let f = fixture("rpo", "[freshness]\nrpo = \"1m\"\n");
    let o = bp(&["--json", "backup", s(&f.pipeline), "--no-verify"]);
    assert_eq!(code(&o), 0);
    // Unverified: stale even with a generous limit.
    let o = bp(&["--json", "check", s(&f.pipeline), "--max-age", "26h"]);
    assert_eq!(code(&o), 9);
    assert_eq!(js(&o)["pipelines"][0]["limit_from"], "rpo");
    let o = bp(&["--json", "backup", s(&f.pipeline)]);
    assert_eq!(code(&o), 0);
    let o = bp(&["--json", "check", s(&f.pipeline), "--max-age", "1ms"]);
    assert_eq!(code(&o), 0, "the pipeline's rpo (1m) wins over --max-age");
    assert_eq!(js(&o)["pipelines"][0]["max_age_seconds"], 60);
}

#[test]
fn drill_records_rto_and_status_shows_everything() {
    let f = fixture("drilled", "[freshness]\nrpo = \"1h\"\n");
    let o = bp(&["--json", "backup", s(&f.pipeline)]);
    assert_eq!(code(&o), 0);
    let snap = js(&o)["snapshot"].as_str().unwrap().to_string();
    let scratch = f.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let o = bp(&[
        "--json",
        "drill",
        s(&f.pipeline),
        "--scratch-dir",
        s(&scratch),
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let d = js(&o);
    assert_eq!(d["ok"], true);
    assert_eq!(d["snapshot"], snap.as_str());
    assert!(d["files"].as_u64().unwrap() >= 5);
    assert!(d["rto_seconds"].as_f64().unwrap() > 0.0);
    assert!(d["stored_as"].as_str().unwrap().contains("/drills/"));
    // The scratch directory is gone.
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);

    let o = bp(&["--json", "status", s(&f.dir)]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let st = &js(&o)["pipelines"][0];
    assert_eq!(st["pipeline"], "drilled");
    assert_eq!(st["last_run"]["status"], "ok");
    assert_eq!(st["newest_verified"], snap.as_str());
    assert_eq!(st["within_rpo"], true);
    assert_eq!(st["rpo_seconds"], 3600);
    assert!(st["stored_by_tier"]["hot"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(st["last_verify"]["snapshot"], snap.as_str());
    assert_eq!(st["last_verify"]["mismatches"], 0);
    assert_eq!(st["last_drill"]["ok"], true);
    assert!(st["last_drill"]["rto_seconds"].as_f64().unwrap() > 0.0);
    // Human output names the pieces.
    let o = bp(&["status", s(&f.dir)]);
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "last run:",
        "newest verified:",
        "stored (",
        "last verify:",
        "last drill:",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
}

fn walk(d: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_detects_corruption_and_alerts() {
    let rx = Receiver::start(vec![200], "{}").await;
    let f = fixture(
        "corrupt",
        &format!(
            "[[alerts.webhook]]\nurl = \"{}/drill\"\nformat = \"teams\"\non = [\"failure\", \"mismatch\"]\n",
            rx.base
        ),
    );
    let o = bp(&["--json", "backup", s(&f.pipeline)]);
    assert_eq!(code(&o), 0);
    // Flip bytes in the middle of every pack.
    let mut packs = vec![];
    walk(&f.store.join("backups/corrupt/packs"), &mut packs);
    assert!(!packs.is_empty());
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x5a;
        std::fs::write(p, b).unwrap();
    }
    let pf = f.pipeline.clone();
    let o = tokio::task::spawn_blocking(move || bp(&["--json", "drill", s(&pf)]))
        .await
        .unwrap();
    assert_ne!(code(&o), 0);
    let d = js(&o);
    assert_eq!(d["ok"], false, "{d}");
    assert!(d["error"].is_string());
    assert!(d["stored_as"].is_string(), "a failed drill is recorded too");
    let got = rx.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["type"], "message");
    let o = bp(&["--json", "status", s(&f.pipeline)]);
    assert_eq!(js(&o)["pipelines"][0]["last_drill"]["ok"], false);
}
