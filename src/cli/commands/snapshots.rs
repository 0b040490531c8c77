//! Reading the catalog: `snapshots` (list), `ls` (entries of one), `diff` (two of them),
//! `copy` (snapshots to another pipeline's store).

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

/// `blobpipe copy FROM TO [SNAPSHOT…]`.
///
/// # Errors
/// `NotFound` for an unknown snapshot, `Integrity` for a damaged source block, config and
/// store errors.
pub async fn copy(from: &Path, to: &Path, ids: &[String], json: bool) -> Result<i32> {
    let a = Pipeline::load_for_reading(from)?;
    let b = Pipeline::load_for_reading(to)?;
    let src = a.open_repo().await?;
    // The destination gets the source's key record (copy writes blobs as stored): its
    // pipeline must name a key that opens it, checked before anything is written.
    let dst = Repo::open(&b.target, &b.retry).await?;
    if src.layout.key().is_some() {
        let enc = b.encryption.as_ref().ok_or_else(|| {
            Error::config(format!(
                "copy: {} is encrypted, {} has no [encryption]; give it the same key",
                from.display(),
                to.display()
            ))
        })?;
        crate::manifest::layout::unlock(&*src.store, &src.layout, Some(enc), false)
            .await
            .map_err(|e| e.context(format!("copy: the key of {}", to.display())))?;
    }
    if src.store.describe() == dst.store.describe() && a.target.prefix == b.target.prefix {
        return Err(Error::config(
            "copy: both pipelines name the same store and prefix; nothing to copy",
        ));
    }
    let cancel = crate::support::cancel::Cancel::new();
    cancel.on_signals();
    let r = crate::pipeline::copy::copy(&src, &dst, ids, &cancel).await?;
    emit(json, &r, || {
        crate::support::out::outln!(
            "copied {} snapshot(s) ({} already there): {} packs ({} already there), {} blocks sent ({} found staged), {} bytes, {} segments and manifests; every block MD5-checked",
            r.copied.len(),
            r.present.len(),
            r.packs_copied,
            r.packs_present,
            r.blocks_sent,
            r.blocks_reused,
            r.bytes_sent,
            r.small_blobs
        );
    });
    Ok(exit::OK)
}

/// `blobpipe diff FILE FROM TO`.
///
/// # Errors
/// `NotFound` for an unknown snapshot, config and store errors.
pub async fn diff(pipeline: &Path, from: &str, to: &str, json: bool) -> Result<i32> {
    let p = Pipeline::load_for_reading(pipeline)?;
    let Repo { store, layout } = p.open_repo().await?;
    // Heads only; the entries are compared a segment of each at a time.
    let a = catalog::load_head(
        &*store,
        &layout,
        &catalog::resolve(&*store, &layout, from).await?,
    )
    .await?;
    let b = catalog::load_head(
        &*store,
        &layout,
        &catalog::resolve(&*store, &layout, to).await?,
    )
    .await?;
    use crate::manifest::segment::{self, EntryReader};
    let d = segment::diff(
        EntryReader::new(&*store, &layout, &a),
        EntryReader::new(&*store, &layout, &b),
    )
    .await?;
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
    let repo = p.open_repo().await?;
    // The head, then the entries a segment at a time (only the segments an anchored
    // glob can reach): memory holds one segment, never the snapshot.
    let m = sel.load_readable(&repo).await?;
    let id = m.header.snapshot.clone();
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
    // One anchored glob: read only the segments whose range can hold its matches.
    let prefix = match globs {
        [g] => crate::manifest::segment::glob_prefix(g),
        _ => None,
    };
    let mut reader = crate::manifest::segment::EntryReader::new(&*repo.store, &repo.layout, &m)
        .with_prefix(prefix);
    let mut listed = 0u64;
    while let Some(batch) = reader.next_batch().await? {
        let entries: Vec<_> = batch
            .iter()
            .filter(|e| {
                matcher.as_ref().is_none_or(|g| {
                    g.matched_path_or_any_parents(e.path.to_path(), e.kind == EntryKind::Dir)
                        .is_ignore()
                })
            })
            .collect();
        if json {
            render::ls_json_part(&entries, listed == 0);
        } else {
            render::ls(&entries);
        }
        listed += entries.len() as u64;
        if crate::support::out::stdout_closed() {
            // The reader went away (`ls | head`): stop reading, like any Unix tool.
            return Ok(exit::OK);
        }
    }
    if !globs.is_empty() && listed == 0 {
        return Err(Error::not_found(format!(
            "no entry of {id} matches {}",
            globs.join(", ")
        )));
    }
    if json {
        render::ls_json_end(listed == 0);
    }
    Ok(exit::OK)
}
