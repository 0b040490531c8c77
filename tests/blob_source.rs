//! A blob container as a source, against Azurite, with two containers and two
//! credentials: the source read through a SAS connection string (via a counting proxy),
//! the target written with the account key.
//!
//! - a full backup keeps names, bytes, content type, metadata and tags of nested blobs,
//!   leaves out excluded names, and verifies;
//! - after one blob changes, the incremental downloads exactly that blob (GETs counted
//!   at the proxy) and reuses the rest;
//! - `restore --to-container` into an empty container gives the same names, bytes,
//!   Content-MD5, content types, metadata and tags; a second restore is refused without
//!   `--overwrite` and nothing is replaced;
//! - a blob that changes while read (412 injected at the proxy) is read once more; one
//!   that changes again is stored as read and recorded as inconsistent;
//! - a failed run resumes with the same run id without downloading the blobs of its
//!   finished partitions again;
//! - names that cannot be paths and Archive-tier blobs are reported, not lost silently;
//! - a missing source container and a bad credential fail with a clear error and exit 1
//!   (a failed run), storing no snapshot; a bad `[source]` is refused at its line;
//! - no command of a blob pipeline prints a key or a SAS signature.
//!
//! Needs `AZURITE_BLOB_ENDPOINT` (see `tests/support`).

mod common;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use blobpipe::manifest::catalog;
use blobpipe::manifest::layout::Layout;
use blobpipe::manifest::records::RunStatus;
use blobpipe::pipeline::Pipeline;
use blobpipe::restore::RestoreOptions;
use blobpipe::store::azure::source::{RestoredBlob, SourceBlob};
use blobpipe::store::azure::{credential, AzureOptions, AzureStore};
use blobpipe::store::{BlobStore, Tier};
use blobpipe::support::secret::Secret;
use common::*;
use support::faultproxy::{FaultConfig, FaultProxy};

const SMALL: &str = "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\nsize = \"64KiB\"\n[verify]\nmode = \"full\"\n";

fn sas() -> String {
    use blobpipe::store::azure::credential::AccountSasSigner;
    let signer =
        AccountSasSigner::new("devstoreaccount1", &Secret::new(support::AZURITE_KEY), true)
            .expect("signer");
    let p = signer.params(chrono::Utc::now(), std::time::Duration::from_secs(3600));
    let enc = signer
        .signature(&p)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    format!(
        "sv={}&ss={}&srt={}&sp={}&st={}&se={}&spr=https,http&sig={enc}",
        p.sv, p.ss, p.srt, p.sp, p.st, p.se
    )
}

/// A store on `container` of the emulator at `ep`, with the account key.
async fn container(ep: &str, name: &str) -> AzureStore {
    let s = AzureStore::open(
        &Secret::new(support::azurite_connection_string(ep)),
        name,
        &AzureOptions::default(),
        &credential::process_env,
    )
    .expect("open");
    s.ensure_container().await.expect("create");
    s
}

/// Upload `data` as `name` with properties (one block per MiB).
async fn put(s: &AzureStore, name: &str, data: &[u8], props: RestoredBlob) {
    let mut ids = Vec::new();
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        let id = blobpipe::store::b64(format!("b{i:06}").as_bytes());
        s.stage_block(
            name,
            &id,
            bytes::Bytes::copy_from_slice(chunk),
            blobpipe::store::md5(chunk),
        )
        .await
        .expect("stage");
        ids.push(id);
    }
    let props = RestoredBlob {
        content_md5: Some(blobpipe::store::md5(data)),
        overwrite: true,
        ..props
    };
    s.commit_restored(name, &ids, &props).await.expect("commit");
}

fn props(ct: &str, meta: &[(&str, &str)], tags: &[(&str, &str)]) -> RestoredBlob {
    let m = |v: &[(&str, &str)]| -> BTreeMap<String, String> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    RestoredBlob {
        content_type: Some(ct.to_string()),
        metadata: m(meta),
        tags: m(tags),
        ..Default::default()
    }
}

/// Every blob of `s`: listed facts and bytes.
async fn snapshot_of(s: &AzureStore) -> BTreeMap<String, (SourceBlob, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut marker = None;
    loop {
        let page = s.list_detailed("", marker, 5000).await.expect("list");
        for b in page.items {
            let data = s.get(&b.name, None).await.expect("get").to_vec();
            out.insert(b.name.clone(), (b, data));
        }
        match page.next {
            Some(m) => marker = Some(m),
            None => return out,
        }
    }
}

/// The facts a restore must keep (not ETag, time or tier).
fn kept(b: &SourceBlob) -> impl PartialEq + std::fmt::Debug {
    (
        b.size,
        b.content_md5,
        b.content_type.clone(),
        b.metadata.clone(),
        b.tags.clone(),
    )
}

fn pipeline_text(name: &str, src_url: &str, src: &str, dst_url: &str, dst: &str) -> String {
    format!(
        "name = \"{name}\"\n\n[source]\ntype = \"blob\"\nurl = \"{src_url}\"\ncontainer = \"{src}\"\nexclude = [\"logs/\"]\n\n[target]\nurl = \"{dst_url}\"\ncontainer = \"{dst}\"\n\n{SMALL}"
    )
}

