//! Where packs, manifests and records are kept.
//!
//! [`BlobStore`] is the narrow contract every backend implements: the few operations of
//! Azure block blobs the engine needs (stage a block with its MD5, commit a block list
//! with tier, Content-MD5 and metadata, create-only small puts, ranged reads, listing,
//! leases). Backends: [`local`] (a directory: a disk, an NFS or Azure Files mount),
//! [`memory`] (fast tests), and `azure` (Azure Blob Storage and Azurite).
//!
//! Every backend must pass the one conformance suite in `conformance`; the engine
//! relies only on behaviour that suite checks. The suite is test code: it is compiled
//! only for unit tests and with the `testing` feature (which the crate's own
//! integration tests enable through its dev-dependency on itself), not into releases.
//!
//! Blob names are `/`-separated relative names (`<prefix>/packs/ab/ab12….tar.zst`); the
//! store does not interpret them beyond listing by prefix.

pub mod azure;
pub mod config;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod local;
pub mod memory;
pub mod queue;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use self::config::{RetryConfig, StoreLocation, TargetConfig};
use crate::error::Result;

/// Azure access tiers; stores without tiers record the value and honour Archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Frequent access.
    #[default]
    Hot,
    /// 30-day minimum, cheaper storage.
    Cool,
    /// 90-day minimum.
    Cold,
    /// 180-day minimum, offline: must be rehydrated before reading.
    Archive,
}

impl Tier {
    /// Lowercase name as used in pipeline files.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Cool => "cool",
            Tier::Cold => "cold",
            Tier::Archive => "archive",
        }
    }

    /// Parse a pipeline-file tier name.
    pub fn parse(s: &str) -> Option<Tier> {
        match s.to_ascii_lowercase().as_str() {
            "hot" => Some(Tier::Hot),
            "cool" => Some(Tier::Cool),
            "cold" => Some(Tier::Cold),
            "archive" => Some(Tier::Archive),
            _ => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Options for committing a block list (the blob becomes visible at commit).
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Access tier of the new blob.
    pub tier: Tier,
    /// MD5 of the whole blob, stored as its Content-MD5.
    pub content_md5: Option<[u8; 16]>,
    /// User metadata (pipeline, snapshot, format version, codec).
    pub metadata: BTreeMap<String, String>,
    /// Index tags (Azure blob index tags; other stores keep them as properties).
    pub tags: BTreeMap<String, String>,
    /// Fail with [`crate::ErrorKind::Conflict`] if the blob already exists.
    pub create_only: bool,
}

/// Result of a create-only put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The blob was created.
    Created,
    /// The blob already existed with identical content: nothing written, success.
    AlreadyIdentical,
}

/// What [`BlobStore::stage_block_from_url`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromUrl {
    /// The service read the range from the source, checked it against the MD5 given and
    /// staged it: the bytes never reached this machine. The MD5 of the staged bytes, as
    /// the service computed it.
    Staged([u8; 16]),
    /// Nothing was staged: this store cannot stage from a URL, or the service could not
    /// read the source with the authorization its URL carries (another Azurite instance,
    /// an expired or missing SAS). The reason, without any secret. The caller sends the
    /// bytes itself.
    Refused(String),
    /// Nothing was staged: the source is no longer the version `source_if_match` named.
    SourceChanged,
}

/// Properties of a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProps {
    /// Size in bytes.
    pub size: u64,
    /// Content-MD5 recorded at commit/put, if any.
    pub content_md5: Option<[u8; 16]>,
    /// Access tier.
    pub tier: Tier,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Last modification time (commit time).
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// One listed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    /// Full blob name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// Access tier.
    pub tier: Tier,
}

/// One page of a listing; `next` continues it.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Blobs in lexicographic name order.
    pub items: Vec<ListItem>,
    /// Continuation token for the next page, `None` when done.
    pub next: Option<String>,
}

/// A block as reported by the service's block list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// Block id (the base64 string given to `stage_block`).
    pub id: String,
    /// Block size in bytes.
    pub size: u64,
}

