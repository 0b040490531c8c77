//! The planning walk: list a directory tree (metadata only), never following symlinks.
//!
//! Include and exclude patterns use gitignore syntax, matched against paths relative to
//! the root (`target/` excludes every directory named target, `/build` only the top one,
//! `docs/**/*.md` what it says). Excluded directories are not descended into. With
//! include patterns, a file is taken if it or one of its parent directories matches, and
//! directories are kept only when they match or hold something taken.
//!
//! Nothing unreadable is skipped silently: every directory or file that cannot be read is
//! reported as a [`Problem`] by path, and the run becomes partial. Sockets, FIFOs and
//! devices are not backed up (like GNU tar's default); each is logged.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::Stat;
use crate::error::{Error, ErrorKind, Result};
use crate::extract::config::FsSourceConfig;
use crate::extract::{partition, Plan, PlannedEntry, Problem};
use crate::manifest::{EntryKind, PathBytes};

fn matcher(root: &Path, globs: &[String]) -> Result<Option<Gitignore>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GitignoreBuilder::new(root);
    for g in globs {
        b.add_line(None, g)
            .map_err(|e| Error::config(format!("invalid glob {g:?}: {e}")))?;
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::config(format!("invalid globs: {e}")))
}

/// The error of a source root that exists but cannot be listed (e.g. mode 000).
fn unlistable_root(root: &Path, e: std::io::Error) -> Error {
    Error::caused(
        ErrorKind::Source,
        format!("cannot list source root {}", root.display()),
        e,
    )
}

/// Walk the source and split it into `count` partitions.
///
/// # Errors
/// `Source` if the root itself cannot be read or listed (missing, not a directory, no
/// permission): a run that could read nothing is failed, not a partial empty snapshot.
/// Problems below the root are collected in the plan instead.
pub fn plan(cfg: &FsSourceConfig, count: usize) -> Result<Plan> {
    let root = &cfg.root;
    // A missing root is a failed run (exit 1), not a "not found" lookup (exit 6).
    let meta = std::fs::metadata(root).map_err(|e| {
        Error::caused(
            ErrorKind::Source,
            format!("cannot read source root {}", root.display()),
            e,
        )
    })?;
    if !meta.is_dir() {
        return Err(Error::new(
            ErrorKind::Source,
            format!("source root {} is not a directory", root.display()),
        ));
    }
    let include = matcher(root, &cfg.include)?;
    let exclude = matcher(root, &cfg.exclude)?;
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = root.join(&rel_dir);
        let is_root = rel_dir.as_os_str().is_empty();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if is_root => return Err(unlistable_root(root, e)),
            Err(e) => {
                problems.push(Problem {
                    path: PathBytes(rel_dir.as_os_str().as_bytes().to_vec()),
                    error: format!("cannot list directory: {e}"),
                });
                continue;
            }
        };
        for de in rd {
            let de = match de {
                Ok(de) => de,
                Err(e) if is_root => return Err(unlistable_root(root, e)),
                Err(e) => {
                    problems.push(Problem {
                        path: PathBytes(rel_dir.as_os_str().as_bytes().to_vec()),
                        error: format!("cannot list directory: {e}"),
                    });
                    continue;
                }
            };
            let rel = rel_dir.join(de.file_name());
            let m = match std::fs::symlink_metadata(root.join(&rel)) {
                Ok(m) => m,
                Err(e) => {
                    problems.push(Problem {
                        path: PathBytes(rel.as_os_str().as_bytes().to_vec()),
                        error: format!("cannot stat: {e}"),
                    });
                    continue;
                }
            };
            let st = Stat::from_meta(&m);
            let Some(kind) = st.kind else {
                tracing::info!(
                    "skipping special file (socket, fifo or device): {}",
                    rel.display()
                );
                continue;
            };
            let is_dir = kind == EntryKind::Dir;
            if exclude
                .as_ref()
                .is_some_and(|x| x.matched_path_or_any_parents(&rel, is_dir).is_ignore())
            {
                continue;
            }
            if is_dir {
                stack.push(rel.clone());
            }
            entries.push((
                PlannedEntry {
                    path: PathBytes(rel.as_os_str().as_bytes().to_vec()),
                    kind,
                    size: st.size,
                },
                include
                    .as_ref()
                    .is_none_or(|inc| inc.matched_path_or_any_parents(&rel, is_dir).is_ignore()),
            ));
        }
    }
    // With includes, keep directories that match or hold something kept.
    let keep_dirs: BTreeSet<Vec<u8>> = if include.is_some() {
        let mut s = BTreeSet::new();
        for (e, taken) in &entries {
            if *taken {
                let mut p = e.path.0.as_slice();
                while let Some(i) = p.iter().rposition(|&b| b == b'/') {
                    p = &p[..i];
                    if !s.insert(p.to_vec()) {
                        break;
                    }
                }
            }
        }
        s
    } else {
        BTreeSet::new()
    };
    let mut kept: Vec<PlannedEntry> = entries
        .into_iter()
        .filter(|(e, taken)| *taken || (e.kind == EntryKind::Dir && keep_dirs.contains(&e.path.0)))
        .map(|(e, _)| e)
        .collect();
    kept.sort_by(|a, b| a.path.cmp(&b.path));
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Plan {
        source: format!(
            "fs:{}",
            root.canonicalize()
                .unwrap_or_else(|_| root.clone())
                .display()
        ),
        partitions: partition(kept, count),
        problems,
        ..Plan::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Plan) -> Vec<String> {
        p.partitions
            .iter()
            .flatten()
            .map(|e| e.path.display())
            .collect()
    }

    fn cfg(root: &Path, include: &[&str], exclude: &[&str]) -> FsSourceConfig {
        FsSourceConfig {
            root: root.to_path_buf(),
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn walk_sorts_excludes_and_keeps_links_and_empty_dirs() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("a/target/x")).unwrap();
        std::fs::create_dir_all(r.join("empty")).unwrap();
        std::fs::write(r.join("a/f.txt"), "x").unwrap();
        std::fs::write(r.join("a/f.tmp"), "x").unwrap();
        std::fs::write(r.join("a/target/x/y"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("link")).unwrap();
        let p = plan(&cfg(r, &[], &["*.tmp", "target/"]), 2).unwrap();
        assert_eq!(names(&p), vec!["a", "a/f.txt", "empty", "link"]);
        let kinds: Vec<_> = p.partitions.iter().flatten().map(|e| e.kind).collect();
        assert_eq!(kinds[3], EntryKind::Symlink);
    }

    #[test]
    fn includes_keep_parent_dirs_only() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("docs/sub")).unwrap();
        std::fs::create_dir_all(r.join("src")).unwrap();
        std::fs::write(r.join("docs/sub/a.md"), "x").unwrap();
        std::fs::write(r.join("docs/b.txt"), "x").unwrap();
        std::fs::write(r.join("src/c.md"), "x").unwrap();
        let p = plan(&cfg(r, &["docs/**/*.md"], &[]), 1).unwrap();
        assert_eq!(names(&p), vec!["docs", "docs/sub", "docs/sub/a.md"]);
    }

    #[test]
    fn missing_root_is_a_source_error() {
        let e = plan(&cfg(Path::new("/nonexistent/blobpipe"), &[], &[]), 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Source);
        assert!(e.to_string().contains("/nonexistent/blobpipe"));
    }
}
