//! `blobpipe restore --to-db` as a user runs it: flags, per-table strategies, exit codes.

mod support;

use std::process::{Command, Output};

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

#[test]
fn usage_errors_exit_2() {
    let o = bp(&[
        "restore", "p.toml", "latest", "--table", "t", "--to", "/tmp/x",
    ]);
    assert_eq!(code(&o), 2, "--table needs --to-db");
    let o = bp(&["restore", "p.toml", "latest"]);
    assert_eq!(code(&o), 2, "--to or --to-db is required");
    let o = bp(&[
        "restore",
        "p.toml",
        "latest",
        "--to",
        "/tmp/x",
        "--to-db",
        "postgres://x/y",
    ]);
    assert_eq!(code(&o), 2, "--to and --to-db exclude each other");
}

#[test]
fn backup_then_restore_to_db_with_strategies() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (src, dst) = (
        support::unique_ident("clisrc"),
        support::unique_ident("clidst"),
    );
    let psql = |sql: &str| {
        let o = Command::new("psql")
            .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    for s in [&src, &dst] {
        psql(&format!(
            "CREATE SCHEMA {s}; CREATE TABLE {s}.kv (k text PRIMARY KEY, v int); CREATE TABLE {s}.n (id int PRIMARY KEY)"
        ));
    }
    psql(&format!(
        "INSERT INTO {src}.kv VALUES ('a', 1), ('b', 2); INSERT INTO {src}.n SELECT generate_series(1, 10);
         INSERT INTO {dst}.kv VALUES ('a', 100)"
    ));
    let t = tempfile::tempdir().unwrap();
    let pipeline = t.path().join("db.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"clidb\"\n[source]\ntype = \"postgres\"\nurl = \"{url}\"\nschemas = [\"{src}\"]\n[target]\nurl = \"file://{}\"\n",
            t.path().join("store").display()
        ),
    )
    .unwrap();
    let p = pipeline.to_str().unwrap();
    let o = bp(&["--json", "backup", p]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));

    // Default fail-if-not-empty: kv has a row → refused, exit 7, nothing written.
    let o = bp(&["restore", p, "latest", "--to-db", &url, "--schema", &dst]);
    assert_eq!(code(&o), 7, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fail-if-not-empty"));

    // Per-table override: kv skip-existing, n the default.
    let o = bp(&[
        "--json",
        "restore",
        p,
        "latest",
        "--to-db",
        &url,
        "--schema",
        &dst,
        "--strategy",
        "kv=skip-existing",
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tables = r["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2);
    let kv = tables
        .iter()
        .find(|t| t["table"].as_str().unwrap().ends_with(".kv"))
        .unwrap();
    assert_eq!(kv["strategy"], "skip-existing");
    assert_eq!(kv["rows_added"], 1);

    // Subset with --table and a global strategy.
    let o = bp(&[
        "restore",
        p,
        "latest",
        "--to-db",
        &url,
        "--schema",
        &dst,
        "--table",
        "n",
        "--strategy",
        "truncate",
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let o = bp(&["restore", p, "latest", "--to-db", &url, "--table", "nope"]);
    assert_eq!(code(&o), 6, "unknown table is not found");

    // --jobs and --fk-check: bad values are usage/config errors before anything is read,
    // and a bulk-checked restore on two connections reports them.
    for (args, want) in [
        (vec!["--jobs", "0"], 2),
        (vec!["--fk-check", "later"], 2),
        (vec!["--fk-check", "bulk", "--no-transaction"], 2),
    ] {
        let mut a = vec!["restore", p, "latest", "--to-db", &url, "--schema", &dst];
        a.extend(args.iter().copied());
        let o = bp(&a);
        assert_eq!(
            code(&o),
            want,
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(if args[0] == "--jobs" {
                "--jobs"
            } else {
                "--fk-check"
            }),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = bp(&[
        "--json",
        "restore",
        p,
        "latest",
        "--to-db",
        &url,
        "--schema",
        &dst,
        "--strategy",
        "truncate",
        "--jobs",
        "2",
        "--fk-check",
        "bulk",
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["fk_check"], "bulk");
    assert_eq!(r["connections"], 2, "kv and n are not linked: two groups");
    psql(&format!(
        "DROP SCHEMA {src} CASCADE; DROP SCHEMA {dst} CASCADE"
    ));
}

/// Issue 14: in a disaster the source database (and the variable holding its URL) is
/// gone; `snapshots`, `ls`, `verify` and `restore --to-db` read only the store and must not
/// demand it. `backup` and `validate` still do.
#[test]
fn dr_commands_run_without_the_source_url() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (src, dst) = (
        support::unique_ident("drsrc"),
        support::unique_ident("drdst"),
    );
    let psql = |sql: &str| {
        let o = Command::new("psql")
            .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    psql(&format!(
        "CREATE SCHEMA {src}; CREATE TABLE {src}.kv (k text PRIMARY KEY, v int);
         INSERT INTO {src}.kv VALUES ('a', 1), ('b', 2);
         CREATE SCHEMA {dst}; CREATE TABLE {dst}.kv (k text PRIMARY KEY, v int)"
    ));
    let t = tempfile::tempdir().unwrap();
    let pipeline = t.path().join("db.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"drdb\"\n[source]\ntype = \"postgres\"\nurl = \"${{BP_TEST_GONE_DB_URL}}\"\n\
             password = \"${{BP_TEST_GONE_DB_PW}}\"\nschemas = [\"${{BP_TEST_GONE_SCHEMA}}\"]\n\
             [target]\nurl = \"file://{}\"\n",
            t.path().join("store").display()
        ),
    )
    .unwrap();
    let p = pipeline.to_str().unwrap();
    let with_source = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_blobpipe"))
            .args(args)
            .env("RUST_LOG", "warn")
            .env("BP_TEST_GONE_DB_URL", &url)
            .env("BP_TEST_GONE_DB_PW", "unused")
            .env("BP_TEST_GONE_SCHEMA", &src)
            .output()
            .unwrap()
    };
    let o = with_source(&["backup", p]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));

    // The source is gone: its variables are unset.
    let o = bp(&["backup", p]);
    assert_eq!(code(&o), 2, "backup still needs the source");
    assert!(String::from_utf8_lossy(&o.stderr).contains("BP_TEST_GONE_DB_URL"));
    let o = bp(&["--json", "snapshots", p]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let o = bp(&["ls", p, "latest"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let o = bp(&["verify", p, "latest"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let o = bp(&[
        "--json", "restore", p, "latest", "--to-db", &url, "--schema", &dst,
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["tables"][0]["rows_added"], 2, "{r}");
    let o = Command::new("psql")
        .args([
            url.as_str(),
            "-Atc",
            &format!("SELECT string_agg(k || v, ',' ORDER BY k) FROM {dst}.kv"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "a1,b2");
    psql(&format!(
        "DROP SCHEMA {src} CASCADE; DROP SCHEMA {dst} CASCADE"
    ));
}

/// Issue 14: a restore's server NOTICEs (`… does not exist, skipping` from the staging
/// table's `DROP … IF EXISTS`) are debug detail, not INFO lines on every restore; and a
/// failing restore target is a `Destination` error in `--json`, not `Source`.
#[test]
fn restore_notices_are_debug_and_target_errors_are_destination() {
    let Some(url) = support::postgres() else {
        return;
    };
    let (src, dst) = (
        support::unique_ident("ntsrc"),
        support::unique_ident("ntdst"),
    );
    let psql = |sql: &str| {
        let o = Command::new("psql")
            .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    for s in [&src, &dst] {
        psql(&format!(
            "CREATE SCHEMA {s}; CREATE TABLE {s}.kv (k text PRIMARY KEY, v int)"
        ));
    }
    psql(&format!(
        "INSERT INTO {src}.kv VALUES ('a', 1); INSERT INTO {dst}.kv VALUES ('a', 1)"
    ));
    let t = tempfile::tempdir().unwrap();
    let pipeline = t.path().join("db.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"notice\"\n[source]\ntype = \"postgres\"\nurl = \"{url}\"\nschemas = [\"{src}\"]\n[target]\nurl = \"file://{}\"\n",
            t.path().join("store").display()
        ),
    )
    .unwrap();
    let p = pipeline.to_str().unwrap();
    let o = bp(&["backup", p]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    // Default log level (no RUST_LOG): INFO lines are printed, NOTICEs are not.
    let o = Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args([
            "restore",
            p,
            "latest",
            "--to-db",
            &url,
            "--schema",
            &dst,
            "--strategy",
            "skip-existing",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("skipping") && !err.contains("NOTICE"),
        "{err}"
    );
    // At debug they are there, for whoever wants them.
    let o = Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args([
            "restore",
            p,
            "latest",
            "--to-db",
            &url,
            "--schema",
            &dst,
            "--strategy",
            "skip-existing",
        ])
        .env("RUST_LOG", "blobpipe=debug")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("skipping"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A target database that does not exist: the destination failed, exit 1.
    let gone = format!(
        "{}/bp_no_such_db",
        url.rsplit_once('/').map_or(url.as_str(), |(a, _)| a)
    );
    let o = bp(&["--json", "restore", p, "latest", "--to-db", &gone]);
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["kind"], "Destination", "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("bp_no_such_db"),
        "{e}"
    );
    psql(&format!(
        "DROP SCHEMA {src} CASCADE; DROP SCHEMA {dst} CASCADE"
    ));
}
