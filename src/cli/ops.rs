//! Operations commands: `check`, `status`, `drill`, `schedule`, `next`, `serve`,
//! `functions scaffold` — what runs blobpipe unattended and tells a team when something
//! is wrong.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{emit, exit};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Pipeline;
use crate::restore::{drill as drill_mod, drill_db};
use crate::schedule::status::{self, load_pipelines};
use crate::support::units::parse_duration;
use crate::{schedule as sched, serve as serve_mod, store};

/// `check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A pipeline file or a directory of them.
    pub pipelines: PathBuf,
    /// Largest allowed age of the newest verified snapshot (e.g. 26h) for pipelines
    /// without `[freshness] rpo`.
    #[arg(long)]
    pub max_age: Option<String>,
}

/// `drill` arguments.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Snapshot id, prefix or `latest` (default).
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Make the scratch directory in this directory (default: the system temp dir).
    #[arg(long)]
    pub scratch_dir: Option<PathBuf>,
    /// Database pipelines: the server to restore into (`postgres://…` / `mysql://…`,
    /// password via PGPASSWORD / MYSQL_PWD); a uniquely named scratch schema (PostgreSQL)
    /// or database (MySQL) is made there and dropped afterwards. Default:
    /// `[restore] scratch_url`.
    #[arg(long, value_name = "URL")]
    pub scratch_db: Option<String>,
}

/// `schedule` arguments.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// A pipeline file or a directory of them (those with `[schedule]` run).
    pub pipelines: PathBuf,
    /// Do not catch up missed runs at start, whatever the pipelines say.
    #[arg(long)]
    pub no_catch_up: bool,
}

/// `serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A pipeline file or a directory of them (function names are pipeline names).
    #[arg(default_value = "pipelines", env = "BLOBPIPE_PIPELINES")]
    pub pipelines: PathBuf,
    /// Port; default `$FUNCTIONS_CUSTOMHANDLER_PORT`, else 8080.
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (the Functions host connects over loopback).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
}

/// `run-queued` arguments.
#[derive(Debug, Args)]
pub struct RunQueuedArgs {
    /// A pipeline file or a directory of them (the message names the pipeline).
    #[arg(default_value = "pipelines", env = "BLOBPIPE_PIPELINES")]
    pub pipelines: PathBuf,
    /// The hand-off queue URL (`https://<account>.queue.core.windows.net/<queue>`); default:
    /// the one `[serve] queue_url` all hand-off pipelines share.
    #[arg(long, env = "BLOBPIPE_HANDOFF_QUEUE")]
    pub queue: Option<String>,
    /// How long the received message stays invisible (renewed every third of it while
    /// the run goes).
    #[arg(long, default_value = "2h")]
    pub visibility: String,
    /// After a failed run the message reappears after this long.
    #[arg(long, default_value = "5m")]
    pub retry_delay: String,
    /// A message received more often than this is poison (deleted, exit 1).
    #[arg(long, default_value_t = 5)]
    pub max_dequeue: u32,
}

/// `functions` subcommands.
#[derive(Debug, Subcommand)]
pub enum FunctionsCommand {
    /// Write host.json and one function.json per pipeline (timer on its cron as 6-field
    /// NCRONTAB) plus the `runs` HTTP function.
    Scaffold {
        /// A pipeline file or a directory of them.
        pipelines: PathBuf,
        /// Output directory (the Function App's root).
        #[arg(long)]
        out: PathBuf,
        /// The pipelines directory as the handler will see it, relative to the app root.
        #[arg(long, default_value = "pipelines")]
        pipeline_dir: String,
    },
}

/// Every pipeline in `path`; any file that does not load is a config error.
fn all_valid(path: &Path) -> Result<Vec<Pipeline>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (_, p) in load_pipelines(path)? {
        match p {
            Ok(p) => out.push(p),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Error::config(errors.join("\n")))
    }
}

pub(super) async fn check(a: CheckArgs, json: bool) -> Result<i32> {
    let default = match &a.max_age {
        None => None,
        Some(s) => Some(parse_duration(s).map_err(|e| Error::config(format!("--max-age: {e}")))?),
    };
    let now = chrono::Utc::now();
    let mut results = Vec::new();
    let mut config_errors = Vec::new();
    for (file, p) in load_pipelines(&a.pipelines)? {
        match p {
            Ok(p) => match status::check_pipeline(&p, default, now).await {
                Ok(f) => results.push(f),
                Err(e) => config_errors.push(format!("{}: {e}", file.display())),
            },
            Err(e) => config_errors.push(e.to_string()),
        }
    }
    let stale = results.iter().filter(|f| f.stale).count();
    let code = exit::for_check(stale > 0, !config_errors.is_empty());
    let out = json!({
        "ok": code == exit::OK,
        "stale": stale,
        "pipelines": results,
        "errors": config_errors,
        "exit_code": code,
    });
    emit(json, &out, || {
        for f in &results {
            println!(
                "{:<5} {}: {}",
                if f.stale { "STALE" } else { "ok" },
                f.pipeline,
                f.reason
            );
            for o in f.alerts.iter().filter(|o| !o.delivered) {
                println!(
                    "      alert to {} NOT delivered: {}",
                    o.target,
                    o.error.as_deref().unwrap_or("")
                );
            }
        }
        for e in &config_errors {
            println!("ERROR {e}");
        }
    });
    if !json {
        for e in &config_errors {
            eprintln!("error: {e}");
        }
    }
    Ok(code)
}

