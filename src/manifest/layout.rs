//! Names of everything a pipeline stores, in one place.
//!
//! ```text
//! <prefix>/packs/<aa>/<pack-id>.tar.gz|.tar.zst|.tar   packs (tier from the pipeline)
//! <prefix>/parts/<run-id>/plan.json.gz            the run's partition plan
//! <prefix>/parts/<run-id>/f-<nnnnn>-<digest>.jsonl.gz part records of filesystem partitions
//! <prefix>/parts/<run-id>/s<tag>-p-<nnnnn>.jsonl.gz part records of streamed partitions
//! <prefix>/snapshots/<snapshot-id>.jsonl.gz       manifests, committed last, create-only
//! <prefix>/segments/<aa>/<sha256>.jsonl.gz        manifest segments (entries), content-addressed
//! <prefix>/runs/<run-id>/<time>.json              run records (one per attempt)
//! <prefix>/verify/<snapshot-id>/<time>.json       verification reports
//! <prefix>/lock                                   lease target for the run lock
//! <prefix>/drills/<time>.json                     restore-drill records (measured RTO)
//! <prefix>/rehydrate/<pack file>                  Hot staging copies of archived packs
//! <prefix>/keys/<key-id>.json                     the wrapped data key ([encryption])
//! ```
//!
//! A layout also carries the pipeline's data key when it is encrypted (`[encryption]`):
//! every reader and writer of manifests, segments, part records and packs already takes
//! the layout, so [`Layout::seal`] / [`Layout::open`] are the one place stored records are
//! sealed and opened, and a reader without the key fails there with a clear error.
//!
//! Snapshot ids begin with their UTC time, so `snapshots/` lists in time order. Run
//! records are per attempt (not `runs/<run-id>.json`) because a resumed run reuses its id
//! and every record is create-only.
//!
//! [`Repo`] pairs a pipeline's store with its layout: the one handle the commands,
//! schedule, status and serve open, instead of opening a store and building a layout
//! apart. It takes the target and retry config, not a pipeline: `manifest` sits below
//! `pipeline` and never imports it (the config types move to `store` with workstream A).

use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::codec::Codec;
use crate::manifest::crypt::{DataKey, EncryptionConfig, KeyRecord, BLOB_MAGIC};
use crate::store::config::{RetryConfig, TargetConfig};
use crate::store::{self, Store};

/// A pipeline's store and the names under its prefix, opened together.
#[derive(Debug, Clone)]
pub struct Repo {
    /// The store the pipeline targets.
    pub store: Store,
    /// Names under the pipeline's prefix.
    pub layout: Layout,
}

impl Repo {
    /// Open the store `target` names (with `retry` as its retry policy) and the layout of
    /// `target.prefix`.
    ///
    /// # Errors
    /// As [`store::open`]: `Config` for an unusable location, `Store` when unreachable.
    pub async fn open(target: &TargetConfig, retry: &RetryConfig) -> Result<Repo> {
        Ok(Repo::new(store::open(target, retry).await?, &target.prefix))
    }

    /// A handle on an already open store.
    pub fn new(store: Store, prefix: &str) -> Repo {
        Repo {
            store,
            layout: Layout::new(prefix),
        }
    }

    /// Open the pipeline's data key with `enc` (no-op without `[encryption]`), so the
    /// layout seals and opens what it stores. With `create`, a pipeline that has no key
    /// record yet (and no snapshot) gets a new data key. Runs before anything is read or
    /// written with the key.
    ///
    /// # Errors
    /// As [`unlock`].
    pub async fn unlock(&mut self, enc: Option<&EncryptionConfig>, create: bool) -> Result<()> {
        if let Some(k) = unlock(&*self.store, &self.layout, enc, create).await? {
            self.layout = self.layout.clone().with_key(k);
        }
        Ok(())
    }
}

