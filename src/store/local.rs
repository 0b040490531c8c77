//! A store in a local directory: a disk, an NFS or an Azure Files mount.
//!
//! Why it looks the way it does:
//!
//! - **Committed blobs are plain files** at `<root>/<blob name>`, so a user with no
//!   blobpipe at hand can run `tar xzf <root>/<prefix>/packs/ab/….tar.gz` directly.
//! - **Internal state lives in hidden directories** of the root, keyed by the SHA-256 of
//!   the blob name (so no blob name can collide with them, however it is spelled):
//!   - `.meta/<h[..2]>/<h>.json`: properties (tier, Content-MD5, metadata, tags, block
//!     list, last modified) — what Azure keeps beside the bytes;
//!   - `.staging/<h>/<hex of block id>`: staged, uncommitted blocks;
//!   - `.leases/<h>/<generation>.json`: leases (see below).
//!
//!   Blob names may therefore not contain a segment starting with `.`: such names are
//!   rejected, and listing skips every dot entry (internal dirs and temp files).
//! - **Every write is temp file + fsync + atomic publish**, the temp file in the
//!   destination directory: `rename` for overwrites, `hard_link` for create-only (it
//!   fails with `AlreadyExists`, so exactly one of many concurrent creators wins, even
//!   across machines sharing an NFS mount). A crash never leaves a partial blob visible;
//!   it may leave dot-named temp files, which listing ignores.
//! - **The data file is the truth, the sidecar describes it.** The sidecar is published
//!   right *after* the data (a create-only loser must not overwrite the winner's
//!   sidecar); a sidecar that is missing or whose recorded size differs from the file
//!   (a crash between the two renames) is ignored and the blob reads as Hot with no
//!   Content-MD5. Corruption of the data is never hidden: reads return what is on
//!   disk, verifying is the engine's job.
//! - **Leases are generations**: the lease on a blob is the highest-numbered file in its
//!   lease directory. Acquiring (fresh, after a release, or taking over an expired
//!   lease) creates generation `n + 1` with `hard_link`, so of many contenders exactly
//!   one wins; renew and release rewrite only the holder's own generation file. (A
//!   single lease file taken over by "write temp, rename, re-read" lets two contenders
//!   both see their own id and both believe they won.) Expiry uses the wall clock, so
//!   machines sharing a mount need synchronised clocks.
//!
//! Limits of a filesystem: a blob `a` and a blob `a/b` cannot both exist (a file and a
//! directory of one name) — the second write fails with `Conflict`; the filesystem must
//! support hard links (local disks and NFS do; Azure Files over SMB does not) for
//! create-only writes and leases.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    BlobProps, BlobStore, BlockInfo, BlockList, CommitOptions, Lease, ListItem, ListPage,
    PutOutcome, Tier,
};
use crate::error::{Error, ErrorKind, Result};

const META_DIR: &str = ".meta";
const STAGING_DIR: &str = ".staging";
const LEASE_DIR: &str = ".leases";
const TMP_PREFIX: &str = ".tmp-";
/// Azure limits block ids to 64 bytes before base64 (88 characters after); a little
/// slack, and the hex file name stays far below the usual 255-byte limit.
const MAX_BLOCK_ID_LEN: usize = 100;
const COPY_BUF: usize = 1 << 20;

/// A store in a local directory. See the module docs for the on-disk layout.
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
}

/// Properties sidecar of one committed blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    /// The blob this describes (for people reading `.meta` by hand).
    blob: String,
    /// Size of the data file when the sidecar was written; a mismatch marks it stale.
    size: u64,
    tier: Tier,
    /// Base64, as Azure shows it.
    content_md5: Option<String>,
    metadata: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    blocks: Vec<MetaBlock>,
    last_modified: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetaBlock {
    id: String,
    size: u64,
}

/// One lease generation file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRecord {
    blob: String,
    lease_id: String,
    holder: String,
    ttl_ms: u64,
    /// Unix milliseconds.
    expires_at: u64,
    released: bool,
}

impl LocalStore {
    /// Open (creating) a store rooted at `dir`.
    ///
    /// # Errors
    /// `Store` if the directory (or its internal subdirectories) cannot be created.
    pub fn open(dir: &Path) -> crate::Result<Self> {
        for sub in ["", META_DIR, STAGING_DIR, LEASE_DIR] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| {
                Error::io(
                    ErrorKind::Store,
                    format!("creating local store directory {}", p.display()),
                    e,
                )
                .with_kind_if_not_found(ErrorKind::Store)
            })?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                root: dir.to_path_buf(),
            }),
        })
    }

    /// The directory this store is rooted at.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The path of `blob`'s data file (whether or not it exists).
    ///
    /// # Errors
    /// `Config` if `blob` is not a valid blob name for this store.
    pub fn path_of(&self, blob: &str) -> Result<PathBuf> {
        validate_name(blob)?;
        Ok(self.inner.data_path(blob))
    }

    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::internal(format!("local store worker failed: {e}")))?
    }
}

/// Small extension: `Error::io` maps a missing path to `NotFound`, which is right for a
/// missing blob but wrong for a missing store directory.
trait KindFix {
    fn with_kind_if_not_found(self, kind: ErrorKind) -> Self;
}

impl KindFix for Error {
    fn with_kind_if_not_found(self, kind: ErrorKind) -> Self {
        if self.kind() == ErrorKind::NotFound {
            self.with_kind(kind)
        } else {
            self
        }
    }
}

/// Whether `s` may be one segment of a blob name in a local store.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 255
        && !s.contains(['\\', '\0'])
        && s.trim() == s
}

