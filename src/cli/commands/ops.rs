//! Operations commands: `check`, `status`, `drill`, `schedule`, `next`, `serve`,
//! `functions scaffold` — what runs blobpipe unattended and tells a team when something
//! is wrong.

use crate::support::out::{errln, outln};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use crate::cli::args::{
    CheckArgs, DashboardArg, DrillArgs, FunctionsCommand, RunQueuedArgs, ScheduleArgs, ServeArgs,
};
use crate::cli::exit;
use crate::cli::render::{self, emit};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::layout::Repo;
use crate::pipeline::{drill as drill_mod, drill_db};
use crate::pipeline::{Needs, Pipeline};
use crate::schedule::status::{self, load_pipelines};
use crate::support::units::parse_duration;
use crate::{schedule as sched, serve as serve_mod};

/// Every pipeline in `path`; any file that does not load is a config error.
pub(super) fn all_valid(path: &Path) -> Result<Vec<Pipeline>> {
    let (out, errors) = loadable(path, Needs::All)?;
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Error::config(errors.join("\n")))
    }
}

/// The pipelines in `path` that load for a command using `needs`, and the errors of
/// those that do not: one bad file does not stop the others.
fn loadable(path: &Path, needs: Needs) -> Result<(Vec<Pipeline>, Vec<String>)> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (_, p) in load_pipelines(path, needs)? {
        match p {
            Ok(p) => out.push(p),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Ok((out, errors))
}

/// Print each load error once on stderr; the exit code a command that went on with the
/// other files ends with.
fn report_load_errors(errors: &[String], code: i32) -> i32 {
    for e in errors {
        errln!("error: {e}");
    }
    if errors.is_empty() {
        code
    } else {
        exit::CONFIG
    }
}

/// `blobpipe check PATH`: exit 9 when a pipeline is stale, 2 when a file does not load.
///
/// # Errors
/// `Config` for a bad `--max-age` or an unreadable path.
pub async fn check(a: CheckArgs, json: bool) -> Result<i32> {
    let default = match &a.max_age {
        None => None,
        Some(s) => Some(parse_duration(s).map_err(|e| Error::config(format!("--max-age: {e}")))?),
    };
    let now = chrono::Utc::now();
    let mut results = Vec::new();
    let mut config_errors = Vec::new();
    for (file, p) in load_pipelines(&a.pipelines, Needs::Store)? {
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
    emit(json, &out, || render::check(&results));
    if !json {
        report_load_errors(&config_errors, code);
    }
    Ok(code)
}

/// `blobpipe status PATH`: per-pipeline status; exit 2 for files that do not load, 1
/// when a store could not be read.
///
/// # Errors
/// `Config` for an unreadable path.
pub async fn status(path: &Path, json: bool) -> Result<i32> {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (_, p) in load_pipelines(path, Needs::Store)? {
        match p {
            Ok(p) => out.push(status::status(&p, now).await),
            // The message names the file (and line) already.
            Err(e) => errors.push(e.to_string()),
        }
    }
    emit(json, &json!({"pipelines": out, "errors": errors}), || {
        render::status(&out)
    });
    if !json {
        report_load_errors(&errors, exit::OK);
    }
    Ok(exit::for_status(
        !errors.is_empty(),
        out.iter().any(|s| s.error.is_some()),
    ))
}

/// `blobpipe drill FILE`: a restore drill into scratch; the exit code follows its failure.
///
/// # Errors
/// `Config` for a missing or superfluous scratch database, store errors.
pub async fn drill(a: DrillArgs, json: bool) -> Result<i32> {
    let p = Pipeline::load_for_reading(&a.pipeline)?;
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
            let repo = Repo::open(&p.target, &p.retry).await?;
            drill_mod::drill(&p, repo.store, &opts).await?
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
            let repo = Repo::open(&p.target, &p.retry).await?;
            drill_db::drill_db(&p, repo.store, &opts, &url).await?
        }
    };
    emit(json, &r, || outln!("{}", drill_mod::summary(&r)));
    Ok(exit::for_drill(r.failure_kind()))
}

/// `blobpipe schedule PATH`: run the pipelines on their crons until a signal.
///
/// # Errors
/// `Config` when any pipeline does not load or has a bad cron.
pub async fn schedule(a: ScheduleArgs, json: bool) -> Result<i32> {
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
    emit(json, &summary, || render::schedule(&summary));
    Ok(exit::OK)
}

/// `blobpipe next PATH`: the next scheduled times.
///
/// # Errors
/// `Config` when any pipeline does not load or has a bad cron.
pub fn next(path: &Path, count: usize, json: bool) -> Result<i32> {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    let (pipelines, errors) = loadable(path, Needs::Schedule)?;
    for p in pipelines {
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
    emit(json, &out, || render::next(&out));
    Ok(report_load_errors(&errors, exit::OK))
}

/// `blobpipe serve PATH`: the Azure Functions custom handler, until a signal.
///
/// # Errors
/// `Config` for bad pipelines or port, bind errors.
pub async fn serve(a: ServeArgs) -> Result<i32> {
    // A file that does not load is reported and left out; the others are served.
    let (pipelines, errors) = loadable(&a.pipelines, Needs::All)?;
    report_load_errors(&errors, exit::OK);
    if pipelines.is_empty() {
        return Err(Error::config(format!(
            "no pipeline in {} loads: nothing to serve",
            a.pipelines.display()
        )));
    }
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
    .await?
    .with_dashboard(match a.dashboard {
        DashboardArg::Off => serve_mod::dashboard::Access::Off,
        DashboardArg::EasyAuth => serve_mod::dashboard::Access::EasyAuth,
        DashboardArg::Anonymous => serve_mod::dashboard::Access::Anonymous,
    });
    let addr = server.local_addr()?;
    tracing::info!(%addr, "blobpipe serve listening");
    errln!("listening on {addr}");
    server.run().await?;
    Ok(exit::OK)
}

/// `blobpipe run-queued PATH`: run one handed-off run from the queue.
///
/// # Errors
/// `Config` for bad flags, pipelines or queue; queue errors.
pub async fn run_queued(a: RunQueuedArgs, json: bool) -> Result<i32> {
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
    emit(json, &out, || {
        render::run_queued(&out, &queue, &a.retry_delay)
    });
    if let Some(e) = &out.error {
        if out.outcome == QueueOutcome::Poison {
            errln!("error: poison message: {e}");
        } else if code != exit::OK {
            errln!("error: {e}");
        }
    }
    Ok(code)
}

/// `blobpipe functions scaffold`: write the Function App files.
///
/// # Errors
/// `Config` for bad pipelines, io errors writing the files.
pub fn functions(c: FunctionsCommand, json: bool) -> Result<i32> {
    match c {
        FunctionsCommand::Scaffold {
            pipelines,
            out,
            pipeline_dir,
        } => {
            let (ps, errors) = loadable(&pipelines, Needs::Schedule)?;
            if ps.is_empty() {
                return Err(Error::config(errors.join("\n")));
            }
            let s = serve_mod::scaffold::scaffold(&ps, &pipeline_dir, &out).map_err(|e| {
                if e.kind() == ErrorKind::Config {
                    e
                } else {
                    e.context("scaffold")
                }
            })?;
            emit(json, &s, || render::scaffold(&s, &out));
            Ok(report_load_errors(&errors, exit::OK))
        }
    }
}
