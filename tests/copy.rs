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
