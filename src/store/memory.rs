//! An in-memory store for fast tests.
//!
//! Behaves like the other stores (it passes the same conformance suite). Counters of
//! operations are always kept; the hooks tests need (a per-operation delay to make
//! uploads slow for backpressure tests, write and read fault injection, rehydration
//! delay, backdating, direct byte access to corrupt a stored blob) exist only in unit
//! tests and with the `testing` feature, so a release binary has no way to inject a
//! fault.
//! Stores opened with the same `memory://name` URL in one process share their contents.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BlobProps, BlobStore, BlockInfo, BlockList, CommitOptions, Lease, ListItem, ListPage,
    PutOutcome, Tier,
};
use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone)]
struct Blob {
    data: Bytes,
    blocks: Vec<(String, u64)>,
    props: BlobProps,
}

impl Blob {
    /// A blob written whole (a put, or a lease's holder text): Hot, no blocks, no metadata.
    fn whole(data: Bytes, md5: Option<[u8; 16]>) -> Self {
        let size = data.len() as u64;
        Self {
            data,
            blocks: Vec::new(),
            props: props(size, Tier::Hot, md5, BTreeMap::new()),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    blobs: BTreeMap<String, Blob>,
    staged: HashMap<String, HashMap<String, Bytes>>,
    leases: HashMap<String, (String, Instant, Duration)>,
    /// Staging copies still rehydrating, and when they become readable.
    rehydrating: HashMap<String, Instant>,
    /// Immutability policies and legal holds, by blob (what Azure's version-level WORM
    /// enforces: no delete, no overwrite while either holds).
    protection: HashMap<String, Protection>,
}

/// One blob's immutability policy and legal hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Protection {
    /// Policy expiry and mode, if a policy was set.
    pub policy: Option<(chrono::DateTime<chrono::Utc>, super::LockMode)>,
    /// Legal hold set.
    pub legal_hold: bool,
}

impl Protection {
    fn holds(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.legal_hold || self.policy.is_some_and(|(until, _)| until > now)
    }
}

/// Counters of store operations, for tests that assert what was (not) done.
#[derive(Debug, Default)]
pub struct OpCounts {
    /// Blocks staged.
    pub staged: AtomicU64,
    /// Block lists committed.
    pub commits: AtomicU64,
    /// Ranged or whole reads.
    pub gets: AtomicU64,
    /// Bytes those reads returned.
    pub bytes_read: AtomicU64,
    /// Small puts.
    pub puts: AtomicU64,
    /// Immutability policies set (or extended) and legal holds set.
    pub protects: AtomicU64,
}

/// The in-memory store.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    name: String,
    state: Arc<Mutex<State>>,
    delay: Arc<Mutex<Option<Duration>>>,
    fail_puts_matching: Arc<Mutex<Option<String>>>,
    fail_commits_matching: Arc<Mutex<Option<String>>>,
    fail_reads_matching: Arc<Mutex<Option<String>>>,
    rehydrate_delay: Arc<Mutex<Option<Duration>>>,
    /// Operation counters.
    pub counts: Arc<OpCounts>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new("default")
    }
}

fn registry() -> &'static Mutex<HashMap<String, MemoryStore>> {
    static R: OnceLock<Mutex<HashMap<String, MemoryStore>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

