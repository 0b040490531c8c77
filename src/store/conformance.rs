//! The one store conformance suite: every [`BlobStore`] must pass it.
//!
//! The engine relies only on behaviour checked here, so a backend that passes can be
//! swapped for another (memory in unit tests, a directory on a laptop, Azure in
//! production) without the engine noticing. Each check is a public `async fn` that
//! panics with a message naming the check, the blob and what differed; [`run_all`] runs
//! them all. Every check works under its own sub-prefix of the `prefix` it is given, so
//! runs with distinct prefixes never see each other, and deletes what it created.
//!
//! Two behaviours depend on the backend's limits and are parameters ([`Options`]):
//! the lease ttl (Azure accepts 15–60 s), and whether lease expiry is exercised at
//! all (it waits out a ttl). [`run_all`] uses a 1 s expiry; an Azure run passes a
//! 15 s one or skips it via [`run_all_with`].
//!
//! Not checked, because Azure does not do it: that a commit's `content_md5` matches the
//! committed bytes (Azure stores it unverified; the local store verifies it anyway).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;

use super::{b64, md5, BlobStore, BlockInfo, CommitOptions, PutOutcome, Tier};
use crate::error::{ErrorKind, Result};

/// Backend-dependent knobs of a conformance run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Lease duration for the exclusion/renew/release checks (must be accepted by the
    /// backend; Azure: 15–60 s).
    pub lease_ttl: Duration,
    /// Lease duration for the expiry check, which waits it out; `None` skips the check.
    pub lease_expiry_ttl: Option<Duration>,
    /// Whether setting an Archive blob back to Hot makes it readable at once (true for
    /// every store here and Azurite; real Azure rehydrates in hours).
    pub instant_rehydrate: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(30),
            lease_expiry_ttl: Some(Duration::from_secs(1)),
            instant_rehydrate: true,
        }
    }
}

/// Run every check with default [`Options`] (1 s lease expiry).
///
/// # Panics
/// On the first behaviour that differs from the contract.
pub async fn run_all(store: &dyn BlobStore, prefix: &str) {
    run_all_with(store, prefix, &Options::default()).await;
}

/// Run every check with backend-specific `opts`.
///
/// # Panics
/// On the first behaviour that differs from the contract.
pub async fn run_all_with(store: &dyn BlobStore, prefix: &str, opts: &Options) {
    check_stage_commit_roundtrip(store, prefix).await;
    check_stage_wrong_md5(store, prefix).await;
    check_commit_unknown_block(store, prefix).await;
    check_commit_create_only_conflict(store, prefix).await;
    check_recommit_reusing_blocks(store, prefix).await;
    check_block_list(store, prefix).await;
    check_put_create_only(store, prefix).await;
    check_ranged_get(store, prefix).await;
    check_missing(store, prefix).await;
    check_list_paging(store, prefix).await;
    check_list_prefix_isolation(store, prefix).await;
    check_delete(store, prefix).await;
    check_archive(store, prefix, opts.instant_rehydrate).await;
    check_lease_exclusion(store, prefix, opts.lease_ttl).await;
    if let Some(ttl) = opts.lease_expiry_ttl {
        check_lease_expiry(store, prefix, ttl).await;
    }
    check_concurrent_create_only(store, prefix).await;
}

// ---- helpers ----------------------------------------------------------------------

fn join(prefix: &str, rest: &str) -> String {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        rest.to_string()
    } else {
        format!("{p}/{rest}")
    }
}

/// Block ids of equal length (Azure requires it within one blob).
fn block_id(i: u32) -> String {
    b64(format!("blk-{i:06}").as_bytes())
}

/// Deterministic test bytes, different per `seed`.
fn data(len: usize, seed: u8) -> Bytes {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect::<Vec<u8>>()
        .into()
}

fn ok<T>(res: Result<T>, check: &str, what: &str) -> T {
    match res {
        Ok(v) => v,
        Err(e) => panic!("[{check}] {what}: unexpected error {:?}: {e}", e.kind()),
    }
}

