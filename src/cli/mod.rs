//! The command line: arguments in, a report and an exit code out.
//!
//! Every command prints a human summary, or one JSON document with `--json`. Exit codes
//! are part of the interface (see `docs/exit-codes.md`):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the run failed (source, store or internal error); nothing committed |
//! | 2 | usage or pipeline-file error; nothing run |
//! | 3 | verification found a mismatch |
//! | 4 | partial: committed, but some source files could not be read (or kept changing) |
//! | 5 | another run holds the pipeline's lock |
//! | 6 | not found: no such snapshot or path |
//! | 7 | refused: restore would overwrite or escape its target |
//! | 8 | data is in the Archive tier and must be rehydrated first |
//! | 9 | stale: a pipeline's newest verified snapshot is older than allowed (`check`) |
//! | 130 | cancelled by a signal; resumable with the same `--run-id` |

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::catalog;
use crate::manifest::layout::Layout;
use crate::pipeline::{BackupOptions, Pipeline};
use crate::support::progress::Reporter;
use crate::support::units::{human, parse_fraction};
use crate::verify::config::VerifyMode;
use crate::{restore, store, verify};
use exit::exit_code;

pub mod exit;
pub mod ops;

/// blobpipe: backup pipelines into Azure Blob Storage, verified, restorable with standard tools.
#[derive(Debug, Parser)]
#[command(name = "blobpipe", version, about)]
pub struct Cli {
    /// Print one JSON document instead of a human summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// No progress bar or progress lines.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines (containers, Log Analytics).
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a pipeline file; point at the line and key of every problem.
    Validate {
        /// Pipeline file.
        pipeline: PathBuf,
    },
    /// Run a pipeline: extract → compress → upload → commit → verify.
    #[command(alias = "run")]
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots {
        /// Pipeline file.
        pipeline: PathBuf,
    },
    /// List the entries of a snapshot.
    Ls {
        /// Pipeline file.
        pipeline: PathBuf,
        /// Which snapshot.
        #[command(flatten)]
        sel: SnapshotSel,
        /// Gitignore-style globs selecting paths (repeatable).
        #[arg(long = "path")]
        globs: Vec<String>,
    },
    /// Paths added, changed and removed between two snapshots.
    Diff {
        /// Pipeline file.
        pipeline: PathBuf,
        /// The older snapshot (id, prefix or `latest`).
        from: String,
        /// The newer snapshot (id, prefix or `latest`).
        to: String,
    },
    /// Check that the store still holds a snapshot exactly.
    Verify(VerifyArgs),
    /// Restore a snapshot (or some paths) into a directory.
    Restore(RestoreArgs),
    /// Credentials: which one the chain picks for a pipeline's target, and what it can do.
    Auth {
        /// The auth command.
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Freshness (RPO) check: exit 9 and send `stale` alerts when a pipeline's newest
    /// verified snapshot is older than its `[freshness] rpo` (else `--max-age`).
    Check(ops::CheckArgs),
    /// Per pipeline: last run, newest verified snapshot and its age, stored bytes by
    /// tier, last verify, last restore drill and its measured restore time.
    Status {
        /// A pipeline file or a directory of them.
        pipelines: PathBuf,
    },
    /// Restore drill: restore the newest snapshot into a scratch directory, check every
    /// hash, record the measured restore time (RTO), alert on failure.
    Drill(ops::DrillArgs),
    /// Run every pipeline on its `[schedule] cron` (UTC) until SIGTERM/Ctrl-C.
    Schedule(ops::ScheduleArgs),
    /// Print the next scheduled run times.
    Next {
        /// A pipeline file or a directory of them.
        pipelines: PathBuf,
        /// How many times per pipeline.
        #[arg(long, default_value_t = 3)]
        count: usize,
    },
    /// Azure Functions custom handler: timer/HTTP invocations and Prometheus metrics.
    Serve(ops::ServeArgs),
    /// Run ONE handed-off run from the hand-off queue (what the queue-triggered Container
    /// Apps job runs): receive a message, run its pipeline with its run id, delete the
    /// message on success. Exit 0 when the queue is empty.
    RunQueued(ops::RunQueuedArgs),
    /// Azure Functions app files.
    Functions {
        /// The functions command.
        #[command(subcommand)]
        command: ops::FunctionsCommand,
    },
    /// Delete the snapshots `[retention]` does not keep (their manifests only; `prune`
    /// frees the packs). Prints which go and which rule keeps each survivor.
    Forget(RetentionArgs),
    /// Delete packs no remaining snapshot references (older than the grace period),
    /// finished runs' part records and forgotten snapshots' verify reports.
    Prune(RetentionArgs),
    /// Print the Azure Storage lifecycle management policy JSON for the pipelines'
    /// `[lifecycle]` tables (one rule each, packs only, never a delete action).
    Lifecycle {
        /// Pipeline files (one policy holds every pipeline of a storage account).
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
    },
}

/// `forget` / `prune` arguments.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Decide and print, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for a running backup to finish instead of failing.
    #[arg(long)]
    pub wait_lock: bool,
    /// Prune: keep unreferenced packs whose tier's early-deletion minimum (cool 30,
    /// cold 90, archive 180 days) has not passed, instead of deleting them early.
    #[arg(long)]
    pub defer_early_deletion: bool,
    /// Prune: grace period overriding `[retention] prune_grace` (e.g. "2d").
    #[arg(long)]
    pub grace: Option<String>,
}

