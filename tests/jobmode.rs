//! Container Apps job mode: `blobpipe run <pipeline>` as the job runs it. Exit codes are
//! the outcome (0 only after commit and verification, 2 bad pipeline, 5 another
//! execution holds the lock, 130 SIGTERM); the run id is
//! `CONTAINER_APP_JOB_EXECUTION_NAME`, so a retried replica (same execution name)
//! resumes the run instead of redoing it; logs are JSON lines.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn job(execution: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blobpipe"));
    c.env("RUST_LOG", "info")
        .env("CONTAINER_APP_JOB_NAME", "bp-job")
        .env("CONTAINER_APP_JOB_EXECUTION_NAME", execution);
    c
}

fn count(dir: &Path, suffix: &str) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += count(&p, suffix);
            } else if p.to_string_lossy().ends_with(suffix) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn exit_codes_sigterm_and_resume_with_the_execution_name() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    slow_source(&src, 7);
    let store = t.path().join("store");
    let pf = write_pipeline(
        t.path(),
        "job",
        &src,
        &format!("file://{}", store.display()),
        "[compression]\nlevel = 17\nframe_size = \"128KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"2MiB\"\n[partitions]\nsize = \"64KiB\"\nmax_parallel = 2\n[verify]\nmode = \"full\"\n[lock]\nttl = \"15s\"\n",
    );
    let pfs = pf.to_str().unwrap();

    // 2: a broken pipeline file; nothing runs.
    let bad = t.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[source]\ntype = \"fs\"\n").unwrap();
    let o = job("exec-bad")
        .args(["run", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));

    // Execution 1 starts; stop it with SIGTERM once a partition has finished.
    let mut child = job("exec-1")
        .args(["--log-format", "json", "--quiet", "run", pfs])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let parts = store.join("backups/job/parts/exec-1");
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&parts, ".jsonl.gz") == 0 {
        assert!(Instant::now() < deadline, "no partition finished in time");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be stopped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // 5: a second execution of the same pipeline meanwhile finds the lock held.
    let o = job("exec-2")
        .args(["run", pfs, "--quiet"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    // 130: stopped cleanly, nothing committed, resumable.
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(count(&store.join("backups/job/snapshots"), ".jsonl.gz"), 0);
    // Logs are JSON lines (what Log Analytics ingests).
    let log = String::from_utf8_lossy(&out.stderr);
    let json_lines = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count();
    assert!(json_lines >= 1, "{log}");

    // The retried replica: same execution name → same run → resumes.
    let o = job("exec-1")
        .args(["--json", "run", pfs, "--wait-lock"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["run_id"], "exec-1");
    assert_eq!(r["status"], "ok");
    assert!(r["verify"]["mismatches"].as_array().unwrap().is_empty());
    let resumed = r["partitions_resumed"].as_u64().unwrap();
    let reused = r["blocks_reused"].as_u64().unwrap();
    assert!(resumed >= 1, "{r}");
    // Nothing the first attempt stored is uploaded again: this attempt uploaded strictly
    // fewer blocks than the snapshot holds.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let total: usize = rt.block_on(async {
        let (p, s) = open(&pf).await;
        let layout = blobpipe::manifest::layout::Layout::new(&p.target.prefix);
        let id = blobpipe::manifest::catalog::resolve(&*s, &layout, "latest")
            .await
            .unwrap();
        let m = blobpipe::manifest::catalog::load(&*s, &layout, &id)
            .await
            .unwrap();
        m.packs.iter().map(|p| p.blocks.len()).sum()
    });
    let staged = r["blocks_staged"].as_u64().unwrap() as usize;
    assert!(
        staged < total,
        "re-uploaded everything: {staged} of {total} (reused {reused})"
    );

    // A second retry of the committed execution changes nothing and exits 0.
    let o = job("exec-1").args(["--json", "run", pfs]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let r2: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r2["snapshot"], r["snapshot"]);
    assert_eq!(r2["blocks_staged"], 0);
    assert_eq!(count(&store.join("backups/job/snapshots"), ".jsonl.gz"), 1);

    let out_dir = t.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args([
            "restore",
            pfs,
            "latest",
            "--to",
            out_dir.to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_same_tree(&src, &out_dir);
}
