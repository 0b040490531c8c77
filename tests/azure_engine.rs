//! The engine end to end against Azurite: backup → verify → restore through the Azure
//! store, directly and through a proxy faulting 10% of requests (the run still succeeds,
//! verify passes, the restore is byte-identical and the run summary counts the retries);
//! block-level resume after failed pack commits (no block uploaded twice, counted at the
//! proxy); a permanently failing service (clean `Store` failure, no snapshot, the earlier
//! one intact); restore of one path reading only its frames; overwrite refusal; a
//! corrupted pack named by full verify; the run lock (fail fast naming the holder, take
//! over an abandoned lease after its ttl with `wait_lock`); a chunked big file stored,
//! changed, verified and restored through ranged reads.
//!
//! Needs `AZURITE_BLOB_ENDPOINT` (see `tests/support`).

mod common;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobpipe::manifest::catalog;
use blobpipe::manifest::layout::Layout;
use blobpipe::manifest::records::RunStatus;
use blobpipe::pipeline::{BackupOptions, Pipeline};
use blobpipe::restore::{restore, RestoreOptions};
use blobpipe::store::{CommitOptions, Store};
use blobpipe::verify::config::VerifyMode;
use blobpipe::verify::verify;
use blobpipe::ErrorKind;
use common::*;
use support::faultproxy::{Fault, FaultConfig, FaultProxy, Filter, Seen};

const SMALL: &str = "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\nsize = \"64KiB\"\n[verify]\nmode = \"full\"\n[retry]\nattempts = 10\ninitial_backoff = \"10ms\"\nmax_backoff = \"200ms\"\n";

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

/// `host:port` of an Azurite blob endpoint (the proxy's upstream).
fn upstream(ep: &str) -> std::net::SocketAddr {
    ep.trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host")
        .parse()
        .expect("addr")
}

/// A pipeline `name` in `dir` backing up `src` into `<endpoint>/<container>`.
async fn az(
    dir: &Path,
    name: &str,
    src: &Path,
    endpoint: &str,
    container: &str,
    extra: &str,
) -> (Pipeline, Store) {
    std::fs::create_dir_all(dir).expect("dir");
    let pf = write_pipeline(dir, name, src, &format!("{endpoint}/{container}"), extra);
    open(&pf).await
}

fn restore_opts(to: std::path::PathBuf) -> RestoreOptions {
    RestoreOptions {
        to,
        paths: vec![],
        overwrite: false,
        concurrency: 2,
    }
}

