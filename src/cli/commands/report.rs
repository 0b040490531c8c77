//! `blobpipe report`: the HTML dashboard, written to a directory and/or published.

use serde_json::json;

use crate::cli::args::ReportArgs;
use crate::cli::exit;
use crate::cli::render::emit;
use crate::error::{Error, Result};
use crate::report::{self, ReportOptions, SiteReport};
use crate::schedule::status::load_pipelines;

/// `blobpipe report PATH --html OUT/ [--publish]`: exit 0 when written, 2 when a
/// pipeline file did not load (the site still shows the others), 1 when a store could not
/// be read (the page says which).
///
/// # Errors
/// `Config` without `--html` or `--publish`, or a bad path; write and store errors.
pub async fn report(a: ReportArgs, json: bool) -> Result<i32> {
    if a.html.is_none() && !a.publish {
        return Err(Error::config(
            "say where the dashboard goes: --html OUT/ (a directory), --publish (the $web \
             static website of the first pipeline's account), or both",
        ));
    }
    if a.points < 2 || a.history == 0 || a.rows == 0 {
        return Err(Error::config(
            "--points must be at least 2, --history and --rows at least 1",
        ));
    }
    let loaded = load_pipelines(&a.pipelines, crate::pipeline::Needs::Store)?;
    let via = loaded.iter().find_map(|(_, p)| p.as_ref().ok()).cloned();
    let opts = ReportOptions {
        history: a.history,
        points: a.points,
        rows: a.rows,
        now: chrono::Utc::now(),
    };
    let site = report::gather(loaded, opts).await;
    let mut done: Vec<SiteReport> = Vec::new();
    if let Some(dir) = &a.html {
        done.push(report::write_site(&site, dir)?);
    }
    if a.publish {
        let via = via.ok_or_else(|| {
            Error::config("--publish: no pipeline file loaded, so no storage account to publish to")
        })?;
        done.push(report::publish(&site, &via, &a.container, &a.prefix).await?);
    }
    let store_errors = site
        .pipelines
        .iter()
        .any(|p| p.status.error.is_some() || p.error.is_some());
    emit(
        json,
        &json!({ "written": done, "errors": site.errors }),
        || {
            for d in &done {
                println!(
                    "dashboard: {} pipelines ({} stale or unreadable), {} files, {} bytes → {}",
                    d.pipelines,
                    d.stale,
                    d.files.len(),
                    d.bytes,
                    d.location
                );
            }
            for e in &site.errors {
                eprintln!("  not loaded: {e}");
            }
        },
    );
    Ok(exit::for_status(!site.errors.is_empty(), store_errors))
}
