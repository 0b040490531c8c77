//! A container read as a *source* of data (`source.type = "blob"`) and written as a
//! restore destination (`restore --to-container`), beside the [`BlobStore`] contract.
//!
//! The store contract moves the engine's own blobs; backing up somebody else's container
//! needs more of each blob: its ETag (to detect change, and to read exactly one version),
//! its Content-MD5, content type, user metadata and index tags. Those are Azure notions,
//! so they live here, as inherent methods of [`AzureStore`], and the engine converts them
//! into the extract stage's own types (a source knows no store).
//!
//! - [`AzureStore::list_detailed`]: one listing page with metadata and tags
//!   (`include=metadata,tags`), names relative to the store's root.
//! - [`AzureStore::read_version`]: a ranged read with `If-Match: <etag>`, so every range
//!   of a blob read in several requests comes from one version; a changed blob answers
//!   412, reported as `Ok(None)`, never as bytes of the wrong version.
//! - [`AzureStore::props`]: the same facts from Get Blob Properties (no tags), for a
//!   re-read after a change.
//! - [`AzureStore::rehydrate_in_place`]: Set Blob Tier Hot with a rehydrate priority on
//!   an Archive-tier source blob (`source.rehydrate`), so a later run can read it.
//! - [`AzureStore::commit_restored`]: commit staged blocks as a restored blob with its
//!   content type, Content-MD5, metadata and tags, create-only unless overwriting.
//!
//! [`BlobStore`]: super::BlobStore

use std::collections::{BTreeMap, HashMap};
use std::num::NonZero;
use std::ops::Range;

use azure_core::http::{Etag, RequestContent};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
    BlobContainerClientListBlobsOptions, BlockBlobClientCommitBlockListOptions, BlockLookupList,
    HttpRange, ListBlobsIncludeItem,
};
use futures::TryStreamExt;

use super::client::{http_parts, map_error};
use super::{decode_block_id, tier_from_str, to_chrono, AzureStore};
use crate::error::{Error, ErrorKind, Result};
use crate::store::Tier;

/// A blob as a source listing or its properties report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceBlob {
    /// Name relative to the store's root.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag, without quotes (changes with every write of content or metadata; not with
    /// tags).
    pub etag: String,
    /// Last modification.
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// Content-MD5 as the service stores it (absent for many block blobs).
    pub content_md5: Option<[u8; 16]>,
    /// Content type.
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Blob index tags (empty from [`AzureStore::props`], which cannot see them).
    pub tags: BTreeMap<String, String>,
    /// Access tier (Archive blobs cannot be read).
    pub tier: Tier,
    /// Whether the blob is a block blob (page and append blobs are not backed up).
    pub block_blob: bool,
}

/// One page of a detailed listing.
#[derive(Debug, Clone, Default)]
pub struct SourcePage {
    /// Blobs in name order.
    pub items: Vec<SourceBlob>,
    /// Continuation marker, `None` when done.
    pub next: Option<String>,
}

/// How a restored blob is committed.
#[derive(Debug, Clone, Default)]
pub struct RestoredBlob {
    /// Content type to set.
    pub content_type: Option<String>,
    /// Content-MD5 of the whole blob (computed from the restored bytes).
    pub content_md5: Option<[u8; 16]>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Index tags.
    pub tags: BTreeMap<String, String>,
    /// Replace an existing blob (otherwise an existing one is a `Conflict`).
    pub overwrite: bool,
}

/// An ETag without the quotes HTTP headers put around it (listings give it bare), so the
/// two compare equal.
pub fn bare(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}

