//! Azure Blob Storage (and Azurite) behind the [`BlobStore`] contract.
//!
//! Built on Microsoft's maintained 1.x SDK (`azure_storage_blob`, `azure_core`,
//! `azure_identity`); the legacy 0.x crates silently drop a block's transactional MD5.
//! The module is split the way `object_store`'s Azure backend is:
//!
//! - [`builder`]: the target string → endpoint, container, root prefix, embedded secrets;
//! - [`credential`]: the credential chain and the account SAS the engine signs itself;
//! - [`client`]: transport, the one retry policy, retry counting, error translation;
//! - [`queue`]: the hand-off queue on the queue SDK, with the same credentials and retries;
//! - [`source`]: a container read as a backup source (listing with metadata and tags,
//!   reads of one version) and written as a restore destination;
//! - this façade: each trait method as one or two SDK calls.
//!
//! Invariants the façade keeps: every Put Block carries its transactional MD5 (a mismatch
//! is a 400 `Md5Mismatch` → `Integrity`); create-only writes send `If-None-Match: *`; a
//! ranged read is one GET (the SDK's partition size is set to the range); secrets never
//! reach a URL the SDK keeps, a log line, an error or `Debug` output.
//!
//! Leases: Azure leases last 15–60 s (or forever); the requested ttl is clamped into
//! 15–60 s and the engine renews. The holder text is the lock blob's content, so a
//! refused run can name the run that holds the lock. Taking a lease and writing the
//! holder's name are two requests, so the name is briefly stale after every acquire
//! (for seconds when the write is retried): a holder therefore overwrites its name with
//! [`RELEASED`] before it releases, and a refused run that reads that marker waits a
//! little for the new holder's name instead of naming the previous, finished run.

pub mod builder;
pub mod client;
pub mod credential;
pub mod key_vault;
pub mod queue;
pub mod queue_url;
pub mod source;

use std::collections::HashMap;
use std::num::NonZero;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::{
    ClientMethodOptions, ClientOptions, Context, RequestContent, RetryOptions, Transport,
};
use azure_storage_blob::models::{
    AccessTier, BlobClientAcquireLeaseOptions, BlobClientAcquireLeaseResultHeaders,
    BlobClientBreakLeaseOptions, BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
    BlobClientReleaseLeaseOptions, BlobClientRenewLeaseOptions,
    BlobContainerClientListBlobsOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientStageBlockFromUrlOptions, BlockBlobClientStageBlockFromUrlResultHeaders,
    BlockBlobClientStageBlockOptions, BlockBlobClientUploadOptions, BlockListType, BlockLookupList,
    HttpRange,
};
use azure_storage_blob::{BlobClient, BlobContainerClient, BlobContainerClientOptions};
use bytes::Bytes;
use futures::TryStreamExt;
use serde::Serialize;

use self::builder::AzureTarget;
use self::client::{http_parts, map_error, CallRetries, StoreRetryPolicy, TryObserver};
use self::credential::{CredentialKind, EnvLookup, Resolved, SasPolicy};
use super::{
    BlobProps, BlobStore, BlockInfo, BlockList, CommitOptions, FromUrl, Lease, ListItem, ListPage,
    PutOutcome, Tier,
};
use crate::error::{Error, ErrorKind, Result};
use crate::store::config::{RetryConfig, StoreLocation, TargetConfig};
use crate::support::secret::Secret;

/// Settings of an Azure store beyond the target string.
#[derive(Debug, Clone)]
pub struct AzureOptions {
    /// Retry policy handed to the SDK.
    pub retry: RetryConfig,
    /// Connect and per-read timeout; a stalled connection fails (and is retried) after it.
    pub io_timeout: Duration,
}

impl Default for AzureOptions {
    fn default() -> Self {
        Self {
            retry: RetryConfig::default(),
            io_timeout: Duration::from_secs(60),
        }
    }
}

/// An Azure Blob Storage container as a [`BlobStore`].
pub struct AzureStore {
    target: AzureTarget,
    container: BlobContainerClient,
    credential: CredentialKind,
    credential_source: String,
    credential_tried: Vec<String>,
    sas: Option<Arc<SasPolicy>>,
    retries: Arc<AtomicU64>,
    /// Set once the service refused blob index tags (403): later commits skip them.
    tags_denied: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureStore")
            .field("target", &self.target.display())
            .field("credential", &self.credential)
            .field("credential_source", &self.credential_source)
            .finish_non_exhaustive()
    }
}

/// What the lock blob holds between holders: written under the lease just before it is
/// released, so no finished run's name is left behind to be taken for the live holder's.
pub const RELEASED: &str = "released: no run holds this lock";

/// How long a refused acquire waits for a new holder to record its name.
const HOLDER_WAIT: Duration = Duration::from_secs(10);

const LEASE_MIN: u64 = 15;
const LEASE_MAX: u64 = 60;

