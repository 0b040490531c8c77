//! `backup` (alias `run`): one run of a pipeline, with a progress reporter.

use crate::cli::args::BackupArgs;
use crate::cli::exit;
use crate::cli::render::{self, emit};
use crate::error::Result;
use crate::pipeline::{BackupOptions, Pipeline};
use crate::store;
use crate::support::progress::{Phase, Reporter};

/// `blobpipe backup FILE`.
///
/// # Errors
/// Config, store, lock and source errors of the run.
pub async fn backup(a: BackupArgs, json: bool, quiet: bool) -> Result<i32> {
    let p = Pipeline::load(&a.pipeline)?;
    let store = store::open(&p.target, &p.retry).await?;
    let cancel = crate::support::cancel::Cancel::new();
    cancel.on_signals();
    let reporter = Reporter::start("backup", Phase::Planning, quiet);
    let run_id = a.run_id.or_else(|| {
        std::env::var("CONTAINER_APP_JOB_EXECUTION_NAME")
            .ok()
            .filter(|s| !s.is_empty())
    });
    let res = crate::pipeline::backup(
        &p,
        store,
        BackupOptions {
            run_id,
            no_verify: a.no_verify,
            wait_lock: a.wait_lock,
            full: a.full,
            cancel,
            counters: Some(reporter.counters.clone()),
            scale: a.workers.map(|n| crate::pipeline::scale::LocalWorkers {
                workers: usize::from(n),
                queue: a.queue.clone(),
                pipeline_file: a.pipeline.clone(),
                exe: None,
            }),
        },
    )
    .await;
    reporter.finish().await;
    let r = res?;
    emit(json, &r, || render::backup(&r));
    Ok(exit::for_run(r.status))
}