/// Committed and uncommitted blocks of a blob.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockList {
    /// Blocks of the committed blob, in order.
    pub committed: Vec<BlockInfo>,
    /// Blocks staged but not yet committed.
    pub uncommitted: Vec<BlockInfo>,
}

/// A held lease (the run lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Blob the lease is on.
    pub blob: String,
    /// Lease id to renew/release with.
    pub id: String,
}

/// How fast Azure should rehydrate an archived blob (`x-ms-rehydrate-priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RehydratePriority {
    /// Up to 15 hours.
    Standard,
    /// Usually under 1 hour for blobs under 10 GB; costs more.
    High,
}

impl RehydratePriority {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RehydratePriority::Standard => "standard",
            RehydratePriority::High => "high",
        }
    }
}

/// Where a rehydrated copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rehydration {
    /// Started; not readable yet.
    Pending,
    /// Readable (Hot).
    Ready,
}

/// How an immutability policy may change once set (Azure version-level WORM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// The policy can still be shortened or removed by someone with the right to (a
    /// test bed, or while the set-up is being tried out).
    #[default]
    Unlocked,
    /// The policy can only be extended: nobody, not the account owner, can delete the
    /// blob before its date.
    Locked,
}

impl LockMode {
    /// Lowercase name as used in pipeline files and records.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Unlocked => "unlocked",
            LockMode::Locked => "locked",
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The storage contract. See the module docs and the conformance suite
/// (`store/conformance.rs`) for exact semantics.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// A printable description of the target, with secrets redacted.
    fn describe(&self) -> String;

    /// Stage one block of `blob` under `block_id`. The store checks `md5` against the
    /// data and fails with `Integrity` on mismatch (Azure: 400 `Md5Mismatch`). Staging
    /// the same id again replaces the staged block.
    async fn stage_block(
        &self,
        blob: &str,
        block_id: &str,
        data: Bytes,
        md5: [u8; 16],
    ) -> Result<()>;

    /// Whether [`BlobStore::stage_block_from_url`] can stage anything here (Azure): decided
    /// before asking, so that a run can say why it streams.
    fn stages_from_url(&self) -> bool {
        false
    }

    /// A URL by which the storage *service* (not this process) can read `blob`: the blob's
    /// URL with a read SAS in its query. `None` when the store has none to give (a
    /// directory, an Entra ID token: the caller then reads the bytes itself).
    fn read_url(&self, blob: &str) -> Option<crate::support::secret::Secret> {
        let _ = blob;
        None
    }

    /// Stage block `block_id` of `blob` from `range` of the blob at `source` (a
    /// [`BlobStore::read_url`] of another store), read by the service itself (Azure Put
    /// Block From URL): the bytes go from service to service. `md5`, when known, is the
    /// range's MD5: the service checks the source bytes against it (Azure: 400
    /// `Md5Mismatch`, here `Integrity`). Either way the answer carries the MD5 the service
    /// computed of what it staged. With `source_if_match` (an ETag) only that version of
    /// the source is read ([`FromUrl::SourceChanged`] otherwise). The default stages
    /// nothing and says so.
    ///
    /// # Errors
    /// `Integrity` when the source range does not match `md5`, store errors. A source the
    /// service cannot read is [`FromUrl::Refused`], not an error.
    async fn stage_block_from_url(
        &self,
        blob: &str,
        block_id: &str,
        source: &crate::support::secret::Secret,
        range: Range<u64>,
        md5: Option<[u8; 16]>,
        source_if_match: Option<&str>,
    ) -> Result<FromUrl> {
        let _ = (blob, block_id, source, range, md5, source_if_match);
        Ok(FromUrl::Refused(format!(
            "{} cannot stage blocks from a URL",
            self.describe()
        )))
    }

    /// Commit `block_ids` (all staged, or committed in the current blob) in order as the
    /// content of `blob`. Unknown ids fail with `Integrity`. With `create_only` an
    /// existing blob fails with `Conflict`. Uncommitted blocks are discarded.
    async fn commit_blocks(
        &self,
        blob: &str,
        block_ids: &[String],
        opts: &CommitOptions,
    ) -> Result<()>;

