//! The engine end to end against the in-memory store: backup → verify → restore, and
//! what must happen on corruption, tampering, slow stores, failures and resumes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use blobpipe::manifest::catalog;
use blobpipe::manifest::layout::Layout;
use blobpipe::manifest::records::RunStatus;
use blobpipe::manifest::{Manifest, PathBytes};
use blobpipe::pipeline::BackupOptions;
use blobpipe::restore::{restore, RestoreOptions};
use blobpipe::store::memory::MemoryStore;
use blobpipe::verify::config::VerifyMode;
use blobpipe::verify::verify;
use blobpipe::ErrorKind;
use common::*;

/// Small frames, blocks and packs so a small tree spans many of each.
const SMALL: &str = "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\nsize = \"64KiB\"\n";

async fn roundtrip(codec: &str) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let url = format!("memory://{}", unique("rt"));
    let extra = format!("{SMALL}[verify]\nmode = \"full\"\n");
    let extra = extra.replace(
        "[compression]\n",
        &format!("[compression]\ncodec = \"{codec}\"\n"),
    );
    let pf = write_pipeline(t.path(), "rt", &src, &url, &extra);
    let (p, s) = open(&pf).await;
    let r = backup(&p, &s).await;
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert!(
        r.totals.packs >= 3,
        "big files get packs of their own: {:?}",
        r.totals
    );
    let v = r.verify.as_ref().unwrap();
    assert!(v.ok() && v.mode == "full" && v.entries_checked == r.totals.files);
    let layout = Layout::new(&p.target.prefix);
    let id = catalog::resolve(&*s, &layout, "latest").await.unwrap();
    assert_eq!(Some(id.clone()), r.snapshot);
    let m = catalog::load(&*s, &layout, &id).await.unwrap();
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
    .unwrap();
    assert_eq!(rr.files, r.totals.files);
    let n = assert_same_tree(&src, &out);
    assert_eq!(n as u64, r.totals.files + r.totals.dirs + r.totals.symlinks);
}

#[tokio::test]
async fn roundtrip_zstd() {
    roundtrip("zstd").await;
}

#[tokio::test]
async fn roundtrip_gzip() {
    roundtrip("gzip").await;
}

async fn setup(
    extra: &str,
) -> (
    tempfile::TempDir,
    blobpipe::pipeline::Pipeline,
    blobpipe::store::Store,
    Manifest,
) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let url = format!("memory://{}", unique("eng"));
    let pf = write_pipeline(t.path(), "eng", &src, &url, &format!("{SMALL}{extra}"));
    let (p, s) = open(&pf).await;
    let r = backup(&p, &s).await;
    let m = catalog::load(&*s, &Layout::new("eng"), r.snapshot.as_deref().unwrap())
        .await
        .unwrap();
    (t, p, s, m)
}

fn opts(to: std::path::PathBuf) -> RestoreOptions {
    RestoreOptions {
        to,
        paths: vec![],
        overwrite: false,
        concurrency: 2,
    }
}