impl AzureStore {
    /// Open a store for `location` (see [`builder`] for accepted forms), resolving
    /// credentials from `env`. Makes no network call.
    ///
    /// # Errors
    /// `Config` for an unusable target or when no credential applies (the message lists
    /// what was tried); `Internal` if the HTTP client cannot be built.
    pub fn open(
        location: &Secret,
        default_container: &str,
        opts: &AzureOptions,
        env: EnvLookup<'_>,
    ) -> Result<Self> {
        Self::open_target(AzureTarget::parse(location, default_container)?, opts, env)
    }

    /// Open `container` of the account `location` names, at its root, whatever container
    /// and root the location names (`$web` for the static website is allowed).
    ///
    /// # Errors
    /// As [`AzureStore::open`].
    pub fn open_container(
        location: &Secret,
        container: &str,
        opts: &AzureOptions,
        env: EnvLookup<'_>,
    ) -> Result<Self> {
        let mut target = AzureTarget::parse(location, "backups")?;
        target.container = container.to_string();
        target.root = String::new();
        Self::open_target(target, opts, env)
    }

    fn open_target(target: AzureTarget, opts: &AzureOptions, env: EnvLookup<'_>) -> Result<Self> {
        let chosen = credential::resolve(&target, env)?;
        let retries = Arc::new(AtomicU64::new(0));
        let mut per_try: Vec<Arc<dyn azure_core::http::policies::Policy>> =
            vec![Arc::new(TryObserver {
                retries: retries.clone(),
            })];
        let (token, sas) = match &chosen.resolved {
            Resolved::Sas(p) => {
                per_try.push(p.clone());
                (None, Some(p.clone()))
            }
            Resolved::Token(t) => (Some(t.clone()), None),
        };
        let client_options = ClientOptions {
            per_try_policies: per_try,
            retry: RetryOptions::custom(Arc::new(StoreRetryPolicy::new(&opts.retry))),
            transport: Some(Transport::new(client::http_client(opts.io_timeout)?)),
            ..Default::default()
        };
        let container = BlobContainerClient::new(
            target.container_url(),
            token,
            Some(BlobContainerClientOptions {
                client_options,
                ..Default::default()
            }),
        )
        .map_err(|e| map_error(&format!("opening {}", target.display()), e))?;
        tracing::info!(
            target = %target.display(),
            credential = chosen.kind.as_str(),
            source = %chosen.source,
            "Azure store opened"
        );
        Ok(Self {
            target,
            container,
            credential: chosen.kind,
            credential_source: chosen.source,
            credential_tried: chosen.tried,
            sas,
            retries,
            tags_denied: Default::default(),
        })
    }