    /// Put a small blob whole. With `create_only`, an existing blob with identical content
    /// is success ([`PutOutcome::AlreadyIdentical`]); with different content, `Conflict`.
    async fn put(&self, blob: &str, data: Bytes, create_only: bool) -> Result<PutOutcome>;

    /// Put a small file of a published site (the dashboard) whole, **replacing** any blob
    /// of that name, with the `Content-Type` a static website serves it with. Only for
    /// site files, never for packs, manifests or records (those are create-only). The
    /// default puts without a type (stores that keep no content type).
    async fn put_file(&self, blob: &str, data: Bytes, content_type: &str) -> Result<()> {
        let _ = content_type;
        self.put(blob, data, false).await.map(|_| ())
    }

    /// Read `range` of `blob` (whole blob when `None`). Missing blob: `NotFound`; range
    /// past the end: `Integrity`; Archive tier: `Archived`.
    async fn get(&self, blob: &str, range: Option<Range<u64>>) -> Result<Bytes>;

    /// Properties of `blob`, `None` if it does not exist.
    async fn head(&self, blob: &str) -> Result<Option<BlobProps>>;

    /// List committed blobs whose names start with `prefix`, in name order, at most
    /// `max` per page; pass the previous page's `next` to continue.
    async fn list(&self, prefix: &str, marker: Option<String>, max: usize) -> Result<ListPage>;

    /// Delete `blob`. Returns whether it existed (deleting a missing blob is not an error).
    async fn delete(&self, blob: &str) -> Result<bool>;

    /// Change the access tier of a committed blob. Missing blob: `NotFound`.
    async fn set_tier(&self, blob: &str, tier: Tier) -> Result<()>;

    /// Committed and uncommitted block lists of `blob` (empty lists if it has none).
    async fn block_list(&self, blob: &str) -> Result<BlockList>;

    /// Take an exclusive lease on `blob` (created if missing, holding `holder` as its
    /// content) for `ttl`. If another live lease holds it: `Locked`, with the holder's
    /// text in the message. An expired lease is taken over.
    async fn acquire_lease(&self, blob: &str, ttl: Duration, holder: &str) -> Result<Lease>;

    /// Extend a held lease by its ttl. Lost lease: `Locked`.
    async fn renew_lease(&self, lease: &Lease) -> Result<()>;

    /// Release a held lease (idempotent).
    async fn release_lease(&self, lease: &Lease) -> Result<()>;

    /// Break the lease on `blob` at once, but only while the holder text it records is
    /// still exactly `holder` (the caller has found that holder dead: a process that
    /// will never renew nor release). Returns whether a live lease was broken; a lease
    /// taken meanwhile by someone else is left alone. The default breaks nothing (the
    /// lease expires by itself).
    ///
    /// # Errors
    /// Store failures.
    async fn break_lease_of(&self, blob: &str, holder: &str) -> Result<bool> {
        let _ = (blob, holder);
        Ok(false)
    }

    /// Make the Archive-tier blob `blob` readable as the Hot blob `staging`.
    ///
    /// Rehydration is by **copy to a staging blob** (Azure Copy Blob with
    /// `x-ms-access-tier: Hot` and `x-ms-rehydrate-priority`), not by changing the
    /// original's tier: the archived pack stays as it is — its early-deletion clock is
    /// not touched, the lifecycle policy does not archive it again after use, and the
    /// staging copy is deleted after the restore, so the bill is one rehydration plus
    /// a few hours of Hot storage.
    ///
    /// Idempotent, to poll and to resume: when `staging` already exists it only reports
    /// its state; otherwise it starts the copy. The default implementation says the
    /// store cannot rehydrate.
    ///
    /// # Errors
    /// `Archived` when the store cannot rehydrate, `NotFound` for a missing `blob`, store
    /// errors.
    async fn rehydrate(
        &self,
        blob: &str,
        staging: &str,
        priority: RehydratePriority,
    ) -> Result<Rehydration> {
        let _ = (staging, priority);
        Err(crate::Error::new(
            crate::ErrorKind::Archived,
            format!("{}: this store cannot rehydrate {blob}", self.describe()),
        ))
    }