/// `auth` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print the credential chosen for the pipeline's Azure target and whether it can
    /// list and write the container (a probe blob is written and deleted). Never prints
    /// a secret.
    Check {
        /// Pipeline file.
        pipeline: PathBuf,
    },
}

/// `backup` arguments.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Run id; pass an interrupted run's id to resume it. Defaults to
    /// `$CONTAINER_APP_JOB_EXECUTION_NAME` when set, else a fresh id.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Skip verification after commit.
    #[arg(long)]
    pub no_verify: bool,
    /// Wait for another run of the pipeline to finish instead of failing.
    #[arg(long)]
    pub wait_lock: bool,
    /// Read everything (a full backup), even if an incremental is possible.
    #[arg(long)]
    pub full: bool,
}

/// Which snapshot: an id, a unique id prefix, `latest`, or `--at TIME`.
#[derive(Debug, Args)]
pub struct SnapshotSel {
    /// Snapshot id, unique id prefix, or `latest` (default).
    pub snapshot: Option<String>,
    /// The newest snapshot taken at or before this time (RFC 3339, or 2026-11-20T00:00Z, UTC).
    #[arg(long, conflicts_with = "snapshot")]
    pub at: Option<String>,
}

impl SnapshotSel {
    async fn resolve(&self, store: &dyn store::BlobStore, layout: &Layout) -> Result<String> {
        match (&self.snapshot, &self.at) {
            (_, Some(at)) => catalog::resolve_at(store, layout, catalog::parse_time(at)?).await,
            (Some(s), None) => catalog::resolve(store, layout, s).await,
            (None, None) => catalog::resolve(store, layout, "latest").await,
        }
    }
}