    /// One Put Block List, optionally with index tags; errors carry the HTTP status.
    async fn commit_once(
        &self,
        blob: &str,
        block_ids: &[String],
        opts: &CommitOptions,
        with_tags: bool,
    ) -> std::result::Result<(), (u16, Error)> {
        let what = format!("committing {} blocks of {blob}", block_ids.len());
        let ids = block_ids
            .iter()
            .map(|i| decode_block_id(i))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| (0, e.context(&what)))?;
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let body: RequestContent<BlockLookupList, azure_core::http::XmlFormat> =
            list.try_into().map_err(|e| (0, map_error(&what, e)))?;
        let calls = CallRetries::default();
        let mut o = BlockBlobClientCommitBlockListOptions {
            tier: Some(tier_to_azure(opts.tier)),
            blob_content_md5: opts.content_md5.map(|m| m.to_vec()),
            metadata: (!opts.metadata.is_empty()).then(|| {
                opts.metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            if_none_match: opts.create_only.then(|| "*".into()),
            method_options: ctx_with(&calls),
            ..Default::default()
        };
        if with_tags {
            let tags: HashMap<String, String> = opts
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            o = o.with_tags(tags);
        }
        match self
            .blob(blob)
            .block_blob_client()
            .commit_block_list(body, Some(o))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let (status, code) = http_parts(&e).unwrap_or_default();
                if status == 409 && opts.create_only {
                    // A retried commit may meet its own first attempt's success: the
                    // same committed block list and Content-MD5 means it did.
                    if calls.get() > 0
                        && self.committed_ids(blob).await.map_err(|e| (0, e))? == block_ids
                    {
                        let props = self.head(blob).await.map_err(|e| (0, e))?;
                        if props.is_some_and(|p| p.content_md5 == opts.content_md5) {
                            return Ok(());
                        }
                    }
                    return Err((
                        status,
                        Error::new(
                            ErrorKind::Conflict,
                            format!("{what}: {blob} already exists ({code})"),
                        ),
                    ));
                }
                Err((status, map_error(&what, e)))
            }
        }
    }

    /// Create the container if it does not exist (409 `ContainerAlreadyExists` is fine; a
    /// 403 is left for the first real operation to report, since a container-scoped SAS
    /// may not create containers).
    ///
    /// # Errors
    /// `Store` for other failures.
    pub async fn ensure_container(&self) -> Result<()> {
        match self.container.create(None).await {
            Ok(_) => Ok(()),
            Err(e) => match http_parts(&e) {
                Some((409, _)) | Some((403, _)) => Ok(()),
                _ => Err(map_error(
                    &format!("creating container {}", self.target.container),
                    e,
                )),
            },
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// The credential kind chosen by the chain.
    pub fn credential_kind(&self) -> CredentialKind {
        self.credential
    }

    /// Where the credential came from (an environment variable name, never its value).
    pub fn credential_source(&self) -> &str {
        &self.credential_source
    }

    #[cfg(any(test, feature = "testing"))]
    /// The SAS policy in use, if the credential is a SAS (tests, diagnostics).
    pub fn sas_policy(&self) -> Option<&SasPolicy> {
        self.sas.as_deref()
    }

    /// Break the lease on `blob` immediately (an operator's unlock; tests).
    ///
    /// # Errors
    /// `NotFound` for a missing blob, `Store` otherwise.
    pub async fn break_lease(&self, blob: &str) -> Result<()> {
        let bc = self.blob(blob);
        match bc
            .break_lease(Some(BlobClientBreakLeaseOptions {
                break_period: Some(0),
                ..Default::default()
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 409) => Ok(()),
            Err(e) => Err(map_error(&format!("breaking the lease on {blob}"), e)),
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// Blob index tags of `blob` (Azure-only checks).
    ///
    /// # Errors
    /// `NotFound`, `Store`.
    pub async fn tags(&self, blob: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let rsp = self
            .blob(blob)
            .get_tags(None)
            .await
            .map_err(|e| map_error(&format!("reading tags of {blob}"), e))?;
        let tags = rsp
            .into_model()
            .map_err(|e| map_error(&format!("reading tags of {blob}"), e))?;
        let m: HashMap<String, String> = tags.into();
        Ok(m.into_iter().collect())
    }

    fn full(&self, name: &str) -> String {
        if self.target.root.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.target.root)
        }
    }

    fn strip<'a>(&self, full: &'a str) -> &'a str {
        if self.target.root.is_empty() {
            full
        } else {
            full.strip_prefix(&self.target.root)
                .and_then(|s| s.strip_prefix('/'))
                .unwrap_or(full)
        }
    }

    fn blob(&self, name: &str) -> BlobClient {
        self.container.blob_client(&self.full(name))
    }

    async fn read_holder(&self, blob: &str) -> String {
        match self.get(blob, None).await {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                s.chars().take(200).collect()
            }
            Err(_) => "holder unknown".to_string(),
        }
    }

    /// The live holder of the leased `blob`: its recorded name, once the run that just
    /// took the lease has written it over the [`RELEASED`] marker (bounded wait).
    async fn live_holder(&self, blob: &str) -> String {
        let deadline = tokio::time::Instant::now() + HOLDER_WAIT;
        loop {
            let who = self.read_holder(blob).await;
            if who != RELEASED {
                return who;
            }
            if tokio::time::Instant::now() >= deadline {
                return "a run that took the lock moments ago and has not recorded its name yet"
                    .to_string();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn committed_ids(&self, blob: &str) -> Result<Vec<String>> {
        Ok(self
            .block_list(blob)
            .await?
            .committed
            .into_iter()
            .map(|b| b.id)
            .collect())
    }
}

fn decode_block_id(id: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(id)
        .map_err(|_| Error::integrity(format!("block id {id:?} is not base64")))
}

fn tier_to_azure(t: Tier) -> AccessTier {
    match t {
        Tier::Hot => AccessTier::Hot,
        Tier::Cool => AccessTier::Cool,
        Tier::Cold => AccessTier::Cold,
        Tier::Archive => AccessTier::Archive,
    }
}

fn tier_from_str(s: Option<&str>) -> Tier {
    s.and_then(Tier::parse).unwrap_or(Tier::Hot)
}

fn to_chrono(t: Option<azure_core::time::OffsetDateTime>) -> chrono::DateTime<chrono::Utc> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()))
        .unwrap_or_default()
}

fn ctx_with(c: &CallRetries) -> ClientMethodOptions<'static> {
    ClientMethodOptions {
        context: Context::new().with_value(c.clone()),
    }
}

#[async_trait]
impl BlobStore for AzureStore {
    fn describe(&self) -> String {
        format!(
            "azure {} (credential: {} from {})",
            self.target.display(),
            self.credential.as_str(),
            self.credential_source
        )
    }

