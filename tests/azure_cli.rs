//! The binary against Azurite, as a user runs it: `auth check --json` names the credential
//! and never prints the key; `backup`, `snapshots --json`, `verify --full`, `restore`
//! round trip; a `kill -9` in the middle of a backup leaves no snapshot and a rerun with
//! the same `--run-id` completes.
//!
//! Needs `AZURITE_BLOB_ENDPOINT` (see `tests/support`).

mod common;
mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use blobpipe::manifest::catalog;
use blobpipe::manifest::layout::Layout;
use common::*;

fn bp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("AZURE_STORAGE_SAS_TOKEN")
        .output()
        .expect("run blobpipe")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Nothing secret in `s`: not the key, not a piece of it, no SAS signature.
fn assert_no_secret(s: &str) {
    assert!(!s.contains(support::AZURITE_KEY), "key printed: {s}");
    assert!(
        !s.contains(&support::AZURITE_KEY[..20]),
        "key part printed: {s}"
    );
    assert!(!s.contains("AccountKey="), "connection string printed: {s}");
    assert!(!s.contains("sig="), "SAS signature printed: {s}");
}

const SMALL: &str = "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\nsize = \"64KiB\"\n[lock]\nttl = \"15s\"\n";

#[test]
fn auth_check_backup_snapshots_verify_restore_with_a_connection_string() {
    let Some(ep) = support::azurite() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    sample_tree(&src);
    let container = support::unique_container("cli");
    // The target is a connection string carrying the account key; the container is its
    // own key (connection strings have none).
    let cs = support::azurite_connection_string(&ep);
    let pf = write_pipeline(
        t.path(),
        "azcli",
        &src,
        &cs,
        &format!("container = \"{container}\"\n\n{SMALL}"),
    );
    let pfs = pf.to_str().expect("utf-8");

    let o = bp(&["--json", "auth", "check", pfs]);
    assert_no_secret(&text(&o));
    assert_eq!(code(&o), 0, "{}", text(&o));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(a["credential"], "key", "{a}");
    assert_eq!(a["can_list"], true, "{a}");
    assert_eq!(a["can_write"], true, "{a}");
    // Human output: no secret either.
    let o = bp(&["auth", "check", pfs]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_no_secret(&text(&o));

    let o = bp(&["--json", "backup", pfs]);
    assert_no_secret(&text(&o));
    assert_eq!(code(&o), 0, "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(r["status"], "ok", "{r}");
    let snap = r["snapshot"].as_str().expect("snapshot").to_string();

    let o = bp(&["--json", "snapshots", pfs]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(list.as_array().expect("array").len(), 1, "{list}");
    assert_eq!(list[0]["id"], snap.as_str());
    assert_eq!(list[0]["header"]["totals"]["files"], r["totals"]["files"]);

    let o = bp(&["--json", "verify", pfs, &snap[..12], "--full"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["mode"], "full", "{v}");
    assert!(v["blocks_checked"].as_u64().expect("n") > 0, "{v}");

    let out = t.path().join("out");
    let o = bp(&[
        "restore",
        pfs,
        "latest",
        "--to",
        out.to_str().expect("utf-8"),
        "--quiet",
    ]);
    assert_no_secret(&text(&o));
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_same_tree(&src, &out);
}

#[test]
fn auth_check_with_the_emulator_url_and_a_wrong_key() {
    let Some(ep) = support::azurite() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    let container = support::unique_container("cliurl");
    let pf = write_pipeline(t.path(), "azurl", &src, &format!("{ep}/{container}"), SMALL);
    let pfs = pf.to_str().expect("utf-8");
    // Before any backup: the check creates the container as a backup would, so a
    // fresh target is not reported as unlistable (regression).
    let o = bp(&["--json", "auth", "check", pfs]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(a["credential"], "emulator-key", "{a}");
    assert_eq!(a["can_list"], true, "{a}");
    assert_eq!(a["can_write"], true, "{a}");
    assert_no_secret(&text(&o));
    // A wrong key (same length, valid base64): the check says no, exits non-zero, and
    // prints neither the wrong key nor the right one.
    let wrong = "A".repeat(support::AZURITE_KEY.len() - 2) + "==";
    let o = Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(["--json", "auth", "check", pfs])
        .env("RUST_LOG", "warn")
        .env("AZURE_STORAGE_KEY", &wrong)
        .output()
        .expect("run");
    assert_ne!(code(&o), 0, "{}", text(&o));
    let all = text(&o);
    assert!(!all.contains(&wrong[..20]), "wrong key printed: {all}");
    assert_no_secret(&all);
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(a["credential"], "key", "{a}");
    assert_eq!(a["can_list"], false, "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_backup_then_rerun_with_the_same_run_id() {
    let Some(ep) = support::azurite() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    sample_tree(&src.join("tree"));
    for i in 0..12u64 {
        std::fs::write(
            src.join(format!("blob-{i:02}.bin")),
            noise(1_000_000, i + 1),
        )
        .expect("write");
    }
    let container = support::unique_container("kill");
    // Slow compression so the kill lands mid-run; small blocks so uploads interleave.
    let pf = write_pipeline(
        t.path(),
        "kill",
        &src,
        &format!("{ep}/{container}"),
        "[compression]\nlevel = 17\nframe_size = \"128KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"2MiB\"\n[partitions]\nsize = \"64KiB\"\nmax_parallel = 2\n[verify]\nmode = \"full\"\n[lock]\nttl = \"15s\"\n",
    );
    let pfs = pf.to_str().expect("utf-8");
    let (p, s) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    // An earlier, complete snapshot; its duration sets the kill point below.
    let t0 = Instant::now();
    let o = bp(&["backup", pfs, "--quiet"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let full_run = t0.elapsed();
    let before = catalog::snapshot_ids(&*s, &layout).await.expect("list");
    assert_eq!(before.len(), 1);

    // New content, so the next (incremental) run has as much to upload as the first.
    for i in 0..12u64 {
        std::fs::write(
            src.join(format!("blob-{i:02}.bin")),
            noise(1_000_000, i + 101),
        )
        .expect("rewrite");
    }

    // Start a run, watch the service until its plan is stored, let it work for a third
    // of a full run, then SIGKILL it (no cleanup, no lease release).
    let mut child = Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(["backup", pfs, "--quiet", "--run-id", "exec-1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let plan = layout.plan("exec-1");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut planned_at = None;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if planned_at.is_none() && s.head(&plan).await.expect("head").is_some() {
            planned_at = Some(Instant::now());
        }
        if planned_at.is_some_and(|at| at.elapsed() > full_run / 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let status = child.wait().expect("wait");
    let killed = !status.success();
    eprintln!(
        "killed mid-run: {killed} (plan seen: {}, a full run takes {full_run:?})",
        planned_at.is_some()
    );
    let after = catalog::snapshot_ids(&*s, &layout).await.expect("list");
    if killed {
        // Invariant: nothing a crash leaves behind is visible as a snapshot.
        assert_eq!(after, before, "a killed run left a snapshot");
    } else {
        assert_eq!(after.len(), 2, "the run finished before the kill");
    }
    // The earlier snapshot is intact.
    let o = bp(&["verify", pfs, &before[0][..20], "--full", "--quiet"]);
    assert_eq!(code(&o), 0, "earlier snapshot damaged: {}", text(&o));

    // Rerun with the same run id, waiting out the killed holder's lease (≤ 15 s).
    let o = bp(&["--json", "backup", pfs, "--run-id", "exec-1", "--wait-lock"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(r["status"], "ok", "{r}");
    if killed && planned_at.is_some() {
        // How much the rerun took over depends on where the kill landed; the plan at
        // least was the killed attempt's.
        eprintln!(
            "rerun: partitions_resumed {} blocks_reused {} blocks_staged {}",
            r["partitions_resumed"], r["blocks_reused"], r["blocks_staged"]
        );
    }
    let ids = catalog::snapshot_ids(&*s, &layout).await.expect("list");
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], before[0]);
    let out = t.path().join("out");
    let o = bp(&[
        "restore",
        pfs,
        "latest",
        "--to",
        out.to_str().expect("utf-8"),
        "--quiet",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_same_tree(&src, &out);
}
