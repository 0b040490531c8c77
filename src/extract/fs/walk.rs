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

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::Stat;
use crate::error::{Error, ErrorKind, Result};
use crate::extract::config::FsSourceConfig;
use crate::extract::{Piece, PlannedEntry, Problem, Splitter};
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

/// What the walk finds, in path order.
#[derive(Debug)]
pub enum Walked {
    /// An entry to back up (metadata from the walk's `lstat`).
    Entry(PlannedEntry),
    /// A path that could not be listed or stat'ed.
    Problem(Problem),
}

/// Check the source root: it exists, is a directory and can be listed.
///
/// # Errors
/// `Source` naming the root.
pub fn check_root(root: &Path) -> Result<()> {
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
    std::fs::read_dir(root).map_err(|e| unlistable_root(root, e))?;
    Ok(())
}

/// The source description a filesystem snapshot records (`fs:` + the resolved root).
pub fn describe(root: &Path) -> String {
    format!(
        "fs:{}",
        root.canonicalize()
            .unwrap_or_else(|_| root.to_path_buf())
            .display()
    )
}

/// One child of a listed directory, ordered by `key` (the name, with a `/` appended for
/// the "descend" item of a directory): in that order, the paths of a whole subtree sort
/// by bytes exactly as the manifest needs them.
struct Item {
    key: Vec<u8>,
    rel: PathBuf,
    what: ItemKind,
}

enum ItemKind {
    Entry(PlannedEntry),
    Descend,
}

struct Matchers {
    root: PathBuf,
    include: Option<Gitignore>,
    exclude: Option<Gitignore>,
}

