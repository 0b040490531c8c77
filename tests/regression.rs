//! One regression test (or a few) per bug fixed, each in a module named after its item
//! (issue 10: `item_N`). Every test here failed before its fix.

mod common;
mod support;

use std::path::Path;
use std::process::{Command, Output};

/// The blobpipe binary, quiet logs.
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blobpipe"));
    c.env("RUST_LOG", "warn");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The JSON document a `--json` command printed.
fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            text(&o.stdout),
            text(&o.stderr)
        )
    })
}

/// Files directly in `dir` (empty when it does not exist).
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Committed manifests in a local store's `snapshots/` dir (not the temp files a write
/// goes through).
fn manifests(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|n| n.ends_with(".jsonl.gz") && !n.starts_with('.'))
        .collect()
}

/// Issue 10 item 3: a committed run whose post-commit verification cannot complete
/// reported `failed, snapshot: null` and exit 1 although `snapshots` listed the
/// snapshot; a rerun of its run id then said `ok` with `verify: null`.
mod item_3 {
    use super::*;
    use blobpipe::cli::exit;
    use blobpipe::manifest::catalog;
    use blobpipe::manifest::layout::Layout;
    use blobpipe::manifest::records::{RunRecord, RunStatus, VerifyStatus};
    use blobpipe::pipeline::BackupOptions;
    use blobpipe::store::memory::MemoryStore;
    use common::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_that_cannot_complete_reports_the_committed_snapshot_and_a_rerun_verifies() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        sample_tree(&src);
        let name = unique("item3");
        let pf = write_pipeline(
            t.path(),
            "unverified",
            &src,
            &format!("memory://{name}"),
            "[verify]\nmode = \"full\"\n",
        );
        let (p, s) = open(&pf).await;
        let mem = MemoryStore::shared(&format!("{name}/{}", p.target.container));
        let layout = Layout::new(&p.target.prefix);
        // Every read of a pack fails (as a store failing beyond its retries would):
        // planning, packing and the commit never read packs, verification must.
        mem.fail_reads_containing(Some("/packs/"));
        let opts = || BackupOptions {
            run_id: Some("run-unverified".into()),
            ..Default::default()
        };
        let r = blobpipe::pipeline::backup(&p, s.clone(), opts())
            .await
            .expect("a committed run is not an error");
        assert_eq!(r.status, RunStatus::CommittedUnverified, "{r:?}");
        let snap = r
            .snapshot
            .clone()
            .expect("the committed snapshot is reported");
        assert!(r.verify.is_none(), "{r:?}");
        let err = r.error.clone().unwrap_or_default();
        assert!(err.contains("verification could not complete"), "{err}");
        assert!(err.contains("injected fault reading"), "{err}");
        // Its own exit code, distinct from "nothing committed" and from ok.
        let code = exit::for_run(r.status);
        assert_eq!(code, exit::UNVERIFIED);
        assert!(![exit::OK, exit::FAILED, exit::PARTIAL, exit::MISMATCH].contains(&code));