pub(super) async fn status(path: &Path, json: bool) -> Result<i32> {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (file, p) in load_pipelines(path)? {
        match p {
            Ok(p) => out.push(status::status(&p, now).await),
            Err(e) => errors.push(format!("{}: {e}", file.display())),
        }
    }
    emit(json, &json!({"pipelines": out, "errors": errors}), || {
        for s in &out {
            status::print_status(s);
        }
        for e in &errors {
            println!("ERROR {e}");
        }
    });
    Ok(exit::for_status(
        !errors.is_empty(),
        out.iter().any(|s| s.error.is_some()),
    ))
}

pub(super) async fn drill(a: DrillArgs, json: bool) -> Result<i32> {
    let p = Pipeline::load(&a.pipeline)?;
    let opts = drill_mod::DrillOptions {
        snapshot: a.snapshot,
        scratch_in: a.scratch_dir,
    };
    let scratch_db = a
        .scratch_db
        .map(crate::support::secret::Secret::new)
        .or_else(|| p.restore.scratch_url.clone());
    let r = match (drill_db::db_kind(&p), scratch_db) {
        (None, None) => {
            let s = store::open(&p.target, &p.retry).await?;
            drill_mod::drill(&p, s, &opts).await?
        }
        (None, Some(_)) => {
            return Err(Error::config(format!(
                "pipeline {} does not read a database: leave out --scratch-db (its drill restores into a scratch directory)",
                p.name
            )))
        }
        (Some(kind), None) => {
            return Err(Error::config(format!(
                "pipeline {} reads {kind}: its drill restores into a scratch {} on a database server; pass --scratch-db {} or set [restore] scratch_url in {}",
                p.name,
                if kind == "postgres" { "schema" } else { "database" },
                if kind == "postgres" {
                    "postgres://user@host:5432/db"
                } else {
                    "mysql://user@host:3306/db"
                },
                a.pipeline.display()
            )))
        }
        (Some(_), Some(url)) => {
            let s = store::open(&p.target, &p.retry).await?;
            drill_db::drill_db(&p, s, &opts, &url).await?
        }
    };
    emit(json, &r, || println!("{}", drill_mod::summary(&r)));
    Ok(exit::for_drill(r.failure_kind()))
}

pub(super) async fn schedule(a: ScheduleArgs, json: bool) -> Result<i32> {
    let mut jobs = Vec::new();
    for p in all_valid(&a.pipelines)? {
        if let Some(j) = sched::Job::from_pipeline(p)? {
            jobs.push(j);
        }
    }
    let cancel = crate::support::cancel::Cancel::new();
    cancel.on_signals();
    let summary = sched::run(
        jobs,
        Arc::new(sched::BackupRunner),
        cancel,
        &sched::ScheduleOptions {
            no_catch_up: a.no_catch_up,
        },
    )
    .await?;
    emit(json, &summary, || {
        for (p, n) in &summary.started {
            println!(
                "{p}: {n} runs started ({} catch-up), {} ticks skipped (previous run still going), {} errors",
                summary.caught_up.get(p).unwrap_or(&0),
                summary.skipped_overlap.get(p).unwrap_or(&0),
                summary.errors.get(p).unwrap_or(&0)
            );
        }
    });
    Ok(exit::OK)
}

pub(super) fn next(path: &Path, count: usize, json: bool) -> Result<i32> {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for p in all_valid(path)? {
        let name = p.name.clone();
        match sched::Job::from_pipeline(p)? {
            Some(j) => out.push(json!({
                "pipeline": name,
                "cron": j.expr,
                "next": j.upcoming(now, count).iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
            })),
            None => out.push(json!({"pipeline": name, "cron": null, "next": []})),
        }
    }
    emit(json, &out, || {
        for o in &out {
            match o["cron"].as_str() {
                None => println!("{}: no [schedule]", o["pipeline"].as_str().unwrap_or("")),
                Some(c) => {
                    let times: Vec<&str> = o["next"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
                        .unwrap_or_default();
                    println!(
                        "{} ({c}, UTC): {}",
                        o["pipeline"].as_str().unwrap_or(""),
                        times.join(", ")
                    );
                }
            }
        }
    });
    Ok(exit::OK)
}

pub(super) async fn serve(a: ServeArgs) -> Result<i32> {
    let pipelines = all_valid(&a.pipelines)?;
    let port = match a.port {
        Some(p) => p,
        None => match std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT") {
            Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
                Error::config(format!("FUNCTIONS_CUSTOMHANDLER_PORT={v:?} is not a port"))
            })?,
            _ => 8080,
        },
    };
    let cancel = crate::support::cancel::Cancel::new();
    cancel.on_signals();
    let server = serve_mod::Server::bind(
        SocketAddr::new(a.bind, port),
        pipelines,
        Arc::new(sched::BackupRunner),
        cancel,
    )
    .await?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, "blobpipe serve listening");
    eprintln!("listening on {addr}");
    server.run().await?;
    Ok(exit::OK)
}

