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
}

impl Default for RestoreConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::FailIfNotEmpty,
            tables: Default::default(),
            scratch_url: None,
        }
    }
}
