//! Extraction: turning a source into partitions of entries.
//!
//! Planning walks the source (metadata only) and splits the sorted entry list into
//! contiguous partitions of about equal byte size. Contiguous ranges keep each
//! partition's entries in path order, so part records concatenate into a sorted
//! manifest, and balancing by size keeps the compressing workers equally busy.
//! Partitions are the unit of parallelism, of retry and of resume.
//!
//! The plan is stored with the run (`parts/<run-id>/plan.json.gz`), so a resumed run
//! works through exactly the partitions the first attempt planned.

pub mod fs;

use serde::{Deserialize, Serialize};

use crate::manifest::{EntryKind, PathBytes};

/// One entry found by planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedEntry {
    /// Path relative to the source root.
    pub path: PathBytes,
    /// Kind.
    pub kind: EntryKind,
    /// Size at planning time (files).
    #[serde(default)]
    pub size: u64,
}

/// A problem found while planning or reading (the run becomes partial).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Path relative to the source root.
    pub path: PathBytes,
    /// What went wrong.
    pub error: String,
}

/// The partitioned work of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Source description (`fs:/srv/data`).
    pub source: String,
    /// Partitions, each a path-sorted list; partitions are in path order too.
    pub partitions: Vec<Vec<PlannedEntry>>,
    /// Entries that could not even be listed.
    pub problems: Vec<Problem>,
    /// When the run that made this plan started (names its snapshot).
    #[serde(default)]
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Newest snapshot when the plan was made (the incremental parent if `reuse`).
    #[serde(default)]
    pub parent: Option<String>,
    /// Reuse unchanged entries of `parent` (an incremental) instead of reading them.
    #[serde(default)]
    pub reuse: bool,
    /// Incrementals since the last full, counting this run.
    #[serde(default)]
    pub chain: u32,
    /// Start of the full backup this run's chain began with.
    #[serde(default)]
    pub full_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Plan {
    /// Total file bytes.
    pub fn total_bytes(&self) -> u64 {
        self.partitions.iter().flatten().map(|e| e.size).sum()
    }
    /// Total entries.
    pub fn total_entries(&self) -> usize {
        self.partitions.iter().map(Vec::len).sum()
    }
}

/// Split path-sorted `entries` into at most `count` contiguous partitions of about equal
/// weight (file size plus a per-entry cost for headers and metadata work).
pub fn partition(entries: Vec<PlannedEntry>, count: usize) -> Vec<Vec<PlannedEntry>> {
    const PER_ENTRY: u64 = 4096;
    let weight = |e: &PlannedEntry| e.size + PER_ENTRY;
    let total: u64 = entries.iter().map(weight).sum();
    let count = count.max(1);
    let target = total.div_ceil(count as u64).max(1);
    let mut parts: Vec<Vec<PlannedEntry>> = Vec::new();
    let mut cur = Vec::new();
    let mut acc = 0u64;
    for e in entries {
        let w = weight(&e);
        // Close the current partition if adding this entry overshoots more than it helps.
        if !cur.is_empty() && parts.len() + 1 < count && acc + w / 2 > target {
            parts.push(std::mem::take(&mut cur));
            acc = 0;
        }
        acc += w;
        cur.push(e);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, size: u64) -> PlannedEntry {
        PlannedEntry {
            path: PathBytes(name.as_bytes().to_vec()),
            kind: EntryKind::File,
            size,
        }
    }

    #[test]
    fn partitions_are_balanced_contiguous_and_complete() {
        let entries: Vec<_> = (0..1000)
            .map(|i| e(&format!("f{i:04}"), (i % 17) * 1000))
            .collect();
        let parts = partition(entries.clone(), 4);
        assert_eq!(parts.len(), 4);
        let flat: Vec<_> = parts.iter().flatten().cloned().collect();
        assert_eq!(flat, entries);
        let w: Vec<u64> = parts
            .iter()
            .map(|p| p.iter().map(|e| e.size + 4096).sum())
            .collect();
        let (min, max) = (*w.iter().min().unwrap(), *w.iter().max().unwrap());
        assert!(max - min < max / 10, "unbalanced: {w:?}");
    }

    #[test]
    fn few_entries_and_huge_file() {
        assert!(partition(vec![], 4).is_empty());
        let parts = partition(vec![e("a", 1), e("b", 1 << 30), e("c", 1)], 8);
        assert!(parts.len() <= 3);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 3);
    }
}
