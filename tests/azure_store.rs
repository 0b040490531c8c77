//! The Azure store against Azurite: the behaviour the engine relies on, Azure-only
//! properties (tier, index tags, Content-MD5, leases, service-side MD5 checks), the
//! credential chain end to end, secrets never leaking, and retries under injected faults.
//!
//! Needs `AZURITE_BLOB_ENDPOINT` (see `tests/support`); without it every test here prints
//! a skip notice and passes, unless `BLOBPIPE_REQUIRE_SERVICES=1`.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blobpipe::store::azure::credential::{AccountSasSigner, CredentialKind, EnvLookup};
use blobpipe::store::azure::{auth_check_with, AzureOptions, AzureStore};
use blobpipe::store::config::{RetryConfig, StoreLocation, TargetConfig};
use blobpipe::store::{b64, md5, BlobStore, CommitOptions, PutOutcome, Tier};
use blobpipe::support::secret::Secret;
use blobpipe::ErrorKind;
use bytes::Bytes;
use support::faultproxy::{Fault, FaultConfig, FaultProxy};

fn no_env(_: &str) -> Option<String> {
    None
}

fn fast_opts() -> AzureOptions {
    AzureOptions {
        retry: RetryConfig {
            attempts: 6,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            budget: Duration::from_secs(30),
        },
        io_timeout: Duration::from_secs(10),
    }
}

async fn open_cs(endpoint: &str, container: &str, opts: &AzureOptions) -> AzureStore {
    let s = AzureStore::open(
        &Secret::new(support::azurite_connection_string(endpoint)),
        container,
        opts,
        &no_env,
    )
    .expect("open");
    s.ensure_container().await.expect("container");
    s
}

fn block_id(n: u32) -> String {
    b64(format!("blk-{n:08}").as_bytes())
}

