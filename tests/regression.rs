//! One regression test (or a few) per fixed defect, grouped by issue item.

mod common;

// Issue 10, item 7: an empty frame table (`"frames": []`) made restore and
// verify --sample panic; every field of a manifest is untrusted and checked at load.
mod item_7 {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    use blobpipe::manifest::Manifest;

    use crate::common::*;

    /// A local store holding one snapshot of the sample tree, and its manifest file.
    pub struct Crafted {
        pub t: tempfile::TempDir,
        pub pipeline: PathBuf,
        pub manifest_file: PathBuf,
        pub original: Vec<u8>,
    }

    pub fn bp(args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_blobpipe"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    /// Back up the sample tree (small frames and blocks, so packs have many) with the
    /// CLI into a `file://` store.
    pub fn backed_up() -> Crafted {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        sample_tree(&src);
        let store = t.path().join("store");
        let pipeline = write_pipeline(
            t.path(),
            "crafted",
            &src,
            &format!("file://{}", store.display()),
            "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"128KiB\"\npack_size = \"1MiB\"\n",
        );
        let o = bp(&["backup", pipeline.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let snaps = find_dir(&store, "snapshots").expect("a snapshots directory");
        let manifest_file = std::fs::read_dir(&snaps)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
            .expect("a manifest");
        let original = std::fs::read(&manifest_file).unwrap();
        Crafted {
            t,
            pipeline,
            manifest_file,
            original,
        }
    }

    fn find_dir(root: &Path, name: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(root).ok()? {
            let p = e.ok()?.path();
            if p.is_dir() && !p.file_name()?.to_string_lossy().starts_with('.') {
                if p.file_name()? == name {
                    return Some(p);
                }
                if let Some(f) = find_dir(&p, name) {
                    return Some(f);
                }
            }
        }
        None
    }

    impl Crafted {
        /// The snapshot as backed up.
        pub fn manifest(&self) -> Manifest {
            Manifest::from_bytes(&self.original).unwrap()
        }

        /// Replace the stored manifest by `m`, encoded as blobpipe writes manifests (gzip
        /// JSON Lines) but without any check.
        pub fn store(&self, m: &Manifest) {
            std::fs::write(&self.manifest_file, m.to_bytes().unwrap()).unwrap();
        }

        /// Alter the original manifest with `f` and store it.
        pub fn alter(&self, f: impl FnOnce(&mut Manifest)) {
            let mut m = self.manifest();
            f(&mut m);
            m.entries.sort_by(|a, b| a.path.cmp(&b.path));
            self.store(&m);
        }

        pub fn p(&self) -> &str {
            self.pipeline.to_str().unwrap()
        }

        /// A fresh restore target (not created).
        pub fn target(&self, name: &str) -> PathBuf {
            self.t.path().join(name)
        }

        /// Run `args` (after the pipeline file); return exit code and stderr.
        pub fn run(&self, cmd: &str, rest: &[&str]) -> (i32, String) {
            let mut args = vec![cmd, self.p(), "latest"];
            args.extend_from_slice(rest);
            let o = bp(&args);
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        }

        /// Restore, verify --full and verify --sample all refuse the stored manifest
        /// with exit 3, an error containing every one of `needles`, no panic, and
        /// nothing written into the restore target.
        pub fn refused_everywhere(&self, what: &str, needles: &[&str]) {
            let out = self.target(&format!("out-{}", what.replace(' ', "-")));
            let restore = self.run("restore", &["--to", out.to_str().unwrap()]);
            let full = self.run("verify", &["--full"]);
            let sample = self.run("verify", &["--sample", "10%"]);
            for (cmd, (code, stderr)) in [
                ("restore", restore),
                ("verify --full", full),
                ("verify --sample", sample),
            ] {
                assert!(
                    !stderr.contains("panicked"),
                    "{what}: {cmd} panicked: {stderr}"
                );
                assert_eq!(code, 3, "{what}: {cmd} exit code; stderr: {stderr}");
                for n in needles {
                    assert!(stderr.contains(n), "{what}: {cmd}: {n:?} not in: {stderr}");
                }
            }
            let written: Vec<_> = std::fs::read_dir(&out)
                .map(|d| d.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            assert!(written.is_empty(), "{what}: restore wrote {written:?}");
        }
    }

    /// The index of the pack holding `path`.
    pub fn pack_of(m: &Manifest, path: &[u8]) -> usize {
        let e = m.entries.iter().find(|e| e.path.0 == path).unwrap();
        let id = e.pack.clone().unwrap();
        m.packs.iter().position(|p| p.id == id).unwrap()
    }

    #[test]
    fn empty_frame_table_is_refused_at_load_not_a_panic() {
        let c = backed_up();
        c.alter(|m| {
            let i = pack_of(m, b"README.md");
            m.packs[i].frames.clear();
        });
        c.refused_everywhere("empty frames", &["frames", "no frames", "manifest line"]);
    }

    #[test]
    fn garbage_pack_tables_and_locations_are_refused_at_load() {
        let c = backed_up();
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let big = |m: &Manifest| pack_of(m, b"data/big.bin");
        let cases: Vec<(&str, &str, Edit)> = vec![
            (
                "frames not from zero",
                "frames",
                Box::new(move |m| {
                    let i = big(m);
                    m.packs[i].frames[0] = (7, 0)
                }),
            ),
            (
                "frames not increasing",
                "frames",
                Box::new(move |m| {
                    let i = big(m);
                    m.packs[i].frames.swap(1, 2)
                }),
            ),
            (
                "frame past the pack",
                "frames",
                Box::new(move |m| {
                    let i = big(m);
                    let raw = m.packs[i].raw_size;
                    m.packs[i].frames.push((raw + 10, u64::MAX));
                }),
            ),
            (
                "block sizes",
                "blocks",
                Box::new(move |m| {
                    let i = big(m);
                    m.packs[i].blocks[0].size += 1
                }),
            ),
            (
                "block md5",
                "blocks",
                Box::new(move |m| {
                    let i = big(m);
                    m.packs[i].blocks[0].md5 = "AAAA".into()
                }),
            ),
            (
                "unknown pack",
                "pack",
                Box::new(|m| {
                    let e = m
                        .entries
                        .iter_mut()
                        .find(|e| e.path.0 == b"README.md")
                        .unwrap();
                    e.pack = Some("0123456789abcdef0123456789abcdef".into());
                }),
            ),
            (
                "data past the pack",
                "data_offset",
                Box::new(|m| {
                    let e = m
                        .entries
                        .iter_mut()
                        .find(|e| e.path.0 == b"README.md")
                        .unwrap();
                    e.data_offset = u64::MAX - 2;
                }),
            ),
            (
                "pack blob elsewhere",
                "blob",
                Box::new(|m| m.packs[0].blob = "../../elsewhere.tar.zst".into()),
            ),
        ];
        for (what, field, edit) in cases {
            c.alter(edit);
            c.refused_everywhere(what, &[field, "manifest line"]);
        }
    }
}

// Issue 10, item 8: verify --full passed manifests that restore refuses (garbage frame
// tables, unsafe paths, symlink escapes).
mod item_8 {
    use blobpipe::manifest::PathBytes;

    use super::item_7::{backed_up, pack_of};

    #[test]
    fn full_verify_refuses_what_restore_refuses() {
        let c = backed_up();
        // An unsafe path and a file under a stored symlink: the data is intact, so a
        // verify that only hashes bytes passed them.
        c.alter(|m| {
            let e = m
                .entries
                .iter_mut()
                .find(|e| e.path.0 == b"README.md")
                .unwrap();
            e.path = PathBytes(b"../escaped.txt".to_vec());
        });
        c.refused_everywhere("unsafe path", &["../escaped.txt", "path"]);
        c.alter(|m| {
            let mut e = m
                .entries
                .iter()
                .find(|e| e.path.0 == b"README.md")
                .unwrap()
                .clone();
            e.path = PathBytes(b"link-abs/pwned.txt".to_vec());
            m.entries.push(e);
        });
        c.refused_everywhere("under a symlink", &["link-abs", "symlink"]);
    }

    #[test]
    fn full_verify_reads_frames_as_the_table_says() {
        // A frame table that is well-formed but does not match the pack's frames: a
        // streaming decoder reads the pack fine, a ranged restore cannot.
        let c = backed_up();
        c.alter(|m| {
            let i = pack_of(m, b"data/big.bin");
            assert!(m.packs[i].frames.len() > 3);
            m.packs[i].frames[2].1 += 1;
        });
        let (code, err) = c.run("verify", &["--full"]);
        assert_eq!(code, 3, "{err}");
        let o = super::item_7::bp(&["--json", "verify", c.p(), "latest", "--full"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mm = v["mismatches"].as_array().unwrap();
        assert!(
            mm.iter()
                .any(|m| m["check"] == "decompress"
                    && m["detail"].as_str().unwrap().contains("frame ")),
            "{mm:?}"
        );
    }
}

// Issue 10, item 11: a symlink entry followed by a file through it was refused only after
// several entries were written, with a message that did not mention the symlink.
mod item_11 {
    use blobpipe::manifest::layout::Layout;
    use blobpipe::manifest::{Manifest, PathBytes};
    use blobpipe::restore::{restore, RestoreOptions};
    use blobpipe::ErrorKind;

    use super::item_7::backed_up;

    fn through_link(m: &mut Manifest, link_target: &[u8]) {
        let l = m
            .entries
            .iter_mut()
            .find(|e| e.path.0 == b"link-abs")
            .unwrap();
        l.target = Some(PathBytes(link_target.to_vec()));
        let mut e = m
            .entries
            .iter()
            .find(|e| e.path.0 == b"README.md")
            .unwrap()
            .clone();
        e.path = PathBytes(b"link-abs/pwned.txt".to_vec());
        m.entries.push(e);
        m.entries.sort_by(|a, b| a.path.cmp(&b.path));
    }

    #[test]
    fn entry_under_a_symlink_is_refused_at_load_naming_the_link() {
        let c = backed_up();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().as_os_str().as_encoded_bytes().to_vec();
        c.alter(|m| through_link(m, &target));
        c.refused_everywhere(
            "file through a symlink",
            &[
                "link-abs/pwned.txt",
                "\"link-abs\"",
                "symlink",
                &outside.path().display().to_string(),
            ],
        );
        assert!(!outside.path().join("pwned.txt").exists());
    }

    #[tokio::test]
    async fn restore_refuses_it_before_writing_even_unvalidated() {
        // A manifest built in memory never went through the load check: restore's own
        // check (the same rule) refuses it before writing anything.
        let c = backed_up();
        let mut m = c.manifest();
        let outside = tempfile::tempdir().unwrap();
        through_link(&mut m, outside.path().as_os_str().as_encoded_bytes());
        let (p, store) = crate::common::open(&c.pipeline).await;
        let out = c.target("api-out");
        let e = restore(
            &store,
            &Layout::new(&p.target.prefix),
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
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("link-abs/pwned.txt") && msg.contains("symlink"),
            "{msg}"
        );
        assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
        assert!(!outside.path().join("pwned.txt").exists());
    }
}

// Issue 10, item 13: odd metadata failed only after partial writes; it is refused when
// the manifest is loaded.
mod item_13 {
    use blobpipe::manifest::{Manifest, PathBytes};

    use super::item_7::backed_up;

    fn rename(m: &mut Manifest, from: &[u8], to: &[u8]) {
        let e = m.entries.iter_mut().find(|e| e.path.0 == from).unwrap();
        e.path = PathBytes(to.to_vec());
    }

    #[test]
    fn odd_metadata_is_refused_at_load() {
        let c = backed_up();
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let long = format!("docs/{}", "x".repeat(300)).into_bytes();
        let cases: Vec<(&str, &str, Edit)> = vec![
            (
                "mtime max",
                "mtime",
                Box::new(|m| {
                    let e = m
                        .entries
                        .iter_mut()
                        .find(|e| e.path.0 == b"README.md")
                        .unwrap();
                    e.mtime = i64::MAX;
                }),
            ),
            (
                "nanoseconds",
                "mtime_nsec",
                Box::new(|m| {
                    let e = m
                        .entries
                        .iter_mut()
                        .find(|e| e.path.0 == b"README.md")
                        .unwrap();
                    e.mtime_nsec = 1_000_000_000;
                }),
            ),
            (
                "long component",
                "300 bytes",
                Box::new(move |m| rename(m, b"docs/guide/intro.md", &long)),
            ),
            (
                "NUL in a symlink target",
                "target",
                Box::new(|m| {
                    let e = m
                        .entries
                        .iter_mut()
                        .find(|e| e.path.0 == b"link-dangling")
                        .unwrap();
                    e.target = Some(PathBytes(b"does/\0not".to_vec()));
                }),
            ),
            (
                "NUL in a path",
                "NUL",
                Box::new(|m| rename(m, b"README.md", b"READ\0ME.md")),
            ),
            (
                "empty component",
                "empty path component",
                Box::new(|m| rename(m, b"docs/guide/intro.md", b"docs//intro.md")),
            ),
            (
                "dot-dot",
                "'..'",
                Box::new(|m| rename(m, b"docs/guide/intro.md", b"docs/../../intro.md")),
            ),
            (
                "absolute",
                "absolute path",
                Box::new(|m| rename(m, b"README.md", b"/tmp/blobpipe-abs.md")),
            ),
            (
                "mode bits",
                "mode",
                Box::new(|m| {
                    let e = m
                        .entries
                        .iter_mut()
                        .find(|e| e.path.0 == b"README.md")
                        .unwrap();
                    e.mode = 0o100644;
                }),
            ),
        ];
        for (what, needle, edit) in cases {
            c.alter(edit);
            c.refused_everywhere(what, &[needle, "manifest line"]);
        }
        assert!(!std::path::Path::new("/tmp/blobpipe-abs.md").exists());
        // The untouched manifest still restores.
        c.store(&c.manifest());
        let out = c.target("good");
        let (code, err) = c.run("restore", &["--to", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    }
}
