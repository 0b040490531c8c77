//! `prune --max-unused`: which partly used packs to repack, and the repack itself.
//!
//! A pack is deleted only when no remaining snapshot references any record in it. A pack
//! that keeps one live chunk among many dead ones stays whole, so shared chunks leave
//! space behind. Repacking copies the live records of such packs into new packs and
//! stores a moved record per old pack ([`crate::manifest::moved`]); the old blob is
//! deleted by a prune once the record is older than the grace period.
//!
//! Selection is restic-like: partly used packs are taken, the most unused first, until
//! the estimated unused share of everything stored is at most the limit. Packs are never
//! repacked when that cannot pay off or would be unsafe: packs of a snapshot under an
//! immutability policy (the old blob cannot be deleted), packs an unfinished run's part
//! records point into (its resume writes their names), one-file stored packs (staged
//! server-side: a single record), archived packs (offline) and, when early deletion is
//! deferred, packs inside their tier's minimum. The grace period applies to the old
//! blobs instead: each is deleted only once its moved record is older than the grace, so
//! a restore that loaded a manifest before the repack still finds the pack it reads.
//!
//! The copying itself needs the pack writer, which this stage may not import: the engine
//! implements [`Repacker`] and passes it in (`pipeline::repack`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::usage::{share, Usage};
use crate::error::{Error, Result};
use crate::manifest::codec::Codec;
use crate::manifest::layout::Layout;
use crate::manifest::moved::{self, Move, MovedRecord};
use crate::manifest::PackRecord;
use crate::store::{Store, Tier};

/// The live records of one old pack, to copy.
#[derive(Debug, Clone)]
pub struct RepackInput {
    /// The old pack (its manifest record).
    pub pack: PackRecord,
    /// Uncompressed `[start, end)` of each live tar record, in order, not overlapping.
    pub extents: Vec<(u64, u64)>,
}

/// Where a batch's records went.
#[derive(Debug, Clone, Default)]
pub struct RepackOutput {
    /// The new packs, committed.
    pub into: Vec<PackRecord>,
    /// Per input, in order: one move per extent (`pack` indexes `into`).
    pub moves: Vec<Vec<Move>>,
}

/// Copies live records into new packs (implemented by the engine, which owns the pack
/// writer).
#[async_trait::async_trait]
pub trait Repacker: Send + Sync {
    /// Live bytes to gather per batch (about one new pack).
    fn pack_size(&self) -> u64;

    /// Copy every extent of `batch` into new packs and commit them (create-only).
    ///
    /// # Errors
    /// Store errors; `Integrity` when an old pack's frames do not read back.
    async fn repack(
        &self,
        store: &Store,
        layout: &Layout,
        batch: Vec<RepackInput>,
    ) -> Result<RepackOutput>;
}

/// A [`Repacker`] handed to `prune`.
#[derive(Clone)]
pub struct RepackWith(pub Arc<dyn Repacker>);

impl std::fmt::Debug for RepackWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RepackWith(..)")
    }
}

/// Packs left alone for one reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Skipped {
    /// Packs.
    pub packs: u64,
    /// Their estimated unused bytes.
    pub unused_bytes: u64,
}

/// What `--max-unused` chose (and did).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepackReport {
    /// The limit, as a fraction of the stored bytes.
    pub max_unused: f64,
    /// Partly used packs.
    pub candidates: u64,
    /// Partly used packs that may not be repacked, by reason (`protected`,
    /// `unfinished-run`, `stored`, `archive`, `early-deletion`).
    pub skipped: BTreeMap<String, Skipped>,
    /// Packs repacked (or that would be, in a dry run).
    pub packs: u64,
    /// Their stored bytes (read back to repack).
    pub bytes: u64,
    /// Uncompressed bytes of live records copied.
    pub live_raw_bytes: u64,
    /// Estimated stored bytes their repack frees (once the old packs are deleted).
    pub frees_bytes: u64,
    /// New packs written.
    pub new_packs: u64,
    /// Their stored bytes.
    pub new_bytes: u64,
    /// Estimated unused bytes left after the repack (and the deletion of the old packs).
    pub unused_bytes_after: u64,
    /// Estimated unused share left.
    pub unused_share_after: f64,
}

/// What decides whether a pack may be repacked, besides its use.
#[derive(Debug)]
pub struct Rules<'a> {
    /// Now.
    pub now: DateTime<Utc>,
    /// Leave packs inside their tier's early-deletion minimum.
    pub defer_early: bool,
    /// Pack blobs as listed: last modified and current tier.
    pub listed: &'a HashMap<String, (DateTime<Utc>, Tier)>,
    /// Packs unfinished runs point into.
    pub pinned: &'a HashSet<String>,
}

/// The packs to repack (indexes into `usage.packs`) and the report so far.
#[derive(Debug)]
pub struct Selection {
    /// Chosen packs.
    pub selected: HashSet<u32>,
    /// The report (new packs filled in by [`run`]).
    pub report: RepackReport,
}

