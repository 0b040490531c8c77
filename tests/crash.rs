//! kill -9 of a backup at several points: no snapshot becomes visible, earlier snapshots
//! stay intact, and a rerun with the same run id completes and restores exactly.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blobpipe"));
    c.env("RUST_LOG", "warn");
    c
}

fn snapshots(store: &Path) -> Vec<String> {
    match std::fs::read_dir(store.join("backups/crash/snapshots")) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => vec![],
    }
}

#[test]
fn kill_9_at_several_points_then_resume() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    slow_source(&src, 1);
    let store = t.path().join("store");
    // Slow compression so the kill points are reachable; small blocks so uploads interleave.
    // Full backups: an incremental of an unchanged tree would finish before any kill point.
    let pf = write_pipeline(
        t.path(),
        "crash",
        &src,
        &format!("file://{}", store.display()),
        "[compression]\nlevel = 17\nframe_size = \"128KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"2MiB\"\n[partitions]\nsize = \"64KiB\"\nmax_parallel = 2\n[verify]\nmode = \"full\"\n[lock]\nttl = \"15s\"\n[incremental]\nenabled = false\n",
    );
    let pfs = pf.to_str().unwrap();
    // An earlier, complete snapshot.
    let o = bin().args(["backup", pfs, "--quiet"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = snapshots(&store);
    assert_eq!(before.len(), 1);

    let parts = store.join("backups/crash/parts/exec-1");
    let staging = store.join("backups/.staging");
    let count = |dir: &Path, suffix: &str| -> usize {
        fn walk(d: &Path, suffix: &str, n: &mut usize) {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, suffix, n);
                    } else if p.to_string_lossy().ends_with(suffix) {
                        *n += 1;
                    }
                }
            }
        }
        let mut n = 0;
        walk(dir, suffix, &mut n);
        n
    };
    // Each point is "something new appeared since this attempt started".
    type Point = (
        &'static str,
        Box<dyn Fn(usize) -> bool>,
        Box<dyn Fn() -> usize>,
    );
    let points: Vec<Point> = vec![
        (
            "plan stored",
            Box::new({
                let parts = parts.clone();
                move |_| parts.join("plan.json.gz").exists()
            }),
            Box::new(|| 0),
        ),
        (
            "blocks staged",
            Box::new({
                let staging = staging.clone();
                move |before| count(&staging, "") > before
            }),
            Box::new({
                let staging = staging.clone();
                move || count(&staging, "")
            }),
        ),
        (
            "a partition finished",
            Box::new({
                let parts = parts.clone();
                move |before| count(&parts, ".jsonl.gz") > before
            }),
            Box::new({
                let parts = parts.clone();
                move || count(&parts, ".jsonl.gz")
            }),
        ),
    ];
    let mut killed = 0;
    for (what, reached, baseline) in &points {
        let base = baseline();
        let mut child = bin()
            .args([
                "backup",
                pfs,
                "--quiet",
                "--run-id",
                "exec-1",
                "--wait-lock",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut hit = false;
        while Instant::now() < deadline {
            if reached(base) {
                hit = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // SIGKILL: no cleanup, no lease release.
        let _ = child.kill();
        let status = child.wait().unwrap();
        if hit && !status.success() {
            killed += 1;
        }
        // Invariant: no snapshot appeared; the earlier one is intact.
        assert_eq!(snapshots(&store), before, "after kill at {what}");
        let o = bin()
            .args(["verify", pfs, &before[0][..20], "--full", "--quiet"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "earlier snapshot damaged after kill at {what}"
        );
        // The killed holder's lease is never released: the next attempt waits
        // (--wait-lock) until it expires by itself after the 15 s ttl.
    }
    assert!(
        killed >= 2,
        "only {killed} kill points were reached before the run ended"
    );
    // Rerun with the same run id (waiting out the killed holder's lease) completes.
    let o = bin()
        .args(["--json", "backup", pfs, "--run-id", "exec-1", "--wait-lock"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["partitions_resumed"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["status"], "ok");
    assert_eq!(snapshots(&store).len(), 2);
    let out = t.path().join("out");
    let o = bin()
        .args([
            "restore",
            pfs,
            "latest",
            "--to",
            out.to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_tree(&src, &out);
}