fn err<T: std::fmt::Debug>(res: Result<T>, kind: ErrorKind, check: &str, what: &str) -> String {
    match res {
        Ok(v) => panic!("[{check}] {what}: expected {kind:?}, got Ok({v:?})"),
        Err(e) if e.kind() == kind => e.to_string(),
        Err(e) => panic!(
            "[{check}] {what}: expected {kind:?}, got {:?}: {e}",
            e.kind()
        ),
    }
}

async fn stage(store: &dyn BlobStore, check: &str, blob: &str, id: &str, bytes: &Bytes) {
    ok(
        store.stage_block(blob, id, bytes.clone(), md5(bytes)).await,
        check,
        &format!("staging block {id} of {blob}"),
    );
}

async fn commit(store: &dyn BlobStore, check: &str, blob: &str, ids: &[String], create_only: bool) {
    let opts = CommitOptions {
        create_only,
        ..CommitOptions::default()
    };
    ok(
        store.commit_blocks(blob, ids, &opts).await,
        check,
        &format!("committing {blob}"),
    );
}

async fn get_all(store: &dyn BlobStore, check: &str, blob: &str) -> Bytes {
    ok(
        store.get(blob, None).await,
        check,
        &format!("reading {blob}"),
    )
}

async fn cleanup(store: &dyn BlobStore, check: &str, blobs: &[&str]) {
    for b in blobs {
        ok(store.delete(b).await, check, &format!("deleting {b}"));
    }
}

async fn list_names(store: &dyn BlobStore, check: &str, prefix: &str) -> Vec<String> {
    ok(
        super::list_all(store, prefix).await,
        check,
        &format!("listing {prefix}"),
    )
    .into_iter()
    .map(|i| i.name)
    .collect()
}

/// Poll all `futs` concurrently on this task (the suite takes `&dyn BlobStore`, so it
/// cannot spawn `'static` tasks).
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

// ---- checks -----------------------------------------------------------------------

/// A 3 MiB blob staged as three blocks and committed with tier, Content-MD5 and
/// metadata reads back whole, and `head`/`block_list` show what was committed.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_stage_commit_roundtrip(store: &dyn BlobStore, prefix: &str) {
    let c = "stage_commit_roundtrip";
    let blob = join(prefix, "roundtrip/packs/ab/pack.tar.zst");
    let sizes = [1 << 20, 1 << 20, (1 << 20) + 12_345];
    let mut whole = Vec::new();
    let mut ids = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let id = block_id(i as u32);
        let bytes = data(*size, i as u8 + 1);
        whole.extend_from_slice(&bytes);
        stage(store, c, &blob, &id, &bytes).await;
        ids.push(id);
    }
    assert_eq!(
        ok(store.head(&blob).await, c, "head before commit"),
        None,
        "[{c}] {blob}: visible before its block list was committed"
    );
    let metadata: BTreeMap<String, String> = [
        ("pipeline".to_string(), "conformance".to_string()),
        ("format".to_string(), "1".to_string()),
    ]
    .into();
    let opts = CommitOptions {
        tier: Tier::Cool,
        content_md5: Some(md5(&whole)),
        metadata: metadata.clone(),
        tags: [("kind".to_string(), "pack".to_string())].into(),
        create_only: true,
    };
    ok(store.commit_blocks(&blob, &ids, &opts).await, c, "commit");
    let props = ok(store.head(&blob).await, c, "head")
        .unwrap_or_else(|| panic!("[{c}] {blob}: head is None after commit"));
    assert_eq!(props.size, whole.len() as u64, "[{c}] {blob}: size");
    assert_eq!(props.tier, Tier::Cool, "[{c}] {blob}: tier");
    assert_eq!(
        props.content_md5,
        Some(md5(&whole)),
        "[{c}] {blob}: content_md5"
    );
    assert_eq!(props.metadata, metadata, "[{c}] {blob}: metadata");
    let got = get_all(store, c, &blob).await;
    assert!(
        got[..] == whole[..],
        "[{c}] {blob}: content differs after roundtrip"
    );
    let bl = ok(store.block_list(&blob).await, c, "block_list");
    let want: Vec<BlockInfo> = ids
        .iter()
        .zip(sizes)
        .map(|(id, size)| BlockInfo {
            id: id.clone(),
            size: size as u64,
        })
        .collect();
    assert_eq!(bl.committed, want, "[{c}] {blob}: committed block list");
    assert!(
        bl.uncommitted.is_empty(),
        "[{c}] {blob}: uncommitted blocks left after commit: {:?}",
        bl.uncommitted
    );
    cleanup(store, c, &[&blob]).await;
}

