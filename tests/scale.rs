//! Memory flat in the number of files (issue 11): a backup holds at most a few
//! partitions' entries, never the tree; manifests are segmented so an unchanged
//! partition is only referenced and a one-path lookup reads a fraction; format-1
//! manifests (a committed fixture written by an earlier build) keep restoring and
//! verifying.

mod common;

use std::path::Path;
use std::process::Command;

use blobpipe::manifest::catalog;
use blobpipe::manifest::layout::Layout;
use blobpipe::restore::{restore, RestoreOptions};
use common::*;

const MAX_ENTRIES: usize = 64;

/// `dirs` × `per` small files.
fn many_files(root: &Path, dirs: usize, per: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per {
            std::fs::write(dir.join(format!("f{f:03}.txt")), format!("{d}/{f}\n").repeat(f % 5 + 1))
                .unwrap();
        }
    }
}

fn extra() -> String {
    format!(
        "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\n\
         [partitions]\nsize = \"64KiB\"\nmax_entries = {MAX_ENTRIES}\n[verify]\nmode = \"full\"\n"
    )
}

#[tokio::test]
async fn entries_held_stay_bounded_by_configuration_not_by_files() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    many_files(&src, 40, 75); // 3,040 entries: ~47 times the partition bound
    let pf = write_pipeline(
        t.path(),
        "scale",
        &src,
        &format!("file://{}", t.path().join("store").display()),
        &extra(),
    );
    let (p, s) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    let bound = 3 * MAX_ENTRIES; // planned + the parent's range + built
    let full = backup(&p, &s).await;
    assert_eq!(full.totals.files, 3000, "{full:?}");
    assert!(full.partitions >= 3040 / MAX_ENTRIES, "{} partitions", full.partitions);
    assert!(
        full.max_entries_held <= bound && full.max_entries_held > 0,
        "a worker held {} entries (bound {bound})",
        full.max_entries_held
    );
    assert_eq!(full.segments_written as usize, full.partitions);
    let v = full.verify.as_ref().unwrap();
    assert!(v.ok() && v.entries_checked >= 3000, "{v:?}");
    assert!(v.max_entries_held <= bound, "verify held {}", v.max_entries_held);

    // A no-change incremental reads no file and stores no segment: every partition's
    // segment is the parent's.
    let same = backup(&p, &s).await;
    assert_eq!(same.kind, "incremental");
    assert_eq!(same.files_read, 0);
    assert_eq!(same.segments_written, 0, "{same:?}");
    assert_eq!(same.segments_reused as usize, same.partitions);
    assert!(same.max_entries_held <= bound);
    let c = same.changes.as_ref().unwrap();
    assert_eq!((c.unchanged, c.new, c.changed, c.deleted), (3040, 0, 0, 0));

    // One file changed, one deleted, one added: only the partitions around them are
    // written again.
    std::fs::write(src.join("d010/f000.txt"), "changed, and longer than before\n").unwrap();
    std::fs::remove_file(src.join("d020/f001.txt")).unwrap();
    std::fs::write(src.join("d030/new.txt"), "new\n").unwrap();
    let inc = backup(&p, &s).await;
    let c = inc.changes.as_ref().unwrap();
    // Changed: the file, and the two directories whose listing changed (their mtime).
    assert_eq!((c.changed, c.new, c.deleted), (3, 1, 1), "{c:?}");
    assert_eq!(inc.files_read, 2);
    assert!(
        inc.segments_written >= 1 && inc.segments_written <= 6,
        "{} segments written for 3 changes",
        inc.segments_written
    );
    let v = inc.verify.as_ref().unwrap();
    assert!(v.ok() && v.entries_checked >= 3000, "{v:?}");
    assert!(v.max_entries_held <= bound, "verify held {}", v.max_entries_held);

    // The manifest lists segments, not entries; a one-path lookup reads one or two of
    // them, not the snapshot.
    let id = inc.snapshot.clone().unwrap();
    let head = catalog::load_head(&*s, &layout, &id).await.unwrap();
    assert!(head.entries.is_empty() && head.segments.len() == inc.partitions);
    assert_eq!(head.header.format, 2);
    let one = catalog::load_for(&*s, &layout, &id, &["d010/f000.txt".into()])
        .await
        .unwrap();
    assert!(
        one.entries.len() <= 2 * MAX_ENTRIES,
        "a one-path lookup read {} of {} entries",
        one.entries.len(),
        inc.totals.files
    );
    assert!(one.entries.iter().any(|e| e.path.display() == "d010/f000.txt"));

    // Restores stream back the whole tree as it is now, a segment at a time.
    let out = t.path().join("out");
    let m = catalog::load_head(&*s, &layout, &id).await.unwrap();
    let r = restore(
        &s,
        &layout,
        &m,
        &RestoreOptions {
            to: out.clone(),
            paths: vec![],
            overwrite: false,
            concurrency: 2,
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.files, 3000);
    assert!(
        r.max_entries_held <= MAX_ENTRIES && r.max_entries_held > 0,
        "restore held {}",
        r.max_entries_held
    );
    assert_same_tree(&src, &out);
}