/// Download GETs of blobs in `container` the proxy saw (no `comp`: not listings).
fn downloads(proxy: &FaultProxy, container: &str) -> Vec<String> {
    let prefix = format!("/devstoreaccount1/{container}/");
    let mut v: Vec<String> = proxy
        .stats
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.comp.is_none())
        .filter_map(|s| s.path.strip_prefix(&prefix).map(str::to_string))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_backs_up_incrementally_and_restores_into_another_container() {
    let Some(ep) = support::azurite() else { return };
    let upstream: std::net::SocketAddr = url::Url::parse(&ep)
        .expect("endpoint")
        .socket_addrs(|| None)
        .expect("addr")[0];
    let proxy = FaultProxy::start(upstream, FaultConfig::none())
        .await
        .expect("proxy");
    let (srcname, dstname, backname) = (
        support::unique_container("bsrc"),
        support::unique_container("bdst"),
        support::unique_container("bback"),
    );
    let src = container(&ep, &srcname).await;
    let big = noise(5 << 20, 3); // more than one ranged read (4 MiB)
    put(&src, "top.txt", b"top\n", props("text/plain", &[], &[])).await;
    put(
        &src,
        "data/2024/01/a.csv",
        b"id,v\n1,2\n",
        props(
            "text/csv",
            &[("origin", "etl"), ("rows", "1")],
            &[("team", "lake")],
        ),
    )
    .await;
    put(
        &src,
        "data/2024/02/b.bin",
        &noise(300_000, 1),
        props("application/octet-stream", &[("k", "v")], &[]),
    )
    .await;
    put(
        &src,
        "data/empty",
        b"",
        props("text/plain", &[], &[("e", "1")]),
    )
    .await;
    put(
        &src,
        "data/big.bin",
        &big,
        props("application/x-big", &[], &[]),
    )
    .await;
    put(
        &src,
        "logs/skip.log",
        b"excluded\n",
        props("text/plain", &[], &[]),
    )
    .await;

    let t = tempfile::tempdir().expect("tmp");
    let src_url = format!(
        "BlobEndpoint={};SharedAccessSignature={}",
        proxy.endpoint("devstoreaccount1"),
        sas()
    );
    let pf = t.path().join("lake.toml");
    std::fs::write(
        &pf,
        pipeline_text(
            "lake",
            &src_url,
            &srcname,
            &support::azurite_connection_string(&ep),
            &backname,
        ),
    )
    .expect("write");
    let (p, store) = open(&pf).await;

    // Full backup.
    let r = backup(&p, &store).await;
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert_eq!(r.totals.files, 5, "{r:?}");
    assert!(r.verify.as_ref().is_some_and(|v| v.ok()), "{r:?}");
    let got = downloads(&proxy, &srcname);
    assert!(!got.iter().any(|n| n.starts_with("logs/")), "{got:?}");
    for n in [
        "top.txt",
        "data/2024/01/a.csv",
        "data/2024/02/b.bin",
        "data/big.bin",
    ] {
        assert!(got.iter().any(|g| g == n), "{n} not read: {got:?}");
    }
    assert_eq!(
        got.iter().filter(|g| *g == "data/big.bin").count(),
        2,
        "5 MiB in 4 MiB reads: {got:?}"
    );

    // One blob changes; the incremental reads only it.
    put(
        &src,
        "data/2024/01/a.csv",
        b"id,v\n1,2\n2,3\n",
        props(
            "text/csv",
            &[("origin", "etl"), ("rows", "2")],
            &[("team", "lake")],
        ),
    )
    .await;
    proxy.stats.reset_seen();
    let r2 = backup(&p, &store).await;
    assert_eq!(r2.status, RunStatus::Ok, "{r2:?}");
    assert_eq!(r2.kind, "incremental");
    assert_eq!(downloads(&proxy, &srcname), vec!["data/2024/01/a.csv"]);
    let ch = r2.changes.as_ref().expect("changes");
    assert_eq!((ch.changed, ch.unchanged, ch.new, ch.deleted), (1, 4, 0, 0));

    // Restore into an empty container: equal by name, bytes, MD5, type, metadata, tags.
    let layout = Layout::new(&p.target.prefix);
    let id = catalog::resolve(&*store, &layout, "latest")
        .await
        .expect("latest");
    let m = catalog::load_head(&*store, &layout, &id)
        .await
        .expect("head");
    let dst = Arc::new(container(&ep, &dstname).await);
    let opts = RestoreOptions {
        to: Default::default(),
        paths: vec![],
        overwrite: false,
        concurrency: 2,
    };
    let rr = blobpipe::restore::container::restore_to_container(
        &store,
        &layout,
        &m,
        dst.clone(),
        &opts,
        None,
    )
    .await
    .expect("restore");
    assert!(rr.ok(), "{rr:?}");
    assert_eq!(rr.files, 5);
    let mut want = snapshot_of(&src).await;
    want.remove("logs/skip.log");
    let have = snapshot_of(&dst).await;
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        have.keys().collect::<Vec<_>>()
    );
    for (name, (w, wb)) in &want {
        let (h, hb) = &have[name];
        assert_eq!(kept(w), kept(h), "{name}");
        assert!(wb == hb, "{name}: bytes differ");
        assert_eq!(w.tags.is_empty(), h.tags.is_empty(), "{name}");
    }
    assert_eq!(
        have["data/2024/01/a.csv"]
            .0
            .metadata
            .get("rows")
            .map(String::as_str),
        Some("2")
    );
    // Tags made it through the listing, the manifest and the restore.
    for (blobs, who) in [(&want, "source"), (&have, "restored")] {
        let a = &blobs["data/2024/01/a.csv"].0;
        assert_eq!(
            a.tags.get("team").map(String::as_str),
            Some("lake"),
            "{who}"
        );
        assert_eq!(a.content_type.as_deref(), Some("text/csv"), "{who}");
        assert!(a.content_md5.is_some(), "{who}");
    }

    // A second restore into the same container is refused, and replaces nothing.
    put(
        &dst,
        "top.txt",
        b"changed by someone\n",
        props("text/plain", &[], &[]),
    )
    .await;
    let e = blobpipe::restore::container::restore_to_container(
        &store,
        &layout,
        &m,
        dst.clone(),
        &opts,
        None,
    )
    .await
    .expect_err("refused");
    assert_eq!(e.kind(), blobpipe::ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("5 blob(s) already exist"), "{e}");
    assert_eq!(
        &dst.get("top.txt", None).await.expect("get")[..],
        b"changed by someone\n"
    );
    // With overwrite it is replaced.
    let rr = blobpipe::restore::container::restore_to_container(
        &store,
        &layout,
        &m,
        dst.clone(),
        &RestoreOptions {
            overwrite: true,
            ..opts.clone()
        },
        None,
    )
    .await
    .expect("overwrite");
    assert_eq!(rr.files, 5);
    assert_eq!(&dst.get("top.txt", None).await.expect("get")[..], b"top\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_archived_blobs_are_reported_and_the_rest_is_kept() {
    let Some(ep) = support::azurite() else { return };
    let (srcname, backname) = (
        support::unique_container("bbad"),
        support::unique_container("bbadb"),
    );
    let src = container(&ep, &srcname).await;
    put(&src, "ok.txt", b"fine\n", props("text/plain", &[], &[])).await;
    put(&src, "clash", b"a blob\n", props("text/plain", &[], &[])).await;
    put(
        &src,
        "clash/under",
        b"below a blob\n",
        props("text/plain", &[], &[]),
    )
    .await;
    put(
        &src,
        "frozen.bin",
        b"cold data\n",
        props("text/plain", &[], &[]),
    )
    .await;
    src.set_tier("frozen.bin", Tier::Archive)
        .await
        .expect("archive");
    let t = tempfile::tempdir().expect("tmp");
    let pf = t.path().join("bad.toml");
    let conn = support::azurite_connection_string(&ep);
    std::fs::write(&pf, pipeline_text("bad", &conn, &srcname, &conn, &backname)).expect("write");
    let (p, store) = open(&pf).await;
    let r = backup(&p, &store).await;
    assert_eq!(r.status, RunStatus::Partial, "{r:?}");
    let problems: BTreeMap<String, String> = r
        .problems
        .iter()
        .map(|p| (p.path.display(), p.error.clone()))
        .collect();
    let names: Vec<&str> = problems.keys().map(String::as_str).collect();
    assert!(names.contains(&"clash/under"), "{problems:?}");
    assert!(names.contains(&"frozen.bin"), "{problems:?}");
    assert!(problems["frozen.bin"].contains("Archive"), "{problems:?}");
    assert_eq!(r.totals.files, 2, "{r:?}");
    let layout = Layout::new(&p.target.prefix);
    let id = catalog::resolve(&*store, &layout, "latest")
        .await
        .expect("latest");
    let m = catalog::load(&*store, &layout, &id)
        .await
        .expect("manifest");
    let paths: Vec<String> = m.entries.iter().map(|e| e.path.display()).collect();
    assert_eq!(paths, vec!["clash", "ok.txt"], "{paths:?}");
}

