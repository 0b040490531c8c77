//! Restore from cold storage: archived packs stop a plain restore (exit 8, listing them),
//! `--plan` lists exactly the archived packs needed, `--rehydrate` copies them to Hot
//! staging blobs, polls, resumes after an interruption, restores byte-identical and
//! cleans up; data-level verify skips archived packs and says so.

mod common;
mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use blobpipe::manifest::catalog;
use blobpipe::manifest::layout::Layout;
use blobpipe::restore::{self, RehydrateOptions, RestoreOptions};
use blobpipe::store::memory::MemoryStore;
use blobpipe::store::{list_all, RehydratePriority, Tier};
use blobpipe::support::cancel::Cancel;
use blobpipe::verify::config::VerifyMode;
use blobpipe::ErrorKind;
use common::*;

const SMALL: &str = "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\nsize = \"64KiB\"\n";

fn opts(to: &std::path::Path, paths: &[&str]) -> RestoreOptions {
    RestoreOptions {
        to: to.to_path_buf(),
        paths: paths.iter().map(|s| s.to_string()).collect(),
        overwrite: false,
        concurrency: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_packs_need_rehydration_which_polls_resumes_and_cleans_up() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let name = unique("arch");
    let pf = write_pipeline(t.path(), "arch", &src, &format!("memory://{name}"), SMALL);
    let (p, s) = open(&pf).await;
    let mem = MemoryStore::shared(&format!("{name}/backups"));
    backup(&p, &s).await;
    let layout = Layout::new(&p.target.prefix);
    let id = catalog::resolve(&*s, &layout, "latest").await.unwrap();
    let m = catalog::load(&*s, &layout, &id).await.unwrap();
    assert!(m.packs.len() >= 2);
    // Archive every pack but the one holding README.md.
    let readme = m
        .entries
        .iter()
        .find(|e| e.path.display() == "README.md")
        .unwrap();
    let online = readme.pack.clone().unwrap();
    let mut archived = BTreeSet::new();
    for pk in &m.packs {
        if pk.id != online {
            s.set_tier(&layout.full(&pk.blob), Tier::Archive)
                .await
                .unwrap();
            archived.insert(pk.blob.clone());
        }
    }

    // A plain restore fails before writing anything, listing every archived pack.
    let out = t.path().join("out");
    let e = restore::restore(&s, &layout, &m, &opts(&out, &[]), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Archived);
    for b in &archived {
        assert!(e.to_string().contains(b.as_str()), "{e}");
    }
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());

    // The plan lists exactly the archived packs needed…
    let pl = restore::archive::plan(&s, &layout, &m, &[]).await.unwrap();
    let planned: BTreeSet<String> = pl.archived.iter().map(|x| x.blob.clone()).collect();
    assert_eq!(planned, archived);
    assert_eq!(
        pl.archived_bytes,
        pl.archived.iter().map(|x| x.size).sum::<u64>()
    );
    assert!(pl.wait_standard.contains("15 hours") && pl.wait_high.contains("1 hour"));
    // …and nothing when the selection lives in the online pack.
    let pl = restore::archive::plan(&s, &layout, &m, &["/README.md".to_string()])
        .await
        .unwrap();
    assert_eq!(pl.packs.len(), 1);
    assert!(pl.archived.is_empty());
    restore::restore(
        &s,
        &layout,
        &m,
        &opts(&t.path().join("one"), &["/README.md"]),
        None,
    )
    .await
    .unwrap();

    // Data-level verify skips archived packs (metadata checks still run) and says so.
    let v = blobpipe::verify::verify(&s, &layout, &m, VerifyMode::Full, None, &p.upload, None)
        .await
        .unwrap();
    assert!(v.ok(), "{:?}", v.mismatches);
    assert_eq!(v.archived_packs_skipped, archived.len());

    // Rehydration that takes a while: the first attempt gives up waiting (as if
    // interrupted), leaving pending staging copies; the rerun resumes and finishes.
    mem.set_rehydrate_delay(Some(Duration::from_millis(600)));
    let cancel = Cancel::new();
    let rh = |timeout| RehydrateOptions {
        priority: RehydratePriority::High,
        poll: Duration::from_millis(50),
        timeout,
    };
    let e = restore::restore_with(
        &s,
        &layout,
        &m,
        &opts(&out, &[]),
        Some(rh(Some(Duration::from_millis(120)))),
        &cancel,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Archived, "{e}");
    assert!(e.to_string().contains("still rehydrating"), "{e}");
    let staging: Vec<String> = list_all(&*s, &format!("{}/rehydrate/", p.target.prefix))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(staging.len(), archived.len());
    let pl = restore::archive::plan(&s, &layout, &m, &[]).await.unwrap();
    assert!(pl
        .archived
        .iter()
        .all(|x| x.staging.as_deref() == Some("pending")));
    let staged_before = mem.counts.staged.load(std::sync::atomic::Ordering::Relaxed);
    let r = restore::restore_with(
        &s,
        &layout,
        &m,
        &opts(&out, &[]),
        Some(rh(None)),
        &cancel,
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.files, m.header.totals.files);
    assert_same_tree(&src, &out);
    // The copies are gone; the archived originals are untouched.
    assert!(list_all(&*s, &format!("{}/rehydrate/", p.target.prefix))
        .await
        .unwrap()
        .is_empty());
    for b in &archived {
        let props = s.head(&layout.full(b)).await.unwrap().unwrap();
        assert_eq!(props.tier, Tier::Archive, "{b}");
    }
    assert_eq!(
        mem.counts.staged.load(std::sync::atomic::Ordering::Relaxed),
        staged_before,
        "rehydration copies server-side; nothing is uploaded"
    );
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blobpipe"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_8_plan_and_rehydrate_on_the_local_store() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let store_dir = t.path().join("store");
    let pf = write_pipeline(
        t.path(),
        "loc",
        &src,
        &format!("file://{}", store_dir.display()),
        SMALL,
    );
    let o = bin().arg("backup").arg(&pf).arg("-q").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (p, s) = open(&pf).await;
    let layout = Layout::new(&p.target.prefix);
    let packs = list_all(&*s, &layout.packs()).await.unwrap();
    for pk in &packs {
        s.set_tier(&pk.name, Tier::Archive).await.unwrap();
    }
    let out = t.path().join("out");
    let o = bin()
        .args(["restore", "-q"])
        .arg(&pf)
        .arg("--to")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(8));
    let err = String::from_utf8_lossy(&o.stderr);
    for pk in &packs {
        let rel = pk.name.strip_prefix("loc/").unwrap();
        assert!(err.contains(rel), "{err}");
    }
    let o = bin()
        .args(["restore", "--json", "--plan"])
        .arg(&pf)
        .arg("--to")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["archived"].as_array().unwrap().len(), packs.len());
    assert_eq!(
        v["archived_bytes"].as_u64().unwrap(),
        packs.iter().map(|p| p.size).sum::<u64>()
    );
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "neither the failed restore nor --plan wrote anything"
    );
    let o = bin()
        .args(["restore", "-q", "--rehydrate", "standard"])
        .arg(&pf)
        .arg("--to")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_tree(&src, &out);
    assert!(list_all(&*s, "loc/rehydrate/").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_restore_on_azurite() {
    let Some(ep) = support::azurite() else { return };
    blobpipe::cli::logging::init_logging(blobpipe::cli::args::LogFormat::Text, false, 0);
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let url = format!("{ep}/{}", support::unique_container("arch"));
    let pf = write_pipeline(t.path(), "az", &src, &url, SMALL);
    let (p, s) = open(&pf).await;
    backup(&p, &s).await;
    let layout = Layout::new(&p.target.prefix);
    let id = catalog::resolve(&*s, &layout, "latest").await.unwrap();
    let m = catalog::load(&*s, &layout, &id).await.unwrap();
    for pk in &m.packs {
        s.set_tier(&layout.full(&pk.blob), Tier::Archive)
            .await
            .unwrap();
    }
    let out = t.path().join("out");
    let e = restore::restore(&s, &layout, &m, &opts(&out, &[]), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Archived, "{e}");
    let pl = restore::archive::plan(&s, &layout, &m, &[]).await.unwrap();
    assert_eq!(pl.archived.len(), m.packs.len());
    let r = restore::restore_with(
        &s,
        &layout,
        &m,
        &opts(&out, &[]),
        Some(RehydrateOptions {
            priority: RehydratePriority::High,
            poll: Duration::from_millis(200),
            timeout: Some(Duration::from_secs(60)),
        }),
        &Cancel::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.files, m.header.totals.files);
    assert_same_tree(&src, &out);
    assert!(list_all(&*s, &format!("{}/rehydrate/", p.target.prefix))
        .await
        .unwrap()
        .is_empty());
    // Azurite 3.37 copies Hot sources but refuses Copy Blob from an Archive source
    // (409 CannotVerifyCopySource), so the store fell back to set_tier(Hot) on the
    // originals (docs/retention.md). Real Azure takes the staging-copy path.
    for pk in &m.packs {
        let props = s.head(&layout.full(&pk.blob)).await.unwrap().unwrap();
        assert_eq!(props.tier, Tier::Hot, "{}", pk.blob);
    }
}