#[tokio::test]
async fn restore_one_path_reads_only_its_frames() {
    let (t, p, s, m) = setup("").await;
    let layout = Layout::new(&p.target.prefix);
    let out = t.path().join("one");
    let mut o = opts(out.clone());
    o.paths = vec!["docs/guide/intro.md".into()];
    let r = restore(&s, &layout, &m, &o, None).await.unwrap();
    assert_eq!(r.files, 1);
    assert_eq!(
        std::fs::read(out.join("docs/guide/intro.md")).unwrap(),
        std::fs::read(t.path().join("src/docs/guide/intro.md")).unwrap()
    );
    assert!(!out.join("README.md").exists());
    let stored: u64 = m.packs.iter().map(|p| p.size).sum();
    assert!(
        r.bytes_fetched * 10 < stored,
        "fetched {} of {stored}",
        r.bytes_fetched
    );
    // A glob matching nothing is a clear NotFound.
    o.paths = vec!["nope/**".into()];
    let e = restore(&s, &layout, &m, &o, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn restore_refuses_to_overwrite_unless_told() {
    let (t, p, s, m) = setup("").await;
    let layout = Layout::new(&p.target.prefix);
    let out = t.path().join("o");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("README.md"), "mine").unwrap();
    let e = restore(&s, &layout, &m, &opts(out.clone()), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused);
    assert!(e.to_string().contains("README.md"), "{e}");
    assert_eq!(std::fs::read(out.join("README.md")).unwrap(), b"mine");
    assert!(!out.join("docs").exists(), "nothing written on refusal");
    let mut o = opts(out.clone());
    o.overwrite = true;
    restore(&s, &layout, &m, &o, None).await.unwrap();
    assert_same_tree(&t.path().join("src"), &out);
}

async fn tampered(m: &Manifest, path: &[u8]) -> Manifest {
    let mut m2 = m.clone();
    let i = m2
        .entries
        .iter()
        .position(|e| e.path.0 == b"README.md")
        .unwrap();
    m2.entries[i].path = PathBytes(path.to_vec());
    m2
}

#[tokio::test]
async fn tampered_manifest_paths_are_refused() {
    let (t, p, s, m) = setup("").await;
    let layout = Layout::new(&p.target.prefix);
    for bad in [
        &b"../escaped.txt"[..],
        b"/tmp/blobpipe-abs-escape.txt",
        b"docs/../../x",
    ] {
        let m2 = tampered(&m, bad).await;
        let out = t.path().join("safe");
        let e = restore(&s, &layout, &m2, &opts(out.clone()), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
        assert!(!t.path().join("escaped.txt").exists());
        assert!(!std::path::Path::new("/tmp/blobpipe-abs-escape.txt").exists());
        assert!(
            !out.join("README.md").exists(),
            "refused before writing anything"
        );
    }
    // A stored symlink followed by a file "inside" it must not write through the link.
    let mut m3 = m.clone();
    let link = m3
        .entries
        .iter()
        .position(|e| e.path.0 == b"link-abs")
        .unwrap();
    let outside = tempfile::tempdir().unwrap();
    m3.entries[link].target = Some(PathBytes(
        outside.path().as_os_str().as_encoded_bytes().to_vec(),
    ));
    let readme = m3
        .entries
        .iter()
        .position(|e| e.path.0 == b"README.md")
        .unwrap();
    let mut evil = m3.entries[readme].clone();
    evil.path = PathBytes(b"link-abs/pwned.txt".to_vec());
    m3.entries.push(evil);
    m3.entries.sort_by(|a, b| a.path.cmp(&b.path));
    let out = t.path().join("safe2");
    let r = restore(&s, &layout, &m3, &opts(out.clone()), None).await;
    assert!(
        !outside.path().join("pwned.txt").exists(),
        "wrote through a symlink: {r:?}"
    );
}

#[tokio::test]
async fn corruption_is_found_and_named() {
    let (_t, p, s, m) = setup("").await;
    let layout = Layout::new(&p.target.prefix);
    let mem = MemoryStore::shared(&format!(
        "{}/backups",
        match &p.target.location {
            blobpipe::store::config::StoreLocation::Memory(n) => n.clone(),
            _ => unreachable!(),
        }
    ));
    // Pick the pack holding README.md and flip a byte inside its second block if any.
    let e = m
        .entries
        .iter()
        .find(|e| e.path.0 == b"docs/guide/intro.md")
        .unwrap();
    let pack = m.pack(e.pack.as_deref().unwrap()).unwrap();
    let bi = pack.blocks.len() - 1;
    let off = pack.block_range(bi).start + 3;
    mem.corrupt(&layout.full(&pack.blob), off as usize);

    let full = verify(&s, &layout, &m, VerifyMode::Full, Some(1), &p.upload, None)
        .await
        .unwrap();
    assert!(!full.ok());
    let bm = full
        .mismatches
        .iter()
        .find(|x| x.check == "block-md5")
        .expect("block mismatch reported");
    assert_eq!(bm.pack, pack.id);
    assert_eq!(bm.block, Some(bi));
    assert!(!bm.paths.is_empty(), "affected paths named");
    // Metadata alone cannot see a flipped byte, but the stored report exists.
    let md = verify(&s, &layout, &m, VerifyMode::Metadata, None, &p.upload, None)
        .await
        .unwrap();
    assert!(md.ok());
    // ...and a later passing metadata check does not hide the full check's mismatch.
    let list = catalog::list(&*s, &layout).await.unwrap();
    assert_eq!(list.last().unwrap().verify_status, "mismatch");
    assert_eq!(list.last().unwrap().verify_mode.as_deref(), Some("full"));
    // A sample that includes every block catches it; the report is stored.
    let sample = verify(
        &s,
        &layout,
        &m,
        VerifyMode::Sample(1.0),
        Some(9),
        &p.upload,
        None,
    )
    .await
    .unwrap();
    assert!(sample
        .mismatches
        .iter()
        .any(|x| x.check == "block-md5" && x.block == Some(bi)));
    let stored = sample.stored_as.unwrap();
    assert!(s.head(&stored).await.unwrap().is_some());
    let list = catalog::list(&*s, &layout).await.unwrap();
    assert_eq!(list.last().unwrap().verify_status, "mismatch");
    // Restore of the affected file fails its check, is listed as damaged and leaves no
    // file behind.
    let t2 = tempfile::tempdir().unwrap();
    let mut o = opts(t2.path().to_path_buf());
    o.paths = vec!["docs/guide/intro.md".into()];
    // (The flipped byte may lie outside the frames holding intro.md: then it restores.)
    let rr = restore(&s, &layout, &m, &o, None).await.unwrap();
    if rr.ok() {
        assert_eq!(rr.files, 1);
    } else {
        assert_eq!(rr.damaged_total, 1, "{rr:?}");
        assert_eq!(rr.damaged[0].path, "docs/guide/intro.md");
        assert!(!t2.path().join("docs/guide/intro.md").exists());
    }
}

#[tokio::test]
async fn backpressure_bounds_blocks_in_flight() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6u64 {
        std::fs::write(src.join(format!("f{i}")), noise(1_500_000, i + 1)).unwrap();
    }
    let name = unique("bp");
    let extra = "[compression]\nframe_size = \"64KiB\"\nlevel = 1\n[upload]\nblock_size = \"64KiB\"\nconcurrency = 2\nchannel_capacity = 2\n[partitions]\nsize = \"64KiB\"\nmax_parallel = 2\n[verify]\nmode = \"metadata\"\n";
    let pf = write_pipeline(t.path(), "bp", &src, &format!("memory://{name}"), extra);
    let (p, s) = open(&pf).await;
    MemoryStore::shared(&format!("{name}/backups")).set_delay(Some(Duration::from_millis(3)));
    let r = backup(&p, &s).await;
    // workers (2) + channel (2) + uploaders (2): nothing else may hold a sealed block.
    let bound = p.partitions.max_parallel + p.upload.channel_capacity + p.upload.concurrency;
    assert!(
        r.blocks_staged > 50,
        "enough blocks to fill the pipe: {}",
        r.blocks_staged
    );
    assert!(
        r.max_inflight_blocks <= bound,
        "{} > {bound}",
        r.max_inflight_blocks
    );
    assert!(
        r.max_inflight_blocks >= 3,
        "the pipe did fill: {}",
        r.max_inflight_blocks
    );
}

#[tokio::test]
async fn failed_run_commits_nothing_and_rerun_resumes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let name = unique("resume");
    let pf = write_pipeline(
        t.path(),
        "res",
        &src,
        &format!("memory://{name}"),
        &format!("{SMALL}[retry]\nattempts = 2\ninitial_backoff = \"1ms\"\n"),
    );
    let (p, s) = open(&pf).await;
    let mem = MemoryStore::shared(&format!("{name}/backups"));
    let layout = Layout::new("res");
    // A first good snapshot.
    let first = backup(&p, &s).await.snapshot.unwrap();
    // Partition 1's part record cannot be written: the run fails, nothing is committed.
    mem.fail_writes_containing(Some("/f-00001-"));
    let e = blobpipe::pipeline::backup(
        &p,
        s.clone(),
        BackupOptions {
            run_id: Some("run-x".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Store, "{e}");
    assert_eq!(
        catalog::snapshot_ids(&*s, &layout).await.unwrap(),
        vec![first.clone()]
    );
    // Meanwhile a file of a finished partition is deleted, one of partition 1 too.
    std::fs::remove_file(src.join("README.md")).unwrap();
    mem.fail_writes_containing(None);
    let staged_before = mem.counts.staged.load(std::sync::atomic::Ordering::Relaxed);
    let r = blobpipe::pipeline::backup(
        &p,
        s.clone(),
        BackupOptions {
            run_id: Some("run-x".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(r.partitions_resumed >= 1, "{r:?}");
    let staged = mem.counts.staged.load(std::sync::atomic::Ordering::Relaxed) - staged_before;
    assert_eq!(staged, r.blocks_staged);
    // The earlier snapshot is intact and the new one restores on its own.
    let ids = catalog::snapshot_ids(&*s, &layout).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], first);
    let m = catalog::load(&*s, &layout, &ids[1]).await.unwrap();
    let v = verify(&s, &layout, &m, VerifyMode::Full, None, &p.upload, None)
        .await
        .unwrap();
    assert!(v.ok(), "{:?}", v.mismatches);
    // The rerun walked the tree again: README.md is gone from it, so from the snapshot.
    assert!(!m.entries.iter().any(|e| e.path.0 == b"README.md"));
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
}

#[tokio::test]
async fn file_deleted_between_attempts_is_left_out_of_the_resumed_snapshot() {
    // A resumed attempt walks the tree again (the stored plan holds no entries): a file
    // deleted after a failed attempt is simply not in the snapshot, not a problem, and
    // partitions whose range did not change are taken from the earlier attempt.
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let name = unique("partial");
    let pf = write_pipeline(t.path(), "par", &src, &format!("memory://{name}"), SMALL);
    let (p, s) = open(&pf).await;
    let mem = MemoryStore::shared(&format!("{name}/backups"));
    // Fail the last partitions' part records so the run fails after some finished.
    mem.fail_writes_containing(Some("/f-00002-"));
    let run = BackupOptions {
        run_id: Some("run-p".into()),
        ..Default::default()
    };
    let _ = blobpipe::pipeline::backup(&p, s.clone(), run.clone())
        .await
        .unwrap_err();
    mem.fail_writes_containing(None);
    std::fs::remove_file(src.join("docs/guide/intro.md")).unwrap();
    let r = blobpipe::pipeline::backup(&p, s.clone(), run)
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let m = catalog::load(&*s, &Layout::new("par"), r.snapshot.as_deref().unwrap())
        .await
        .unwrap();
    assert!(!m.entries.iter().any(|e| e.path.0 == b"docs/guide/intro.md"));
    assert!(m.entries.iter().any(|e| e.path.0 == b"docs/guide"));
    assert_eq!(m.header.totals.unreadable, 0);
}

#[tokio::test]
async fn file_changing_while_read_is_reread_then_flagged() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let busy = src.join("busy.log");
    // Incompressible, so level-19 compression keeps each read window open long enough
    // for the writer to change the file even on a loaded machine.
    std::fs::write(&busy, noise(3 << 20, 7)).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let b2 = busy.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(b2).unwrap();
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            f.write_all(b"more\n").unwrap();
            f.flush().unwrap();
        }
    });
    let pf = write_pipeline(
        t.path(),
        "busy",
        &src,
        &format!("memory://{}", unique("busy")),
        "[compression]\nlevel = 19\n[verify]\nmode = \"full\"\n",
    );
    let (p, s) = open(&pf).await;
    let r = backup(&p, &s).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(r.status, RunStatus::Partial, "{r:?}");
    assert_eq!(r.inconsistent, vec![PathBytes(b"busy.log".to_vec())]);
    // What was stored is self-consistent: full verify passes.
    assert!(r.verify.unwrap().ok());
}

