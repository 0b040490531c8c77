//! Command source: stdout stored as ordered chunk entries; a failing or hanging command
//! fails the run and no snapshot claims its output.

use std::path::Path;

use blobpipe::manifest::layout::Layout;
use blobpipe::manifest::records::RunStatus;
use blobpipe::pipeline::{BackupOptions, Pipeline};
use blobpipe::ErrorKind;
use sha2::{Digest, Sha256};

fn pipeline(dir: &Path, source: &str) -> Pipeline {
    let text = format!(
        "name = \"cmd\"\n[source]\ntype = \"command\"\n{source}\n[target]\nurl = \"memory://cmd-{}\"\n[verify]\nmode = \"full\"\n",
        blobpipe::support::ids::random_hex(6)
    );
    let p = dir.join("cmd.toml");
    std::fs::write(&p, text).unwrap();
    Pipeline::load(&p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_is_stored_in_order_and_restores_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "command = [\"seq\", \"1\", \"100000\"]\nname = \"numbers\"\nchunk_size = \"64KiB\"\ntimeout = \"1m\"",
    );
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let r = blobpipe::pipeline::backup(&p, store.clone(), BackupOptions::default())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Ok);
    let expected = std::process::Command::new("seq")
        .args(["1", "100000"])
        .output()
        .unwrap()
        .stdout;
    let layout = Layout::new(&p.target.prefix);
    let m = blobpipe::manifest::catalog::load(&*store, &layout, r.snapshot.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(m.streams.len(), 1);
    let s = &m.streams[0];
    assert_eq!(s.program, "seq");
    assert_eq!(s.bytes, expected.len() as u64);
    assert_eq!(s.sha256, hex::encode(Sha256::digest(&expected)));
    assert!(s.chunks.len() >= 9, "{} chunks", s.chunks.len());
    assert!(m.header.source.starts_with("command:seq"));
    // Restore the chunks as files and concatenate them in manifest order.
    let out = dir.path().join("out");
    blobpipe::restore::restore(
        &store,
        &layout,
        &m,
        &blobpipe::restore::RestoreOptions {
            to: out.clone(),
            paths: vec![],
            overwrite: false,
            concurrency: 2,
        },
        None,
    )
    .await
    .unwrap();
    let mut joined = Vec::new();
    for c in &s.chunks {
        joined.extend(std::fs::read(out.join(c.to_path())).unwrap());
    }
    assert_eq!(joined, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_output_and_stderr_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "command = [\"echo warning-on-stderr >&2\"]\nshell = true",
    );
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let r = blobpipe::pipeline::backup(&p, store.clone(), BackupOptions::default())
        .await
        .unwrap();
    let layout = Layout::new(&p.target.prefix);
    let m = blobpipe::manifest::catalog::load(&*store, &layout, r.snapshot.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(m.streams[0].bytes, 0);
    assert_eq!(m.streams[0].chunks.len(), 1);
    assert_eq!(m.streams[0].stderr, "warning-on-stderr\n");
}

async fn assert_fails_without_snapshot(p: &Pipeline, needle: &[&str]) {
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let e = blobpipe::pipeline::backup(p, store.clone(), BackupOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source, "{e}");
    for n in needle {
        assert!(e.to_string().contains(n), "{n:?} not in {e}");
    }
    let layout = Layout::new(&p.target.prefix);
    assert!(blobpipe::manifest::catalog::list(&*store, &layout)
        .await
        .unwrap()
        .is_empty());
    // The run record keeps the error, stderr included.
    let runs = blobpipe::store::list_all(&*store, &layout.runs())
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    let rec = store.get(&runs[0].name, None).await.unwrap();
    let rec = String::from_utf8_lossy(&rec);
    assert!(rec.contains("\"failed\""), "{rec}");
    assert!(rec.contains(needle[0]), "{rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_zero_exit_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "command = [\"seq 1 50000; echo dump broke >&2; exit 3\"]\nshell = true",
    );
    assert_fails_without_snapshot(&p, &["exited with status 3", "dump broke"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_command_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "command = [\"sleep\", \"30\"]\ntimeout = \"300ms\"",
    );
    let t = std::time::Instant::now();
    assert_fails_without_snapshot(&p, &["timed out"]).await;
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_program_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "command = [\"/nonexistent/blobpipe-nope\"]");
    assert_fails_without_snapshot(&p, &["cannot start command"]).await;
}
