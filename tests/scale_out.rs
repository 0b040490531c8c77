//! Scale-out (issue 13): one run's partitions as queue work for many `blobpipe work`
//! processes, committed exactly once. Real processes of the built binary, the file queue
//! with the local store, and Azurite's blob and queue services through a counting proxy:
//! four workers commit the snapshot one process would; `kill -9` of a worker mid-partition
//! loses nothing, duplicates nothing and uploads no block twice; racing finalizers make
//! one manifest; a partition that always fails is dead-lettered and nothing commits; a
//! worker of another run leaves foreign messages alone; streamed sources are refused;
//! an `[encryption]` pipeline scales out with every record and message sealed, and a
//! worker with a wrong key leaves the queue to those with the right one.
//! Verification split by pack batches: three workers' merged report equals `verify
//! --full`; a pack damaged after the commit is named and the run exits 3; `kill -9` of a
//! verify worker redelivers its batch and no pack is counted twice; a batch that always
//! fails is dead-lettered and the run is `committed_unverified` naming its packs.

mod common;
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use blobpipe::manifest::catalog;
use blobpipe::manifest::layout::Layout;
use blobpipe::manifest::Entry;
use blobpipe::restore::{restore, RestoreOptions};
use blobpipe::store::Store;
use common::*;
use serde_json::Value;
use support::faultproxy::{Fault, FaultConfig, FaultProxy, Filter, Seen};

/// Small frames, blocks, packs and partitions: a small tree makes many partitions and
/// packs of several blocks.
const SMALL: &str = "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\nsize = \"64KiB\"\nmax_entries = 16\n[verify]\nmode = \"full\"\n[retry]\nattempts = 3\ninitial_backoff = \"10ms\"\nmax_backoff = \"100ms\"\n";

fn blobpipe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blobpipe"));
    c.env_remove("CONTAINER_APP_JOB_EXECUTION_NAME")
        .env_remove("BLOBPIPE_WORK_QUEUE")
        .env_remove("BLOBPIPE_PIPELINES")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("AZURE_STORAGE_SAS_TOKEN");
    c
}