/// `verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Which snapshot.
    #[command(flatten)]
    pub sel: SnapshotSel,
    /// Re-read this fraction of blocks and files ("10%" or 0.1).
    #[arg(long, conflicts_with_all = ["full", "metadata"])]
    pub sample: Option<String>,
    /// Re-read everything.
    #[arg(long, conflicts_with = "metadata")]
    pub full: bool,
    /// Check existence, sizes, block lists and Content-MD5 only.
    #[arg(long)]
    pub metadata: bool,
    /// Sampling seed (a report names the seed it used).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `restore` arguments.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Which snapshot.
    #[command(flatten)]
    pub sel: SnapshotSel,
    /// Target directory.
    #[arg(long, required_unless_present = "to_db", conflicts_with = "to_db")]
    pub to: Option<PathBuf>,
    /// Load the snapshot's tables into this database instead (`postgres://…`,
    /// `mysql://…`). The password may come from `${ENV}` in the URL, or from
    /// `PGPASSWORD` / `MYSQL_PWD` when the URL has none.
    #[arg(long, value_name = "URL")]
    pub to_db: Option<String>,
    /// With --to-db: restore only this table (`table` or `schema.table`; repeatable).
    #[arg(long = "table", value_name = "T", requires = "to_db")]
    pub tables: Vec<String>,
    /// With --to-db: `fail-if-not-empty` (default), `truncate`, `append` or
    /// `skip-existing`, for all tables, or `table=strategy` for one (repeatable).
    /// Overrides the pipeline's `[restore]` section.
    #[arg(long = "strategy", value_name = "[TABLE=]STRATEGY", requires = "to_db")]
    pub strategies: Vec<String>,
    /// With --to-db: load table by table without one enclosing transaction.
    #[arg(long, requires = "to_db")]
    pub no_transaction: bool,
    /// With --to-db: load every table into this schema (PostgreSQL) or database (MySQL).
    #[arg(long, value_name = "NAME", requires = "to_db")]
    pub schema: Option<String>,
    /// Restore only paths matching these gitignore-style globs (repeatable).
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// Replace existing files in the target.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the packs the restore needs, their tiers, and what must be rehydrated from
    /// Archive (packs, bytes, expected wait), without restoring anything.
    #[arg(long)]
    pub plan: bool,
    /// Rehydrate archived packs first (copies to Hot staging blobs), wait for them with
    /// progress, restore, then delete the copies. Rerun to resume an interrupted wait.
    #[arg(long, value_enum)]
    pub rehydrate: Option<RehydrateArg>,
    /// With --rehydrate: seconds between polls of pending rehydrations.
    #[arg(long, default_value_t = 60)]
    pub rehydrate_poll_secs: u64,
}

/// `--rehydrate` priorities.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RehydrateArg {
    /// Up to 15 hours, cheaper.
    Standard,
    /// Usually under 1 hour for packs under 10 GB, costs more.
    High,
}

fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce()) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: encoding JSON output: {e}"),
        }
    } else {
        human();
    }
}

async fn open(p: &Pipeline) -> Result<store::Store> {
    store::open(&p.target, &p.retry).await
}

/// Run a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> i32 {
    let json = cli.json;
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            let code = exit_code(&e);
            if json {
                let v = serde_json::json!({
                    "error": e.to_string(),
                    "kind": e.kind().as_str(),
                    "exit_code": code,
                });
                println!("{v:#}");
            }
            eprintln!("error: {e}");
            code
        }
    }
}