impl Matchers {
    fn excluded(&self, rel: &Path, is_dir: bool) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|x| x.matched_path_or_any_parents(rel, is_dir).is_ignore())
    }
    fn taken(&self, rel: &Path, is_dir: bool) -> bool {
        self.include
            .as_ref()
            .is_none_or(|inc| inc.matched_path_or_any_parents(rel, is_dir).is_ignore())
    }

    /// Whether anything below directory `rel` is taken (includes only; stops at the
    /// first): a directory that matches no include is kept only if it holds something.
    fn holds_taken(&self, rel: &Path) -> bool {
        let mut stack = vec![rel.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(self.root.join(&d)) else {
                continue;
            };
            for de in rd.flatten() {
                let child = d.join(de.file_name());
                let Ok(m) = std::fs::symlink_metadata(self.root.join(&child)) else {
                    continue;
                };
                let Some(kind) = Stat::from_meta(&m).kind else {
                    continue;
                };
                let is_dir = kind == EntryKind::Dir;
                if self.excluded(&child, is_dir) {
                    continue;
                }
                if self.taken(&child, is_dir) {
                    return true;
                }
                if is_dir {
                    stack.push(child);
                }
            }
        }
        false
    }

    /// List directory `rel` into sorted items; problems go to `emit`.
    fn list(
        &self,
        rel_dir: &Path,
        emit: &mut dyn FnMut(Walked) -> Result<()>,
    ) -> Result<Vec<Item>> {
        let is_root = rel_dir.as_os_str().is_empty();
        let dir_problem = |e: std::io::Error| Problem {
            path: PathBytes(rel_dir.as_os_str().as_bytes().to_vec()),
            error: format!("cannot list directory: {e}"),
        };
        let rd = match std::fs::read_dir(self.root.join(rel_dir)) {
            Ok(rd) => rd,
            Err(e) if is_root => return Err(unlistable_root(&self.root, e)),
            Err(e) => {
                emit(Walked::Problem(dir_problem(e)))?;
                return Ok(Vec::new());
            }
        };
        let mut items = Vec::new();
        for de in rd {
            let de = match de {
                Ok(de) => de,
                Err(e) if is_root => return Err(unlistable_root(&self.root, e)),
                Err(e) => {
                    emit(Walked::Problem(dir_problem(e)))?;
                    continue;
                }
            };
            let name = de.file_name();
            let rel = rel_dir.join(&name);
            let path = PathBytes(rel.as_os_str().as_bytes().to_vec());
            let m = match std::fs::symlink_metadata(self.root.join(&rel)) {
                Ok(m) => m,
                Err(e) => {
                    emit(Walked::Problem(Problem {
                        path,
                        error: format!("cannot stat: {e}"),
                    }))?;
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
            if self.excluded(&rel, is_dir) {
                continue;
            }
            let taken = self.taken(&rel, is_dir);
            let keep = taken || (is_dir && self.holds_taken(&rel));
            if !keep {
                continue;
            }
            let key = name.as_bytes().to_vec();
            if is_dir {
                let mut k = key.clone();
                k.push(b'/');
                items.push(Item {
                    key: k,
                    rel: rel.clone(),
                    what: ItemKind::Descend,
                });
            }
            items.push(Item {
                key,
                rel,
                what: ItemKind::Entry(PlannedEntry {
                    path,
                    kind,
                    size: st.size,
                }),
            });
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(items)
    }
}

/// Walk the source (metadata only), handing every entry and problem to `emit` in path
/// order (by bytes). Memory: the listings of the directories on the current path, never
/// the tree.
///
/// # Errors
/// `Source` if the root itself cannot be read or listed (missing, not a directory, no
/// permission): a run that could read nothing is failed, not a partial empty snapshot.
/// Problems below the root go to `emit`; `emit`'s own errors stop the walk.
pub fn walk(cfg: &FsSourceConfig, emit: &mut dyn FnMut(Walked) -> Result<()>) -> Result<()> {
    let root = &cfg.root;
    check_root(root)?;
    let m = Matchers {
        root: root.clone(),
        include: matcher(root, &cfg.include)?,
        exclude: matcher(root, &cfg.exclude)?,
    };
    let mut stack: Vec<std::vec::IntoIter<Item>> = vec![m.list(Path::new(""), emit)?.into_iter()];
    while let Some(top) = stack.last_mut() {
        let Some(item) = top.next() else {
            stack.pop();
            continue;
        };
        match item.what {
            ItemKind::Entry(e) => emit(Walked::Entry(e))?,
            ItemKind::Descend => {
                let items = m.list(&item.rel, emit)?;
                stack.push(items.into_iter());
            }
        }
    }
    Ok(())
}

/// Walk the source and cut it into partitions ([`crate::extract::Splitter`]), each
/// handed to `emit` as soon as it is complete.
///
/// # Errors
/// As [`walk`]; `emit`'s errors stop the walk.
pub fn pieces(
    cfg: &FsSourceConfig,
    split: &crate::extract::config::PartitionsConfig,
    emit: &mut dyn FnMut(Piece) -> Result<()>,
) -> Result<()> {
    let mut s = Splitter::new(split.size, split.max_entries);
    walk(cfg, &mut |w| match w {
        Walked::Entry(e) => s.push(e, emit),
        Walked::Problem(p) => {
            s.problem(p);
            Ok(())
        }
    })?;
    s.finish(emit)
}

/// Walk the source and return every partition (tests and small trees).
///
/// # Errors
/// As [`walk`].
pub fn plan(cfg: &FsSourceConfig, split: &crate::extract::config::PartitionsConfig) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    pieces(cfg, split, &mut |p| {
        out.push(p);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &[Piece]) -> Vec<String> {
        p.iter()
            .flat_map(|p| p.entries.iter())
            .map(|e| e.path.display())
            .collect()
    }

    fn split(size: u64) -> crate::extract::config::PartitionsConfig {
        crate::extract::config::PartitionsConfig {
            size,
            max_entries: 16,
            max_parallel: 1,
        }
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
        let p = plan(&cfg(r, &[], &["*.tmp", "target/"]), &split(1 << 20)).unwrap();
        assert_eq!(names(&p), vec!["a", "a/f.txt", "empty", "link"]);
        let kinds: Vec<_> = p.iter().flat_map(|p| p.entries.iter()).map(|e| e.kind).collect();
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
        let p = plan(&cfg(r, &["docs/**/*.md"], &[]), &split(1 << 20)).unwrap();
        assert_eq!(names(&p), vec!["docs", "docs/sub", "docs/sub/a.md"]);
    }

    #[test]
    fn missing_root_is_a_source_error() {
        let e = plan(&cfg(Path::new("/nonexistent/blobpipe"), &[], &[]), &split(1 << 20)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Source);
        assert!(e.to_string().contains("/nonexistent/blobpipe"));
    }

    #[test]
    fn walk_order_is_byte_order_across_subtrees() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        // "a" < "a b" < "a.txt" < "a/x" < "a0": a naive depth-first walk gets this wrong.
        std::fs::create_dir_all(r.join("a/sub")).unwrap();
        for f in ["a b", "a.txt", "a/x", "a0", "a/sub/y", "a/sub.z", "B"] {
            std::fs::write(r.join(f), "x").unwrap();
        }
        let p = plan(&cfg(r, &[], &[]), &split(1 << 20)).unwrap();
        let got = names(&p);
        let mut want = got.clone();
        want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(got, want);
        assert_eq!(got.len(), 9);
    }

    #[test]
    fn partitions_are_contiguous_bounded_and_stable_under_a_local_change() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in 0..20 {
            std::fs::create_dir_all(r.join(format!("d{d:02}"))).unwrap();
            for f in 0..30 {
                std::fs::write(r.join(format!("d{d:02}/f{f:02}")), vec![b'x'; 100 * (f % 7)]).unwrap();
            }
        }
        let cut = |p: &[Piece]| -> Vec<String> {
            p.iter().map(|p| p.entries[0].path.display()).collect()
        };
        let a = plan(&cfg(r, &[], &[]), &split(64 << 10)).unwrap();
        assert!(a.len() > 10, "{} partitions", a.len());
        assert!(a.iter().all(|p| p.entries.len() <= 16));
        assert_eq!(names(&a).len(), 620);
        for w in a.windows(2) {
            assert_eq!(w[0].hi.as_ref(), Some(&w[1].entries[0].path));
            assert_eq!(w[1].lo.as_ref(), Some(&w[1].entries[0].path));
        }
        // One new file near the start moves only nearby boundaries.
        std::fs::write(r.join("d01/new"), "x").unwrap();
        let b = plan(&cfg(r, &[], &[]), &split(64 << 10)).unwrap();
        let (ca, cb) = (cut(&a), cut(&b));
        let same = ca.iter().filter(|c| cb.contains(c)).count();
        assert!(same + 3 >= ca.len(), "boundaries moved: {ca:?} vs {cb:?}");
        let da: Vec<_> = a.iter().map(|p| p.digest.clone()).collect();
        let unchanged = b.iter().filter(|p| da.contains(&p.digest)).count();
        assert!(unchanged + 3 >= a.len(), "{unchanged} of {} partitions kept", a.len());
    }
}