fn bp(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("AZURE_STORAGE_SAS_TOKEN")
        .output()
        .expect("run blobpipe")
}

#[test]
fn a_missing_container_or_a_bad_credential_fails_clearly_and_stores_nothing() {
    let Some(ep) = support::azurite() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let conn = support::azurite_connection_string(&ep);
    let back = support::unique_container("bmiss");
    // No such container.
    let pf = t.path().join("miss.toml");
    std::fs::write(
        &pf,
        pipeline_text("miss", &conn, "no-such-container-here", &conn, &back),
    )
    .expect("write");
    let o = bp(t.path(), &["-q", "backup", pf.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(err.contains("no-such-container-here"), "{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    let miss_code = o.status.code();
    // A wrong key for the source (the target's is right).
    let bad_key = conn.replace(support::AZURITE_KEY, &"A".repeat(88));
    let pf = t.path().join("badkey.toml");
    std::fs::write(
        &pf,
        pipeline_text("badkey", &bad_key, "anything-here", &conn, &back),
    )
    .expect("write");
    let o = bp(t.path(), &["-q", "backup", pf.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), miss_code, "{err}");
    assert!(err.contains("403") || err.contains("authoriz"), "{err}");
    assert!(!err.contains(&"A".repeat(40)), "the key leaked: {err}");
    // No snapshot was stored by either.
    let o = bp(
        t.path(),
        &["-q", "--json", "snapshots", pf.to_str().expect("utf-8")],
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!out.contains("\"snapshot\""), "{out}");
    let _ = Pipeline::load(&pf).expect("valid pipeline");
}

/// Back up `moving.bin` (5 MiB: two ranged reads) through a proxy whose filter sees
/// every download of it; `on_get(n)` decides for the n-th whether to answer 412.
async fn backup_with_changes(
    tag: &str,
    on_get: impl Fn(usize, &str, &str) -> bool + Send + Sync + 'static,
) -> (blobpipe::pipeline::BackupReport, Vec<String>, Vec<u8>) {
    let ep = support::azurite().expect("azurite");
    let upstream: std::net::SocketAddr = url::Url::parse(&ep)
        .expect("endpoint")
        .socket_addrs(|| None)
        .expect("addr")[0];
    let proxy = FaultProxy::start(
        upstream,
        FaultConfig {
            rate: 1.0,
            kinds: vec![support::faultproxy::Fault::Precondition412],
            ..FaultConfig::none()
        },
    )
    .await
    .expect("proxy");
    let (srcname, backname) = (
        support::unique_container(&format!("{tag}s")),
        support::unique_container(&format!("{tag}b")),
    );
    let src = container(&ep, &srcname).await;
    put(
        &src,
        "moving.bin",
        &noise(5 << 20, 10),
        props("a/b", &[], &[]),
    )
    .await;
    put(
        &src,
        "steady.txt",
        b"steady\n",
        props("text/plain", &[], &[]),
    )
    .await;
    let n = std::sync::atomic::AtomicUsize::new(0);
    let path = format!("/devstoreaccount1/{srcname}/moving.bin");
    let (ep2, src2) = (ep.clone(), srcname.clone());
    proxy.set_filter(Some(Arc::new(move |s: &support::faultproxy::Seen| {
        if s.method != "GET" || s.comp.is_some() || s.path != path {
            return false;
        }
        on_get(
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            &ep2,
            &src2,
        )
    })));
    let t = tempfile::tempdir().expect("tmp");
    let pf = t.path().join("moving.toml");
    let src_url = format!(
        "BlobEndpoint={};SharedAccessSignature={}",
        proxy.endpoint("devstoreaccount1"),
        sas()
    );
    let conn = support::azurite_connection_string(&ep);
    std::fs::write(
        &pf,
        pipeline_text("moving", &src_url, &srcname, &conn, &backname),
    )
    .expect("write");
    let (p, store) = open(&pf).await;
    let r = backup(&p, &store).await;
    let got = downloads(&proxy, &srcname);
    // What a restore of moving.bin gives back.
    let layout = Layout::new(&p.target.prefix);
    let id = r.snapshot.clone().expect("snapshot");
    let m = catalog::load(&*store, &layout, &id)
        .await
        .expect("manifest");
    let out = t.path().join("out");
    blobpipe::restore::restore(
        &store,
        &layout,
        &m,
        &RestoreOptions {
            to: out.clone(),
            paths: vec!["moving.bin".into()],
            overwrite: false,
            concurrency: 1,
        },
        None,
    )
    .await
    .expect("restore");
    let data = std::fs::read(out.join("moving.bin")).expect("restored");
    (r, got, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_changes_while_read_is_read_again() {
    if support::azurite().is_none() {
        return;
    }
    // The first read finds a new version (412); the blob is read once more, whole.
    let (r, got, data) = backup_with_changes("chg1", |n, _, _| n == 0).await;
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert!(r.inconsistent.is_empty(), "{r:?}");
    let moving: Vec<_> = got.iter().filter(|g| *g == "moving.bin").collect();
    assert_eq!(
        moving.len(),
        3,
        "one refused read, then two ranges: {got:?}"
    );
    assert_eq!(data, noise(5 << 20, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_keeps_changing_is_recorded_as_inconsistent() {
    if support::azurite().is_none() {
        return;
    }
    // 412 on the first read; as the second read starts, the blob is replaced, so its
    // first range comes from a newer version than the one the re-read set out to read.
    let (r, got, data) = backup_with_changes("chg2", |n, ep, container_name| {
        if n == 1 {
            let (ep, c) = (ep.to_string(), container_name.to_string());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("rt");
                rt.block_on(async {
                    let s = container(&ep, &c).await;
                    put(
                        &s,
                        "moving.bin",
                        &noise(5 << 20, 11),
                        props("a/b", &[], &[]),
                    )
                    .await;
                });
            })
            .join()
            .expect("writer");
        }
        n == 0
    })
    .await;
    assert_eq!(r.status, RunStatus::Partial, "{r:?}");
    assert_eq!(
        r.inconsistent
            .iter()
            .map(|p| p.display())
            .collect::<Vec<_>>(),
        vec!["moving.bin"],
        "{r:?}"
    );
    assert!(r.problems.is_empty(), "{r:?}");
    let moving = got.iter().filter(|g| *g == "moving.bin").count();
    assert_eq!(moving, 3, "read once more, not again: {got:?}");
    // What was stored is the service's bytes (here, all of the newer version).
    assert_eq!(data, noise(5 << 20, 11));
}

/// `validate`, `backup`, `restore --to-container` and `copy` of a blob pipeline whose source is
/// read with a SAS connection string and whose target and destination use the account
/// key: no key, no SAS signature in any output, plain or `--json`, even at trace level.
#[test]
fn blob_commands_print_no_key_and_no_sas() {
    let Some(ep) = support::azurite() else { return };
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let (srcname, backname, dstname) = (
        support::unique_container("lsrc"),
        support::unique_container("lback"),
        support::unique_container("ldst"),
    );
    rt.block_on(async {
        let src = container(&ep, &srcname).await;
        put(
            &src,
            "a/b.txt",
            b"hello\n",
            props("text/plain", &[("m", "1")], &[("t", "2")]),
        )
        .await;
    });
    let sas = sas();
    let sig = sas
        .split('&')
        .find_map(|kv| kv.strip_prefix("sig="))
        .expect("sig")
        .to_string();
    let key = support::azurite_connection_string(&ep);
    let needles = [
        support::AZURITE_KEY.to_string(),
        support::AZURITE_KEY[..16].to_string(),
        sig.clone(),
        sig[..16].to_string(),
        "AccountKey=".to_string(),
    ];
    let t = tempfile::tempdir().expect("tmp");
    let pf = t.path().join("leak.toml");
    std::fs::write(
        &pf,
        pipeline_text(
            "leak",
            &format!("BlobEndpoint={ep};SharedAccessSignature={sas}"),
            &srcname,
            &key,
            &backname,
        ),
    )
    .expect("write");
    let pf = pf.to_str().expect("utf-8");
    let dest_url = format!("{ep}/{dstname}");
    // A second pipeline to `copy` the snapshots into (its store: the account key too).
    let pf2 = t.path().join("leak2.toml");
    std::fs::write(
        &pf2,
        pipeline_text(
            "leak",
            &format!("BlobEndpoint={ep};SharedAccessSignature={sas}"),
            &srcname,
            &key,
            &support::unique_container("lcopy"),
        ),
    )
    .expect("write");
    let pf2 = pf2.to_str().expect("utf-8");
    let runs: Vec<Vec<&str>> = vec![
        vec!["validate", pf],
        vec!["--json", "validate", pf],
        vec!["backup", pf],
        vec!["--json", "backup", pf],
        vec!["--json", "restore", pf, "--to-container", &dest_url],
        vec!["restore", pf, "--to-container", &dest_url, "--overwrite"],
        vec!["copy", pf, pf2],
        vec!["--json", "copy", pf, pf2],
    ];
    for args in runs {
        for trace in [false, true] {
            let mut c = Command::new(env!("CARGO_BIN_EXE_blobpipe"));
            c.args(&args)
                .current_dir(t.path())
                .env_remove("AZURE_STORAGE_CONNECTION_STRING")
                .env_remove("AZURE_STORAGE_SAS_TOKEN")
                // The destination URL names no secret: the key comes from the environment.
                .env("AZURE_STORAGE_KEY", support::AZURITE_KEY);
            if trace {
                c.env("RUST_LOG", "trace");
            } else {
                c.env_remove("RUST_LOG");
            }
            let o = c.output().expect("run");
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            for n in &needles {
                assert!(!all.contains(n.as_str()), "{args:?} printed {n:?}:\n{all}");
            }
            // The second `restore` without --overwrite meets the first one's blobs.
            let refused = args.contains(&"restore") && !args.contains(&"--overwrite") && trace;
            let want = if refused { 7 } else { 0 };
            assert_eq!(
                o.status.code(),
                Some(want),
                "{args:?} trace={trace}:\n{all}"
            );
        }
    }
    let restored = rt.block_on(async {
        let d = container(&ep, &dstname).await;
        d.get("a/b.txt", None).await.expect("restored blob")
    });
    assert_eq!(&restored[..], b"hello\n");
}

#[test]
fn a_blob_source_without_url_or_with_a_bad_glob_is_refused_at_its_line() {
    let t = tempfile::tempdir().expect("tmp");
    let pf = t.path().join("bad.toml");
    std::fs::write(
        &pf,
        "name = \"bad\"\n\n[source]\ntype = \"blob\"\ncontainer = \"lake\"\ninclude = [\"[abc\"]\nroot = \"/tmp\"\nrehydrate = \"slow\"\nserver_side_min_size = \"4KiB\"\n\n[target]\nurl = \"file:///tmp/x\"\n",
    )
    .expect("write");
    let o = bp(t.path(), &["validate", pf.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("source.url"), "{err}");
    assert!(err.contains("bad.toml:6:"), "the glob at its line: {err}");
    assert!(err.contains("bad.toml:7:"), "root is not a blob key: {err}");
    assert!(
        err.contains("bad.toml:8:") && err.contains("source.rehydrate") && err.contains("\"high\""),
        "an unknown priority at its line, with the accepted ones: {err}"
    );
    assert!(
        err.contains("bad.toml:9:")
            && err.contains("source.server_side_min_size")
            && err.contains("between 1 MiB and 200 TiB"),
        "a threshold under 1 MiB at its line, with the range: {err}"
    );
    // Only a blob source takes it.
    std::fs::write(
        &pf,
        "name = \"bad\"\n\n[source]\ntype = \"fs\"\nroot = \"/tmp\"\nserver_side_min_size = \"64MiB\"\n\n[target]\nurl = \"file:///tmp/x\"\n",
    )
    .expect("write");
    let o = bp(t.path(), &["validate", pf.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.toml:6:") && err.contains("source.server_side_min_size"),
        "{err}"
    );
}

/// `source.rehydrate = "high"`: an archived blob is not in the first snapshot (the run is
/// partial and says the blob's rehydration is pending), its rehydration in place is
/// requested with the priority (seen at the proxy), and the next run, finding it online,
/// reads it — and only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_blobs_are_rehydrated_on_request_and_backed_up_by_a_later_run() {
    let Some(ep) = support::azurite() else { return };
    let upstream: std::net::SocketAddr = url::Url::parse(&ep)
        .expect("endpoint")
        .socket_addrs(|| None)
        .expect("addr")[0];
    let proxy = FaultProxy::start(upstream, FaultConfig::none())
        .await
        .expect("proxy");
    let tier_requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = tier_requests.clone();
    proxy.set_responder(Some(std::sync::Arc::new(
        move |head: &str, x: &support::faultproxy::Seen| {
            if x.method == "PUT" && x.comp.as_deref() == Some("tier") {
                let prio = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("x-ms-rehydrate-priority")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                seen.lock()
                    .expect("lock")
                    .push(format!("{} {prio}", x.path));
            }
            None
        },
    )));
    let (srcname, backname) = (
        support::unique_container("brehy"),
        support::unique_container("brehyb"),
    );
    let src = container(&ep, &srcname).await;
    put(&src, "ok.txt", b"fine\n", props("text/plain", &[], &[])).await;
    put(
        &src,
        "frozen.bin",
        b"cold data\n",
        props("text/plain", &[], &[]),
    )
    .await;
    src.set_tier("frozen.bin", Tier::Archive)
        .await
        .expect("archive");
    let t = tempfile::tempdir().expect("tmp");
    let pf = t.path().join("rehy.toml");
    let text = pipeline_text(
        "rehy",
        &support::azurite_connection_string(&proxy.endpoint("devstoreaccount1")),
        &srcname,
        &support::azurite_connection_string(&ep),
        &backname,
    )
    .replace("exclude = [", "rehydrate = \"high\"\nexclude = [");
    std::fs::write(&pf, text).expect("write");
    let (p, store) = open(&pf).await;

    let r = backup(&p, &store).await;
    assert_eq!(r.status, RunStatus::Partial, "{r:?}");
    let problems: BTreeMap<String, String> = r
        .problems
        .iter()
        .map(|p| (p.path.display(), p.error.clone()))
        .collect();
    assert!(
        problems["frozen.bin"].contains("pending rehydration"),
        "{problems:?}"
    );
    assert_eq!(r.totals.files, 1, "{r:?}");
    assert_eq!(
        *tier_requests.lock().expect("lock"),
        vec![format!("/devstoreaccount1/{srcname}/frozen.bin High")]
    );
    // Azurite rehydrates at once; Azure would take hours (the blob stays reported).
    let now = src.head("frozen.bin").await.expect("head").expect("exists");
    assert_eq!(now.tier, Tier::Hot);

    proxy.stats.reset_seen();
    let r = backup(&p, &store).await;
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(downloads(&proxy, &srcname), vec!["frozen.bin".to_string()]);
    let layout = Layout::new(&p.target.prefix);
    let id = catalog::resolve(&*store, &layout, "latest")
        .await
        .expect("latest");
    let m = catalog::load(&*store, &layout, &id)
        .await
        .expect("manifest");
    let paths: Vec<String> = m.entries.iter().map(|e| e.path.display()).collect();
    assert_eq!(paths, vec!["frozen.bin", "ok.txt"], "{paths:?}");
}

/// A blob backup whose run fails (a part record cannot be written) resumes with the same
/// run id: finished partitions are taken from their part records and their blobs are not
/// downloaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_blob_backup_resumes_without_reading_finished_partitions_again() {
    let Some(ep) = support::azurite() else { return };
    let upstream: std::net::SocketAddr = url::Url::parse(&ep)
        .expect("endpoint")
        .socket_addrs(|| None)
        .expect("addr")[0];
    let proxy = FaultProxy::start(upstream, FaultConfig::none())
        .await
        .expect("proxy");
    let srcname = support::unique_container("bres");
    let src = container(&ep, &srcname).await;
    for i in 0..40 {
        put(
            &src,
            &format!("d/{i:03}.bin"),
            &noise(20_000, i),
            props("a/b", &[], &[]),
        )
        .await;
    }
    let t = tempfile::tempdir().expect("tmp");
    let pf = t.path().join("res.toml");
    let mem = unique("blobres");
    std::fs::write(
        &pf,
        pipeline_text(
            "res",
            &format!(
                "BlobEndpoint={};SharedAccessSignature={}",
                proxy.endpoint("devstoreaccount1"),
                sas()
            ),
            &srcname,
            &format!("memory://{mem}"),
            "backups",
        ) + "[retry]\nattempts = 2\ninitial_backoff = \"1ms\"\n",
    )
    .expect("write");
    let p = Pipeline::load(&pf).expect("load");
    let s = blobpipe::store::open(&p.target, &p.retry)
        .await
        .expect("store");
    let ms = blobpipe::store::memory::MemoryStore::shared(&format!("{mem}/backups"));
    ms.fail_writes_containing(Some("/f-00001-"));
    let opts = || blobpipe::pipeline::BackupOptions {
        run_id: Some("run-b".into()),
        ..Default::default()
    };
    let e = blobpipe::pipeline::backup(&p, s.clone(), opts())
        .await
        .expect_err("fails");
    assert_eq!(e.kind(), blobpipe::ErrorKind::Store, "{e}");
    let first = downloads(&proxy, &srcname).len();
    assert!(first >= 2, "{first}");
    ms.fail_writes_containing(None);
    proxy.stats.reset_seen();
    let r = blobpipe::pipeline::backup(&p, s.clone(), opts())
        .await
        .expect("resumed");
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert_eq!(r.totals.files, 40, "{r:?}");
    assert!(r.partitions_resumed >= 1, "{r:?}");
    let again = downloads(&proxy, &srcname).len();
    assert!(
        again < 40,
        "finished partitions were read again: {again} downloads"
    );
}

/// `server_side_min_size`: a large blob is copied into a stored pack of its own by the
/// target's service (Put Block From URL, answered by the loopback stand-in where Azurite
/// 3.37 answers 500): its bytes never pass the proxy blobpipe talks through, GNU tar reads
/// the pack, restores into a directory and a container are byte-identical, `verify
/// --full` passes and finds a damaged block, an incremental reuses it by ETag. A small
/// blob, a refusing service (Azurite itself) and a local target stream, and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_blob_is_staged_server_side_into_a_pack_tar_reads() {
    let Some(ep) = support::azurite() else { return };
    let upstream: std::net::SocketAddr = url::Url::parse(&ep)
        .expect("endpoint")
        .socket_addrs(|| None)
        .expect("addr")[0];
    let proxy = FaultProxy::start(upstream, FaultConfig::none())
        .await
        .expect("proxy");
    let via = proxy.endpoint("devstoreaccount1");
    let (srcname, backname, fallname, dstname) = (
        support::unique_container("ssrc"),
        support::unique_container("sback"),
        support::unique_container("sfall"),
        support::unique_container("sdst"),
    );
    let src = container(&ep, &srcname).await;
    // A name over 100 bytes: the header block carries a GNU long-name record.
    let big_name = format!("lake/{}.parquet", "p".repeat(110));
    let big = noise((3 << 20) + 1234, 7);
    put(
        &src,
        &big_name,
        &big,
        props("application/x-parquet", &[("k", "v")], &[]),
    )
    .await;
    put(&src, "small.txt", b"small\n", props("text/plain", &[], &[])).await;
    let t = tempfile::tempdir().expect("tmp");
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();
    let text = |target: &str, container: &str| {
        format!(
            "name = \"ss\"\n\n[source]\ntype = \"blob\"\nurl = \"{}\"\ncontainer = \"{srcname}\"\nserver_side_min_size = \"1MiB\"\n\n[target]\nurl = \"{target}\"\ncontainer = \"{container}\"\n\n{}[retry]\nattempts = 2\ninitial_backoff = \"10ms\"\nmax_backoff = \"20ms\"\n",
            support::azurite_connection_string(&via),
            // The run's own verification reads no pack (the proxy counts every byte);
            // `verify --full` below reads them all.
            SMALL.replace("mode = \"full\"", "mode = \"metadata\"")
        )
    };
    let pf = t.path().join("ss.toml");
    std::fs::write(
        &pf,
        text(&support::azurite_connection_string(&via), &backname),
    )
    .expect("write");
    let (p, store) = open(&pf).await;

    // Server-side: the stand-in answers Put Block From URL.
    proxy.set_responder(Some(support::standin::put_block_from_url(upstream)));
    proxy.stats.reset_seen();
    let r = backup(&p, &store).await;
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    let ss = r.server_side.clone().expect("server_side");
    assert_eq!(
        (ss.staged.blobs, ss.staged.bytes),
        (1, big.len() as u64),
        "{ss:?}"
    );
    assert_eq!(ss.streamed["below server_side_min_size"].blobs, 1, "{ss:?}");
    let through_proxy = || {
        proxy
            .stats
            .bytes_up
            .load(std::sync::atomic::Ordering::Relaxed)
            + proxy
                .stats
                .bytes_down
                .load(std::sync::atomic::Ordering::Relaxed)
    };
    let through = through_proxy();
    println!(
        "server-side: {through} bytes through the proxy for a {} byte blob",
        big.len()
    );
    assert!(
        through < big.len() as u64 / 4,
        "{through} bytes through the proxy for a {} byte blob",
        big.len()
    );
    assert!(
        !downloads(&proxy, &srcname).contains(&big_name),
        "blobpipe read the large blob itself"
    );

    // GNU tar reads the stored pack.
    let back = container(&ep, &backname).await;
    let tars: Vec<_> = blobpipe::store::list_all(&back, "")
        .await
        .expect("list")
        .into_iter()
        .filter(|i| i.name.ends_with(".tar"))
        .collect();
    assert_eq!(tars.len(), 1, "{tars:?}");
    let pack = back.get(&tars[0].name, None).await.expect("get");
    let tar_path = t.path().join("pack.tar");
    std::fs::write(&tar_path, &pack).expect("write");
    let out = t.path().join("untar");
    std::fs::create_dir_all(&out).expect("dir");
    let o = Command::new("tar")
        .args(["-xf", &s(&tar_path), "-C", &s(&out)])
        .output()
        .expect("tar");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(out.join(&big_name)).expect("untarred") == big);

    // Restores: into a directory (the binary), into a container (byte-identical, with
    // the blob's properties); verify --full passes.
    let dir = t.path().join("restored");
    let o = bp(
        t.path(),
        &["-q", "restore", &s(&pf), "latest", "--to", &s(&dir)],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(std::fs::read(dir.join(&big_name)).expect("restored") == big);
    let layout = Layout::new(&p.target.prefix);
    let id = catalog::resolve(&*store, &layout, "latest")
        .await
        .expect("latest");
    let m = catalog::load_head(&*store, &layout, &id)
        .await
        .expect("head");
    let dst = Arc::new(container(&ep, &dstname).await);
    let opts = RestoreOptions {
        to: Default::default(),
        paths: vec![],
        overwrite: false,
        concurrency: 2,
    };
    let rr = blobpipe::restore::container::restore_to_container(
        &store,
        &layout,
        &m,
        dst.clone(),
        &opts,
        None,
    )
    .await
    .expect("restore");
    assert!(rr.ok(), "{rr:?}");
    let (want, have) = (snapshot_of(&src).await, snapshot_of(&dst).await);
    assert_eq!(kept(&want[&big_name].0), kept(&have[&big_name].0));
    assert!(
        want[&big_name].1 == have[&big_name].1,
        "restored bytes differ"
    );
    let o = bp(t.path(), &["-q", "verify", &s(&pf), "latest", "--full"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // One file by its path (a ranged read of the stored pack's frames).
    let one = t.path().join("one");
    let o = bp(
        t.path(),
        &[
            "-q",
            "restore",
            &s(&pf),
            "latest",
            "--to",
            &s(&one),
            "--path",
            &big_name,
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(std::fs::read(one.join(&big_name)).expect("restored") == big);
    // `copy` to a local store carries the stored pack (no Content-MD5 to compare); it
    // verifies in full there.
    let dr = t.path().join("dr.toml");
    std::fs::write(
        &dr,
        text(
            &format!("file://{}", s(&t.path().join("drstore"))),
            "drcopy",
        ),
    )
    .expect("write");
    let o = bp(t.path(), &["-q", "copy", &s(&pf), &s(&dr)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = bp(t.path(), &["-q", "verify", &s(&dr), "latest", "--full"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // An incremental reuses the unchanged large blob by its ETag: nothing staged again.
    proxy.stats.reset_seen();
    let r2 = backup(&p, &store).await;
    assert_eq!(r2.status, RunStatus::Ok, "{r2:?}");
    let ss2 = r2.server_side.clone().expect("server_side");
    assert_eq!(ss2.staged.blobs, 0, "{ss2:?}");
    assert_eq!(r2.new_packs, 0, "{r2:?}");
    assert!(
        !proxy.stats.seen().iter().any(|x| x.is_put_block()),
        "blocks were staged again"
    );

    // Retention: with only the incremental kept, prune keeps the stored pack it reuses.
    let ret = t.path().join("ret.toml");
    std::fs::write(
        &ret,
        text(&support::azurite_connection_string(&via), &backname) + "[retention]\nkeep_last = 1\n",
    )
    .expect("write");
    for args in [
        vec!["-q", "forget", &s(&ret)],
        vec!["-q", "prune", &s(&ret), "--grace", "0s"],
        vec!["-q", "verify", &s(&ret), "latest", "--full"],
    ] {
        let o = bp(t.path(), &args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = bp(t.path(), &["-q", "--json", "snapshots", &s(&ret)]);
    let snaps: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(snaps.as_array().map(Vec::len), Some(1), "{snaps}");
    assert!(
        back.head(&tars[0].name).await.expect("head").is_some(),
        "pruned"
    );

    // A source that changed between the listing and the staging (Azure: 412
    // SourceConditionNotMet to `x-ms-source-if-match`, answered here by a responder): the
    // blob is read and streamed like a changed blob, and the report says so.
    let etag = want[&big_name].0.etag.clone();
    let seen_if_match = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen2 = seen_if_match.clone();
    proxy.set_responder(Some(Arc::new(move |head: &str, _: &support::faultproxy::Seen| {
        let h = head.to_ascii_lowercase();
        if !h.contains("\r\nx-ms-copy-source:") {
            return None;
        }
        if h.contains(&format!("\r\nx-ms-source-if-match: \"{}\"", etag.to_ascii_lowercase())) {
            seen2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Some(
            "HTTP/1.1 412 Precondition Failed\r\nx-ms-error-code: SourceConditionNotMet\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .into(),
        )
    })));
    let chg = t.path().join("chg.toml");
    std::fs::write(
        &chg,
        text(
            &support::azurite_connection_string(&via),
            &support::unique_container("schg"),
        ),
    )
    .expect("write");
    let (pc, storec) = open(&chg).await;
    let rc = backup(&pc, &storec).await;
    assert_eq!(rc.status, RunStatus::Ok, "{rc:?}");
    let ssc = rc.server_side.clone().expect("server_side");
    assert_eq!(ssc.staged.blobs, 0, "{ssc:?}");
    assert_eq!(ssc.streamed["changed while staged"].blobs, 1, "{ssc:?}");
    assert!(
        ssc.refused.is_none(),
        "a changed blob is no refusal: {ssc:?}"
    );
    assert!(
        seen_if_match.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "no x-ms-source-if-match on the listed ETag"
    );
    let dirc = t.path().join("restoredc");
    let o = bp(
        t.path(),
        &["-q", "restore", &s(&chg), "latest", "--to", &s(&dirc)],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(std::fs::read(dirc.join(&big_name)).expect("restored") == big);

    // Azurite itself fails Put Block From URL (500): the run streams and says why.
    proxy.set_responder(None);
    let pf2 = t.path().join("fall.toml");
    std::fs::write(
        &pf2,
        text(&support::azurite_connection_string(&via), &fallname),
    )
    .expect("write");
    // Through the binary: `backup --json` carries `server_side`.
    proxy.stats.reset_seen();
    let o = bp(t.path(), &["--json", "backup", &s(&pf2)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The same proxy counts a streamed blob: read from the source, staged at the target.
    let streamed = through_proxy();
    println!(
        "streamed: {streamed} bytes through the proxy for a {} byte blob",
        big.len()
    );
    assert!(streamed > 2 * big.len() as u64, "{streamed}");
    let r3: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(r3["status"], "ok", "{r3}");
    let ss3 = &r3["server_side"];
    assert_eq!(ss3["staged"]["blobs"], 0, "{ss3}");
    let why: Vec<&String> = ss3["streamed"]
        .as_object()
        .expect("streamed")
        .keys()
        .collect();
    assert!(
        why.iter()
            .any(|w| w.contains("refused") && w.contains("500")),
        "{why:?}"
    );
    assert!(
        !why.iter().any(|w| w.contains("sig=")),
        "a SAS leaked: {why:?}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refused server-side staging"),
        "the warning: {err}"
    );
    assert!(
        !err.contains("sig=") && !err.contains(support::AZURITE_KEY),
        "{err}"
    );
    let dir2 = t.path().join("restored2");
    let o = bp(
        t.path(),
        &["-q", "restore", &s(&pf2), "latest", "--to", &s(&dir2)],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(std::fs::read(dir2.join(&big_name)).expect("restored") == big);

    // A local target cannot stage from a URL: streamed, and said so.
    let local = t.path().join("local");
    let pf3 = t.path().join("local.toml");
    std::fs::write(
        &pf3,
        text(&format!("file://{}", s(&local)), "unused").replace("container = \"unused\"\n", ""),
    )
    .expect("write");
    let (p3, store3) = open(&pf3).await;
    let r4 = backup(&p3, &store3).await;
    assert_eq!(r4.status, RunStatus::Ok, "{r4:?}");
    let ss4 = r4.server_side.clone().expect("server_side");
    assert!(
        ss4.streamed.keys().any(|w| w.contains("not Azure")),
        "{ss4:?}"
    );

    // An encrypted pipeline never stages server-side (the service would store the
    // plaintext): streamed, said so, and no stored pack holds the blob's bytes in clear.
    let sealed = t.path().join("sealed");
    let pf4 = t.path().join("sealed.toml");
    std::fs::write(t.path().join("sealed.key"), "11".repeat(32)).expect("key");
    std::fs::write(
        &pf4,
        text(&format!("file://{}", s(&sealed)), "unused").replace("container = \"unused\"\n", "")
            + "\n[encryption]\nkey_file = \"sealed.key\"\n",
    )
    .expect("write");
    let (p4, store4) = open(&pf4).await;
    let r5 = backup(&p4, &store4).await;
    assert_eq!(r5.status, RunStatus::Ok, "{r5:?}");
    let ss5 = r5.server_side.clone().expect("server_side");
    assert!(
        ss5.streamed
            .keys()
            .any(|w| w.contains("encrypts its packs")),
        "{ss5:?}"
    );
    assert_eq!(ss5.staged.blobs, 0, "{ss5:?}");
    let probe = &big[big.len() / 2..big.len() / 2 + 64];
    for f in common::files_under(&sealed) {
        let bytes = std::fs::read(&f).expect("read stored");
        assert!(
            !bytes.windows(probe.len()).any(|w| w == probe),
            "{} holds the blob's bytes in clear",
            f.display()
        );
    }

    // A damaged block of the stored pack: verify --full names it (exit 3), and a restore
    // refuses the file (its block MD5s no longer match).
    let mut bad = pack.to_vec();
    let at = bad.len() / 2;
    bad[at] ^= 0xff;
    back.put(&tars[0].name, bad.into(), false)
        .await
        .expect("damage");
    let o = bp(t.path(), &["-q", "verify", &s(&pf), "latest", "--full"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dir3 = t.path().join("restored3");
    let o = bp(
        t.path(),
        &["-q", "restore", &s(&pf), "latest", "--to", &s(&dir3)],
    );
    assert_ne!(o.status.code(), Some(0), "a damaged stored pack restored");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("block MD5s"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