pub(super) async fn run_queued(a: RunQueuedArgs, json: bool) -> Result<i32> {
    use crate::serve::handoff::{self, QueueOutcome, RunQueuedOptions};
    use crate::store::azure::queue::QueueClient;
    use crate::store::azure::queue_url::QueueUrl;
    let dur = |flag: &str, v: &str| {
        parse_duration(v).map_err(|e| Error::config(format!("--{flag}: {e}")))
    };
    let opts = RunQueuedOptions {
        visibility: dur("visibility", &a.visibility)?,
        retry_delay: dur("retry-delay", &a.retry_delay)?,
        max_dequeue: a.max_dequeue,
    };
    // A broken pipelines directory must not eat messages: fail before receiving.
    let pipelines = all_valid(&a.pipelines)?;
    let queue =
        match &a.queue {
            Some(u) => QueueUrl::parse(u).map_err(|e| Error::config(format!("--queue: {e}")))?,
            None => {
                let mut qs: Vec<QueueUrl> = Vec::new();
                for p in &pipelines {
                    if let Some(h) = &p.handoff {
                        if !qs.iter().any(|q| q.display() == h.queue.display()) {
                            qs.push(h.queue.clone());
                        }
                    }
                }
                match qs.len() {
                    1 => qs.remove(0),
                    0 => {
                        return Err(Error::config(
                            "no --queue given and no pipeline has [serve] handoff = \"queue\"",
                        ))
                    }
                    _ => {
                        return Err(Error::config(format!(
                        "no --queue given and the pipelines use {} different hand-off queues: {}",
                        qs.len(),
                        qs.iter().map(QueueUrl::display).collect::<Vec<_>>().join(", ")
                    )))
                    }
                }
            }
        };
    let client = QueueClient::new(&queue)?;
    let cancel = crate::support::cancel::Cancel::new();
    cancel.on_signals();
    let out = handoff::run_queued(
        &pipelines,
        &client,
        Arc::new(sched::BackupRunner),
        &opts,
        cancel,
    )
    .await?;
    let poison_is_config = out.message.is_none() || out.dequeue_count.unwrap_or(0) <= a.max_dequeue;
    let code = exit::for_queued(out.outcome, poison_is_config);
    emit(json, &out, || match out.outcome {
        QueueOutcome::Empty => println!("{}: no message, nothing to run", queue.display()),
        QueueOutcome::Poison => println!(
            "poison message {} deleted from {}",
            out.message_id.as_deref().unwrap_or("-"),
            queue.display()
        ),
        o => {
            let m = out.message.as_ref();
            println!(
                "run {} of {}: {o}{}; message {}",
                m.map(|m| m.run_id.as_str()).unwrap_or("-"),
                m.map(|m| m.pipeline.as_str()).unwrap_or("-"),
                out.snapshot
                    .as_deref()
                    .map(|s| format!(", snapshot {s}"))
                    .unwrap_or_default(),
                if out.deleted {
                    "deleted".to_string()
                } else {
                    format!("reappears in {}", a.retry_delay)
                }
            );
        }
    });
    if let Some(e) = &out.error {
        if out.outcome == QueueOutcome::Poison {
            eprintln!("error: poison message: {e}");
        } else if code != exit::OK {
            eprintln!("error: {e}");
        }
    }
    Ok(code)
}

pub(super) fn functions(c: FunctionsCommand, json: bool) -> Result<i32> {
    match c {
        FunctionsCommand::Scaffold {
            pipelines,
            out,
            pipeline_dir,
        } => {
            let ps = all_valid(&pipelines)?;
            let s = serve_mod::scaffold(&ps, &pipeline_dir, &out).map_err(|e| {
                if e.kind() == ErrorKind::Config {
                    e
                } else {
                    e.context("scaffold")
                }
            })?;
            emit(json, &s, || {
                for f in &s.files {
                    println!("wrote {}", out.join(f).display());
                }
                for (n, c) in &s.timers {
                    println!("timer {n}: {c} (NCRONTAB, UTC)");
                }
                for n in &s.unscheduled {
                    println!(
                        "note: {n} has no [schedule]: start it over HTTP (POST /api/runs/{n})"
                    );
                }
            });
            Ok(exit::OK)
        }
    }
}
