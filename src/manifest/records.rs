//! Typed views of the small JSON records a pipeline stores beside its snapshots: run
//! records (`runs/<run>/<stamp>.json`), verify reports and drill records.
//!
//! Writers live higher up (the engine writes run records, `verify` its reports,
//! `pipeline::drill` drill records); the readers — status, freshness, retention, the
//! catalog, `serve` — sit beside or below them, so the shapes they read back live here,
//! in `manifest/`, where every stage may import them. Each type names only the fields
//! its readers use, spelled exactly as stored; every field has a default, because older
//! records (and the retention record stored under `runs/`) lack some of them. Unknown
//! fields are ignored, so writers may add fields freely.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a backup run ended; stored lower-case in run records and printed so on the wire
/// (`"status": "ok"`, serve's `"state"`, the hand-off's `"outcome"`, alert events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Committed and verified.
    Ok,
    /// Committed, but some source files could not be read or kept changing.
    Partial,
    /// Committed, but verification found a mismatch.
    Mismatch,
    /// Committed, but the verification after the commit could not complete (the store
    /// failed beyond its retries, or the process died while verifying): the snapshot
    /// exists and is listed, but nothing proves it restores. Not ok: it alerts, and it
    /// does not count as a verified snapshot. A rerun with the same run id verifies it.
    #[serde(rename = "committed_unverified")]
    CommittedUnverified,
    /// Nothing committed.
    Failed,
    /// Stopped by a signal; nothing committed; resumable.
    Cancelled,
}

impl RunStatus {
    /// The stored, lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Mismatch => "mismatch",
            RunStatus::CommittedUnverified => "committed_unverified",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

impl RunStatus {
    /// Whether the run committed a snapshot (it exists and is listed, whatever its
    /// verification found).
    pub fn committed(self) -> bool {
        matches!(
            self,
            RunStatus::Ok
                | RunStatus::Partial
                | RunStatus::Mismatch
                | RunStatus::CommittedUnverified
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot's verification outcome as the catalog lists it (`"verify_status"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyStatus {
    /// The newest report of every mode found nothing.
    Ok,
    /// The newest report of some mode found a mismatch.
    Mismatch,
    /// No verify report.
    Unverified,
}

impl VerifyStatus {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyStatus::Ok => "ok",
            VerifyStatus::Mismatch => "mismatch",
            VerifyStatus::Unverified => "unverified",
        }
    }
}

impl std::fmt::Display for VerifyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compare with the printed name (`status == "ok"`).
impl PartialEq<&str> for VerifyStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One webhook delivery as stored in a record's `alerts` list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeliveryRecord {
    /// The webhook answered 2xx.
    pub delivered: bool,
}

/// A run record as read back (`runs/<run>/<stamp>.json`). The retention record stored
/// beside it (`<stamp>-retention.json`) has only `run_id`, so everything is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// How the run ended (absent in retention records).
    pub status: Option<RunStatus>,
    /// Start.
    pub started_at: Option<DateTime<Utc>>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
    /// Snapshot committed.
    pub snapshot: Option<String>,
    /// Error of a failed run.
    pub error: Option<String>,
    /// Webhook deliveries of the run's alert.
    pub alerts: Vec<DeliveryRecord>,
}

impl RunRecord {
    /// Alert deliveries that did not reach their webhook.
    pub fn alerts_failed(&self) -> usize {
        self.alerts.iter().filter(|a| !a.delivered).count()
    }
}

/// The head of a run's stored plan (`runs/<run>/plan.json.gz`) as retention reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PlanHead {
    /// The snapshot the run's incremental reused entries from.
    pub parent: Option<String>,
    /// When the run started (its snapshot id is derived from it).
    pub started_at: Option<DateTime<Utc>>,
}

/// A verify report as read back: which snapshot, which mode, how many mismatches.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VerifyRecord {
    /// Snapshot verified.
    pub snapshot: String,
    /// `quick`, `sample` or `full`.
    pub mode: Option<String>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
    /// The mismatches found; only their number is read here. `None` when the field is
    /// missing (such a report does not count as a pass).
    pub mismatches: Option<Vec<serde::de::IgnoredAny>>,
}

impl VerifyRecord {
    /// The report lists its mismatches and there are none.
    pub fn passed(&self) -> bool {
        self.mismatches.as_ref().is_some_and(Vec::is_empty)
    }

    /// Number of mismatches listed.
    pub fn mismatch_count(&self) -> usize {
        self.mismatches.as_ref().map_or(0, Vec::len)
    }
}

/// A snapshot's protection record (`immutability/<snapshot>.json`), written by
/// `retention::immutability` after the snapshot's blobs were made write-once, read by
/// `snapshots`, `status`, `forget` and the next backup (which extends only what the
/// parent's protection does not already cover).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ProtectionRecord {
    /// The snapshot.
    pub snapshot: String,
    /// Every blob the snapshot needs (its manifest, packs and segments) is protected at
    /// least until then: the snapshot cannot be deleted before it.
    pub until: Option<DateTime<Utc>>,
    /// The policy mode: `unlocked` (can be shortened by someone allowed to) or `locked`.
    pub mode: crate::store::LockMode,
    /// Whether a legal hold was set too (no expiry: protects until cleared by hand).
    pub legal_hold: bool,
    /// Blobs the snapshot references (manifest + packs + segments).
    pub blobs: u64,
    /// Of those, the blobs this run set or extended a policy on (the others were already
    /// covered by the parent's).
    pub blobs_set: u64,
    /// When the policies were set.
    pub set_at: Option<DateTime<Utc>>,
}

impl ProtectionRecord {
    /// The snapshot cannot be deleted at `now` (a policy still runs, or a legal hold).
    pub fn holds(&self, now: DateTime<Utc>) -> bool {
        self.legal_hold || self.until.is_some_and(|u| u > now)
    }
}

/// A drill record as read back (written by `pipeline::drill`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DrillRecordView {
    /// Snapshot restored.
    pub snapshot: Option<String>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
    /// Everything restored and every hash matched.
    pub ok: bool,
    /// Measured restore time in seconds.
    pub rto_seconds: f64,
    /// Error of a failed drill.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_status_round_trips_lower_case() {
        for s in [
            RunStatus::Ok,
            RunStatus::Partial,
            RunStatus::Mismatch,
            RunStatus::CommittedUnverified,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            let j = serde_json::to_string(&s).unwrap();
            assert_eq!(j, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<RunStatus>(&j).unwrap(), s);
        }
    }

    #[test]
    fn retention_record_reads_as_a_run_record() {
        let r: RunRecord =
            serde_json::from_str(r#"{"run_id":"r1","forget":null,"prune":null,"error":null}"#)
                .unwrap();
        assert_eq!(r.run_id, "r1");
        assert!(r.status.is_none());
        assert_eq!(r.alerts_failed(), 0);
    }

    #[test]
    fn verify_record_counts_mismatches() {
        let v: VerifyRecord =
            serde_json::from_str(r#"{"snapshot":"s","mode":"full","mismatches":[{"a":1},{}]}"#)
                .unwrap();
        assert_eq!(v.mismatch_count(), 2);
        assert!(!v.passed());
        let v: VerifyRecord = serde_json::from_str(r#"{"snapshot":"s"}"#).unwrap();
        assert!(!v.passed());
    }
}
