//! The scheduler: two pipelines on a fast (every-second) cron, runs of one pipeline never
//! overlap, catch-up of one missed run after downtime, graceful stop; `next`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use blobpipe::manifest::layout::Layout;
use blobpipe::schedule::{self, BackupRunner, Job, ScheduleOptions};
use blobpipe::store::list_all;
use blobpipe::support::cancel::Cancel;
use chrono::{DateTime, Utc};
use common::*;

async fn runs(
    s: &blobpipe::store::Store,
    prefix: &str,
) -> Vec<(DateTime<Utc>, DateTime<Utc>, String)> {
    let mut out = vec![];
    for i in list_all(&**s, &Layout::new(prefix).runs()).await.unwrap() {
        let v: serde_json::Value =
            serde_json::from_slice(&s.get(&i.name, None).await.unwrap()).unwrap();
        out.push((
            v["started_at"].as_str().unwrap().parse().unwrap(),
            v["finished_at"].as_str().unwrap().parse().unwrap(),
            v["status"].as_str().unwrap().to_string(),
        ));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_every_second_without_overlap() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), vec![i as u8; 200_000]).unwrap();
    }
    let mut jobs = vec![];
    let mut stores = vec![];
    for name in ["slow", "fast"] {
        let mem = unique("sched");
        let pf = write_pipeline(
            t.path(),
            name,
            &src,
            &format!("memory://{mem}"),
            "[upload]\nblock_size = \"64KiB\"\n[verify]\nmode = \"metadata\"\n",
        );
        let (p, s) = open(&pf).await;
        if name == "slow" {
            // Every staged block and put waits: a run takes longer than the 1 s tick.
            blobpipe::store::memory::MemoryStore::shared(&format!("{mem}/backups"))
                .set_delay(Some(Duration::from_millis(250)));
        }
        jobs.push(Job::with_expr(p.clone(), "* * * * * *").unwrap());
        stores.push((p, s));
    }
    let cancel = Cancel::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5500)).await;
        c.cancel();
    });
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        schedule::run(
            jobs,
            Arc::new(BackupRunner),
            cancel,
            &ScheduleOptions::default(),
        ),
    )
    .await
    .expect("scheduler stops after cancel")
    .unwrap();
    // Both ran repeatedly; the slow one had ticks skipped instead of overlapping.
    assert!(summary.started["fast"] >= 3, "{summary:?}");
    assert!(summary.started["slow"] >= 2, "{summary:?}");
    assert!(
        summary.skipped_overlap.get("slow").copied().unwrap_or(0) >= 1,
        "{summary:?}"
    );
    for (p, s) in &stores {
        let r = runs(s, &p.target.prefix).await;
        assert!(r.len() >= 2, "{}: {r:?}", p.name);
        for w in r.windows(2) {
            assert!(w[0].1 <= w[1].0, "{}: runs overlap: {w:?}", p.name);
        }
        // Everything but a run stopped by the shutdown succeeded.
        assert!(
            r.iter().all(|x| x.2 == "ok" || x.2 == "cancelled"),
            "{}: {r:?}",
            p.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_run_is_caught_up_once() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    let mem = unique("catchup");
    let pf = write_pipeline(
        t.path(),
        "nightly",
        &src,
        &format!("memory://{mem}"),
        "[schedule]\ncron = \"0 3 1 1 *\"\n",
    );
    let (p, s) = open(&pf).await;
    // The last run was two years ago: the yearly 1 January 03:00 run was missed.
    let long_ago = Utc::now() - chrono::Duration::days(730);
    let rec = serde_json::json!({"run_id": "old", "status": "ok", "started_at": long_ago, "finished_at": long_ago});
    s.put(
        &Layout::new(&p.target.prefix).run_record("old", &blobpipe::support::ids::stamp(long_ago)),
        rec.to_string().into(),
        true,
    )
    .await
    .unwrap();
    let job = Job::from_pipeline(p.clone()).unwrap().unwrap();
    let run = |opts: ScheduleOptions, job: Job| async move {
        let cancel = Cancel::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            c.cancel();
        });
        schedule::run(vec![job], Arc::new(BackupRunner), cancel, &opts)
            .await
            .unwrap()
    };
    // catch-up off: nothing runs.
    let sum = run(ScheduleOptions { no_catch_up: true }, job.clone()).await;
    assert!(sum.started.is_empty(), "{sum:?}");
    // catch-up on: exactly one run, then nothing until next year.
    let sum = run(ScheduleOptions::default(), job.clone()).await;
    assert_eq!(sum.started.get("nightly"), Some(&1), "{sum:?}");
    assert_eq!(sum.caught_up.get("nightly"), Some(&1));
    let r = runs(&s, &p.target.prefix).await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].2, "ok");
    // Now the last run is recent: no catch-up.
    let sum = run(ScheduleOptions::default(), job).await;
    assert!(sum.started.is_empty(), "{sum:?}");
}

#[test]
fn next_prints_upcoming_times() {
    let t = tempfile::tempdir().unwrap();
    write_pipeline(
        t.path(),
        "a",
        t.path(),
        "memory://x",
        "[schedule]\ncron = \"30 2 * * *\"\n",
    );
    write_pipeline(t.path(), "b", t.path(), "memory://x", "");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(["--json", "next", t.path().to_str().unwrap(), "--count", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let times = v[0]["next"].as_array().unwrap();
    assert_eq!(times.len(), 2);
    for x in times {
        let t: DateTime<Utc> = x.as_str().unwrap().parse().unwrap();
        assert_eq!(t.format("%H:%M:%S").to_string(), "02:30:00");
    }
    assert_eq!(v[1]["pipeline"], "b");
    assert!(v[1]["cron"].is_null());
}