/// Put Block requests that reached the service, per (blob path, block id).
fn put_blocks(seen: &[Seen]) -> HashMap<(String, String), usize> {
    let mut m = HashMap::new();
    for s in seen.iter().filter(|s| s.is_put_block() && !s.faulted) {
        *m.entry((s.path.clone(), s.blockid.clone().unwrap_or_default()))
            .or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_reuses_blocks_staged_before_failed_commits() {
    let Some(ep) = support::azurite() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    for i in 0..4u64 {
        std::fs::write(src.join(format!("f{i}.bin")), noise(700_000, i + 1)).expect("write");
    }
    let proxy = FaultProxy::start(upstream(&ep), FaultConfig::none())
        .await
        .expect("proxy");
    let container = support::unique_container("resume");
    let extra = format!(
        "{}[retry]\nattempts = 2\ninitial_backoff = \"10ms\"\nmax_backoff = \"50ms\"\n",
        SMALL.replace(
            "[retry]\nattempts = 10\ninitial_backoff = \"10ms\"\nmax_backoff = \"200ms\"\n",
            ""
        )
    );
    let (p, s) = az(
        t.path(),
        "res",
        &src,
        &proxy.endpoint("devstoreaccount1"),
        &container,
        &extra,
    )
    .await;
    // Phase 1: every Put Block List of a pack fails (500), everything else passes.
    let only_pack_commits: Filter =
        Arc::new(|s: &Seen| s.is_put_block_list() && s.path.contains("/packs/"));
    proxy.set_filter(Some(only_pack_commits));
    proxy.set(FaultConfig {
        rate: 1.0,
        seed: 3,
        kinds: vec![Fault::Internal500],
        stall: Duration::from_secs(1),
    });
    let run = BackupOptions {
        run_id: Some("exec-7".into()),
        ..Default::default()
    };
    let e = blobpipe::pipeline::backup(&p, s.clone(), run.clone())
        .await
        .expect_err("pack commits fail");
    assert_eq!(e.kind(), ErrorKind::Store, "{e}");
    let layout = Layout::new(&p.target.prefix);
    assert!(
        catalog::snapshot_ids(&*s, &layout)
            .await
            .expect("list")
            .is_empty(),
        "a failed run left a snapshot"
    );
    let first = proxy.stats.seen();
    let staged_first: usize = put_blocks(&first).values().sum();
    assert!(staged_first > 10, "only {staged_first} blocks staged");
    assert!(
        first.iter().any(|x| x.is_put_block_list() && x.faulted),
        "no commit was faulted"
    );

    // Phase 2: the service is healthy again; rerun the same run id.
    proxy.set_filter(None);
    proxy.set(FaultConfig::none());
    let r = blobpipe::pipeline::backup(&p, s.clone(), run)
        .await
        .expect("rerun");
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert!(r.blocks_reused > 0, "{r:?}");
    let all = proxy.stats.seen();
    let per_block = put_blocks(&all);
    let twice: Vec<_> = per_block.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "blocks uploaded twice: {twice:?}");
    let staged_second = per_block.values().sum::<usize>() - staged_first;
    eprintln!(
        "first attempt staged {staged_first} blocks; rerun staged {staged_second}, reused {}",
        r.blocks_reused
    );
    assert_eq!(staged_second as u64, r.blocks_staged, "{r:?}");
    let v = r.verify.as_ref().expect("verified");
    assert!(v.ok(), "{:?}", v.mismatches);
    let m = catalog::load(&*s, &layout, r.snapshot.as_deref().expect("snapshot"))
        .await
        .expect("manifest");
    let out = t.path().join("out");
    restore(&s, &layout, &m, &restore_opts(out.clone()), None)
        .await
        .expect("restore");
    assert_same_tree(&src, &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanently_failing_service_fails_cleanly_and_keeps_earlier_snapshots() {
    let Some(ep) = support::azurite() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    sample_tree(&src);
    let container = support::unique_container("down");
    let extra = format!(
        "{}[retry]\nattempts = 3\ninitial_backoff = \"10ms\"\nmax_backoff = \"50ms\"\nbudget = \"10s\"\n",
        SMALL.replace("[retry]\nattempts = 10\ninitial_backoff = \"10ms\"\nmax_backoff = \"200ms\"\n", "")
    );
    // A first good snapshot, straight to Azurite.
    let (p, s) = az(
        &t.path().join("direct"),
        "down",
        &src,
        &ep,
        &container,
        &extra,
    )
    .await;
    let first = backup(&p, &s).await;
    assert_eq!(first.status, RunStatus::Ok, "{first:?}");
    let first_id = first.snapshot.clone().expect("snapshot");
    let layout = Layout::new(&p.target.prefix);

    // The same pipeline through a proxy failing every request except those on the lock
    // blob (so the run gets past its lock and fails in the middle of its work).
    let proxy = FaultProxy::start(upstream(&ep), FaultConfig::none())
        .await
        .expect("proxy");
    let (pp, ps) = az(
        &t.path().join("proxied"),
        "down",
        &src,
        &proxy.endpoint("devstoreaccount1"),
        &container,
        &extra,
    )
    .await;
    // Two ways down: every request but the lock's fails (the run dies planning), and
    // only pack and part-record writes fail (it dies mid-upload, with blocks in flight).
    let not_lock: Filter = Arc::new(|s: &Seen| !s.path.ends_with("/lock"));
    let writes: Filter = Arc::new(|s: &Seen| {
        s.method == "PUT"
            && (s.path.contains("/packs/")
                || s.path.contains("/parts/")
                || s.path.contains("/segments/"))
    });
    for (what, filter) in [("everything", not_lock), ("pack and part writes", writes)] {
        proxy.stats.faulted.store(0, Ordering::Relaxed);
        let retries_before = ps.retries();
        proxy.set_filter(Some(filter));
        proxy.set(FaultConfig {
            rate: 1.0,
            seed: 9,
            kinds: vec![Fault::Busy503, Fault::Internal500, Fault::ResetAfterForward],
            stall: Duration::from_secs(1),
        });
        let e = blobpipe::pipeline::backup(&pp, ps.clone(), BackupOptions::default())
            .await
            .expect_err("the service is down");
        assert_eq!(e.kind(), ErrorKind::Store, "{what}: {e}");
        let faulted = proxy.stats.faulted.load(Ordering::Relaxed);
        let retries = ps.retries() - retries_before;
        eprintln!("{what} failing: {faulted} faulted requests, {retries} store retries: {e}");
        // Bounded by the retry budget (3 attempts per call, 3 per partition), not an
        // endless loop.
        assert!(
            (1..=150).contains(&faulted),
            "{what}: {faulted} faulted requests for a failing run"
        );
        assert!(retries > 0, "{what}: the store counted no retries");
        assert_eq!(
            catalog::snapshot_ids(&*s, &layout).await.expect("list"),
            vec![first_id.clone()],
            "{what}: a failed run left a snapshot"
        );
    }
    // The lock was released on the way out: a healthy run can start at once.
    proxy.set_filter(None);
    proxy.set(FaultConfig::none());
    // Nothing visible; the earlier snapshot verifies in full and restores.
    assert_eq!(
        catalog::snapshot_ids(&*s, &layout).await.expect("list"),
        vec![first_id.clone()]
    );
    let m = catalog::load(&*s, &layout, &first_id).await.expect("load");
    let v = verify(&s, &layout, &m, VerifyMode::Full, Some(1), &p.upload, None)
        .await
        .expect("verify");
    assert!(v.ok(), "{:?}", v.mismatches);
    let out = t.path().join("out");
    restore(&s, &layout, &m, &restore_opts(out.clone()), None)
        .await
        .expect("restore");
    assert_same_tree(&src, &out);
    let again = blobpipe::pipeline::backup(&pp, ps.clone(), BackupOptions::default())
        .await
        .expect("lock was released");
    assert_eq!(again.status, RunStatus::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_one_path_overwrite_refusal_and_named_corruption() {
    let Some(ep) = support::azurite() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    sample_tree(&src);
    let container = support::unique_container("sel");
    let (p, s) = az(
        &t.path().join("direct"),
        "sel",
        &src,
        &ep,
        &container,
        SMALL,
    )
    .await;
    let r = backup(&p, &s).await;
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    let layout = Layout::new(&p.target.prefix);
    let m = catalog::load(&*s, &layout, r.snapshot.as_deref().expect("snapshot"))
        .await
        .expect("manifest");
    let stored: u64 = m.packs.iter().map(|p| p.size).sum();

    // One path, read through a counting proxy: only its frames cross the wire.
    let proxy = FaultProxy::start(upstream(&ep), FaultConfig::none())
        .await
        .expect("proxy");
    let (_, ps) = az(
        &t.path().join("proxied"),
        "sel",
        &src,
        &proxy.endpoint("devstoreaccount1"),
        &container,
        SMALL,
    )
    .await;
    proxy.stats.reset_seen();
    let one = t.path().join("one");
    let mut o = restore_opts(one.clone());
    o.paths = vec!["docs/guide/intro.md".into()];
    let rr = restore(&ps, &layout, &m, &o, None)
        .await
        .expect("restore one");
    assert_eq!(rr.files, 1);
    assert_eq!(
        std::fs::read(one.join("docs/guide/intro.md")).expect("restored"),
        std::fs::read(src.join("docs/guide/intro.md")).expect("source")
    );
    assert!(!one.join("README.md").exists());
    let wire = proxy.stats.bytes_down.load(Ordering::Relaxed);
    let gets = proxy
        .stats
        .seen()
        .iter()
        .filter(|x| x.method == "GET")
        .count();
    assert!(
        rr.bytes_fetched * 10 < stored && wire * 10 < stored,
        "fetched {} (wire {wire}) of {stored} stored",
        rr.bytes_fetched
    );
    eprintln!(
        "one path: fetched {} bytes ({wire} on the wire, {gets} GETs) of {stored} stored",
        rr.bytes_fetched
    );
    assert!(gets <= 2, "{gets} GETs for one small file");

    // Refuses to overwrite unless told.
    let o2 = t.path().join("o2");
    std::fs::create_dir_all(&o2).expect("dir");
    std::fs::write(o2.join("README.md"), "mine").expect("write");
    let e = restore(&s, &layout, &m, &restore_opts(o2.clone()), None)
        .await
        .expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("README.md"), "{e}");
    assert_eq!(std::fs::read(o2.join("README.md")).expect("kept"), b"mine");
    assert!(!o2.join("docs").exists(), "nothing written on refusal");
    let mut ow = restore_opts(o2.clone());
    ow.overwrite = true;
    restore(&s, &layout, &m, &ow, None)
        .await
        .expect("overwrite");
    assert_same_tree(&src, &o2);

    // Corrupt one block of the pack holding intro.md: re-stage every block of the pack
    // under its own id (one with a flipped byte) and recommit the same list, keeping the
    // blob's recorded Content-MD5, tier and metadata. Only re-reading the data can tell.
    let e = m
        .entries
        .iter()
        .find(|e| e.path.0 == b"docs/guide/intro.md")
        .expect("entry");
    let pack = m.pack(e.pack.as_deref().expect("packed")).expect("pack");
    let blob = layout.full(&pack.blob);
    let props = s.head(&blob).await.expect("head").expect("exists");
    let data = s.get(&blob, None).await.expect("get").to_vec();
    let bi = pack.blocks.len() - 1;
    let mut at = 0usize;
    for (i, b) in pack.blocks.iter().enumerate() {
        let mut block = data[at..at + b.size as usize].to_vec();
        if i == bi {
            block[3] ^= 0x5a;
        }
        let md5 = blobpipe::store::md5(&block);
        s.stage_block(&blob, &b.id, block.into(), md5)
            .await
            .expect("restage");
        at += b.size as usize;
    }
    let ids: Vec<String> = pack.blocks.iter().map(|b| b.id.clone()).collect();
    s.commit_blocks(
        &blob,
        &ids,
        &CommitOptions {
            tier: props.tier,
            content_md5: props.content_md5,
            metadata: props.metadata.clone(),
            tags: Default::default(),
            create_only: false,
        },
    )
    .await
    .expect("recommit");
    let after = s.head(&blob).await.expect("head").expect("exists");
    assert_eq!(after.size, props.size);
    assert_eq!(after.content_md5, props.content_md5);

    let md = verify(&s, &layout, &m, VerifyMode::Metadata, None, &p.upload, None)
        .await
        .expect("verify metadata");
    assert!(
        md.ok(),
        "metadata cannot see a flipped byte: {:?}",
        md.mismatches
    );
    let full = verify(&s, &layout, &m, VerifyMode::Full, Some(1), &p.upload, None)
        .await
        .expect("verify full");
    assert!(!full.ok());
    let bm = full
        .mismatches
        .iter()
        .find(|x| x.check == "block-md5")
        .unwrap_or_else(|| panic!("no block mismatch: {:?}", full.mismatches));
    assert_eq!(bm.pack, pack.id);
    assert_eq!(bm.block, Some(bi));
    assert_eq!(bm.block_id.as_deref(), Some(pack.blocks[bi].id.as_str()));
    assert!(
        full.mismatches
            .iter()
            .all(|x| x.pack == pack.id && x.block.is_none_or(|b| b == bi)),
        "only that pack and block: {:?}",
        full.mismatches
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_lock_refuses_a_second_run_and_an_abandoned_lease_expires() {
    let Some(ep) = support::azurite() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    sample_tree(&src);
    let container = support::unique_container("lock");
    let extra = format!("{SMALL}[lock]\nttl = \"15s\"\n");
    let (p, s) = az(t.path(), "lk", &src, &ep, &container, &extra).await;
    let layout = Layout::new(&p.target.prefix);

    // Held by another run: fail fast, naming it.
    let lease = s
        .acquire_lease(
            &layout.lock(),
            Duration::from_secs(15),
            "run other-run on host-a (pid 1)",
        )
        .await
        .expect("lease");
    let e = blobpipe::pipeline::backup(&p, s.clone(), BackupOptions::default())
        .await
        .expect_err("locked");
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(e.to_string().contains("other-run"), "{e}");
    assert!(catalog::snapshot_ids(&*s, &layout)
        .await
        .expect("list")
        .is_empty());

    // The holder vanishes without releasing (as a killed process would): a waiting run
    // takes the lock over once the 15 s lease has expired, with no manual unlock.
    drop(lease);
    let e = blobpipe::pipeline::backup(&p, s.clone(), BackupOptions::default())
        .await
        .expect_err("still held");
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    let started = Instant::now();
    let r = blobpipe::pipeline::backup(
        &p,
        s.clone(),
        BackupOptions {
            wait_lock: true,
            ..Default::default()
        },
    )
    .await
    .expect("took over after expiry");
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    eprintln!("waited {:?} for the abandoned lease", started.elapsed());
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "did not wait for the lease at all"
    );
    // Released at the end: the next run starts at once.
    assert_eq!(backup(&p, &s).await.status, RunStatus::Ok);
    assert_eq!(
        catalog::snapshot_ids(&*s, &layout)
            .await
            .expect("list")
            .len(),
        2
    );
}

/// Storage Blob Data Contributor may not set blob index tags (403): packs are committed
/// without them and the backup succeeds, verifies and restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_index_tags_do_not_fail_the_backup() {
    let Some(ep) = support::azurite() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    for i in 0..3u64 {
        std::fs::write(src.join(format!("f{i}.bin")), noise(300_000, i + 1)).expect("write");
    }
    let proxy = FaultProxy::start(upstream(&ep), FaultConfig::none())
        .await
        .expect("proxy");
    let container = support::unique_container("notags");
    let (p, s) = az(
        t.path(),
        "nt",
        &src,
        &proxy.endpoint("devstoreaccount1"),
        &container,
        SMALL,
    )
    .await;
    let tagged: Filter = Arc::new(|s: &Seen| s.is_put_block_list() && s.tags);
    proxy.set_filter(Some(tagged));
    proxy.set(FaultConfig {
        rate: 1.0,
        seed: 1,
        kinds: vec![Fault::Forbidden403],
        stall: Duration::from_secs(1),
    });
    let r = blobpipe::pipeline::backup(&p, s.clone(), BackupOptions::default())
        .await
        .expect("backup without tags");
    assert_eq!(r.status, blobpipe::manifest::records::RunStatus::Ok);
    let seen = proxy.stats.seen();
    let refused = seen
        .iter()
        .filter(|x| x.is_put_block_list() && x.tags && x.faulted)
        .count();
    // Partitions commit concurrently: each commit in flight when the first refusal came
    // back may have been sent with tags; none after it.
    assert!(
        refused >= 1 && refused <= p.partitions.max_parallel,
        "tags are tried once per commit in flight, then no longer sent: {refused} refused"
    );

    assert!(
        seen.iter().any(|x| x.is_put_block_list() && !x.tags),
        "committed without tags"
    );
    let layout = Layout::new(&p.target.prefix);
    let m = catalog::load(&*s, &layout, r.snapshot.as_deref().expect("snap"))
        .await
        .expect("manifest");
    let v = blobpipe::verify::verify(&s, &layout, &m, VerifyMode::Full, None, &p.upload, None)
        .await
        .expect("verify");
    assert!(v.ok(), "{:?}", v.mismatches);
}

/// A chunked big file through the Azure store: the incremental after an overwrite stores
/// only the chunks around it, full verify passes, and both snapshots restore
/// byte-identical through ranged reads of the chunks' frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_big_files_on_azurite() {
    let Some(ep) = support::azurite() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    sample_tree(&src);
    std::fs::write(src.join("disk.img"), noise(3 << 20, 11)).unwrap();
    let url = format!("{ep}/{}", support::unique_container("cdc"));
    let extra = format!(
        "{SMALL}[chunking]\nthreshold = \"256KiB\"\nmin_size = \"16KiB\"\navg_size = \"64KiB\"\nmax_size = \"256KiB\"\n"
    );
    let pf = write_pipeline(t.path(), "azc", &src, &url, &extra);
    let (p, s) = open(&pf).await;
    let r1 = backup(&p, &s).await;
    assert_eq!(r1.status, RunStatus::Ok, "{r1:?}");
    // disk.img and the sample tree's files above the threshold.
    assert!(r1.chunks.files >= 1, "{:?}", r1.chunks);
    let before = t.path().join("before");
    std::fs::create_dir_all(&before).unwrap();
    std::fs::copy(src.join("disk.img"), before.join("disk.img")).unwrap();
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(src.join("disk.img"))
            .unwrap();
        f.seek(std::io::SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&noise(64 << 10, 12)).unwrap();
    }
    let r2 = backup(&p, &s).await;
    assert_eq!(r2.status, RunStatus::Ok, "{r2:?}");
    assert!(r2.verify.as_ref().is_some_and(|v| v.ok()), "{r2:?}");
    assert!(
        r2.chunks.new_bytes <= 64 * 1024 + 2 * 256 * 1024,
        "{:?}",
        r2.chunks
    );
    assert!(
        r2.chunks.reused * 4 >= r2.chunks.new * 3 * 4,
        "{:?}",
        r2.chunks
    );
    let layout = Layout::new(&p.target.prefix);
    for (snap, want) in [
        (&r1.snapshot, before.join("disk.img")),
        (&r2.snapshot, src.join("disk.img")),
    ] {
        let m = catalog::load(&*s, &layout, snap.as_ref().unwrap())
            .await
            .unwrap();
        let out = t.path().join(format!("out-{}", snap.as_ref().unwrap()));
        restore(
            &s,
            &layout,
            &m,
            &RestoreOptions {
                to: out.clone(),
                paths: vec!["disk.img".into()],
                overwrite: false,
                concurrency: 2,
            },
            None,
        )
        .await
        .expect("restore");
        assert!(
            std::fs::read(out.join("disk.img")).unwrap() == std::fs::read(&want).unwrap(),
            "{snap:?}"
        );
    }
}
