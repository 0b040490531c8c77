//! The store conformance suite against every store that runs without a network.

use blobpipe::store::conformance;
use blobpipe::store::local::LocalStore;
use blobpipe::store::memory::MemoryStore;

#[tokio::test]
async fn memory_store_conforms() {
    let store = MemoryStore::new("conformance");
    conformance::run_all(&store, "conf-mem").await;
    assert!(
        store.names().is_empty(),
        "checks left blobs behind: {:?}",
        store.names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conforms() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let store = LocalStore::open(&dir.path().join("container")).expect("open");
    conformance::run_all(&store, "conf-local").await;
    let left = blobpipe::store::list_all(&store, "").await.expect("list");
    assert!(left.is_empty(), "checks left blobs behind: {left:?}");
}

#[tokio::test]
async fn local_store_conforms_with_empty_prefix() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let store = LocalStore::open(dir.path()).expect("open");
    conformance::run_all_with(
        &store,
        "",
        &conformance::Options {
            lease_expiry_ttl: None,
            ..Default::default()
        },
    )
    .await;
}
