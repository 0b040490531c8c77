//! Restore into MySQL / MariaDB (see [`crate::restore_db`]).

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::manifest::Manifest;
use crate::restore_db::{DbRestoreOptions, DbRestoreReport};
use crate::store::Store;

/// Restore into MySQL.
///
/// # Errors
/// Always, for now.
pub async fn restore_mysql(
    _store: &Store,
    _layout: &Layout,
    _m: &Manifest,
    _opts: &DbRestoreOptions,
) -> Result<DbRestoreReport> {
    Err(Error::config("restore into MySQL: not implemented yet"))
}