async fn dispatch(cli: Cli) -> Result<i32> {
    let json = cli.json;
    let quiet = cli.quiet || json;
    match cli.command {
        Command::Validate { pipeline } => {
            let p = Pipeline::load(&pipeline)?;
            let summary = serde_json::json!({
                "valid": true,
                "pipeline": p.name,
                "target": p.target.display_url,
                "container": p.target.container,
                "prefix": p.target.prefix,
                "codec": p.compression.codec,
                "level": p.compression.level,
                "partitions": p.partitions.count,
            });
            emit(json, &summary, || {
                println!(
                    "{}: ok — pipeline {:?} → {} container {} prefix {} ({} level {}, {} partitions)",
                    pipeline.display(),
                    p.name,
                    p.target.display_url,
                    p.target.container,
                    p.target.prefix,
                    p.compression.codec.as_str(),
                    p.compression.level,
                    p.partitions.count
                )
            });
            Ok(exit::OK)
        }
        Command::Backup(a) => {
            let p = Pipeline::load(&a.pipeline)?;
            let store = open(&p).await?;
            let cancel = crate::support::cancel::Cancel::new();
            cancel.on_signals();
            let reporter = Reporter::start("backup", quiet);
            let run_id = a.run_id.or_else(|| {
                std::env::var("CONTAINER_APP_JOB_EXECUTION_NAME")
                    .ok()
                    .filter(|s| !s.is_empty())
            });
            let res = crate::pipeline::backup(
                &p,
                store,
                BackupOptions {
                    run_id,
                    no_verify: a.no_verify,
                    wait_lock: a.wait_lock,
                    full: a.full,
                    cancel,
                    counters: Some(reporter.counters.clone()),
                },
            )
            .await;
            reporter.finish().await;
            let r = res?;
            emit(json, &r, || {
                let t = &r.totals;
                println!(
                    "{} snapshot {} committed: {} files, {} dirs, {} symlinks, {} → {} stored in {} packs",
                    r.kind,
                    r.snapshot.as_deref().unwrap_or("-"),
                    t.files,
                    t.dirs,
                    t.symlinks,
                    human(t.bytes),
                    human(t.stored_bytes),
                    t.packs
                );
                println!(
                    "run {}: {} partitions ({} resumed), {} blocks uploaded, {} reused, {} retries",
                    r.run_id,
                    r.partitions,
                    r.partitions_resumed,
                    r.blocks_staged,
                    r.blocks_reused,
                    r.retries
                );
                if let Some(c) = &r.changes {
                    println!(
                        "changes: {} new ({}), {} changed ({}), {} unchanged ({}), {} deleted ({}); {} files read",
                        c.new,
                        human(c.new_bytes),
                        c.changed,
                        human(c.changed_bytes),
                        c.unchanged,
                        human(c.unchanged_bytes),
                        c.deleted,
                        human(c.deleted_bytes),
                        r.files_read
                    );
                }
                for p in r.problems.iter().take(20) {
                    println!("unreadable: {}: {}", p.path.display(), p.error);
                }
                for p in r.inconsistent.iter().take(20) {
                    println!("changed while read (stored as last read): {}", p.display());
                }
                if let Some(v) = &r.verify {
                    print_verify(v);
                }
                println!("status: {:?}", r.status);
            });
            Ok(exit::for_run(r.status))
        }
        Command::Snapshots { pipeline } => {
            let p = Pipeline::load(&pipeline)?;
            let store = open(&p).await?;
            let list = catalog::list(&*store, &Layout::new(&p.target.prefix)).await?;
            emit(json, &list, || {
                println!(
                    "{:<28} {:<20} {:>8} {:>11} {:>11} verify",
                    "id", "time", "files", "bytes", "stored"
                );
                for s in &list {
                    let h = &s.header;
                    println!(
                        "{:<28} {:<20} {:>8} {:>11} {:>11} {}{}",
                        s.id,
                        h.committed_at.format("%Y-%m-%d %H:%M:%S"),
                        h.totals.files,
                        human(h.totals.bytes),
                        human(h.totals.stored_bytes),
                        s.verify_status,
                        s.verify_mode
                            .as_deref()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    );
                }
                if list.is_empty() {
                    println!("(no snapshots)");
                }
            });
            Ok(exit::OK)
        }
        Command::Diff { pipeline, from, to } => {
            let p = Pipeline::load(&pipeline)?;
            let store = open(&p).await?;
            let layout = Layout::new(&p.target.prefix);
            let a = catalog::load(
                &*store,
                &layout,
                &catalog::resolve(&*store, &layout, &from).await?,
            )
            .await?;
            let b = catalog::load(
                &*store,
                &layout,
                &catalog::resolve(&*store, &layout, &to).await?,
            )
            .await?;
            let d = crate::manifest::diff(&a.entries, &b.entries);
            emit(json, &d, || {
                for (sign, list) in [("+", &d.added), ("~", &d.changed), ("-", &d.removed)] {
                    for p in list {
                        println!("{sign} {p}");
                    }
                }
                println!(
                    "{} added, {} changed, {} removed ({} → {})",
                    d.added.len(),
                    d.changed.len(),
                    d.removed.len(),
                    a.header.snapshot,
                    b.header.snapshot
                );
            });
            Ok(exit::OK)
        }
        Command::Ls {
            pipeline,
            sel,
            globs,
        } => {
            let p = Pipeline::load(&pipeline)?;
            let store = open(&p).await?;
            let layout = Layout::new(&p.target.prefix);
            let id = sel.resolve(&*store, &layout).await?;
            let m = catalog::load(&*store, &layout, &id).await?;
            let matcher = if globs.is_empty() {
                None
            } else {
                let mut b = ignore::gitignore::GitignoreBuilder::new("/");
                for g in &globs {
                    b.add_line(None, g)
                        .map_err(|e| Error::config(format!("invalid glob {g:?}: {e}")))?;
                }
                Some(
                    b.build()
                        .map_err(|e| Error::config(format!("invalid globs: {e}")))?,
                )
            };
            let entries: Vec<_> = m
                .entries
                .iter()
                .filter(|e| {
                    matcher.as_ref().is_none_or(|g| {
                        g.matched_path_or_any_parents(
                            e.path.to_path(),
                            e.kind == crate::manifest::EntryKind::Dir,
                        )
                        .is_ignore()
                    })
                })
                .collect();
            if !globs.is_empty() && entries.is_empty() {
                return Err(Error::not_found(format!(
                    "no entry of {id} matches {}",
                    globs.join(", ")
                )));
            }
            emit(json, &entries, || {
                for e in &entries {
                    let kind = match e.kind {
                        crate::manifest::EntryKind::File => '-',
                        crate::manifest::EntryKind::Dir => 'd',
                        crate::manifest::EntryKind::Symlink => 'l',
                    };
                    let t = chrono::DateTime::from_timestamp(e.mtime, 0)
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_default();
                    let link = e
                        .target
                        .as_ref()
                        .map(|t| format!(" -> {}", t.display()))
                        .unwrap_or_default();
                    println!(
                        "{kind}{:04o} {:>12} {t} {}{link}",
                        e.mode,
                        e.size,
                        e.path.display()
                    );
                }
            });
            Ok(exit::OK)
        }
        Command::Verify(a) => {
            let p = Pipeline::load(&a.pipeline)?;
            let store = open(&p).await?;
            let layout = Layout::new(&p.target.prefix);
            let id = a.sel.resolve(&*store, &layout).await?;
            let m = catalog::load(&*store, &layout, &id).await?;
            let mode = if a.full {
                VerifyMode::Full
            } else if a.metadata {
                VerifyMode::Metadata
            } else if let Some(s) = &a.sample {
                let f = parse_fraction(s).map_err(Error::config)?;
                if !(f > 0.0 && f <= 1.0) {
                    return Err(Error::config(format!(
                        "--sample must be in (0, 100%], got {s}"
                    )));
                }
                VerifyMode::Sample(f)
            } else {
                p.verify.mode
            };
            let reporter = Reporter::start("verify", quiet);
            let res = verify::verify(
                &store,
                &layout,
                &m,
                mode,
                a.seed.or(p.verify.seed),
                &p.upload,
                Some(reporter.counters.clone()),
            )
            .await;
            reporter.finish().await;
            let r = res?;
            emit(json, &r, || print_verify(&r));
            Ok(if r.ok() { exit::OK } else { exit::MISMATCH })
        }
        Command::Auth {
            command: AuthCommand::Check { pipeline },
        } => {
            let p = Pipeline::load(&pipeline)?;
            let r = store::azure::auth_check(&p.target, &p.retry).await?;
            emit(json, &r, || {
                println!("target:     {}", r.target);
                println!("credential: {} (from {})", r.credential, r.source);
                for t in &r.tried {
                    println!("  skipped:  {t}");
                }
                let yes_no = |ok: bool, err: &Option<String>| {
                    if ok {
                        "yes".to_string()
                    } else {
                        format!("NO — {}", err.as_deref().unwrap_or("unknown error"))
                    }
                };
                println!("can list:   {}", yes_no(r.can_list, &r.list_error));
                println!("can write:  {}", yes_no(r.can_write, &r.write_error));
            });
            Ok(if r.ok() { exit::OK } else { exit::FAILED })
        }
        Command::Check(a) => ops::check(a, json).await,
        Command::Status { pipelines } => ops::status(&pipelines, json).await,
        Command::Drill(a) => ops::drill(a, json).await,
        Command::Schedule(a) => ops::schedule(a, json).await,
        Command::Next { pipelines, count } => ops::next(&pipelines, count, json),
        Command::Serve(a) => ops::serve(a).await,
        Command::RunQueued(a) => ops::run_queued(a, json).await,
        Command::Functions { command } => ops::functions(command, json),
        Command::Forget(a) => retention_cmd(a, true, json).await,
        Command::Prune(a) => retention_cmd(a, false, json).await,
        Command::Lifecycle { pipelines } => {
            let ps = pipelines
                .iter()
                .map(|f| Pipeline::load(f))
                .collect::<Result<Vec<_>>>()?;
            let v = crate::retention::lifecycle::policy(&ps)?;
            println!("{v:#}");
            Ok(exit::OK)
        }
        Command::Restore(a) if a.to_db.is_some() => {
            let p = Pipeline::load(&a.pipeline)?;
            let opts = db_restore_options(&p, &a)?;
            let store = open(&p).await?;
            let layout = Layout::new(&p.target.prefix);
            let id = a.sel.resolve(&*store, &layout).await?;
            let m = catalog::load(&*store, &layout, &id).await?;
            let r = crate::restore::db::restore_db(&store, &layout, &m, &opts).await?;
            emit(json, &r, || {
                println!(
                    "restored snapshot {} into {}{}:",
                    r.snapshot,
                    r.target,
                    if r.transaction {
                        " (one transaction)"
                    } else {
                        ""
                    }
                );
                for t in &r.tables {
                    println!(
                        "  {:<40} {:<18} {:>10} stored {:>10} added {:>10} now{}",
                        t.table,
                        t.strategy.as_str(),
                        t.rows_stored,
                        t.rows_added,
                        t.rows_after,
                        if t.checksum_checked {
                            "  checksum ok"
                        } else {
                            ""
                        }
                    );
                }
                if !r.cycles.is_empty() {
                    println!("note: foreign-key cycle among {}", r.cycles.join(", "));
                }
            });
            Ok(exit::OK)
        }
        Command::Restore(a) => {
            let p = Pipeline::load(&a.pipeline)?;
            let store = open(&p).await?;
            let layout = Layout::new(&p.target.prefix);
            let id = a.sel.resolve(&*store, &layout).await?;
            let m = catalog::load(&*store, &layout, &id).await?;
            if a.plan || a.rehydrate.is_some() {
                return restore_archive_cmd(&a, &p, &store, &layout, &m, json, quiet).await;
            }
            let reporter = Reporter::start("restore", quiet);
            let res = restore::restore(
                &store,
                &layout,
                &m,
                &restore::RestoreOptions {
                    to: a
                        .to
                        .ok_or_else(|| Error::config("restore needs --to DIR or --to-db URL"))?,
                    paths: a.paths,
                    overwrite: a.overwrite,
                    concurrency: p.upload.concurrency,
                },
                Some(reporter.counters.clone()),
            )
            .await;
            reporter.finish().await;
            let r = res?;
            emit(json, &r, || {
                print_restore(&r, "");
                for p in r.inconsistent.iter().take(20) {
                    println!("note: {p} was changing while it was backed up");
                }
            });
            Ok(exit::OK)
        }
    }
}

