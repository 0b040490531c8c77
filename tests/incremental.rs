//! Incremental backups: unchanged files are not read again, every kind of change is
//! caught, every snapshot restores on its own to the tree as it was, fulls come on
//! schedule, and point-in-time lookup and diff work.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use blobpipe::manifest::catalog;
use blobpipe::manifest::layout::Layout;
use blobpipe::pipeline::{BackupOptions, BackupReport, Pipeline};
use blobpipe::restore::{restore, RestoreOptions};
use blobpipe::store::Store;
use common::*;

fn copy_tree(from: &Path, to: &Path) {
    let o = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success());
}

async fn restore_equals(p: &Pipeline, s: &Store, snap: &str, tree: &Path, scratch: &Path) {
    let layout = Layout::new(&p.target.prefix);
    let m = catalog::load(&**s, &layout, snap).await.unwrap();
    let out = scratch.join(format!("r-{snap}"));
    restore(
        s,
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
    assert_same_tree(tree, &out);
}

async fn run(p: &Pipeline, s: &Store, full: bool) -> BackupReport {
    blobpipe::pipeline::backup(
        p,
        s.clone(),
        BackupOptions {
            full,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn incrementals_read_only_what_changed_and_restore_on_their_own() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    for i in 0..20 {
        std::fs::write(
            src.join(format!("docs/page-{i:02}.html")),
            format!("<p>page {i}</p>\n").repeat(200),
        )
        .unwrap();
    }
    let pf = write_pipeline(
        t.path(),
        "inc",
        &src,
        &format!("memory://{}", unique("inc")),
        "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\nsize = \"64KiB\"\n[incremental]\nfull_every = 100\n",
    );
    let (p, s) = open(&pf).await;
    let r0 = run(&p, &s, false).await;
    assert_eq!(r0.kind, "full");
    let files = r0.totals.files;
    assert_eq!(r0.files_read, files);
    let t0 = t.path().join("t0");
    copy_tree(&src, &t0);

    // No change: nothing is read, nothing new is stored, the snapshot is complete.
    let r1 = run(&p, &s, false).await;
    assert_eq!(r1.kind, "incremental");
    assert_eq!(r1.parent, r0.snapshot);
    assert_eq!(r1.files_read, 0, "{r1:?}");
    assert_eq!(r1.blocks_staged, 0);
    let c = r1.changes.clone().unwrap();
    assert_eq!((c.new, c.changed, c.deleted), (0, 0, 0));
    assert_eq!(
        c.unchanged,
        r0.totals.files + r0.totals.dirs + r0.totals.symlinks
    );
    assert_eq!(r1.totals.stored_bytes, r0.totals.stored_bytes);

    // Modify (same size), add, delete, rename, chmod only, retarget a symlink.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(src.join("docs/page-03.html"), "<p>PAGE 3</p>\n".repeat(200)).unwrap();
    std::fs::write(src.join("docs/new.txt"), "brand new").unwrap();
    std::fs::remove_file(src.join("docs/page-07.html")).unwrap();
    std::fs::rename(
        src.join("docs/page-11.html"),
        src.join("docs/renamed-11.html"),
    )
    .unwrap();
    std::fs::set_permissions(
        src.join("docs/page-15.html"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::remove_file(src.join("docs/link-rel")).unwrap();
    std::os::unix::fs::symlink("page-01.html", src.join("docs/link-rel")).unwrap();
    let r2 = run(&p, &s, false).await;
    assert_eq!(r2.kind, "incremental");
    let c = r2.changes.clone().unwrap();
    assert_eq!(c.new, 2, "new.txt and renamed-11.html: {c:?}");
    assert_eq!(c.deleted, 2, "page-07 and page-11: {c:?}");
    assert_eq!(
        c.changed,
        3 + 1,
        "page-03, page-15 (mode), link-rel and their dir docs: {c:?}"
    );
    // Only the changed, added and renamed files were read (the chmod'ed one too: its
    // ctime moved); nothing else.
    assert_eq!(r2.files_read, 4, "{r2:?}");
    let t2 = t.path().join("t2");
    copy_tree(&src, &t2);

    // Every snapshot restores on its own to the tree as it was.
    let scratch = t.path().join("scratch");
    restore_equals(&p, &s, r0.snapshot.as_deref().unwrap(), &t0, &scratch).await;
    restore_equals(&p, &s, r1.snapshot.as_deref().unwrap(), &t0, &scratch).await;
    restore_equals(&p, &s, r2.snapshot.as_deref().unwrap(), &t2, &scratch).await;

    // Full verify of the incremental checks the parent's packs it references.
    let layout = Layout::new("inc");
    let m2 = catalog::load(&*s, &layout, r2.snapshot.as_deref().unwrap())
        .await
        .unwrap();
    let v = blobpipe::verify::verify(
        &s,
        &layout,
        &m2,
        blobpipe::verify::config::VerifyMode::Full,
        None,
        &p.upload,
        None,
    )
    .await
    .unwrap();
    assert!(v.ok());
    assert_eq!(v.entries_checked, r2.totals.files);

    // --full reads everything again.
    let r3 = run(&p, &s, true).await;
    assert_eq!(r3.kind, "full");
    assert_eq!(r3.files_read, r3.totals.files);
    assert_eq!(r3.changes.unwrap().changed, 0);

    // diff and point in time.
    let d = blobpipe::manifest::diff(
        &catalog::load(&*s, &layout, r1.snapshot.as_deref().unwrap())
            .await
            .unwrap()
            .entries,
        &m2.entries,
    );
    assert_eq!(d.added, vec!["docs/new.txt", "docs/renamed-11.html"]);
    assert_eq!(d.removed, vec!["docs/page-07.html", "docs/page-11.html"]);
    assert!(d.changed.contains(&"docs/page-03.html".to_string()));
    let at = catalog::id_time(r2.snapshot.as_deref().unwrap()).unwrap();
    assert_eq!(
        catalog::resolve_at(&*s, &layout, at).await.unwrap(),
        r2.snapshot.clone().unwrap()
    );
    let just_before = at - chrono::Duration::milliseconds(1);
    assert_eq!(
        catalog::resolve_at(&*s, &layout, just_before)
            .await
            .unwrap(),
        r1.snapshot.clone().unwrap()
    );
    let e = catalog::resolve_at(&*s, &layout, "2000-01-01T00:00:00Z".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), blobpipe::ErrorKind::NotFound);
}

#[tokio::test]
async fn full_every_count_and_age_force_fulls() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let pf = write_pipeline(
        t.path(),
        "fe",
        &src,
        &format!("memory://{}", unique("fe")),
        "[incremental]\nfull_every = 2\n",
    );
    let (p, s) = open(&pf).await;
    let kinds: Vec<String> = {
        let mut v = vec![];
        for _ in 0..5 {
            v.push(run(&p, &s, false).await.kind);
        }
        v
    };
    assert_eq!(
        kinds,
        ["full", "incremental", "incremental", "full", "incremental"]
    );
    // Disabled: always full.
    let pf = write_pipeline(
        t.path(),
        "off",
        &src,
        &format!("memory://{}", unique("off")),
        "[incremental]\nenabled = false\n",
    );
    let (p, s) = open(&pf).await;
    run(&p, &s, false).await;
    assert_eq!(run(&p, &s, false).await.kind, "full");
}

#[tokio::test]
async fn rerunning_a_committed_run_does_not_commit_twice() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let pf = write_pipeline(
        t.path(),
        "once",
        &src,
        &format!("memory://{}", unique("once")),
        "",
    );
    let (p, s) = open(&pf).await;
    let opts = BackupOptions {
        run_id: Some("exec-9".into()),
        ..Default::default()
    };
    let a = blobpipe::pipeline::backup(&p, s.clone(), opts.clone())
        .await
        .unwrap();
    let b = blobpipe::pipeline::backup(&p, s.clone(), opts)
        .await
        .unwrap();
    assert_eq!(a.snapshot, b.snapshot);
    assert_eq!(b.blocks_staged, 0);
    assert_eq!(
        catalog::snapshot_ids(&*s, &Layout::new("once"))
            .await
            .unwrap()
            .len(),
        1
    );
}