#[test]
fn a_one_path_restore_of_a_segmented_snapshot_restores_that_path() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    many_files(&src, 10, 40);
    let pf = write_pipeline(
        t.path(),
        "onepath",
        &src,
        &format!("file://{}", t.path().join("store").display()),
        &extra(),
    );
    let bin = env!("CARGO_BIN_EXE_blobpipe");
    let o = Command::new(bin).arg("backup").arg(&pf).arg("-q").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = t.path().join("one");
    let o = Command::new(bin)
        .args(["restore"])
        .arg(&pf)
        .args(["latest", "--path", "d007/f003.txt", "--to"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(out.join("d007/f003.txt")).unwrap(),
        std::fs::read(src.join("d007/f003.txt")).unwrap()
    );
    assert!(!out.join("d006").exists());
    let o = Command::new(bin)
        .args(["ls"])
        .arg(&pf)
        .args(["latest", "--path", "d003/f01*"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = String::from_utf8_lossy(&o.stdout);
    assert_eq!(listed.lines().count(), 10, "{listed}");
}

#[test]
fn a_damaged_segment_fails_restore_and_verify_by_name_and_prune_keeps_what_is_referenced() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    many_files(&src, 6, 30);
    let store = t.path().join("store");
    let pf = write_pipeline(
        t.path(),
        "damaged",
        &src,
        &format!("file://{}", store.display()),
        &format!("{}[retention]\nkeep_last = 1\n", extra()),
    );
    let bin = env!("CARGO_BIN_EXE_blobpipe");
    let run = |args: &[&str]| {
        let o = Command::new(bin).args(args).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let pfs = pf.to_str().unwrap();
    assert_eq!(run(&["backup", pfs, "-q"]).0, 0);
    std::fs::write(src.join("d001/f000.txt"), "changed\n").unwrap();
    assert_eq!(run(&["backup", pfs, "-q"]).0, 0);
    // Forget the older snapshot and prune at once: the segments the newer one still
    // references (its unchanged partitions came from the first run) must stay.
    let (code, err) = run(&["forget", pfs]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = run(&["prune", pfs, "--grace", "0s"]);
    assert_eq!(code, 0, "{err}");
    let out = t.path().join("out");
    let (code, err) = run(&["restore", pfs, "latest", "--to", out.to_str().unwrap()]);
    assert_eq!(code, 0, "restore after prune: {err}");
    assert_same_tree(&src, &out);

    // Damage one segment: restore and verify refuse it, naming it (exit 3).
    let segs: Vec<_> = walk(&store.join("backups/damaged/segments"));
    assert!(segs.len() >= 2, "{segs:?}");
    let victim = &segs[segs.len() / 2];
    let mut gz = std::fs::read(victim).unwrap();
    let n = gz.len();
    gz[n / 2] ^= 0xff;
    std::fs::write(victim, gz).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    let (code, err) = run(&["restore", pfs, "latest", "--to", t.path().join("out2").to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&name[..16]), "the error names the segment: {err}");
    let (code, err) = run(&["verify", pfs, "latest"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("segment"), "{err}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn format_1_manifests_of_an_earlier_build_restore_and_verify() {
    // tests/fixtures/v1-store: two snapshots (a full and an incremental) written by
    // blobpipe before format 2, kept as they were stored.
    let t = tempfile::tempdir().unwrap();
    let o = Command::new("cp")
        .args(["-a", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-store")])
        .arg(t.path().join("store"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let pf = t.path().join("p.toml");
    std::fs::write(
        &pf,
        format!(
            "name = \"v1fixture\"\n[source]\ntype = \"fs\"\nroot = \"{}\"\n[target]\nurl = \"file://{}\"\ncontainer = \"backups\"\n",
            t.path().join("src").display(),
            t.path().join("store").display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_blobpipe");
    let out = t.path().join("out");
    let o = Command::new(bin)
        .arg("restore")
        .arg(&pf)
        .args(["latest", "--to"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "hello v1\nchanged\n");
    assert_eq!(std::fs::read(out.join("sub/b.bin")).unwrap(), vec![b'x'; 5000]);
    assert_eq!(std::fs::read_to_string(out.join("sub/c.txt")).unwrap(), "second\n");
    assert_eq!(std::fs::read_to_string(out.join("new.txt")).unwrap(), "new\n");
    assert_eq!(std::fs::read_link(out.join("link")).unwrap(), Path::new("a.txt"));
    assert!(out.join("empty").is_dir());
    let o = Command::new(bin).arg("verify").arg(&pf).args(["latest", "--full"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The older (full) snapshot restores too.
    let o = Command::new(bin).arg("snapshots").arg(&pf).arg("--json").output().unwrap();
    assert!(o.status.success());
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    // A format-2 incremental on top of the format-1 parent reuses its entries.
    std::fs::create_dir_all(t.path().join("src")).unwrap();
    let o = Command::new("cp").arg("-a").arg(format!("{}/.", out.display())).arg(t.path().join("src")).output().unwrap();
    assert!(o.status.success());
    let o = Command::new(bin).arg("backup").arg(&pf).arg("--json").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["kind"], "incremental", "{r}");
    assert_eq!(r["status"], "ok", "{r}");
}