fn run(args: &[&str]) -> Output {
    let o = blobpipe().args(args).output().expect("run blobpipe");
    eprintln!(
        "blobpipe {args:?}: exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A tree in `src`, a pipeline `name` backing it up into a local store with [`SMALL`]
/// settings, and where its directory queue goes.
fn fixture(name: &str) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    let pf = write_pipeline(
        t.path(),
        name,
        &src,
        &format!("file://{}", t.path().join("store").display()),
        SMALL,
    );
    let q = t.path().join("queue");
    (t, src, pf, q)
}

/// `blobpipe plan PIPELINE --queue QUEUE --run-id RUN`, which must succeed.
fn plan_ok(pf: &Path, q: &Path, run_id: &str) {
    let o = run(&["plan", s(pf), "--queue", s(q), "--run-id", run_id]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `blobpipe --json work PIPELINE --queue QUEUE --run-id RUN --poll 100ms EXTRA…`.
fn work(pf: &Path, queue: &str, run_id: &str, extra: &[&str]) -> Output {
    let mut a = vec![
        "--json",
        "work",
        s(pf),
        "--queue",
        queue,
        "--run-id",
        run_id,
    ];
    a.extend_from_slice(extra);
    a.extend(["--poll", "100ms"]);
    run(&a)
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).expect("one JSON document on stdout")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A tree of many small files in dirs, some bigger files, and the varied sample tree.
fn tree(root: &Path) {
    sample_tree(&root.join("sample"));
    for d in 0..8 {
        let dir = root.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).expect("dir");
        for f in 0..20 {
            std::fs::write(
                dir.join(format!("f{f:02}.txt")),
                format!("{d}/{f}\n").repeat(f + 1),
            )
            .expect("write");
        }
    }
    for i in 0..4u64 {
        std::fs::write(root.join(format!("big-{i}.bin")), noise(300_000, i + 7)).expect("big");
    }
}

/// What must be equal between two snapshots of one tree (not pack ids or offsets: those
/// depend on the run).
fn key(e: &Entry) -> String {
    format!(
        "{} {:?} {} {:o} {} {:?} {:?} {}",
        e.path.display(),
        e.kind,
        e.size,
        e.mode,
        e.mtime,
        e.sha256,
        e.target.as_ref().map(|t| t.display()),
        e.chunks.len()
    )
}

async fn only_snapshot(store: &Store, layout: &Layout) -> blobpipe::manifest::Manifest {
    let ids = catalog::snapshot_ids(&**store, layout).await.expect("list");
    assert_eq!(ids.len(), 1, "exactly one manifest: {ids:?}");
    catalog::load(&**store, layout, &ids[0])
        .await
        .expect("load")
}

async fn restore_and_compare(
    store: &Store,
    layout: &Layout,
    m: &blobpipe::manifest::Manifest,
    src: &Path,
    out: PathBuf,
) {
    restore(
        store,
        layout,
        m,
        &RestoreOptions {
            to: out.clone(),
            paths: vec![],
            overwrite: false,
            concurrency: 2,
        },
        None,
    )
    .await
    .expect("restore");
    assert_same_tree(src, &out);
}

/// Message files of the file queue in `dir` (not the dead-letter queue).
fn queued(dir: &Path) -> Vec<(PathBuf, Value)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    rd.map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "msg"))
        .map(|p| {
            let v =
                serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
            (p, v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_commit_the_snapshot_one_process_would() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    let one = write_pipeline(
        t.path(),
        "one",
        &src,
        &format!("file://{}", t.path().join("s1").display()),
        SMALL,
    );
    let four = write_pipeline(
        t.path(),
        "four",
        &src,
        &format!("file://{}", t.path().join("s4").display()),
        SMALL,
    );

    let o = run(&["--json", "backup", s(&one)]);
    assert_eq!(o.status.code(), Some(0));
    let o = run(&["--json", "backup", s(&four), "--workers", "4"]);
    assert_eq!(o.status.code(), Some(0));
    let r = json(&o);
    assert_eq!(r["status"], "ok", "{r}");
    assert!(
        r["verify"]["mismatches"]
            .as_array()
            .is_some_and(|m| m.is_empty()),
        "{r}"
    );
    assert_eq!(r["verify"]["mode"], "full", "{r}");
    let partitions = r["partitions"].as_u64().expect("partitions");
    assert!(partitions >= 8, "{partitions} partitions: too few to share");
    assert!(
        r["files_read"].as_u64().expect("files_read") > 100,
        "workers' counts reach the report: {r}"
    );

    let (p1, s1) = open(&one).await;
    let (p4, s4) = open(&four).await;
    let (l1, l4) = (
        Layout::new(&p1.target.prefix),
        Layout::new(&p4.target.prefix),
    );
    let m1 = only_snapshot(&s1, &l1).await;
    let m4 = only_snapshot(&s4, &l4).await;
    let k1: Vec<String> = m1.entries.iter().map(key).collect();
    let k4: Vec<String> = m4.entries.iter().map(key).collect();
    assert!(k1.len() > 150, "{} entries", k1.len());
    assert_eq!(k1, k4, "the workers' snapshot differs from one process's");
    assert_eq!(m1.header.totals.files, m4.header.totals.files);
    restore_and_compare(&s4, &l4, &m4, &src, t.path().join("out")).await;
    // The temporary work queue is gone with the run.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("tmp")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let r = r["run_id"].as_str().unwrap_or("-");
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("blobpipe-queue-{r}"))
        })
        .collect();
    assert!(left.is_empty(), "temporary queue left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_too_large_for_a_message_travels_as_a_blob() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    let dir = src.join("a-directory-with-a-rather-long-name-to-make-descriptions-grow");
    std::fs::create_dir_all(&dir).expect("dir");
    for f in 0..600 {
        std::fs::write(
            dir.join(format!("file-number-{f:05}-with-a-long-name.txt")),
            "x",
        )
        .expect("w");
    }
    let store = t.path().join("store");
    let pf = write_pipeline(
        t.path(),
        "wide",
        &src,
        &format!("file://{}", store.display()),
        "[partitions]\nsize = \"1GiB\"\nmax_entries = 5000\n",
    );
    let q = t.path().join("queue");
    let o = run(&[
        "--json",
        "plan",
        s(&pf),
        "--queue",
        s(&q),
        "--run-id",
        "wide-1",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let c = json(&o);
    assert_eq!(c["described_in_blobs"], 1, "{c}");
    let msgs = queued(&q);
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].1["piece_blob"]
            .as_str()
            .is_some_and(|b| b.contains("/work/")),
        "{}",
        msgs[0].1
    );
    let o = work(&pf, s(&q), "wide-1", &[]);
    assert_eq!(o.status.code(), Some(0));
    let w = json(&o);
    assert_eq!(w["runs"][0]["outcome"], "committed", "{w}");
    let (p, st) = open(&pf).await;
    let m = only_snapshot(&st, &Layout::new(&p.target.prefix)).await;
    assert_eq!(m.header.totals.files, 600);
    assert!(queued(&q).is_empty(), "the message was deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_finalizers_commit_one_manifest() {
    let (t, src, pf, q) = fixture("race");
    plan_ok(&pf, &q, "race-1");
    let o = work(&pf, s(&q), "race-1", &["--no-finalize"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o)["runs"][0]["outcome"], "complete");
    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    assert!(
        catalog::snapshot_ids(&*st, &layout)
            .await
            .expect("list")
            .is_empty(),
        "a worker with --no-finalize committed"
    );

    let spawn = || -> Child {
        blobpipe()
            .args(["--json", "finalize", s(&pf), "--run-id", "race-1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    assert_eq!(
        (a.status.code(), b.status.code()),
        (Some(0), Some(0)),
        "no error visible to the user"
    );
    let mut outcomes = vec![json(&a)["outcome"].clone(), json(&b)["outcome"].clone()];
    outcomes.sort_by_key(|v| v.to_string());
    assert_eq!(
        outcomes,
        [Value::from("already_committed"), Value::from("committed")]
    );
    let m = only_snapshot(&st, &layout).await;
    restore_and_compare(&st, &layout, &m, &src, t.path().join("out")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_always_fails_is_dead_lettered_and_nothing_commits() {
    let (_t, _src, pf, q) = fixture("dead");
    let c = json(&run(&[
        "--json",
        "plan",
        s(&pf),
        "--queue",
        s(&q),
        "--run-id",
        "dead-1",
    ]));
    let total = c["partitions"].as_u64().expect("partitions");
    // Corrupt one partition's description: its digest no longer matches, every attempt
    // fails.
    let (path, mut msg) = queued(&q).into_iter().next().expect("a message");
    let idx = msg["partition"].as_u64().expect("idx");
    msg["piece"]["entries"][0]["size"] = Value::from(123_456_789u64);
    std::fs::write(&path, msg.to_string()).expect("tamper");

    let o = work(
        &pf,
        s(&q),
        "dead-1",
        &["--max-dequeue", "2", "--retry-delay", "0s"],
    );
    assert_eq!(o.status.code(), Some(1), "the run failed");
    let w = json(&o);
    assert_eq!(w["dead_lettered"], 1, "{w}");
    assert_eq!(w["failed_attempts"], 2, "{w}");
    assert_eq!(
        w["processed"].as_u64(),
        Some(total - 1),
        "the other partitions were done: {w}"
    );
    let run0 = &w["runs"][0];
    assert_eq!(run0["outcome"], "failed", "{w}");
    let err = run0["error"].as_str().expect("error");
    assert!(
        err.contains(&format!("partition {idx} ")) && err.contains("digest"),
        "{err}"
    );

    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    assert!(
        catalog::snapshot_ids(&*st, &layout)
            .await
            .expect("list")
            .is_empty(),
        "nothing committed"
    );
    assert!(queued(&q).is_empty());
    assert_eq!(
        queued(&q.join("poison")).len(),
        1,
        "the message is in the dead-letter queue"
    );
    // The run record says why, and a finalizer refuses to commit.
    let recs = blobpipe::store::list_all(&*st, &layout.run_records("dead-1"))
        .await
        .expect("records");
    assert!(!recs.is_empty(), "no run record");
    let rec: Value =
        serde_json::from_slice(&st.get(&recs[0].name, None).await.expect("get")).expect("json");
    assert_eq!(rec["status"], "failed");
    assert!(
        rec["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("partition {idx} "))),
        "{rec}"
    );
    let o = run(&["finalize", s(&pf), "--run-id", "dead-1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("dead-lettered"));
    assert!(catalog::snapshot_ids(&*st, &layout)
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_another_run_leaves_foreign_messages() {
    let (_t, _src, pf, q) = fixture("two");
    plan_ok(&pf, &q, "run-a");
    let b = json(&run(&[
        "--json",
        "plan",
        s(&pf),
        "--queue",
        s(&q),
        "--run-id",
        "run-b",
    ]));
    let b_total = b["enqueued"].as_u64().expect("enqueued");
    // A verify batch of a third run: neither worker touches it.
    let verify_c = r#"{"v":1,"pipeline":"two","run_id":"run-c","verify":{"snapshot":"s","round":"r","batch":0,"packs":["p"],"segments":[0,1],"mode":"full","fraction":null,"seed":1}}"#;
    blobpipe::store::queue::open(&format!("file://{}", q.display()))
        .expect("queue")
        .put(verify_c)
        .await
        .expect("put");

    let o = work(&pf, s(&q), "run-a", &[]);
    assert_eq!(o.status.code(), Some(0));
    let w = json(&o);
    assert_eq!(w["runs"][0]["outcome"], "committed", "{w}");
    assert!(w["released_foreign"].as_u64().expect("released") > 0, "{w}");
    let left: Vec<Value> = queued(&q).into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        left.len() as u64,
        b_total + 1,
        "run-b's messages (and run-c's verify batch) are all still queued"
    );
    assert!(left
        .iter()
        .all(|v| v["run_id"] == "run-b" || v["run_id"] == "run-c"));
    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    let b_parts = blobpipe::store::list_all(&*st, &layout.parts("run-b"))
        .await
        .expect("list");
    assert!(
        b_parts.iter().all(|i| !i.name.contains("/f-")),
        "run-b's partitions were touched"
    );

    let o = work(&pf, s(&q), "run-b", &[]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o)["runs"][0]["outcome"], "committed");
    let left: Vec<Value> = queued(&q).into_iter().map(|(_, v)| v).collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        left[0]["verify"]["round"], "r",
        "run-c's verify batch is left alone"
    );
    assert!(
        blobpipe::store::list_all(&*st, &layout.parts("run-c"))
            .await
            .expect("list")
            .is_empty(),
        "nothing was recorded for run-c"
    );
    assert_eq!(
        catalog::snapshot_ids(&*st, &layout)
            .await
            .expect("list")
            .len(),
        2
    );
}

#[test]
fn streamed_sources_are_refused_with_the_reason() {
    let t = tempfile::tempdir().expect("tmp");
    let pf = t.path().join("cmd.toml");
    std::fs::write(
        &pf,
        format!(
            "name = \"cmd\"\n[source]\ntype = \"command\"\ncommand = [\"echo\", \"hi\"]\n[target]\nurl = \"file://{}\"\n",
            t.path().join("store").display()
        ),
    )
    .expect("write");
    let o = run(&["backup", s(&pf), "--workers", "2"]);
    assert_eq!(o.status.code(), Some(2), "a configuration error");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("directory sources only") && err.contains("consistent snapshot"),
        "{err}"
    );
    assert!(!t.path().join("store").join("snapshots").exists());
}

/// A key file's content (hex), distinctive enough to search printed output for.
const KEY_HEX: &str = "5ca1e0e7c0ffee5ca1e0e7c0ffee5ca1e0e7c0ffee5ca1e0e7c0ffee5ca1e0e7";

/// What must never be stored or queued in clear: a file's name and its content.
const CLEAR_NAME: &str = "confidential-plans-q3";
const CLEAR_TEXT: &str = "THE-CLEAR-TEXT-MARKER";

/// The encrypted pipeline `enc` on `store`, its file and its key file in `dir`; the key
/// file holds `hex` (none when empty: a missing key).
fn encrypted(dir: &Path, src: &Path, store: &Path, hex: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let key = dir.join("backup.key");
    if !hex.is_empty() {
        std::fs::write(&key, hex).expect("key");
    }
    write_pipeline(
        dir,
        "enc",
        src,
        &format!("file://{}", store.display()),
        &format!("{SMALL}[encryption]\nkey_file = \"{}\"\n", key.display()),
    )
}

fn encrypted_tree(src: &Path) {
    tree(src);
    let d = src.join("d03");
    std::fs::write(
        d.join(format!("{CLEAR_NAME}.txt")),
        format!("{CLEAR_TEXT}\n").repeat(50),
    )
    .expect("write");
}

/// Every file under `dir` (recursively) with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let b = std::fs::read(&p).expect("read");
                out.push((p, b));
            }
        }
    }
    out
}

fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Nothing under `dir` holds the file's name or content in clear, and (for a store)
/// every record of the run and every segment is sealed.
fn assert_sealed(dir: &Path, store: bool) {
    let files = files_under(dir);
    assert!(!files.is_empty(), "nothing under {}", dir.display());
    for (p, b) in &files {
        for needle in [CLEAR_NAME, CLEAR_TEXT, "d03/", "big-0.bin"] {
            assert!(
                !holds(b, needle),
                "{} holds {needle:?} in clear",
                p.display()
            );
        }
        // The pipeline's names, under the file store's container and the prefix.
        let rel = p.strip_prefix(dir).expect("under").to_string_lossy();
        let rel = rel.strip_prefix("backups/enc/").unwrap_or("-");
        // Records are sealed whole (packs frame by frame, manifests behind a clear
        // header without paths: the search above covers them).
        let sealed = ["segments/", "parts/"].iter().any(|d| rel.starts_with(d))
            && !rel.contains("/attempts/");
        if store && sealed {
            assert!(b.starts_with(b"BPE1"), "{rel} is not sealed");
        }
    }
}

fn printed(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn an_encrypted_pipeline_backed_up_by_three_workers_restores_and_stores_nothing_in_clear() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    encrypted_tree(&src);
    let store = t.path().join("store");
    let pf = encrypted(&t.path().join("right"), &src, &store, KEY_HEX);
    let q = t.path().join("queue");

    let o = run(&[
        "--json",
        "backup",
        s(&pf),
        "--workers",
        "3",
        "--queue",
        &format!("file://{}", q.display()),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let r = json(&o);
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["verify"]["mode"], "full", "{r}");
    assert!(
        r["verify"]["mismatches"]
            .as_array()
            .is_some_and(|m| m.is_empty()),
        "{r}"
    );
    assert!(r["partitions"].as_u64().expect("partitions") >= 8, "{r}");
    let mut outputs = vec![o];

    // The key record was created once, by the coordinator.
    assert_eq!(files_under(&store.join("backups/enc/keys")).len(), 1);
    assert_sealed(&store, true);
    assert!(
        store.join("backups/enc/snapshots").exists() && store.join("backups/enc/parts").exists(),
        "a manifest and the run's records were stored"
    );
    assert!(queued(&q).is_empty(), "every message was deleted");
    assert!(!q.join("poison").exists() || queued(&q.join("poison")).is_empty());

    let out = t.path().join("out");
    let o = run(&["restore", s(&pf), "latest", "--to", s(&out)]);
    assert_eq!(o.status.code(), Some(0));
    assert_same_tree(&src, &out);
    outputs.push(o);
    let o = run(&["--json", "verify", s(&pf), "latest", "--full"]);
    assert_eq!(o.status.code(), Some(0));
    outputs.push(o);
    for o in &outputs {
        assert!(!printed(o).contains(KEY_HEX), "the key was printed");
    }
}

#[test]
fn a_worker_with_a_wrong_key_leaves_the_queue_to_workers_with_the_right_one() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    encrypted_tree(&src);
    let store = t.path().join("store");
    let pf = encrypted(&t.path().join("right"), &src, &store, KEY_HEX);
    let q = t.path().join("queue");
    let run_id = "enc-1";

    let o = run(&[
        "--json",
        "plan",
        s(&pf),
        "--queue",
        s(&q),
        "--run-id",
        run_id,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let enqueued = json(&o)["enqueued"].as_u64().expect("enqueued");
    assert!(enqueued >= 8, "{enqueued} partitions");
    let mut outputs = vec![o];
    let msgs = queued(&q);
    assert_eq!(msgs.len() as u64, enqueued);
    for (_, m) in &msgs {
        assert!(m["sealed"].is_string() && m["piece"].is_null(), "{m}");
    }
    assert_sealed(&q, false);
    assert_sealed(&store, true);
    let names = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = queued(d).into_iter().map(|(p, _)| p).collect();
        v.sort();
        v
    };
    let before = names(&q);
    let stored = files_under(&store).len();

    // A coordinator with a wrong key: exit 11, nothing planned, enqueued or locked.
    let wrong = encrypted(&t.path().join("wrong"), &src, &store, &"ab".repeat(32));
    let q2 = t.path().join("queue-2");
    let o = run(&["plan", s(&wrong), "--queue", s(&q2), "--run-id", "enc-2"]);
    assert_eq!(o.status.code(), Some(11), "a wrong key");
    outputs.push(o);
    assert!(queued(&q2).is_empty());
    assert_eq!(
        files_under(&store).len(),
        stored,
        "the coordinator wrote something"
    );

    // A wrong key and a missing one: the exit codes of `backup`, and the queue and the
    // run's records as they were (nothing received, deleted or dead-lettered).
    let o = work(&wrong, s(&q), run_id, &[]);
    assert_eq!(o.status.code(), Some(11), "a wrong key");
    outputs.push(o);
    let missing = encrypted(&t.path().join("missing"), &src, &store, "");
    let o = work(&missing, s(&q), run_id, &[]);
    assert_eq!(o.status.code(), Some(2), "a missing key");
    outputs.push(o);
    assert_eq!(names(&q), before, "the messages were touched");
    assert!(!q.join("poison").exists() || queued(&q.join("poison")).is_empty());
    let records = store.join("backups/enc/parts").join(run_id);
    assert!(records.join("planned.json.gz").exists());
    assert!(
        !records.join("attempts").exists(),
        "a worker without the key started a partition"
    );

    // The right key: two workers finish the run and one of them commits it.
    let spawn = || -> Child {
        blobpipe()
            .args([
                "--json",
                "work",
                s(&pf),
                "--queue",
                s(&q),
                "--run-id",
                run_id,
            ])
            .args(["--poll", "100ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    assert_eq!((a.status.code(), b.status.code()), (Some(0), Some(0)));
    let outcomes: Vec<String> = [&a, &b]
        .iter()
        .map(|o| {
            json(o)["runs"][0]["outcome"]
                .as_str()
                .unwrap_or("-")
                .to_string()
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "committed").count(),
        1,
        "{outcomes:?}"
    );
    outputs.extend([a, b]);
    assert!(queued(&q).is_empty(), "every message was deleted");
    assert_eq!(
        files_under(&store.join("backups/enc/keys")).len(),
        1,
        "no worker made a key"
    );
    assert_sealed(&store, true);

    let out = t.path().join("out");
    let o = run(&["restore", s(&pf), "latest", "--to", s(&out)]);
    assert_eq!(o.status.code(), Some(0));
    assert_same_tree(&src, &out);
    outputs.push(o);
    let o = run(&["verify", s(&pf), "latest", "--full"]);
    assert_eq!(o.status.code(), Some(0));
    outputs.push(o);
    for o in &outputs {
        let text = printed(o);
        assert!(
            !text.contains(KEY_HEX) && !text.contains(&"ab".repeat(32)),
            "a key was printed"
        );
    }
}

#[test]
fn a_sealed_message_replayed_into_another_run_is_dead_lettered_with_sealed_records() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    encrypted_tree(&src);
    let store = t.path().join("store");
    let pf = encrypted(&t.path().join("right"), &src, &store, KEY_HEX);
    let (qa, qb) = (t.path().join("qa"), t.path().join("qb"));
    for (q, run_id) in [(&qa, "enc-a"), (&qb, "enc-b")] {
        let o = run(&["plan", s(&pf), "--queue", s(q), "--run-id", run_id]);
        assert_eq!(o.status.code(), Some(0));
    }
    // The same tree: partition 0 of both runs has the same digest, so only the run id
    // the seal is bound to tells run A's description from run B's.
    let (_, a0) = queued(&qa)
        .into_iter()
        .find(|(_, m)| m["partition"] == 0)
        .expect("partition 0 of run A");
    let (b0_path, b0) = queued(&qb)
        .into_iter()
        .find(|(_, m)| m["partition"] == 0)
        .expect("partition 0 of run B");
    assert_eq!(a0["digest"], b0["digest"]);
    assert_ne!(a0["sealed"], b0["sealed"]);
    let mut replayed = a0.clone();
    replayed["run_id"] = Value::from("enc-b");
    std::fs::write(&b0_path, replayed.to_string()).expect("replay");

    let o = work(
        &pf,
        s(&qb),
        "enc-b",
        &["--max-dequeue", "2", "--retry-delay", "0s"],
    );
    assert_eq!(o.status.code(), Some(1), "the run failed");
    let w = json(&o);
    assert_eq!(w["dead_lettered"], 1, "{w}");
    assert_eq!(w["failed_attempts"], 2, "{w}");
    assert_eq!(w["runs"][0]["outcome"], "failed", "{w}");
    assert_eq!(queued(&qb.join("poison")).len(), 1);
    // The error and dead-letter records are sealed, and a finalizer opens them.
    let records = store.join("backups/enc/parts/enc-b");
    for name in ["error-00000.txt", "dead-00000.json"] {
        let b = std::fs::read(records.join(name)).expect(name);
        assert!(b.starts_with(b"BPE1"), "{name} is not sealed");
    }
    assert_sealed(&store, true);
    let o = run(&["finalize", s(&pf), "--run-id", "enc-b"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("dead-lettered") && err.contains("partition 0 "),
        "{err}"
    );
    assert!(
        !store.join("backups/enc/snapshots").exists(),
        "nothing committed"
    );
}

/// Azurite's queue endpoint, or `None` (the test skips unless services are required).
fn azurite_queue() -> Option<String> {
    support::service(
        "AZURITE_QUEUE_ENDPOINT",
        "scripts/azurite start && source .tools/azurite.env",
    )
}

/// A new queue's URL under Azurite's queue endpoint `qep`.
fn fresh_queue(qep: &str) -> String {
    format!("{qep}/bp-{}", blobpipe::support::ids::random_hex(8))
}

/// A pipeline `name` backing up `src` into a new Azurite container reached through a
/// counting proxy (no faults), and the proxy.
async fn behind_proxy(
    ep: &str,
    dir: &Path,
    src: &Path,
    name: &str,
    extra: &str,
) -> (FaultProxy, PathBuf) {
    let proxy = FaultProxy::start(upstream(ep), FaultConfig::none())
        .await
        .expect("proxy");
    let container = support::unique_container(name);
    let url = format!("{}/{container}", proxy.endpoint("devstoreaccount1"));
    (proxy, write_pipeline(dir, name, src, &url, extra))
}

fn upstream(ep: &str) -> std::net::SocketAddr {
    ep.trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host")
        .parse()
        .expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_partition_loses_nothing_and_uploads_no_block_twice() {
    let Some(ep) = support::azurite() else { return };
    let Some(qep) = azurite_queue() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    let (proxy, pf) = behind_proxy(&ep, t.path(), &src, "kill", SMALL).await;
    let queue = fresh_queue(&qep);
    let run_id = "exec-kill-1";
    let o = run(&[
        "--json",
        "plan",
        s(&pf),
        "--queue",
        &queue,
        "--run-id",
        run_id,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let total = json(&o)["partitions"].as_u64().expect("partitions");

    // Every pack commit stalls: the first worker is held mid-partition, its blocks staged.
    let pack_commits: Filter =
        Arc::new(|s: &Seen| s.is_put_block_list() && s.path.contains("/packs/"));
    proxy.set_filter(Some(pack_commits));
    proxy.set(FaultConfig {
        rate: 1.0,
        seed: 1,
        kinds: vec![Fault::Stall],
        stall: Duration::from_secs(600),
    });
    let work = |extra: &[&str]| -> Child {
        blobpipe()
            .args([
                "--json",
                "work",
                s(&pf),
                "--queue",
                &queue,
                "--run-id",
                run_id,
            ])
            .args(["--visibility", "3s", "--poll", "200ms"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn worker")
    };
    let mut victim = work(&["--parallel", "1"]);
    let mut held = None;
    for _ in 0..1200 {
        held = proxy
            .stats
            .seen()
            .into_iter()
            .find(|x| x.is_put_block_list() && x.faulted);
        if held.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = held.expect("the worker reached a pack commit");
    victim.kill().expect("kill -9");
    victim.wait().expect("reap");
    let staged_by_victim: usize = proxy
        .stats
        .seen()
        .iter()
        .filter(|x| x.is_put_block() && x.path == held.path)
        .count();
    assert!(
        staged_by_victim > 0,
        "the victim staged blocks of {}",
        held.path
    );
    proxy.set_filter(None);
    proxy.set(FaultConfig::none());

    let others: Vec<Child> = (0..3).map(|_| work(&[])).collect();
    let outs: Vec<Output> = others
        .into_iter()
        .map(|c| c.wait_with_output().expect("worker"))
        .collect();
    let mut outcomes = Vec::new();
    let (mut processed, mut reused) = (0, 0);
    for o in &outs {
        eprintln!("worker: {}", String::from_utf8_lossy(&o.stdout));
        assert_eq!(o.status.code(), Some(0));
        let w = json(o);
        processed += w["processed"].as_u64().expect("processed");
        reused += w["blocks_reused"].as_u64().expect("reused");
        outcomes.push(
            w["runs"][0]["outcome"]
                .as_str()
                .expect("outcome")
                .to_string(),
        );
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["already_committed", "already_committed", "committed"]
    );
    // `processed` counts the verify batches the survivors checked too.
    let batches = {
        let (p, st) = open(&pf).await;
        let layout = Layout::new(&p.target.prefix);
        verify_parts(&st, &layout, run_id).await.len() as u64
    };
    assert_eq!(
        processed,
        total + batches,
        "every partition packed once by the survivors"
    );
    assert!(
        reused as usize >= staged_by_victim,
        "the blocks the victim staged were reused ({reused})"
    );

    // The victim's pack was finished by another worker, and no block went up twice.
    let seen = proxy.stats.seen();
    assert!(
        seen.iter()
            .any(|x| x.is_put_block_list() && !x.faulted && x.path == held.path),
        "nobody committed the victim's pack"
    );
    let mut per_block: HashMap<(String, String), usize> = HashMap::new();
    for x in seen.iter().filter(|x| x.is_put_block() && !x.faulted) {
        *per_block
            .entry((x.path.clone(), x.blockid.clone().unwrap_or_default()))
            .or_insert(0) += 1;
    }
    let twice: Vec<_> = per_block.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "blocks uploaded twice: {twice:?}");

    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    let m = only_snapshot(&st, &layout).await;
    let mut paths: Vec<_> = m.entries.iter().map(|e| e.path.clone()).collect();
    let n = paths.len();
    paths.dedup();
    assert_eq!(paths.len(), n, "an entry is duplicated");
    restore_and_compare(&st, &layout, &m, &src, t.path().join("out")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_work_queue_renews_refuses_stale_receipts_and_dead_letters() {
    let Some(qep) = azurite_queue() else { return };
    blobpipe::support::http::ensure_tls_provider();
    let url = fresh_queue(&qep);
    let q = blobpipe::store::queue::open(&url).expect("open");
    q.put("{\"v\":1}").await.expect("put (creates the queue)");
    let a = q
        .receive(Duration::from_secs(30))
        .await
        .expect("receive")
        .expect("a message");
    assert_eq!((a.text.as_str(), a.dequeue_count), ("{\"v\":1}", 1));
    assert!(
        q.receive(Duration::from_secs(30))
            .await
            .expect("receive")
            .is_none(),
        "invisible while held"
    );
    let renewed = q.set_visibility(&a, Duration::ZERO).await.expect("release");
    let stale = q
        .set_visibility(&a, Duration::ZERO)
        .await
        .expect_err("stale receipt");
    assert_eq!(stale.kind(), blobpipe::ErrorKind::NotFound, "{stale}");
    assert_ne!(renewed, a.pop_receipt);
    let b = q
        .receive(Duration::from_secs(30))
        .await
        .expect("receive")
        .expect("visible again");
    assert_eq!(b.dequeue_count, 2);
    q.dead_letter(&b).await.expect("dead-letter");
    assert!(
        q.receive(Duration::ZERO).await.expect("receive").is_none(),
        "moved away"
    );
    let poison = blobpipe::store::queue::open(&format!("{url}-poison")).expect("poison");
    let d = poison
        .receive(Duration::from_secs(30))
        .await
        .expect("receive")
        .expect("dead letter");
    assert_eq!(d.text, "{\"v\":1}");
    let too_long = format!("{url}{}", "x".repeat(50));
    assert_eq!(
        blobpipe::store::queue::open(&too_long)
            .expect_err("no room for -poison")
            .kind(),
        blobpipe::ErrorKind::Config
    );
}

/// What every replica of the Bicep's parallel job runs: `work --coordinate` with the
/// execution name as run id, no separate coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_all_coordinate_plan_once_and_commit_once() {
    let (t, src, pf, q) = fixture("rep");
    let replicas: Vec<Child> = (0..3)
        .map(|_| {
            blobpipe()
                .args(["--json", "work", s(&pf), "--queue", s(&q), "--coordinate"])
                .args(["--poll", "100ms"])
                .env("CONTAINER_APP_JOB_EXECUTION_NAME", "bp-scale-rep-x1y2z")
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn replica")
        })
        .collect();
    let outs: Vec<Output> = replicas
        .into_iter()
        .map(|c| c.wait_with_output().expect("replica"))
        .collect();
    let mut outcomes = Vec::new();
    for o in &outs {
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let w = json(o);
        assert_eq!(w["runs"][0]["run_id"], "bp-scale-rep-x1y2z");
        outcomes.push(
            w["runs"][0]["outcome"]
                .as_str()
                .expect("outcome")
                .to_string(),
        );
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["already_committed", "already_committed", "committed"]
    );
    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    let m = only_snapshot(&st, &layout).await;
    restore_and_compare(&st, &layout, &m, &src, t.path().join("out")).await;
    assert!(queued(&q).is_empty(), "every message deleted");
}

/// A first encrypted backup by replicas that all coordinate: one of them creates the key
/// record under the run lease, the others open it (those that started before it existed
/// open it when the run's plan appears), and one commits.
#[test]
fn encrypted_replicas_that_all_coordinate_make_one_key_record() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    encrypted_tree(&src);
    let store = t.path().join("store");
    let pf = encrypted(&t.path().join("right"), &src, &store, KEY_HEX);
    let q = t.path().join("queue");
    let replicas: Vec<Child> = (0..3)
        .map(|_| {
            blobpipe()
                .args(["--json", "work", s(&pf), "--queue", s(&q), "--coordinate"])
                .args(["--poll", "100ms"])
                .env("CONTAINER_APP_JOB_EXECUTION_NAME", "bp-scale-enc-x1y2z")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn replica")
        })
        .collect();
    let mut outcomes = Vec::new();
    for c in replicas {
        let o = c.wait_with_output().expect("replica");
        assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
        assert!(!printed(&o).contains(KEY_HEX), "the key was printed");
        let w = json(&o);
        outcomes.push(w["runs"][0]["outcome"].as_str().unwrap_or("-").to_string());
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["already_committed", "already_committed", "committed"]
    );
    assert_eq!(files_under(&store.join("backups/enc/keys")).len(), 1);
    assert_sealed(&store, true);
    let out = t.path().join("out");
    assert_eq!(
        run(&["restore", s(&pf), "latest", "--to", s(&out)])
            .status
            .code(),
        Some(0)
    );
    assert_same_tree(&src, &out);
}

/// An encrypted pipeline over Azurite's blob and queue services: the sealed descriptions
/// travel as Azure queue messages, two workers commit, the snapshot restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_pipeline_scales_out_over_azure_queues() {
    let Some(ep) = support::azurite() else { return };
    let Some(qep) = azurite_queue() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    encrypted_tree(&src);
    let dir = t.path().join("right");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("backup.key"), KEY_HEX).expect("key");
    let container = support::unique_container("scaleenc");
    let pf = write_pipeline(
        &dir,
        "enc",
        &src,
        &format!("{ep}/{container}"),
        &format!(
            "{SMALL}[encryption]\nkey_file = \"{}\"\n",
            dir.join("backup.key").display()
        ),
    );
    let queue = fresh_queue(&qep);
    let run_id = "exec-enc-1";
    let o = run(&[
        "--json",
        "plan",
        s(&pf),
        "--queue",
        &queue,
        "--run-id",
        run_id,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let total = json(&o)["partitions"].as_u64().expect("partitions");

    // What the queue holds: sealed descriptions only (received and made visible again).
    let q = blobpipe::store::queue::open(&queue).expect("queue");
    let mut seen = Vec::new();
    while let Some(m) = q.receive(Duration::from_secs(30)).await.expect("receive") {
        for needle in [CLEAR_NAME, "d03/", "big-0.bin"] {
            assert!(
                !m.text.contains(needle),
                "a message holds {needle:?}: {}",
                m.text
            );
        }
        let v: Value = serde_json::from_str(&m.text).expect("json");
        assert!(v["sealed"].is_string() && v["piece"].is_null(), "{v}");
        seen.push(m);
    }
    assert_eq!(seen.len() as u64, total);
    for m in &seen {
        q.set_visibility(m, Duration::ZERO).await.expect("release");
    }

    let spawn = || -> Child {
        blobpipe()
            .args([
                "--json",
                "work",
                s(&pf),
                "--queue",
                &queue,
                "--run-id",
                run_id,
            ])
            .args(["--poll", "100ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let mut outcomes = Vec::new();
    let mut verified = Vec::new();
    for c in [a, b] {
        let o = c.wait_with_output().expect("worker");
        assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
        assert!(!printed(&o).contains(KEY_HEX), "the key was printed");
        let w = json(&o);
        if w["runs"][0]["outcome"] == "committed" {
            verified.push(w["runs"][0]["report"]["verify"].clone());
        }
        outcomes.push(w["runs"][0]["outcome"].as_str().unwrap_or("-").to_string());
    }
    outcomes.sort();
    assert_eq!(outcomes, ["already_committed", "committed"]);
    // The workers verified the snapshot by batches over the Azure queue: sealed parts.
    assert_eq!(
        verified[0]["mismatches"],
        Value::Array(vec![]),
        "{verified:?}"
    );
    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    let parts = blobpipe::store::list_all(&*st, &format!("{}verify/", layout.parts(run_id)))
        .await
        .expect("list");
    assert!(
        parts.iter().any(|i| i.name.contains("/part-")),
        "no verify batch parts: {parts:?}"
    );
    let out = t.path().join("out");
    assert_eq!(
        run(&["restore", s(&pf), "latest", "--to", s(&out)])
            .status
            .code(),
        Some(0)
    );
    assert_same_tree(&src, &out);
    let o = run(&["verify", s(&pf), "latest", "--full"]);
    assert_eq!(o.status.code(), Some(0));
}

/// A forged message (its digest recomputed) naming a path outside the source root is
/// refused, never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_naming_a_path_outside_the_root_is_refused() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    std::fs::write(t.path().join("secret.txt"), "not for the backup").expect("secret");
    let pf = write_pipeline(
        t.path(),
        "forge",
        &src,
        &format!("file://{}", t.path().join("store").display()),
        SMALL,
    );
    let q = t.path().join("queue");
    plan_ok(&pf, &q, "forge-1");
    let (path, mut msg) = queued(&q).into_iter().next().expect("a message");
    let mut desc: serde_json::Map<String, Value> =
        serde_json::from_value(msg["piece"].clone()).expect("piece");
    desc["entries"][0]["path"] = Value::from("../secret.txt");
    let entries: Vec<blobpipe::extract::PlannedEntry> =
        serde_json::from_value(desc["entries"].clone()).expect("entries");
    let bound = |k: &str| -> Option<blobpipe::manifest::PathBytes> {
        serde_json::from_value(desc[k].clone()).expect("bound")
    };
    let digest =
        blobpipe::extract::piece_digest(bound("lo").as_ref(), bound("hi").as_ref(), &entries);
    msg["piece"] = Value::Object(desc);
    msg["digest"] = Value::from(digest);
    std::fs::write(&path, msg.to_string()).expect("forge");
    let o = work(
        &pf,
        s(&q),
        "forge-1",
        &["--max-dequeue", "1", "--retry-delay", "0s"],
    );
    assert_eq!(o.status.code(), Some(1));
    let w = json(&o);
    assert_eq!(w["dead_lettered"], 1, "{w}");
    let err = w["runs"][0]["error"].as_str().expect("error");
    assert!(err.contains("not a path under the source root"), "{err}");
    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    assert!(catalog::snapshot_ids(&*st, &layout)
        .await
        .expect("list")
        .is_empty());
}

#[test]
fn workers_refuse_what_they_cannot_share_and_do_not_wait_forever() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    // A memory store lives in one process: worker processes would never see the plan.
    let mem = write_pipeline(t.path(), "mem", &src, "memory://scale-out-mem", SMALL);
    let o = run(&["backup", s(&mem), "--workers", "2"]);
    assert_eq!(o.status.code(), Some(2), "a configuration error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("memory://"));
    // A worker for a run whose coordinator never comes gives up after --plan-wait.
    let pf = write_pipeline(
        t.path(),
        "lonely",
        &src,
        &format!("file://{}", t.path().join("store").display()),
        SMALL,
    );
    let q = t.path().join("queue");
    let o = run(&[
        "work",
        s(&pf),
        "--queue",
        s(&q),
        "--run-id",
        "never-planned",
        "--plan-wait",
        "300ms",
        "--poll",
        "100ms",
    ]);
    assert_eq!(o.status.code(), Some(6), "not found");
    assert!(String::from_utf8_lossy(&o.stderr).contains("no stored plan"));
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A coordinator that died after its plan but before its `planned` record: the workers do
/// what was enqueued, then stop (exit 6) instead of waiting forever; `plan` again with the
/// run id finishes the job and the run commits.
#[test]
fn a_coordinator_that_died_while_enqueueing_is_noticed_and_resumed() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    let store = t.path().join("store");
    let pf = write_pipeline(
        t.path(),
        "half",
        &src,
        &format!("file://{}", store.display()),
        SMALL,
    );
    let q = t.path().join("queue");
    plan_ok(&pf, &q, "half-1");
    let (p, st) = block_on(open(&pf));
    let layout = Layout::new(&p.target.prefix);
    block_on(st.delete(&layout.planned("half-1"))).expect("drop the planned record");
    // Half the messages were never put.
    let msgs = queued(&q);
    for (path, _) in &msgs[..msgs.len() / 2] {
        std::fs::remove_file(path).expect("drop a message");
    }
    let o = work(&pf, s(&q), "half-1", &["--plan-wait", "500ms"]);
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has not finished enqueueing"));
    plan_ok(&pf, &q, "half-1");
    let o = work(&pf, s(&q), "half-1", &[]);
    assert_eq!(o.status.code(), Some(0));
    let w = json(&o);
    assert_eq!(w["runs"][0]["outcome"], "committed", "{w}");
    // The worker also checked the verification's batches (it committed the run).
    let batches = block_on(async {
        let (p, st) = open(&pf).await;
        let layout = Layout::new(&p.target.prefix);
        verify_parts(&st, &layout, "half-1").await.len()
    });
    assert!(batches > 0, "the verification was queue work");
    assert_eq!(
        w["processed"].as_u64(),
        Some((msgs.len() / 2 + batches) as u64),
        "only the missing half (and the verify batches): {w}"
    );
}

/// [`SMALL`] with verify batches of about one pack (`[verify] batch` at its minimum):
/// many verify messages.
fn small_batches() -> String {
    SMALL.replace("mode = \"full\"\n", "mode = \"full\"\nbatch = \"64KiB\"\n")
}

/// The parts of run `run`'s verification rounds: (name, parsed JSON).
async fn verify_parts(st: &Store, layout: &Layout, run: &str) -> Vec<(String, Value)> {
    let prefix = format!("{}verify/", layout.parts(run));
    let mut out = Vec::new();
    for item in blobpipe::store::list_all(&**st, &prefix)
        .await
        .expect("list")
    {
        let base = item.name.rsplit('/').next().unwrap_or_default().to_string();
        if !base.starts_with("part-") {
            continue;
        }
        let gz = st.get(&item.name, None).await.expect("part");
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
            .expect("gunzip");
        out.push((
            item.name.clone(),
            serde_json::from_slice(&text).expect("part JSON"),
        ));
    }
    out
}

/// What a verify report says it checked (everything but times and where it is stored).
fn checked(v: &Value) -> Value {
    let mut v = v.clone();
    for k in ["started_at", "finished_at", "stored_as", "max_entries_held"] {
        v.as_object_mut().expect("report").remove(k);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_verify_workers_check_what_one_verify_full_does() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    let pf = write_pipeline(
        t.path(),
        "vsplit",
        &src,
        &format!("file://{}", t.path().join("store").display()),
        &small_batches(),
    );
    let o = run(&["--json", "backup", s(&pf), "--workers", "3"]);
    assert_eq!(o.status.code(), Some(0));
    let r = json(&o);
    assert_eq!(r["status"], "ok", "{r}");
    let snapshot = r["snapshot"].as_str().expect("snapshot").to_string();
    let run_id = r["run_id"].as_str().expect("run id").to_string();

    let o = run(&["--json", "verify", s(&pf), &snapshot, "--full"]);
    assert_eq!(o.status.code(), Some(0));
    let one = json(&o);
    assert!(one["blocks_checked"].as_u64().expect("blocks") > 0, "{one}");
    assert_eq!(checked(&r["verify"]), {
        let mut v = checked(&one);
        // `verify` without --seed draws one; the post-backup seed is the snapshot's.
        v["seed"] = r["verify"]["seed"].clone();
        v
    });

    // The packs were checked in batches by the workers, each pack once.
    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    let parts = verify_parts(&st, &layout, &run_id).await;
    assert!(parts.len() >= 3, "{} verify batches", parts.len());
    let packs: u64 = parts
        .iter()
        .map(|(_, v)| v["packs"].as_u64().expect("packs"))
        .sum();
    assert_eq!(Some(packs), r["verify"]["packs"].as_u64(), "each pack once");
    let blocks: u64 = parts
        .iter()
        .map(|(_, v)| v["blocks"].as_u64().expect("blocks"))
        .sum();
    assert_eq!(Some(blocks), r["verify"]["blocks_checked"].as_u64());
    // The round is over: its record is gone, so workers of the run stop waiting.
    let rounds = blobpipe::store::list_all(&*st, &format!("{}verify/", layout.parts(&run_id)))
        .await
        .expect("list");
    assert!(
        !rounds.iter().any(|i| i.name.ends_with("/round.json")),
        "round record left behind"
    );
}

/// Every pack blob under a file store's directory.
fn pack_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.components().any(|c| c.as_os_str() == "packs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_damaged_before_verification_is_named_and_fails_the_run() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    let store_dir = t.path().join("store");
    let pf = write_pipeline(
        t.path(),
        "vdamage",
        &src,
        &format!("file://{}", store_dir.display()),
        &small_batches(),
    );
    let run_id = "verify-damage-1";
    let args = [
        "--json",
        "backup",
        s(&pf),
        "--workers",
        "3",
        "--run-id",
        run_id,
    ];
    let o = run(&[&args[..], &["--no-verify"]].concat());
    assert_eq!(o.status.code(), Some(0));
    let snapshot = json(&o)["snapshot"].as_str().expect("snapshot").to_string();

    // The partitions are committed; one pack is damaged before it is verified.
    let packs = pack_files(&store_dir);
    assert!(packs.len() >= 3, "{packs:?}");
    let victim = &packs[packs.len() / 2];
    let mut bytes = std::fs::read(victim).expect("pack");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(victim, bytes).expect("damage");
    let name = victim
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();

    // A round an earlier finalizer left unfinished (its messages gone with its queue)
    // must not keep the workers of the next round waiting.
    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    let stale = format!(
        "{}verify/20000101T000000000Z-dead/round.json",
        layout.parts(run_id)
    );
    let body = r#"{"snapshot":"x","batches":5,"started_at":"2000-01-01T00:00:00Z"}"#;
    st.put(&stale, bytes::Bytes::from(body), true)
        .await
        .expect("stale round");

    // Rerunning the committed run verifies it again, with the workers.
    let o = run(&args);
    assert_eq!(o.status.code(), Some(3), "the verify exit code");
    let r = json(&o);
    assert_eq!(r["status"], "mismatch", "{r}");
    let found = r["verify"]["mismatches"].as_array().expect("mismatches");
    assert!(!found.is_empty(), "{r}");
    assert!(
        found
            .iter()
            .all(|m| m["blob"].as_str().is_some_and(|b| b.ends_with(&name))),
        "every finding names the damaged pack {name}: {found:?}"
    );
    // The same findings a single-process verify of the snapshot makes.
    let o = run(&["--json", "verify", s(&pf), &snapshot, "--full"]);
    assert_eq!(o.status.code(), Some(3));
    let one = json(&o);
    assert_eq!(r["verify"]["mismatches"], one["mismatches"]);
    assert_eq!(r["verify"]["blocks_checked"], one["blocks_checked"]);
    assert!(
        st.head(&stale).await.expect("head").is_none(),
        "stale round removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_verify_worker_redelivers_its_batch_and_checks_each_pack_once() {
    let Some(ep) = support::azurite() else { return };
    let Some(qep) = azurite_queue() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    let (proxy, pf) = behind_proxy(&ep, t.path(), &src, "vkill", &small_batches()).await;
    let queue = fresh_queue(&qep);
    let run_id = "verify-kill-1";
    let args = [
        "--json",
        "backup",
        s(&pf),
        "--workers",
        "2",
        "--run-id",
        run_id,
        "--queue",
        &queue,
    ];
    let o = run(&[&args[..], &["--no-verify"]].concat());
    assert_eq!(o.status.code(), Some(0));

    // The first read of a pack's data stalls: the worker that makes it holds its batch.
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let pack_read: Filter = Arc::new(move |x: &Seen| {
        x.method == "GET"
            && x.comp.is_none()
            && x.path.contains("/packs/")
            && first.swap(false, std::sync::atomic::Ordering::SeqCst)
    });
    proxy.set_filter(Some(pack_read));
    proxy.set(FaultConfig {
        rate: 1.0,
        seed: 1,
        kinds: vec![Fault::Stall],
        stall: Duration::from_secs(600),
    });
    let parent = blobpipe()
        .args(args)
        .env("BLOBPIPE_WORK_VISIBILITY", "3s")
        .env("BLOBPIPE_WORK_POLL", "200ms")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn backup");

    // Wait until every other batch is checked: the one left is the stalled worker's,
    // and its attempt marker names the process.
    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    let prefix = format!("{}verify/", layout.parts(run_id));
    let mut victim = None;
    for _ in 0..1200 {
        let listed = blobpipe::store::list_all(&*st, &prefix)
            .await
            .expect("list");
        let round = listed.iter().find(|i| i.name.ends_with("/round.json"));
        if let Some(round) = round {
            let rec: Value =
                serde_json::from_slice(&st.get(&round.name, None).await.expect("round"))
                    .expect("round JSON");
            let batches = rec["batches"].as_u64().expect("batches") as usize;
            let dir = round.name.trim_end_matches("round.json");
            let done: Vec<String> = listed
                .iter()
                .filter_map(|i| i.name.strip_prefix(&format!("{dir}part-")))
                .map(|b| b[..5].to_string())
                .collect();
            let pending: Vec<&String> = listed
                .iter()
                .map(|i| &i.name)
                .filter(|n| n.starts_with(&format!("{dir}attempts/")))
                .filter(|n| !done.iter().any(|d| n.contains(&format!("attempts/{d}-"))))
                .collect();
            if done.len() + 1 == batches && pending.len() == 1 {
                let marker = st.get(pending[0], None).await.expect("marker");
                let text = String::from_utf8_lossy(&marker).to_string();
                let pid = text.rsplit("pid=").next().expect("pid").trim().to_string();
                victim = Some((pending[0].clone(), pid));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (marker, pid) = victim.expect("one batch held by the stalled worker");
    let k = Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(k.success(), "kill -9 {pid}");

    let o = parent.wait_with_output().expect("backup");
    eprintln!("backup: {}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(o.status.code(), Some(0));
    let r = json(&o);
    assert_eq!(r["status"], "ok", "{r}");
    // The held batch was tried again, by the surviving worker, and checked once.
    let again = format!("{}002", marker.trim_end_matches(char::is_numeric));
    assert!(
        st.head(&again).await.expect("head").is_some(),
        "{again}: the batch was redelivered"
    );
    let parts = verify_parts(&st, &layout, run_id).await;
    let packs: u64 = parts
        .iter()
        .map(|(_, v)| v["packs"].as_u64().expect("packs"))
        .sum();
    assert_eq!(Some(packs), r["verify"]["packs"].as_u64(), "each pack once");
    proxy.set_filter(None);
    proxy.set(FaultConfig::none());
    let snapshot = r["snapshot"].as_str().expect("snapshot");
    let o = run(&["--json", "verify", s(&pf), snapshot, "--full"]);
    assert_eq!(o.status.code(), Some(0));
    let one = json(&o);
    assert_eq!(r["verify"]["blocks_checked"], one["blocks_checked"]);
    assert_eq!(r["verify"]["entries_checked"], one["entries_checked"]);
    assert_eq!(r["verify"]["bytes_read"], one["bytes_read"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_batch_that_always_fails_is_dead_lettered_and_names_its_packs() {
    let Some(ep) = support::azurite() else { return };
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    let (proxy, pf) = behind_proxy(&ep, t.path(), &src, "vdead", &small_batches()).await;
    let queue = format!("file://{}", t.path().join("queue").display());
    let run_id = "verify-dead-1";
    let args = [
        "--json",
        "backup",
        s(&pf),
        "--workers",
        "2",
        "--run-id",
        run_id,
        "--queue",
        &queue,
    ];
    let o = run(&[&args[..], &["--no-verify"]].concat());
    assert_eq!(o.status.code(), Some(0));

    // Every read of one pack's data fails (beyond the store's retries).
    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    let m = only_snapshot(&st, &layout).await;
    let bad = m.packs[m.packs.len() / 2].clone();
    let blob = bad.blob.clone();
    let reads: Filter =
        Arc::new(move |x: &Seen| x.method == "GET" && x.comp.is_none() && x.path.ends_with(&blob));
    proxy.set_filter(Some(reads));
    proxy.set(FaultConfig {
        rate: 1.0,
        seed: 1,
        kinds: vec![Fault::Internal500],
        stall: Duration::from_secs(1),
    });
    let o = blobpipe()
        .args(args)
        .env("BLOBPIPE_WORK_MAX_DEQUEUE", "2")
        .env("BLOBPIPE_WORK_RETRY_DELAY", "0s")
        .env("BLOBPIPE_WORK_POLL", "100ms")
        .output()
        .expect("backup");
    eprintln!(
        "backup: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(10), "committed, unverified");
    let r = json(&o);
    assert_eq!(r["status"], "committed_unverified", "{r}");
    let err = r["error"].as_str().expect("error");
    assert!(
        err.contains("dead-lettered") && err.contains(&bad.id),
        "the error names the pack {}: {err}",
        bad.id
    );
    let dead: Vec<_> = blobpipe::store::list_all(&*st, &format!("{}verify/", layout.parts(run_id)))
        .await
        .expect("list")
        .into_iter()
        .filter(|i| i.name.contains("/vdead-"))
        .collect();
    assert_eq!(dead.len(), 1, "one batch dead-lettered: {dead:?}");
    let poison = t.path().join("queue").join("poison");
    assert_eq!(
        std::fs::read_dir(&poison).map(|d| d.count()).unwrap_or(0),
        1,
        "its message is in the dead-letter queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_sample_verification_checks_the_sample_one_process_would() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    let pf = write_pipeline(
        t.path(),
        "vsample",
        &src,
        &format!("file://{}", t.path().join("store").display()),
        &small_batches().replace("mode = \"full\"\n", "mode = \"sample\"\nsample = \"30%\"\n"),
    );
    let o = run(&["--json", "backup", s(&pf), "--workers", "3"]);
    assert_eq!(o.status.code(), Some(0));
    let r = json(&o);
    assert_eq!(r["verify"]["mode"], "sample", "{r}");
    let snapshot = r["snapshot"].as_str().expect("snapshot");
    let seed = r["verify"]["seed"].as_u64().expect("seed").to_string();
    let stored = r["verify"]["bytes_stored"].as_u64().expect("stored");
    let read = r["verify"]["bytes_read"].as_u64().expect("read");
    assert!(
        read < stored,
        "a sample, not everything: {read} of {stored}"
    );

    // One process, same snapshot, same seed: the same blocks, files and bytes.
    let o = run(&[
        "--json",
        "verify",
        s(&pf),
        snapshot,
        "--sample",
        "30%",
        "--seed",
        &seed,
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(checked(&r["verify"]), checked(&json(&o)));
    // And the seed is the snapshot's: a second verify after a backup would pick it too.
    assert_eq!(
        r["verify"]["seed"].as_u64(),
        Some(blobpipe::verify::snapshot_seed(snapshot))
    );
}

/// Three replicas of a run (`work --coordinate`, no `backup --workers`) on `q`: their
/// outputs, in spawn order.
fn replicas(pf: &Path, q: &Path, run_id: &str, extra: &[&str]) -> Vec<Output> {
    let children: Vec<Child> = (0..3)
        .map(|_| {
            blobpipe()
                .args(["--json", "work", s(pf), "--queue", s(q), "--coordinate"])
                .args(["--poll", "100ms"])
                .args(extra)
                .env("CONTAINER_APP_JOB_EXECUTION_NAME", run_id)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn replica")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("replica"))
        .collect()
}

/// The pids that marked attempts of run `run`'s verify batches.
async fn verify_pids(st: &Store, layout: &Layout, run: &str) -> std::collections::BTreeSet<String> {
    let prefix = format!("{}verify/", layout.parts(run));
    let mut out = std::collections::BTreeSet::new();
    for item in blobpipe::store::list_all(&**st, &prefix)
        .await
        .expect("list")
    {
        if !item.name.contains("/attempts/") {
            continue;
        }
        let who = st.get(&item.name, None).await.expect("marker");
        let who = String::from_utf8_lossy(&who).into_owned();
        out.insert(who.rsplit("pid=").next().unwrap_or_default().to_string());
    }
    out
}

/// The replica that merged the run's verification (the one whose run ended `committed`)
/// and its report; the others ended `already_committed`.
fn merged(outs: &[Output]) -> (i32, Value) {
    let mut found = Vec::new();
    for o in outs {
        let w = json(o);
        match w["runs"][0]["outcome"].as_str() {
            Some("committed") => found.push((
                o.status.code().expect("exit"),
                w["runs"][0]["report"].clone(),
            )),
            Some("already_committed") => assert_eq!(o.status.code(), Some(0), "{w}"),
            other => panic!("unexpected outcome {other:?}: {w}"),
        }
    }
    assert_eq!(found.len(), 1, "one replica merges: {found:?}");
    found.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_verify_by_batches_into_one_report() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    let pf = write_pipeline(
        t.path(),
        "repverify",
        &src,
        &format!("file://{}", t.path().join("store").display()),
        &small_batches(),
    );
    let q = t.path().join("queue");
    let run_id = "bp-scale-repverify-1";
    let (code, r) = merged(&replicas(&pf, &q, run_id, &[]));
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["status"], "ok", "{r}");
    let snapshot = r["snapshot"].as_str().expect("snapshot").to_string();

    let (p, st) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    let reports = blobpipe::store::list_all(&*st, &layout.verify_reports(&snapshot))
        .await
        .expect("list");
    assert_eq!(reports.len(), 1, "one verify report: {reports:?}");
    let parts = verify_parts(&st, &layout, run_id).await;
    assert!(parts.len() >= 3, "{} verify batches", parts.len());
    // Every batch went through the queue (an attempt marker names the process that took
    // it). Which replicas took them is up to the scheduler, so the count of processes is
    // not asserted here; a batch taken over by another process is proven by the kill -9
    // test of `backup --workers`, which runs the same worker code.
    let pids = verify_pids(&st, &layout, run_id).await;
    assert!(!pids.is_empty(), "no verify batch went through the queue");
    eprintln!("verify batches checked by {} process(es)", pids.len());
    assert!(queued(&q).is_empty(), "every message deleted");

    let o = run(&["--json", "verify", s(&pf), &snapshot, "--full"]);
    assert_eq!(o.status.code(), Some(0));
    let one = json(&o);
    assert!(one["blocks_checked"].as_u64().expect("blocks") > 0, "{one}");
    assert_eq!(checked(&r["verify"]), {
        let mut v = checked(&one);
        v["seed"] = r["verify"]["seed"].clone();
        v
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_damaged_before_the_replicas_verify_fails_their_run() {
    let t = tempfile::tempdir().expect("tmp");
    let src = t.path().join("src");
    tree(&src);
    let store_dir = t.path().join("store");
    let pf = write_pipeline(
        t.path(),
        "repdamage",
        &src,
        &format!("file://{}", store_dir.display()),
        &small_batches(),
    );
    let q = t.path().join("queue");
    let run_id = "bp-scale-repdamage-1";
    // The replicas pack every partition but hold the commit (and so the verification).
    for o in replicas(&pf, &q, run_id, &["--no-finalize"]) {
        assert_eq!(o.status.code(), Some(0), "{}", json(&o));
        assert_eq!(json(&o)["runs"][0]["outcome"], "complete");
    }
    let packs = pack_files(&store_dir);
    assert!(packs.len() >= 3, "{packs:?}");
    let victim = &packs[packs.len() / 2];
    let mut bytes = std::fs::read(victim).expect("pack");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(victim, bytes).expect("damage");
    let name = victim
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();

    let (code, r) = merged(&replicas(&pf, &q, run_id, &[]));
    assert_eq!(code, 3, "the verify exit code: {r}");
    assert_eq!(r["status"], "mismatch", "{r}");
    let found = r["verify"]["mismatches"].as_array().expect("mismatches");
    assert!(!found.is_empty(), "{r}");
    assert!(
        found
            .iter()
            .all(|m| m["blob"].as_str().is_some_and(|b| b.ends_with(&name))),
        "every finding names the damaged pack {name}: {found:?}"
    );
    let snapshot = r["snapshot"].as_str().expect("snapshot").to_string();
    let o = run(&["--json", "verify", s(&pf), &snapshot, "--full"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(r["verify"]["mismatches"], json(&o)["mismatches"]);
}
