//! `[encryption]` end to end, through the binary against a local store: round trips
//! byte-identical, a wrong / missing key refused before anything is written (exit 11 / 2),
//! tampered, truncated and swapped frames found and named, `cat | tar x`, key rotation,
//! block-level verification without the key, and no secret or plaintext in what is stored
//! or printed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

const KEY_A: &str = "6a0b5e3c9d1f2e4a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a";
const KEY_B: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const PASS: &str = "correct horse battery staple 4711";

struct Fx {
    t: tempfile::TempDir,
    src: PathBuf,
    pipeline: PathBuf,
    store: PathBuf,
    /// Every command's stdout and stderr, for the secrets check.
    printed: std::cell::RefCell<Vec<u8>>,
}

fn fixture(encryption: &str) -> Fx {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    // Two packs of zeros: frames with identical plaintext at the same index.
    std::fs::write(src.join("data/zeros-a.bin"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(src.join("data/zeros-b.bin"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(t.path().join("a.key"), format!("{KEY_A}\n")).unwrap();
    std::fs::write(t.path().join("b.key"), KEY_B).unwrap();
    let store = t.path().join("store");
    let pipeline = write_pipeline(
        t.path(),
        "enc",
        &src,
        &format!("file://{}", store.display()),
        &format!(
            "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"128KiB\"\npack_size = \"1MiB\"\n\n{encryption}\n"
        ),
    );
    Fx {
        t,
        src,
        pipeline,
        store,
        printed: Default::default(),
    }
}

impl Fx {
    fn p(&self) -> &str {
        self.pipeline.to_str().unwrap()
    }
    fn bp(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_blobpipe"));
        c.args(args).env("RUST_LOG", "info");
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        self.printed.borrow_mut().extend_from_slice(&o.stdout);
        self.printed.borrow_mut().extend_from_slice(&o.stderr);
        o
    }
    fn prefix(&self) -> PathBuf {
        self.store.join("backups/enc")
    }
    /// Every file under the store (bookkeeping included) and its bytes.
    fn state(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            let Ok(rd) = std::fs::read_dir(d) else { return };
            for e in rd {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        let mut m = BTreeMap::new();
        walk(&self.store, &mut m);
        m
    }
    fn packs(&self) -> Vec<PathBuf> {
        self.state()
            .into_keys()
            .filter(|p| p.starts_with(self.prefix().join("packs")))
            .collect()
    }
    fn pack_of(&self, path: &str, env: &[(&str, &str)]) -> (String, PathBuf) {
        let o = self.bp(&["--json", "ls", self.p(), "latest", "--path", path], env);
        assert_eq!(code(&o), 0, "{}", err(&o));
        let ls: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let id = ls[0]["pack"].as_str().unwrap().to_string();
        let file = self
            .prefix()
            .join("packs")
            .join(&id[..2])
            .join(format!("{id}.tar.zst"));
        (id, file)
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn key_file() -> String {
    "[encryption]\nkey_file = \"a.key\"".into()
}

#[test]
fn key_file_round_trip_stores_no_plaintext_and_prints_no_secret() {
    // Big files as content-defined chunks too (restore and verify read them by chunk).
    let f = fixture(&format!("{}\n[chunking]\nthreshold = \"1MiB\"", key_file()));
    let o = f.bp(&["--json", "backup", f.p()], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["status"], "ok", "{r}");
    // An incremental after a change: reused packs and segments open with the same key.
    std::fs::write(
        f.src.join("docs/new.txt"),
        b"a new file after the first backup",
    )
    .unwrap();
    let o = f.bp(&["backup", f.p()], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));

    let o = f.bp(&["verify", f.p(), "latest", "--full"], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = f.bp(
        &["--json", "ls", f.p(), "latest", "--path", "data/big.bin"],
        &[],
    );
    let ls: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        ls[0]["chunks"].as_array().is_some_and(|c| !c.is_empty()),
        "{ls}"
    );
    let o = f.bp(&["--json", "drill", f.p()], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let out = f.t.path().join("restored");
    let o = f.bp(
        &["restore", f.p(), "latest", "--to", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_same_tree(&f.src, &out);

    let o = f.bp(&["--json", "snapshots", f.p()], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[1]["header"]["encryption"]["alg"], "aes-256-gcm");
    assert_eq!(
        list[1]["header"]["source"], "fs",
        "the clear header names no path"
    );

    // Nothing stored holds a path, file content or the key; nothing printed holds the key.
    let state = f.state();
    assert!(state.keys().any(|p| p.to_string_lossy().contains("/keys/")));
    for (p, bytes) in &state {
        for needle in [
            "docs/guide/intro.md".as_bytes(),
            "intro text".as_bytes(),
            "ünïcødé".as_bytes(),
            b"a new file after",
            KEY_A.as_bytes(),
        ] {
            assert!(
                !contains(bytes, needle),
                "{} holds {:?}",
                p.display(),
                String::from_utf8_lossy(needle)
            );
        }
        // Compressed blobs hide plaintext from a byte grep: look inside gzip ones too.
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut s = Vec::new();
            let _ = std::io::Read::read_to_end(
                &mut flate2::read::MultiGzDecoder::new(&bytes[..]),
                &mut s,
            );
            assert!(
                !contains(&s, b"intro.md"),
                "{} (gunzipped) holds a path",
                p.display()
            );
        }
    }
    assert!(!contains(&f.printed.borrow(), KEY_A.as_bytes()));
}

#[test]
fn passphrase_wrong_or_missing_key_is_refused_before_anything_changes() {
    let f = fixture("[encryption]\npassphrase_env = \"BP_TEST_PASS\"");
    let good = [("BP_TEST_PASS", PASS)];
    let o = f.bp(&["backup", f.p()], &good);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(f.prefix().join("keys"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(rec["kdf"]["alg"], "argon2id");
    assert_eq!(rec["kek"]["kind"], "passphrase");

    let before = f.state();
    let out = f.t.path().join("r");
    let wrong = [("BP_TEST_PASS", "not the passphrase")];
    for args in [
        vec!["backup", f.p()],
        vec!["restore", f.p(), "latest", "--to", out.to_str().unwrap()],
        vec!["verify", f.p(), "latest", "--full"],
        vec!["ls", f.p(), "latest"],
    ] {
        let o = f.bp(&args, &wrong);
        assert_eq!(code(&o), 11, "{args:?}: {}", err(&o));
        assert!(err(&o).contains("wrong passphrase"), "{}", err(&o));
        // Missing: the variable is not set at all.
        let o = f.bp(&args, &[]);
        assert_eq!(code(&o), 2, "{args:?}: {}", err(&o));
        assert!(err(&o).contains("BP_TEST_PASS is not set"), "{}", err(&o));
    }
    assert!(!out.exists(), "nothing restored");
    assert_eq!(f.state(), before, "nothing stored changed");

    // A pipeline file without [encryption] on the encrypted store: exit 2, clear words.
    let text = std::fs::read_to_string(&f.pipeline).unwrap();
    let plain = f.t.path().join("plain.toml");
    std::fs::write(
        &plain,
        text.replace("[encryption]\npassphrase_env = \"BP_TEST_PASS\"", ""),
    )
    .unwrap();
    for args in [vec!["backup"], vec!["ls"], vec!["restore"]] {
        let mut a = args.clone();
        a.push(plain.to_str().unwrap());
        if args[0] == "restore" {
            a.extend(["latest", "--to", out.to_str().unwrap()]);
        }
        let o = f.bp(&a, &[]);
        assert_eq!(code(&o), 2, "{a:?}: {}", err(&o));
        assert!(err(&o).contains("no [encryption]"), "{}", err(&o));
    }
    assert_eq!(f.state(), before, "nothing stored changed");

    let o = f.bp(
        &["restore", f.p(), "latest", "--to", out.to_str().unwrap()],
        &good,
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_same_tree(&f.src, &out);
    assert!(!contains(&f.printed.borrow(), PASS.as_bytes()));
    for bytes in f.state().values() {
        assert!(!contains(bytes, PASS.as_bytes()));
    }
}

#[test]
fn flipped_truncated_and_swapped_frames_are_named() {
    let f = fixture(&key_file());
    assert_eq!(code(&f.bp(&["backup", f.p()], &[])), 0);
    // Bit flip inside a pack: the frame's tag fails, the finding names the file.
    let (big_id, big) = f.pack_of("data/big.bin", &[]);
    let orig = std::fs::read(&big).unwrap();
    let mut bad = orig.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x10;
    std::fs::write(&big, &bad).unwrap();
    let o = f.bp(&["--json", "verify", f.p(), "latest", "--full"], &[]);
    assert_eq!(code(&o), 3, "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tag = v["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["check"] == "frame-tag")
        .unwrap_or_else(|| panic!("no frame-tag finding: {v}"));
    assert_eq!(tag["pack"], big_id.as_str());
    assert!(
        tag["paths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "data/big.bin"),
        "{tag}"
    );
    let out = f.t.path().join("r1");
    let o = f.bp(
        &["restore", f.p(), "latest", "--to", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code(&o), 3, "{}", err(&o));
    assert!(err(&o).contains("authentication tag"), "{}", err(&o));
    assert!(!out.join("data/big.bin").exists());
    // Without the key, the block MD5s still see it.
    let o = f.bp(
        &[
            "--json",
            "verify",
            f.p(),
            "latest",
            "--full",
            "--without-key",
        ],
        &[],
    );
    assert_eq!(code(&o), 3, "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["mismatches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["check"] == "block-md5"),
        "{v}"
    );
    std::fs::write(&big, &orig).unwrap();
    let o = f.bp(&["verify", f.p(), "latest", "--full", "--without-key"], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));

    // Truncated by its last frame: cat (no frame table) and restore both refuse.
    let mut cut = orig.clone();
    let last = {
        let mut pos = 0usize;
        let mut starts = vec![];
        while pos < orig.len() {
            starts.push(pos);
            let n = u32::from_le_bytes(orig[pos..pos + 4].try_into().unwrap()) as usize;
            pos += 4 + 12 + n;
        }
        assert_eq!(pos, orig.len(), "frames tile the pack");
        *starts.last().unwrap()
    };
    cut.truncate(last);
    std::fs::write(&big, &cut).unwrap();
    let o = f.bp(&["cat", f.p(), &big_id], &[]);
    assert_eq!(code(&o), 3, "{}", err(&o));
    let o = f.bp(&["verify", f.p(), "latest", "--full"], &[]);
    assert_eq!(code(&o), 3, "{}", err(&o));
    std::fs::write(&big, &orig).unwrap();

    // A frame of one pack put in the place of the same frame of another (same plaintext,
    // same index, same length): its tag names the other pack, so it fails.
    let (a_id, a) = f.pack_of("data/zeros-a.bin", &[]);
    let (b_id, b) = f.pack_of("data/zeros-b.bin", &[]);
    assert_ne!(a_id, b_id, "the zero files have packs of their own");
    let (pa, pb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let frame = |bytes: &[u8], k: usize| {
        let mut pos = 0usize;
        for _ in 0..k {
            pos += 16 + u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        }
        let n = 16 + u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos..pos + n
    };
    let (ra, rb) = (frame(&pa, 5), frame(&pb, 5));
    assert_eq!(
        ra, rb,
        "frame 5 of both packs has the same place and length"
    );
    assert_ne!(pa[ra.clone()], pb[rb.clone()], "sealed differently");
    let mut swapped = pb.clone();
    swapped[rb].copy_from_slice(&pa[ra]);
    std::fs::write(&b, &swapped).unwrap();
    let o = f.bp(&["--json", "verify", f.p(), "latest", "--full"], &[]);
    assert_eq!(code(&o), 3, "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tag = v["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["check"] == "frame-tag")
        .unwrap_or_else(|| panic!("no frame-tag finding: {v}"));
    assert_eq!(tag["pack"], b_id.as_str());
    assert!(tag["detail"].as_str().unwrap().contains("frame 5"), "{tag}");
    assert!(
        tag["paths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "data/zeros-b.bin"),
        "{tag}"
    );
}

#[test]
fn cat_decrypts_a_pack_for_tar() {
    let f = fixture(&key_file());
    assert_eq!(code(&f.bp(&["backup", f.p()], &[])), 0);
    let (id, file) = f.pack_of("docs/guide/intro.md", &[]);
    // The stored pack is not zstd any more.
    let z = Command::new("zstd")
        .args(["-t", file.to_str().unwrap()])
        .output();
    if let Ok(z) = z {
        assert!(
            !z.status.success(),
            "an encrypted pack must not pass zstd -t"
        );
    }
    let x = f.t.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    let mut cat = Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(["cat", f.p(), &id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let tar = Command::new("tar")
        .args(["-x", "-C", x.to_str().unwrap()])
        .stdin(cat.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(cat.wait().unwrap().success());
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    assert_eq!(
        std::fs::read(x.join("docs/guide/intro.md")).unwrap(),
        std::fs::read(f.src.join("docs/guide/intro.md")).unwrap()
    );
    // Also by blob name; a wrong key opens nothing.
    let rel = format!("packs/{}/{id}.tar.zst", &id[..2]);
    let o = f.bp(&["cat", f.p(), &rel], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    std::fs::write(f.t.path().join("a.key"), KEY_B).unwrap();
    let o = f.bp(&["cat", f.p(), &id], &[]);
    assert_eq!(code(&o), 11, "{}", err(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn rotation_rewraps_the_key_and_leaves_packs_alone() {
    let f = fixture(&key_file());
    assert_eq!(code(&f.bp(&["backup", f.p()], &[])), 0);
    let packs_before: Vec<(PathBuf, Vec<u8>)> = f
        .packs()
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    // The pipeline now names key B; the old key is given on the command line.
    let text = std::fs::read_to_string(&f.pipeline).unwrap();
    std::fs::write(&f.pipeline, text.replace("a.key", "b.key")).unwrap();
    let out = f.t.path().join("r");
    let o = f.bp(
        &["restore", f.p(), "latest", "--to", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(
        code(&o),
        11,
        "before rotation, key B opens nothing: {}",
        err(&o)
    );
    // A wrong old key: refused, nothing rewritten.
    let before = f.state();
    let wrong = f.t.path().join("b.key");
    let o = f.bp(
        &[
            "key",
            "rotate",
            f.p(),
            "--from-key-file",
            wrong.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&o), 11, "{}", err(&o));
    assert_eq!(f.state(), before);
    let old = f.t.path().join("a.key");
    let o = f.bp(
        &[
            "key",
            "rotate",
            f.p(),
            "--from-key-file",
            old.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("re-wrapped"));
    let o = f.bp(
        &["restore", f.p(), "latest", "--to", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_same_tree(&f.src, &out);
    for (p, bytes) in &packs_before {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{} changed", p.display());
    }
    // Backups go on under B (same data key), an incremental reusing the old packs.
    std::fs::write(f.src.join("after-rotation.txt"), b"x").unwrap();
    let o = f.bp(&["backup", f.p()], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = f.bp(&["verify", f.p(), "latest", "--full"], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    // The old key no longer opens the pipeline.
    std::fs::write(
        &f.pipeline,
        std::fs::read_to_string(&f.pipeline)
            .unwrap()
            .replace("b.key", "a.key"),
    )
    .unwrap();
    let o = f.bp(&["ls", f.p(), "latest"], &[]);
    assert_eq!(code(&o), 11, "{}", err(&o));
}

#[test]
fn malformed_encryption_tables_are_located() {
    let f = fixture("[encryption]\nkey_file = \"a.key\"\nkey_env = \"X\"");
    let o = f.bp(&["validate", f.p()], &[]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("more than one key source"), "{}", err(&o));
    assert!(err(&o).contains("enc.toml:"), "{}", err(&o));
    let f = fixture("[encryption]\nkey = \"inline secrets are not accepted\"");
    let o = f.bp(&["validate", f.p()], &[]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("unknown"), "{}", err(&o));
    assert!(!err(&o).contains("inline secrets"), "{}", err(&o));
    std::fs::write(f.t.path().join("short.key"), "abcd").unwrap();
    let f2 = fixture("[encryption]\nkey_file = \"short.key\"");
    std::fs::write(f2.t.path().join("short.key"), "abcd").unwrap();
    let o = f2.bp(&["backup", f2.p()], &[]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("openssl rand -hex 32"), "{}", err(&o));
    assert!(f2.state().is_empty(), "nothing stored");
    // key_vault_key: an https key identifier, and still exactly one source.
    let f = fixture("[encryption]\nkey_vault_key = \"http://kv1.vault.azure.net/keys/k\"");
    let o = f.bp(&["validate", f.p()], &[]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("enc.toml:"), "{}", err(&o));
    assert!(err(&o).contains("https only"), "{}", err(&o));
    let f = fixture("[encryption]\nkey_vault_key = \"https://kv1.vault.azure.net/secrets/k\"");
    let o = f.bp(&["validate", f.p()], &[]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("/keys/<name>"), "{}", err(&o));
    let f = fixture(
        "[encryption]\nkey_file = \"a.key\"\nkey_vault_key = \"https://kv1.vault.azure.net/keys/k\"",
    );
    let o = f.bp(&["validate", f.p()], &[]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("more than one key source"), "{}", err(&o));
    let f = fixture("[encryption]\nkey_vault_key = \"https://kv1.vault.azure.net/keys/k/0123\"");
    let o = f.bp(&["validate", f.p()], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
}

#[path = "support/mod.rs"]
mod support;

#[tokio::test]
async fn database_pipeline_round_trip_is_encrypted_and_identical() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (s, s2) = (support::unique_ident("enc"), support::unique_ident("enc2"));
    c.batch_execute(&format!(
        "CREATE SCHEMA {s}; CREATE SCHEMA {s2};
         CREATE TABLE {s}.t (id bigint PRIMARY KEY, note text, amount numeric(12,2));
         CREATE TABLE {s2}.t (id bigint PRIMARY KEY, note text, amount numeric(12,2));
         INSERT INTO {s}.t SELECT g, 'secret-row-payload ' || g, g * 1.25 FROM generate_series(1, 5000) g;"
    ))
    .await
    .unwrap();
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("a.key"), KEY_A).unwrap();
    let store = t.path().join("store");
    let pipeline = t.path().join("pg.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"encpg\"\n[source]\ntype = \"postgres\"\nurl = \"{url}\"\nschemas = [\"{s}\"]\n\
             [target]\nurl = \"file://{}\"\n[encryption]\nkey_file = \"a.key\"\n",
            store.display()
        ),
    )
    .unwrap();
    let bp = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_blobpipe"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let p = pipeline.to_str().unwrap();
    let o = bp(&["backup", p]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = bp(&["verify", p, "latest", "--full"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = bp(&["restore", p, "latest", "--to-db", &url, "--schema", &s2]);
    if code(&o) != 0 {
        c.batch_execute(&format!(
            "DROP SCHEMA {s} CASCADE; DROP SCHEMA {s2} CASCADE"
        ))
        .await
        .unwrap();
        panic!("restore --to-db: {}", err(&o));
    }
    let fp = |schema: String| {
        let c = &c;
        async move {
            let r = c
                .query_one(
                    &format!("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM {schema}.t t"),
                    &[],
                )
                .await
                .unwrap();
            (r.get::<_, i64>(0), r.get::<_, String>(1))
        }
    };
    let (a, b) = (fp(s.clone()).await, fp(s2.clone()).await);
    c.batch_execute(&format!(
        "DROP SCHEMA {s} CASCADE; DROP SCHEMA {s2} CASCADE"
    ))
    .await
    .unwrap();
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(a, b);
    assert_eq!(a.0, 5000);
    // No row, table or schema name in clear in the store.
    let mut stack = vec![store.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else {
                let bytes = std::fs::read(&e).unwrap();
                for needle in ["secret-row-payload".as_bytes(), s.as_bytes()] {
                    assert!(!contains(&bytes, needle), "{} holds plaintext", e.display());
                }
            }
        }
    }
}

#[test]
fn prune_opens_encrypted_manifests_and_keeps_what_they_reference() {
    let f = fixture(&format!("{}\n[retention]\nkeep_last = 1\n", key_file()));
    assert_eq!(code(&f.bp(&["backup", f.p()], &[])), 0);
    std::fs::remove_file(f.src.join("data/zeros-a.bin")).unwrap();
    std::fs::write(f.src.join("docs/new.txt"), b"second").unwrap();
    assert_eq!(code(&f.bp(&["backup", f.p()], &[])), 0);
    let o = f.bp(&["forget", f.p()], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    // Without the key, prune cannot tell garbage from data: it refuses, deleting nothing.
    let text = std::fs::read_to_string(&f.pipeline).unwrap();
    let plain = f.t.path().join("plain.toml");
    std::fs::write(
        &plain,
        text.replace("[encryption]\nkey_file = \"a.key\"", ""),
    )
    .unwrap();
    let before = f.packs();
    let o = f.bp(&["prune", plain.to_str().unwrap(), "--grace", "0s"], &[]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert_eq!(f.packs(), before);
    let o = f.bp(&["--json", "prune", f.p(), "--grace", "0s"], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(
        f.packs().len() < before.len(),
        "the forgotten snapshot's own pack went"
    );
    let o = f.bp(&["verify", f.p(), "latest", "--full"], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let out = f.t.path().join("r");
    let o = f.bp(
        &["restore", f.p(), "latest", "--to", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_same_tree(&f.src, &out);

    // Issue 12: repacking the partly used packs re-seals what it copies under the new
    // packs' ids; the survivor verifies with and without the key and restores.
    let o = f.bp(
        &[
            "--json",
            "prune",
            f.p(),
            "--grace",
            "0s",
            "--max-unused",
            "0%",
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["repack"]["packs"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["packs_moved_deleted"], r["repack"]["packs"], "{r}");
    for args in [vec!["--full"], vec!["--full", "--without-key"]] {
        let mut a = vec!["verify", f.p(), "latest"];
        a.extend(args);
        let o = f.bp(&a, &[]);
        assert_eq!(code(&o), 0, "{a:?}: {}", err(&o));
    }
    let out = f.t.path().join("r2");
    let o = f.bp(
        &["restore", f.p(), "latest", "--to", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_same_tree(&f.src, &out);
    for (path, bytes) in f.state() {
        assert!(
            !contains(&bytes, b"second") || path.ends_with(".toml"),
            "{} holds a file's bytes in clear",
            path.display()
        );
    }
}

#[test]
fn without_key_on_a_plain_pipeline_is_a_usage_error() {
    let f = fixture("");
    assert_eq!(code(&f.bp(&["backup", f.p()], &[])), 0);
    let o = f.bp(&["verify", f.p(), "latest", "--without-key"], &[]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(
        err(&o).contains("--without-key is for encrypted pipelines"),
        "{}",
        err(&o)
    );
    // The plain pipeline's cat still works (a plain pack is already a .tar.zst).
    let (id, _) = f.pack_of("README.md", &[]);
    let o = f.bp(&["cat", f.p(), &id], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(contains(&o.stdout, b"README.md"));
}

#[test]
fn altered_manifest_segment_or_key_record_is_refused() {
    let f = fixture(&key_file());
    assert_eq!(code(&f.bp(&["backup", f.p()], &[])), 0);
    let dir = |d: &str| {
        let mut v: Vec<PathBuf> = f
            .state()
            .into_keys()
            .filter(|p| p.starts_with(f.prefix().join(d)))
            .collect();
        v.sort();
        v
    };
    let out = f.t.path().join("r");
    let restore = || {
        f.bp(
            &["restore", f.p(), "latest", "--to", out.to_str().unwrap()],
            &[],
        )
    };
    let gz = |text: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, text.as_bytes()).unwrap();
        e.finish().unwrap()
    };

    // The clear header claims other totals: it no longer matches the sealed one.
    let m = dir("snapshots").remove(0);
    let orig = std::fs::read(&m).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&orig[..]), &mut text).unwrap();
    let forged = text.replacen("\"files\":", "\"files\":1", 1);
    assert_ne!(forged, text);
    std::fs::write(&m, gz(&forged)).unwrap();
    let o = restore();
    assert_eq!(code(&o), 3, "{}", err(&o));
    assert!(err(&o).contains("clear header differs"), "{}", err(&o));
    assert!(!out.exists());
    std::fs::write(&m, &orig).unwrap();

    // A bit flipped in a sealed segment.
    let seg = dir("segments").remove(0);
    let orig = std::fs::read(&seg).unwrap();
    let mut bad = orig.clone();
    let at = bad.len() - 20;
    bad[at] ^= 1;
    std::fs::write(&seg, &bad).unwrap();
    let o = f.bp(&["ls", f.p(), "latest"], &[]);
    assert_eq!(code(&o), 3, "{}", err(&o));
    assert!(
        err(&o).contains("authentication tag does not match"),
        "{}",
        err(&o)
    );
    std::fs::write(&seg, &orig).unwrap();

    // The key record's wrapped key altered: the right key, a damaged record (exit 3).
    let k = dir("keys").remove(0);
    let orig = std::fs::read(&k).unwrap();
    let mut rec: serde_json::Value = serde_json::from_slice(&orig).unwrap();
    let w = rec["wrapped"].as_str().unwrap().to_string();
    let flipped = format!("{}{}", if w.starts_with('A') { "B" } else { "A" }, &w[1..]);
    rec["wrapped"] = flipped.into();
    std::fs::write(&k, serde_json::to_vec(&rec).unwrap()).unwrap();
    let o = restore();
    assert_eq!(code(&o), 3, "{}", err(&o));
    assert!(err(&o).contains("does not authenticate"), "{}", err(&o));
    std::fs::write(&k, &orig).unwrap();
    let o = restore();
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_same_tree(&f.src, &out);
}

#[test]
fn copy_of_an_encrypted_pipeline_takes_its_key_record_along() {
    let f = fixture(&key_file());
    assert_eq!(code(&f.bp(&["backup", f.p()], &[])), 0);
    let text = std::fs::read_to_string(&f.pipeline).unwrap();
    let to = f.t.path().join("to.toml");
    let other = f.t.path().join("other-store");
    std::fs::write(
        &to,
        text.replace(f.store.to_str().unwrap(), other.to_str().unwrap()),
    )
    .unwrap();
    // A destination pipeline whose key does not open the source's data key: refused first.
    let wrong = f.t.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&to)
            .unwrap()
            .replace("a.key", "b.key"),
    )
    .unwrap();
    let o = f.bp(&["copy", f.p(), wrong.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 11, "{}", err(&o));
    assert!(!other.join("backups/enc").exists(), "nothing written");
    let o = f.bp(&["copy", f.p(), to.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let out = f.t.path().join("r");
    let o = f.bp(
        &[
            "restore",
            to.to_str().unwrap(),
            "latest",
            "--to",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_same_tree(&f.src, &out);
}
