//! One regression test (or a few) per fixed defect, each in a `mod item_N` block named
//! after the issue item it pins down. They run the real binary against real stores.

mod common;
mod support;

use std::path::Path;
use std::process::{Command, Output};

/// The blobpipe binary, quiet logs.
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blobpipe"));
    c.env("RUST_LOG", "warn");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The JSON document a `--json` command printed.
fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            text(&o.stdout),
            text(&o.stderr)
        )
    })
}

/// Files directly in `dir` (empty when it does not exist).
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Committed manifests in a local store's `snapshots/` dir (not the temp files a write
/// goes through).
fn manifests(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|n| n.ends_with(".jsonl.gz") && !n.starts_with('.'))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Issue 10, items 1 + 2: no command prints an account key or a SAS signature, and the
// documented `BlobEndpoint=…;SharedAccessSignature=…` target form works.
// ---------------------------------------------------------------------------------------
mod item_1_2 {
    use std::path::Path;
    use std::process::{Command, Output};
    use std::time::Duration;

    use blobpipe::store::azure::credential::AccountSasSigner;
    use blobpipe::support::secret::Secret;

    use super::common::*;
    use super::support;

    fn bp(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_blobpipe"));
        c.args(args)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("AZURE_STORAGE_CONNECTION_STRING")
            .env_remove("AZURE_STORAGE_KEY")
            .env_remove("AZURE_STORAGE_SAS_TOKEN");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run blobpipe")
    }

    fn text(o: &Output) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    /// A full-permission account SAS for Azurite: the query string and its `sig` value.
    fn azurite_sas() -> (String, String) {
        let signer =
            AccountSasSigner::new("devstoreaccount1", &Secret::new(support::AZURITE_KEY), true)
                .expect("signer");
        let p = signer.params(chrono::Utc::now(), Duration::from_secs(3600));
        let sig = signer.signature(&p);
        let enc = sig
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let q = format!(
            "sv={}&ss={}&srt={}&sp={}&st={}&se={}&spr={}&sig={enc}",
            p.sv, p.ss, p.srt, p.sp, p.st, p.se, "https,http"
        );
        (q, sig)
    }

    /// The pieces of secrets that must appear nowhere.
    fn needles(sig: &str) -> Vec<String> {
        let enc = sig
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        vec![
            support::AZURITE_KEY.to_string(),
            support::AZURITE_KEY[..16].to_string(),
            support::AZURITE_KEY[40..60].to_string(),
            sig.to_string(),
            sig[..16].to_string(),
            enc[..16].to_string(),
            "AccountKey=".to_string(),
            "SharedAccessSignature=".to_string(),
        ]
    }

    fn assert_clean(what: &str, s: &str, needles: &[String]) {
        for n in needles {
            assert!(
                !s.contains(n.as_str()),
                "{what} printed a secret ({n:?}):\n{s}"
            );
        }
    }

    const EXTRA: &str = "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\n\
         [lock]\nttl = \"15s\"\n[retention]\nkeep_last = 5\n[schedule]\ncron = \"0 3 * * *\"\n\
         [freshness]\nrpo = \"1d\"\n[lifecycle]\ncool_after_days = 30\n";

