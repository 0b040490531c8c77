//! The README's first commands, run as written: they are the first thing a new user
//! types, so they must not rot.
//!
//! The README's first code block is parsed; every `cargo run --release -- ARGS` line is
//! run as the real binary with ARGS (and the quickstart lines of "What a run looks
//! like" after it), on a copy of `pipelines/quickstart.toml` whose store is in a temp
//! dir; `scripts/test` is checked to exist, be executable and parse (running the whole
//! suite from inside it would recurse). A command the test does not know fails it, so a
//! README change comes with a guard change.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of the `n`-th fenced code block (0-based), comments and blanks removed.
fn code_block(readme: &str, n: usize) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            match cur.take() {
                Some(b) => blocks.push(b),
                None => cur = Some(Vec::new()),
            }
            continue;
        }
        if let Some(b) = cur.as_mut() {
            let cmd = line.split(" #").next().unwrap_or("").trim();
            if !cmd.is_empty() && !cmd.starts_with('#') {
                b.push(cmd.to_string());
            }
        }
    }
    blocks.into_iter().nth(n).unwrap_or_default()
}

/// A copy of the quickstart pipeline in `dir/pipelines/`, reading this checkout and
/// storing into `dir/.blobpipe/store` (the same relative store path as the original).
fn quickstart_copy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("pipelines/quickstart.toml")).expect("read");
    assert!(
        text.contains("root = \"..\""),
        "quickstart.toml changed its root"
    );
    assert!(
        text.contains("url = \"file://../.blobpipe/store\""),
        "quickstart.toml changed its store"
    );
    let text = text.replace(
        "root = \"..\"",
        &format!("root = {:?}", repo().display().to_string()),
    );
    std::fs::create_dir_all(dir.join("pipelines")).expect("mkdir");
    let p = dir.join("pipelines/quickstart.toml");
    std::fs::write(&p, text).expect("write");
    p
}

fn run(dir: &Path, args: &[String]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run blobpipe");
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// `blobpipe ARGS` or `cargo run --release -- ARGS` → ARGS, with quotes removed.
fn blobpipe_args(line: &str) -> Option<Vec<String>> {
    let rest = line
        .strip_prefix("cargo run --release -- ")
        .or_else(|| line.strip_prefix("blobpipe "))?;
    Some(
        rest.split_whitespace()
            .map(|w| w.trim_matches('\'').to_string())
            .collect(),
    )
}

#[test]
fn readme_first_commands_work_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let first = code_block(&readme, 0);
    assert!(!first.is_empty(), "README.md has no code block");
    let t = tempfile::tempdir().expect("tmp");
    let pipeline = quickstart_copy(t.path());
    let mut ran = 0;
    for line in &first {
        if line == "scripts/test" {
            let s = repo().join("scripts/test");
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&s)
                    .expect("scripts/test exists")
                    .permissions(),
            );
            assert!(mode & 0o111 != 0, "scripts/test is not executable");
            let o = Command::new("bash")
                .arg("-n")
                .arg(&s)
                .output()
                .expect("bash");
            assert!(o.status.success(), "scripts/test does not parse");
            continue;
        }
        let args = blobpipe_args(line).unwrap_or_else(|| {
            panic!("README's first block has a command this test does not know: {line}")
        });
        let (code, out) = run(t.path(), &args);
        assert_eq!(code, 0, "`{line}` failed:\n{out}");
        ran += 1;
    }
    assert!(ran >= 1, "no blobpipe command in README's first block");
    // The backup really stored a snapshot where the pipeline says.
    let snaps = t
        .path()
        .join(".blobpipe/store/backups/quickstart/snapshots");
    assert!(
        std::fs::read_dir(&snaps).map(|d| d.count()).unwrap_or(0) >= 1,
        "no snapshot in {}",
        snaps.display()
    );

    // Then the quickstart lines of "What a run looks like" that need no placeholder.
    let heading = "## What a run looks like";
    let at = readme
        .find(heading)
        .expect("README lost its \"What a run looks like\" section");
    let tour = code_block(&readme[at..], 0);
    let restore_to = t.path().join("restore");
    let mut tour_ran = Vec::new();
    for line in tour
        .iter()
        .filter(|l| l.contains("pipelines/quickstart.toml") && !l.contains('<') && !l.contains('…'))
    {
        let Some(mut args) = blobpipe_args(line) else {
            continue;
        };
        // Optional parts (`[--path 'docs/']`) and alternatives after `#` are not typed.
        if let Some(i) = args.iter().position(|a| a.starts_with('[')) {
            args.truncate(i);
        }
        for a in &mut args {
            if a == "/tmp/restore" {
                *a = restore_to.display().to_string();
            }
        }
        if args.iter().any(|a| a.starts_with("--at")) {
            continue; // needs a time before the first snapshot's: not a fixed line
        }
        let (code, out) = run(t.path(), &args);
        assert_eq!(code, 0, "`{line}` failed:\n{out}");
        tour_ran.push(args[0].clone());
    }
    for cmd in ["validate", "backup", "snapshots", "ls", "verify", "restore"] {
        assert!(
            tour_ran.iter().any(|c| c == cmd),
            "README tour lost `{cmd}`: {tour_ran:?}"
        );
    }
    assert!(
        restore_to.join("README.md").is_file(),
        "restore wrote nothing"
    );
    assert!(pipeline.is_file());
}
