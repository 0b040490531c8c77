//! The engine end to end against Azurite: backup → verify → restore through the Azure
//! store, directly and through a proxy faulting 10% of requests (the run still succeeds,
//! verify passes, the restore is byte-identical and the run summary counts the retries).
//!
//! Needs `AZURITE_BLOB_ENDPOINT` (see `tests/support`).

mod common;
mod support;

use blobpipe::catalog;
use blobpipe::layout::Layout;
use blobpipe::pipeline::RunStatus;
use blobpipe::restore::{restore, RestoreOptions};
use common::*;
use support::faultproxy::{Fault, FaultConfig, FaultProxy};

const SMALL: &str = "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\ncount = 3\n[verify]\nmode = \"full\"\n[retry]\nattempts = 10\ninitial_backoff = \"10ms\"\nmax_backoff = \"200ms\"\n";

async fn backup_verify_restore(blob_endpoint: &str, container: &str) -> u64 {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    sample_tree(&src);
    let url = format!("{blob_endpoint}/{container}");
    let pf = write_pipeline(t.path(), "az", &src, &url, SMALL);
    let (p, s) = open(&pf).await;
    assert!(s.describe().starts_with("azure "), "{}", s.describe());
    let r = backup(&p, &s).await;
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    let v = r.verify.as_ref().expect("verified");
    assert!(v.ok(), "{v:?}");
    let layout = Layout::new(&p.target.prefix);
    let id = catalog::resolve(&*s, &layout, "latest")
        .await
        .expect("latest");
    assert_eq!(Some(id.clone()), r.snapshot);
    let m = catalog::load(&*s, &layout, &id).await.expect("manifest");
    let out = t.path().join("out");
    let rr = restore(
        &s,
        &layout,
        &m,
        &RestoreOptions {
            to: out.clone(),
            paths: vec![],
            overwrite: false,
            concurrency: 4,
        },
        None,
    )
    .await
    .expect("restore");
    assert_eq!(rr.files, r.totals.files);
    assert_same_tree(&src, &out);
    r.retries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_verify_restore_on_azurite() {
    let Some(ep) = support::azurite() else { return };
    backup_verify_restore(&ep, &support::unique_container("e2e")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_verify_restore_through_ten_percent_faults() {
    let Some(ep) = support::azurite() else { return };
    let upstream = ep
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host")
        .parse()
        .expect("addr");
    // Stalls are left out: the engine's store uses the default 60 s read timeout.
    let cfg = FaultConfig {
        rate: 0.10,
        seed: 42,
        kinds: vec![
            Fault::Busy503,
            Fault::Internal500,
            Fault::Throttle429,
            Fault::ResetAfterForward,
            Fault::Truncate,
        ],
        stall: std::time::Duration::from_secs(1),
    };
    let proxy = FaultProxy::start(upstream, cfg).await.expect("proxy");
    let retries = backup_verify_restore(
        &proxy.endpoint("devstoreaccount1"),
        &support::unique_container("e2ef"),
    )
    .await;
    let faulted = proxy
        .stats
        .faulted
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(faulted > 0, "nothing injected");
    assert!(
        retries > 0,
        "the run summary counted no retries ({faulted} faults)"
    );
}