    async fn stage_block(
        &self,
        blob: &str,
        block_id: &str,
        data: Bytes,
        md5: [u8; 16],
    ) -> Result<()> {
        // The MD5 goes to the service as given: a wrong one is the service's 400.
        let what = format!("staging block {block_id} of {blob}");
        let id = decode_block_id(block_id).map_err(|e| e.context(&what))?;
        let len = data.len() as u64;
        self.blob(blob)
            .block_blob_client()
            .stage_block(
                &id,
                len,
                data.into(),
                Some(BlockBlobClientStageBlockOptions {
                    transactional_content_md5: Some(md5.to_vec()),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| map_error(&what, e))?;
        Ok(())
    }

    fn stages_from_url(&self) -> bool {
        true
    }

    fn read_url(&self, blob: &str) -> Option<Secret> {
        let sas = self.sas.as_ref()?;
        let mut u = self.blob(blob).url().clone();
        u.set_query(Some(sas.read_only(chrono::Utc::now()).expose()));
        Some(Secret::new(u.to_string()))
    }

    async fn stage_block_from_url(
        &self,
        blob: &str,
        block_id: &str,
        source: &Secret,
        range: Range<u64>,
        md5: Option<[u8; 16]>,
        source_if_match: Option<&str>,
    ) -> Result<FromUrl> {
        let what = format!("staging block {block_id} of {blob} from the source's URL");
        let id = decode_block_id(block_id).map_err(|e| e.context(&what))?;
        // Put Block From URL has no body; the service checks the source range against
        // `x-ms-source-content-md5` before staging it.
        let rsp = self
            .blob(blob)
            .block_blob_client()
            .stage_block_from_url(
                &id,
                0,
                source.expose().to_string(),
                Some(BlockBlobClientStageBlockFromUrlOptions {
                    source_content_md5: md5.map(|m| m.to_vec()),
                    source_range: Some(HttpRange::from(range)),
                    source_if_match: source_if_match
                        .map(|e| azure_core::http::Etag::from(format!("\"{e}\""))),
                    ..Default::default()
                }),
            )
            .await;
        match rsp {
            Ok(r) => match r.content_md5() {
                Ok(Some(got)) => match <[u8; 16]>::try_from(got.as_slice()) {
                    Ok(got) if md5.is_none_or(|m| m == got) => Ok(FromUrl::Staged(got)),
                    _ => Err(Error::integrity(format!(
                        "{what}: the service staged bytes whose MD5 is not the block's"
                    ))),
                },
                // Azure answers with the staged block's Content-MD5; without it (and
                // without one of ours) nothing proves what was staged: the caller streams.
                _ => match md5 {
                    Some(m) => Ok(FromUrl::Staged(m)),
                    None => Ok(FromUrl::Refused(
                        "the service did not answer the staged block's MD5".into(),
                    )),
                },
            },
            Err(e) => match http_parts(&e) {
                Some((412, _)) if source_if_match.is_some() => Ok(FromUrl::SourceChanged),
                // The service could not read the source: another account without a usable
                // SAS, another emulator instance, or a service without the operation.
                Some((status, code))
                    if code == "CannotVerifyCopySource"
                        || code == "APINotImplemented"
                        || code.starts_with("CopySource")
                        || status == 501 =>
                {
                    Ok(FromUrl::Refused(format!(
                        "the service could not read the source (HTTP {status} {code})"
                    )))
                }
                _ => Err(map_error(&what, e)),
            },
        }
    }

    async fn commit_blocks(
        &self,
        blob: &str,
        block_ids: &[String],
        opts: &CommitOptions,
    ) -> Result<()> {
        let with_tags = !opts.tags.is_empty() && !self.tags_denied.load(Ordering::Relaxed);
        match self.commit_once(blob, block_ids, opts, with_tags).await {
            // Setting blob index tags needs the `tags/write` data action, which Storage Blob
            // Data Contributor lacks (Owner or a custom role has it). Tags help find packs;
            // they are not part of the backup: commit without them and stop sending them.
            Err((403, e)) if with_tags => {
                if !self.tags_denied.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "blob index tags refused ({e}); committing packs without tags. Grant \
                         Storage Blob Data Owner or a role with blobs/tags/write to keep them"
                    );
                }
                self.commit_once(blob, block_ids, opts, false)
                    .await
                    .map_err(|(_, e)| e)
            }
            r => r.map_err(|(_, e)| e),
        }
    }