    /// Protect `blob` from deletion and overwrite until `until` (an Azure version-level
    /// immutability policy, `Set Blob Immutability Policy`). Setting a later date extends
    /// the policy; a locked policy can never be shortened. The default says the store
    /// cannot do it (a directory cannot be made write-once).
    ///
    /// # Errors
    /// `Config` when the store cannot protect blobs, `NotFound` for a missing blob, store
    /// errors (Azure: 409 when the container does not have version-level immutability
    /// enabled).
    async fn protect(
        &self,
        blob: &str,
        until: chrono::DateTime<chrono::Utc>,
        mode: LockMode,
    ) -> Result<()> {
        let _ = (until, mode);
        Err(crate::Error::config(format!(
            "{}: this store cannot make {blob} immutable ([immutability] needs an Azure target)",
            self.describe()
        )))
    }

    /// Set or clear a legal hold on `blob` (no expiry; protects until cleared).
    ///
    /// # Errors
    /// As [`BlobStore::protect`].
    async fn set_legal_hold(&self, blob: &str, hold: bool) -> Result<()> {
        let _ = hold;
        Err(crate::Error::config(format!(
            "{}: this store cannot put a legal hold on {blob} ([immutability] needs an Azure target)",
            self.describe()
        )))
    }

    /// How many transient failures this store has retried so far (for run summaries).
    fn retries(&self) -> u64 {
        0
    }
}

/// A shared store handle.
pub type Store = Arc<dyn BlobStore>;

/// Open `container` (e.g. `$web`) of the account or directory `target` names, at its
/// root (the target's container and root prefix are not used): where `report
/// --publish` puts the dashboard.
///
/// # Errors
/// As [`open`].
pub async fn open_container(
    target: &TargetConfig,
    retry: &RetryConfig,
    container: &str,
) -> Result<Store> {
    match &target.location {
        StoreLocation::Azure(loc) => {
            let opts = azure::AzureOptions {
                retry: *retry,
                ..Default::default()
            };
            let s = azure::AzureStore::open_container(
                loc,
                container,
                &opts,
                &azure::credential::process_env,
            )?;
            s.ensure_container().await?;
            Ok(Arc::new(s))
        }
        _ => {
            let t = TargetConfig {
                container: container.to_string(),
                ..target.clone()
            };
            open(&t, retry).await
        }
    }
}

/// Open the store a pipeline targets.
///
/// Local stores root at `<dir>/<container>`; the pipeline prefix is part of every blob
/// name the engine passes, not of the store. `retry` configures the backend's own retry
/// policy (the Azure SDK's), so there is one retry policy per store.
///
/// # Errors
/// `Config` for an unusable location, `Store` when the backend cannot be reached.
pub async fn open(target: &TargetConfig, retry: &RetryConfig) -> Result<Store> {
    match &target.location {
        StoreLocation::Local(dir) => {
            let s: Store = Arc::new(local::LocalStore::open(&dir.join(&target.container))?);
            Ok(s)
        }
        StoreLocation::Memory(name) => Ok(Arc::new(memory::MemoryStore::shared(&format!(
            "{name}/{}",
            target.container
        )))),
        StoreLocation::Azure(loc) => {
            let opts = azure::AzureOptions {
                retry: *retry,
                ..Default::default()
            };
            let s = azure::AzureStore::open(
                loc,
                &target.container,
                &opts,
                &azure::credential::process_env,
            )?;
            s.ensure_container().await?;
            Ok(Arc::new(s))
        }
    }
}

/// List every blob under `prefix`, following continuation markers.
///
/// # Errors
/// Any store error from a page.
pub async fn list_all(store: &dyn BlobStore, prefix: &str) -> Result<Vec<ListItem>> {
    let mut out = Vec::new();
    let mut marker = None;
    loop {
        let page = store.list(prefix, marker, 5000).await?;
        out.extend(page.items);
        match page.next {
            Some(m) => marker = Some(m),
            None => return Ok(out),
        }
    }
}

/// MD5 of `data`.
pub fn md5(data: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(data).into()
}

/// Base64 (standard) of `data`, as Azure writes MD5s and block ids.
pub fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decode standard base64 (`None` if it is not).
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Decode a base64 MD5 string.
pub fn md5_from_b64(s: &str) -> Option<[u8; 16]> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
}
