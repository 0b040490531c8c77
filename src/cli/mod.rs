//! The command line: arguments in, a report and an exit code out.
//!
//! [`args`] holds every clap type, [`commands`] one file per group of commands,
//! [`render`] all printing, [`logging`] the stderr subscriber; this file only dispatches.
//!
//! Every command prints a human summary, or one JSON document with `--json`; the exit
//! codes are one table in [`exit`] (documented in `docs/exit-codes.md`).

use crate::error::Result;
use crate::support::out::{errln, outln};

pub mod args;
pub mod commands;
pub mod exit;
pub mod logging;
pub mod render;

use args::{AuthCommand, Cli, Command, KeyCommand};
use commands::{
    auth, backup, keys, ops, report, restore, retention, scale, snapshots, validate, verify,
};
use exit::exit_code;

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
                outln!("{v:#}");
            }
            errln!("error: {e}");
            code
        }
    }
}

async fn dispatch(cli: Cli) -> Result<i32> {
    let json = cli.json;
    let quiet = cli.quiet || json;
    match cli.command {
        Command::Validate { pipeline } => validate::validate(&pipeline, json),
        Command::Backup(a) => backup::backup(a, json, quiet).await,
        Command::Snapshots { pipeline } => snapshots::snapshots(&pipeline, json).await,
        Command::Copy {
            from,
            to,
            snapshots: ids,
        } => snapshots::copy(&from, &to, &ids, json).await,
        Command::Diff { pipeline, from, to } => snapshots::diff(&pipeline, &from, &to, json).await,
        Command::Ls {
            pipeline,
            sel,
            globs,
        } => snapshots::ls(&pipeline, &sel, &globs, json).await,
        Command::Verify(a) => verify::verify(a, json, quiet).await,
        Command::Cat { pipeline, pack } => keys::cat(&pipeline, &pack).await,
        Command::Key {
            command: KeyCommand::Rotate(a),
        } => keys::rotate(a, json).await,
        Command::Auth {
            command: AuthCommand::Check { pipeline },
        } => auth::check(&pipeline, json).await,
        Command::Check(a) => ops::check(a, json).await,
        Command::Status { pipelines } => ops::status(&pipelines, json).await,
        Command::Report(a) => report::report(a, json).await,
        Command::Drill(a) => ops::drill(a, json).await,
        Command::Schedule(a) => ops::schedule(a, json).await,
        Command::Next { pipelines, count } => ops::next(&pipelines, count, json),
        Command::Serve(a) => ops::serve(a).await,
        Command::RunQueued(a) => ops::run_queued(a, json).await,
        Command::Plan(a) => scale::plan(a, json).await,
        Command::Work(a) => scale::work(a, json).await,
        Command::Finalize(a) => scale::finalize(a, json).await,
        Command::Functions { command } => ops::functions(command, json),
        Command::Forget(a) => retention::forget_or_prune(a, true, json).await,
        Command::Prune(a) => retention::forget_or_prune(a, false, json).await,
        Command::Lifecycle { pipelines } => retention::lifecycle(&pipelines),
        Command::Restore(a) => restore::restore(a, json, quiet).await,
    }
}
