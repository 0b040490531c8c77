//! The one exit-code table: every command's result — an [`Error`], a run's [`RunStatus`],
//! a hand-off's [`QueueOutcome`], a drill's failure kind, a freshness check — becomes a
//! process exit code here and nowhere else.
//!
//! The codes are part of the interface and documented in `docs/exit-codes.md`:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the run failed (source, store, restore destination or internal error); nothing committed |
//! | 2 | usage or pipeline-file error; nothing run |
//! | 3 | verification found a mismatch |
//! | 4 | partial: committed, but some source files could not be read (or kept changing) |
//! | 5 | another run holds the pipeline's lock |
//! | 6 | not found: no such snapshot or path |
//! | 7 | refused: restore would overwrite or escape its target |
//! | 8 | data is in the Archive tier and must be rehydrated first |
//! | 9 | stale: a pipeline's newest verified snapshot is older than allowed (`check`) |
//! | 10 | unverified: committed, but the verification after the commit could not complete |
//! | 11 | wrong key: the encryption key given does not open the pipeline's data key |
//! | 130 | cancelled by a signal; resumable with the same `--run-id` |

use crate::error::{Error, ErrorKind};
use crate::manifest::records::RunStatus;
use crate::serve::handoff::QueueOutcome;

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
/// Committed, but the verification after the commit could not complete.
pub const UNVERIFIED: i32 = 10;
/// The encryption key does not open the pipeline's data key.
pub const WRONG_KEY: i32 = 11;
/// Cancelled.
pub const CANCELLED: i32 = 130;

/// Exit code for an error kind.
pub fn for_kind(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::Config => CONFIG,
        ErrorKind::Integrity => MISMATCH,
        ErrorKind::Locked => LOCKED,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Refused => REFUSED,
        ErrorKind::Archived => ARCHIVED,
        ErrorKind::Cancelled => CANCELLED,
        ErrorKind::WrongKey => WRONG_KEY,
        ErrorKind::Source
        | ErrorKind::Store
        | ErrorKind::Destination
        | ErrorKind::Conflict
        | ErrorKind::Encode
        | ErrorKind::Immutable
        | ErrorKind::Internal => FAILED,
    }
}

/// Exit code for an error.
pub fn exit_code(e: &Error) -> i32 {
    for_kind(e.kind())
}

/// Exit code for how a backup run ended.
pub fn for_run(status: RunStatus) -> i32 {
    match status {
        RunStatus::Ok => OK,
        RunStatus::Partial => PARTIAL,
        RunStatus::Mismatch => MISMATCH,
        RunStatus::CommittedUnverified => UNVERIFIED,
        RunStatus::Cancelled => CANCELLED,
        RunStatus::Failed => FAILED,
    }
}

/// Exit code for a drill that failed with `kind` (`None`: it passed). Kinds a drill
/// record does not single out count as a store failure.
pub fn for_drill(kind: Option<ErrorKind>) -> i32 {
    match kind {
        None => OK,
        Some(
            k @ (ErrorKind::Integrity
            | ErrorKind::NotFound
            | ErrorKind::Archived
            | ErrorKind::Cancelled
            | ErrorKind::Refused
            | ErrorKind::Config),
        ) => for_kind(k),
        Some(_) => for_kind(ErrorKind::Store),
    }
}

/// Exit code for one hand-off receive. A poison message is a configuration problem
/// (`poison_is_config`) unless it was deleted for being received too often, which is a
/// failed run.
pub fn for_queued(outcome: QueueOutcome, poison_is_config: bool) -> i32 {
    match outcome {
        QueueOutcome::Empty | QueueOutcome::Ok => OK,
        QueueOutcome::Partial => PARTIAL,
        QueueOutcome::Mismatch => MISMATCH,
        QueueOutcome::CommittedUnverified => UNVERIFIED,
        QueueOutcome::Locked => LOCKED,
        QueueOutcome::Cancelled => CANCELLED,
        QueueOutcome::Poison if poison_is_config => CONFIG,
        QueueOutcome::Poison | QueueOutcome::Failed => FAILED,
    }
}

/// Exit code of `check`: stale beats configuration errors.
pub fn for_check(stale: bool, config_errors: bool) -> i32 {
    if stale {
        STALE
    } else if config_errors {
        CONFIG
    } else {
        OK
    }
}

/// Exit code of `status`: unreadable pipeline files beat pipelines whose store failed.
pub fn for_status(config_errors: bool, store_errors: bool) -> i32 {
    if config_errors {
        CONFIG
    } else if store_errors {
        FAILED
    } else {
        OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_kinds_outside_the_record_vocabulary_are_store_failures() {
        assert_eq!(for_drill(None), OK);
        assert_eq!(for_drill(Some(ErrorKind::Integrity)), MISMATCH);
        assert_eq!(for_drill(Some(ErrorKind::Locked)), FAILED);
        assert_eq!(for_drill(Some(ErrorKind::Archived)), ARCHIVED);
    }

    #[test]
    fn encode_failures_are_not_mismatches() {
        assert_eq!(for_kind(ErrorKind::Encode), FAILED);
        assert_eq!(for_kind(ErrorKind::Integrity), MISMATCH);
    }

    #[test]
    fn a_failed_restore_destination_is_a_failed_run() {
        assert_eq!(for_kind(ErrorKind::Destination), FAILED);
        assert_eq!(ErrorKind::Destination.to_string(), "Destination");
    }
}