/// A block whose data does not match its MD5 is rejected with `Integrity` and not staged.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_stage_wrong_md5(store: &dyn BlobStore, prefix: &str) {
    let c = "stage_wrong_md5";
    let blob = join(prefix, "badmd5/blob");
    let id = block_id(0);
    let bytes = data(1000, 7);
    let mut bad = md5(&bytes);
    bad[0] ^= 0xff;
    err(
        store.stage_block(&blob, &id, bytes, bad).await,
        ErrorKind::Integrity,
        c,
        "staging with a wrong MD5",
    );
    let bl = ok(store.block_list(&blob).await, c, "block_list");
    assert!(
        bl.uncommitted.iter().all(|b| b.id != id),
        "[{c}] {blob}: a block with a wrong MD5 was staged anyway"
    );
    err(
        store
            .commit_blocks(&blob, &[id], &CommitOptions::default())
            .await,
        ErrorKind::Integrity,
        c,
        "committing the rejected block",
    );
    assert_eq!(ok(store.head(&blob).await, c, "head"), None);
}

/// Committing an id that is neither staged nor committed fails with `Integrity` and
/// publishes nothing.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_commit_unknown_block(store: &dyn BlobStore, prefix: &str) {
    let c = "commit_unknown_block";
    let blob = join(prefix, "unknown/blob");
    stage(store, c, &blob, &block_id(0), &data(100, 1)).await;
    err(
        store
            .commit_blocks(
                &blob,
                &[block_id(0), block_id(9)],
                &CommitOptions::default(),
            )
            .await,
        ErrorKind::Integrity,
        c,
        "committing an unknown block id",
    );
    assert_eq!(
        ok(store.head(&blob).await, c, "head"),
        None,
        "[{c}] {blob}: a failed commit published a blob"
    );
    cleanup(store, c, &[&blob]).await;
}

/// A create-only commit onto an existing blob fails with `Conflict` and leaves it intact.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_commit_create_only_conflict(store: &dyn BlobStore, prefix: &str) {
    let c = "commit_create_only_conflict";
    let blob = join(prefix, "conflict/manifest.jsonl.gz");
    let first = data(500, 1);
    stage(store, c, &blob, &block_id(0), &first).await;
    commit(store, c, &blob, &[block_id(0)], true).await;
    stage(store, c, &blob, &block_id(1), &data(600, 2)).await;
    let opts = CommitOptions {
        create_only: true,
        ..CommitOptions::default()
    };
    err(
        store.commit_blocks(&blob, &[block_id(1)], &opts).await,
        ErrorKind::Conflict,
        c,
        "second create-only commit",
    );
    assert_eq!(
        get_all(store, c, &blob).await,
        first,
        "[{c}] {blob}: a conflicting create-only commit changed the blob"
    );
    cleanup(store, c, &[&blob]).await;
}

