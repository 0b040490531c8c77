//! `blobpipe copy` to a second store: the source on Azurite (read through a proxy), the
//! destination a local store. The first copy is killed with SIGKILL while a block read is
//! held at the proxy; the rerun sends only what is missing (blocks already staged are
//! found), commits the manifest last, and `verify --full` passes at the destination;
//! `check` there judges the copy's freshness (stale until verified), and a restore from
//! the destination alone equals the source tree.
//!
//! Needs `AZURITE_BLOB_ENDPOINT` (see `tests/support`).

mod common;
mod support;

use std::process::Command;
use std::time::Duration;

use common::*;
use support::faultproxy::{Fault, FaultConfig, FaultProxy, Seen};

fn bp(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blobpipe"));
    c.args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_is_killed_resumes_and_verifies_at_the_destination() {
    let Some(ep) = support::azurite() else { return };
    let upstream: std::net::SocketAddr = url::Url::parse(&ep)
        .expect("endpoint")
        .socket_addrs(|| None)
        .expect("addr")[0];
    let proxy = FaultProxy::start(upstream, FaultConfig::none())
        .await
        .expect("proxy");
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::write(src.join("big.bin"), noise(3 << 20, 5)).expect("write");
    std::fs::write(src.join("small.txt"), b"small\n").expect("write");
    let container = support::unique_container("copy");
    let settings = "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"256KiB\"\npack_size = \"1MiB\"\n[verify]\nmode = \"full\"\n";
    // The source pipeline writes straight to Azurite; copy reads it through the proxy
    // (same pipeline, other endpoint).
    let extra = format!("container = \"{container}\"\n{settings}");
    let via = write_pipeline(
        t.path(),
        "prim",
        &src,
        &support::azurite_connection_string(&proxy.endpoint("devstoreaccount1")),
        &extra,
    );
    let a_proxy = t.path().join("prim-via-proxy.toml");
    std::fs::rename(&via, &a_proxy).expect("rename");
    let a = write_pipeline(
        t.path(),
        "prim",
        &src,
        &support::azurite_connection_string(&ep),
        &extra,
    );
    let dr = t.path().join("dr-store");
    let b = t.path().join("dr.toml");
    std::fs::write(
        &b,
        format!(
            "name = \"prim\"\n\n[source]\ntype = \"fs\"\nroot = \"{}\"\n\n[target]\nurl = \"file://{}\"\n\n[freshness]\nrpo = \"1h\"\n{settings}",
            src.display(),
            dr.display()
        ),
    )
    .expect("write");
    let s = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let o = bp(t.path(), &["-q", "backup", &s(&a)])
        .output()
        .expect("backup");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Hold the 4th block read of a pack at the proxy, then SIGKILL the copy.
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n2 = n.clone();
    proxy.set(FaultConfig {
        rate: 1.0,
        kinds: vec![Fault::Stall],
        stall: Duration::from_secs(120),
        ..FaultConfig::none()
    });
    proxy.set_filter(Some(std::sync::Arc::new(move |x: &Seen| {
        x.method == "GET"
            && x.comp.is_none()
            && x.path.contains("/packs/")
            && n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 3
    })));
    let mut child = bp(t.path(), &["-q", "copy", &s(&a_proxy), &s(&b)])
        .spawn()
        .expect("copy");
    let mut waited = 0;
    while n.load(std::sync::atomic::Ordering::SeqCst) < 4 {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "copy ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
        assert!(waited < 2400, "the copy never reached the 4th block");
    }
    std::thread::sleep(Duration::from_millis(300));
    // SIGKILL: no cleanup of any kind.
    child.kill().expect("kill");
    let _ = child.wait();
    // No snapshot at the destination yet.
    let o = bp(t.path(), &["-q", "--json", "snapshots", &s(&b)])
        .output()
        .expect("list");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");

    // Resume without faults.
    proxy.set(FaultConfig::none());
    proxy.set_filter(None);
    let o = bp(t.path(), &["-q", "--json", "copy", &s(&a_proxy), &s(&b)])
        .output()
        .expect("copy");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(r["copied"].as_array().map(Vec::len), Some(1), "{r}");
    // A local destination cannot stage from a URL: streamed, and the report says why.
    assert_eq!(r["route"], "streamed", "{r}");
    assert!(r["streamed_because"].as_str().is_some(), "{r}");
    assert!(
        r["blocks_reused"].as_u64().unwrap_or(0) + r["packs_present"].as_u64().unwrap_or(0) >= 1,
        "the rerun found nothing of the killed copy: {r}"
    );
    // Freshness at the destination counts verified copies: stale (exit 9) until the copy
    // is verified there, then within the RPO.
    let o = bp(t.path(), &["-q", "check", &s(&b)])
        .output()
        .expect("check");
    assert_eq!(
        o.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Full verification at the destination, and a third copy has nothing to do.
    let o = bp(t.path(), &["-q", "verify", &s(&b), "latest", "--full"])
        .output()
        .expect("verify");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = bp(t.path(), &["-q", "check", &s(&b)])
        .output()
        .expect("check");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = bp(t.path(), &["-q", "--json", "copy", &s(&a_proxy), &s(&b)])
        .output()
        .expect("copy");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(r["present"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["blocks_sent"], 0, "{r}");
    // And it restores from the destination alone.
    let out = t.path().join("out");
    let o = bp(t.path(), &["-q", "restore", &s(&b), "--to", &s(&out)])
        .output()
        .expect("restore");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same_tree(&src, &out);
}

/// A pipeline file `file` named `prim` (same name, so the same layout) backing up `src`
/// into `container` of the Azurite account at `endpoint`.
fn azurite_pipeline(
    dir: &std::path::Path,
    file: &str,
    src: &std::path::Path,
    endpoint: &str,
    container: &str,
) -> std::path::PathBuf {
    let p = dir.join(file);
    std::fs::write(
        &p,
        format!(
            "name = \"prim\"\n\n[source]\ntype = \"fs\"\nroot = \"{}\"\n\n[target]\nurl = \"{}\"\ncontainer = \"{container}\"\n\n[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"256KiB\"\npack_size = \"1MiB\"\n[verify]\nmode = \"full\"\n[retry]\nattempts = 3\ninitial_backoff = \"10ms\"\nmax_backoff = \"50ms\"\n",
            src.display(),
            support::azurite_connection_string(endpoint)
        ),
    )
    .expect("write");
    p
}

fn run_json(dir: &std::path::Path, args: &[&str], code: i32) -> serde_json::Value {
    let o = bp(dir, args).output().expect("run");
    assert_eq!(
        o.status.code(),
        Some(code),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

/// Between two Azure containers, `copy` stages every block with Put Block From URL (a
/// loopback stand-in answers it, see above): the proxy both stores are reached through
/// sees no pack byte, and the destination verifies in full. The run record and verify
/// report come along (the copied report does not make the copy verified). Where the
/// service fails the operation (Azurite itself: 500), the copy streams instead and says
/// why; a damaged source block stops a server-side copy (exit 3), committing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_between_azure_containers_is_server_side_or_says_why_not() {
    let Some(ep) = support::azurite() else { return };
    let upstream: std::net::SocketAddr = url::Url::parse(&ep)
        .expect("endpoint")
        .socket_addrs(|| None)
        .expect("addr")[0];
    let proxy = FaultProxy::start(upstream, FaultConfig::none())
        .await
        .expect("proxy");
    let via = proxy.endpoint("devstoreaccount1");
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::write(src.join("big.bin"), noise(3 << 20, 9)).expect("write");
    std::fs::write(src.join("small.txt"), b"small\n").expect("write");
    let (ca, cb, cc) = (
        support::unique_container("cpa"),
        support::unique_container("cpb"),
        support::unique_container("cpc"),
    );
    let a = azurite_pipeline(t.path(), "a.toml", &src, &ep, &ca);
    let a_via = azurite_pipeline(t.path(), "a-via.toml", &src, &via, &ca);
    let b_via = azurite_pipeline(t.path(), "b-via.toml", &src, &via, &cb);
    let c_via = azurite_pipeline(t.path(), "c-via.toml", &src, &via, &cc);
    let s = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let o = bp(t.path(), &["-q", "backup", &s(&a)])
        .output()
        .expect("backup");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Server-side: source and destination through the proxy, which answers Put Block
    // From URL.
    proxy.set_responder(Some(support::standin::put_block_from_url(upstream)));
    proxy.stats.reset_seen();
    let r = run_json(
        t.path(),
        &["-q", "--json", "copy", &s(&a_via), &s(&b_via)],
        0,
    );
    assert_eq!(r["route"], "server-side", "{r}");
    assert_eq!(r["blocks_sent"], 0, "{r}");
    let server_bytes = r["bytes_server_side"].as_u64().expect("bytes");
    assert!(server_bytes >= 3 << 20, "{r}");
    assert!(
        r["records"].as_u64().unwrap_or(0) >= 2,
        "run record + verify report: {r}"
    );
    let through = proxy
        .stats
        .bytes_up
        .load(std::sync::atomic::Ordering::Relaxed)
        + proxy
            .stats
            .bytes_down
            .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        through * 8 < server_bytes,
        "{through} bytes went through the proxy for {server_bytes} bytes of packs"
    );
    let pack_gets = proxy
        .stats
        .seen()
        .iter()
        .filter(|x| x.method == "GET" && x.comp.is_none() && x.path.contains("/packs/"))
        .count();
    assert_eq!(pack_gets, 0, "pack bytes were read by blobpipe");
    // History came along: the destination's status names the primary's run; the copied
    // verify report does not count as verification there.
    let st = run_json(t.path(), &["-q", "--json", "status", &s(&b_via)], 0);
    let st = &st["pipelines"][0];
    assert_eq!(st["last_run"]["snapshot"], r["copied"][0], "{st}");
    assert!(st["newest_verified"].is_null(), "{st}");
    run_json(
        t.path(),
        &["-q", "verify", &s(&b_via), "latest", "--full"],
        0,
    );
    // A report written at the primary after the copy comes over with the next copy.
    run_json(t.path(), &["-q", "verify", &s(&a), "latest"], 0);
    let again = run_json(
        t.path(),
        &["-q", "--json", "copy", &s(&a_via), &s(&b_via)],
        0,
    );
    assert_eq!(
        again["present"].as_array().map(Vec::len),
        Some(1),
        "{again}"
    );
    assert_eq!(again["records"], 1, "{again}");
    assert_eq!(again["route"], "none", "{again}");
    let out = t.path().join("out-b");
    run_json(
        t.path(),
        &["-q", "restore", &s(&b_via), "--to", &s(&out)],
        0,
    );
    assert_same_tree(&src, &out);

    // Streamed: Azurite itself fails Put Block From URL under an account SAS (500); the
    // copy streams and says why.
    proxy.set_responder(None);
    proxy.stats.reset_seen();
    let r = run_json(
        t.path(),
        &["-q", "--json", "copy", &s(&a_via), &s(&c_via)],
        0,
    );
    assert_eq!(r["route"], "streamed", "{r}");
    // The same proxy does count streamed packs: each byte passes twice (read, staged).
    let through = proxy
        .stats
        .bytes_up
        .load(std::sync::atomic::Ordering::Relaxed)
        + proxy
            .stats
            .bytes_down
            .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        through >= 2 * r["bytes_sent"].as_u64().expect("bytes"),
        "{through}: {r}"
    );
    assert_eq!(r["blocks_server_side"], 0, "{r}");
    assert!(r["blocks_sent"].as_u64().unwrap_or(0) > 0, "{r}");
    let why = r["streamed_because"].as_str().expect("a reason");
    assert!(why.contains("HTTP 500"), "{why}");
    assert!(!why.contains("sig="), "a SAS leaked: {why}");
    run_json(
        t.path(),
        &["-q", "verify", &s(&c_via), "latest", "--full"],
        0,
    );

    // A source block that no longer matches its recorded MD5: the service refuses it and
    // the copy stops (exit 3), committing nothing at the destination.
    let (_, store) = common::open(&a).await;
    let packs: Vec<_> = blobpipe::store::list_all(&*store, "")
        .await
        .expect("list")
        .into_iter()
        .filter(|i| i.name.contains("packs/"))
        .collect();
    let big = packs.iter().max_by_key(|i| i.size).expect("a pack");
    let mut data = store.get(&big.name, None).await.expect("get").to_vec();
    data[100] ^= 0xff;
    store
        .put(&big.name, data.into(), false)
        .await
        .expect("damage");
    let d_via = azurite_pipeline(
        t.path(),
        "d-via.toml",
        &src,
        &via,
        &support::unique_container("cpd"),
    );
    proxy.set_responder(Some(support::standin::put_block_from_url(upstream)));
    let o = bp(t.path(), &["-q", "copy", &s(&a_via), &s(&d_via)])
        .output()
        .expect("copy");
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = run_json(t.path(), &["-q", "--json", "snapshots", &s(&d_via)], 0);
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
}
