//! The dashboard: every pipeline's history as a static HTML site.
//!
//! `blobpipe report PIPELINES --html OUT/` writes it to a directory, `report --publish`
//! uploads it to the account's `$web` static-website container (or one the user names)
//! through the [`crate::store::BlobStore`] trait, and `serve` answers the same pages at
//! `/dashboard/`. The stages: [`data`] reads what is stored (and only that — the
//! dashboard keeps no state of its own), [`svg`] draws charts, [`html`] lays out pages.
//!
//! It sits above `schedule` because the overview's figures are
//! [`crate::schedule::status::status`]'s own, so the page and `status --json` cannot
//! disagree.

pub mod data;
pub mod html;
pub mod svg;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Pipeline;
use crate::store;

pub use data::{gather, page_name, ReportOptions, Site};

/// The content type pages are served and published with.
pub const HTML: &str = "text/html; charset=utf-8";

/// What writing or publishing a site did.
#[derive(Debug, Clone, Serialize)]
pub struct SiteReport {
    /// Where it went: a directory, or `<target> container <name>`.
    pub location: String,
    /// Files written, in order (index first).
    pub files: Vec<String>,
    /// Bytes written.
    pub bytes: u64,
    /// Pipelines on the overview.
    pub pipelines: usize,
    /// Pipelines stale (over the RPO or without a verified snapshot) or unreadable.
    pub stale: usize,
    /// Pipeline files that did not load.
    pub errors: Vec<String>,
}

fn summary(site: &Site, location: String, pages: &[(String, String)]) -> SiteReport {
    SiteReport {
        location,
        files: pages.iter().map(|(n, _)| n.clone()).collect(),
        bytes: pages.iter().map(|(_, h)| h.len() as u64).sum(),
        pipelines: site.pipelines.len(),
        stale: site
            .pipelines
            .iter()
            .filter(|p| p.status.error.is_some() || p.status.within_rpo == Some(false))
            .count(),
        errors: site.errors.clone(),
    }
}

/// Write the site into `dir` (created if missing; files of the same names replaced).
///
/// # Errors
/// `Io` when the directory or a file cannot be written.
pub fn write_site(site: &Site, dir: &Path) -> Result<SiteReport> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::io(
            ErrorKind::Store,
            format!("creating the report directory {}", dir.display()),
            e,
        )
    })?;
    let pages = html::pages(site);
    for (name, text) in &pages {
        let path: PathBuf = dir.join(name);
        // Write beside, then rename: a reader never sees half a page.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::io(ErrorKind::Store, format!("writing {}", path.display()), e))?;
    }
    Ok(summary(site, dir.display().to_string(), &pages))
}

/// Whether `name` can be a publish container: `$web`, or an Azure container name.
pub fn valid_publish_container(name: &str) -> bool {
    name == "$web"
        || ((3..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--"))
}

/// Upload the site to `container` (default `$web`) of the account (or directory) that
/// `via`'s target names, under `prefix` (may be empty). Pages are put whole with
/// `Content-Type: text/html`, replacing the previous site's pages of the same names;
/// nothing else in the container is touched.
///
/// # Errors
/// `Config` for an invalid container name, store errors.
pub async fn publish(
    site: &Site,
    via: &Pipeline,
    container: &str,
    prefix: &str,
) -> Result<SiteReport> {
    if !valid_publish_container(container) {
        return Err(Error::config(format!(
            "--container {container:?}: use $web (the static website) or a container name of \
             3–63 characters of a–z, 0–9 and single '-'"
        )));
    }
    let prefix = prefix.trim_matches('/');
    let s = store::open_container(&via.target, &via.retry, container)
        .await
        .map_err(|e| e.context(format!("publishing the dashboard to container {container}")))?;
    let pages = html::pages(site);
    for (name, text) in &pages {
        let blob = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        s.put_file(&blob, Bytes::from(text.clone()), HTML)
            .await
            .map_err(|e| {
                let hint = if container == "$web" {
                    " (is the static website enabled? bicep: staticWebsite = true, or \
                     `az storage blob service-properties update --static-website`)"
                } else {
                    ""
                };
                e.context(format!("publishing {blob}{hint}"))
            })?;
    }
    Ok(summary(
        site,
        format!("{} container {container}", s.describe()),
        &pages,
    ))
}
