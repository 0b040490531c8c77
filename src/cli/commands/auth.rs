//! `auth check`: which credential the chain picks and what it may do.

use std::path::Path;

use crate::cli::exit;
use crate::cli::render::{self, emit};
use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::store;

/// `blobpipe auth check FILE`.
///
/// # Errors
/// Config errors; a credential that cannot list or write is exit 1, not an error.
pub async fn check(pipeline: &Path, json: bool) -> Result<i32> {
    let p = Pipeline::load(pipeline)?;
    let r = store::azure::auth_check(&p.target, &p.retry).await?;
    emit(json, &r, || render::auth(&r));
    Ok(if r.ok() { exit::OK } else { exit::FAILED })
}