/// A non-create-only commit may reuse ids committed in the current blob, in any order,
/// mixed with newly staged ones.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_recommit_reusing_blocks(store: &dyn BlobStore, prefix: &str) {
    let c = "recommit_reusing_blocks";
    let blob = join(prefix, "recommit/blob");
    let (a, b, cc, d) = (data(300, 1), data(400, 2), data(500, 3), data(50, 4));
    for (i, bytes) in [&a, &b, &cc].into_iter().enumerate() {
        stage(store, c, &blob, &block_id(i as u32), bytes).await;
    }
    commit(
        store,
        c,
        &blob,
        &[block_id(0), block_id(1), block_id(2)],
        false,
    )
    .await;
    stage(store, c, &blob, &block_id(3), &d).await;
    commit(
        store,
        c,
        &blob,
        &[block_id(2), block_id(3), block_id(0)],
        false,
    )
    .await;
    let want = [&cc[..], &d[..], &a[..]].concat();
    assert!(
        get_all(store, c, &blob).await[..] == want[..],
        "[{c}] {blob}: content after recommit with reused blocks"
    );
    let committed: Vec<(String, u64)> = ok(store.block_list(&blob).await, c, "block_list")
        .committed
        .into_iter()
        .map(|b| (b.id, b.size))
        .collect();
    assert_eq!(
        committed,
        vec![(block_id(2), 500), (block_id(3), 50), (block_id(0), 300)],
        "[{c}] {blob}: committed block list after recommit"
    );
    // Block 1 was dropped by the second commit: it cannot be reused any more.
    err(
        store
            .commit_blocks(&blob, &[block_id(1)], &CommitOptions::default())
            .await,
        ErrorKind::Integrity,
        c,
        "reusing a block the current blob no longer has",
    );
    cleanup(store, c, &[&blob]).await;
}

/// `block_list` shows staged blocks as uncommitted, and after a commit only the
/// committed ones (uncommitted blocks are discarded).
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_block_list(store: &dyn BlobStore, prefix: &str) {
    let c = "block_list";
    let blob = join(prefix, "blocklist/blob");
    let empty = ok(
        store.block_list(&blob).await,
        c,
        "block_list of a missing blob",
    );
    assert!(
        empty.committed.is_empty() && empty.uncommitted.is_empty(),
        "[{c}] {blob}: block list of a missing blob is not empty: {empty:?}"
    );
    stage(store, c, &blob, &block_id(0), &data(10, 1)).await;
    stage(store, c, &blob, &block_id(1), &data(20, 2)).await;
    // Staging an id again replaces the block.
    stage(store, c, &blob, &block_id(1), &data(25, 3)).await;
    let bl = ok(store.block_list(&blob).await, c, "block_list after staging");
    assert!(
        bl.committed.is_empty(),
        "[{c}] {blob}: committed before commit"
    );
    let unc: BTreeSet<(String, u64)> = bl.uncommitted.into_iter().map(|b| (b.id, b.size)).collect();
    assert_eq!(
        unc,
        [(block_id(0), 10), (block_id(1), 25)].into(),
        "[{c}] {blob}: uncommitted blocks"
    );
    commit(store, c, &blob, &[block_id(1)], true).await;
    assert_eq!(
        get_all(store, c, &blob).await,
        data(25, 3),
        "[{c}] restaged block content"
    );
    let bl = ok(store.block_list(&blob).await, c, "block_list after commit");
    assert_eq!(
        bl.committed,
        vec![BlockInfo {
            id: block_id(1),
            size: 25
        }],
        "[{c}] {blob}: committed blocks"
    );
    assert!(
        bl.uncommitted.is_empty(),
        "[{c}] {blob}: uncommitted blocks survived a commit: {:?}",
        bl.uncommitted
    );
    cleanup(store, c, &[&blob]).await;
}

