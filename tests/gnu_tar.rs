//! Standard tools can read every pack: GNU tar extracts each `.tar.gz` and `.tar.zst`
//! pack of a local store on its own, and together they are the backed-up tree.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn packs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            packs(&p, out);
        } else if p.to_string_lossy().contains(".tar.") {
            out.push(p);
        }
    }
}

async fn extract_all(codec: &str) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    // Oddities GNU tar must cope with: long names, a link to ".", a long link target.
    let deep = src.join("d".repeat(60)).join("e".repeat(60));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join(format!("{}.txt", "f".repeat(120))), b"long name").unwrap();
    std::os::unix::fs::symlink(".", src.join("self-link")).unwrap();
    std::os::unix::fs::symlink("t/".repeat(80), src.join("long-link")).unwrap();
    let store = t.path().join("store");
    let pf = write_pipeline(
        t.path(),
        "tarred",
        &src,
        &format!("file://{}", store.display()),
        &format!("[compression]\ncodec = \"{codec}\"\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"128KiB\"\npack_size = \"1MiB\"\n"),
    );
    let (p, s) = open(&pf).await;
    let r = backup(&p, &s).await;
    let mut list = Vec::new();
    packs(&store.join("backups/tarred/packs"), &mut list);
    assert_eq!(list.len() as u64, r.totals.packs);
    assert!(list.len() >= 3);
    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for pack in &list {
        let mut cmd = Command::new("tar");
        if codec == "zstd" {
            cmd.arg("--zstd");
        } else {
            cmd.arg("-z");
        }
        let o = cmd
            .arg("-xpf")
            .arg(pack)
            .arg("-C")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "tar failed on {}: {}",
            pack.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        // Each pack is a complete archive on its own: tar can list it.
        let l = Command::new("tar")
            .arg(if codec == "zstd" { "--zstd" } else { "-z" })
            .arg("-tf")
            .arg(pack)
            .output()
            .unwrap();
        assert!(l.status.success());
    }
    // Same files, bytes, modes and symlink targets (tar keeps whole-second mtimes).
    fn cmp(a: &Path, b: &Path, rel: &Path) {
        for e in std::fs::read_dir(a.join(rel)).unwrap() {
            let name = e.unwrap().file_name();
            let r = rel.join(&name);
            let (ma, mb) = (
                std::fs::symlink_metadata(a.join(&r)).unwrap(),
                std::fs::symlink_metadata(b.join(&r))
                    .unwrap_or_else(|_| panic!("tar did not restore {}", r.display())),
            );
            assert_eq!(ma.file_type(), mb.file_type(), "{}", r.display());
            if ma.file_type().is_symlink() {
                assert_eq!(
                    std::fs::read_link(a.join(&r)).unwrap(),
                    std::fs::read_link(b.join(&r)).unwrap()
                );
            } else if ma.is_dir() {
                cmp(a, b, &r);
            } else {
                assert_eq!(
                    std::fs::read(a.join(&r)).unwrap(),
                    std::fs::read(b.join(&r)).unwrap(),
                    "{}",
                    r.display()
                );
                assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "{}", r.display());
                assert_eq!(ma.mtime(), mb.mtime(), "{}", r.display());
            }
        }
    }
    cmp(&src, &out, Path::new(""));
}

#[tokio::test]
async fn gnu_tar_extracts_gzip_packs() {
    extract_all("gzip").await;
}

#[tokio::test]
async fn gnu_tar_extracts_zstd_packs() {
    extract_all("zstd").await;
}