/// Choose the partly used packs to repack so that at most `max_unused` of the stored
/// bytes stay unused, the most unused packs first.
pub fn select(usage: &Usage, max_unused: f64, rules: &Rules<'_>) -> Selection {
    let sum = usage.summary();
    let mut rep = RepackReport {
        max_unused,
        ..Default::default()
    };
    let mut eligible = Vec::new();
    for (i, p) in usage.packs.iter().enumerate() {
        if p.unused_raw() == 0 {
            continue;
        }
        rep.candidates += 1;
        let (modified, tier) = rules
            .listed
            .get(&p.id)
            .copied()
            .unwrap_or((rules.now, p.tier));
        let age = rules
            .now
            .signed_duration_since(modified)
            .to_std()
            .unwrap_or_default();
        let early =
            std::time::Duration::from_secs(u64::from(super::early_deletion_days(tier)) * 86_400);
        let why = if p.protected {
            Some("protected")
        } else if rules.pinned.contains(&p.id) {
            Some("unfinished-run")
        } else if p.codec == Codec::Stored {
            Some("stored")
        } else if tier == Tier::Archive {
            Some("archive")
        } else if rules.defer_early && age < early {
            Some("early-deletion")
        } else {
            None
        };
        match why {
            Some(w) => {
                let s = rep.skipped.entry(w.to_string()).or_default();
                s.packs += 1;
                s.unused_bytes += p.unused_bytes();
            }
            None => eligible.push(i),
        }
    }
    // Most unused share first; ties by id, so a dry run and the run agree.
    eligible.sort_by(|&a, &b| {
        let (pa, pb) = (&usage.packs[a], &usage.packs[b]);
        let (sa, sb) = (
            share(pa.unused_raw(), pa.raw_size),
            share(pb.unused_raw(), pb.raw_size),
        );
        sb.total_cmp(&sa).then_with(|| pa.id.cmp(&pb.id))
    });
    let (mut unused, mut stored) = (sum.unused_bytes, sum.stored_bytes);
    let mut selected = HashSet::new();
    for i in eligible {
        if share(unused, stored) <= max_unused {
            break;
        }
        let p = &usage.packs[i];
        let u = p.unused_bytes();
        unused -= u;
        stored -= u;
        rep.packs += 1;
        rep.bytes += p.size;
        rep.live_raw_bytes += p.live_raw;
        rep.frees_bytes += u;
        selected.insert(i as u32);
    }
    rep.unused_bytes_after = unused;
    rep.unused_share_after = share(unused, stored);
    Selection {
        selected,
        report: rep,
    }
}

/// The packs a repack moved and the packs it wrote.
#[derive(Debug, Default)]
pub struct Done {
    /// Old packs, each now with a moved record.
    pub moved: Vec<String>,
    /// New packs their records went to.
    pub written: Vec<String>,
}

/// Repack the selected packs: gather their live records from the sorted extents in
/// batches of about one new pack, have `repacker` copy each batch, then store one moved
/// record per old pack.
///
/// # Errors
/// `Integrity` when records overlap or an old pack does not read back; store errors.
/// Batches finished before an error keep their moved records (they are complete).
pub async fn run(
    store: &Store,
    layout: &Layout,
    usage: &Usage,
    sel: &mut Selection,
    records: &HashMap<String, PackRecord>,
    repacker: &dyn Repacker,
) -> Result<Done> {
    let mut done = Done::default();
    let mut batch: Vec<RepackInput> = Vec::new();
    let mut batch_live = 0u64;
    let mut cur: Option<RepackInput> = None;
    for e in usage.extents.iter()? {
        let (i, a, b) = e?;
        if !sel.selected.contains(&i) {
            continue;
        }
        let id = &usage.packs[i as usize].id;
        if cur.as_ref().is_some_and(|c| &c.pack.id != id) {
            batch.extend(cur.take());
            if batch_live >= repacker.pack_size() {
                flush(store, layout, &mut batch, repacker, sel, &mut done).await?;
                batch_live = 0;
            }
        }
        let c = match cur.as_mut() {
            Some(c) => c,
            None => cur.insert(RepackInput {
                pack: records.get(id).cloned().ok_or_else(|| {
                    Error::internal(format!("no pack record for pack {id} to repack"))
                })?,
                extents: Vec::new(),
            }),
        };
        if let Some(&(_, end)) = c.extents.last() {
            if a < end {
                return Err(Error::integrity(format!(
                    "pack {id}: snapshots reference overlapping records at {a} and before {end}; \
                     it was not repacked (run `blobpipe verify`)"
                )));
            }
        }
        c.extents.push((a, b));
        batch_live += b - a;
    }
    batch.extend(cur.take());
    flush(store, layout, &mut batch, repacker, sel, &mut done).await?;
    Ok(done)
}

async fn flush(
    store: &Store,
    layout: &Layout,
    batch: &mut Vec<RepackInput>,
    repacker: &dyn Repacker,
    sel: &mut Selection,
    done: &mut Done,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let inputs = std::mem::take(batch);
    let ids: Vec<String> = inputs.iter().map(|i| i.pack.id.clone()).collect();
    let out = repacker.repack(store, layout, inputs).await?;
    if out.moves.len() != ids.len() {
        return Err(Error::internal(
            "the repacker returned moves for another batch",
        ));
    }
    sel.report.new_packs += out.into.len() as u64;
    sel.report.new_bytes += out.into.iter().map(|p| p.size).sum::<u64>();
    done.written.extend(out.into.iter().map(|p| p.id.clone()));
    let now = Utc::now();
    // The new packs are committed: only now may records point at them.
    for (id, moves) in ids.into_iter().zip(out.moves) {
        let mut into: Vec<PackRecord> = Vec::new();
        let mut index: HashMap<u32, u32> = HashMap::new();
        let mut local = Vec::with_capacity(moves.len());
        for m in moves {
            let k = match index.get(&m.pack) {
                Some(&k) => k,
                None => {
                    let p = out.into.get(m.pack as usize).ok_or_else(|| {
                        Error::internal("the repacker named a pack it did not write")
                    })?;
                    into.push(p.clone());
                    let k = (into.len() - 1) as u32;
                    index.insert(m.pack, k);
                    k
                }
            };
            local.push(Move { pack: k, ..m });
        }
        moved::store(
            &**store,
            layout,
            &MovedRecord {
                pack: id.clone(),
                moved_at: now,
                into,
                moves: local,
            },
        )
        .await?;
        done.moved.push(id);
    }
    Ok(())
}