/// Create-only put: identical content is `AlreadyIdentical`, different is `Conflict`;
/// a plain put overwrites.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_put_create_only(store: &dyn BlobStore, prefix: &str) {
    let c = "put_create_only";
    let blob = join(prefix, "put/parts/run-1/0.json");
    let first = Bytes::from_static(b"{\"partition\":0}");
    assert_eq!(
        ok(store.put(&blob, first.clone(), true).await, c, "first put"),
        PutOutcome::Created
    );
    assert_eq!(
        ok(
            store.put(&blob, first.clone(), true).await,
            c,
            "identical put"
        ),
        PutOutcome::AlreadyIdentical,
        "[{c}] {blob}: identical create-only put"
    );
    err(
        store
            .put(&blob, Bytes::from_static(b"{\"partition\":1}"), true)
            .await,
        ErrorKind::Conflict,
        c,
        "different create-only put",
    );
    assert_eq!(
        get_all(store, c, &blob).await,
        first,
        "[{c}] {blob}: content after conflict"
    );
    let props = ok(store.head(&blob).await, c, "head").unwrap_or_else(|| panic!("[{c}] no head"));
    assert_eq!(props.size, first.len() as u64, "[{c}] {blob}: size");
    let second = Bytes::from_static(b"overwritten");
    assert_eq!(
        ok(
            store.put(&blob, second.clone(), false).await,
            c,
            "overwrite"
        ),
        PutOutcome::Created
    );
    assert_eq!(
        get_all(store, c, &blob).await,
        second,
        "[{c}] {blob}: overwrite"
    );
    cleanup(store, c, &[&blob]).await;
}

/// Ranged reads: start, middle, end, empty ranges; past the end is `Integrity`.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_ranged_get(store: &dyn BlobStore, prefix: &str) {
    let c = "ranged_get";
    let blob = join(prefix, "range/blob");
    let bytes = data(10_000, 9);
    stage(store, c, &blob, &block_id(0), &bytes.slice(..4096)).await;
    stage(store, c, &blob, &block_id(1), &bytes.slice(4096..)).await;
    commit(store, c, &blob, &[block_id(0), block_id(1)], true).await;
    for r in [
        0..10,
        4000..5000,
        4095..4097,
        9_990..10_000,
        0..10_000,
        500..500,
        10_000..10_000,
    ] {
        let got = ok(
            store.get(&blob, Some(r.clone())).await,
            c,
            &format!("reading {r:?} of {blob}"),
        );
        assert_eq!(
            got,
            bytes.slice(r.start as usize..r.end as usize),
            "[{c}] {blob}: range {r:?}"
        );
    }
    for r in [9_990..10_001, 10_001..10_002, 20_000..20_010] {
        err(
            store.get(&blob, Some(r.clone())).await,
            ErrorKind::Integrity,
            c,
            &format!("reading {r:?} of a 10000-byte blob"),
        );
    }
    cleanup(store, c, &[&blob]).await;
}

/// A missing blob: `get` and `set_tier` are `NotFound`, `head` is `None`, `delete` is
/// `false`, `block_list` is empty.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_missing(store: &dyn BlobStore, prefix: &str) {
    let c = "missing";
    let blob = join(prefix, "missing/nothing-here");
    err(
        store.get(&blob, None).await,
        ErrorKind::NotFound,
        c,
        "get of a missing blob",
    );
    err(
        store.get(&blob, Some(0..1)).await,
        ErrorKind::NotFound,
        c,
        "ranged get of a missing blob",
    );
    assert_eq!(
        ok(store.head(&blob).await, c, "head"),
        None,
        "[{c}] head of missing"
    );
    err(
        store.set_tier(&blob, Tier::Cool).await,
        ErrorKind::NotFound,
        c,
        "set_tier of a missing blob",
    );
    assert!(
        !ok(store.delete(&blob).await, c, "delete"),
        "[{c}] delete of missing said it existed"
    );
}

