//! The command line: arguments in, a report and an exit code out.
//!
//! [`args`] holds every clap type, [`commands`] one file per group of commands,
//! [`render`] all printing, [`logging`] the stderr subscriber; this file only dispatches.
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

use crate::error::{Error, ErrorKind, Result};

pub mod args;
pub mod commands;
pub mod logging;
pub mod render;

use args::{AuthCommand, Cli, Command};
use commands::{auth, backup, ops, restore, retention, snapshots, validate, verify};

/// Exit codes.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Run failed.
    pub const FAILED: i32 = 1;
    /// Usage or config error.
    pub const CONFIG: i32 = 2;
    /// Verification mismatch.
    pub const MISMATCH: i32 = 3;
    /// Partial success.
    pub const PARTIAL: i32 = 4;
    /// Lock held by another run.
    pub const LOCKED: i32 = 5;
    /// Not found.
    pub const NOT_FOUND: i32 = 6;
    /// Refused (restore safety).
    pub const REFUSED: i32 = 7;
    /// Archived data.
    pub const ARCHIVED: i32 = 8;
    /// Stale: no verified snapshot recent enough (`check`).
    pub const STALE: i32 = 9;
    /// Cancelled.
    pub const CANCELLED: i32 = 130;
}

/// Exit code for an error.
pub fn exit_code(e: &Error) -> i32 {
    match e.kind() {
        ErrorKind::Config => exit::CONFIG,
        ErrorKind::Integrity => exit::MISMATCH,
        ErrorKind::Locked => exit::LOCKED,
        ErrorKind::NotFound => exit::NOT_FOUND,
        ErrorKind::Refused => exit::REFUSED,
        ErrorKind::Archived => exit::ARCHIVED,
        ErrorKind::Cancelled => exit::CANCELLED,
        _ => exit::FAILED,
    }
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
                    "kind": format!("{:?}", e.kind()),
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
        Command::Validate { pipeline } => validate::validate(&pipeline, json),
        Command::Backup(a) => backup::backup(a, json, quiet).await,
        Command::Snapshots { pipeline } => snapshots::snapshots(&pipeline, json).await,
        Command::Diff { pipeline, from, to } => snapshots::diff(&pipeline, &from, &to, json).await,
        Command::Ls {
            pipeline,
            sel,
            globs,
        } => snapshots::ls(&pipeline, &sel, &globs, json).await,
        Command::Verify(a) => verify::verify(a, json, quiet).await,
        Command::Auth {
            command: AuthCommand::Check { pipeline },
        } => auth::check(&pipeline, json).await,
        Command::Check(a) => ops::check(a, json).await,
        Command::Status { pipelines } => ops::status(&pipelines, json).await,
        Command::Drill(a) => ops::drill(a, json).await,
        Command::Schedule(a) => ops::schedule(a, json).await,
        Command::Next { pipelines, count } => ops::next(&pipelines, count, json),
        Command::Serve(a) => ops::serve(a).await,
        Command::RunQueued(a) => ops::run_queued(a, json).await,
        Command::Functions { command } => ops::functions(command, json),
        Command::Forget(a) => retention::forget_or_prune(a, true, json).await,
        Command::Prune(a) => retention::forget_or_prune(a, false, json).await,
        Command::Lifecycle { pipelines } => retention::lifecycle(&pipelines),
        Command::Restore(a) => restore::restore(a, json, quiet).await,
    }
}