async fn retention_cmd(a: RetentionArgs, forget: bool, json: bool) -> Result<i32> {
    use crate::retention;
    let p = Pipeline::load(&a.pipeline)?;
    let store = open(&p).await?;
    let cancel = crate::support::cancel::Cancel::new();
    cancel.on_signals();
    let opts = retention::Options {
        dry_run: a.dry_run,
        wait_lock: a.wait_lock,
        grace: a
            .grace
            .as_deref()
            .map(crate::support::units::parse_duration)
            .transpose()
            .map_err(|e| Error::config(format!("--grace: {e}")))?,
        defer_early_deletion: a.defer_early_deletion,
        cancel,
    };
    let (deleted, freed) = if a.dry_run {
        ("would be deleted", "would be freed")
    } else {
        ("deleted", "freed")
    };
    if forget {
        let r = retention::forget(&p, &store, &opts).await?;
        emit(json, &r, || {
            for d in &r.decisions {
                if d.keep {
                    let why: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
                    println!("keep   {}  ({})", d.id, why.join(", "));
                } else {
                    println!("forget {}", d.id);
                }
            }
            println!(
                "{} snapshots kept, {} {}forgotten{}",
                r.kept,
                r.forgotten.len(),
                if a.dry_run { "to be " } else { "" },
                if r.forgotten.is_empty() || a.dry_run {
                    ""
                } else {
                    " (run `blobpipe prune` to free their packs)"
                }
            );
        });
    } else {
        let r = retention::prune(&p, &store, &opts).await?;
        emit(json, &r, || {
            println!(
                "{} snapshots, {} packs: {} referenced, {} younger than the grace period, {} {deleted} ({} {freed})",
                r.snapshots,
                r.packs_total,
                r.packs_referenced,
                r.packs_young,
                r.packs_deleted,
                human(r.bytes_freed)
            );
            for (tier, e) in &r.early_deletion {
                println!(
                    "{tier}: {} unreferenced packs ({}) inside the {}-day early-deletion minimum: {}{}",
                    e.packs,
                    human(e.bytes),
                    retention::early_deletion_days(crate::store::Tier::parse(tier).unwrap_or_default()),
                    if e.deferred { "kept (deferred)" } else { "deleted early (Azure charges the remaining days)" },
                    e.free_after
                        .map(|t| format!(", free to delete after {}", t.format("%Y-%m-%d")))
                        .unwrap_or_default()
                );
            }
            println!(
                "{} runs' part records ({} blobs) and {} verify reports of forgotten snapshots {deleted} ({})",
                r.runs_cleaned.len(),
                r.part_blobs_deleted,
                r.verify_reports_deleted,
                human(r.record_bytes_freed)
            );
        });
    }
    Ok(exit::OK)
}

