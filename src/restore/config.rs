//! Checked restore defaults: how `restore --to-db` treats tables that already have rows,
//! and where `blobpipe drill` restores a database source.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::support::secret::Secret;

/// How `restore --to-db` treats a table that already has rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Refuse (before writing anything) when the table has rows.
    FailIfNotEmpty,
    /// Empty the table first (in the same transaction).
    Truncate,
    /// Insert every row; a duplicate key fails the restore.
    Append,
    /// Insert only rows whose key is absent.
    SkipExisting,
}

impl Strategy {
    /// Parse `fail-if-not-empty`, `truncate`, `append`, `skip-existing`.
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s.trim() {
            "fail-if-not-empty" => Strategy::FailIfNotEmpty,
            "truncate" => Strategy::Truncate,
            "append" => Strategy::Append,
            "skip-existing" => Strategy::SkipExisting,
            _ => return None,
        })
    }
    /// The name as written in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::FailIfNotEmpty => "fail-if-not-empty",
            Strategy::Truncate => "truncate",
            Strategy::Append => "append",
            Strategy::SkipExisting => "skip-existing",
        }
    }
}

/// How `restore --to-db` checks the target's foreign keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FkCheck {
    /// Row by row, by the target's own foreign-key triggers, as rows arrive (the default).
    #[default]
    Immediate,
    /// With the triggers off for the restore's sessions (PostgreSQL
    /// `session_replication_role = replica`), then one set-based anti-join per foreign
    /// key of every restored table over the rows the restore added, before anything
    /// commits. Needs the right to set that parameter; refused with `--no-transaction`.
    Bulk,
}

impl FkCheck {
    /// Parse `immediate` or `bulk`.
    pub fn parse(s: &str) -> Option<FkCheck> {
        match s.trim() {
            "immediate" => Some(FkCheck::Immediate),
            "bulk" => Some(FkCheck::Bulk),
            _ => None,
        }
    }
    /// The name as written in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FkCheck::Immediate => "immediate",
            FkCheck::Bulk => "bulk",
        }
    }
}

/// Connections a database restore loads on when nothing says otherwise.
pub const DEFAULT_JOBS: usize = 4;
/// The most connections a database restore may use.
pub const MAX_JOBS: usize = 64;

/// Restore defaults for database sources.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// Strategy for tables without their own.
    pub strategy: Strategy,
    /// Per-table strategies (`table` or `schema.table`).
    pub tables: BTreeMap<String, Strategy>,
    /// Server that `blobpipe drill` restores into (a scratch schema / database made and
    /// dropped there); `--scratch-db` overrides it. May carry a password: a secret.
    pub scratch_url: Option<Secret>,
    /// Connections `restore --to-db` (and a drill) loads tables on, 1..=[`MAX_JOBS`].
    pub jobs: usize,
    /// How the target's foreign keys are checked.
    pub fk_check: FkCheck,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::FailIfNotEmpty,
            tables: Default::default(),
            scratch_url: None,
            jobs: DEFAULT_JOBS,
            fk_check: FkCheck::Immediate,
        }
    }
}