/// Check a blob name: `/`-separated, relative, no empty, `.`-leading (so no `.`/`..`)
/// segments, no backslash or NUL.
fn validate_name(blob: &str) -> Result<()> {
    let why = if blob.is_empty() {
        Some("it is empty")
    } else if blob.starts_with('/') {
        Some("it is absolute (starts with '/')")
    } else if blob.split('/').any(|s| s == "..") {
        Some("it contains a '..' segment")
    } else if blob.split('/').any(str::is_empty) {
        Some("it contains an empty segment ('//' or a trailing '/')")
    } else if blob.split('/').any(|s| s.starts_with('.')) {
        Some("a segment starts with '.', reserved for the store's internal files")
    } else if blob.contains(['\\', '\0']) {
        Some("it contains a backslash or NUL")
    } else if blob.split('/').any(|s| s.len() > 255 || s.trim() != s) {
        Some("a segment is longer than 255 bytes or has leading/trailing whitespace")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::config(format!(
            "invalid blob name {blob:?} for a local store: {why}"
        ))),
        None => Ok(()),
    }
}

fn validate_block_id(blob: &str, block_id: &str) -> Result<()> {
    if block_id.is_empty() || block_id.len() > MAX_BLOCK_ID_LEN {
        return Err(Error::integrity(format!(
            "InvalidBlockId: block id {block_id:?} of {blob} must be 1..={MAX_BLOCK_ID_LEN} characters"
        )));
    }
    Ok(())
}

fn name_hash(blob: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(blob.as_bytes()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn store_io(what: impl std::fmt::Display, path: &Path, e: io::Error) -> Error {
    Error::io(ErrorKind::Store, format!("{what} ({})", path.display()), e)
}

/// A fresh dot-named temp path in `dir` (listing skips it).
fn tmp_in(dir: &Path) -> PathBuf {
    dir.join(format!(
        "{TMP_PREFIX}{}",
        crate::support::ids::random_hex(8)
    ))
}

/// fsync a directory so a rename/link in it is durable. Best effort: some network
/// filesystems refuse to fsync directories.
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|f| f.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "directory fsync not supported");
    }
}

/// Write `data` to a fresh temp file in `dir`, fsynced. Returns its path.
fn write_tmp(dir: &Path, data: &[u8], what: &str) -> Result<PathBuf> {
    let tmp = tmp_in(dir);
    let res = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(
            store_io(format!("writing {what}"), &tmp, e).with_kind_if_not_found(ErrorKind::Store)
        );
    }
    Ok(tmp)
}

