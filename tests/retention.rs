//! Retention: keep rules decide exactly the expected survivors; forget deletes only
//! manifests; prune never deletes a pack a remaining snapshot (or an unfinished run)
//! references, and never races a backup.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use blobpipe::manifest::catalog;
use blobpipe::manifest::layout::Layout;
use blobpipe::pipeline::{BackupOptions, Pipeline};
use blobpipe::restore::{restore, RestoreOptions};
use blobpipe::retention::config::RetentionConfig;
use blobpipe::retention::{self, evaluate, Options};
use blobpipe::store::memory::MemoryStore;
use blobpipe::store::{list_all, Store};
use blobpipe::verify::config::VerifyMode;
use blobpipe::ErrorKind;
use common::*;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Rule tables: a year of daily snapshots
// ---------------------------------------------------------------------------------------

fn year_of_dailies() -> Vec<String> {
    let start: chrono::DateTime<chrono::Utc> = "2025-01-01T02:00:00Z".parse().unwrap();
    (0..365)
        .map(|d| blobpipe::support::ids::snapshot_id_for(start + chrono::Duration::days(d), "r"))
        .collect()
}

fn kept(policy: &RetentionConfig) -> BTreeSet<String> {
    evaluate(policy, &year_of_dailies())
        .into_iter()
        .filter(|d| d.keep)
        .map(|d| d.time.unwrap().format("%m-%d").to_string())
        .collect()
}

fn set(days: &[&str]) -> BTreeSet<String> {
    days.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_year_of_dailies_keeps_exactly_the_expected_survivors() {
    let p = |f: fn(&mut RetentionConfig)| {
        let mut r = RetentionConfig::default();
        f(&mut r);
        r
    };
    // keep_daily = 7: the last seven days.
    assert_eq!(
        kept(&p(|r| r.keep_daily = 7)),
        set(&["12-25", "12-26", "12-27", "12-28", "12-29", "12-30", "12-31"])
    );
    // keep_weekly = 4: the newest of each ISO week. 2025-12-31 is a Wednesday in
    // 2026-W01; the weeks before end on Sundays 12-28, 12-21, 12-14.
    assert_eq!(
        kept(&p(|r| r.keep_weekly = 4)),
        set(&["12-14", "12-21", "12-28", "12-31"])
    );
    // keep_monthly = 12: the last day of every month.
    assert_eq!(
        kept(&p(|r| r.keep_monthly = 12)),
        set(&[
            "01-31", "02-28", "03-31", "04-30", "05-31", "06-30", "07-31", "08-31", "09-30",
            "10-31", "11-30", "12-31"
        ])
    );
    // keep_yearly = 5 over one year: one survivor.
    assert_eq!(kept(&p(|r| r.keep_yearly = 5)), set(&["12-31"]));
    // keep_within = 10d of the newest (12-31 02:00): 12-21 02:00 is exactly on the edge.
    assert_eq!(
        kept(&p(
            |r| r.keep_within = Some(Duration::from_secs(10 * 86_400))
        )),
        (21..=31).map(|d| format!("12-{d}")).collect()
    );
    // keep_last = 3.
    assert_eq!(
        kept(&p(|r| r.keep_last = 3)),
        set(&["12-29", "12-30", "12-31"])
    );
    // A typical combined policy: the union, and every rule that keeps each survivor.
    let combined = p(|r| {
        r.keep_last = 3;
        r.keep_daily = 7;
        r.keep_weekly = 4;
        r.keep_monthly = 6;
        r.keep_yearly = 2;
    });
    assert_eq!(
        kept(&combined),
        set(&[
            "07-31", "08-31", "09-30", "10-31", "11-30", "12-14", "12-21", "12-25", "12-26",
            "12-27", "12-28", "12-29", "12-30", "12-31"
        ])
    );
    let d = evaluate(&combined, &year_of_dailies());
    assert_eq!(d.len(), 365);
    assert_eq!(d.iter().filter(|d| !d.keep).count(), 365 - 14);
    let newest: Vec<&str> = d[0].reasons.iter().map(|r| r.rule).collect();
    assert_eq!(newest, ["last", "daily", "weekly", "monthly", "yearly"]);
    let dec28 = d.iter().find(|d| d.id.starts_with("20251228")).unwrap();
    assert_eq!(
        dec28
            .reasons
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        ["daily 2025-12-28", "weekly 2025-W52"]
    );
    let jul = d.iter().find(|d| d.id.starts_with("20250731")).unwrap();
    assert_eq!(jul.reasons[0].to_string(), "monthly 2025-07");
}

#[test]
fn hourly_keeps_the_newest_of_each_hour() {
    let start: chrono::DateTime<chrono::Utc> = "2025-06-01T00:00:00Z".parse().unwrap();
    let ids: Vec<String> = (0..48)
        .map(|i| {
            blobpipe::support::ids::snapshot_id_for(start + chrono::Duration::minutes(30 * i), "r")
        })
        .collect();
    let d = evaluate(
        &RetentionConfig {
            keep_hourly: 3,
            ..Default::default()
        },
        &ids,
    );
    let kept: Vec<String> = d
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.time.unwrap().format("%H:%M").to_string())
        .collect();
    assert_eq!(kept, ["23:30", "22:30", "21:30"]);
}

