//! The binary as a user runs it: documented exit codes, clear errors for bad input,
//! `--json` output, and nothing stored lost when something is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn bp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

struct Fixture {
    t: tempfile::TempDir,
    src: PathBuf,
    pipeline: PathBuf,
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let store = t.path().join("store");
    let pipeline = write_pipeline(
        t.path(),
        "cli",
        &src,
        &format!("file://{}", store.display()),
        "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"128KiB\"\npack_size = \"1MiB\"\n",
    );
    Fixture { t, src, pipeline }
}

fn p(f: &Fixture) -> &str {
    f.pipeline.to_str().unwrap()
}

#[test]
fn backup_list_verify_restore_with_json() {
    let f = fixture();
    let o = bp(&["--json", "backup", p(&f)]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["status"], "ok");
    let snap = r["snapshot"].as_str().unwrap().to_string();

    let o = bp(&["--json", "snapshots", p(&f)]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["id"], snap.as_str());
    assert_eq!(list[0]["verify_status"], "ok");
    assert_eq!(list[0]["header"]["totals"]["files"], r["totals"]["files"]);

    let o = bp(&["--json", "ls", p(&f), &snap[..12], "--path", "docs/**"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let ls: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(ls
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["path"] == "docs/guide/intro.md"));
    assert!(ls
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["path"].as_str().unwrap().starts_with("docs")));

    let o = bp(&["verify", p(&f), "latest", "--full"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("verify: ok"));

    let out = f.t.path().join("restored");
    let o = bp(&["restore", p(&f), "latest", "--to", out.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_same_tree(&f.src, &out);

    // Again into the same place: refused (7), nothing changed; --overwrite works.
    std::fs::write(out.join("README.md"), "local edit").unwrap();
    let o = bp(&["restore", p(&f), "latest", "--to", out.to_str().unwrap()]);
    assert_eq!(code(&o), 7, "{}", err(&o));
    assert!(err(&o).contains("--overwrite"));
    assert_eq!(std::fs::read(out.join("README.md")).unwrap(), b"local edit");
    let o = bp(&[
        "restore",
        p(&f),
        "latest",
        "--to",
        out.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_same_tree(&f.src, &out);

    // Missing snapshot / path: 6.
    let o = bp(&["restore", p(&f), "19990101", "--to", "/tmp/x-never"]);
    assert_eq!(code(&o), 6, "{}", err(&o));
    assert!(err(&o).contains("no snapshot"));
    let o = bp(&[
        "restore",
        p(&f),
        "latest",
        "--to",
        "/tmp/x-never",
        "--path",
        "no/such/*",
    ]);
    assert_eq!(code(&o), 6, "{}", err(&o));
    assert!(
        !Path::new("/tmp/x-never").exists()
            || std::fs::read_dir("/tmp/x-never").unwrap().next().is_none()
    );
}

#[test]
fn flipped_byte_fails_full_verify_with_exit_3_naming_pack_and_block() {
    let f = fixture();
    assert_eq!(code(&bp(&["backup", p(&f)])), 0);
    let o = bp(&["--json", "ls", p(&f), "latest", "--path", "data/big.bin"]);
    let ls: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let pack_id = ls[0]["pack"].as_str().unwrap().to_string();
    let pack_file =
        f.t.path()
            .join("store/backups/cli/packs")
            .join(&pack_id[..2])
            .join(format!("{pack_id}.tar.zst"));
    let mut bytes = std::fs::read(&pack_file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&pack_file, bytes).unwrap();
    let o = bp(&["--json", "verify", p(&f), "latest", "--full"]);
    assert_eq!(code(&o), 3, "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mm = v["mismatches"].as_array().unwrap();
    let block = mm
        .iter()
        .find(|m| m["check"] == "block-md5")
        .expect("block mismatch");
    assert_eq!(block["pack"], pack_id.as_str());
    let expected_block = at / (128 << 10);
    assert_eq!(block["block"], expected_block);
    assert!(block["paths"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "data/big.bin"));
    // Metadata-only verify cannot see it (the size and block list are right).
    assert_eq!(code(&bp(&["verify", p(&f), "latest", "--metadata"])), 0);
    // A sample of 100% catches it.
    assert_eq!(
        code(&bp(&["verify", p(&f), "latest", "--sample", "100%"])),
        3
    );
}

fn broken(f: &Fixture, from: &str, to: &str) -> (i32, String) {
    let text = std::fs::read_to_string(&f.pipeline).unwrap();
    assert!(text.contains(from), "fixture lacks {from:?}");
    let bad = f.t.path().join("bad.toml");
    std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
    let o = bp(&["validate", bad.to_str().unwrap()]);
    (code(&o), err(&o))
}

#[test]
fn malformed_pipeline_files_give_located_errors_and_exit_2() {
    let f = fixture();
    let o = bp(&["validate", p(&f)]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "[target]",
            "[target]\ncolour = \"blue\"",
            &["bad.toml:8:1", "target.colour", "unknown key", "fix:"],
        ),
        (
            "[upload]\n",
            "[upload]\nconcurrency = \"lots\"\n",
            &["bad.toml:", "upload.concurrency", "invalid type"],
        ),
        (
            "block_size = \"128KiB\"",
            "block_size = \"128 furlongs\"",
            &["upload.block_size", "unknown unit"],
        ),
        (
            "[source]\n",
            "[source]\nexclude = [\"a/{b\"]\n",
            &["source.exclude", "invalid glob"],
        ),
        (
            "type = \"fs\"",
            "type = \"ftp\"",
            &["source.type", "unknown source type"],
        ),
        ("name = \"cli\"", "name = \"cli\"\n[[[", &["bad.toml:"]),
        (
            "[target]\nurl = \"",
            "[target]\nurl = \"${BLOBPIPE_SURELY_UNSET}",
            &["BLOBPIPE_SURELY_UNSET is not set"],
        ),
        (
            "[compression]\n",
            "[compression]\nlevel = 99\n",
            &["compression.level", "1–22"],
        ),
    ];
    for (from, to, wants) in cases {
        let (c, e) = broken(&f, from, to);
        assert_eq!(c, 2, "{to}: {e}");
        for w in *wants {
            assert!(e.contains(w), "{to}: expected {w:?} in:\n{e}");
        }
    }
    let o = bp(&["validate", "/nonexistent/pipeline.toml"]);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("/nonexistent/pipeline.toml"));
    // A config error on backup runs nothing and stores nothing.
    let bad = f.t.path().join("bad.toml");
    let o = bp(&["backup", bad.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(!f.t.path().join("store").exists());
}

#[tokio::test]
async fn a_second_run_fails_fast_with_exit_5_naming_the_holder() {
    let f = fixture();
    let store =
        blobpipe::store::local::LocalStore::open(&f.t.path().join("store/backups")).unwrap();
    use blobpipe::store::BlobStore;
    let lease = store
        .acquire_lease(
            "cli/lock",
            std::time::Duration::from_secs(30),
            "run exec-7 on host-a",
        )
        .await
        .unwrap();
    let o = bp(&["backup", p(&f)]);
    assert_eq!(code(&o), 5, "{}", err(&o));
    assert!(err(&o).contains("exec-7"), "{}", err(&o));
    store.release_lease(&lease).await.unwrap();
    assert_eq!(code(&bp(&["backup", p(&f)])), 0);
}

/// issue 14: `validate` said "ok" for what the run then refuses — a source root that
/// does not exist or is not a directory, a plain-http endpoint off loopback.
#[test]
fn issue14_validate_refuses_what_the_run_refuses() {
    let f = fixture();
    let text = std::fs::read_to_string(&f.pipeline).unwrap();
    let src = f.src.display().to_string();
    let missing = f.t.path().join("no-such-dir");
    let a_file = f.t.path().join("a-file");
    std::fs::write(&a_file, b"x").unwrap();
    for (root, want) in [
        (missing.display().to_string(), "cannot read source root"),
        (a_file.display().to_string(), "is not a directory"),
    ] {
        let bad = f.t.path().join("bad-root.toml");
        std::fs::write(&bad, text.replace(&src, &root)).unwrap();
        let v = bp(&["validate", bad.to_str().unwrap()]);
        let b = bp(&["backup", bad.to_str().unwrap()]);
        assert_eq!(code(&v), 1, "validate: {}", err(&v));
        assert_eq!(code(&b), code(&v), "backup: {}", err(&b));
        assert!(
            err(&v).contains(want) && err(&v).contains("source.root"),
            "{}",
            err(&v)
        );
        assert!(err(&b).contains(want), "{}", err(&b));
    }
    let store = format!("file://{}", f.t.path().join("store").display());
    assert!(text.contains(&store), "fixture store url");
    for url in [
        "http://example.com/devstoreaccount1/c",
        "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://example.com",
    ] {
        let bad = f.t.path().join("bad-http.toml");
        std::fs::write(&bad, text.replace(&store, url)).unwrap();
        let v = bp(&["validate", bad.to_str().unwrap()]);
        assert_eq!(code(&v), 2, "{url}: {}", err(&v));
        assert!(err(&v).contains("plain http"), "{url}: {}", err(&v));
        assert!(err(&v).contains("target.url"), "{url}: {}", err(&v));
    }
    // The fixture itself still validates.
    assert_eq!(code(&bp(&["validate", p(&f)])), 0);
}

/// issue 14: only the first structural error was reported, against the wrong table.
#[test]
fn issue14_validate_reports_every_error_against_its_table() {
    let f = fixture();
    let text = std::fs::read_to_string(&f.pipeline).unwrap();
    let bad = f.t.path().join("bad.toml");
    let text = text
        .replace(
            "block_size = \"128KiB\"",
            "block_size = 8.5\nconcurrency = \"four\"",
        )
        .replace("[compression]", "[compresion]")
        + "[source.extra]\nx = 1\n";
    std::fs::write(&bad, text).unwrap();
    let o = bp(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    let e = err(&o);
    for want in [
        "compresion: unknown table [compresion] (did you mean [compression]?)",
        "upload.block_size: a size is a whole number of bytes",
        "upload.concurrency: invalid type: string \"four\"",
        "source.extra: unknown table [source.extra]",
    ] {
        assert!(e.contains(want), "{want:?} missing in:\n{e}");
    }
    assert!(!e.contains("untagged"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Issue 14: directory commands resolve only the variables they use, and a file that does
// not load is reported once without stopping the others (exit 2 at the end).
// ---------------------------------------------------------------------------------------
mod issue14_directory_commands {
    use super::*;

    const UNSET: &str = "BP_ISSUE14_UNSET_DB_URL";

    /// `pipes/` with an fs pipeline, a database pipeline whose source URL variable is
    /// unset, and (when `bad`) a file that does not parse.
    fn pipes(bad: bool) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("pipes");
        std::fs::create_dir_all(&dir).unwrap();
        let store = t.path().join("store");
        let common = format!(
            "[target]\nurl = \"file://{}\"\n[schedule]\ncron = \"0 2 * * *\"\n[lifecycle]\ncool_after_days = 30\n",
            store.display()
        );
        std::fs::write(
            dir.join("a-files.toml"),
            format!(
                "name = \"files\"\n[source]\ntype = \"fs\"\nroot = \"{}\"\n{common}",
                t.path().display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("b-db.toml"),
            format!(
                "name = \"db\"\n[source]\ntype = \"postgres\"\nurl = \"${{{UNSET}}}\"\nschemas = [\"public\"]\n{common}"
            ),
        )
        .unwrap();
        if bad {
            std::fs::write(dir.join("c-bad.toml"), "name = \n").unwrap();
        }
        (t, dir)
    }

    fn run(args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_blobpipe"))
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove(UNSET)
            .output()
            .unwrap()
    }

    fn out(o: &Output) -> String {
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    #[test]
    fn lifecycle_does_not_need_the_source_url() {
        let (_t, dir) = pipes(false);
        let a = dir.join("a-files.toml");
        let b = dir.join("b-db.toml");
        let o = run(&["lifecycle", a.to_str().unwrap(), b.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{}", err(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v["policy"]["rules"].as_array().map(Vec::len),
            Some(2),
            "{v:#}"
        );
        // Commands that do read the source still refuse, naming the variable.
        let o = run(&["validate", b.to_str().unwrap()]);
        assert_eq!(code(&o), 2);
        assert!(err(&o).contains(UNSET), "{}", err(&o));
    }

    #[test]
    fn lifecycle_reports_a_bad_file_and_covers_the_others() {
        let (_t, dir) = pipes(true);
        let files: Vec<String> = ["a-files.toml", "b-db.toml", "c-bad.toml"]
            .iter()
            .map(|f| dir.join(f).display().to_string())
            .collect();
        let args: Vec<&str> = std::iter::once("lifecycle")
            .chain(files.iter().map(String::as_str))
            .collect();
        let o = run(&args);
        assert_eq!(code(&o), 2, "{}", err(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v["policy"]["rules"].as_array().map(Vec::len),
            Some(2),
            "{v:#}"
        );
        assert_eq!(err(&o).matches("c-bad.toml").count(), 1, "{}", err(&o));
    }

    #[test]
    fn next_and_scaffold_go_on_past_a_bad_file() {
        let (t, dir) = pipes(true);
        let d = dir.to_str().unwrap();
        let o = run(&["next", d]);
        assert_eq!(code(&o), 2, "{}", err(&o));
        assert!(
            out(&o).contains("files") && out(&o).contains("db"),
            "{}",
            out(&o)
        );
        assert_eq!(err(&o).matches("c-bad.toml").count(), 1, "{}", err(&o));
        assert!(!err(&o).contains(UNSET), "{}", err(&o));

        let app = t.path().join("app");
        let o = run(&["functions", "scaffold", d, "--out", app.to_str().unwrap()]);
        assert_eq!(code(&o), 2, "{}", err(&o));
        assert!(app.join("host.json").exists(), "{}", err(&o));
        assert_eq!(err(&o).matches("c-bad.toml").count(), 1, "{}", err(&o));
    }

    #[test]
    fn status_and_check_print_a_load_error_once() {
        let (_t, dir) = pipes(true);
        let d = dir.to_str().unwrap();
        // `check`: nothing backed up yet, so stale (9) beats the config error (2).
        for (cmd, want) in [("status", 2), ("check", 9)] {
            let o = run(&[cmd, d, "--max-age", "26h"][..if cmd == "check" { 4 } else { 2 }]);
            let all = format!("{}{}", out(&o), err(&o));
            assert_eq!(code(&o), want, "{cmd}: {all}");
            assert_eq!(all.matches("c-bad.toml").count(), 1, "{cmd}: {all}");
            assert!(!all.contains(UNSET), "{cmd} needs no source: {all}");
            assert!(out(&o).contains("files"), "{cmd}: {all}");
        }
    }
}