fn remove_quietly(path: &Path) {
    let _ = fs::remove_file(path);
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Inner {
    fn data_path(&self, blob: &str) -> PathBuf {
        self.root.join(blob)
    }

    fn meta_path(&self, blob: &str) -> PathBuf {
        let h = name_hash(blob);
        self.root
            .join(META_DIR)
            .join(&h[..2])
            .join(format!("{h}.json"))
    }

    fn staging_dir(&self, blob: &str) -> PathBuf {
        self.root.join(STAGING_DIR).join(name_hash(blob))
    }

    fn lease_dir(&self, blob: &str) -> PathBuf {
        self.root.join(LEASE_DIR).join(name_hash(blob))
    }

    /// Create the directory that will hold `blob`'s data file, refusing when a blob
    /// already occupies one of its parent names.
    fn ensure_parent(&self, blob: &str) -> Result<PathBuf> {
        let path = self.data_path(blob);
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        if let Err(e) = fs::create_dir_all(&parent) {
            // Find the ancestor that is a file, for a message that says what to do.
            let mut prefix = String::new();
            for seg in blob
                .split('/')
                .take(blob.split('/').count().saturating_sub(1))
            {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(seg);
                if self.data_path(&prefix).is_file() {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "cannot store {blob} ({}): blob {prefix} exists, and a local store \
                             cannot hold a blob and a 'directory' of the same name",
                            path.display()
                        ),
                    ));
                }
            }
            return Err(
                store_io(format!("creating the directory of {blob}"), &parent, e)
                    .with_kind_if_not_found(ErrorKind::Store),
            );
        }
        if path.is_dir() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "cannot store {blob} ({}): it is a directory holding other blobs, and a \
                     local store cannot hold a blob and a 'directory' of the same name",
                    path.display()
                ),
            ));
        }
        Ok(parent)
    }

    /// The data file's size and mtime, `None` if `blob` does not exist.
    fn stat(&self, blob: &str) -> Result<Option<fs::Metadata>> {
        let path = self.data_path(blob);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m)),
            Ok(_) => Ok(None),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                Ok(None)
            }
            Err(e) => Err(store_io(format!("reading properties of {blob}"), &path, e)),
        }
    }

    /// The sidecar of `blob` if it describes a data file of `size` bytes.
    fn meta(&self, blob: &str, size: u64) -> Option<Meta> {
        read_json::<Meta>(&self.meta_path(blob)).filter(|m| m.size == size && m.blob == blob)
    }

    fn props_of(&self, blob: &str, stat: &fs::Metadata) -> BlobProps {
        let size = stat.len();
        match self.meta(blob, size) {
            Some(m) => BlobProps {
                size,
                content_md5: m.content_md5.as_deref().and_then(super::md5_from_b64),
                tier: m.tier,
                metadata: m.metadata,
                last_modified: m.last_modified,
            },
            None => BlobProps {
                size,
                content_md5: None,
                tier: Tier::Hot,
                metadata: BTreeMap::new(),
                last_modified: stat
                    .modified()
                    .map(chrono::DateTime::<chrono::Utc>::from)
                    .unwrap_or_else(|_| chrono::Utc::now()),
            },
        }
    }

    /// Write `meta` to a temp file beside its final place; publish with `publish_meta`.
    fn prepare_meta(&self, meta: &Meta) -> Result<(PathBuf, PathBuf)> {
        let path = self.meta_path(&meta.blob);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| {
            store_io(
                format!("creating the sidecar directory of {}", meta.blob),
                &dir,
                e,
            )
            .with_kind_if_not_found(ErrorKind::Store)
        })?;
        let json = serde_json::to_vec_pretty(meta)
            .map_err(|e| Error::internal(format!("encoding properties of {}: {e}", meta.blob)))?;
        let tmp = write_tmp(&dir, &json, &format!("properties of {}", meta.blob))?;
        Ok((tmp, path))
    }

    fn publish_meta(&self, blob: &str, tmp: &Path, path: &Path) -> Result<()> {
        fs::rename(tmp, path).map_err(|e| {
            remove_quietly(tmp);
            store_io(format!("publishing properties of {blob}"), path, e)
                .with_kind_if_not_found(ErrorKind::Store)
        })?;
        if let Some(dir) = path.parent() {
            sync_dir(dir);
        }
        Ok(())
    }

    /// Publish the fsynced temp data file `tmp` as `blob` with `meta` as its sidecar
    /// (`tmp` is removed if the sidecar cannot be prepared). Create-only publishes with
    /// `hard_link`; `Ok(false)` means the blob already existed and nothing was published
    /// (temp files removed).
    fn publish(&self, blob: &str, tmp: &Path, meta: &Meta, create_only: bool) -> Result<bool> {
        let (meta_tmp, meta_path) = match self.prepare_meta(meta) {
            Ok(p) => p,
            Err(e) => {
                remove_quietly(tmp);
                return Err(e);
            }
        };
        let path = self.data_path(blob);
        if create_only {
            let linked = fs::hard_link(tmp, &path);
            remove_quietly(tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    remove_quietly(&meta_tmp);
                    return Ok(false);
                }
                Err(e) => {
                    remove_quietly(&meta_tmp);
                    let hint = if matches!(
                        e.kind(),
                        io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
                    ) {
                        " (create-only writes need a filesystem with hard links)"
                    } else {
                        ""
                    };
                    return Err(store_io(format!("publishing {blob}{hint}"), &path, e)
                        .with_kind_if_not_found(ErrorKind::Store));
                }
            }
        } else if let Err(e) = fs::rename(tmp, &path) {
            remove_quietly(tmp);
            remove_quietly(&meta_tmp);
            return Err(store_io(format!("publishing {blob}"), &path, e)
                .with_kind_if_not_found(ErrorKind::Store));
        }
        if let Some(dir) = path.parent() {
            sync_dir(dir);
        }
        self.publish_meta(blob, &meta_tmp, &meta_path)?;
        Ok(true)
    }

    fn remove_staging(&self, blob: &str) {
        let dir = self.staging_dir(blob);
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(blob, dir = %dir.display(), error = %e, "could not remove staged blocks");
            }
        }
    }

    /// Remove now-empty directories from `blob`'s parent up to (not including) the root.
    fn prune_dirs(&self, blob: &str) {
        let mut dir = self.data_path(blob);
        while dir.pop() && dir != self.root && dir.starts_with(&self.root) {
            if fs::remove_dir(&dir).is_err() {
                break;
            }
        }
    }

    /// Run `f` (which creates a file in `blob`'s directory) after creating that
    /// directory, retrying when a concurrent delete pruned it in between.
    fn in_parent<T>(&self, blob: &str, mut f: impl FnMut(&Path) -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            let dir = self.ensure_parent(blob)?;
            match f(&dir) {
                Err(e) if e.kind() == ErrorKind::Store && attempt < 3 && !dir.is_dir() => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    // ---- operations -------------------------------------------------------------

    fn stage_block(&self, blob: &str, block_id: &str, data: &[u8], md5: [u8; 16]) -> Result<()> {
        validate_name(blob)?;
        validate_block_id(blob, block_id)?;
        if super::md5(data) != md5 {
            return Err(Error::integrity(format!(
                "Md5Mismatch: block {block_id} of {blob}: the data does not match its \
                 transactional MD5"
            )));
        }
        let dir = self.staging_dir(blob);
        fs::create_dir_all(&dir).map_err(|e| {
            store_io(format!("staging block {block_id} of {blob}"), &dir, e)
                .with_kind_if_not_found(ErrorKind::Store)
        })?;
        let tmp = write_tmp(&dir, data, &format!("block {block_id} of {blob}"))?;
        let path = dir.join(hex::encode(block_id));
        fs::rename(&tmp, &path).map_err(|e| {
            remove_quietly(&tmp);
            store_io(format!("staging block {block_id} of {blob}"), &path, e)
                .with_kind_if_not_found(ErrorKind::Store)
        })
    }

    fn commit_blocks(&self, blob: &str, block_ids: &[String], opts: &CommitOptions) -> Result<()> {
        validate_name(blob)?;
        let path = self.data_path(blob);
        let staging = self.staging_dir(blob);
        let current = self.stat(blob)?;
        if opts.create_only && current.is_some() {
            return Err(conflict(blob, &path));
        }
        // Offsets of the current blob's committed blocks, for ids reused from it.
        let mut committed: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        if let Some(m) = current.as_ref().and_then(|s| self.meta(blob, s.len())) {
            let mut off = 0;
            for b in m.blocks {
                committed.entry(b.id).or_insert((off, b.size));
                off += b.size;
            }
        }
        // Resolve every id before writing anything.
        enum Src {
            Staged(PathBuf),
            Committed(u64, u64),
        }
        let mut sources = Vec::with_capacity(block_ids.len());
        for id in block_ids {
            validate_block_id(blob, id)?;
            let staged = staging.join(hex::encode(id));
            if staged.is_file() {
                sources.push((id, Src::Staged(staged)));
            } else if let Some(&(off, size)) = committed.get(id) {
                sources.push((id, Src::Committed(off, size)));
            } else {
                return Err(Error::integrity(format!(
                    "InvalidBlockList: block {id} of {blob} is neither staged (in {}) nor \
                     committed in the current blob",
                    staging.display()
                )));
            }
        }

        let (tmp, blocks, md5) = self.in_parent(blob, |dir| {
            let tmp = tmp_in(dir);
            let res = (|| -> io::Result<(Vec<MetaBlock>, [u8; 16])> {
                use md5::{Digest, Md5};
                let mut out = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                let mut hasher = Md5::new();
                let mut buf = vec![0u8; COPY_BUF];
                let mut blocks = Vec::with_capacity(sources.len());
                for (id, src) in &sources {
                    let (mut reader, len): (Box<dyn Read>, u64) = match src {
                        Src::Staged(p) => {
                            let f = File::open(p)?;
                            let len = f.metadata()?.len();
                            (Box::new(f), len)
                        }
                        Src::Committed(off, size) => {
                            let mut f = File::open(&path)?;
                            f.seek(SeekFrom::Start(*off))?;
                            (Box::new(f.take(*size)), *size)
                        }
                    };
                    let mut copied = 0u64;
                    loop {
                        let n = reader.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                        out.write_all(&buf[..n])?;
                        copied += n as u64;
                    }
                    if copied != len {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("block {id} changed size while committing"),
                        ));
                    }
                    blocks.push(MetaBlock {
                        id: (*id).clone(),
                        size: len,
                    });
                }
                out.sync_all()?;
                Ok((blocks, hasher.finalize().into()))
            })();
            match res {
                Ok((blocks, md5)) => Ok((tmp.clone(), blocks, md5)),
                Err(e) => {
                    remove_quietly(&tmp);
                    Err(store_io(format!("committing blocks of {blob}"), &tmp, e)
                        .with_kind_if_not_found(ErrorKind::Store))
                }
            }
        })?;

        if let Some(want) = opts.content_md5 {
            if want != md5 {
                remove_quietly(&tmp);
                return Err(Error::integrity(format!(
                    "Md5Mismatch: {blob} ({}): the committed blocks have MD5 {} but the \
                     commit gave Content-MD5 {}; nothing was published",
                    path.display(),
                    super::b64(&md5),
                    super::b64(&want)
                )));
            }
        }
        let size = blocks.iter().map(|b| b.size).sum();
        let meta = Meta {
            blob: blob.to_string(),
            size,
            tier: opts.tier,
            content_md5: opts.content_md5.map(|m| super::b64(&m)),
            metadata: opts.metadata.clone(),
            tags: opts.tags.clone(),
            blocks,
            last_modified: chrono::Utc::now(),
        };
        if !self.publish(blob, &tmp, &meta, opts.create_only)? {
            return Err(conflict(blob, &path));
        }
        self.remove_staging(blob);
        Ok(())
    }

    fn put(&self, blob: &str, data: &[u8], create_only: bool) -> Result<PutOutcome> {
        validate_name(blob)?;
        if create_only && self.stat(blob)?.is_some() {
            return self.compare_existing(blob, data);
        }
        let tmp = self.in_parent(blob, |dir| write_tmp(dir, data, blob))?;
        let md5 = super::md5(data);
        let meta = Meta {
            blob: blob.to_string(),
            size: data.len() as u64,
            tier: Tier::Hot,
            content_md5: Some(super::b64(&md5)),
            metadata: BTreeMap::new(),
            tags: BTreeMap::new(),
            blocks: Vec::new(),
            last_modified: chrono::Utc::now(),
        };
        if !self.publish(blob, &tmp, &meta, create_only)? {
            return self.compare_existing(blob, data);
        }
        // Like Azure's Put Blob, a whole put discards uncommitted blocks.
        self.remove_staging(blob);
        Ok(PutOutcome::Created)
    }

    /// A create-only put met an existing blob: identical content is success.
    fn compare_existing(&self, blob: &str, data: &[u8]) -> Result<PutOutcome> {
        let path = self.data_path(blob);
        let same = (|| -> io::Result<bool> {
            let mut f = File::open(&path)?;
            if f.metadata()?.len() != data.len() as u64 {
                return Ok(false);
            }
            let mut buf = vec![0u8; COPY_BUF.min(data.len().max(1))];
            let mut off = 0;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok(off == data.len());
                }
                if off + n > data.len() || buf[..n] != data[off..off + n] {
                    return Ok(false);
                }
                off += n;
            }
        })()
        .map_err(|e| store_io(format!("comparing {blob} with existing content"), &path, e))?;
        if same {
            Ok(PutOutcome::AlreadyIdentical)
        } else {
            Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "BlobAlreadyExists: {blob} ({}) already exists with different content",
                    path.display()
                ),
            ))
        }
    }

    fn get(&self, blob: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        validate_name(blob)?;
        let path = self.data_path(blob);
        let stat = self.stat(blob)?.ok_or_else(|| not_found(blob, &path))?;
        if self
            .meta(blob, stat.len())
            .is_some_and(|m| m.tier == Tier::Archive)
        {
            return Err(Error::new(
                ErrorKind::Archived,
                format!(
                    "BlobArchived: {blob} ({}) is in the Archive tier; rehydrate it first \
                     (set its tier to Hot or Cool)",
                    path.display()
                ),
            ));
        }
        let mut f = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => not_found(blob, &path),
            _ => store_io(format!("opening {blob}"), &path, e),
        })?;
        let len = f
            .metadata()
            .map_err(|e| store_io(format!("reading {blob}"), &path, e))?
            .len();
        let r = match range {
            None => 0..len,
            Some(r) if r.start <= r.end && r.end <= len => r,
            Some(r) => {
                return Err(Error::integrity(format!(
                    "InvalidRange: {}..{} of {blob} ({}, {len} bytes)",
                    r.start,
                    r.end,
                    path.display()
                )))
            }
        };
        let n = usize::try_from(r.end - r.start)
            .map_err(|_| Error::integrity(format!("range of {blob} too large for memory")))?;
        let mut buf = vec![0u8; n];
        if n > 0 {
            f.seek(SeekFrom::Start(r.start))
                .and_then(|_| f.read_exact(&mut buf))
                .map_err(|e| {
                    store_io(
                        format!("reading {}..{} of {blob}", r.start, r.end),
                        &path,
                        e,
                    )
                    .with_kind_if_not_found(ErrorKind::Store)
                })?;
        }
        Ok(Bytes::from(buf))
    }

    fn head(&self, blob: &str) -> Result<Option<BlobProps>> {
        validate_name(blob)?;
        Ok(self.stat(blob)?.map(|s| self.props_of(blob, &s)))
    }

    fn list(&self, prefix: &str, marker: Option<&str>, max: usize) -> Result<ListPage> {
        let limit = max.max(1) + 1;
        let (dir_part, leaf) = match prefix.rfind('/') {
            Some(i) => (&prefix[..i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        // A prefix whose directory part no valid name can have matches nothing (and
        // must not walk outside the root: `../`).
        if !dir_part.is_empty() && !dir_part.split('/').all(valid_segment) {
            return Ok(ListPage::default());
        }
        let (start, name_prefix) = if dir_part.is_empty() {
            (self.root.clone(), String::new())
        } else {
            (self.root.join(dir_part), format!("{dir_part}/"))
        };
        let mut items = Vec::new();
        self.walk(&start, &name_prefix, leaf, marker, limit, &mut items)?;
        let next = if items.len() >= limit {
            items.truncate(limit - 1);
            items.last().map(|i| i.name.clone())
        } else {
            None
        };
        Ok(ListPage { items, next })
    }

    /// Depth-first walk of `dir` (whose blobs are named `name_prefix…`) in blob-name
    /// order, entries filtered by `leaf`, names after `marker`, until `limit` items.
    fn walk(
        &self,
        dir: &Path,
        name_prefix: &str,
        leaf: &str,
        marker: Option<&str>,
        limit: usize,
        out: &mut Vec<ListItem>,
    ) -> Result<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                return Ok(())
            }
            Err(e) => return Err(store_io(format!("listing {name_prefix}{leaf}"), dir, e)),
        };
        // Sort key: a directory `d` sorts as `d/`, which is exactly where the names it
        // holds sort among its siblings, so this walk yields global name order.
        let mut entries: Vec<(String, String, bool)> = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| store_io(format!("listing {name_prefix}"), dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(leaf) || !valid_segment(&name) {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                entries.push((format!("{name_prefix}{name}/"), name, true));
            } else if ft.is_file() {
                entries.push((format!("{name_prefix}{name}"), name, false));
            }
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, name, is_dir) in entries {
            if out.len() >= limit {
                return Ok(());
            }
            if is_dir {
                // Skip a whole directory when every name in it is at or before the marker.
                if marker.is_some_and(|m| m > key.as_str() && !m.starts_with(&key)) {
                    continue;
                }
                self.walk(&dir.join(&name), &key, "", marker, limit, out)?;
            } else {
                if marker.is_some_and(|m| key.as_str() <= m) {
                    continue;
                }
                let Ok(Some(stat)) = self.stat(&key) else {
                    continue; // deleted meanwhile
                };
                let p = self.props_of(&key, &stat);
                out.push(ListItem {
                    name: key,
                    size: p.size,
                    last_modified: p.last_modified,
                    tier: p.tier,
                });
            }
        }
        Ok(())
    }

    fn delete(&self, blob: &str) -> Result<bool> {
        validate_name(blob)?;
        let path = self.data_path(blob);
        let existed = match self.stat(blob)? {
            None => false,
            Some(_) => match fs::remove_file(&path) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(store_io(format!("deleting {blob}"), &path, e)),
            },
        };
        let meta = self.meta_path(blob);
        if let Err(e) = fs::remove_file(&meta) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(store_io(format!("deleting properties of {blob}"), &meta, e));
            }
        }
        self.remove_staging(blob);
        if existed {
            if let Some(dir) = path.parent() {
                sync_dir(dir);
            }
            self.prune_dirs(blob);
        }
        Ok(existed)
    }

    fn set_tier(&self, blob: &str, tier: Tier) -> Result<()> {
        validate_name(blob)?;
        let path = self.data_path(blob);
        let stat = self.stat(blob)?.ok_or_else(|| not_found(blob, &path))?;
        let mut meta = self.meta(blob, stat.len()).unwrap_or_else(|| {
            let p = self.props_of(blob, &stat);
            Meta {
                blob: blob.to_string(),
                size: p.size,
                tier: p.tier,
                content_md5: None,
                metadata: BTreeMap::new(),
                tags: BTreeMap::new(),
                blocks: Vec::new(),
                last_modified: p.last_modified,
            }
        });
        meta.tier = tier;
        let (tmp, dest) = self.prepare_meta(&meta)?;
        self.publish_meta(blob, &tmp, &dest)
    }

    fn block_list(&self, blob: &str) -> Result<BlockList> {
        validate_name(blob)?;
        let committed = self
            .stat(blob)?
            .and_then(|s| self.meta(blob, s.len()))
            .map(|m| {
                m.blocks
                    .into_iter()
                    .map(|b| BlockInfo {
                        id: b.id,
                        size: b.size,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let dir = self.staging_dir(blob);
        let mut uncommitted = Vec::new();
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for entry in rd {
                    let entry = entry.map_err(|e| {
                        store_io(format!("listing staged blocks of {blob}"), &dir, e)
                    })?;
                    let name = entry.file_name();
                    let Some(id) = name
                        .to_str()
                        .and_then(|n| hex::decode(n).ok())
                        .and_then(|b| String::from_utf8(b).ok())
                    else {
                        continue; // temp files
                    };
                    let Ok(m) = entry.metadata() else { continue };
                    uncommitted.push(BlockInfo { id, size: m.len() });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(store_io(
                    format!("listing staged blocks of {blob}"),
                    &dir,
                    e,
                ))
            }
        }
        uncommitted.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(BlockList {
            committed,
            uncommitted,
        })
    }

    // ---- leases -------------------------------------------------------------------

    /// The current (highest) lease generation of `blob`, with its record.
    fn current_lease(&self, blob: &str) -> Result<Option<(u64, PathBuf, Option<LeaseRecord>)>> {
        let dir = self.lease_dir(blob);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_io(format!("reading the lease of {blob}"), &dir, e)),
        };
        let mut best: Option<u64> = None;
        for entry in rd {
            let entry =
                entry.map_err(|e| store_io(format!("reading the lease of {blob}"), &dir, e))?;
            let name = entry.file_name();
            let Some(gen) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            best = best.max(Some(gen));
        }
        Ok(best.map(|g| {
            let path = dir.join(gen_name(g));
            let rec = read_json::<LeaseRecord>(&path);
            (g, path, rec)
        }))
    }

    fn acquire_lease(&self, blob: &str, ttl: Duration, holder: &str) -> Result<Lease> {
        validate_name(blob)?;
        let dir = self.lease_dir(blob);
        fs::create_dir_all(&dir).map_err(|e| {
            store_io(format!("creating the lease of {blob}"), &dir, e)
                .with_kind_if_not_found(ErrorKind::Store)
        })?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let lease_id = crate::support::ids::random_hex(16);
        let current = self.current_lease(blob)?;
        let next_gen = match &current {
            None => 0,
            Some((gen, path, rec)) => {
                match rec {
                    Some(r) if !r.released && r.expires_at > now_ms() => {
                        return Err(locked(blob, path, &r.holder));
                    }
                    // Released, expired, or unreadable (a crash cannot leave a torn
                    // generation file: they are published whole) — take over.
                    _ => gen + 1,
                }
            }
        };
        let rec = LeaseRecord {
            blob: blob.to_string(),
            lease_id: lease_id.clone(),
            holder: holder.to_string(),
            ttl_ms,
            expires_at: now_ms().saturating_add(ttl_ms),
            released: false,
        };
        let json = serde_json::to_vec_pretty(&rec)
            .map_err(|e| Error::internal(format!("encoding the lease of {blob}: {e}")))?;
        let tmp = write_tmp(&dir, &json, &format!("lease of {blob}"))?;
        let path = dir.join(gen_name(next_gen));
        let linked = fs::hard_link(&tmp, &path);
        remove_quietly(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Another contender created this generation first.
                let holder = self
                    .current_lease(blob)?
                    .and_then(|(_, _, r)| r)
                    .map(|r| r.holder)
                    .unwrap_or_else(|| "unknown holder".to_string());
                return Err(locked(blob, &path, &holder));
            }
            Err(e) => {
                return Err(store_io(format!("acquiring the lease of {blob}"), &path, e)
                    .with_kind_if_not_found(ErrorKind::Store))
            }
        }
        sync_dir(&dir);
        // Older generations are history; the max never goes down, so this is safe.
        if let Some((gen, old, _)) = current {
            if gen < next_gen {
                remove_quietly(&old);
            }
        }
        // The holder text is the blob's content, visible to anyone looking.
        self.put(blob, holder.as_bytes(), false)?;
        Ok(Lease {
            blob: blob.to_string(),
            id: lease_id,
        })
    }

    /// The record of `lease` if it is still the current generation.
    fn held(&self, lease: &Lease) -> Result<Option<(PathBuf, LeaseRecord)>> {
        Ok(self
            .current_lease(&lease.blob)?
            .and_then(|(_, p, r)| r.map(|r| (p, r)))
            .filter(|(_, r)| r.lease_id == lease.id && !r.released))
    }

    fn write_lease(&self, blob: &str, path: &Path, rec: &LeaseRecord) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.root);
        let json = serde_json::to_vec_pretty(rec)
            .map_err(|e| Error::internal(format!("encoding the lease of {blob}: {e}")))?;
        let tmp = write_tmp(dir, &json, &format!("lease of {blob}"))?;
        fs::rename(&tmp, path).map_err(|e| {
            remove_quietly(&tmp);
            store_io(format!("updating the lease of {blob}"), path, e)
                .with_kind_if_not_found(ErrorKind::Store)
        })
    }

    fn renew_lease(&self, lease: &Lease) -> Result<()> {
        validate_name(&lease.blob)?;
        let lost = || {
            Error::new(
                ErrorKind::Locked,
                format!(
                    "lease on {} ({}) was lost",
                    lease.blob,
                    self.lease_dir(&lease.blob).display()
                ),
            )
        };
        let (path, mut rec) = self.held(lease)?.ok_or_else(lost)?;
        rec.expires_at = now_ms().saturating_add(rec.ttl_ms);
        self.write_lease(&lease.blob, &path, &rec)?;
        // A contender may have taken over an expired lease meanwhile.
        match self.held(lease)? {
            Some(_) => Ok(()),
            None => Err(lost()),
        }
    }

    fn release_lease(&self, lease: &Lease) -> Result<()> {
        validate_name(&lease.blob)?;
        if let Some((path, mut rec)) = self.held(lease)? {
            rec.released = true;
            self.write_lease(&lease.blob, &path, &rec)?;
        }
        Ok(())
    }
}