#[test]
fn validation_rejects_a_policy_that_deletes_everything() {
    let base =
        "name = \"r\"\n[source]\ntype = \"fs\"\nroot = \"/tmp\"\n[target]\nurl = \"memory://x\"\n";
    let parse = |extra: &str| Pipeline::parse(Path::new("/p/r.toml"), &format!("{base}{extra}"));
    let e = parse("[retention]\nkeep_last = 0\nkeep_daily = 0\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("would delete every snapshot"), "{e}");
    assert!(e.contains("r.toml:8:"), "located: {e}");
    let e = parse("[retention]\nauto = true\n").unwrap_err().to_string();
    assert!(e.contains("would delete every snapshot"), "{e}");
    let e = parse("[retention]\nkeep_daily = -1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("retention.keep_daily"), "{e}");
    let e = parse("[retention]\nkeep_within = \"3 fortnights\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("retention.keep_within"), "{e}");
    let p = parse("[retention]\nkeep_within = \"30d\"\n").unwrap();
    let r = p.retention.unwrap();
    assert_eq!(r.prune_grace, Duration::from_secs(2 * 86_400));
    assert!(!r.auto);
}

// ---------------------------------------------------------------------------------------
// Forget and prune on a real store
// ---------------------------------------------------------------------------------------

const SMALL: &str = "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\nsize = \"64KiB\"\n[verify]\nmode = \"full\"\n";

fn copy_tree(from: &Path, to: &Path) {
    let o = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success());
}

async fn restores_identically(p: &Pipeline, s: &Store, snap: &str, tree: &Path, scratch: &Path) {
    // The pipeline's data key, when it has `[encryption]`.
    let mut repo = blobpipe::manifest::layout::Repo::new(s.clone(), &p.target.prefix);
    repo.unlock(p.encryption.as_ref(), false).await.unwrap();
    let layout = repo.layout;
    let m = catalog::load(&**s, &layout, snap).await.unwrap();
    let out = scratch.join(format!(
        "r-{snap}-{}",
        blobpipe::support::ids::random_hex(3)
    ));
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
    let v = blobpipe::verify::verify(s, &layout, &m, VerifyMode::Full, Some(1), &p.upload, None)
        .await
        .unwrap();
    assert!(v.ok(), "{snap}: {:?}", v.mismatches);
}

fn mutate(root: &Path, step: u32, kind: u8) {
    match kind % 4 {
        0 => std::fs::write(
            root.join(format!("f{step}.txt")),
            format!("new file {step}\n").repeat(300 + step as usize),
        )
        .unwrap(),
        1 => {
            let victim = std::fs::read_dir(root)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .min();
            if let Some(v) = victim {
                std::fs::remove_file(v).unwrap();
            }
        }
        3 if root.join("big.bin").exists() => {
            // Overwrite 8 KiB inside the chunked file: its other chunks are shared.
            use std::io::{Seek, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(root.join("big.bin"))
                .unwrap();
            f.seek(std::io::SeekFrom::Start(u64::from(step % 7) * 30_000))
                .unwrap();
            f.write_all(&noise(8 << 10, u64::from(step) + 100)).unwrap();
        }
        2 => std::fs::write(
            root.join("sub/changing.bin"),
            (0..50_000u32)
                .map(|i| (i.wrapping_mul(step + 7) >> 3) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap(),
        _ => {}
    }
}

fn small_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha\n".repeat(1000)).unwrap();
    std::fs::write(root.join("sub/b.txt"), b"beta\n".repeat(2000)).unwrap();
    std::fs::write(root.join("sub/changing.bin"), b"v0").unwrap();
}

fn pipeline(dir: &Path, src: &Path, name: &str, extra: &str) -> Pipeline {
    let f = write_pipeline(
        dir,
        name,
        src,
        &format!("memory://{}", unique(name)),
        &format!("{SMALL}{extra}"),
    );
    Pipeline::load(&f).unwrap()
}

/// Prune options; with `repack`, `--max-unused 0%` (repack every partly used pack).
fn prune_opts(p: &Pipeline, repack: bool) -> Options {
    Options {
        max_unused: repack.then(|| "0%".parse().unwrap()),
        repacker: Some(blobpipe::pipeline::repack::PackRepacker::handle(p)),
        ..Default::default()
    }
}

async fn packs(s: &Store, p: &Pipeline) -> BTreeSet<String> {
    list_all(&**s, &Layout::new(&p.target.prefix).packs())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect()
}

#[tokio::test]
async fn forget_deletes_manifests_and_prune_frees_only_unreferenced_packs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    small_tree(&src);
    let p = pipeline(
        t.path(),
        &src,
        "fp",
        "[incremental]\nfull_every = 100\n[retention]\nkeep_last = 2\nprune_grace = \"0s\"\n",
    );
    let s = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let mut snaps = vec![];
    for step in 0..4u32 {
        mutate(&src, step, 2);
        let r = backup(&p, &s).await;
        let copy = t.path().join(format!("tree-{step}"));
        copy_tree(&src, &copy);
        snaps.push((r.snapshot.unwrap(), copy));
    }
    let before = packs(&s, &p).await;
    // Dry run: says what would go, deletes nothing.
    let dry = retention::forget(
        &p.retention_scope(),
        &s,
        &Options {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.forgotten, vec![snaps[1].0.clone(), snaps[0].0.clone()]);
    assert_eq!(
        catalog::snapshot_ids(&*s, &Layout::new(&p.target.prefix))
            .await
            .unwrap()
            .len(),
        4
    );
    let f = retention::forget(&p.retention_scope(), &s, &Options::default())
        .await
        .unwrap();
    assert_eq!(f.forgotten.len(), 2);
    assert_eq!(f.decisions[0].reasons[0].rule, "last");
    assert_eq!(packs(&s, &p).await, before, "forget deletes manifests only");
    let ids = catalog::snapshot_ids(&*s, &Layout::new(&p.target.prefix))
        .await
        .unwrap();
    assert_eq!(ids, vec![snaps[2].0.clone(), snaps[3].0.clone()]);

    let r = retention::prune(&p.retention_scope(), &s, &Options::default())
        .await
        .unwrap();
    assert!(r.packs_deleted > 0, "{r:?}");
    assert!(r.bytes_freed > 0);
    assert_eq!(r.packs_referenced + r.packs_deleted, r.packs_total);
    assert!(r.verify_reports_deleted >= 2, "{r:?}");
    assert_eq!(r.runs_cleaned.len(), 4, "committed runs' part records go");
    // Nothing referenced is gone: both survivors restore byte-identical and verify.
    for (snap, tree) in &snaps[2..] {
        restores_identically(&p, &s, snap, tree, t.path()).await;
    }
    // A second prune finds nothing more.
    let again = retention::prune(&p.retention_scope(), &s, &Options::default())
        .await
        .unwrap();
    assert_eq!(again.packs_deleted, 0);
    assert_eq!(again.verify_reports_deleted, 0);
}

#[tokio::test]
async fn grace_and_early_deletion_minimums_keep_packs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    small_tree(&src);
    let p = pipeline(
        t.path(),
        &src,
        "gr",
        "[incremental]\nenabled = false\n[retention]\nkeep_last = 1\n",
    );
    let s = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let mem = MemoryStore::shared(&format!(
        "{}/backups",
        match &p.target.location {
            blobpipe::store::config::StoreLocation::Memory(n) => n.clone(),
            _ => unreachable!(),
        }
    ));
    backup(&p, &s).await;
    mutate(&src, 1, 2);
    backup(&p, &s).await;
    retention::forget(&p.retention_scope(), &s, &Options::default())
        .await
        .unwrap();
    // Default grace (2 days): the forgotten snapshot's packs are too young.
    let r = retention::prune(&p.retention_scope(), &s, &Options::default())
        .await
        .unwrap();
    assert_eq!(r.packs_deleted, 0);
    assert!(r.packs_young > 0);
    // Age everything 3 days and put the packs in Cool (30-day minimum).
    let layout = Layout::new(&p.target.prefix);
    for name in packs(&s, &p).await {
        s.set_tier(&name, blobpipe::store::Tier::Cool)
            .await
            .unwrap();
    }
    mem.backdate(&layout.packs(), Duration::from_secs(3 * 86_400));
    let deferred = retention::prune(
        &p.retention_scope(),
        &s,
        &Options {
            defer_early_deletion: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(deferred.packs_deleted, 0);
    let cool = &deferred.early_deletion["cool"];
    assert!(cool.deferred && cool.packs > 0 && cool.bytes > 0);
    assert!(cool.free_after.unwrap() > chrono::Utc::now() + chrono::Duration::days(26));
    // Without deferring they go (Azure would charge the remaining days).
    let r = retention::prune(&p.retention_scope(), &s, &Options::default())
        .await
        .unwrap();
    assert_eq!(r.packs_deleted, cool.packs);
    assert!(!r.early_deletion["cool"].deferred);
    let latest = catalog::resolve(&*s, &layout, "latest").await.unwrap();
    let m = catalog::load(&*s, &layout, &latest).await.unwrap();
    let v = blobpipe::verify::verify(&s, &layout, &m, VerifyMode::Full, None, &p.upload, None)
        .await
        .unwrap();
    assert!(v.ok());
}

#[tokio::test]
async fn retention_needs_a_table() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    small_tree(&src);
    let p = pipeline(t.path(), &src, "nt", "");
    let s = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let e = retention::forget(&p.retention_scope(), &s, &Options::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("[retention]"));
}

#[tokio::test]
async fn an_unfinished_runs_parent_and_packs_are_protected() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    small_tree(&src);
    let p = pipeline(
        t.path(),
        &src,
        "pend",
        "[incremental]\nfull_every = 100\n[retention]\nkeep_last = 1\n",
    );
    let s = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let blobpipe::store::config::StoreLocation::Memory(n) = &p.target.location else {
        unreachable!()
    };
    let mem = MemoryStore::shared(&format!("{n}/backups"));
    let layout = Layout::new(&p.target.prefix);
    let a = backup(&p, &s).await.snapshot.unwrap();
    mutate(&src, 1, 0);
    let full = |run_id: Option<&str>, full: bool| BackupOptions {
        run_id: run_id.map(str::to_string),
        full,
        ..Default::default()
    };
    let b = blobpipe::pipeline::backup(&p, s.clone(), full(None, true))
        .await
        .unwrap()
        .snapshot
        .unwrap();
    // An incremental run on top of b that cannot commit its manifest: it stays pending,
    // its part records referencing its new packs and b's.
    mutate(&src, 2, 0);
    mem.fail_writes_containing(Some("/snapshots/"));
    let e = blobpipe::pipeline::backup(&p, s.clone(), full(Some("pending-run"), false))
        .await
        .unwrap_err();
    mem.fail_writes_containing(None);
    assert_ne!(e.kind(), ErrorKind::Locked);
    let tree_c = t.path().join("tree-c");
    copy_tree(&src, &tree_c);
    let d = backup(&p, &s).await.snapshot.unwrap();
    // forget keeps b only because the pending run resumes from it.
    let f = retention::forget(&p.retention_scope(), &s, &Options::default())
        .await
        .unwrap();
    assert_eq!(f.forgotten, vec![a.clone()]);
    let kb = f.decisions.iter().find(|x| x.id == b).unwrap();
    assert_eq!(kb.reasons.len(), 1);
    assert_eq!(kb.reasons[0].rule, "pending-run");
    assert_eq!(kb.reasons[0].bucket.as_deref(), Some("pending-run"));
    assert!(f.decisions.iter().any(|x| x.id == d && x.keep));
    // Every pack is old now; the pending run's records are young (within the grace).
    mem.backdate(&layout.packs(), Duration::from_secs(10 * 86_400));
    let r = retention::prune(&p.retention_scope(), &s, &Options::default())
        .await
        .unwrap();
    assert!(r.packs_deleted > 0, "a's packs go: {r:?}");
    assert_eq!(r.runs_cleaned.len(), 3, "committed runs only: {r:?}");
    assert!(!r.runs_cleaned.contains(&"pending-run".to_string()));
    // The pending run resumes from its part records and commits a snapshot whose packs
    // all survived: it restores identically and full-verifies.
    let c = blobpipe::pipeline::backup(&p, s.clone(), full(Some("pending-run"), false))
        .await
        .unwrap();
    assert_eq!(c.kind, "incremental");
    assert!(c.partitions_resumed > 0);
    restores_identically(&p, &s, c.snapshot.as_deref().unwrap(), &tree_c, t.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_racing_a_backup_loses_nothing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    small_tree(&src);
    for i in 0..12 {
        std::fs::write(
            src.join(format!("bulk-{i}.bin")),
            (0..200_000u32)
                .map(|x| (x.wrapping_mul(i + 3) >> 5) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    }
    let p = pipeline(
        t.path(),
        &src,
        "race",
        "[incremental]\nenabled = false\n[retention]\nkeep_last = 1\nprune_grace = \"0s\"\n",
    );
    let s = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let blobpipe::store::config::StoreLocation::Memory(n) = &p.target.location else {
        unreachable!()
    };
    let mem = MemoryStore::shared(&format!("{n}/backups"));
    let layout = Layout::new(&p.target.prefix);
    let first = backup(&p, &s).await.snapshot.unwrap();
    // A slow second backup; prune (grace 0) starts while it uploads.
    let staged_before = mem.counts.staged.load(std::sync::atomic::Ordering::Relaxed);
    mem.set_delay(Some(Duration::from_millis(15)));
    let (p2, s2) = (p.clone(), s.clone());
    let running =
        tokio::spawn(async move { blobpipe::pipeline::backup(&p2, s2, Default::default()).await });
    // Wait until the backup holds the lock and has staged or committed something.
    for _ in 0..500 {
        if mem.counts.staged.load(std::sync::atomic::Ordering::Relaxed) > staged_before + 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!running.is_finished(), "the backup should still be running");
    // Without waiting, prune is excluded by the lock.
    let e = retention::prune(&p.retention_scope(), &s, &Options::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    // Forget + prune that wait: they run after the backup and keep what it references.
    let waiting = {
        let (p, s) = (p.clone(), s.clone());
        tokio::spawn(async move {
            let o = Options {
                wait_lock: true,
                ..Default::default()
            };
            retention::forget(&p.retention_scope(), &s, &o)
                .await
                .unwrap();
            retention::prune(&p.retention_scope(), &s, &o)
                .await
                .unwrap()
        })
    };
    let second = running.await.unwrap().unwrap();
    mem.set_delay(None);
    let pr = waiting.await.unwrap();
    let snap = second.snapshot.unwrap();
    assert_eq!(
        catalog::snapshot_ids(&*s, &layout).await.unwrap(),
        vec![snap.clone()]
    );
    assert_ne!(first, snap);
    let m = catalog::load(&*s, &layout, &snap).await.unwrap();
    let v = blobpipe::verify::verify(&s, &layout, &m, VerifyMode::Full, None, &p.upload, None)
        .await
        .unwrap();
    assert!(v.ok(), "{:?}", v.mismatches);
    assert!(
        pr.packs_deleted > 0,
        "the first snapshot's packs go: {pr:?}"
    );
    restores_identically(&p, &s, &snap, &src, t.path()).await;
}

#[tokio::test]
async fn auto_retention_runs_after_an_ok_verified_backup() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    small_tree(&src);
    let p = pipeline(
        t.path(),
        &src,
        "auto",
        "[incremental]\nenabled = false\n[retention]\nkeep_last = 2\nprune_grace = \"0s\"\nauto = true\n",
    );
    let s = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let layout = Layout::new(&p.target.prefix);
    for step in 0..4 {
        mutate(&src, step, 2);
        backup(&p, &s).await;
    }
    assert_eq!(catalog::snapshot_ids(&*s, &layout).await.unwrap().len(), 2);
    let records = list_all(&*s, &layout.runs()).await.unwrap();
    assert!(records.iter().any(|r| r.name.ends_with("-retention.json")));
    // --no-verify: not verified, so no automatic retention.
    blobpipe::pipeline::backup(
        &p,
        s.clone(),
        BackupOptions {
            no_verify: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(catalog::snapshot_ids(&*s, &layout).await.unwrap().len(), 3);
}

// ---------------------------------------------------------------------------------------
// Property: random histories and forget sequences, then prune, then every survivor
// restores byte-identical and full-verifies.
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn prune_never_deletes_a_referenced_pack(
        steps in proptest::collection::vec((any::<u8>(), any::<bool>()), 2..6),
        forgets in proptest::collection::vec(any::<proptest::sample::Index>(), 0..4),
        keep_last in 1u32..4,
        repacks in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let t = tempfile::tempdir().unwrap();
            let src = t.path().join("src");
            small_tree(&src);
            // A file stored as content-defined chunks, shared between snapshots.
            std::fs::write(src.join("big.bin"), noise(256 << 10, 7)).unwrap();
            let p = pipeline(
                t.path(),
                &src,
                "prop",
                &format!("[incremental]\nfull_every = 100\n[retention]\nkeep_last = {keep_last}\nprune_grace = \"0s\"\n[chunking]\nthreshold = \"64KiB\"\nmin_size = \"4KiB\"\navg_size = \"16KiB\"\nmax_size = \"64KiB\"\n"),
            );
            let s = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
            let layout = Layout::new(&p.target.prefix);
            let mut trees = std::collections::BTreeMap::new();
            for (i, (kind, full)) in steps.iter().enumerate() {
                mutate(&src, i as u32, *kind);
                let r = blobpipe::pipeline::backup(&p, s.clone(), BackupOptions { full: *full, no_verify: true, ..Default::default() }).await.unwrap();
                if i == 0 {
                    assert_eq!(r.chunks.files, 1, "big.bin is stored as chunks");
                    assert!(r.chunks.new >= 4, "{:?}", r.chunks);
                }
                let copy = t.path().join(format!("tree-{i}"));
                copy_tree(&src, &copy);
                trees.insert(r.snapshot.unwrap(), copy);
            }
            // Forget some snapshots by hand (any of them, the parent of later
            // incrementals included), then by policy, pruning in between.
            for (k, ix) in forgets.iter().enumerate() {
                let ids = catalog::snapshot_ids(&*s, &layout).await.unwrap();
                if ids.len() > 1 {
                    let victim = &ids[ix.index(ids.len())];
                    s.delete(&layout.snapshot(victim)).await.unwrap();
                }
                if k % 2 == 0 {
                    retention::prune(&p.retention_scope(), &s, &prune_opts(&p, repacks[k % 4])).await.unwrap();
                }
            }
            retention::forget(&p.retention_scope(), &s, &Options::default()).await.unwrap();
            let last_repack = repacks[3];
            let r = retention::prune(&p.retention_scope(), &s, &prune_opts(&p, last_repack)).await.unwrap();
            assert_eq!(
                r.packs_referenced + r.packs_deleted + r.packs_moved_deleted,
                r.packs_total,
                "{r:?}"
            );
            if last_repack {
                // --max-unused 0%: every partly used pack was repacked and its old blob
                // deleted (grace 0), so nothing stored is unused any more.
                let dry = retention::prune(&p.retention_scope(), &s, &Options { dry_run: true, ..Default::default() }).await.unwrap();
                let u = dry.usage.expect("a dry run accounts for space");
                assert_eq!(u.unused_bytes, 0, "{u:?} after {r:?}");
                assert_eq!(dry.packs_moved_waiting, 0);
            }
            let again = retention::prune(&p.retention_scope(), &s, &Options::default()).await.unwrap();
            assert_eq!(again.packs_deleted, 0);
            assert_eq!(again.packs_referenced, again.packs_total, "after prune every pack is referenced");
            let survivors = catalog::snapshot_ids(&*s, &layout).await.unwrap();
            assert!(!survivors.is_empty() && survivors.len() <= keep_last as usize);
            for snap in &survivors {
                restores_identically(&p, &s, snap, &trees[snap], t.path()).await;
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// Issue 12: repacking partly used packs (`--max-unused`)
// ---------------------------------------------------------------------------------------

const CHUNKS: &str = "[chunking]\nthreshold = \"64KiB\"\nmin_size = \"4KiB\"\navg_size = \"16KiB\"\nmax_size = \"64KiB\"\n";

/// Two snapshots of a chunked file changed in several places, the first forgotten: its
/// packs are left partly used by the second.
async fn partly_used(
    t: &Path,
    name: &str,
    extra: &str,
) -> (Pipeline, Store, Layout, String, std::path::PathBuf) {
    let src = t.join("src");
    small_tree(&src);
    let big = src.join("big.bin");
    std::fs::write(&big, noise(768 << 10, 31)).unwrap();
    let p = pipeline(
        t,
        &src,
        name,
        &format!("[incremental]\nfull_every = 100\n[retention]\nkeep_last = 1\nprune_grace = \"0s\"\n{CHUNKS}{extra}"),
    );
    let s = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    let layout = Layout::new(&p.target.prefix);
    backup(&p, &s).await;
    let mut data = std::fs::read(&big).unwrap();
    for at in [100_000usize, 300_000, 500_000, 700_000] {
        data[at..at + 20_000].copy_from_slice(&noise(20_000, at as u64));
    }
    std::fs::write(&big, &data).unwrap();
    let snap = backup(&p, &s).await.snapshot.unwrap();
    let tree = t.join("tree");
    copy_tree(&src, &tree);
    retention::forget(&p.retention_scope(), &s, &Options::default())
        .await
        .unwrap();
    (p, s, layout, snap, tree)
}

/// A repack that dies before its moved records are stored (the store refuses them)
/// leaves every snapshot as it was: the survivor restores from the old packs, the new
/// packs are unreferenced, and the next prune repacks again and removes the orphans.
/// The accounting spills its sort to disk here (a 4-extent buffer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_repack_loses_nothing_and_the_next_prune_finishes_it() {
    let t = tempfile::tempdir().unwrap();
    let (p, s, layout, snap, tree) = partly_used(t.path(), "crash", "").await;
    let blobpipe::store::config::StoreLocation::Memory(n) = &p.target.location else {
        unreachable!()
    };
    let mem = MemoryStore::shared(&format!("{n}/backups"));
    let packs_before = packs(&s, &p).await;
    let opts = Options {
        sort_buffer: Some(4),
        ..prune_opts(&p, true)
    };
    mem.fail_writes_containing(Some("/moved/"));
    let e = retention::prune(&p.retention_scope(), &s, &opts)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("moved record"), "{e}");
    mem.fail_writes_containing(None);
    let orphans: BTreeSet<String> = packs(&s, &p)
        .await
        .difference(&packs_before)
        .cloned()
        .collect();
    assert!(
        !orphans.is_empty(),
        "the new packs were written before the failure"
    );
    assert!(
        packs_before.is_subset(&packs(&s, &p).await),
        "no old pack was deleted"
    );
    assert!(list_all(&*s, &layout.moved_all()).await.unwrap().is_empty());
    restores_identically(&p, &s, &snap, &tree, t.path()).await;

    let r = retention::prune(&p.retention_scope(), &s, &opts)
        .await
        .unwrap();
    let rp = r.repack.clone().unwrap();
    assert!(rp.packs >= 1 && rp.new_packs >= 1, "{r:?}");
    assert!(
        r.usage.as_ref().unwrap().spilled_runs > 0,
        "the sort spilled: {r:?}"
    );
    assert_eq!(r.packs_moved_deleted, rp.packs, "{r:?}");
    assert!(
        r.packs_deleted >= orphans.len() as u64,
        "the orphans go: {r:?}"
    );
    let now = packs(&s, &p).await;
    assert!(orphans.is_disjoint(&now), "{orphans:?} still in {now:?}");
    restores_identically(&p, &s, &snap, &tree, t.path()).await;
    let dry = retention::prune(
        &p.retention_scope(),
        &s,
        &Options {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.usage.unwrap().unused_bytes, 0);
    // `copy` takes the moved records along: the copy restores on its own.
    let other: Store = std::sync::Arc::new(MemoryStore::new(&unique("copy-dst")));
    let from = blobpipe::manifest::layout::Repo::new(s.clone(), &p.target.prefix);
    let to = blobpipe::manifest::layout::Repo::new(other.clone(), &p.target.prefix);
    let c = blobpipe::pipeline::copy::copy(&from, &to, &[], &Default::default())
        .await
        .unwrap();
    assert_eq!(c.copied, vec![snap.clone()]);
    assert_eq!(
        list_all(&*other, &layout.moved_all()).await.unwrap().len() as u64,
        rp.packs
    );
    restores_identically(&p, &other, &snap, &tree, t.path()).await;
}

/// `[retention] max_unused` repacks in automatic retention too; a repacked pack's blob
/// stays until its moved record passes the grace period (a restore that loaded the
/// manifest before the repack still finds it), then goes; an encrypted pipeline
/// re-seals what it copies and seals the moved records' offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_retention_repacks_and_old_packs_wait_for_the_grace_period() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("key"), "07".repeat(32)).unwrap();
    let src = t.path().join("src");
    small_tree(&src);
    let big = src.join("big.bin");
    std::fs::write(&big, noise(768 << 10, 41)).unwrap();
    let p = pipeline(
        t.path(),
        &src,
        "autorp",
        &format!(
            "[incremental]\nfull_every = 100\n{CHUNKS}[retention]\nkeep_last = 1\nprune_grace = \"1h\"\nmax_unused = \"5%\"\nauto = true\n[encryption]\nkey_file = \"{}\"\n",
            t.path().join("key").display()
        ),
    );
    assert_eq!(
        p.retention
            .as_ref()
            .unwrap()
            .max_unused
            .unwrap()
            .to_string(),
        "5%"
    );
    let mut repo = blobpipe::manifest::layout::Repo::new(
        blobpipe::store::open(&p.target, &p.retry).await.unwrap(),
        &p.target.prefix,
    );
    repo.unlock(p.encryption.as_ref(), true).await.unwrap();
    let (s, layout) = (repo.store.clone(), repo.layout.clone());
    backup(&p, &s).await;
    let mut data = std::fs::read(&big).unwrap();
    for at in [100_000usize, 300_000, 500_000, 700_000] {
        data[at..at + 20_000].copy_from_slice(&noise(20_000, at as u64 + 1));
    }
    std::fs::write(&big, &data).unwrap();
    let packs_before = packs(&s, &p).await;
    // The second backup's automatic retention forgets the first and repacks its packs.
    let snap = backup(&p, &s).await.snapshot.unwrap();
    assert_eq!(
        catalog::snapshot_ids(&*s, &layout).await.unwrap(),
        vec![snap.clone()]
    );
    let moved = list_all(&*s, &layout.moved_all()).await.unwrap();
    assert!(!moved.is_empty(), "automatic retention repacked");
    let tree = t.path().join("tree");
    copy_tree(&src, &tree);
    // The old blobs wait for the 1h grace; the survivor reads the new packs meanwhile.
    assert!(packs_before.is_subset(&packs(&s, &p).await));
    restores_identically(&p, &s, &snap, &tree, t.path()).await;
    let r = retention::prune(&p.retention_scope(), &s, &prune_opts(&p, false))
        .await
        .unwrap();
    assert_eq!(r.packs_moved_waiting, moved.len() as u64, "{r:?}");
    assert_eq!(r.packs_moved_deleted, 0);
    // Past the grace (here: a zero grace), they go.
    let r = retention::prune(
        &p.retention_scope(),
        &s,
        &Options {
            grace: Some(Duration::ZERO),
            ..prune_opts(&p, false)
        },
    )
    .await
    .unwrap();
    assert_eq!(r.packs_moved_deleted, moved.len() as u64, "{r:?}");
    assert_eq!(
        packs(&s, &p).await.intersection(&packs_before).count() as u64 + r.packs_moved_deleted,
        packs_before.len() as u64
    );
    // The moved record's offsets are sealed; the new packs hold no plaintext.
    for m in &moved {
        let body = String::from_utf8(s.get(&m.name, None).await.unwrap().to_vec()).unwrap();
        assert!(
            body.contains("\"sealed\"") && !body.contains("\"moves\""),
            "{body}"
        );
    }
    let marker = &data[300_000 + 20_000..300_000 + 20_064];
    for item in list_all(&*s, &layout.packs()).await.unwrap() {
        let b = s.get(&item.name, None).await.unwrap();
        assert!(
            !b.windows(marker.len()).any(|w| w == marker),
            "{} holds file bytes in clear",
            item.name
        );
    }
    restores_identically(&p, &s, &snap, &tree, t.path()).await;
}

/// Bad input: a moved record altered in the store makes the snapshots that need it
/// damaged (named, with the record), never silently read elsewhere; prune stops before
/// deleting anything; a bad `max_unused` in the file is refused with its location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_moved_record_is_refused_and_prune_deletes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (p, s, layout, snap, _tree) = partly_used(t.path(), "damaged", "").await;
    let r = retention::prune(&p.retention_scope(), &s, &prune_opts(&p, true))
        .await
        .unwrap();
    assert!(r.repack.unwrap().packs >= 1);
    let moved = list_all(&*s, &layout.moved_all()).await.unwrap();
    let victim = &moved[0].name;
    let mut rec: serde_json::Value =
        serde_json::from_slice(&s.get(victim, None).await.unwrap()).unwrap();
    rec["moves"] = serde_json::json!([]);
    s.delete(victim).await.unwrap();
    s.put(victim, serde_json::to_vec(&rec).unwrap().into(), true)
        .await
        .unwrap();
    // The manifest's head reads; its entries (what restore and verify read) do not.
    let e = catalog::load(&*s, &layout, &snap).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(
        e.to_string().contains(&snap) && e.to_string().contains("moved record"),
        "{e}"
    );
    let before = packs(&s, &p).await;
    let e = retention::prune(&p.retention_scope(), &s, &prune_opts(&p, true))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nothing was pruned"), "{e}");
    assert_eq!(packs(&s, &p).await, before, "nothing was deleted");
    assert!(s.head(victim).await.unwrap().is_some());

    let base =
        "name = \"r\"\n[source]\ntype = \"fs\"\nroot = \"/tmp\"\n[target]\nurl = \"memory://x\"\n";
    for bad in ["\"ten\"", "\"150%\"", "\"-1%\""] {
        let e = Pipeline::parse(
            Path::new("/p/r.toml"),
            &format!("{base}[retention]\nkeep_last = 1\nmax_unused = {bad}\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("retention.max_unused") && e.contains("r.toml:9:"),
            "{bad}: {e}"
        );
    }
}
