//! Names of everything a pipeline stores, in one place.
//!
//! ```text
//! <prefix>/packs/<aa>/<pack-id>.tar.gz|.tar.zst   packs (tier from the pipeline)
//! <prefix>/parts/<run-id>/plan.json.gz            the run's partition plan
//! <prefix>/parts/<run-id>/p-<nnnnn>.jsonl.gz      part records (durable partition results)
//! <prefix>/snapshots/<snapshot-id>.jsonl.gz       manifests, committed last, create-only
//! <prefix>/runs/<run-id>/<time>.json              run records (one per attempt)
//! <prefix>/verify/<snapshot-id>/<time>.json       verification reports
//! <prefix>/lock                                   lease target for the run lock
//! <prefix>/drills/<time>.json                      restore-drill records (measured RTO)
//! ```
//!
//! Snapshot ids begin with their UTC time, so `snapshots/` lists in time order. Run
//! records are per attempt (not `runs/<run-id>.json`) because a resumed run reuses its id
//! and every record is create-only.

use crate::pack::codec::Codec;

/// Stored names for one pipeline prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// Names under `prefix` (no leading or trailing `/`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_matches('/').to_string(),
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
    /// A run's plan.
    pub fn plan(&self, run: &str) -> String {
        self.join(&format!("parts/{run}/plan.json.gz"))
    }
    /// One part record.
    pub fn part(&self, run: &str, partition: usize) -> String {
        self.join(&format!("parts/{run}/p-{partition:05}.jsonl.gz"))
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
    /// The lock blob.
    pub fn lock(&self) -> String {
        self.join("lock")
    }
    /// Prefix of restore-drill records.
    pub fn drills(&self) -> String {
        self.join("drills/")
    }
    /// A restore-drill record (`at` from [`crate::support::ids::stamp`], so names sort by time).
    pub fn drill_record(&self, at: &str) -> String {
        self.join(&format!("drills/{at}.json"))
    }
}