async fn restore_archive_cmd(
    a: &RestoreArgs,
    p: &Pipeline,
    store: &store::Store,
    layout: &Layout,
    m: &crate::manifest::Manifest,
    json: bool,
    quiet: bool,
) -> Result<i32> {
    if a.plan {
        let pl = restore::archive::plan(store, layout, m, &a.paths).await?;
        emit(json, &pl, || {
            println!(
                "restore of {} ({} entries) reads {} packs ({})",
                pl.snapshot,
                pl.entries,
                pl.packs.len(),
                human(pl.packs.iter().map(|x| x.size).sum())
            );
            for x in &pl.archived {
                println!(
                    "rehydrate {} ({}){}",
                    x.blob,
                    human(x.size),
                    x.staging
                        .as_deref()
                        .map(|s| format!(" — staging copy {s}"))
                        .unwrap_or_default()
                );
            }
            if pl.archived.is_empty() {
                println!("nothing to rehydrate: every needed pack is online");
            } else {
                println!(
                    "{} archived packs, {} to rehydrate; expected wait: standard {}, high {}",
                    pl.archived.len(),
                    human(pl.archived_bytes),
                    pl.wait_standard,
                    pl.wait_high
                );
                println!("start with: blobpipe restore … --rehydrate standard|high");
            }
        });
        return Ok(exit::OK);
    }
    let cancel = crate::support::cancel::Cancel::new();
    cancel.on_signals();
    let rh = a.rehydrate.map(|r| restore::RehydrateOptions {
        priority: match r {
            RehydrateArg::Standard => store::RehydratePriority::Standard,
            RehydrateArg::High => store::RehydratePriority::High,
        },
        poll: std::time::Duration::from_secs(a.rehydrate_poll_secs.max(1)),
        timeout: None,
    });
    let reporter = Reporter::start("restore", quiet);
    let res = restore::restore_with(
        store,
        layout,
        m,
        &restore::RestoreOptions {
            to: a
                .to
                .clone()
                .ok_or_else(|| Error::config("restore needs --to DIR (or --to-db URL)"))?,
            paths: a.paths.clone(),
            overwrite: a.overwrite,
            concurrency: p.upload.concurrency,
        },
        rh,
        &cancel,
        Some(reporter.counters.clone()),
    )
    .await;
    reporter.finish().await;
    let r = res?;
    emit(json, &r, || {
        print_restore(
            &r,
            " (archived packs read from rehydrated copies, since deleted)",
        )
    });
    Ok(exit::OK)
}