impl AzureStore {
    /// Whether the container exists (a source must not be created by reading it).
    ///
    /// # Errors
    /// `Store` (403 and the like: the credential cannot read it).
    pub async fn container_exists(&self) -> Result<bool> {
        match self.container.get_properties(None).await {
            Ok(_) => Ok(true),
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 404) => Ok(false),
            Err(e) => Err(map_error(
                &format!("reading container {}", self.target.container),
                e,
            )),
        }
    }

    /// Start rehydrating the Archive-tier source blob `blob` **in place** to Hot (Set Blob
    /// Tier with `x-ms-rehydrate-priority`): it is somebody else's blob, and a backup that
    /// reads it wants it online where it is, not a copy. Rehydration takes hours (Standard
    /// up to 15, High usually under 1); a blob whose rehydration is already pending
    /// (409 `BlobBeingRehydrated`) is success.
    ///
    /// # Errors
    /// `NotFound` for a deleted blob, `Store` (403: the credential may not write tiers).
    pub async fn rehydrate_in_place(
        &self,
        blob: &str,
        priority: crate::store::RehydratePriority,
    ) -> Result<()> {
        use azure_storage_blob::models::{AccessTier, BlobClientSetTierOptions, RehydratePriority};
        let what = format!("rehydrating {blob} to Hot ({} priority)", priority.as_str());
        let opts = BlobClientSetTierOptions {
            rehydrate_priority: Some(match priority {
                crate::store::RehydratePriority::Standard => RehydratePriority::Standard,
                crate::store::RehydratePriority::High => RehydratePriority::High,
            }),
            ..Default::default()
        };
        match self.blob(blob).set_tier(AccessTier::Hot, Some(opts)).await {
            Ok(_) => Ok(()),
            Err(e)
                if http_parts(&e).is_some_and(|(s, c)| s == 409 && c == "BlobBeingRehydrated") =>
            {
                Ok(())
            }
            Err(e) => Err(map_error(&what, e)),
        }
    }

    /// The root prefix every name is relative to (`""` for the whole container).
    pub fn root(&self) -> &str {
        &self.target.root
    }

    /// The container name.
    pub fn container_name(&self) -> &str {
        &self.target.container
    }

    /// One page of the blobs under `prefix` (relative to the root) with metadata and
    /// index tags, `max` at most; `marker` continues a listing.
    ///
    /// # Errors
    /// `NotFound` for a missing container, `Store` otherwise.
    pub async fn list_detailed(
        &self,
        prefix: &str,
        marker: Option<String>,
        max: usize,
    ) -> Result<SourcePage> {
        let what = format!("listing {} with metadata and tags", self.target.display());
        let full = self.full(prefix);
        let o = BlobContainerClientListBlobsOptions {
            prefix: (!full.is_empty()).then_some(full),
            marker,
            maxresults: Some(i32::try_from(max.clamp(1, 5000)).unwrap_or(5000)),
            include: Some(vec![
                ListBlobsIncludeItem::Metadata,
                ListBlobsIncludeItem::Tags,
            ]),
            ..Default::default()
        };
        let mut pages = self
            .container
            .list_blobs(Some(o))
            .map_err(|e| map_error(&what, e))?
            .into_pages();
        let Some(page) = pages.try_next().await.map_err(|e| map_error(&what, e))? else {
            return Ok(SourcePage::default());
        };
        let model = page.into_model().map_err(|e| map_error(&what, e))?;
        let items = model
            .blob_items
            .into_iter()
            .filter_map(|b| {
                let name = b.name?;
                let p = b.properties.unwrap_or_default();
                let tags: HashMap<String, String> = b.blob_tags.map(Into::into).unwrap_or_default();
                Some(SourceBlob {
                    name: self.strip(&name).to_string(),
                    size: p.content_length.unwrap_or(0),
                    etag: p.etag.map(|e| bare(e.as_ref())).unwrap_or_default(),
                    last_modified: to_chrono(p.last_modified),
                    content_md5: p.content_md5.and_then(|v| <[u8; 16]>::try_from(v).ok()),
                    content_type: p.content_type.filter(|t| !t.is_empty()),
                    metadata: b
                        .metadata
                        .and_then(|m| m.values)
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                    tags: tags.into_iter().collect(),
                    tier: tier_from_str(p.access_tier.as_ref().map(|t| t.as_ref())),
                    block_blob: p.blob_type.is_none_or(|t| {
                        matches!(t, azure_storage_blob::models::BlobType::BlockBlob)
                    }),
                })
            })
            .collect();
        Ok(SourcePage {
            items,
            next: model.next_marker.filter(|m| !m.is_empty()),
        })
    }

    /// Properties of `blob` as a [`SourceBlob`] (tags empty), `None` if it is gone.
    ///
    /// # Errors
    /// `Store`.
    pub async fn props(&self, blob: &str) -> Result<Option<SourceBlob>> {
        let what = format!("reading properties of {blob}");
        match self.blob(blob).get_properties(None).await {
            Ok(r) => {
                let m = |e| map_error(&what, e);
                Ok(Some(SourceBlob {
                    name: blob.to_string(),
                    size: r.content_length().map_err(m)?.unwrap_or(0),
                    etag: r
                        .etag()
                        .map_err(m)?
                        .map(|e| bare(e.as_ref()))
                        .unwrap_or_default(),
                    last_modified: to_chrono(r.last_modified().map_err(m)?),
                    content_md5: r
                        .content_md5()
                        .map_err(m)?
                        .and_then(|v| <[u8; 16]>::try_from(v).ok()),
                    content_type: r.content_type().map_err(m)?.filter(|t| !t.is_empty()),
                    metadata: r.metadata().map_err(m)?.into_iter().collect(),
                    tags: BTreeMap::new(),
                    tier: tier_from_str(r.access_tier().map_err(m)?.as_deref()),
                    block_blob: true,
                }))
            }
            Err(e) if http_parts(&e).is_some_and(|(s, _)| s == 404) => Ok(None),
            Err(e) => Err(map_error(&what, e)),
        }
    }

    /// Read `range` of `blob` in one GET, with its ETag. With `if_match`, only the version
    /// `if_match` is read. `Ok(None)` when the blob changed (412), is gone (404) or no
    /// longer reaches the range (416).
    ///
    /// # Errors
    /// `Archived` for an Archive-tier blob, `Integrity` for a short read, `Store`.
    pub async fn read_version(
        &self,
        blob: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Option<(bytes::Bytes, String)>> {
        let what = format!("reading {}..{} of {blob}", range.start, range.end);
        let want = range.end.saturating_sub(range.start);
        if want == 0 {
            return Ok(Some((
                bytes::Bytes::new(),
                if_match.unwrap_or("").to_string(),
            )));
        }
        let o = BlobClientDownloadOptions {
            range: Some(HttpRange::from(range)),
            partition_size: NonZero::new(usize::try_from(want).unwrap_or(usize::MAX)),
            parallel: NonZero::new(1),
            if_match: if_match.map(|e| Etag::from(format!("\"{e}\""))),
            ..Default::default()
        };
        let changed = |e: &azure_core::Error| {
            http_parts(e).is_some_and(|(s, _)| matches!(s, 404 | 412 | 416))
        };
        let res = match self.blob(blob).download(Some(o)).await {
            Ok(r) => r,
            Err(e) if changed(&e) => return Ok(None),
            Err(e) => return Err(map_error(&what, e)),
        };
        let etag = res
            .properties
            .etag
            .as_ref()
            .map(|e| bare(e.as_ref()))
            .unwrap_or_default();
        let bytes = match res.body.collect().await {
            Ok(b) => b,
            Err(e) if changed(&e) => return Ok(None),
            Err(e) => return Err(map_error(&what, e)),
        };
        if bytes.len() as u64 != want {
            return Err(Error::integrity(format!(
                "{what}: got {} bytes, wanted {want}",
                bytes.len()
            )));
        }
        Ok(Some((bytes, etag)))
    }

    /// Commit `block_ids` (staged with [`super::BlobStore::stage_block`]) as the restored
    /// blob `blob` with its properties. An empty list makes an empty blob.
    ///
    /// # Errors
    /// `Conflict` when the blob exists and `opts.overwrite` is off; `Store` otherwise.
    pub async fn commit_restored(
        &self,
        blob: &str,
        block_ids: &[String],
        opts: &RestoredBlob,
    ) -> Result<()> {
        let what = format!("committing restored blob {blob}");
        let ids = block_ids
            .iter()
            .map(|i| decode_block_id(i))
            .collect::<Result<Vec<_>>>()?;
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let body: RequestContent<BlockLookupList, azure_core::http::XmlFormat> =
            list.try_into().map_err(|e| map_error(&what, e))?;
        let mut o = BlockBlobClientCommitBlockListOptions {
            blob_content_md5: opts.content_md5.map(|m| m.to_vec()),
            blob_content_type: opts.content_type.clone(),
            metadata: (!opts.metadata.is_empty()).then(|| {
                opts.metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            if_none_match: (!opts.overwrite).then(|| "*".into()),
            ..Default::default()
        };
        if !opts.tags.is_empty() {
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
            Err(e) if !opts.overwrite && http_parts(&e).is_some_and(|(s, _)| s == 409) => {
                Err(Error::new(
                    ErrorKind::Conflict,
                    format!("{what}: it already exists (restore with --overwrite to replace it)"),
                ))
            }
            Err(e) => Err(map_error(&what, e)),
        }
    }
}