/// Paging with `max = 2` over 5 blobs returns them all, in name order, once, and ends.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_list_paging(store: &dyn BlobStore, prefix: &str) {
    let c = "list_paging";
    let base = join(prefix, "paging/");
    // Chosen so that directory-shaped names interleave with plain ones in byte order:
    // "k-1" < "k/x" < "k/y/z" < "k0" < "l".
    let rels = ["l", "k/y/z", "k0", "k-1", "k/x"];
    let mut want: Vec<String> = rels.iter().map(|r| format!("{base}{r}")).collect();
    let mut sizes = BTreeMap::new();
    for (i, name) in want.iter().enumerate() {
        ok(
            store.put(name, data(i + 1, i as u8), true).await,
            c,
            &format!("put {name}"),
        );
        sizes.insert(name.clone(), i as u64 + 1);
    }
    want.sort();
    let mut got = Vec::new();
    let mut marker = None;
    for page_no in 0.. {
        assert!(page_no < 10, "[{c}] listing {base} never ends: {got:?}");
        let page = ok(store.list(&base, marker, 2).await, c, "list page");
        assert!(
            page.items.len() <= 2,
            "[{c}] page larger than max: {:?}",
            page.items
        );
        for it in &page.items {
            let size = sizes
                .get(&it.name)
                .unwrap_or_else(|| panic!("[{c}] listed unexpected {}", it.name));
            assert_eq!(it.size, *size, "[{c}] listed size of {}", it.name);
        }
        got.extend(page.items.into_iter().map(|i| i.name));
        match page.next {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    assert_eq!(
        got, want,
        "[{c}] paged listing of {base} (order, duplicates, completeness)"
    );
    let refs: Vec<&str> = want.iter().map(String::as_str).collect();
    cleanup(store, c, &refs).await;
}

/// Listing is by string prefix: `a/b/` sees only `a/b/…`, `a/b` also sees `a/bc`.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_list_prefix_isolation(store: &dyn BlobStore, prefix: &str) {
    let c = "list_prefix_isolation";
    let base = join(prefix, "iso/");
    let rels = ["a/b/1", "a/b/2", "a/bc", "a/bcd/3", "a/c", "ab"];
    let names: Vec<String> = rels.iter().map(|r| format!("{base}{r}")).collect();
    for n in &names {
        ok(
            store.put(n, Bytes::from_static(b"x"), true).await,
            c,
            &format!("put {n}"),
        );
    }
    let cases: [(&str, &[&str]); 6] = [
        ("a/b/", &["a/b/1", "a/b/2"]),
        ("a/b", &["a/b/1", "a/b/2", "a/bc", "a/bcd/3"]),
        ("a/bc", &["a/bc", "a/bcd/3"]),
        ("a/b/1", &["a/b/1"]),
        ("a/x", &[]),
        ("a", &["a/b/1", "a/b/2", "a/bc", "a/bcd/3", "a/c", "ab"]),
    ];
    for (p, want) in cases {
        let p = format!("{base}{p}");
        let want: Vec<String> = want.iter().map(|r| format!("{base}{r}")).collect();
        assert_eq!(
            list_names(store, c, &p).await,
            want,
            "[{c}] listing prefix {p:?}"
        );
    }
    // A page boundary inside a prefix listing.
    let p = format!("{base}a/b");
    let page = ok(store.list(&p, None, 1).await, c, "first page");
    let page2 = ok(store.list(&p, page.next.clone(), 3).await, c, "second page");
    let got: Vec<String> = page
        .items
        .into_iter()
        .chain(page2.items)
        .map(|i| i.name)
        .collect();
    assert_eq!(
        got,
        ["a/b/1", "a/b/2", "a/bc", "a/bcd/3"].map(|r| format!("{base}{r}")),
        "[{c}] paged prefix listing"
    );
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    cleanup(store, c, &refs).await;
    assert!(
        list_names(store, c, &base).await.is_empty(),
        "[{c}] blobs left after delete"
    );
}