/// Database restore options from the pipeline's `[restore]` section and the flags.
fn db_restore_options(
    p: &Pipeline,
    a: &RestoreArgs,
) -> Result<crate::restore::db::DbRestoreOptions> {
    use crate::restore::config::Strategy;
    let url = a.to_db.as_deref().unwrap_or_default();
    let url = crate::pipeline::spec::interpolate(url)
        .map_err(|var| Error::config(format!("--to-db: environment variable {var} is not set")))?;
    let mut strategy = p.restore.strategy;
    let mut strategies = p.restore.tables.clone();
    let bad = |s: &str| {
        Error::config(format!(
            "--strategy {s:?}: use fail-if-not-empty, truncate, append or skip-existing, optionally as TABLE=STRATEGY"
        ))
    };
    for s in &a.strategies {
        match s.split_once('=') {
            Some((t, st)) => {
                strategies.insert(
                    t.trim().to_string(),
                    Strategy::parse(st).ok_or_else(|| bad(s))?,
                );
            }
            None => {
                strategy = Strategy::parse(s).ok_or_else(|| bad(s))?;
                // A flag for all tables beats the file's per-table defaults.
                strategies.clear();
            }
        }
    }
    // Per-table flags come after a global one whatever their order on the line.
    for s in &a.strategies {
        if let Some((t, st)) = s.split_once('=') {
            strategies.insert(
                t.trim().to_string(),
                Strategy::parse(st).ok_or_else(|| bad(s))?,
            );
        }
    }
    Ok(crate::restore::db::DbRestoreOptions {
        url: crate::support::secret::Secret::new(url),
        tables: a.tables.clone(),
        strategy,
        strategies,
        no_transaction: a.no_transaction,
        target_schema: a.schema.clone(),
    })
}

