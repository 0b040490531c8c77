//! Property: any tree (empty files, big files, symlinks, unicode and non-UTF-8 names,
//! odd modes and mtimes) backs up and restores to identical bytes, modes and mtimes.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use blobpipe::manifest::catalog;
use blobpipe::manifest::layout::Layout;
use blobpipe::restore::{restore, RestoreOptions};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Node {
    File { size: usize, seed: u8, mode: u32 },
    Link(Vec<u8>),
    Dir(Vec<(Vec<u8>, Node)>),
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z]{1,8}(\\.[a-z]{1,3})?".prop_map(|s| s.into_bytes()),
        "[äöüßñé✓ 漢字]{1,5}".prop_map(|s| s.into_bytes()),
        // Non-UTF-8 bytes (but never '/' or NUL).
        proptest::collection::vec(0x80u8..=0xff, 1..6),
        "[a-z]{90,120}".prop_map(|s| s.into_bytes()),
    ]
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        6 => (prop_oneof![Just(0usize), 1usize..2000, 60_000usize..300_000], any::<u8>(), prop_oneof![Just(0o644u32), Just(0o600), Just(0o755), Just(0o400)])
            .prop_map(|(size, seed, mode)| Node::File { size, seed, mode }),
        1 => proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'/'), Just(b'.'), Just(0xffu8)], 1..20).prop_map(Node::Link),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        proptest::collection::vec((name(), inner), 0..5).prop_map(Node::Dir)
    })
}

fn build(dir: &Path, children: &[(Vec<u8>, Node)], mtime: i64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut seen = std::collections::HashSet::new();
    for (n, node) in children {
        if !seen.insert(n.clone()) {
            continue;
        }
        let p = dir.join(std::ffi::OsStr::from_bytes(n));
        match node {
            Node::File { size, seed, mode } => {
                let data: Vec<u8> = (0..*size)
                    .map(|i| (i as u8).wrapping_mul(*seed | 1) ^ (i >> 9) as u8)
                    .collect();
                std::fs::write(&p, data).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
                let t =
                    filetime::FileTime::from_unix_time(mtime + *size as i64, (*seed as u32) * 1000);
                filetime::set_file_times(&p, t, t).unwrap();
            }
            Node::Link(target) => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &p).unwrap();
            }
            Node::Dir(kids) => build(&p, kids, mtime + 1),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 20, ..ProptestConfig::default() })]

    #[test]
    fn backup_restore_is_identity(tree in proptest::collection::vec((name(), node()), 0..8), gzip in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let t = tempfile::tempdir().unwrap();
            let src = t.path().join("src");
            build(&src, &tree, 1_500_000_000);
            let codec = if gzip { "gzip" } else { "zstd" };
            let pf = write_pipeline(
                t.path(),
                "prop",
                &src,
                &format!("memory://{}", unique("prop")),
                &format!("[compression]\ncodec = \"{codec}\"\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\nsize = \"64KiB\"\n[verify]\nmode = \"full\"\n"),
            );
            let (p, s) = open(&pf).await;
            let r = backup(&p, &s).await;
            prop_assert!(r.verify.as_ref().unwrap().ok());
            let layout = Layout::new("prop");
            let m = catalog::load(&*s, &layout, r.snapshot.as_deref().unwrap()).await.unwrap();
            let out = t.path().join("out");
            restore(&s, &layout, &m, &RestoreOptions { to: out.clone(), paths: vec![], overwrite: false, concurrency: 3 }, None)
                .await
                .unwrap();
            assert_same_tree(&src, &out);
            Ok(())
        })?;
    }
}