impl MemoryStore {
    /// A fresh, private store.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            state: Default::default(),
            delay: Default::default(),
            fail_puts_matching: Default::default(),
            fail_commits_matching: Default::default(),
            fail_reads_matching: Default::default(),
            rehydrate_delay: Default::default(),
            counts: Default::default(),
        }
    }

    /// The process-wide store named `name` (what `memory://name` opens).
    pub fn shared(name: &str) -> Self {
        registry()
            .lock()
            .expect("memory registry poisoned")
            .entry(name.to_string())
            .or_insert_with(|| MemoryStore::new(name))
            .clone()
    }

    #[cfg(any(test, feature = "testing"))]
    /// Make every stage/put sleep `delay` first (simulates a slow network).
    pub fn set_delay(&self, delay: Option<Duration>) {
        *self.delay.lock().expect("poisoned") = delay;
    }

    #[cfg(any(test, feature = "testing"))]
    /// Make puts and commits of blobs whose name contains `pattern` fail transiently.
    pub fn fail_writes_containing(&self, pattern: Option<&str>) {
        *self.fail_puts_matching.lock().expect("poisoned") = pattern.map(str::to_string);
    }

    #[cfg(any(test, feature = "testing"))]
    /// Make block-list commits of blobs whose name contains `pattern` fail transiently
    /// (staging still works: leaves staged, uncommitted blocks behind).
    pub fn fail_commits_containing(&self, pattern: Option<&str>) {
        *self.fail_commits_matching.lock().expect("poisoned") = pattern.map(str::to_string);
    }

    #[cfg(any(test, feature = "testing"))]
    /// Make reads (`get`) of blobs whose name contains `pattern` fail transiently, as a
    /// store failing beyond its retries would (e.g. a verification after the commit).
    pub fn fail_reads_containing(&self, pattern: Option<&str>) {
        *self.fail_reads_matching.lock().expect("poisoned") = pattern.map(str::to_string);
    }

    #[cfg(any(test, feature = "testing"))]
    /// Overwrite one byte of a committed blob (corruption tests).
    pub fn corrupt(&self, blob: &str, offset: usize) {
        let mut st = self.state.lock().expect("poisoned");
        let b = st.blobs.get_mut(blob).expect("no such blob");
        let mut v = b.data.to_vec();
        v[offset] ^= 0xff;
        b.data = Bytes::from(v);
    }

    #[cfg(any(test, feature = "testing"))]
    /// Make rehydration take `delay` (a staging copy stays pending that long), so
    /// polling and resuming are tested; `None`: instant.
    pub fn set_rehydrate_delay(&self, delay: Option<Duration>) {
        *self.rehydrate_delay.lock().expect("poisoned") = delay;
    }

    #[cfg(any(test, feature = "testing"))]
    /// Move the `last_modified` of every blob under `prefix` back by `by` (tests of the
    /// prune grace period and early-deletion minimums).
    pub fn backdate(&self, prefix: &str, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        let mut st = self.state.lock().expect("poisoned");
        for (name, b) in st.blobs.iter_mut() {
            if name.starts_with(prefix) {
                b.props.last_modified -= by;
            }
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// Names of all committed blobs.
    pub fn names(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("poisoned")
            .blobs
            .keys()
            .cloned()
            .collect()
    }

    #[cfg(any(test, feature = "testing"))]
    /// The immutability policy and legal hold of `blob` (default: none).
    pub fn protection(&self, blob: &str) -> Protection {
        self.lock()
            .protection
            .get(blob)
            .copied()
            .unwrap_or_default()
    }

    #[cfg(any(test, feature = "testing"))]
    /// Let every immutability policy expire now (legal holds stay): what the passing of
    /// `days` does, for tests of forget and prune after protection ends.
    pub fn expire_protection(&self) {
        let past = chrono::Utc::now() - chrono::Duration::seconds(1);
        for p in self.lock().protection.values_mut() {
            if let Some((until, _)) = &mut p.policy {
                *until = past;
            }
        }
    }

    async fn pause(&self) {
        let d = *self.delay.lock().expect("poisoned");
        if let Some(d) = d {
            tokio::time::sleep(d).await;
        }
    }

    fn check_fault(&self, blob: &str) -> Result<()> {
        if let Some(p) = self.fail_puts_matching.lock().expect("poisoned").as_deref() {
            if blob.contains(p) {
                return Err(Error::transient(
                    ErrorKind::Store,
                    format!("injected fault writing {blob}"),
                ));
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory store poisoned")
    }
}

impl State {
    /// Azure's answer to a delete or overwrite of a protected blob.
    fn refuse_if_protected(&self, blob: &str, what: &str) -> Result<()> {
        match self.protection.get(blob) {
            Some(p) if p.holds(chrono::Utc::now()) => Err(Error::new(
                ErrorKind::Immutable,
                format!(
                    "{what} {blob}: {}",
                    if p.legal_hold {
                        "BlobImmutableDueToLegalHold"
                    } else {
                        "BlobImmutableDueToPolicy"
                    }
                ),
            )),
            _ => Ok(()),
        }
    }
}

fn props(
    size: u64,
    tier: Tier,
    md5: Option<[u8; 16]>,
    metadata: BTreeMap<String, String>,
) -> BlobProps {
    BlobProps {
        size,
        content_md5: md5,
        tier,
        metadata,
        last_modified: chrono::Utc::now(),
    }
}

#[async_trait]
impl BlobStore for MemoryStore {
    fn describe(&self) -> String {
        format!("memory://{}", self.name)
    }

    async fn stage_block(
        &self,
        blob: &str,
        block_id: &str,
        data: Bytes,
        md5: [u8; 16],
    ) -> Result<()> {
        self.pause().await;
        self.check_fault(blob)?;
        if super::md5(&data) != md5 {
            return Err(Error::integrity(format!(
                "Md5Mismatch: block {block_id} of {blob}: the data does not match its transactional MD5"
            )));
        }
        self.counts.staged.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .staged
            .entry(blob.to_string())
            .or_default()
            .insert(block_id.to_string(), data);
        Ok(())
    }

    async fn commit_blocks(
        &self,
        blob: &str,
        block_ids: &[String],
        opts: &CommitOptions,
    ) -> Result<()> {
        self.pause().await;
        self.check_fault(blob)?;
        if let Some(p) = self
            .fail_commits_matching
            .lock()
            .expect("poisoned")
            .as_deref()
        {
            if blob.contains(p) {
                return Err(Error::transient(
                    ErrorKind::Store,
                    format!("injected fault committing {blob}"),
                ));
            }
        }
        let mut st = self.lock();
        st.refuse_if_protected(blob, "committing")?;
        if opts.create_only && st.blobs.contains_key(blob) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("BlobAlreadyExists: {blob}"),
            ));
        }
        let staged = st.staged.get(blob).cloned().unwrap_or_default();
        let old = st.blobs.get(blob).cloned();
        let mut data = Vec::new();
        let mut blocks = Vec::new();
        for id in block_ids {
            let bytes = if let Some(b) = staged.get(id) {
                b.clone()
            } else if let Some(old) = &old {
                let mut off = 0u64;
                let mut found = None;
                for (bid, size) in &old.blocks {
                    if bid == id {
                        found = Some(old.data.slice(off as usize..(off + size) as usize));
                        break;
                    }
                    off += size;
                }
                found.ok_or_else(|| {
                    Error::integrity(format!("InvalidBlockList: block {id} of {blob} unknown"))
                })?
            } else {
                return Err(Error::integrity(format!(
                    "InvalidBlockList: block {id} of {blob} unknown"
                )));
            };
            blocks.push((id.clone(), bytes.len() as u64));
            data.extend_from_slice(&bytes);
        }
        st.staged.remove(blob);
        self.counts.commits.fetch_add(1, Ordering::Relaxed);
        let size = data.len() as u64;
        st.blobs.insert(
            blob.to_string(),
            Blob {
                data: Bytes::from(data),
                blocks,
                props: props(size, opts.tier, opts.content_md5, opts.metadata.clone()),
            },
        );
        Ok(())
    }

    async fn put(&self, blob: &str, data: Bytes, create_only: bool) -> Result<PutOutcome> {
        self.pause().await;
        self.check_fault(blob)?;
        let mut st = self.lock();
        if let Some(existing) = st.blobs.get(blob) {
            if create_only {
                return if existing.data == data {
                    Ok(PutOutcome::AlreadyIdentical)
                } else {
                    Err(Error::new(
                        ErrorKind::Conflict,
                        format!("{blob} already exists with different content"),
                    ))
                };
            }
        }
        st.refuse_if_protected(blob, "writing")?;
        self.counts.puts.fetch_add(1, Ordering::Relaxed);
        let md5 = super::md5(&data);
        st.blobs
            .insert(blob.to_string(), Blob::whole(data, Some(md5)));
        Ok(PutOutcome::Created)
    }

    async fn get(&self, blob: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        self.counts.gets.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = self
            .fail_reads_matching
            .lock()
            .expect("poisoned")
            .as_deref()
        {
            if blob.contains(p) {
                return Err(Error::transient(
                    ErrorKind::Store,
                    format!("injected fault reading {blob} (retries exhausted)"),
                ));
            }
        }
        let st = self.lock();
        let b = st
            .blobs
            .get(blob)
            .ok_or_else(|| Error::not_found(format!("BlobNotFound: {blob}")))?;
        if b.props.tier == Tier::Archive {
            return Err(Error::new(
                ErrorKind::Archived,
                format!("BlobArchived: {blob} is in the Archive tier; rehydrate it first"),
            ));
        }
        let data = match range {
            None => b.data.clone(),
            Some(r) if r.start <= r.end && r.end <= b.data.len() as u64 => {
                b.data.slice(r.start as usize..r.end as usize)
            }
            Some(r) => {
                return Err(Error::integrity(format!(
                    "InvalidRange: {}..{} of {blob} ({} bytes)",
                    r.start,
                    r.end,
                    b.data.len()
                )))
            }
        };
        self.counts
            .bytes_read
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }

    async fn head(&self, blob: &str) -> Result<Option<BlobProps>> {
        Ok(self.lock().blobs.get(blob).map(|b| b.props.clone()))
    }

    async fn list(&self, prefix: &str, marker: Option<String>, max: usize) -> Result<ListPage> {
        let st = self.lock();
        let max = max.max(1);
        let mut items = Vec::new();
        let start = marker.clone().unwrap_or_else(|| prefix.to_string());
        for (name, b) in st.blobs.range(start..) {
            if !name.starts_with(prefix) {
                break;
            }
            if marker.as_deref() == Some(name.as_str()) {
                continue;
            }
            if items.len() == max {
                let next = items.last().map(|i: &ListItem| i.name.clone());
                return Ok(ListPage { items, next });
            }
            items.push(ListItem {
                name: name.clone(),
                size: b.props.size,
                last_modified: b.props.last_modified,
                tier: b.props.tier,
            });
        }
        Ok(ListPage { items, next: None })
    }

    async fn delete(&self, blob: &str) -> Result<bool> {
        let mut st = self.lock();
        st.refuse_if_protected(blob, "deleting")?;
        st.protection.remove(blob);
        st.staged.remove(blob);
        Ok(st.blobs.remove(blob).is_some())
    }

    async fn protect(
        &self,
        blob: &str,
        until: chrono::DateTime<chrono::Utc>,
        mode: super::LockMode,
    ) -> Result<()> {
        let mut st = self.lock();
        if !st.blobs.contains_key(blob) {
            return Err(Error::not_found(format!("BlobNotFound: {blob}")));
        }
        let p = st.protection.entry(blob.to_string()).or_default();
        if let Some((old, super::LockMode::Locked)) = p.policy {
            if until < old {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("ImmutabilityPolicyCannotBeShortened: {blob} is locked until {old}"),
                ));
            }
            if mode == super::LockMode::Unlocked {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("ImmutabilityPolicyLocked: {blob}'s policy is locked"),
                ));
            }
        }
        p.policy = Some((until, mode));
        self.counts.protects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn set_legal_hold(&self, blob: &str, hold: bool) -> Result<()> {
        let mut st = self.lock();
        if !st.blobs.contains_key(blob) {
            return Err(Error::not_found(format!("BlobNotFound: {blob}")));
        }
        st.protection
            .entry(blob.to_string())
            .or_default()
            .legal_hold = hold;
        self.counts.protects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn set_tier(&self, blob: &str, tier: Tier) -> Result<()> {
        let mut st = self.lock();
        let b = st
            .blobs
            .get_mut(blob)
            .ok_or_else(|| Error::not_found(format!("BlobNotFound: {blob}")))?;
        b.props.tier = tier;
        Ok(())
    }

    async fn rehydrate(
        &self,
        blob: &str,
        staging: &str,
        _priority: super::RehydratePriority,
    ) -> Result<super::Rehydration> {
        let delay = *self.rehydrate_delay.lock().expect("poisoned");
        let mut st = self.lock();
        let now = Instant::now();
        if st.blobs.contains_key(staging) {
            return Ok(match st.rehydrating.get(staging) {
                Some(at) if *at > now => super::Rehydration::Pending,
                _ => {
                    st.rehydrating.remove(staging);
                    if let Some(b) = st.blobs.get_mut(staging) {
                        b.props.tier = Tier::Hot;
                    }
                    super::Rehydration::Ready
                }
            });
        }
        let mut copy = st
            .blobs
            .get(blob)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("BlobNotFound: {blob}")))?;
        copy.props.last_modified = chrono::Utc::now();
        let state = match delay {
            Some(d) if !d.is_zero() => {
                // Like Azure: the destination exists at once, unreadable until done.
                copy.props.tier = Tier::Archive;
                st.rehydrating.insert(staging.to_string(), now + d);
                super::Rehydration::Pending
            }
            _ => {
                copy.props.tier = Tier::Hot;
                super::Rehydration::Ready
            }
        };
        st.blobs.insert(staging.to_string(), copy);
        Ok(state)
    }

    async fn block_list(&self, blob: &str) -> Result<BlockList> {
        let st = self.lock();
        let committed = st
            .blobs
            .get(blob)
            .map(|b| {
                b.blocks
                    .iter()
                    .map(|(id, size)| BlockInfo {
                        id: id.clone(),
                        size: *size,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut uncommitted: Vec<BlockInfo> = st
            .staged
            .get(blob)
            .map(|m| {
                m.iter()
                    .map(|(id, d)| BlockInfo {
                        id: id.clone(),
                        size: d.len() as u64,
                    })
                    .collect()
            })
            .unwrap_or_default();
        uncommitted.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(BlockList {
            committed,
            uncommitted,
        })
    }

    async fn acquire_lease(&self, blob: &str, ttl: Duration, holder: &str) -> Result<Lease> {
        let mut st = self.lock();
        let now = Instant::now();
        if let Some((_, at, lttl)) = st.leases.get(blob) {
            if now.duration_since(*at) < *lttl {
                let who = st
                    .blobs
                    .get(blob)
                    .map(|b| String::from_utf8_lossy(&b.data).into_owned())
                    .unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Locked,
                    format!("{blob} is leased by another run ({who})"),
                ));
            }
        }
        let id = crate::support::ids::random_hex(16);
        st.leases.insert(blob.to_string(), (id.clone(), now, ttl));
        let data = Bytes::from(holder.as_bytes().to_vec());
        st.blobs.insert(blob.to_string(), Blob::whole(data, None));
        Ok(Lease {
            blob: blob.to_string(),
            id,
        })
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<()> {
        let mut st = self.lock();
        match st.leases.get_mut(&lease.blob) {
            Some((id, at, _)) if *id == lease.id => {
                *at = Instant::now();
                Ok(())
            }
            _ => Err(Error::new(
                ErrorKind::Locked,
                format!("lease on {} was lost", lease.blob),
            )),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let mut st = self.lock();
        if st
            .leases
            .get(&lease.blob)
            .is_some_and(|(id, _, _)| *id == lease.id)
        {
            st.leases.remove(&lease.blob);
        }
        Ok(())
    }

    async fn break_lease_of(&self, blob: &str, holder: &str) -> Result<bool> {
        let mut st = self.lock();
        let live = st
            .leases
            .get(blob)
            .is_some_and(|(_, at, ttl)| Instant::now().duration_since(*at) < *ttl);
        let same = st
            .blobs
            .get(blob)
            .is_some_and(|b| b.data == holder.as_bytes());
        if live && same {
            st.leases.remove(blob);
        }
        Ok(live && same)
    }
}