fn data(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

/// Stage two blocks, commit, read back whole and by range: the round trip every backup
/// and restore does.
async fn roundtrip(s: &AzureStore, name: &str) {
    let a = data(300_000, 1);
    let b = data(123_457, 2);
    s.stage_block(name, &block_id(0), a.clone(), md5(&a))
        .await
        .expect("stage a");
    s.stage_block(name, &block_id(1), b.clone(), md5(&b))
        .await
        .expect("stage b");
    let mut whole = a.to_vec();
    whole.extend_from_slice(&b);
    let opts = CommitOptions {
        tier: Tier::Cool,
        content_md5: Some(md5(&whole)),
        metadata: BTreeMap::from([("pipeline".to_string(), "p1".to_string())]),
        tags: BTreeMap::from([("kind".to_string(), "pack".to_string())]),
        create_only: true,
    };
    s.commit_blocks(name, &[block_id(0), block_id(1)], &opts)
        .await
        .expect("commit");
    assert_eq!(
        s.get(name, None).await.expect("get"),
        Bytes::from(whole.clone())
    );
    let r = s.get(name, Some(299_990..300_020)).await.expect("range");
    assert_eq!(&r[..], &whole[299_990..300_020]);
    let props = s.head(name).await.expect("head").expect("exists");
    assert_eq!(props.size, whole.len() as u64);
    assert_eq!(props.content_md5, Some(md5(&whole)));
    match s
        .put(&format!("{name}.rec"), Bytes::from_static(b"{}"), true)
        .await
    {
        Ok(PutOutcome::Created | PutOutcome::AlreadyIdentical) => {}
        Err(e) => panic!("put: {e}"),
    }
}

#[tokio::test]
async fn store_basics_on_azurite() {
    let Some(ep) = support::azurite() else { return };
    let s = open_cs(&ep, &support::unique_container("basic"), &fast_opts()).await;
    assert_eq!(s.credential_kind(), CredentialKind::AccountKey);
    roundtrip(&s, "p/packs/aa/one.tar.zst").await;

    // Block lists: committed after commit, uncommitted while staging.
    let bl = s.block_list("p/packs/aa/one.tar.zst").await.expect("bl");
    assert_eq!(
        bl.committed
            .iter()
            .map(|b| b.id.clone())
            .collect::<Vec<_>>(),
        vec![block_id(0), block_id(1)]
    );
    assert_eq!(bl.committed[1].size, 123_457);
    let x = data(1000, 3);
    s.stage_block("p/packs/bb/two", &block_id(7), x.clone(), md5(&x))
        .await
        .expect("stage");
    let bl = s.block_list("p/packs/bb/two").await.expect("bl");
    assert!(bl.committed.is_empty());
    assert_eq!(bl.uncommitted.len(), 1);
    assert_eq!(bl.uncommitted[0].id, block_id(7));
    assert_eq!(
        s.block_list("p/none").await.expect("empty"),
        Default::default()
    );

    // Listing with paging: every name once, in order, the marker continues.
    for i in 0..7 {
        s.put(
            &format!("p/runs/r{i}.json"),
            Bytes::from(format!("{i}")),
            true,
        )
        .await
        .expect("put");
    }
    let mut names = Vec::new();
    let mut marker = None;
    let mut pages = 0;
    loop {
        let page = s.list("p/runs/", marker, 3).await.expect("list");
        pages += 1;
        names.extend(page.items.iter().map(|i| i.name.clone()));
        match page.next {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        names,
        (0..7)
            .map(|i| format!("p/runs/r{i}.json"))
            .collect::<Vec<_>>()
    );

    // Missing things, bad ranges, delete.
    assert_eq!(
        s.get("p/missing", None).await.expect_err("missing").kind(),
        ErrorKind::NotFound
    );
    assert!(s.head("p/missing").await.expect("head").is_none());
    assert_eq!(
        s.get("p/runs/r1.json", Some(0..5))
            .await
            .expect_err("past end")
            .kind(),
        ErrorKind::Integrity
    );
    assert_eq!(
        s.get("p/runs/r1.json", Some(10..20))
            .await
            .expect_err("past end")
            .kind(),
        ErrorKind::Integrity
    );
    assert_eq!(
        s.get("p/runs/r1.json", Some(1..1))
            .await
            .expect("empty")
            .len(),
        0
    );
    assert!(s.delete("p/runs/r1.json").await.expect("delete"));
    assert!(!s.delete("p/runs/r1.json").await.expect("delete again"));
    assert_eq!(
        s.set_tier("p/missing", Tier::Cool)
            .await
            .expect_err("tier")
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_azurite() {
    let Some(ep) = support::azurite() else { return };
    let c = support::unique_container("conf");
    let s = open_cs(&ep, &c, &fast_opts()).await;
    // Azure leases last 15–60 s; expiry itself is not waited out here (see
    // lease_excludes_and_is_taken_over_after_break for the takeover path).
    blobpipe::store::conformance::run_all_with(
        &s,
        "conf-azure",
        &blobpipe::store::conformance::Options {
            lease_ttl: Duration::from_secs(15),
            lease_expiry_ttl: None,
            instant_rehydrate: true,
        },
    )
    .await;
    let left = blobpipe::store::list_all(&s, "").await.expect("list");
    assert!(left.is_empty(), "checks left blobs behind: {left:?}");
    // The same suite under a root prefix taken from the URL.
    let s2 = AzureStore::open(
        &Secret::new(format!("{ep}/{c}/root/dir")),
        "unused",
        &fast_opts(),
        &no_env,
    )
    .expect("open");
    blobpipe::store::conformance::check_list_paging(&s2, "rooted").await;
    blobpipe::store::conformance::check_stage_commit_roundtrip(&s2, "rooted").await;
}

#[tokio::test]
async fn azure_only_properties() {
    let Some(ep) = support::azurite() else { return };
    let s = open_cs(&ep, &support::unique_container("props"), &fast_opts()).await;
    let name = "p/packs/cc/tiered";
    roundtrip(&s, name).await;

    // Tier, Content-MD5, metadata and index tags are visible on the service.
    let props = s.head(name).await.expect("head").expect("exists");
    assert_eq!(props.tier, Tier::Cool);
    assert_eq!(
        props.metadata.get("pipeline").map(String::as_str),
        Some("p1")
    );
    let tags = s.tags(name).await.expect("tags");
    assert_eq!(tags.get("kind").map(String::as_str), Some("pack"));
    let listed = s.list("p/packs/cc/", None, 10).await.expect("list");
    assert_eq!(listed.items[0].tier, Tier::Cool);

    // Create-only: a second commit conflicts, a second identical put is fine, a
    // different one conflicts.
    let x = data(10, 9);
    s.stage_block(name, &block_id(5), x.clone(), md5(&x))
        .await
        .expect("stage");
    let e = s
        .commit_blocks(
            name,
            &[block_id(5)],
            &CommitOptions {
                create_only: true,
                ..Default::default()
            },
        )
        .await
        .expect_err("exists");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(
        s.put("p/snapshots/s1", Bytes::from_static(b"manifest"), true)
            .await
            .expect("create"),
        PutOutcome::Created
    );
    assert_eq!(
        s.put("p/snapshots/s1", Bytes::from_static(b"manifest"), true)
            .await
            .expect("identical"),
        PutOutcome::AlreadyIdentical
    );
    assert_eq!(
        s.put("p/snapshots/s1", Bytes::from_static(b"other"), true)
            .await
            .expect_err("different")
            .kind(),
        ErrorKind::Conflict
    );

    // The service (not just our own check) rejects a wrong transactional MD5.
    let y = data(4096, 4);
    let e = s
        .stage_block("p/packs/dd/bad", &block_id(0), y.clone(), md5(b"other"))
        .await
        .expect_err("md5 mismatch");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(s
        .block_list("p/packs/dd/bad")
        .await
        .expect("bl")
        .uncommitted
        .is_empty());

    // Unknown block ids in a commit are an integrity error.
    let e = s
        .commit_blocks("p/packs/dd/bad", &[block_id(42)], &CommitOptions::default())
        .await
        .expect_err("unknown block");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");

    // Archive: reading fails with its own kind; set_tier back makes it readable again
    // on Azurite (on Azure it rehydrates for hours).
    s.set_tier(name, Tier::Archive).await.expect("archive");
    let e = s.get(name, Some(0..10)).await.expect_err("archived");
    assert_eq!(e.kind(), ErrorKind::Archived, "{e}");
    assert!(e.to_string().contains("rehydrate"));
}

#[tokio::test]
async fn lease_excludes_and_is_taken_over_after_break() {
    let Some(ep) = support::azurite() else { return };
    let c = support::unique_container("lease");
    let a = open_cs(&ep, &c, &fast_opts()).await;
    let b = open_cs(&ep, &c, &fast_opts()).await;
    let lease = a
        .acquire_lease("p/lock", Duration::from_secs(15), "run-A on host-1")
        .await
        .expect("A locks");
    let e = b
        .acquire_lease("p/lock", Duration::from_secs(15), "run-B")
        .await
        .expect_err("B refused");
    assert_eq!(e.kind(), ErrorKind::Locked);
    assert!(e.to_string().contains("run-A on host-1"), "{e}");
    a.renew_lease(&lease).await.expect("renew");
    // An operator's break (or expiry): B takes over, A has lost it.
    b.break_lease("p/lock").await.expect("break");
    let lb = b
        .acquire_lease("p/lock", Duration::from_secs(15), "run-B")
        .await
        .expect("B takes over");
    assert_eq!(
        a.renew_lease(&lease).await.expect_err("lost").kind(),
        ErrorKind::Locked
    );
    a.release_lease(&lease)
        .await
        .expect("release of a lost lease is a no-op");
    b.release_lease(&lb).await.expect("release");
    b.release_lease(&lb).await.expect("idempotent");
    let lc = a
        .acquire_lease("p/lock", Duration::from_secs(15), "run-C")
        .await
        .expect("free again");
    assert_eq!(&a.get("p/lock", None).await.expect("holder")[..], b"run-C");
    a.release_lease(&lc).await.expect("release");
}

#[tokio::test]
async fn signed_sas_from_key_and_sas_in_url_are_accepted() {
    let Some(ep) = support::azurite() else { return };
    let c = support::unique_container("sas");
    // Key from the environment → the store signs an account SAS.
    let env = |k: &str| (k == "AZURE_STORAGE_KEY").then(|| support::AZURITE_KEY.to_string());
    let url = format!("{ep}/{c}");
    let s =
        AzureStore::open(&Secret::new(url.clone()), "unused", &fast_opts(), &env).expect("open");
    assert_eq!(s.credential_kind(), CredentialKind::AccountKey);
    assert_eq!(s.credential_source(), "AZURE_STORAGE_KEY");
    s.ensure_container().await.expect("container");
    roundtrip(&s, "p/a").await;
    assert_eq!(s.sas_policy().expect("sas").signed_count(), 1);

    // A SAS token in the URL (signed independently here) → used as is.
    let signer =
        AccountSasSigner::new("devstoreaccount1", &Secret::new(support::AZURITE_KEY), true)
            .expect("signer");
    let (tok, _) = signer.token(chrono::Utc::now(), Duration::from_secs(600));
    let s2 = AzureStore::open(
        &Secret::new(format!("{url}?{}", tok.expose())),
        "unused",
        &fast_opts(),
        &no_env,
    )
    .expect("open");
    assert_eq!(s2.credential_kind(), CredentialKind::Sas);
    assert_eq!(&s2.get("p/a.rec", None).await.expect("read")[..], b"{}");

    // A wrong key is refused by the service with a clear, permanent error.
    let bad = |k: &str| {
        (k == "AZURE_STORAGE_KEY")
            .then(|| b64(b"definitely not the right key, 64 bytes long......."))
    };
    let s3 = AzureStore::open(&Secret::new(url), "unused", &fast_opts(), &bad).expect("open");
    let e = s3.get("p/a.rec", None).await.expect_err("forbidden");
    assert_eq!(e.kind(), ErrorKind::Store);
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("403"), "{e}");
    assert_eq!(s3.retries(), 0);
}

#[tokio::test]
async fn auth_check_reports_choice_and_abilities() {
    let Some(ep) = support::azurite() else { return };
    let c = support::unique_container("auth");
    let s = open_cs(&ep, &c, &fast_opts()).await;
    drop(s);
    let target = TargetConfig {
        location: StoreLocation::Azure(Secret::new(support::azurite_connection_string(&ep))),
        display_url: "(connection string)".into(),
        container: c.clone(),
        prefix: "pipe".into(),
        tier: Tier::Hot,
    };
    let r = auth_check_with(&target, &fast_opts(), &no_env)
        .await
        .expect("report");
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.credential, "key");
    let json = serde_json::to_string(&r).expect("serializable");
    assert!(!json.contains(support::AZURITE_KEY));
    let after = open_cs(&ep, &c, &fast_opts()).await;
    assert!(
        after.head(&r.probe_blob).await.expect("head").is_none(),
        "probe deleted"
    );

    // A read-only SAS: can list, cannot write, and the report says so.
    let signer =
        AccountSasSigner::new("devstoreaccount1", &Secret::new(support::AZURITE_KEY), true)
            .expect("signer");
    let mut p = signer.params(chrono::Utc::now(), Duration::from_secs(600));
    p.sp = "rl".into();
    let sig = signer.signature(&p);
    let q = format!(
        "sv={}&ss={}&srt={}&sp={}&st={}&se={}&spr={}&sig={}",
        p.sv,
        p.ss,
        p.srt,
        p.sp,
        p.st,
        p.se,
        "https,http",
        url_encode(&sig)
    );
    let ro = TargetConfig {
        location: StoreLocation::Azure(Secret::new(format!("{ep}/{c}?{q}"))),
        ..target
    };
    let r = auth_check_with(&ro, &fast_opts(), &no_env)
        .await
        .expect("report");
    assert_eq!(r.credential, "sas");
    assert!(r.can_list, "{r:?}");
    assert!(!r.can_write, "{r:?}");
    assert!(r.write_error.as_deref().unwrap_or_default().contains("403"));
}

fn url_encode(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_logs_errors_or_debug() {
    let Some(ep) = support::azurite() else { return };
    let buf = Captured::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(sub);

    let c = support::unique_container("secret");
    let signer =
        AccountSasSigner::new("devstoreaccount1", &Secret::new(support::AZURITE_KEY), true)
            .expect("signer");
    let (sas, _) = signer.token(chrono::Utc::now(), Duration::from_secs(600));
    let sig = sas
        .expose()
        .split('&')
        .find_map(|kv| kv.strip_prefix("sig="))
        .expect("sig")
        .to_string();
    let cs = support::azurite_connection_string(&ep);
    let key_env = |k: &str| (k == "AZURE_STORAGE_KEY").then(|| support::AZURITE_KEY.to_string());
    let mut seen = Vec::new();
    let cases: Vec<(String, EnvLookup<'_>)> = vec![
        (format!("{ep}/{c}"), &key_env),
        (format!("{ep}/{c}?{}", sas.expose()), &no_env),
        (cs.clone(), &no_env),
    ];
    for (loc, env) in cases {
        let s = AzureStore::open(&Secret::new(loc), &c, &fast_opts(), env).expect("open");
        s.ensure_container().await.expect("container");
        seen.push(format!("{s:?}"));
        seen.push(s.describe());
        s.put("p/x", Bytes::from_static(b"x"), false)
            .await
            .expect("put");
        s.get("p/x", Some(0..1)).await.expect("get");
        s.list("p/", None, 10).await.expect("list");
        for e in [
            s.get("p/missing", None).await.expect_err("missing"),
            s.stage_block("p/y", &block_id(0), Bytes::from_static(b"y"), [0; 16])
                .await
                .expect_err("md5"),
        ] {
            seen.push(e.to_string());
            seen.push(format!("{e:?}"));
        }
    }
    // A network error (nothing listens on port 1) carries the request URL inside the
    // HTTP client's error; the SAS must be gone from it.
    let dead = AzureStore::open(
        &Secret::new(format!(
            "http://127.0.0.1:1/devstoreaccount1/{c}?{}",
            sas.expose()
        )),
        &c,
        &AzureOptions {
            retry: RetryConfig {
                attempts: 2,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
                budget: Duration::from_secs(5),
            },
            io_timeout: Duration::from_secs(2),
        },
        &no_env,
    )
    .expect("open");
    let e = dead.get("p/x", None).await.expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::Store);
    assert!(e.is_retryable());
    seen.push(e.to_string());
    seen.push(format!("{e:?}"));
    // A refused plain-http target and a bad connection string echo nothing secret.
    for bad in [
        format!(
            "http://storage.example/devstoreaccount1/{c}?{}",
            sas.expose()
        ),
        format!(
            "AccountName=x;AccountKey={};DefaultEndpointsProtocol=http",
            support::AZURITE_KEY
        ),
    ] {
        let e = AzureStore::open(&Secret::new(bad), &c, &fast_opts(), &no_env).expect_err("bad");
        seen.push(e.to_string());
        seen.push(format!("{e:?}"));
    }
    let logs = String::from_utf8_lossy(&buf.0.lock().expect("poisoned")).to_string();
    assert!(
        logs.len() > 1000,
        "tracing captured too little to prove anything"
    );
    seen.push(logs);
    let all = seen.join("\n");
    for secret in [
        support::AZURITE_KEY,
        sas.expose(),
        sig.as_str(),
        cs.as_str(),
    ] {
        assert!(!all.contains(secret), "a secret leaked: …{}…", &secret[..8]);
    }
    // The URL-encoded form of the signature must not appear either.
    assert!(!all.contains(&url_encode(&sig)));
}

fn upstream_of(ep: &str) -> SocketAddr {
    let hostport = ep
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host");
    hostport.parse().expect("socket address")
}

#[tokio::test]
async fn ten_percent_faults_are_retried_transparently() {
    let Some(ep) = support::azurite() else { return };
    let c = support::unique_container("fault10");
    // Set up the container directly, then go through the proxy.
    drop(open_cs(&ep, &c, &fast_opts()).await);
    let mut cfg = FaultConfig::all(0.10, 7);
    cfg.stall = Duration::from_secs(3);
    let proxy = FaultProxy::start(upstream_of(&ep), cfg)
        .await
        .expect("proxy");
    let opts = AzureOptions {
        retry: RetryConfig {
            attempts: 10,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            budget: Duration::from_secs(60),
        },
        io_timeout: Duration::from_secs(1),
    };
    let s = AzureStore::open(
        &Secret::new(support::azurite_connection_string(
            &proxy.endpoint("devstoreaccount1"),
        )),
        &c,
        &opts,
        &no_env,
    )
    .expect("open");
    for i in 0..25 {
        roundtrip(&s, &format!("p/packs/f{i:02}")).await;
    }
    let lease = s
        .acquire_lease("p/lock", Duration::from_secs(15), "faulty run")
        .await
        .expect("lease under faults");
    s.renew_lease(&lease).await.expect("renew");
    s.release_lease(&lease).await.expect("release");
    let all = blobpipe::store::list_all(&s, "p/packs/")
        .await
        .expect("list");
    assert_eq!(all.len(), 50);
    let stats = &proxy.stats;
    let faulted = stats.faulted.load(std::sync::atomic::Ordering::Relaxed);
    let kinds = stats.kinds();
    assert!(kinds.len() >= 4, "too few fault kinds exercised: {kinds:?}");
    assert!(
        s.retries() >= faulted,
        "{faulted} faults injected but only {} retries counted",
        s.retries()
    );
    eprintln!(
        "requests {} faulted {faulted} ({kinds:?}) retries {}",
        stats.requests.load(std::sync::atomic::Ordering::Relaxed),
        s.retries()
    );
}

#[tokio::test]
async fn truncated_and_reset_responses_are_retried() {
    let Some(ep) = support::azurite() else { return };
    let c = support::unique_container("trunc");
    drop(open_cs(&ep, &c, &fast_opts()).await);
    let cfg = FaultConfig {
        rate: 0.3,
        seed: 11,
        kinds: vec![Fault::Truncate, Fault::ResetAfterForward],
        stall: Duration::from_secs(1),
    };
    let proxy = FaultProxy::start(upstream_of(&ep), cfg)
        .await
        .expect("proxy");
    let s = AzureStore::open(
        &Secret::new(support::azurite_connection_string(
            &proxy.endpoint("devstoreaccount1"),
        )),
        &c,
        &fast_opts(),
        &no_env,
    )
    .expect("open");
    for i in 0..6 {
        roundtrip(&s, &format!("p/t{i}")).await;
    }
    // Create-only writes whose first attempt succeeded but whose answer was lost: the
    // retry meets the blob and still reports success.
    for i in 0..6 {
        let name = format!("p/t{i}.manifest");
        let _ = s
            .put(&name, Bytes::from_static(b"m"), true)
            .await
            .expect("put");
    }
    let listed = blobpipe::store::list_all(&s, "p/").await.expect("list");
    assert_eq!(listed.len(), 18);
    assert_eq!(
        proxy.stats.kinds(),
        vec![Fault::ResetAfterForward, Fault::Truncate]
    );
    assert!(s.retries() > 0);
}

#[tokio::test]
async fn a_permanently_failing_service_fails_cleanly_within_the_budget() {
    let Some(ep) = support::azurite() else { return };
    let c = support::unique_container("fault100");
    drop(open_cs(&ep, &c, &fast_opts()).await);
    let cfg = FaultConfig {
        rate: 1.0,
        seed: 3,
        kinds: vec![
            Fault::Busy503,
            Fault::Internal500,
            Fault::Throttle429,
            Fault::ResetAfterForward,
            Fault::Truncate,
            Fault::Stall,
        ],
        stall: Duration::from_secs(2),
    };
    let proxy = FaultProxy::start(upstream_of(&ep), cfg)
        .await
        .expect("proxy");
    let attempts = 3;
    let opts = AzureOptions {
        retry: RetryConfig {
            attempts,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            budget: Duration::from_secs(20),
        },
        io_timeout: Duration::from_millis(500),
    };
    let s = AzureStore::open(
        &Secret::new(support::azurite_connection_string(
            &proxy.endpoint("devstoreaccount1"),
        )),
        &c,
        &opts,
        &no_env,
    )
    .expect("open");
    let x = data(1000, 1);
    let ops = 4u64;
    let e1 = s
        .stage_block("p/b", &block_id(0), x.clone(), md5(&x))
        .await
        .expect_err("stage fails");
    let e2 = s.put("p/r", x.clone(), true).await.expect_err("put fails");
    let e3 = s.get("p/r", Some(0..10)).await.expect_err("get fails");
    let e4 = s.list("p/", None, 10).await.expect_err("list fails");
    for e in [&e1, &e2, &e3, &e4] {
        assert_eq!(e.kind(), ErrorKind::Store, "{e}");
        assert!(e.to_string().contains("retries exhausted"), "{e}");
    }
    // Each operation used exactly its attempts, no more.
    assert_eq!(s.retries(), ops * u64::from(attempts - 1));
}

/// Issue 14: the lease of a dead holder is broken only while that holder still holds it.
#[tokio::test]
async fn break_lease_of_breaks_only_the_named_holder() {
    let Some(ep) = support::azurite() else { return };
    let c = support::unique_container("deadlease");
    let a = open_cs(&ep, &c, &fast_opts()).await;
    let b = open_cs(&ep, &c, &fast_opts()).await;
    let dead = "run A on host-1 (pid 4242) since t";
    let _la = a
        .acquire_lease("p/lock", Duration::from_secs(60), dead)
        .await
        .expect("A locks");
    assert!(
        !b.break_lease_of("p/lock", "run X on host-1 (pid 1) since t")
            .await
            .expect("no break"),
        "another holder's lease is left alone"
    );
    assert!(b.break_lease_of("p/lock", dead).await.expect("break"));
    let lb = b
        .acquire_lease(
            "p/lock",
            Duration::from_secs(60),
            "run B on host-1 (pid 7) since t",
        )
        .await
        .expect("B takes over at once");
    // A second breaker that saw the dead holder earlier must not break B's lease.
    assert!(!a.break_lease_of("p/lock", dead).await.expect("no break"));
    assert_eq!(
        a.acquire_lease("p/lock", Duration::from_secs(15), "run C")
            .await
            .expect_err("B still holds it")
            .kind(),
        ErrorKind::Locked
    );
    b.release_lease(&lb).await.expect("release");
}