/// `delete` reports whether the blob existed, and the blob is gone from `head`/`list`.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_delete(store: &dyn BlobStore, prefix: &str) {
    let c = "delete";
    let blob = join(prefix, "delete/blob");
    ok(
        store.put(&blob, Bytes::from_static(b"bye"), true).await,
        c,
        "put",
    );
    assert!(
        ok(store.delete(&blob).await, c, "delete"),
        "[{c}] {blob}: delete said missing"
    );
    assert!(
        !ok(store.delete(&blob).await, c, "delete again"),
        "[{c}] {blob}: deleted twice"
    );
    assert_eq!(
        ok(store.head(&blob).await, c, "head"),
        None,
        "[{c}] {blob}: head after delete"
    );
    err(
        store.get(&blob, None).await,
        ErrorKind::NotFound,
        c,
        "get after delete",
    );
    assert!(
        list_names(store, c, &join(prefix, "delete/"))
            .await
            .is_empty(),
        "[{c}] {blob}: still listed after delete"
    );
    // The name can be created again.
    assert_eq!(
        ok(
            store.put(&blob, Bytes::from_static(b"again"), true).await,
            c,
            "put again"
        ),
        PutOutcome::Created
    );
    cleanup(store, c, &[&blob]).await;
}

/// Tiers: Archive blobs are `Archived` on read (whole or ranged) and show their tier;
/// with `instant_rehydrate`, setting Hot makes them readable again.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_archive(store: &dyn BlobStore, prefix: &str, instant_rehydrate: bool) {
    let c = "archive";
    let blob = join(prefix, "tier/blob");
    let bytes = data(2000, 5);
    stage(store, c, &blob, &block_id(0), &bytes).await;
    commit(store, c, &blob, &[block_id(0)], true).await;
    ok(store.set_tier(&blob, Tier::Cool).await, c, "set_tier Cool");
    assert_eq!(
        get_all(store, c, &blob).await,
        bytes,
        "[{c}] Cool blob readable"
    );
    ok(
        store.set_tier(&blob, Tier::Archive).await,
        c,
        "set_tier Archive",
    );
    let props = ok(store.head(&blob).await, c, "head").unwrap_or_else(|| panic!("[{c}] no head"));
    assert_eq!(
        props.tier,
        Tier::Archive,
        "[{c}] {blob}: tier after set_tier"
    );
    let listed = ok(
        store.list(&join(prefix, "tier/"), None, 10).await,
        c,
        "list",
    );
    assert_eq!(
        listed.items.iter().map(|i| i.tier).collect::<Vec<_>>(),
        vec![Tier::Archive],
        "[{c}] listed tier"
    );
    let msg = err(
        store.get(&blob, None).await,
        ErrorKind::Archived,
        c,
        "get of Archive",
    );
    assert!(
        msg.to_lowercase().contains("rehydrat"),
        "[{c}] the Archived error should say to rehydrate: {msg}"
    );
    err(
        store.get(&blob, Some(0..10)).await,
        ErrorKind::Archived,
        c,
        "ranged get of Archive",
    );
    if instant_rehydrate {
        ok(store.set_tier(&blob, Tier::Hot).await, c, "set_tier Hot");
        assert_eq!(
            get_all(store, c, &blob).await,
            bytes,
            "[{c}] readable after rehydrate"
        );
    }
    cleanup(store, c, &[&blob]).await;
}