#[tokio::test]
async fn second_run_is_locked_out() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let name = unique("lock");
    let pf = write_pipeline(t.path(), "lk", &src, &format!("memory://{name}"), "");
    let (p, s) = open(&pf).await;
    let lease = s
        .acquire_lease(
            &Layout::new("lk").lock(),
            Duration::from_secs(60),
            "run other-run on host",
        )
        .await
        .unwrap();
    let e = blobpipe::pipeline::backup(&p, s.clone(), BackupOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked);
    assert!(e.to_string().contains("other-run"), "{e}");
    s.release_lease(&lease).await.unwrap();
    assert_eq!(backup(&p, &s).await.status, RunStatus::Ok);
}

#[tokio::test]
async fn rerun_reuses_blocks_staged_by_a_failed_attempt() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.bin"), noise(900_000, 1)).unwrap();
    std::fs::write(src.join("b.bin"), noise(900_000, 2)).unwrap();
    let name = unique("blocks");
    let pf = write_pipeline(
        t.path(),
        "blk",
        &src,
        &format!("memory://{name}"),
        &format!("{SMALL}[retry]\nattempts = 1\n"),
    );
    let (p, s) = open(&pf).await;
    let mem = MemoryStore::shared(&format!("{name}/backups"));
    mem.fail_commits_containing(Some("/packs/"));
    let run = BackupOptions {
        run_id: Some("exec-42".into()),
        ..Default::default()
    };
    blobpipe::pipeline::backup(&p, s.clone(), run.clone())
        .await
        .unwrap_err();
    let staged_first = mem.counts.staged.load(std::sync::atomic::Ordering::Relaxed);
    assert!(staged_first > 10, "{staged_first}");
    mem.fail_commits_containing(None);
    let r = blobpipe::pipeline::backup(&p, s.clone(), run)
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Ok);
    assert!(r.blocks_reused > 0, "{r:?}");
    let staged_second = mem.counts.staged.load(std::sync::atomic::Ordering::Relaxed) - staged_first;
    assert_eq!(staged_second, r.blocks_staged);
    assert!(
        staged_second < staged_first,
        "second attempt uploaded {staged_second} blocks, first {staged_first}"
    );
    let m = catalog::load(&*s, &Layout::new("blk"), r.snapshot.as_deref().unwrap())
        .await
        .unwrap();
    let v = verify(
        &s,
        &Layout::new("blk"),
        &m,
        VerifyMode::Full,
        None,
        &p.upload,
        None,
    )
    .await
    .unwrap();
    assert!(v.ok(), "{:?}", v.mismatches);
}

#[tokio::test]
async fn a_small_sample_still_reads_something_and_catches_corruption() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("only.txt"),
        b"the one file of a tiny backup\n".repeat(100),
    )
    .unwrap();
    let name = unique("tiny");
    let pf = write_pipeline(
        t.path(),
        "tiny",
        &src,
        &format!("memory://{name}"),
        "[verify]\nsample = \"1%\"\n",
    );
    let (p, s) = open(&pf).await;
    let r = backup(&p, &s).await;
    let v = r.verify.unwrap();
    assert!(v.blocks_checked >= 1 && v.entries_checked >= 1, "{v:?}");
    let layout = Layout::new("tiny");
    let m = catalog::load(&*s, &layout, r.snapshot.as_deref().unwrap())
        .await
        .unwrap();
    MemoryStore::shared(&format!("{name}/backups")).corrupt(&layout.full(&m.packs[0].blob), 40);
    let v = verify(
        &s,
        &layout,
        &m,
        VerifyMode::Sample(0.01),
        Some(5),
        &p.upload,
        None,
    )
    .await
    .unwrap();
    assert!(
        !v.ok(),
        "a 1% sample of a one-block pack must still read that block"
    );
}
