//! Reading the catalog: `snapshots` (list), `ls` (entries of one), `diff` (two of them).

use std::path::Path;

use crate::cli::args::SnapshotSel;
use crate::cli::exit;
use crate::cli::render::{self, emit};
use crate::error::{Error, Result};
use crate::manifest::catalog;
use crate::manifest::layout::Repo;
use crate::manifest::EntryKind;
use crate::pipeline::Pipeline;

/// `blobpipe snapshots FILE`.
///
/// # Errors
/// Config and store errors.
pub async fn snapshots(pipeline: &Path, json: bool) -> Result<i32> {
    let p = Pipeline::load_for_reading(pipeline)?;
    let repo = Repo::open(&p.target, &p.retry).await?;
    let list = catalog::list(&*repo.store, &repo.layout).await?;
    emit(json, &list, || render::snapshots(&list));
    Ok(exit::OK)
}

/// `blobpipe diff FILE FROM TO`.
///
/// # Errors
/// `NotFound` for an unknown snapshot, config and store errors.
pub async fn diff(pipeline: &Path, from: &str, to: &str, json: bool) -> Result<i32> {
    let p = Pipeline::load_for_reading(pipeline)?;
    let Repo { store, layout } = Repo::open(&p.target, &p.retry).await?;
    let a = catalog::load(
        &*store,
        &layout,
        &catalog::resolve(&*store, &layout, from).await?,
    )
    .await?;
    let b = catalog::load(
        &*store,
        &layout,
        &catalog::resolve(&*store, &layout, to).await?,
    )
    .await?;
    let d = crate::manifest::diff(&a.entries, &b.entries);
    emit(json, &d, || {
        render::diff(&d, &a.header.snapshot, &b.header.snapshot)
    });
    Ok(exit::OK)
}

/// `blobpipe ls FILE [SNAPSHOT] [--path GLOB…]`.
///
/// # Errors
/// `NotFound` for an unknown snapshot or when no entry matches the globs, `Config` for
/// bad globs, store errors.
pub async fn ls(pipeline: &Path, sel: &SnapshotSel, globs: &[String], json: bool) -> Result<i32> {
    let p = Pipeline::load_for_reading(pipeline)?;
    let repo = Repo::open(&p.target, &p.retry).await?;
    let id = sel.resolve(&repo).await?;
    let m = catalog::load(&*repo.store, &repo.layout, &id).await?;
    let matcher = if globs.is_empty() {
        None
    } else {
        let mut b = ignore::gitignore::GitignoreBuilder::new("/");
        for g in globs {
            b.add_line(None, g)
                .map_err(|e| Error::config(format!("invalid glob {g:?}: {e}")))?;
        }
        Some(
            b.build()
                .map_err(|e| Error::config(format!("invalid globs: {e}")))?,
        )
    };
    let entries: Vec<_> = m
        .entries
        .iter()
        .filter(|e| {
            matcher.as_ref().is_none_or(|g| {
                g.matched_path_or_any_parents(e.path.to_path(), e.kind == EntryKind::Dir)
                    .is_ignore()
            })
        })
        .collect();
    if !globs.is_empty() && entries.is_empty() {
        return Err(Error::not_found(format!(
            "no entry of {id} matches {}",
            globs.join(", ")
        )));
    }
    emit(json, &entries, || render::ls(&entries));
    Ok(exit::OK)
}