/// Leases exclude: a second acquire is `Locked` naming the holder; renew works;
/// release lets another acquire; an old lease id can neither renew nor release the new.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_lease_exclusion(store: &dyn BlobStore, prefix: &str, ttl: Duration) {
    let c = "lease_exclusion";
    let blob = join(prefix, "lease/lock");
    let l1 = ok(
        store.acquire_lease(&blob, ttl, "run-one@host-a").await,
        c,
        "acquire 1",
    );
    assert_eq!(l1.blob, blob, "[{c}] lease names its blob");
    assert_eq!(
        get_all(store, c, &blob).await,
        Bytes::from_static(b"run-one@host-a"),
        "[{c}] {blob}: a created lease blob holds the holder text"
    );
    let msg = err(
        store.acquire_lease(&blob, ttl, "run-two@host-b").await,
        ErrorKind::Locked,
        c,
        "second acquire while held",
    );
    assert!(
        msg.contains("run-one@host-a"),
        "[{c}] Locked message should name the holder: {msg}"
    );
    ok(store.renew_lease(&l1).await, c, "renew");
    err(
        store.acquire_lease(&blob, ttl, "run-two@host-b").await,
        ErrorKind::Locked,
        c,
        "acquire after renew",
    );
    ok(store.release_lease(&l1).await, c, "release");
    ok(
        store.release_lease(&l1).await,
        c,
        "release again (idempotent)",
    );
    let l2 = ok(
        store.acquire_lease(&blob, ttl, "run-two@host-b").await,
        c,
        "acquire after release",
    );
    assert_ne!(l1.id, l2.id, "[{c}] a new lease must have a new id");
    err(
        store.renew_lease(&l1).await,
        ErrorKind::Locked,
        c,
        "renew of a released lease",
    );
    ok(
        store.release_lease(&l1).await,
        c,
        "release of an old lease is a no-op",
    );
    let msg = err(
        store.acquire_lease(&blob, ttl, "run-three").await,
        ErrorKind::Locked,
        c,
        "acquire after a stale release",
    );
    assert!(
        msg.contains("run-two@host-b"),
        "[{c}] Locked message should name the holder: {msg}"
    );
    ok(store.release_lease(&l2).await, c, "release 2");
    cleanup(store, c, &[&blob]).await;
}

/// An expired lease is taken over by the next acquire; the old holder has lost it.
/// Waits `ttl` plus a margin.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_lease_expiry(store: &dyn BlobStore, prefix: &str, ttl: Duration) {
    let c = "lease_expiry";
    let blob = join(prefix, "lease-expiry/lock");
    let l1 = ok(
        store.acquire_lease(&blob, ttl, "crashed-run").await,
        c,
        "acquire 1",
    );
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    let l2 = ok(
        store.acquire_lease(&blob, ttl * 30, "next-run").await,
        c,
        "acquire after the first lease expired",
    );
    err(
        store.renew_lease(&l1).await,
        ErrorKind::Locked,
        c,
        "renew of a lost lease",
    );
    ok(
        store.release_lease(&l1).await,
        c,
        "release of a lost lease is a no-op",
    );
    let msg = err(
        store.acquire_lease(&blob, ttl, "third-run").await,
        ErrorKind::Locked,
        c,
        "acquire while the new lease is live",
    );
    assert!(
        msg.contains("next-run"),
        "[{c}] Locked message should name the new holder: {msg}"
    );
    ok(store.renew_lease(&l2).await, c, "renew of the new lease");
    ok(store.release_lease(&l2).await, c, "release 2");
    cleanup(store, c, &[&blob]).await;
}

/// Eight concurrent create-only puts of one name with different content: exactly one
/// `Created`, the rest `Conflict`, and the blob holds the winner's bytes.
///
/// # Panics
/// When the store differs from the contract.
pub async fn check_concurrent_create_only(store: &dyn BlobStore, prefix: &str) {
    let c = "concurrent_create_only";
    let blob = join(prefix, "race/snapshots/manifest.jsonl.gz");
    let contents: Vec<Bytes> = (0..8u8).map(|i| data(4096 + usize::from(i), i)).collect();
    let results = join_all(
        contents
            .iter()
            .map(|d| store.put(&blob, d.clone(), true))
            .collect(),
    )
    .await;
    let mut winner = None;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(PutOutcome::Created) => {
                assert!(
                    winner.is_none(),
                    "[{c}] {blob}: two create-only puts both created it"
                );
                winner = Some(i);
            }
            Ok(PutOutcome::AlreadyIdentical) => {
                panic!("[{c}] {blob}: put {i} saw identical content, but all contents differ")
            }
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => panic!(
                "[{c}] {blob}: put {i}: expected Conflict, got {:?}: {e}",
                e.kind()
            ),
        }
    }
    let w = winner.unwrap_or_else(|| panic!("[{c}] {blob}: no create-only put won"));
    assert_eq!(
        get_all(store, c, &blob).await,
        contents[w],
        "[{c}] {blob}: winner's content"
    );
    cleanup(store, c, &[&blob]).await;
}