    async fn put(&self, blob: &str, data: Bytes, create_only: bool) -> Result<PutOutcome> {
        let what = format!("writing {blob}");
        let md5 = super::md5(&data);
        let len = data.len() as u64;
        let o = BlockBlobClientUploadOptions {
            blob_content_md5: Some(md5.to_vec()),
            if_none_match: create_only.then(|| "*".into()),
            // One Put Blob, never the SDK's parallel block upload.
            partition_size: NonZero::new(len.max(1)),
            parallel: NonZero::new(1),
            ..Default::default()
        };
        match self.blob(blob).upload(data.clone().into(), Some(o)).await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if create_only && http_parts(&e).is_some_and(|(s, _)| s == 409) => {
                let existing = self.get(blob, None).await.map_err(|e| e.context(&what))?;
                if existing == data {
                    Ok(PutOutcome::AlreadyIdentical)
                } else {
                    Err(Error::new(
                        ErrorKind::Conflict,
                        format!("{what}: it already exists with different content"),
                    ))
                }
            }
            Err(e) => Err(map_error(&what, e)),
        }
    }

    async fn put_file(&self, blob: &str, data: Bytes, content_type: &str) -> Result<()> {
        let md5 = super::md5(&data);
        let len = data.len() as u64;
        let o = BlockBlobClientUploadOptions {
            blob_content_md5: Some(md5.to_vec()),
            blob_content_type: Some(content_type.to_string()),
            partition_size: NonZero::new(len.max(1)),
            parallel: NonZero::new(1),
            ..Default::default()
        };
        self.blob(blob)
            .upload(data.into(), Some(o))
            .await
            .map(|_| ())
            .map_err(|e| map_error(&format!("writing {blob}"), e))
    }

    async fn get(&self, blob: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let what = match &range {
            Some(r) => format!("reading {}..{} of {blob}", r.start, r.end),
            None => format!("reading {blob}"),
        };
        if let Some(r) = &range {
            if r.start > r.end {
                return Err(Error::integrity(format!("{what}: inverted range")));
            }
            if r.start == r.end {
                // The SDK refuses empty ranges; check existence and bounds instead.
                let props = self
                    .head(blob)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("{what}: BlobNotFound")))?;
                if props.tier == Tier::Archive {
                    return Err(Error::new(
                        ErrorKind::Archived,
                        format!("{what}: BlobArchived (rehydrate it first)"),
                    ));
                }
                if r.end > props.size {
                    return Err(Error::integrity(format!(
                        "{what}: InvalidRange ({} bytes)",
                        props.size
                    )));
                }
                return Ok(Bytes::new());
            }
        }
        let want = range.as_ref().map(|r| r.end - r.start);
        // One GET per range: the partition is as large as the range (whole blobs: 1 GiB
        // per request, far beyond any manifest or record).
        let part = want.unwrap_or(1 << 30).max(1);
        let o = BlobClientDownloadOptions {
            range: range.clone().map(HttpRange::from),
            partition_size: NonZero::new(usize::try_from(part).unwrap_or(usize::MAX)),
            parallel: NonZero::new(1),
            ..Default::default()
        };
        let res = self
            .blob(blob)
            .download(Some(o))
            .await
            .map_err(|e| map_error(&what, e))?;
        let bytes = res.body.collect().await.map_err(|e| map_error(&what, e))?;
        if let Some(n) = want {
            if bytes.len() as u64 != n {
                return Err(Error::integrity(format!(
                    "{what}: InvalidRange (got {} bytes; the blob ends before the range)",
                    bytes.len()
                )));
            }
        }
        Ok(bytes)
    }

    async fn head(&self, blob: &str) -> Result<Option<BlobProps>> {
        let what = format!("reading properties of {blob}");
        match self.blob(blob).get_properties(None).await {
            Ok(r) => {
                let m = |e| map_error(&what, e);
                Ok(Some(BlobProps {
                    size: r.content_length().map_err(m)?.unwrap_or(0),
                    content_md5: r
                        .content_md5()
                        .map_err(m)?
                        .and_then(|v| <[u8; 16]>::try_from(v).ok()),
                    tier: tier_from_str(r.access_tier().map_err(m)?.as_deref()),
                    metadata: r.metadata().map_err(m)?.into_iter().collect(),
                    last_modified: to_chrono(r.last_modified().map_err(m)?),
                }))
            }
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 404) => Ok(None),
            Err(e) => Err(map_error(&what, e)),
        }
    }

    async fn list(&self, prefix: &str, marker: Option<String>, max: usize) -> Result<ListPage> {
        let what = format!("listing {prefix:?}");
        let o = BlobContainerClientListBlobsOptions {
            prefix: Some(self.full(prefix)),
            marker,
            maxresults: Some(i32::try_from(max.clamp(1, 5000)).unwrap_or(5000)),
            ..Default::default()
        };
        let mut pages = self
            .container
            .list_blobs(Some(o))
            .map_err(|e| map_error(&what, e))?
            .into_pages();
        let Some(page) = pages.try_next().await.map_err(|e| map_error(&what, e))? else {
            return Ok(ListPage::default());
        };
        let model = page.into_model().map_err(|e| map_error(&what, e))?;
        let items = model
            .blob_items
            .into_iter()
            .filter_map(|b| {
                let name = b.name?;
                let p = b.properties.unwrap_or_default();
                Some(ListItem {
                    name: self.strip(&name).to_string(),
                    size: p.content_length.unwrap_or(0),
                    last_modified: to_chrono(p.last_modified),
                    tier: tier_from_str(p.access_tier.as_ref().map(|t| t.as_ref())),
                })
            })
            .collect();
        Ok(ListPage {
            items,
            next: model.next_marker.filter(|m| !m.is_empty()),
        })
    }

    async fn delete(&self, blob: &str) -> Result<bool> {
        match self.blob(blob).delete(None).await {
            Ok(_) => Ok(true),
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 404) => Ok(false),
            Err(e) => Err(map_error(&format!("deleting {blob}"), e)),
        }
    }

    async fn protect(
        &self,
        blob: &str,
        until: chrono::DateTime<chrono::Utc>,
        mode: super::LockMode,
    ) -> Result<()> {
        use azure_storage_blob::models::{
            BlobClientSetImmutabilityPolicyOptions, ImmutabilityPolicyMode,
        };
        let what = format!("setting an immutability policy ({mode}, until {until}) on {blob}");
        let expiry = azure_core::time::OffsetDateTime::from_unix_timestamp(until.timestamp())
            .map_err(|e| Error::config(format!("{what}: {e}")))?;
        let options = BlobClientSetImmutabilityPolicyOptions {
            immutability_policy_mode: Some(match mode {
                super::LockMode::Unlocked => ImmutabilityPolicyMode::Unlocked,
                super::LockMode::Locked => ImmutabilityPolicyMode::Locked,
            }),
            ..Default::default()
        };
        self.blob(blob)
            .set_immutability_policy(&expiry, Some(options))
            .await
            .map(|_| ())
            .map_err(|e| map_error(&what, e))
    }

    async fn set_legal_hold(&self, blob: &str, hold: bool) -> Result<()> {
        self.blob(blob)
            .set_legal_hold(hold, None)
            .await
            .map(|_| ())
            .map_err(|e| map_error(&format!("setting legal hold = {hold} on {blob}"), e))
    }

    async fn set_tier(&self, blob: &str, tier: Tier) -> Result<()> {
        self.blob(blob)
            .set_tier(tier_to_azure(tier), None)
            .await
            .map(|_| ())
            .map_err(|e| map_error(&format!("setting tier {tier} on {blob}"), e))
    }

    async fn rehydrate(
        &self,
        blob: &str,
        staging: &str,
        priority: super::RehydratePriority,
    ) -> Result<super::Rehydration> {
        use azure_storage_blob::models::{
            ArchiveStatus, BlobClientStartCopyFromUrlOptions,
            BlobClientStartCopyFromUrlResultHeaders, CopyStatus, RehydratePriority,
        };
        let what = format!("rehydrating {blob} into {staging}");
        // Already started (a resumed restore, or polling)?
        match self.blob(staging).get_properties(None).await {
            Ok(r) => {
                let m = |e| map_error(&what, e);
                let copy = r.copy_status().map_err(m)?;
                let archive = r.archive_status().map_err(m)?;
                let tier = tier_from_str(r.access_tier().map_err(m)?.as_deref());
                if matches!(copy, Some(CopyStatus::Failed) | Some(CopyStatus::Aborted)) {
                    // Start over on the next poll.
                    let _ = self.delete(staging).await;
                    return Ok(super::Rehydration::Pending);
                }
                let pending = matches!(copy, Some(CopyStatus::Pending))
                    || matches!(archive, Some(ArchiveStatus::RehydratePendingToHot))
                    || archive.is_some()
                    || tier == Tier::Archive;
                return Ok(if pending {
                    super::Rehydration::Pending
                } else {
                    super::Rehydration::Ready
                });
            }
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 404) => {}
            Err(e) => return Err(map_error(&what, e)),
        }
        // Copy Blob from the archived original to a Hot staging blob. The source URL
        // carries the SAS when the store authenticates with one (same-account copies
        // with an Entra token are authorised by the destination request).
        let source = self.read_url(blob).map_or_else(
            || self.blob(blob).url().to_string(),
            |u| u.expose().to_string(),
        );
        let opts = BlobClientStartCopyFromUrlOptions {
            tier: Some(AccessTier::Hot),
            rehydrate_priority: Some(match priority {
                super::RehydratePriority::Standard => RehydratePriority::Standard,
                super::RehydratePriority::High => RehydratePriority::High,
            }),
            ..Default::default()
        };
        match self
            .blob(staging)
            .start_copy_from_url(source, Some(opts))
            .await
        {
            Ok(r) => Ok(match r.copy_status().map_err(|e| map_error(&what, e))? {
                Some(CopyStatus::Success) => {
                    // Azurite copies an archived source at once and keeps the tier it
                    // was asked for; Azure reports pending until the rehydration ends.
                    match self.head(staging).await? {
                        Some(p) if p.tier != Tier::Archive => super::Rehydration::Ready,
                        _ => super::Rehydration::Pending,
                    }
                }
                _ => super::Rehydration::Pending,
            }),
            Err(e) => {
                let (status, code) = http_parts(&e).unwrap_or((0, String::new()));
                if status == 404 {
                    return Err(Error::not_found(format!("{what}: BlobNotFound")));
                }
                // An emulator that cannot copy from an archived source: fall back to
                // changing the original's tier in place (documented in docs/retention.md).
                if (status == 409 && code == "CannotVerifyCopySource") || status == 501 {
                    tracing::warn!(
                        "{what}: Copy Blob refused ({status} {code}); falling back to setting the original's tier to Hot"
                    );
                    self.set_tier(blob, Tier::Hot).await?;
                    let data = self.get(blob, None).await?;
                    self.put(staging, data, true).await?;
                    return Ok(super::Rehydration::Ready);
                }
                Err(map_error(&what, e))
            }
        }
    }

    async fn block_list(&self, blob: &str) -> Result<BlockList> {
        let what = format!("reading the block list of {blob}");
        let rsp = match self
            .blob(blob)
            .block_blob_client()
            .get_block_list(BlockListType::All, None)
            .await
        {
            Ok(r) => r,
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 404) => {
                return Ok(BlockList::default())
            }
            Err(e) => return Err(map_error(&what, e)),
        };
        let model = rsp.into_model().map_err(|e| map_error(&what, e))?;
        let conv = |v: Option<Vec<azure_storage_blob::models::Block>>| -> Vec<BlockInfo> {
            v.unwrap_or_default()
                .into_iter()
                .map(|b| BlockInfo {
                    id: super::b64(&b.name.unwrap_or_default()),
                    size: b.size.unwrap_or(0).max(0) as u64,
                })
                .collect()
        };
        let mut uncommitted = conv(model.uncommitted_blocks);
        uncommitted.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(BlockList {
            committed: conv(model.committed_blocks),
            uncommitted,
        })
    }

    async fn acquire_lease(&self, blob: &str, ttl: Duration, holder: &str) -> Result<Lease> {
        let what = format!("locking {blob}");
        let secs = ttl.as_secs().clamp(LEASE_MIN, LEASE_MAX) as i32;
        let bc = self.blob(blob);
        let holder_bytes = holder.as_bytes().to_vec();
        // 1. The lease target must exist: create it (create-only) holding our name.
        let create = BlockBlobClientUploadOptions::default().if_not_exists();
        if let Err(e) = bc
            .upload(RequestContent::from(holder_bytes.clone()), Some(create))
            .await
        {
            // 409 BlobAlreadyExists / 412 on a leased blob: it exists, which is all we need.
            if !http_parts(&e).is_some_and(|(s, _)| s == 409 || s == 412) {
                return Err(map_error(&what, e));
            }
        }
        // 2. Take the lease with a proposed id: a retried acquire that already succeeded
        // is then accepted by the service as the same holder.
        let proposed = azure_core::Uuid::new_v4().to_string();
        let rsp = bc
            .acquire_lease(
                secs,
                Some(BlobClientAcquireLeaseOptions {
                    proposed_lease_id: Some(proposed.clone()),
                    ..Default::default()
                }),
            )
            .await;
        let id = match rsp {
            Ok(r) => r
                .lease_id()
                .map_err(|e| map_error(&what, e))?
                .unwrap_or(proposed),
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 409) => {
                let who = self.live_holder(blob).await;
                return Err(Error::new(
                    ErrorKind::Locked,
                    format!("{blob} is leased by another run ({who})"),
                ));
            }
            Err(e) => return Err(map_error(&what, e)),
        };
        // 3. Record the holder under the lease (overwrites a previous holder's name).
        let o = BlockBlobClientUploadOptions {
            lease_id: Some(id.clone()),
            ..Default::default()
        };
        if let Err(e) = bc.upload(RequestContent::from(holder_bytes), Some(o)).await {
            let _ = bc.release_lease(id, None).await;
            return Err(map_error(&format!("{what}: recording the holder"), e));
        }
        Ok(Lease {
            blob: blob.to_string(),
            id,
        })
    }

    async fn break_lease_of(&self, blob: &str, holder: &str) -> Result<bool> {
        let what = format!("breaking the lease on {blob} of a dead holder");
        let bc = self.blob(blob);
        let etag = match bc.get_properties(None).await {
            Ok(r) => r.etag().map_err(|e| map_error(&what, e))?,
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 404) => return Ok(false),
            Err(e) => return Err(map_error(&what, e)),
        };
        // Read after the ETag: if a new holder records its name in between, the ETag no
        // longer matches and the service refuses the break (412).
        if self.read_holder(blob).await != holder {
            return Ok(false);
        }
        match bc
            .break_lease(Some(BlobClientBreakLeaseOptions {
                break_period: Some(0),
                if_match: etag,
                ..Default::default()
            }))
            .await
        {
            Ok(_) => Ok(true),
            // 409: no lease to break; 412: the blob changed (someone else took it).
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 409 || s == 412) => Ok(false),
            Err(e) => Err(map_error(&what, e)),
        }
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<()> {
        match self
            .blob(&lease.blob)
            .renew_lease(
                lease.id.clone(),
                Some(BlobClientRenewLeaseOptions::default()),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 409 || s == 404) => Err(Error::new(
                ErrorKind::Locked,
                format!("lease on {} was lost", lease.blob),
            )),
            Err(e) => Err(map_error(
                &format!("renewing the lease on {}", lease.blob),
                e,
            )),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        // Leave no name behind: the next holder's name is written only after it took
        // the lease, and until then a refused run must not read ours as the holder's.
        let o = BlockBlobClientUploadOptions {
            lease_id: Some(lease.id.clone()),
            ..Default::default()
        };
        if let Err(e) = self
            .blob(&lease.blob)
            .upload(RequestContent::from(RELEASED.as_bytes().to_vec()), Some(o))
            .await
        {
            // A lost lease (412/409) holds someone else's name: leave it.
            tracing::debug!(
                "could not clear the holder of {}: {}",
                lease.blob,
                map_error("clearing the holder", e)
            );
        }
        match self
            .blob(&lease.blob)
            .release_lease(
                lease.id.clone(),
                Some(BlobClientReleaseLeaseOptions::default()),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if http_parts(&e).is_some_and(|(s, _)| matches!(s, 404 | 409 | 412)) => Ok(()),
            Err(e) => Err(map_error(
                &format!("releasing the lease on {}", lease.blob),
                e,
            )),
        }
    }

    fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// The result of `blobpipe auth check`: which credential was chosen and what it can do.