impl Inner {
    fn break_lease_of(&self, blob: &str, holder: &str) -> Result<bool> {
        validate_name(blob)?;
        match self.current_lease(blob)? {
            Some((_, path, Some(mut rec)))
                if !rec.released && rec.expires_at > now_ms() && rec.holder == holder =>
            {
                // Rewrites only that generation: if another run took a newer one
                // meanwhile, this file is history and the rewrite changes nothing.
                rec.released = true;
                self.write_lease(blob, &path, &rec)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

fn gen_name(gen: u64) -> String {
    format!("{gen:020}.json")
}

fn conflict(blob: &str, path: &Path) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!(
            "BlobAlreadyExists: {blob} ({}) already exists",
            path.display()
        ),
    )
}

fn not_found(blob: &str, path: &Path) -> Error {
    Error::not_found(format!("BlobNotFound: {blob} ({})", path.display()))
}

fn locked(blob: &str, path: &Path, holder: &str) -> Error {
    Error::new(
        ErrorKind::Locked,
        format!(
            "{blob} is leased by another run ({holder}); lease file {}",
            path.display()
        ),
    )
}

#[async_trait]
impl BlobStore for LocalStore {
    fn describe(&self) -> String {
        format!("local:{}", self.inner.root.display())
    }

    async fn stage_block(
        &self,
        blob: &str,
        block_id: &str,
        data: Bytes,
        md5: [u8; 16],
    ) -> Result<()> {
        let (blob, id) = (blob.to_string(), block_id.to_string());
        self.run(move |s| s.stage_block(&blob, &id, &data, md5))
            .await
    }

    async fn commit_blocks(
        &self,
        blob: &str,
        block_ids: &[String],
        opts: &CommitOptions,
    ) -> Result<()> {
        let (blob, ids, opts) = (blob.to_string(), block_ids.to_vec(), opts.clone());
        self.run(move |s| s.commit_blocks(&blob, &ids, &opts)).await
    }

    async fn put(&self, blob: &str, data: Bytes, create_only: bool) -> Result<PutOutcome> {
        let blob = blob.to_string();
        self.run(move |s| s.put(&blob, &data, create_only)).await
    }

    async fn get(&self, blob: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let blob = blob.to_string();
        self.run(move |s| s.get(&blob, range)).await
    }

    async fn head(&self, blob: &str) -> Result<Option<BlobProps>> {
        let blob = blob.to_string();
        self.run(move |s| s.head(&blob)).await
    }

    async fn list(&self, prefix: &str, marker: Option<String>, max: usize) -> Result<ListPage> {
        let prefix = prefix.to_string();
        self.run(move |s| s.list(&prefix, marker.as_deref(), max))
            .await
    }

    async fn delete(&self, blob: &str) -> Result<bool> {
        let blob = blob.to_string();
        self.run(move |s| s.delete(&blob)).await
    }

    async fn set_tier(&self, blob: &str, tier: Tier) -> Result<()> {
        let blob = blob.to_string();
        self.run(move |s| s.set_tier(&blob, tier)).await
    }

    async fn rehydrate(
        &self,
        blob: &str,
        staging: &str,
        _priority: super::RehydratePriority,
    ) -> Result<super::Rehydration> {
        // A directory has no offline tier: the copy is instant. The original keeps its
        // (recorded) Archive tier, as on Azure.
        let (blob, staging) = (blob.to_string(), staging.to_string());
        self.run(move |s| {
            validate_name(&blob)?;
            if s.stat(&staging)?.is_some() {
                return Ok(super::Rehydration::Ready);
            }
            let path = s.data_path(&blob);
            let data =
                fs::read(&path).map_err(|e| store_io(format!("reading {blob}"), &path, e))?;
            s.put(&staging, &data, true)?;
            Ok(super::Rehydration::Ready)
        })
        .await
    }

    async fn block_list(&self, blob: &str) -> Result<BlockList> {
        let blob = blob.to_string();
        self.run(move |s| s.block_list(&blob)).await
    }

    async fn acquire_lease(&self, blob: &str, ttl: Duration, holder: &str) -> Result<Lease> {
        let (blob, holder) = (blob.to_string(), holder.to_string());
        self.run(move |s| s.acquire_lease(&blob, ttl, &holder))
            .await
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.run(move |s| s.renew_lease(&lease)).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.run(move |s| s.release_lease(&lease)).await
    }

    async fn break_lease_of(&self, blob: &str, holder: &str) -> Result<bool> {
        let (blob, holder) = (blob.to_string(), holder.to_string());
        self.run(move |s| s.break_lease_of(&blob, &holder)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::md5;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let s = LocalStore::open(&dir.path().join("c")).expect("open");
        (dir, s)
    }

    fn id(i: u32) -> String {
        crate::store::b64(format!("blk-{i:06}").as_bytes())
    }

    #[tokio::test]
    async fn committed_blob_is_a_plain_file() {
        let (_d, s) = store();
        let blob = "p/packs/ab/x.tar.gz";
        let (a, b) = (Bytes::from_static(b"hello "), Bytes::from_static(b"world"));
        s.stage_block(blob, &id(0), a.clone(), md5(&a))
            .await
            .expect("stage");
        s.stage_block(blob, &id(1), b.clone(), md5(&b))
            .await
            .expect("stage");
        s.commit_blocks(blob, &[id(0), id(1)], &CommitOptions::default())
            .await
            .expect("commit");
        let path = s.root().join("p/packs/ab/x.tar.gz");
        assert_eq!(s.path_of(blob).expect("path"), path);
        assert_eq!(fs::read(&path).expect("read by path"), b"hello world");
        // Staging dir removed after commit; no temp files left beside the blob.
        assert!(!s.inner.staging_dir(blob).exists());
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.tar.gz")]);
    }

    #[tokio::test]
    async fn crash_between_stage_and_commit_leaves_nothing_visible() {
        let (_d, s) = store();
        let blob = "p/packs/cd/y.tar.zst";
        let a = Bytes::from(vec![7u8; 1000]);
        s.stage_block(blob, &id(0), a.clone(), md5(&a))
            .await
            .expect("stage");
        // A crash mid-commit leaves a temp file in the destination directory.
        let dir = s.inner.ensure_parent(blob).expect("parent");
        fs::write(tmp_in(&dir), b"partial").expect("tmp");
        drop(s);
        let s = LocalStore::open(&_d.path().join("c")).expect("reopen");
        let page = s.list("", None, 100).await.expect("list");
        assert!(
            page.items.is_empty(),
            "visible after a crash: {:?}",
            page.items
        );
        assert_eq!(s.head(blob).await.expect("head"), None);
        assert_eq!(s.block_list(blob).await.expect("bl").uncommitted.len(), 1);
    }

    #[tokio::test]
    async fn corruption_on_disk_is_not_hidden() {
        let (_d, s) = store();
        let blob = "p/packs/ef/z";
        let data = Bytes::from(vec![1u8; 4096]);
        let opts = CommitOptions {
            content_md5: Some(md5(&data)),
            ..CommitOptions::default()
        };
        s.stage_block(blob, &id(0), data.clone(), md5(&data))
            .await
            .expect("stage");
        s.commit_blocks(blob, &[id(0)], &opts)
            .await
            .expect("commit");
        let path = s.path_of(blob).expect("path");
        let mut bytes = fs::read(&path).expect("read");
        bytes[100] ^= 0xff;
        fs::write(&path, &bytes).expect("corrupt");
        let got = s.get(blob, None).await.expect("get");
        assert_eq!(&got[..], &bytes[..], "get must return what is on disk");
        assert_ne!(md5(&got), md5(&data));
        // Same size: the sidecar still applies, so the recorded MD5 exposes it.
        let props = s.head(blob).await.expect("head").expect("exists");
        assert_eq!(props.content_md5, Some(md5(&data)));
        assert_eq!(
            &s.get(blob, Some(100..101)).await.expect("range")[..],
            &bytes[100..101]
        );
    }

    #[tokio::test]
    async fn bad_names_are_rejected() {
        let (_d, s) = store();
        for bad in [
            "",
            "/abs",
            "a/../b",
            "..",
            "a//b",
            "a/",
            ".meta/x",
            "a/.staging",
            "a/.tmp-1",
            ".",
            "a\\b",
        ] {
            let e = s
                .put(bad, Bytes::from_static(b"x"), true)
                .await
                .expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::Config, "{bad:?}: {e}");
            assert!(e.to_string().contains("invalid blob name"), "{e}");
            assert!(s.get(bad, None).await.is_err());
        }
        // Listing with a hostile prefix never escapes the root.
        assert!(s
            .list("../", None, 10)
            .await
            .expect("list")
            .items
            .is_empty());
        assert!(s
            .list(".meta/", None, 10)
            .await
            .expect("list")
            .items
            .is_empty());
    }

    #[tokio::test]
    async fn wrong_content_md5_publishes_nothing() {
        let (_d, s) = store();
        let blob = "p/m";
        let data = Bytes::from_static(b"abc");
        s.stage_block(blob, &id(0), data.clone(), md5(&data))
            .await
            .expect("stage");
        let opts = CommitOptions {
            content_md5: Some(md5(b"abd")),
            ..CommitOptions::default()
        };
        let e = s
            .commit_blocks(blob, &[id(0)], &opts)
            .await
            .expect_err("mismatch");
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(
            e.to_string().contains("Md5Mismatch") && e.to_string().contains(blob),
            "{e}"
        );
        assert_eq!(s.head(blob).await.expect("head"), None);
        assert!(s.list("", None, 10).await.expect("list").items.is_empty());
    }

    #[tokio::test]
    async fn stage_md5_mismatch_names_blob() {
        let (_d, s) = store();
        let e = s
            .stage_block("p/q", &id(0), Bytes::from_static(b"x"), [0; 16])
            .await
            .expect_err("mismatch");
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(
            e.to_string().contains("Md5Mismatch") && e.to_string().contains("p/q"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn file_and_directory_of_one_name_conflict() {
        let (_d, s) = store();
        s.put("a/b", Bytes::from_static(b"1"), true)
            .await
            .expect("put");
        let e = s
            .put("a/b/c", Bytes::from_static(b"2"), true)
            .await
            .expect_err("under a file");
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        let e = s
            .put("a", Bytes::from_static(b"3"), false)
            .await
            .expect_err("over a dir");
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    }

    #[tokio::test]
    async fn missing_or_stale_sidecar_falls_back_to_the_file() {
        let (_d, s) = store();
        let blob = "p/r";
        s.put(blob, Bytes::from_static(b"v1"), true)
            .await
            .expect("put");
        s.set_tier(blob, Tier::Archive).await.expect("tier");
        // A crash between publishing data and sidecar on an overwrite: sizes differ.
        fs::write(s.path_of(blob).expect("path"), b"v2-longer").expect("write");
        let p = s.head(blob).await.expect("head").expect("exists");
        assert_eq!((p.size, p.tier, p.content_md5), (9, Tier::Hot, None));
        assert_eq!(&s.get(blob, None).await.expect("get")[..], b"v2-longer");
        fs::remove_file(s.inner.meta_path(blob)).expect("rm meta");
        assert_eq!(s.head(blob).await.expect("head").expect("exists").size, 9);
    }

    #[tokio::test]
    async fn delete_prunes_empty_directories() {
        let (_d, s) = store();
        s.put("p/parts/run-1/0.json", Bytes::from_static(b"{}"), true)
            .await
            .expect("put");
        assert!(s.delete("p/parts/run-1/0.json").await.expect("delete"));
        assert!(!s.root().join("p").exists());
        assert!(s.root().join(META_DIR).is_dir(), "internal dirs stay");
    }

    #[tokio::test]
    async fn lease_takeover_has_one_winner() {
        let (_d, s) = store();
        let blob = "p/lock";
        let ttl = Duration::from_millis(200);
        let first = s
            .acquire_lease(blob, ttl, "crashed")
            .await
            .expect("acquire");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tries = (0..6).map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.acquire_lease(blob, Duration::from_secs(30), &format!("taker-{i}"))
                    .await
            })
        });
        let mut won = 0;
        for t in tries {
            match t.await.expect("join") {
                Ok(_) => won += 1,
                Err(e) => assert_eq!(e.kind(), ErrorKind::Locked, "{e}"),
            }
        }
        assert_eq!(won, 1, "exactly one contender takes over an expired lease");
        assert_eq!(
            s.renew_lease(&first).await.expect_err("lost").kind(),
            ErrorKind::Locked
        );
    }
}
