//! Helpers shared by the engine's integration tests: pipelines in temp dirs, trees to
//! back up, and a strict tree comparison.
#![allow(dead_code)]

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use blobpipe::pipeline::{BackupOptions, BackupReport, Pipeline};
use blobpipe::store::Store;

/// A pipeline file in `dir` backing up `root` into `url`, plus extra TOML.
pub fn write_pipeline(dir: &Path, name: &str, root: &Path, url: &str, extra: &str) -> PathBuf {
    let text = format!(
        "name = \"{name}\"\n\n[source]\ntype = \"fs\"\nroot = \"{}\"\n\n[target]\nurl = \"{url}\"\n\n{extra}\n",
        root.display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Load a pipeline and open its store.
pub async fn open(path: &Path) -> (Pipeline, Store) {
    let p = Pipeline::load(path).unwrap();
    let s = blobpipe::store::open(&p.target, &p.retry).await.unwrap();
    (p, s)
}

/// Back up with default options.
pub async fn backup(p: &Pipeline, s: &Store) -> BackupReport {
    blobpipe::pipeline::backup(p, s.clone(), BackupOptions::default())
        .await
        .unwrap()
}

/// A unique name for memory stores.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", blobpipe::support::ids::random_hex(6))
}

/// A varied tree: nested dirs, empty dir, empty file, binary file, a file bigger than a
/// frame, symlinks (relative, absolute, dangling), unicode and non-UTF-8 names.
pub fn sample_tree(root: &Path) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("README.md", b"# hello\n");
    w("empty.txt", b"");
    w("docs/guide/intro.md", &b"intro text\n".repeat(500));
    w("docs/ünïcødé ✓.txt", "unicode name".as_bytes());
    let big: Vec<u8> = (0..3_500_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    w("data/big.bin", &big);
    w("data/zeros.bin", &vec![0u8; 2 << 20]);
    std::fs::create_dir_all(root.join("empty-dir/nested-empty")).unwrap();
    std::os::unix::fs::symlink("guide/intro.md", root.join("docs/link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"odd-\xff\xfe-name.bin");
    std::fs::write(root.join("data").join(odd), b"latin1 bytes").unwrap();
    std::fs::set_permissions(
        root.join("README.md"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("data/big.bin"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let t = filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789);
    filetime::set_file_times(root.join("empty.txt"), t, t).unwrap();
}

/// Every regular file under `root`, recursively (a stored local repository's blobs).
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Assert two trees are identical: kinds, bytes, modes, mtimes (to the nanosecond),
/// symlink targets. Returns the number of entries compared.
pub fn assert_same_tree(a: &Path, b: &Path) -> usize {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let mut names: Vec<_> = std::fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            out.push(r.clone());
            if std::fs::symlink_metadata(root.join(&r)).unwrap().is_dir() {
                walk(root, &r, out);
            }
        }
    }
    let (mut la, mut lb) = (vec![], vec![]);
    walk(a, Path::new(""), &mut la);
    walk(b, Path::new(""), &mut lb);
    assert_eq!(la, lb, "different entries");
    for r in &la {
        let (pa, pb) = (a.join(r), b.join(r));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa).unwrap(),
            std::fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "kind of {}", r.display());
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap(),
                "{}",
                r.display()
            );
        } else {
            assert_eq!(
                ma.mode() & 0o7777,
                mb.mode() & 0o7777,
                "mode of {}",
                r.display()
            );
        }
        if ma.is_file() {
            assert!(
                std::fs::read(&pa).unwrap() == std::fs::read(&pb).unwrap(),
                "content of {}",
                r.display()
            );
        }
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {}",
            r.display()
        );
    }
    la.len()
}

/// Incompressible bytes (xorshift), so block counts and compression times follow the
/// data size. Deterministic per seed.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A source slow enough to kill mid-backup at level-17 zstd: the sample tree under
/// `tree/` plus twelve 1 MB incompressible blobs (seeded from `seed`).
pub fn slow_source(src: &Path, seed: u64) {
    std::fs::create_dir_all(src).unwrap();
    sample_tree(&src.join("tree"));
    for i in 0..12u64 {
        std::fs::write(
            src.join(format!("blob-{i:02}.bin")),
            noise(1_000_000, i + seed),
        )
        .unwrap();
    }
}