/// Holds no secret.
#[derive(Debug, Clone, Serialize)]
pub struct AuthReport {
    /// Printable target (no SAS).
    pub target: String,
    /// Credential kind chosen (`key`, `sas`, `managed-identity`, …).
    pub credential: String,
    /// Where it came from (variable name or "SAS in the target URL").
    pub source: String,
    /// Chain steps tried before the choice, with why each did not apply.
    pub tried: Vec<String>,
    /// Whether listing the container worked.
    pub can_list: bool,
    /// Why listing failed.
    pub list_error: Option<String>,
    /// Whether writing and deleting a probe blob worked.
    pub can_write: bool,
    /// Why writing failed.
    pub write_error: Option<String>,
    /// Name of the probe blob written and deleted.
    pub probe_blob: String,
    /// Retries needed along the way.
    pub retries: u64,
}

impl AuthReport {
    /// Whether the credential can do everything a backup needs.
    pub fn ok(&self) -> bool {
        self.can_list && self.can_write
    }
}

/// Check a target's credentials: resolve the chain, create the container if missing (as
/// a backup would), list it, put and delete a probe blob under the pipeline prefix. Failures of list/write are reported in the
/// result, not as errors.
///
/// # Errors
/// `Config` when the target is not an Azure target, cannot be parsed or no credential
/// applies (the message lists what was tried).
pub async fn auth_check(target: &TargetConfig, retry: &RetryConfig) -> Result<AuthReport> {
    auth_check_with(
        target,
        &AzureOptions {
            retry: *retry,
            ..Default::default()
        },
        &credential::process_env,
    )
    .await
}