        // The run record says the same; the snapshot is listed, unverified.
        let records = blobpipe::store::list_all(&*s, &layout.run_records("run-unverified"))
            .await
            .unwrap();
        assert_eq!(records.len(), 1, "{records:?}");
        let rec: RunRecord =
            serde_json::from_slice(&s.get(&records[0].name, None).await.unwrap()).unwrap();
        assert_eq!(rec.status, Some(RunStatus::CommittedUnverified));
        assert_eq!(rec.snapshot.as_deref(), Some(snap.as_str()));
        let list = catalog::list(&*s, &layout).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, snap);
        assert_eq!(list[0].verify_status, VerifyStatus::Unverified);

        // The store recovers; the rerun of the run id verifies the same snapshot.
        mem.fail_reads_containing(None);
        let again = blobpipe::pipeline::backup(&p, s.clone(), opts())
            .await
            .expect("rerun");
        assert_eq!(again.status, RunStatus::Ok, "{again:?}");
        assert_eq!(again.snapshot.as_deref(), Some(snap.as_str()));
        let v = again.verify.as_ref().expect("the rerun verified");
        assert!(v.ok(), "{:?}", v.mismatches);
        assert_eq!(v.mode, "full");
        assert!(v.entries_checked > 0, "{v:?}");
        let list = catalog::list(&*s, &layout).await.unwrap();
        assert_eq!(list.len(), 1, "the rerun committed no second snapshot");
        assert_eq!(list[0].verify_status, VerifyStatus::Ok);
    }

    /// kill -9 while the post-commit verification runs: the rerun with the same run id
    /// verifies the snapshot and says so (it used to exit 0 with `verify: null`).
    #[test]
    fn kill_9_during_post_commit_verify_then_rerun_verifies() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        slow_source(&src, 3);
        let store = t.path().join("store");
        let pf = write_pipeline(
            t.path(),
            "killverify",
            &src,
            &format!("file://{}", store.display()),
            "[compression]\nlevel = 1\n[upload]\nblock_size = \"64KiB\"\n[verify]\nmode = \"full\"\n[lock]\nttl = \"15s\"\n",
        );
        let pfs = pf.to_str().unwrap();
        let snapshots = store.join("backups/killverify/snapshots");
        let reports = store.join("backups/killverify/verify");
        let mut child = bin()
            .args(["backup", pfs, "--quiet", "--run-id", "exec-v"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill the moment the manifest is there: the verification is under way.
        let mut committed = false;
        loop {
            if !manifests(&snapshots).is_empty() {
                committed = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(committed, "the backup ended before it committed");
        let snaps = manifests(&snapshots);
        assert_eq!(snaps.len(), 1, "{snaps:?}");
        let killed_during_verify = files_in(&reports).is_empty();
        eprintln!("killed during the verification: {killed_during_verify}");

        // The rerun (waiting out the killed holder's lease) verifies that snapshot.
        let o = bin()
            .args(["--json", "backup", pfs, "--run-id", "exec-v", "--wait-lock"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        let r = json(&o);
        assert_eq!(r["status"], "ok", "{r}");
        let snap = r["snapshot"].as_str().expect("snapshot").to_string();
        assert!(snaps[0].contains(&snap), "{snap} vs {snaps:?}");
        assert!(r["verify"].is_object(), "the rerun did not verify: {r}");
        assert_eq!(r["verify"]["snapshot"], snap.as_str(), "{r}");
        assert_eq!(r["verify"]["mode"], "full", "{r}");
        assert_eq!(r["verify"]["mismatches"].as_array().map(Vec::len), Some(0));
        assert_eq!(manifests(&snapshots), snaps, "no second snapshot");
        let o = bin().args(["--json", "snapshots", pfs]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        let list = json(&o);
        let list = list.as_array().expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["verify_status"], "ok", "{list:?}");
    }
}

/// Issue 10 items 3 and 4 through the CLI on Azure: pack reads fail after the commit
/// (a fault proxy in front of Azurite). The run exits 10 naming its snapshot, and the
/// process shuts down without a tokio panic ("A Tokio 1.x context was found, but it is
/// being shutdown" from a verify reader that outlived the runtime).
mod item_4 {
    use super::*;
    use std::sync::Arc;
    use support::faultproxy::{Fault, FaultConfig, FaultProxy, Filter, Seen};

    fn upstream(ep: &str) -> std::net::SocketAddr {
        ep.trim_start_matches("http://")
            .split('/')
            .next()
            .expect("host")
            .parse()
            .expect("addr")
    }

    async fn run(args: Vec<String>) -> Output {
        tokio::task::spawn_blocking(move || bin().args(&args).output().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_post_commit_verify_exits_10_and_shuts_down_cleanly() {
        let Some(ep) = support::azurite() else { return };
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        common::sample_tree(&src);
        for i in 0..6u64 {
            std::fs::write(src.join(format!("n{i}.bin")), common::noise(400_000, i + 7)).unwrap();
        }
        let proxy = FaultProxy::start(upstream(&ep), FaultConfig::none())
            .await
            .expect("proxy");
        let container = support::unique_container("unverified");
        let extra = "[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\ncount = 4\n[verify]\nmode = \"full\"\n[retry]\nattempts = 4\ninitial_backoff = \"10ms\"\nmax_backoff = \"2s\"\nbudget = \"30s\"\n";
        let pf = common::write_pipeline(
            t.path(),
            "unv",
            &src,
            &format!("{}/{container}", proxy.endpoint("devstoreaccount1")),
            extra,
        );
        let pfs = pf.to_str().unwrap().to_string();
        // Reads of pack data fail: refused outright (403) or busy (503, Retry-After 1 s)
        // on every try, so while one pack's verification has failed others are still
        // retrying. Properties and block lists (packing, metadata checks) pass.
        let pack_reads: Filter = Arc::new(|s: &Seen| {
            s.method == "GET" && s.path.contains("/packs/") && s.comp.is_none()
        });
        proxy.set_filter(Some(pack_reads));
        proxy.set(FaultConfig {
            rate: 1.0,
            seed: 3,
            kinds: vec![Fault::Forbidden403, Fault::Busy503],
            stall: std::time::Duration::from_secs(1),
        });
        let backup = |extra: &[&str]| {
            let mut a: Vec<String> = ["--json", "backup", &pfs, "--run-id", "run-unv"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let o = run(backup(&[])).await;
        let stderr = text(&o.stderr);
        assert!(
            proxy.stats.seen().iter().any(|s| s.faulted),
            "no pack read was faulted"
        );
        assert_eq!(o.status.code(), Some(10), "{stderr}");
        let r = json(&o);
        assert_eq!(r["status"], "committed_unverified", "{r}");
        let snap = r["snapshot"].as_str().expect("snapshot named").to_string();
        assert!(r["verify"].is_null(), "{r}");
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("verification could not complete")),
            "{r}"
        );
        // Item 4: no panic at shutdown.
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("Tokio"), "{stderr}");

        // The store recovers: the rerun verifies the same snapshot and exits 0.
        proxy.set(FaultConfig::none());
        let o = run(backup(&[])).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let r = json(&o);
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["snapshot"], snap.as_str(), "{r}");
        assert_eq!(r["verify"]["mode"], "full", "{r}");
        assert!(!text(&o.stderr).contains("panicked"));
    }
}

/// Issue 10 item 5: on Azure, a refused run named the previous, finished run instead of
/// the live holder when it came between the live holder taking the lease and recording
/// its name (seconds, when that write is retried).
mod item_5 {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use blobpipe::manifest::layout::Layout;
    use blobpipe::manifest::lock::RunLock;
    use blobpipe::pipeline::BackupOptions;
    use blobpipe::support::cancel::Cancel;
    use blobpipe::ErrorKind;
    use support::faultproxy::{Fault, FaultConfig, FaultProxy, Filter, Seen};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_run_names_the_live_holder_not_the_finished_one() {
        let Some(ep) = support::azurite() else { return };
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.txt"), b"a").unwrap();
        let container = support::unique_container("holder");
        let upstream: std::net::SocketAddr = ep
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let proxy = FaultProxy::start(upstream, FaultConfig::none())
            .await
            .expect("proxy");
        let direct = t.path().join("direct");
        let proxied = t.path().join("proxied");
        std::fs::create_dir_all(&direct).unwrap();
        std::fs::create_dir_all(&proxied).unwrap();
        let pd = common::write_pipeline(&direct, "lk", &src, &format!("{ep}/{container}"), "");
        let pp = common::write_pipeline(
            &proxied,
            "lk",
            &src,
            &format!("{}/{container}", proxy.endpoint("devstoreaccount1")),
            "",
        );
        let (p, s) = common::open(&pd).await;
        let (_, ps) = common::open(&pp).await;
        let layout = Layout::new(&p.target.prefix);

        // Run A finishes and releases the lock.
        let a = blobpipe::pipeline::backup(
            &p,
            s.clone(),
            BackupOptions {
                run_id: Some("run-a-finished".into()),
                ..Default::default()
            },
        )
        .await
        .expect("run A");
        assert!(a.snapshot.is_some());

        // Run B takes the lock through the proxy, which stalls B's first write of its
        // name (the second plain PUT of the lock blob; the first is the create-only PUT).
        let lock_puts = Arc::new(AtomicUsize::new(0));
        let n = lock_puts.clone();
        let stall_name: Filter = Arc::new(move |x: &Seen| {
            x.method == "PUT"
                && x.path.ends_with("/lock")
                && x.comp.is_none()
                && n.fetch_add(1, Ordering::SeqCst) == 1
        });
        proxy.set_filter(Some(stall_name));
        proxy.set(FaultConfig {
            rate: 1.0,
            seed: 1,
            kinds: vec![Fault::Stall],
            stall: Duration::from_secs(2),
        });
        let b = tokio::spawn({
            let (ps, layout) = (ps.clone(), layout.clone());
            async move {
                RunLock::acquire(
                    ps,
                    &layout,
                    "run-b-live",
                    Duration::from_secs(15),
                    false,
                    &Cancel::new(),
                )
                .await
            }
        });
        // Wait until B holds the lease and its name write is stalled.
        while !proxy.stats.seen().iter().any(|x| x.faulted) {
            assert!(
                !b.is_finished(),
                "B ended before its name write was stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // Run C is refused and must name B.
        let e = blobpipe::pipeline::backup(
            &p,
            s.clone(),
            BackupOptions {
                run_id: Some("run-c".into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("B holds the lock");
        assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("run-b-live"), "{msg}");
        assert!(!msg.contains("run-a-finished"), "{msg}");

        let lock = b.await.unwrap().expect("B took the lock");
        lock.release().await;
        // Released: the next run starts at once.
        let d = blobpipe::pipeline::backup(&p, s.clone(), BackupOptions::default())
            .await
            .expect("lock free");
        assert!(d.snapshot.is_some());
    }
}

/// Issue 10 item 12: a source root that exists but cannot be listed (mode 000, as a
/// non-root user) committed an empty snapshot with exit 4 and the problem path "". It
/// is a failed run (exit 1), like a missing root.
mod item_12 {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn can_run_as_nobody() -> bool {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn unlistable_root_fails_the_run() {
        if !can_run_as_nobody() {
            eprintln!("SKIPPED: cannot run as nobody (setpriv --reuid=65534 failed)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("secret.txt"), b"x").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o000)).unwrap();
        let store = t.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
        let pf = common::write_pipeline(
            t.path(),
            "noperm",
            &src,
            &format!("file://{}", store.display()),
            "",
        );
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_blobpipe"))
            .args(["--json", "backup"])
            .arg(&pf)
            .env("RUST_LOG", "warn")
            .env("HOME", t.path())
            .output()
            .unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{stderr}\n{}", text(&o.stdout));
        assert!(stderr.contains("cannot list source root"), "{stderr}");
        assert!(stderr.contains(&src.display().to_string()), "{stderr}");
        let r = json(&o);
        assert_eq!(r["exit_code"], 1, "{r}");
        assert_eq!(r["kind"], "Source", "{r}");
        assert!(
            files_in(&store.join("backups/noperm/snapshots")).is_empty(),
            "a snapshot was committed"
        );
    }

    #[test]
    fn missing_root_fails_the_run_with_exit_1() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let src = t.path().join("does-not-exist");
        let pf = common::write_pipeline(
            t.path(),
            "missing",
            &src,
            &format!("file://{}", store.display()),
            "",
        );
        let o = bin().args(["--json", "backup"]).arg(&pf).output().unwrap();
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("cannot read source root"), "{stderr}");
        assert_eq!(json(&o)["exit_code"], 1);
        assert!(files_in(&store.join("backups/missing/snapshots")).is_empty());
    }
}