/// The data key of the pipeline stored under `layout`, opened with `enc`: `None` without
/// `[encryption]`. With `create`, a pipeline with no key record and no snapshot gets a new
/// data key (its record written create-only).
///
/// # Errors
/// `WrongKey` when the key given opens no key record; `Config` when the key source is
/// missing, or a pipeline without `[encryption]` finds key records (its snapshots are
/// encrypted); `NotFound` when there is no key record and `create` is off (or snapshots
/// exist without one); `Integrity` for a damaged record; `Store` errors.
pub async fn unlock(
    store: &dyn store::BlobStore,
    layout: &Layout,
    enc: Option<&EncryptionConfig>,
    create: bool,
) -> Result<Option<Arc<DataKey>>> {
    let records = store::list_all(store, &layout.keys()).await?;
    let Some(enc) = enc else {
        if let Some(r) = records.first() {
            return Err(Error::config(format!(
                "this pipeline's store is encrypted (key record {}), but the pipeline has no [encryption] table; add the one its backups were made with",
                r.name
            )));
        }
        return Ok(None);
    };
    let mut wrong = None;
    for r in &records {
        let rec = KeyRecord::from_json(&r.name, &store.get(&r.name, None).await?)?;
        match rec.unwrap(&enc.kek).await {
            Ok(k) => return Ok(Some(Arc::new(k))),
            Err(e) if e.kind() == ErrorKind::WrongKey => wrong = Some(e),
            Err(e) => return Err(e.context(format!("opening key record {}", r.name))),
        }
    }
    if let Some(e) = wrong {
        return Err(e.context("[encryption]"));
    }
    // No key record yet: still read the key now, so a missing or malformed one fails
    // before anything (the run lock included) is written.
    enc.kek.preflight()?;
    let existing = store.list(&layout.snapshots(), None, 1).await?;
    if !create || !existing.items.is_empty() {
        return Err(Error::not_found(format!(
            "no key record under {}{}; without it the pipeline's encrypted data cannot be read",
            layout.keys(),
            if existing.items.is_empty() {
                " (no encrypted backup has been made yet)"
            } else {
                " although snapshots exist: restore the key record from your copy of it, or, if this prefix holds plain snapshots, give the encrypted pipeline a new target.prefix"
            }
        )));
    }
    let dk = DataKey::generate()?;
    let rec = KeyRecord::wrap(&dk, &enc.kek).await?;
    let dk = dk.wrapped_by(rec.kek.clone());
    let body = serde_json::to_vec_pretty(&rec).map_err(|e| Error::encode("key record", e))?;
    store
        .put(&layout.key_record(dk.id()), body.into(), true)
        .await?;
    Ok(Some(Arc::new(dk)))
}

/// The name ending of a verify report copied from another store (see
/// [`Layout::is_copied_report`]).
pub const COPIED_REPORT: &str = ".copied.json";

/// Stored names for one pipeline prefix (and, when encrypted, the key to seal them with).
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
    key: Option<Arc<DataKey>>,
}