fn print_restore(r: &restore::RestoreReport, note: &str) {
    println!(
        "restored snapshot {} into {}: {} files ({}), {} dirs, {} symlinks; {} downloaded from {} packs{note}; every file's SHA-256 checked",
        r.snapshot,
        r.to.display(),
        r.files,
        human(r.bytes),
        r.dirs,
        r.symlinks,
        human(r.bytes_fetched),
        r.packs_read
    );
}

fn print_verify(v: &verify::VerifyReport) {
    println!(
        "verify {} of {}: {} packs, {} blocks and {} files re-read ({}), seed {}{}",
        v.mode,
        v.snapshot,
        v.packs,
        v.blocks_checked,
        v.entries_checked,
        human(v.bytes_read),
        v.seed,
        if v.archived_packs_skipped > 0 {
            format!(
                ", {} archived packs checked by metadata only",
                v.archived_packs_skipped
            )
        } else {
            String::new()
        }
    );
    for m in &v.mismatches {
        println!(
            "MISMATCH {} in {}{}: {}{}",
            m.check,
            m.blob,
            m.block.map(|b| format!(" block {b}")).unwrap_or_default(),
            m.detail,
            if m.paths.is_empty() {
                String::new()
            } else {
                format!(" — affects {}", m.paths.join(", "))
            }
        );
    }
    println!("verify: {}", if v.ok() { "ok" } else { "MISMATCH" });
}

/// Install the tracing subscriber for `format` (stderr; `RUST_LOG` filters, default info).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}