    /// Every command that takes a pipeline, with plain output, `--json`, `RUST_LOG=trace`
    /// and `--log-format json`, against Azurite with a key connection string and with a
    /// `BlobEndpoint=…;SharedAccessSignature=…` connection string: no key, no `sig`.
    #[test]
    fn no_command_prints_a_key_or_a_sas_signature() {
        let Some(ep) = support::azurite() else { return };
        let (sas, sig) = azurite_sas();
        let needles = needles(&sig);
        let forms = [
            (
                "key",
                support::azurite_connection_string(&ep),
                "(account key)",
            ),
            (
                "sas",
                format!("BlobEndpoint={ep};SharedAccessSignature={sas}"),
                "(SAS)",
            ),
        ];
        for (tag, target, label) in forms {
            let t = tempfile::tempdir().expect("tmp");
            let src = t.path().join("src");
            std::fs::create_dir_all(&src).expect("src");
            std::fs::write(src.join("a.txt"), b"alpha\n").expect("write");
            std::fs::write(src.join("b.bin"), noise(200_000, 7)).expect("write");
            let container = support::unique_container(&format!("leak-{tag}"));
            let pf = write_pipeline(
                t.path(),
                &format!("leak{tag}"),
                &src,
                &target,
                &format!("container = \"{container}\"\n{EXTRA}"),
            );
            let pf = pf.to_str().expect("utf-8").to_string();
            let dir = t.path();

            // The rendering names account, container and credential kind.
            let o = bp(dir, &["--json", "validate", &pf], &[]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
            assert_eq!(
                v["target"].as_str().unwrap_or_default(),
                format!("azure://devstoreaccount1/{container} at {} {label}", {
                    let u = url::Url::parse(&ep).expect("endpoint");
                    format!(
                        "http://{}:{}",
                        u.host_str().unwrap_or_default(),
                        u.port().unwrap_or(0)
                    )
                }),
                "{v}"
            );

            // Two snapshots, so diff and incrementals have something to compare.
            for _ in 0..2 {
                let o = bp(dir, &["-q", "backup", &pf], &[]);
                assert_clean("backup", &text(&o), &needles);
                assert_eq!(o.status.code(), Some(0), "{tag}: {}", text(&o));
            }
            let restore_to = dir.join("restored");
            let scratch = dir.join("scratch");
            std::fs::create_dir_all(&scratch).expect("scratch");
            let scratch = scratch.to_str().expect("utf-8").to_string();
            let variants: [Variant; 3] = [
                (&[], &[]),
                (&[], &[("RUST_LOG", "trace")]),
                (
                    &["--json", "--log-format", "json"],
                    &[("RUST_LOG", "trace")],
                ),
            ];
            for (vi, (flags, env)) in variants.iter().enumerate() {
                let to = restore_to.join(vi.to_string());
                let to = to.to_str().expect("utf-8").to_string();
                let cmds: Vec<Vec<&str>> = vec![
                    vec!["validate", &pf],
                    vec!["auth", "check", &pf],
                    vec!["backup", &pf],
                    vec!["snapshots", &pf],
                    vec!["ls", &pf],
                    vec!["diff", &pf, "latest", "latest"],
                    vec!["verify", &pf],
                    vec!["verify", "--full", &pf],
                    vec!["restore", &pf, "--to", &to],
                    vec!["check", &pf],
                    vec!["status", &pf],
                    vec!["drill", "--scratch-dir", &scratch, &pf],
                    vec!["next", &pf],
                    vec!["forget", "--dry-run", &pf],
                    vec!["prune", "--dry-run", &pf],
                    vec!["lifecycle", &pf],
                ];
                for cmd in cmds {
                    let mut args: Vec<&str> = vec!["-q"];
                    args.extend_from_slice(flags);
                    args.extend_from_slice(&cmd);
                    let o = bp(dir, &args, env);
                    let out = text(&o);
                    assert_clean(&format!("{tag} {args:?} {env:?}"), &out, &needles);
                    assert_eq!(
                        o.status.code(),
                        Some(0),
                        "{tag} {args:?} {env:?} failed:\n{out}"
                    );
                }
            }

            // What the runs stored (run records, verify reports, drill records, part
            // records, plans) and anything written beside the pipeline file.
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                let p = blobpipe::pipeline::Pipeline::load(Path::new(&pf)).expect("load");
                let s = blobpipe::store::open(&p.target, &p.retry)
                    .await
                    .expect("open");
                let all = blobpipe::store::list_all(&*s, "").await.expect("list");
                assert!(!all.is_empty());
                for item in all.iter().filter(|i| !i.name.contains("/packs/")) {
                    let body = s.get(&item.name, None).await.expect("get");
                    let mut plain = Vec::new();
                    let body = if std::io::Read::read_to_end(
                        &mut flate2::read::MultiGzDecoder::new(&body[..]),
                        &mut plain,
                    )
                    .is_ok()
                        && !plain.is_empty()
                    {
                        plain
                    } else {
                        body.to_vec()
                    };
                    assert_clean(&item.name, &String::from_utf8_lossy(&body), &needles);
                }
            });
            for f in walk(dir) {
                let rel = f.strip_prefix(dir).expect("inside");
                if rel.starts_with("src")
                    || rel.starts_with("restored")
                    || f.extension().is_some_and(|e| e == "toml")
                {
                    continue;
                }
                let body = std::fs::read(&f).unwrap_or_default();
                assert_clean(
                    &f.display().to_string(),
                    &String::from_utf8_lossy(&body),
                    &needles,
                );
            }
        }
    }

    /// Global flags and environment of one way of running a command.
    type Variant<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    todo.push(p);
                } else if p.is_file() {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The documented `BlobEndpoint=…;SharedAccessSignature=…` form backs up and restores
    /// (it was refused as "unsupported store URL", with the whole string in the error).
    #[test]
    fn blob_endpoint_with_shared_access_signature_backs_up_and_restores() {
        let Some(ep) = support::azurite() else { return };
        let (sas, sig) = azurite_sas();
        let t = tempfile::tempdir().expect("tmp");
        let src = t.path().join("src");
        sample_tree(&src);
        let container = support::unique_container("bepsas");
        let pf = write_pipeline(
            t.path(),
            "bepsas",
            &src,
            &format!("BlobEndpoint={ep};SharedAccessSignature={sas}"),
            &format!("container = \"{container}\"\n"),
        );
        let pf = pf.to_str().expect("utf-8");
        let o = bp(t.path(), &["-q", "--json", "backup", pf], &[]);
        assert_clean("backup", &text(&o), &needles(&sig));
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(r["status"], "ok", "{r}");
        let to = t.path().join("out");
        let o = bp(
            t.path(),
            &["-q", "restore", pf, "--to", to.to_str().expect("utf-8")],
            &[],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_same_tree(&src, &to);
    }
}

// ---------------------------------------------------------------------------------------
// Issue 10, item 6: one unreadable manifest must not block the pipeline. A damaged
// snapshot is reported and skipped where that is safe; naming it explicitly is an error.
// ---------------------------------------------------------------------------------------
mod item_6 {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    use serde_json::Value;

    use super::common::*;

    struct Env {
        _t: tempfile::TempDir,
        dir: PathBuf,
        src: PathBuf,
        pf: String,
    }

    fn setup(name: &str) -> Env {
        let t = tempfile::tempdir().expect("tmp");
        let dir = t.path().to_path_buf();
        let src = dir.join("src");
        std::fs::create_dir_all(&src).expect("src");
        std::fs::write(src.join("a.txt"), b"first\n").expect("write");
        std::fs::write(src.join("b.bin"), noise(50_000, 3)).expect("write");
        let pf = write_pipeline(
            &dir,
            name,
            &src,
            "file://store",
            "[retention]\nkeep_last = 1\n",
        );
        Env {
            pf: pf.to_str().expect("utf-8").to_string(),
            _t: t,
            dir,
            src,
        }
    }

    fn bp(e: &Env, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_blobpipe"))
            .args(args)
            .current_dir(&e.dir)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run blobpipe")
    }

    fn text(o: &Output) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    fn json_ok(e: &Env, args: &[&str]) -> Value {
        let mut a = vec!["-q", "--json"];
        a.extend_from_slice(args);
        let o = bp(e, &a);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|err| panic!("{args:?}: {err}: {}", text(&o)))
    }

    /// Back up (after changing a file, so snapshots differ) and return the snapshot id.
    fn backup(e: &Env, n: u32) -> String {
        std::fs::write(e.src.join("a.txt"), format!("version {n}\n")).expect("write");
        let r = json_ok(e, &["backup", &e.pf]);
        assert_eq!(r["status"], "ok", "{r}");
        r["snapshot"].as_str().expect("snapshot").to_string()
    }

    fn manifest_file(e: &Env, id: &str) -> PathBuf {
        let dir = e
            .dir
            .join("store/backups")
            .join(Path::new(&e.pf).file_stem().expect("stem"))
            .join("snapshots");
        std::fs::read_dir(&dir)
            .expect("snapshots dir")
            .flatten()
            .map(|d| d.path())
            .find(|p| p.to_string_lossy().contains(id))
            .unwrap_or_else(|| panic!("no manifest for {id} in {}", dir.display()))
    }

    #[derive(Clone, Copy, Debug)]
    enum Damage {
        Empty,
        Truncated,
    }

    fn damage(e: &Env, id: &str, how: Damage) {
        let f = manifest_file(e, id);
        let body = std::fs::read(&f).expect("read manifest");
        let keep = match how {
            Damage::Empty => 0,
            Damage::Truncated => body.len() / 2,
        };
        std::fs::write(&f, &body[..keep]).expect("damage manifest");
    }

    /// The one pipeline's part of a `check` / `status` document.
    fn first(v: &Value) -> Value {
        if let Some(a) = v.get("pipelines").and_then(Value::as_array) {
            return a[0].clone();
        }
        match v.as_array() {
            Some(a) => a[0].clone(),
            None => v.clone(),
        }
    }

    fn snapshot<'a>(list: &'a Value, id: &str) -> &'a Value {
        list.as_array()
            .expect("list")
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))
    }

    /// The newest manifest empty or truncated: snapshots marks it, restore latest skips
    /// it (and says so), naming it is a clear exit-3 error, check and status judge on the
    /// newest readable verified one, forget keeps it, and backups (incremental and
    /// `--full`) still run against the newest readable parent.
    #[test]
    fn damaged_newest_manifest_is_reported_and_skipped() {
        for how in [Damage::Empty, Damage::Truncated] {
            let e = setup("dmgnew");
            let s1 = backup(&e, 1);
            let s2 = backup(&e, 2);
            damage(&e, &s2, how);

            let list = json_ok(&e, &["snapshots", &e.pf]);
            assert!(snapshot(&list, &s1)["damaged"].is_null(), "{how:?}: {list}");
            assert!(
                snapshot(&list, &s1)["header"].is_object(),
                "{how:?}: {list}"
            );
            assert!(
                snapshot(&list, &s2)["damaged"].is_string(),
                "{how:?}: {list}"
            );
            assert!(snapshot(&list, &s2)["header"].is_null(), "{how:?}: {list}");
            let o = bp(&e, &["-q", "snapshots", &e.pf]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            let out = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(
                out.lines()
                    .any(|l| l.starts_with(&s2) && l.contains("DAMAGED")),
                "{how:?}: {out}"
            );

            // restore latest: the newest readable, and a note naming the skipped one.
            let to = e.dir.join("restored");
            let o = bp(
                &e,
                &[
                    "-q",
                    "restore",
                    &e.pf,
                    "latest",
                    "--to",
                    to.to_str().expect("utf-8"),
                ],
            );
            assert_eq!(o.status.code(), Some(0), "{how:?}: {}", text(&o));
            assert!(
                String::from_utf8_lossy(&o.stderr).contains(&s2),
                "{}",
                text(&o)
            );
            assert!(
                String::from_utf8_lossy(&o.stdout).contains(&s1),
                "{}",
                text(&o)
            );
            assert_eq!(
                std::fs::read(to.join("a.txt")).expect("restored"),
                b"version 1\n"
            );
            // Naming the damaged snapshot: a clear integrity error.
            let to2 = e.dir.join("restored2");
            let o = bp(
                &e,
                &[
                    "-q",
                    "restore",
                    &e.pf,
                    &s2,
                    "--to",
                    to2.to_str().expect("utf-8"),
                ],
            );
            assert_eq!(o.status.code(), Some(3), "{how:?}: {}", text(&o));
            assert!(text(&o).contains("damaged"), "{}", text(&o));

            // check and status judge on the newest readable verified snapshot.
            let c = json_ok(&e, &["check", "--max-age", "1d", &e.pf]);
            let c = first(&c);
            assert_eq!(c["newest_verified"], s1.as_str(), "{how:?}: {c}");
            let st = json_ok(&e, &["status", &e.pf]);
            let st = first(&st);
            assert_eq!(st["newest_verified"], s1.as_str(), "{how:?}: {st}");
            assert_eq!(st["damaged"], serde_json::json!([s2]), "{how:?}: {st}");
            assert!(st["error"].is_null(), "{how:?}: {st}");
            let o = bp(&e, &["-q", "status", &e.pf]);
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("DAMAGED"),
                "{}",
                text(&o)
            );

            // Retention: the damaged snapshot neither counts for keep_last nor goes; prune
            // deletes nothing and says why.
            let f = json_ok(&e, &["forget", "--dry-run", &e.pf]);
            let d2 = f["decisions"]
                .as_array()
                .expect("decisions")
                .iter()
                .find(|d| d["id"] == s2.as_str())
                .expect("decision for the damaged snapshot")
                .clone();
            assert_eq!(d2["keep"], true, "{f}");
            assert_eq!(d2["reasons"][0]["rule"], "damaged", "{f}");
            assert!(
                !f["forgotten"]
                    .as_array()
                    .expect("forgotten")
                    .iter()
                    .any(|x| x == s1.as_str()),
                "keep_last = 1 must keep the newest readable snapshot: {f}"
            );
            let o = bp(&e, &["-q", "prune", "--dry-run", &e.pf]);
            assert_ne!(o.status.code(), Some(0), "{}", text(&o));
            assert!(text(&o).contains("damaged"), "{}", text(&o));

            // Backups still run: incremental against the newest readable, and --full.
            std::fs::write(e.src.join("a.txt"), b"version 3\n").expect("write");
            let r = json_ok(&e, &["backup", &e.pf]);
            assert_eq!(r["status"], "ok", "{how:?}: {r}");
            assert_eq!(r["kind"], "incremental", "{r}");
            assert_eq!(r["parent"], s1.as_str(), "{r}");
            assert_eq!(r["skipped_damaged"], serde_json::json!([s2]), "{r}");
            let o = bp(&e, &["-q", "backup", &e.pf]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            let r = json_ok(&e, &["backup", "--full", &e.pf]);
            assert_eq!(r["status"], "ok", "{how:?}: {r}");
            assert_eq!(r["kind"], "full", "{r}");
            let to3 = e.dir.join("restored3");
            let o = bp(
                &e,
                &["-q", "restore", &e.pf, "--to", to3.to_str().expect("utf-8")],
            );
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            assert_eq!(
                std::fs::read(to3.join("a.txt")).expect("restored"),
                b"version 3\n"
            );
        }
    }

    /// An old manifest damaged: listing, check, status, backup and restore all go on.
    #[test]
    fn damaged_old_manifest_does_not_stop_listing_check_status_or_backup() {
        for how in [Damage::Empty, Damage::Truncated] {
            let e = setup("dmgold");
            let s1 = backup(&e, 1);
            let _s2 = backup(&e, 2);
            let s3 = backup(&e, 3);
            damage(&e, &s1, how);

            let list = json_ok(&e, &["snapshots", &e.pf]);
            assert_eq!(list.as_array().expect("list").len(), 3, "{list}");
            assert!(
                snapshot(&list, &s1)["damaged"].is_string(),
                "{how:?}: {list}"
            );
            assert!(snapshot(&list, &s3)["damaged"].is_null(), "{how:?}: {list}");
            let c = json_ok(&e, &["check", "--max-age", "1d", &e.pf]);
            let c = first(&c);
            assert_eq!(c["newest_verified"], s3.as_str(), "{how:?}: {c}");
            assert_eq!(c["stale"], false, "{c}");
            let st = json_ok(&e, &["status", &e.pf]);
            let st = first(&st);
            assert!(st["error"].is_null(), "{how:?}: {st}");
            assert_eq!(st["damaged"], serde_json::json!([s1]), "{st}");
            assert_eq!(st["newest_verified"], s3.as_str(), "{st}");
            let r = json_ok(&e, &["backup", &e.pf]);
            assert_eq!(r["status"], "ok", "{r}");
            assert_eq!(r["parent"], s3.as_str(), "{r}");
            assert_eq!(r["skipped_damaged"], serde_json::json!([]), "{r}");
            let to = e.dir.join("restored");
            let o = bp(
                &e,
                &["-q", "restore", &e.pf, "--to", to.to_str().expect("utf-8")],
            );
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            assert!(
                !String::from_utf8_lossy(&o.stderr).contains("skipped damaged"),
                "the newest is readable: nothing to skip: {}",
                text(&o)
            );
        }
    }

    /// Left open by issue 10: `ls` and `--at` failed (exit 3) on a damaged newest
    /// snapshot while `restore latest` skipped it. Commands that read a snapshot's
    /// contents now all skip it (and name it on stderr); `verify`, whose job is to find
    /// damage, still fails on it; with every snapshot damaged, `ls` says so.
    #[test]
    fn ls_and_at_skip_a_damaged_newest_and_verify_still_fails_on_it() {
        let e = setup("dmgls");
        let s1 = backup(&e, 1);
        let s2 = backup(&e, 2);
        damage(&e, &s2, Damage::Truncated);

        let o = bp(&e, &["-q", "ls", &e.pf]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("a.txt"),
            "{}",
            text(&o)
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(&s2),
            "{}",
            text(&o)
        );

        let now = chrono::Utc::now().to_rfc3339();
        let o = bp(&e, &["-q", "ls", &e.pf, "--at", &now]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let to = e.dir.join("at");
        let o = bp(
            &e,
            &[
                "-q",
                "restore",
                &e.pf,
                "--at",
                &now,
                "--to",
                to.to_str().expect("utf-8"),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(&s2),
            "{}",
            text(&o)
        );
        assert_eq!(
            std::fs::read(to.join("a.txt")).expect("restored"),
            b"version 1\n"
        );

        // verify latest is about the newest snapshot: it fails, naming it.
        let o = bp(&e, &["-q", "verify", &e.pf]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(text(&o).contains(&s2), "{}", text(&o));

        // Nothing readable at all: a clear integrity error naming both.
        damage(&e, &s1, Damage::Empty);
        let o = bp(&e, &["-q", "ls", &e.pf]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(text(&o).contains("all 2 are damaged"), "{}", text(&o));
        assert!(
            text(&o).contains(&s1) && text(&o).contains(&s2),
            "{}",
            text(&o)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Issue 10, items 9 and 10: damage in one frame of a pack of many small files.
// ---------------------------------------------------------------------------------------

/// A store holding one pack of several hundred small files in many small frames, with
/// one byte flipped in the middle of its middle frame.
#[allow(dead_code)]
mod damaged_frame {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    use blobpipe::manifest::catalog;
    use blobpipe::manifest::layout::Layout;
    use blobpipe::manifest::{EntryKind, Manifest, PackRecord};

    use super::common::*;

    pub const FILES: usize = 400;

    pub fn bp(args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_blobpipe"))
            .args(args)
            .env("RUST_LOG", "error")
            .output()
            .expect("run blobpipe")
    }

    pub struct Damaged {
        pub t: tempfile::TempDir,
        pub src: PathBuf,
        pub pipeline: PathBuf,
        pub manifest: Manifest,
        pub pack: PackRecord,
        /// Files whose data overlaps the damaged frame (exactly the ones affected).
        pub hit: BTreeSet<String>,
        /// Files of the snapshot.
        pub all: BTreeSet<String>,
    }

    pub async fn damaged() -> Damaged {
        let t = tempfile::tempdir().expect("tmp");
        let src = t.path().join("src");
        for i in 0..FILES {
            let p = src.join(format!("d{}/f{i:04}.bin", i % 7));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, noise(300 + (i * 37) % 900, i as u64 + 1)).expect("write");
        }
        let store = t.path().join("store");
        let pipeline = write_pipeline(
            t.path(),
            "dmg",
            &src,
            &format!("file://{}", store.display()),
            "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"64KiB\"\npack_size = \"64MiB\"\n[partitions]\nsize = \"1TiB\"\n[verify]\nafter_backup = false\n",
        );
        let o = bp(&["backup", pipeline.to_str().expect("utf-8")]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (p, s) = open(&pipeline).await;
        let layout = Layout::new(&p.target.prefix);
        let id = catalog::resolve(&*s, &layout, "latest")
            .await
            .expect("latest");
        let manifest = catalog::load(&*s, &layout, &id).await.expect("manifest");
        let pack = manifest
            .packs
            .iter()
            .max_by_key(|p| p.frames.len())
            .expect("a pack")
            .clone();
        assert!(pack.frames.len() >= 5, "frames: {}", pack.frames.len());
        let k = pack.frames.len() / 2;
        let raw = pack.frames_raw_range(k, k);
        let comp = pack.frames_comp_range(k, k);
        let hit: BTreeSet<String> = manifest
            .entries
            .iter()
            .filter(|e| {
                e.kind == EntryKind::File
                    && e.pack.as_deref() == Some(pack.id.as_str())
                    && e.size > 0
                    && e.data_offset < raw.end
                    && e.data_offset + e.size > raw.start
            })
            .map(|e| e.path.display())
            .collect();
        assert!(
            !hit.is_empty() && hit.len() < 100,
            "{} files in frame {k}",
            hit.len()
        );
        let all = manifest
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.path.display())
            .collect();
        let blob = store
            .join(&p.target.container)
            .join(layout.full(&pack.blob));
        flip(&blob, (comp.start + comp.end) / 2);
        Damaged {
            t,
            src,
            pipeline,
            manifest,
            pack,
            hit,
            all,
        }
    }

    pub fn flip(path: &Path, at: u64) {
        let mut b = std::fs::read(path).expect("pack on disk");
        b[at as usize] ^= 0x5a;
        std::fs::write(path, b).expect("write pack");
    }
}

mod item_9 {
    //! `decompress` findings named the pack's first 100 entries, not the files whose data
    //! is in the frame that does not decompress.
    use std::collections::BTreeSet;

    use super::damaged_frame::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decompress_finding_names_exactly_the_files_of_the_damaged_frame() {
        let d = damaged().await;
        let o = bp(&[
            "--json",
            "verify",
            d.pipeline.to_str().expect("utf-8"),
            "latest",
            "--full",
        ]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        let mm = r["mismatches"].as_array().expect("mismatches");
        let dec: Vec<&serde_json::Value> =
            mm.iter().filter(|m| m["check"] == "decompress").collect();
        assert_eq!(dec.len(), 1, "one frame is damaged: {mm:#?}");
        let named: BTreeSet<String> = dec[0]["paths"]
            .as_array()
            .expect("paths")
            .iter()
            .map(|p| p.as_str().expect("str").to_string())
            .collect();
        assert_eq!(named, d.hit, "{:#}", dec[0]);
        assert_eq!(dec[0]["paths_total"], d.hit.len());
        assert_eq!(dec[0]["pack"], d.pack.id.as_str());
        // The other files of the pack were still read and hashed: nothing else is named.
        for m in mm {
            if m["check"] == "entry-sha256" {
                panic!("an intact file was reported: {m:#}");
            }
        }
        assert_eq!(
            r["entries_checked"].as_u64(),
            Some((d.all.len() - d.hit.len()) as u64),
            "every file outside the damaged frame is checked"
        );
    }
}

mod item_10 {
    //! Restore stopped at the first damaged file; now it restores everything intact,
    //! lists the damaged files and exits 3 (docs/exit-codes.md: mismatch).
    use std::collections::BTreeSet;

    use super::damaged_frame::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restore_writes_every_intact_file_and_lists_the_damaged_ones() {
        let d = damaged().await;
        let to = d.t.path().join("out");
        let o = bp(&[
            "--json",
            "restore",
            d.pipeline.to_str().expect("utf-8"),
            "latest",
            "--to",
            to.to_str().expect("utf-8"),
        ]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        for path in &d.all {
            let got = to.join(path);
            if d.hit.contains(path) {
                assert!(!got.exists(), "damaged {path} was written");
            } else {
                assert_eq!(
                    std::fs::read(&got).unwrap_or_else(|e| panic!("{path} not restored: {e}")),
                    std::fs::read(d.src.join(path)).expect("source"),
                    "{path}"
                );
            }
        }
        // The report lists exactly the damaged files.
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        let listed: BTreeSet<String> = r["damaged"]
            .as_array()
            .expect("damaged")
            .iter()
            .map(|x| x["path"].as_str().expect("path").to_string())
            .collect();
        assert_eq!(listed, d.hit);
        assert_eq!(r["damaged_total"], d.hit.len());
        assert_eq!(r["files"], d.all.len() - d.hit.len());

        // The text output names each damaged file too.
        let to2 = d.t.path().join("out2");
        let o = bp(&[
            "restore",
            d.pipeline.to_str().expect("utf-8"),
            "latest",
            "--to",
            to2.to_str().expect("utf-8"),
        ]);
        assert_eq!(o.status.code(), Some(3));
        let text = String::from_utf8_lossy(&o.stdout);
        for path in &d.hit {
            assert!(
                text.contains(&format!("DAMAGED {path} ")),
                "{path} missing in:\n{text}"
            );
        }
        assert!(
            text.contains(&format!("{} damaged files were not restored", d.hit.len())),
            "{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Issue 10, item 14: sampled verification costs what its fraction says.
// ---------------------------------------------------------------------------------------

mod item_14 {
    use std::sync::atomic::Ordering;

    use blobpipe::manifest::catalog;
    use blobpipe::manifest::layout::Layout;
    use blobpipe::manifest::Manifest;
    use blobpipe::pipeline::Pipeline;
    use blobpipe::store::memory::MemoryStore;
    use blobpipe::store::Store;
    use blobpipe::verify::config::VerifyMode;
    use blobpipe::verify::verify;

    use super::common::*;

    const BLOCK: u64 = 256 << 10;

    struct Fixture {
        _t: tempfile::TempDir,
        p: Pipeline,
        s: Store,
        mem: MemoryStore,
        layout: Layout,
        m: Manifest,
    }

    /// 16 MB of incompressible files in 2 MiB packs of 256 KiB blocks and 64 KiB frames,
    /// plus a directory of small files.
    async fn fixture() -> Fixture {
        let t = tempfile::tempdir().expect("tmp");
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("small")).expect("mkdir");
        for i in 0..16u64 {
            std::fs::write(src.join(format!("big-{i:02}.bin")), noise(1_000_000, i + 1))
                .expect("write");
        }
        for i in 0..200u64 {
            std::fs::write(
                src.join(format!("small/s{i:03}.txt")),
                noise(500 + (i as usize * 13) % 3000, 1000 + i),
            )
            .expect("write");
        }
        let name = unique("cost");
        let pf = write_pipeline(
            t.path(),
            "cost",
            &src,
            &format!("memory://{name}"),
            "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"256KiB\"\npack_size = \"2MiB\"\n[verify]\nafter_backup = false\n",
        );
        let (p, s) = open(&pf).await;
        let r = backup(&p, &s).await;
        let layout = Layout::new(&p.target.prefix);
        let m = catalog::load(&*s, &layout, r.snapshot.as_deref().expect("snapshot"))
            .await
            .expect("manifest");
        let mem = MemoryStore::shared(&format!("{name}/{}", p.target.container));
        Fixture {
            _t: t,
            p,
            s,
            mem,
            layout,
            m,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ten_percent_sample_reads_about_ten_percent() {
        let f = fixture().await;
        let blocks: usize = f.m.packs.iter().map(|p| p.blocks.len()).sum();
        assert!(blocks >= 50, "{blocks} blocks");
        let stored: u64 = f.m.packs.iter().map(|p| p.size).sum();
        // Largest compressed frame: a sampled span reads at most one frame's overhang at
        // each end.
        let frame_max =
            f.m.packs
                .iter()
                .flat_map(|p| (0..p.frames.len()).map(|k| p.frames_comp_range(k, k)))
                .map(|r| r.end - r.start)
                .max()
                .expect("frames");
        for seed in [1u64, 2, 3, 4, 5] {
            let before = f.mem.counts.bytes_read.load(Ordering::Relaxed);
            let v = verify(
                &f.s,
                &f.layout,
                &f.m,
                VerifyMode::Sample(0.10),
                Some(seed),
                &f.p.upload,
                None,
            )
            .await
            .expect("verify");
            let counted = f.mem.counts.bytes_read.load(Ordering::Relaxed) - before;
            assert!(v.ok(), "{:?}", v.mismatches);
            assert_eq!(v.bytes_read, counted, "the report counts what was read");
            assert_eq!(v.bytes_stored, stored);
            // Every pack is touched.
            assert!(v.blocks_checked >= f.m.packs.len() as u64, "{v:?}");
            let spans = v.blocks_checked;
            let bound = stored / 10 + f.m.packs.len() as u64 * BLOCK + spans * 2 * frame_max;
            assert!(
                counted <= bound,
                "seed {seed}: read {counted} of {stored} stored; bound {bound} ({} packs, {} blocks checked)",
                f.m.packs.len(),
                v.blocks_checked
            );
            // And well under what a full verify reads.
            assert!(
                counted * 3 < stored,
                "seed {seed}: read {counted} of {stored}"
            );
        }
        // Full still reads everything, exactly once.
        let before = f.mem.counts.bytes_read.load(Ordering::Relaxed);
        let v = verify(
            &f.s,
            &f.layout,
            &f.m,
            VerifyMode::Full,
            Some(1),
            &f.p.upload,
            None,
        )
        .await
        .expect("verify");
        assert!(v.ok(), "{:?}", v.mismatches);
        assert_eq!(v.bytes_read, stored);
        assert_eq!(
            f.mem.counts.bytes_read.load(Ordering::Relaxed) - before,
            stored
        );
    }

    /// The catch rate of `--sample 10%` for one flipped byte (docs/verify.md records the
    /// measured figure). Run with
    /// `cargo nextest run -E 'binary(regression)' --run-ignored only catch_rate`
    /// (`CATCH_TRIALS` sets the number of trials, default 200).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, not a check: run by hand to update docs/verify.md"]
    async fn catch_rate_of_one_flipped_byte_at_ten_percent() {
        let f = fixture().await;
        let trials: u64 = std::env::var("CATCH_TRIALS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let mut rng = 0x5eed_1234_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut caught, mut read) = (0u64, 0u64);
        for trial in 0..trials {
            let p = &f.m.packs[(next() % f.m.packs.len() as u64) as usize];
            let at = (next() % p.size) as usize;
            let blob = f.layout.full(&p.blob);
            f.mem.corrupt(&blob, at);
            let v = verify(
                &f.s,
                &f.layout,
                &f.m,
                VerifyMode::Sample(0.10),
                Some(trial + 1),
                &f.p.upload,
                None,
            )
            .await
            .expect("verify");
            f.mem.corrupt(&blob, at); // flip it back
            caught += u64::from(!v.ok());
            read += v.bytes_read;
        }
        let stored: u64 = f.m.packs.iter().map(|p| p.size).sum();
        eprintln!(
            "catch rate at 10%: {caught}/{trials} = {:.1}%; mean read {:.1}% of {stored} stored bytes ({} packs)",
            caught as f64 * 100.0 / trials as f64,
            read as f64 * 100.0 / (trials * stored) as f64,
            f.m.packs.len()
        );
        assert!(caught > 0, "a 10% sample never caught a flipped byte");
    }
}

/// Issue 10 item 3: a committed run whose post-commit verification cannot complete
/// reported `failed, snapshot: null` and exit 1 although `snapshots` listed the
/// snapshot; a rerun of its run id then said `ok` with `verify: null`.
mod item_3 {
    use super::*;
    use blobpipe::cli::exit;
    use blobpipe::manifest::catalog;
    use blobpipe::manifest::layout::Layout;
    use blobpipe::manifest::records::{RunRecord, RunStatus, VerifyStatus};
    use blobpipe::pipeline::BackupOptions;
    use blobpipe::store::memory::MemoryStore;
    use common::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_that_cannot_complete_reports_the_committed_snapshot_and_a_rerun_verifies() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        sample_tree(&src);
        let name = unique("item3");
        let pf = write_pipeline(
            t.path(),
            "unverified",
            &src,
            &format!("memory://{name}"),
            "[verify]\nmode = \"full\"\n",
        );
        let (p, s) = open(&pf).await;
        let mem = MemoryStore::shared(&format!("{name}/{}", p.target.container));
        let layout = Layout::new(&p.target.prefix);
        // Every read of a pack fails (as a store failing beyond its retries would):
        // planning, packing and the commit never read packs, verification must.
        mem.fail_reads_containing(Some("/packs/"));
        let opts = || BackupOptions {
            run_id: Some("run-unverified".into()),
            ..Default::default()
        };
        let r = blobpipe::pipeline::backup(&p, s.clone(), opts())
            .await
            .expect("a committed run is not an error");
        assert_eq!(r.status, RunStatus::CommittedUnverified, "{r:?}");
        let snap = r
            .snapshot
            .clone()
            .expect("the committed snapshot is reported");
        assert!(r.verify.is_none(), "{r:?}");
        let err = r.error.clone().unwrap_or_default();
        assert!(err.contains("verification could not complete"), "{err}");
        assert!(err.contains("injected fault reading"), "{err}");
        // Its own exit code, distinct from "nothing committed" and from ok.
        let code = exit::for_run(r.status);
        assert_eq!(code, exit::UNVERIFIED);
        assert!(![exit::OK, exit::FAILED, exit::PARTIAL, exit::MISMATCH].contains(&code));

        // The run record says the same; the snapshot is listed, unverified.
        let records = blobpipe::store::list_all(&*s, &layout.run_records("run-unverified"))
            .await
            .unwrap();
        assert_eq!(records.len(), 1, "{records:?}");
        let rec: RunRecord =
            serde_json::from_slice(&s.get(&records[0].name, None).await.unwrap()).unwrap();
        assert_eq!(rec.status, Some(RunStatus::CommittedUnverified));
        assert_eq!(rec.snapshot.as_deref(), Some(snap.as_str()));
        let list = catalog::list(&*s, &layout).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, snap);
        assert_eq!(list[0].verify_status, VerifyStatus::Unverified);

        // The store recovers; the rerun of the run id verifies the same snapshot.
        mem.fail_reads_containing(None);
        let again = blobpipe::pipeline::backup(&p, s.clone(), opts())
            .await
            .expect("rerun");
        assert_eq!(again.status, RunStatus::Ok, "{again:?}");
        assert_eq!(again.snapshot.as_deref(), Some(snap.as_str()));
        let v = again.verify.as_ref().expect("the rerun verified");
        assert!(v.ok(), "{:?}", v.mismatches);
        assert_eq!(v.mode, "full");
        assert!(v.entries_checked > 0, "{v:?}");
        let list = catalog::list(&*s, &layout).await.unwrap();
        assert_eq!(list.len(), 1, "the rerun committed no second snapshot");
        assert_eq!(list[0].verify_status, VerifyStatus::Ok);
    }

    /// kill -9 while the post-commit verification runs: the rerun with the same run id
    /// verifies the snapshot and says so (it used to exit 0 with `verify: null`).
    #[test]
    fn kill_9_during_post_commit_verify_then_rerun_verifies() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        slow_source(&src, 3);
        let store = t.path().join("store");
        let pf = write_pipeline(
            t.path(),
            "killverify",
            &src,
            &format!("file://{}", store.display()),
            "[compression]\nlevel = 1\n[upload]\nblock_size = \"64KiB\"\n[verify]\nmode = \"full\"\n[lock]\nttl = \"15s\"\n",
        );
        let pfs = pf.to_str().unwrap();
        let snapshots = store.join("backups/killverify/snapshots");
        let reports = store.join("backups/killverify/verify");
        let mut child = bin()
            .args(["backup", pfs, "--quiet", "--run-id", "exec-v"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill the moment the manifest is there: the verification is under way.
        let mut committed = false;
        loop {
            if !manifests(&snapshots).is_empty() {
                committed = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(committed, "the backup ended before it committed");
        let snaps = manifests(&snapshots);
        assert_eq!(snaps.len(), 1, "{snaps:?}");
        let killed_during_verify = files_in(&reports).is_empty();
        eprintln!("killed during the verification: {killed_during_verify}");

        // The rerun (waiting out the killed holder's lease) verifies that snapshot.
        let o = bin()
            .args(["--json", "backup", pfs, "--run-id", "exec-v", "--wait-lock"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        let r = json(&o);
        assert_eq!(r["status"], "ok", "{r}");
        let snap = r["snapshot"].as_str().expect("snapshot").to_string();
        assert!(snaps[0].contains(&snap), "{snap} vs {snaps:?}");
        assert!(r["verify"].is_object(), "the rerun did not verify: {r}");
        assert_eq!(r["verify"]["snapshot"], snap.as_str(), "{r}");
        assert_eq!(r["verify"]["mode"], "full", "{r}");
        assert_eq!(r["verify"]["mismatches"].as_array().map(Vec::len), Some(0));
        assert_eq!(manifests(&snapshots), snaps, "no second snapshot");
        let o = bin().args(["--json", "snapshots", pfs]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        let list = json(&o);
        let list = list.as_array().expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["verify_status"], "ok", "{list:?}");
    }
}

/// Issue 10 items 3 and 4 through the CLI on Azure: pack reads fail after the commit
/// (a fault proxy in front of Azurite). The run exits 10 naming its snapshot, and the
/// process shuts down without a tokio panic ("A Tokio 1.x context was found, but it is
/// being shutdown" from a verify reader that outlived the runtime).
mod item_4 {
    use super::*;
    use std::sync::Arc;
    use support::faultproxy::{Fault, FaultConfig, FaultProxy, Filter, Seen};

    fn upstream(ep: &str) -> std::net::SocketAddr {
        ep.trim_start_matches("http://")
            .split('/')
            .next()
            .expect("host")
            .parse()
            .expect("addr")
    }

    async fn run(args: Vec<String>) -> Output {
        tokio::task::spawn_blocking(move || bin().args(&args).output().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_post_commit_verify_exits_10_and_shuts_down_cleanly() {
        let Some(ep) = support::azurite() else { return };
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        common::sample_tree(&src);
        for i in 0..6u64 {
            std::fs::write(src.join(format!("n{i}.bin")), common::noise(400_000, i + 7)).unwrap();
        }
        let proxy = FaultProxy::start(upstream(&ep), FaultConfig::none())
            .await
            .expect("proxy");
        let container = support::unique_container("unverified");
        let extra = "[upload]\nblock_size = \"64KiB\"\npack_size = \"1MiB\"\n[partitions]\nsize = \"64KiB\"\n[verify]\nmode = \"full\"\n[retry]\nattempts = 4\ninitial_backoff = \"10ms\"\nmax_backoff = \"2s\"\nbudget = \"30s\"\n";
        let pf = common::write_pipeline(
            t.path(),
            "unv",
            &src,
            &format!("{}/{container}", proxy.endpoint("devstoreaccount1")),
            extra,
        );
        let pfs = pf.to_str().unwrap().to_string();
        // Reads of pack data fail: refused outright (403) or busy (503, Retry-After 1 s)
        // on every try, so while one pack's verification has failed others are still
        // retrying. Properties and block lists (packing, metadata checks) pass.
        let pack_reads: Filter = Arc::new(|s: &Seen| {
            s.method == "GET" && s.path.contains("/packs/") && s.comp.is_none()
        });
        proxy.set_filter(Some(pack_reads));
        proxy.set(FaultConfig {
            rate: 1.0,
            seed: 3,
            kinds: vec![Fault::Forbidden403, Fault::Busy503],
            stall: std::time::Duration::from_secs(1),
        });
        let backup = |extra: &[&str]| {
            let mut a: Vec<String> = ["--json", "backup", &pfs, "--run-id", "run-unv"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let o = run(backup(&[])).await;
        let stderr = text(&o.stderr);
        assert!(
            proxy.stats.seen().iter().any(|s| s.faulted),
            "no pack read was faulted"
        );
        assert_eq!(o.status.code(), Some(10), "{stderr}");
        let r = json(&o);
        assert_eq!(r["status"], "committed_unverified", "{r}");
        let snap = r["snapshot"].as_str().expect("snapshot named").to_string();
        assert!(r["verify"].is_null(), "{r}");
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("verification could not complete")),
            "{r}"
        );
        // Item 4: no panic at shutdown.
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("Tokio"), "{stderr}");

        // The store recovers: the rerun verifies the same snapshot and exits 0.
        proxy.set(FaultConfig::none());
        let o = run(backup(&[])).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let r = json(&o);
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["snapshot"], snap.as_str(), "{r}");
        assert_eq!(r["verify"]["mode"], "full", "{r}");
        assert!(!text(&o.stderr).contains("panicked"));
    }
}

/// Issue 10 item 5: on Azure, a refused run named the previous, finished run instead of
/// the live holder when it came between the live holder taking the lease and recording
/// its name (seconds, when that write is retried).
mod item_5 {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use blobpipe::manifest::layout::Layout;
    use blobpipe::manifest::lock::RunLock;
    use blobpipe::pipeline::BackupOptions;
    use blobpipe::support::cancel::Cancel;
    use blobpipe::ErrorKind;
    use support::faultproxy::{Fault, FaultConfig, FaultProxy, Filter, Seen};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_run_names_the_live_holder_not_the_finished_one() {
        let Some(ep) = support::azurite() else { return };
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.txt"), b"a").unwrap();
        let container = support::unique_container("holder");
        let upstream: std::net::SocketAddr = ep
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let proxy = FaultProxy::start(upstream, FaultConfig::none())
            .await
            .expect("proxy");
        let direct = t.path().join("direct");
        let proxied = t.path().join("proxied");
        std::fs::create_dir_all(&direct).unwrap();
        std::fs::create_dir_all(&proxied).unwrap();
        let pd = common::write_pipeline(&direct, "lk", &src, &format!("{ep}/{container}"), "");
        let pp = common::write_pipeline(
            &proxied,
            "lk",
            &src,
            &format!("{}/{container}", proxy.endpoint("devstoreaccount1")),
            "",
        );
        let (p, s) = common::open(&pd).await;
        let (_, ps) = common::open(&pp).await;
        let layout = Layout::new(&p.target.prefix);

        // Run A finishes and releases the lock.
        let a = blobpipe::pipeline::backup(
            &p,
            s.clone(),
            BackupOptions {
                run_id: Some("run-a-finished".into()),
                ..Default::default()
            },
        )
        .await
        .expect("run A");
        assert!(a.snapshot.is_some());

        // Run B takes the lock through the proxy, which stalls B's first write of its
        // name (the second plain PUT of the lock blob; the first is the create-only PUT).
        let lock_puts = Arc::new(AtomicUsize::new(0));
        let n = lock_puts.clone();
        let stall_name: Filter = Arc::new(move |x: &Seen| {
            x.method == "PUT"
                && x.path.ends_with("/lock")
                && x.comp.is_none()
                && n.fetch_add(1, Ordering::SeqCst) == 1
        });
        proxy.set_filter(Some(stall_name));
        proxy.set(FaultConfig {
            rate: 1.0,
            seed: 1,
            kinds: vec![Fault::Stall],
            stall: Duration::from_secs(2),
        });
        let b = tokio::spawn({
            let (ps, layout) = (ps.clone(), layout.clone());
            async move {
                RunLock::acquire(
                    ps,
                    &layout,
                    "run-b-live",
                    Duration::from_secs(15),
                    false,
                    &Cancel::new(),
                )
                .await
            }
        });
        // Wait until B holds the lease and its name write is stalled.
        while !proxy.stats.seen().iter().any(|x| x.faulted) {
            assert!(
                !b.is_finished(),
                "B ended before its name write was stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // Run C is refused and must name B.
        let e = blobpipe::pipeline::backup(
            &p,
            s.clone(),
            BackupOptions {
                run_id: Some("run-c".into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("B holds the lock");
        assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("run-b-live"), "{msg}");
        assert!(!msg.contains("run-a-finished"), "{msg}");

        let lock = b.await.unwrap().expect("B took the lock");
        lock.release().await;
        // Released: the next run starts at once.
        let d = blobpipe::pipeline::backup(&p, s.clone(), BackupOptions::default())
            .await
            .expect("lock free");
        assert!(d.snapshot.is_some());
    }
}

/// Issue 10 item 12: a source root that exists but cannot be listed (mode 000, as a
/// non-root user) committed an empty snapshot with exit 4 and the problem path "". It
/// is a failed run (exit 1), like a missing root.
mod item_12 {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn can_run_as_nobody() -> bool {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn unlistable_root_fails_the_run() {
        if !can_run_as_nobody() {
            eprintln!("SKIPPED: cannot run as nobody (setpriv --reuid=65534 failed)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("secret.txt"), b"x").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o000)).unwrap();
        let store = t.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
        let pf = common::write_pipeline(
            t.path(),
            "noperm",
            &src,
            &format!("file://{}", store.display()),
            "",
        );
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_blobpipe"))
            .args(["--json", "backup"])
            .arg(&pf)
            .env("RUST_LOG", "warn")
            .env("HOME", t.path())
            .output()
            .unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{stderr}\n{}", text(&o.stdout));
        assert!(stderr.contains("cannot list source root"), "{stderr}");
        assert!(stderr.contains(&src.display().to_string()), "{stderr}");
        let r = json(&o);
        assert_eq!(r["exit_code"], 1, "{r}");
        assert_eq!(r["kind"], "Source", "{r}");
        assert!(
            files_in(&store.join("backups/noperm/snapshots")).is_empty(),
            "a snapshot was committed"
        );
    }

    #[test]
    fn missing_root_fails_the_run_with_exit_1() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let src = t.path().join("does-not-exist");
        let pf = common::write_pipeline(
            t.path(),
            "missing",
            &src,
            &format!("file://{}", store.display()),
            "",
        );
        let o = bin().args(["--json", "backup"]).arg(&pf).output().unwrap();
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("cannot read source root"), "{stderr}");
        assert_eq!(json(&o)["exit_code"], 1);
        assert!(files_in(&store.join("backups/missing/snapshots")).is_empty());
    }
}

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
        /// The snapshot as backed up, with its entries inline: a format-2 manifest's
        /// segments are read and the manifest turned into format 1, which runs the same
        /// entry checks on load (so one crafted file exercises them all).
        pub fn manifest(&self) -> Manifest {
            let mut m = Manifest::from_bytes(&self.original).unwrap();
            let prefix_dir = self.manifest_file.parent().unwrap().parent().unwrap();
            for sg in std::mem::take(&mut m.segments) {
                let gz = std::fs::read(prefix_dir.join(&sg.blob)).unwrap();
                for l in blobpipe::manifest::decode(&gz).unwrap() {
                    if let blobpipe::manifest::Line::Entry(e) = l {
                        m.entries.push(e);
                    }
                }
            }
            m.header.format = 1;
            m
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

// ---------------------------------------------------------------------------------------
// Issue 14, output: a closed pipe is not a crash (`ls | head`, a backup whose stderr or
// stdout reader went away), and the run lock of a dead process on this host is released.
// ---------------------------------------------------------------------------------------
mod issue14_epipe {
    use std::io::Read;
    use std::process::Stdio;

    use super::common::*;
    use super::*;

    /// A local store holding one snapshot of `n` files; returns (tempdir, pipeline file).
    fn many_files(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().expect("tmp");
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        for i in 0..n {
            std::fs::write(
                src.join(format!("file-with-a-longish-name-{i:05}.txt")),
                b"x",
            )
            .expect("write");
        }
        let store = t.path().join("store");
        let pf = write_pipeline(
            t.path(),
            "epipe",
            &src,
            &format!("file://{}", store.display()),
            "",
        );
        let o = bin().args(["backup", "-q"]).arg(&pf).output().expect("run");
        assert!(o.status.success(), "backup: {}", text(&o.stderr));
        (t, pf)
    }

    #[test]
    fn ls_into_a_closed_pipe_stops_quietly_with_exit_0() {
        // 3000 lines of ~80 bytes: far more than a pipe buffer, so `ls` meets EPIPE.
        let (_t, pf) = many_files(3000);
        let mut child = bin()
            .args(["ls"])
            .arg(&pf)
            .arg("latest")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = child.stdout.take().expect("stdout");
        let mut first = [0u8; 64];
        out.read_exact(&mut first).expect("read the first bytes");
        drop(out); // what `head` does once it has its lines
        let o = child.wait_with_output().expect("wait");
        let err = text(&o.stderr);
        assert!(!err.contains("panicked"), "stderr: {err}");
        assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    }

    /// Run a backup of `pf` with stdout or stderr (or both) going to a pipe whose reader
    /// is already gone; then a second backup must not find the lock held.
    fn backup_with_closed(pf: &Path, close_stdout: bool, close_stderr: bool) {
        let mut c = bin();
        c.env("RUST_LOG", "info").arg("backup").arg(pf);
        c.stdout(if close_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        c.stderr(if close_stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().expect("spawn");
        drop(child.stdout.take());
        drop(child.stderr.take());
        let status = child.wait().expect("wait");
        assert_eq!(
            status.code(),
            Some(0),
            "backup with closed stdout={close_stdout} stderr={close_stderr}"
        );
        let o = bin()
            .args(["backup", "-q"])
            .arg(pf)
            .output()
            .expect("rerun");
        assert!(
            o.status.success(),
            "the next run must find the lock free: {}",
            text(&o.stderr)
        );
    }

    #[test]
    fn backup_with_a_closed_stderr_finishes_and_releases_its_lock() {
        let (_t, pf) = many_files(50);
        backup_with_closed(&pf, false, true);
    }

    #[test]
    fn backup_with_a_closed_stdout_finishes_and_releases_its_lock() {
        let (_t, pf) = many_files(50);
        backup_with_closed(&pf, true, false);
        backup_with_closed(&pf, true, true);
    }
}

mod issue14_lock {
    use std::process::Stdio;
    use std::time::Duration;

    use blobpipe::error::ErrorKind;
    use blobpipe::manifest::layout::Layout;
    use blobpipe::manifest::lock::RunLock;
    use blobpipe::store::memory::MemoryStore;
    use blobpipe::store::Store;
    use blobpipe::support::cancel::Cancel;

    use super::*;

    /// Any blob file under `dir` whose content mentions `needle` (not the lease files,
    /// which are written before the lock blob records its holder).
    fn mentions(dir: &Path, needle: &str) -> bool {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return false;
        };
        rd.flatten().any(|e| {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                false
            } else if p.is_dir() {
                mentions(&p, needle)
            } else {
                std::fs::read(&p).is_ok_and(|b| text(&b).contains(needle))
            }
        })
    }

    #[test]
    fn a_killed_holder_on_this_host_does_not_block_the_next_run() {
        let t = tempfile::tempdir().expect("tmp");
        let store = t.path().join("store");
        let stop = t.path().join("STOP");
        // Runs until STOP exists (and dies of SIGPIPE once its reader is killed).
        let pf = t.path().join("cmd.toml");
        std::fs::write(
            &pf,
            format!(
                "name = \"cmd\"\n[source]\ntype = \"command\"\nname = \"ticks\"\n\
                 command = [\"sh\", \"-c\", \"if [ -e {stop} ]; then echo done; else while sleep 0.2; do echo tick; done; fi\"]\n\
                 timeout = \"10m\"\n[target]\nurl = \"file://{store}\"\n",
                stop = stop.display(),
                store = store.display()
            ),
        )
        .expect("write pipeline");
        let mut holder = bin()
            .arg("backup")
            .arg(&pf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the holder");
        let pid = holder.id();
        let needle = format!("(pid {pid})");
        while !mentions(&store, &needle) {
            assert!(
                holder.try_wait().expect("try_wait").is_none(),
                "the holder exited before taking the lock"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A live holder on this host is respected.
        let o = bin().arg("backup").arg(&pf).output().expect("second run");
        assert_eq!(
            o.status.code(),
            Some(blobpipe::cli::exit::LOCKED),
            "stderr: {}",
            text(&o.stderr)
        );
        assert!(text(&o.stderr).contains(&needle), "{}", text(&o.stderr));
        // kill -9, reap: its lease (60 s) has not expired, but its pid is dead.
        holder.kill().expect("kill -9");
        holder.wait().expect("reap");
        std::fs::write(&stop, b"").expect("stop file");
        let o = bin().arg("backup").arg(&pf).output().expect("third run");
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "stderr: {err}");
        assert!(
            err.contains("released the run lock") && err.contains(&needle),
            "says whose lock it released: {err}"
        );
    }

    async fn take(store: &Store, layout: &Layout) -> blobpipe::error::Result<RunLock> {
        RunLock::acquire(
            store.clone(),
            layout,
            "run-b",
            Duration::from_secs(60),
            false,
            &Cancel::new(),
        )
        .await
    }

    #[tokio::test]
    async fn a_holder_on_another_host_or_alive_is_respected_a_dead_one_is_not() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .expect("hostname");
        let mut gone = Command::new("true").spawn().expect("spawn");
        let dead = gone.id();
        gone.wait().expect("reap");
        let layout = Layout::new("p");
        for (holder, free) in [
            (format!("run a on {host}-other (pid {dead}) since t"), false),
            (format!("run a on {host} (pid 1) since t"), false),
            (format!("run a on {host} (pid {dead}) since t"), true),
        ] {
            let store: Store = std::sync::Arc::new(MemoryStore::new(&unique_name()));
            store
                .acquire_lease(&layout.lock(), Duration::from_secs(60), &holder)
                .await
                .expect("first holder");
            let got = take(&store, &layout).await;
            match (free, got) {
                (true, Ok(l)) => l.release().await,
                (false, Err(e)) => assert_eq!(e.kind(), ErrorKind::Locked, "{holder}: {e}"),
                (true, Err(e)) => panic!("{holder}: a dead holder must be released: {e}"),
                (false, Ok(_)) => panic!("{holder}: a live or remote holder was broken"),
            }
        }
    }

    fn unique_name() -> String {
        super::common::unique("lock")
    }
}

mod issue14_logs {
    use super::common::*;
    use super::*;

    #[test]
    fn quiet_backup_to_a_pipe_logs_no_info_and_no_colour() {
        let t = tempfile::tempdir().expect("tmp");
        let src = t.path().join("src");
        slow_source(&src, 7);
        let store = t.path().join("store");
        let pf = write_pipeline(
            t.path(),
            "logs",
            &src,
            &format!("file://{}", store.display()),
            "",
        );
        for args in [&["backup", "-q"][..], &["backup"][..]] {
            let o = bin()
                .env_remove("RUST_LOG")
                .env_remove("NO_COLOR")
                .args(args)
                .arg(&pf)
                .output()
                .expect("run");
            let err = text(&o.stderr);
            assert!(o.status.success(), "{args:?}: {err}");
            assert!(!err.contains('\u{1b}'), "{args:?}: ESC on a pipe: {err:?}");
            if args.contains(&"-q") {
                assert!(!err.contains("INFO"), "-q logged INFO: {err}");
            } else {
                assert!(err.contains("INFO"), "no -q logs INFO: {err}");
            }
        }
    }
}

mod issue14_summary {
    use super::common::*;
    use super::*;

    #[test]
    fn the_summary_says_what_a_run_added_and_what_it_reused() {
        let t = tempfile::tempdir().expect("tmp");
        let src = t.path().join("src");
        slow_source(&src, 3);
        let store = t.path().join("store");
        let pf = write_pipeline(
            t.path(),
            "added",
            &src,
            &format!("file://{}", store.display()),
            "",
        );
        let first = json(
            &bin()
                .args(["--json", "backup"])
                .arg(&pf)
                .output()
                .expect("run"),
        );
        let stored = first["totals"]["stored_bytes"].as_u64().expect("stored");
        let packs = first["totals"]["packs"].as_u64().expect("packs");
        assert_eq!(
            first["new_stored_bytes"].as_u64(),
            Some(stored),
            "{first:#}"
        );
        assert_eq!(first["new_packs"].as_u64(), Some(packs));
        assert_eq!(first["reused_packs"].as_u64(), Some(0));
        assert_eq!(first["reused_stored_bytes"].as_u64(), Some(0));
        assert_eq!(first["bytes_read"], first["totals"]["bytes"]);

        std::fs::write(src.join("new.txt"), vec![b'n'; 12_345]).expect("write");
        let o = bin().arg("backup").arg(&pf).output().expect("run");
        assert!(
            text(&o.stdout).contains("added to the store:"),
            "{}",
            text(&o.stdout)
        );
        std::fs::write(src.join("newer.txt"), vec![b'm'; 1000]).expect("write");
        let third = json(
            &bin()
                .args(["--json", "backup"])
                .arg(&pf)
                .output()
                .expect("run"),
        );
        assert_eq!(third["kind"], "incremental", "{third:#}");
        assert_eq!(
            third["bytes_read"].as_u64(),
            Some(1000),
            "only the new file is read"
        );
        let new = third["new_stored_bytes"].as_u64().expect("new");
        let reused = third["reused_stored_bytes"].as_u64().expect("reused");
        assert!(new > 0 && reused >= stored, "new {new}, reused {reused}");
        assert_eq!(
            new + reused,
            third["totals"]["stored_bytes"].as_u64().expect("stored"),
            "new + reused = the snapshot's stored total"
        );
        assert_eq!(
            third["new_packs"].as_u64().expect("n") + third["reused_packs"].as_u64().expect("r"),
            third["totals"]["packs"].as_u64().expect("p")
        );
    }
}

mod issue14_progress_pty {
    use super::common::*;
    use super::*;

    /// Run `blobpipe ARGS` on a pseudo-terminal through util-linux `script`; `None` when
    /// `script` is not installed.
    fn on_a_tty(args: &str) -> Option<String> {
        let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_blobpipe"));
        let o = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .output()
            .ok()?;
        assert!(o.status.success(), "{cmd}: {}", text(&o.stdout));
        Some(text(&o.stdout))
    }

    #[test]
    fn a_terminal_gets_one_phased_progress_line_and_no_empty_bar() {
        let t = tempfile::tempdir().expect("tmp");
        let src = t.path().join("src");
        slow_source(&src, 11);
        let store = t.path().join("store");
        let pf = write_pipeline(
            t.path(),
            "pty",
            &src,
            &format!("file://{}", store.display()),
            "",
        );
        let Some(out) = on_a_tty(&format!("backup {}", pf.display())) else {
            eprintln!("skipped: util-linux `script` is not installed");
            return;
        };
        assert!(out.contains("status: Ok"), "{out}");
        assert!(
            ["planning", "uploading", "committing", "verifying"]
                .iter()
                .any(|p| out.contains(p)),
            "a phase is named: {out}"
        );
        assert!(!out.contains("0 B/0 B"), "no empty bar: {out}");
        assert!(
            !out.contains(" entries\n"),
            "no progress line is left behind: {out}"
        );
        let quiet = on_a_tty(&format!("backup -q {}", pf.display())).expect("script");
        assert!(quiet.contains("status: Ok"), "{quiet}");
        for p in ["planning", "uploading", "verifying", " INFO "] {
            assert!(!quiet.contains(p), "-q draws and logs no {p:?}: {quiet}");
        }
    }
}