impl Layout {
    /// Names under `prefix` (no leading or trailing `/`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_matches('/').to_string(),
            key: None,
        }
    }
    /// The same names, sealing and opening stored records with `key`.
    pub fn with_key(mut self, key: Arc<DataKey>) -> Self {
        self.key = Some(key);
        self
    }
    /// The data key, when the pipeline is encrypted.
    pub fn key(&self) -> Option<&Arc<DataKey>> {
        self.key.as_ref()
    }
    /// `name` relative to the prefix (what sealed blobs are bound to, so a copy under
    /// another prefix still opens).
    fn rel<'a>(&self, name: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            name
        } else {
            name.strip_prefix(self.prefix.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(name)
        }
    }
    /// The bytes to store as blob `name` (a full name): `plain` itself, or sealed under
    /// the data key when the pipeline is encrypted.
    ///
    /// # Errors
    /// `Internal` if sealing fails.
    pub fn seal(&self, name: &str, plain: Vec<u8>) -> Result<Vec<u8>> {
        match &self.key {
            Some(k) => k.seal_blob(self.rel(name), &plain),
            None => Ok(plain),
        }
    }
    /// The plain bytes of blob `name` as read from the store.
    ///
    /// # Errors
    /// `Config` when the blob is sealed but the pipeline has no key (no
    /// `[encryption]`); `Integrity` when the pipeline is encrypted and the blob is not
    /// sealed, or does not open (altered, truncated, renamed).
    pub fn open(&self, name: &str, stored: bytes::Bytes) -> Result<bytes::Bytes> {
        match &self.key {
            Some(k) => k.open_blob(self.rel(name), &stored).map(bytes::Bytes::from),
            None if stored.starts_with(BLOB_MAGIC) => Err(Error::config(format!(
                "{name} is encrypted, but the pipeline has no [encryption] table; add the one its backups were made with"
            ))),
            None => Ok(stored),
        }
    }
    fn join(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }
    /// Full name of a name relative to the prefix (as manifests record pack blobs).
    pub fn full(&self, rel: &str) -> String {
        self.join(rel)
    }
    /// Relative pack name.
    pub fn pack_rel(id: &str, codec: Codec) -> String {
        format!("packs/{}/{id}.{}", &id[..2], codec.extension())
    }
    /// Prefix of all packs.
    pub fn packs(&self) -> String {
        self.join("packs/")
    }
    /// Prefix of a run's part records.
    pub fn parts(&self, run: &str) -> String {
        self.join(&format!("parts/{run}/"))
    }
    /// Prefix of every run's part records.
    pub fn parts_all(&self) -> String {
        self.join("parts/")
    }
    /// A run's plan.
    pub fn plan(&self, run: &str) -> String {
        self.join(&format!("parts/{run}/plan.json.gz"))
    }
    /// One part record.
    pub fn part(&self, run: &str, partition: usize) -> String {
        self.join(&format!("parts/{run}/p-{partition:05}.jsonl.gz"))
    }
    /// The part record of the filesystem partition whose walk digests to `digest`: an
    /// attempt that walks the same partition again finds it by name.
    pub fn part_of(&self, run: &str, partition: usize, digest: &str) -> String {
        self.join(&format!("parts/{run}/f-{partition:05}-{digest}.jsonl.gz"))
    }
    /// Digest of a filesystem part record's name ([`Layout::part_of`]).
    pub fn part_digest_of(name: &str) -> Option<&str> {
        let rest = name.rsplit('/').next()?.strip_prefix("f-")?;
        rest.split_once('-')?.1.strip_suffix(".jsonl.gz")
    }
    /// Scale-out: what the coordinator enqueued for a run (its partition count and
    /// digests), written once it has enqueued them all.
    pub fn planned(&self, run: &str) -> String {
        self.join(&format!("parts/{run}/planned.json.gz"))
    }
    /// Scale-out: the description of partition `partition` when it is too large for a
    /// queue message.
    pub fn work_piece(&self, run: &str, partition: usize, digest: &str) -> String {
        self.join(&format!("parts/{run}/work/{partition:05}-{digest}.json.gz"))
    }
    /// Scale-out, `[encryption]`: the name a queue message's sealed description is bound
    /// to. Nothing is stored under it; binding the seal to the run and the partition
    /// means a message copied into another run's queue, or relabelled as another
    /// partition, does not open.
    pub fn work_message(&self, run: &str, partition: usize, digest: &str) -> String {
        self.join(&format!("parts/{run}/work/{partition:05}-{digest}.msg"))
    }
    /// Scale-out: the record of a dead-lettered partition (the run cannot commit).
    pub fn dead(&self, run: &str, partition: usize) -> String {
        self.join(&format!("parts/{run}/dead-{partition:05}.json"))
    }
    /// Scale-out: prefix of the markers of partition `partition`'s attempts (one
    /// create-only marker per attempt started: how often it was tried, whatever else
    /// received its message).
    pub fn attempts(&self, run: &str, partition: usize) -> String {
        self.join(&format!("parts/{run}/attempts/{partition:05}-"))
    }
    /// Scale-out: the marker of attempt `n` of partition `partition`.
    pub fn attempt(&self, run: &str, partition: usize, n: u32) -> String {
        format!("{}{n:03}", self.attempts(run, partition))
    }
    /// Scale-out: the last error of a partition's failed attempt.
    pub fn part_error(&self, run: &str, partition: usize) -> String {
        self.join(&format!("parts/{run}/error-{partition:05}.txt"))
    }
    /// Prefix of manifest segments.
    pub fn segments(&self) -> String {
        self.join("segments/")
    }
    /// A streamed source's part record for one attempt (`attempt`: a random tag). Streamed
    /// part records are never reused — a new attempt reads a new snapshot of the source —
    /// so each attempt writes its own name beside the run's others.
    pub fn streamed_part(&self, run: &str, attempt: &str, partition: usize) -> String {
        self.join(&format!("parts/{run}/s{attempt}-p-{partition:05}.jsonl.gz"))
    }
    /// Prefix of manifests.
    pub fn snapshots(&self) -> String {
        self.join("snapshots/")
    }
    /// A manifest.
    pub fn snapshot(&self, id: &str) -> String {
        self.join(&format!("snapshots/{id}.jsonl.gz"))
    }
    /// Snapshot id from a manifest name.
    pub fn snapshot_id_of(name: &str) -> Option<&str> {
        name.rsplit('/').next()?.strip_suffix(".jsonl.gz")
    }
    /// A run record.
    pub fn run_record(&self, run: &str, at: &str) -> String {
        self.join(&format!("runs/{run}/{at}.json"))
    }
    /// Prefix of run records.
    pub fn runs(&self) -> String {
        self.join("runs/")
    }
    /// Prefix of one run's records (one per attempt).
    pub fn run_records(&self, run: &str) -> String {
        self.join(&format!("runs/{run}/"))
    }
    /// Prefix of a snapshot's verify reports.
    pub fn verify_reports(&self, snapshot: &str) -> String {
        self.join(&format!("verify/{snapshot}/"))
    }
    /// Prefix of every verify report.
    pub fn verify_all(&self) -> String {
        self.join("verify/")
    }
    /// A verify report.
    pub fn verify_report(&self, snapshot: &str, at: &str) -> String {
        self.join(&format!("verify/{snapshot}/{at}.json"))
    }
    /// Whether `name` is a verify report `copy` brought from another store
    /// (`<at>.copied.json`): history of what was verified there, which never judges the
    /// copy (only a verify run where the copy lives does).
    pub fn is_copied_report(name: &str) -> bool {
        name.ends_with(COPIED_REPORT)
    }
    /// A snapshot's protection record (`[immutability]`: until when its blobs are
    /// write-once).
    pub fn protection(&self, snapshot: &str) -> String {
        self.join(&format!("immutability/{snapshot}.json"))
    }
    /// Prefix of every moved record (`prune --max-unused`: where a repacked pack's
    /// entries went).
    pub fn moved_all(&self) -> String {
        self.join("moved/")
    }
    /// The moved record of pack `id`.
    pub fn moved(&self, id: &str) -> String {
        self.join(&format!("moved/{id}.json"))
    }
    /// Pack id from a moved record's name.
    pub fn moved_id_of(name: &str) -> Option<&str> {
        name.rsplit('/').next()?.strip_suffix(".json")
    }
    /// Prefix of every protection record.
    pub fn protections(&self) -> String {
        self.join("immutability/")
    }
    /// The lock blob.
    pub fn lock(&self) -> String {
        self.join("lock")
    }
    /// Prefix of restore-drill records.
    pub fn drills(&self) -> String {
        self.join("drills/")
    }
    /// Prefix of key records.
    pub fn keys(&self) -> String {
        self.join("keys/")
    }
    /// The key record of data key `id`.
    pub fn key_record(&self, id: &str) -> String {
        self.join(&format!("keys/{id}.json"))
    }
    /// Prefix of the Hot staging copies of archived packs.
    pub fn rehydrate(&self) -> String {
        self.join("rehydrate/")
    }
    /// Relative name (like a manifest's pack blob) of the Hot staging copy of the
    /// archived pack `blob`: `rehydrate/<pack file>`.
    pub fn staging_rel(blob: &str) -> String {
        format!("rehydrate/{}", blob.rsplit('/').next().unwrap_or(blob))
    }
    /// A restore-drill record (`at` from [`crate::support::ids::stamp`], so names sort by time).
    pub fn drill_record(&self, at: &str) -> String {
        self.join(&format!("drills/{at}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_under_a_prefix() {
        let l = Layout::new("/team/db/");
        assert_eq!(
            l.full("packs/ab/ab1.tar.zst"),
            "team/db/packs/ab/ab1.tar.zst"
        );
        assert_eq!(l.packs(), "team/db/packs/");
        assert_eq!(l.parts("r1"), "team/db/parts/r1/");
        assert_eq!(l.plan("r1"), "team/db/parts/r1/plan.json.gz");
        assert_eq!(l.part("r1", 7), "team/db/parts/r1/p-00007.jsonl.gz");
        assert_eq!(
            l.streamed_part("r1", "ab12", 7),
            "team/db/parts/r1/sab12-p-00007.jsonl.gz"
        );
        assert_eq!(l.snapshots(), "team/db/snapshots/");
        assert_eq!(l.snapshot("s1"), "team/db/snapshots/s1.jsonl.gz");
        assert_eq!(l.runs(), "team/db/runs/");
        assert_eq!(l.run_records("r1"), "team/db/runs/r1/");
        assert_eq!(l.parts_all(), "team/db/parts/");
        assert_eq!(l.run_record("r1", "t"), "team/db/runs/r1/t.json");
        assert_eq!(l.verify_all(), "team/db/verify/");
        assert_eq!(l.verify_reports("s1"), "team/db/verify/s1/");
        assert_eq!(l.verify_report("s1", "t"), "team/db/verify/s1/t.json");
        assert_eq!(l.lock(), "team/db/lock");
        assert_eq!(l.drills(), "team/db/drills/");
        assert_eq!(l.drill_record("t"), "team/db/drills/t.json");
        assert_eq!(l.rehydrate(), "team/db/rehydrate/");
    }

    #[test]
    fn empty_prefix_has_no_leading_slash() {
        let l = Layout::new("");
        assert_eq!(l.lock(), "lock");
        assert_eq!(l.snapshot("s1"), "snapshots/s1.jsonl.gz");
        assert_eq!(l.parts_all(), "parts/");
        assert_eq!(l.parts(""), "parts//");
    }

    #[test]
    fn pack_and_staging_names() {
        assert_eq!(
            Layout::pack_rel("ab12", Codec::Zstd),
            "packs/ab/ab12.tar.zst"
        );
        assert_eq!(
            Layout::pack_rel("ab12", Codec::Gzip),
            "packs/ab/ab12.tar.gz"
        );
        assert_eq!(
            Layout::staging_rel("packs/ab/ab12.tar.zst"),
            "rehydrate/ab12.tar.zst"
        );
        assert_eq!(
            Layout::snapshot_id_of("p/snapshots/20261201T000000Z-x.jsonl.gz"),
            Some("20261201T000000Z-x")
        );
        assert_eq!(Layout::snapshot_id_of("p/snapshots/x.json"), None);
    }
}
