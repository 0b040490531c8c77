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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_output_chunks_are_the_parents_and_a_shift_is_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.txt");
    let mut text: Vec<u8> = (1..=100_000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    std::fs::write(&file, &text).unwrap();
    let p = pipeline(
        dir.path(),
        &format!(
            "command = [\"cat\", {:?}]\nname = \"numbers\"\nchunk_size = \"64KiB\"\ntimeout = \"1m\"",
            file.display().to_string()
        ),
    );
    let store = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let layout = Layout::new(&p.target.prefix);
    let run = || async {
        let r = blobpipe::pipeline::backup(&p, store.clone(), BackupOptions::default())
            .await
            .unwrap();
        assert_eq!(r.status, RunStatus::Ok, "{r:?}");
        let m = blobpipe::manifest::catalog::load(&*store, &layout, r.snapshot.as_ref().unwrap())
            .await
            .unwrap();
        (r, m)
    };
    let (r1, m1) = run().await;
    let n = m1.streams[0].chunks.len() as u64;
    assert!(n >= 9, "{n} chunks");
    assert_eq!(
        (r1.chunks.source.as_str(), r1.chunks.new, r1.chunks.reused),
        ("command", n, 0)
    );

    // Output grows at the end: every full chunk is the parent's, only the tail is new.
    text.extend_from_slice(b"the end\n");
    std::fs::write(&file, &text).unwrap();
    let (r2, m2) = run().await;
    assert_eq!(r2.kind, "incremental");
    assert_eq!(
        (r2.chunks.new, r2.chunks.reused),
        (1, n - 1),
        "{:?}",
        r2.chunks
    );
    assert_eq!(r2.chunks.reused_bytes, (n - 1) * 64 * 1024);
    let s2 = &m2.streams[0];
    assert_eq!(s2.sha256, hex::encode(Sha256::digest(&text)));
    let old: std::collections::HashSet<&str> = m1.packs.iter().map(|k| k.id.as_str()).collect();
    let in_old = m2
        .entries
        .iter()
        .filter(|e| e.pack.as_deref().is_some_and(|k| old.contains(k)))
        .count() as u64;
    assert_eq!(in_old, n - 1, "reused chunks point into the parent's packs");
    // The snapshot restores byte-exact on its own (parent's packs carried over).
    let out = dir.path().join("restored");
    blobpipe::restore::restore(
        &store,
        &layout,
        &m2,
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
    for c in &s2.chunks {
        joined.extend(std::fs::read(out.join(c.to_path())).unwrap());
    }
    assert_eq!(joined, text);

    // One byte inserted at the front shifts every offset: nothing is the parent's.
    text.insert(0, b'#');
    std::fs::write(&file, &text).unwrap();
    let (r3, m3) = run().await;
    assert_eq!(r3.chunks.reused, 0, "{:?}", r3.chunks);
    assert_eq!(m3.streams[0].sha256, hex::encode(Sha256::digest(&text)));
}
