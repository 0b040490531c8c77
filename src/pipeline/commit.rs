//! Part records and the commit: a snapshot exists iff its manifest exists.
//!
//! A partition ends by writing its part record (`parts/<run-id>/…jsonl.gz`): its packs
//! and, for a filesystem partition, the reference to the segment holding its entries
//! (streamed sources: the entries, table and stream records themselves). A resumed run
//! reads the part records of finished partitions instead of doing them again. Once every
//! partition has a part record, [`commit`] writes the manifest, create-only: for a
//! filesystem source a format-2 manifest listing the partitions' segments in path order
//! (memory: the packs and one reference per partition, never the entries); for a
//! streamed source a format-1 manifest with its entries inline.

use std::collections::HashSet;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::run::Ctx;
use super::spec::Pipeline;
use crate::error::{Error, Result, ResultExt};
use crate::extract::{Plan, Problem};
use crate::manifest::layout::Layout;
use crate::manifest::segment::{SegmentRef, MAX_LISTED};
use crate::manifest::{
    self, Entry, EntryKind, Header, Line, Manifest, PackRecord, PartHeader, PathBytes, Totals,
};
use crate::store::Store;

/// The result of one partition (what its part record holds).
#[derive(Debug, Clone, Default)]
pub(super) struct PartResult {
    pub(super) packs: Vec<PackRecord>,
    /// Streamed sources: the entries. Filesystem partitions: only while the worker
    /// builds them; they are in `segment` afterwards.
    pub(super) entries: Vec<Entry>,
    pub(super) problems: Vec<Problem>,
    pub(super) tables: Vec<manifest::TableRecord>,
    pub(super) streams: Vec<manifest::StreamRecord>,
    pub(super) segment: Option<SegmentRef>,
    pub(super) changes: Option<manifest::Changes>,
    pub(super) parent_packs: Vec<String>,
    pub(super) inconsistent: Vec<PathBytes>,
}

/// Write the part record of partition `idx` as blob `name`; `unreadable` lists the
/// files the partition could not read.
///
/// # Errors
/// `Store` when the record cannot be written.
pub(super) fn write_part_record(
    ctx: &Ctx,
    idx: usize,
    name: &str,
    result: &PartResult,
    unreadable: Vec<PathBytes>,
) -> Result<()> {
    let mut lines = vec![Line::Part(PartHeader {
        format: manifest::FORMAT_SEGMENTS,
        run_id: ctx.run_id.clone(),
        partition: idx,
        unreadable,
        finished_at: Utc::now(),
        segment: result.segment.clone(),
        changes: result.changes.clone(),
        parent_packs: result.parent_packs.clone(),
        inconsistent: result.inconsistent.clone(),
    })];
    lines.extend(result.packs.iter().cloned().map(Line::Pack));
    lines.extend(result.entries.iter().cloned().map(Line::Entry));
    lines.extend(result.tables.iter().cloned().map(Line::Table));
    lines.extend(result.streams.iter().cloned().map(Line::Stream));
    let body = ctx.layout.seal(name, manifest::encode(&lines)?)?;
    ctx.rt
        .block_on(ctx.packs.store.put(name, Bytes::from(body), true))
        .ctx(format!("writing part record {name}"))?;
    Ok(())
}

/// Read part record `name` back.
///
/// # Errors
/// `Store` when it cannot be read, `Integrity` when it is malformed.
pub(super) async fn load_part(
    store: &Store,
    layout: &Layout,
    name: &str,
) -> Result<(PartHeader, PartResult)> {
    let bytes = layout.open(name, store.get(name, None).await?)?;
    let mut header = None;
    let mut r = PartResult::default();
    for l in manifest::decode(&bytes)? {
        match l {
            Line::Part(h) => {
                r.problems = h
                    .unreadable
                    .iter()
                    .map(|path| Problem {
                        path: path.clone(),
                        error: "unreadable (earlier attempt)".into(),
                    })
                    .collect();
                r.segment = h.segment.clone();
                r.changes = h.changes.clone();
                r.parent_packs = h.parent_packs.clone();
                r.inconsistent = h.inconsistent.clone();
                header = Some(h)
            }
            Line::Pack(p) => r.packs.push(p),
            Line::Entry(e) => r.entries.push(e),
            Line::Table(t) => r.tables.push(t),
            Line::Stream(s) => r.streams.push(s),
            Line::Header(_) | Line::Segment(_) => {
                return Err(Error::integrity(format!(
                    "{name}: a manifest line in a part record"
                )))
            }
        }
    }
    let h =
        header.ok_or_else(|| Error::integrity(format!("{name}: part record without header")))?;
    Ok((h, r))
}

/// The committed manifest, with what the run report lists besides.
pub(super) struct Committed {
    /// The manifest as written.
    pub(super) manifest: Manifest,
    /// Every file that could not be listed or read.
    pub(super) problems: Vec<Problem>,
    /// Files stored as inconsistent.
    pub(super) inconsistent: Vec<PathBytes>,
}

