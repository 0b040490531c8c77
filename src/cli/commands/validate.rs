//! `validate`: load and check a pipeline file, nothing else.

use std::path::Path;

use crate::cli::exit;
use crate::cli::render::{self, emit};
use crate::error::Result;
use crate::pipeline::Pipeline;

/// `blobpipe validate FILE`.
///
/// # Errors
/// `Config` with file, line and key when the pipeline file is invalid.
pub fn validate(pipeline: &Path, json: bool) -> Result<i32> {
    let p = Pipeline::load(pipeline)?;
    let summary = serde_json::json!({
        "valid": true,
        "pipeline": p.name,
        "target": p.target.display_url,
        "container": p.target.container,
        "prefix": p.target.prefix,
        "codec": p.compression.codec,
        "level": p.compression.level,
        "partition_size": p.partitions.size,
        "partition_max_entries": p.partitions.max_entries,
        "max_parallel": p.partitions.max_parallel,
    });
    emit(json, &summary, || render::validate(pipeline, &p));
    Ok(exit::OK)
}