/// [`auth_check`] with explicit options and environment (tests).
///
/// # Errors
/// As [`auth_check`].
pub async fn auth_check_with(
    target: &TargetConfig,
    opts: &AzureOptions,
    env: EnvLookup<'_>,
) -> Result<AuthReport> {
    let StoreLocation::Azure(loc) = &target.location else {
        return Err(Error::config(format!(
            "{} is not an Azure target",
            target.display_url
        )));
    };
    let store = AzureStore::open(loc, &target.container, opts, env)?;
    let probe = format!(
        "{}/.auth-check-{}",
        target.prefix.trim_matches('/'),
        crate::support::ids::random_hex(8)
    );
    let probe = probe.trim_start_matches('/').to_string();
    // As a backup does (`store::open`): create the container if missing, so a check
    // before the first backup does not report a container the run would create as
    // unlistable. A credential that may not create containers is left for the list and
    // write probes below to report.
    if let Err(e) = store.ensure_container().await {
        tracing::debug!("auth check: could not ensure the container: {e}");
    }
    let (can_list, list_error) = match store.list(&target.prefix, None, 1).await {
        Ok(_) => (true, None),
        Err(e) => (false, Some(e.to_string())),
    };
    let (can_write, write_error) = match store
        .put(&probe, Bytes::from_static(b"blobpipe auth check"), false)
        .await
    {
        Ok(_) => match store.delete(&probe).await {
            Ok(_) => (true, None),
            Err(e) => (false, Some(format!("probe written but not deleted: {e}"))),
        },
        Err(e) => (false, Some(e.to_string())),
    };
    Ok(AuthReport {
        target: store.target.display(),
        credential: store.credential.as_str().to_string(),
        source: store.credential_source.clone(),
        tried: store.credential_tried.clone(),
        can_list,
        list_error,
        can_write,
        write_error,
        probe_blob: probe,
        retries: store.retries(),
    })
}