/// Merge the part results `done` (in partition order) into snapshot `snapshot`'s
/// manifest and write it, create-only. `parent` is the incremental parent whose pack
/// records reused entries point into.
///
/// # Errors
/// `Store` when the manifest cannot be written (`AlreadyExists` if it exists).
#[allow(clippy::too_many_arguments)]
pub(super) async fn commit(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    snapshot: &str,
    started_at: DateTime<Utc>,
    plan: &Plan,
    parent: Option<&Manifest>,
    done: Vec<Option<PartResult>>,
    mut problems: Vec<Problem>,
) -> Result<Committed> {
    let streamed = p.source.is_streamed();
    let mut packs: Vec<PackRecord> = Vec::new();
    let mut entries = Vec::new();
    let mut segments = Vec::new();
    let mut tables = Vec::new();
    let mut streams = Vec::new();
    let mut changes = parent.map(|_| manifest::Changes::default());
    let mut parent_packs: HashSet<String> = HashSet::new();
    let mut inconsistent: Vec<PathBytes> = Vec::new();
    let mut totals = Totals::default();
    // Part results in partition (= path) order.
    for r in done.into_iter().flatten() {
        packs.extend(r.packs);
        entries.extend(r.entries);
        problems.extend(r.problems);
        tables.extend(r.tables);
        streams.extend(r.streams);
        if let (Some(c), Some(rc)) = (changes.as_mut(), r.changes.as_ref()) {
            c.add(rc);
        }
        parent_packs.extend(r.parent_packs);
        for path in r.inconsistent {
            if inconsistent.len() < MAX_LISTED {
                inconsistent.push(path);
            }
        }
        if let Some(sg) = r.segment {
            totals.files += sg.files;
            totals.dirs += sg.dirs;
            totals.symlinks += sg.symlinks;
            totals.bytes += sg.bytes;
            totals.inconsistent += sg.inconsistent;
            segments.push(sg);
        }
    }
    let tables = manifest::merge_tables(tables);
    if streamed {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        entries.dedup_by(|b, a| a.path == b.path);
        for e in &entries {
            match e.kind {
                EntryKind::File => {
                    totals.files += 1;
                    totals.bytes += e.size;
                }
                EntryKind::Dir => totals.dirs += 1,
                EntryKind::Symlink => totals.symlinks += 1,
            }
            if e.inconsistent {
                totals.inconsistent += 1;
                if inconsistent.len() < MAX_LISTED {
                    inconsistent.push(e.path.clone());
                }
            }
        }
        changes = parent.map(|pm| manifest::Changes::between(&pm.entries, &entries));
    }
    // Reused entries point into the parent's packs: carry those pack records over, so
    // the manifest stays complete and restores on its own.
    if let Some(parent) = parent.filter(|_| plan.reuse) {
        let have: HashSet<String> = packs.iter().map(|p: &PackRecord| p.id.clone()).collect();
        for pk in &parent.packs {
            if parent_packs.contains(pk.id.as_str()) && !have.contains(&pk.id) {
                packs.push(pk.clone());
            }
        }
    }
    totals.packs = packs.len() as u64;
    totals.stored_bytes = packs.iter().map(|p| p.size).sum();
    totals.unreadable = problems.len() as u64;
    let m = Manifest {
        header: Header {
            format: if streamed {
                manifest::FORMAT_INLINE
            } else if segments.iter().any(|s| s.chunked > 0) {
                manifest::FORMAT_VERSION
            } else {
                manifest::FORMAT_SEGMENTS
            },
            pipeline: p.name.clone(),
            snapshot: snapshot.to_string(),
            run_id: run_id.to_string(),
            started_at,
            committed_at: Utc::now(),
            parent: plan.parent.clone().filter(|_| plan.reuse),
            source: plan.source.clone(),
            codec: p.compression.codec,
            totals: totals.clone(),
            unreadable: problems
                .iter()
                .take(MAX_LISTED)
                .map(|x| x.path.clone())
                .collect(),
            chain: plan.chain,
            full_at: plan.full_at,
            changes: changes.clone(),
            encryption: layout.key().and_then(|k| k.info()),
        },
        packs,
        entries,
        segments,
        tables,
        streams,
        moved: None,
    };
    // Readers validate every manifest they load: never commit one they would refuse.
    manifest::check::validate(&m).map_err(|e| {
        Error::internal(format!(
            "the manifest this run built does not pass validation: {e}"
        ))
        .context("committing the manifest")
    })?;
    let name = layout.snapshot(snapshot);
    let body = m.to_stored(layout, &name)?;
    store
        .put(&name, Bytes::from(body), true)
        .await
        .ctx("committing the manifest")?;
    tracing::info!(
        snapshot,
        files = totals.files,
        bytes = totals.bytes,
        stored = totals.stored_bytes,
        "committed"
    );
    Ok(Committed {
        manifest: m,
        problems,
        inconsistent,
    })
}
