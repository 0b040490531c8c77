//! Packing one partition of a streamed source (database table range, command output).
//!
//! Runs on a blocking worker thread like the filesystem partitions and shares their pack
//! machinery ([`StreamPacker`] over the run's packs and upload pool). The producer (an
//! async task of the [`extract::Session`]) sends bounded batches through a bounded
//! channel; this side buffers at most one chunk (`chunk_size` bytes plus one batch) and
//! writes it as one tar entry, because tar wants each entry's size before its data.
//! Table chunks are cut at row boundaries and each starts with the CSV header, so every
//! entry is a complete CSV file; command output is cut at exact byte counts.
//!
//! Only a producer that reports [`Chunk::Done`] completes the partition: a producer that
//! fails (or vanishes) fails it, and nothing is committed for the run.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use sha2::{Digest, Sha256};

use super::commit::{self, PartResult};
use super::report::Stats;
use super::run::Ctx;
use crate::error::{Error, ErrorKind, Result};
use crate::extract::{self, Chunk, ItemKind};
use crate::manifest::{
    Entry, EntryKind, Manifest, PathBytes, RangeRecord, RowsetDigest, StreamRecord, TableRecord,
};
use crate::pack::packer::{SinkFactory, StreamPacker};

/// Read work item `idx` of `session` into packs and write its part record.
pub(super) fn run_partition(
    ctx: &Ctx,
    session: &Arc<extract::Session>,
    idx: usize,
) -> Result<PartResult> {
    let item = session
        .items()
        .get(idx)
        .cloned()
        .ok_or_else(|| Error::internal(format!("no work item {idx}")))?;
    let mut rx = {
        let _g = ctx.rt.enter();
        session.start(idx)?
    };
    let chunk_size = item.chunk_size;
    let mut p = StreamPacker::new(
        &ctx.packs,
        &ctx.uploads,
        &ctx.counters,
        idx,
        ctx.pipeline.upload.pack_size,
        item.base.clone(),
        item.ext,
        Utc::now().timestamp(),
    );
    let prior = ctx.parent.as_deref().filter(|_| ctx.reuse);
    let mut out = Out {
        stats: &ctx.stats,
        base: &item.base,
        held: Vec::new(),
        held_bytes: 0,
        // A table range the parent holds is held back (up to the range buffer) until
        // its row-set digest says whether the parent's chunks can stand for it.
        holding: None,
    };
    let mut stream_prior: Vec<&Entry> = Vec::new();
    match &item.kind {
        ItemKind::Table { template } => {
            out.holding = prior.and_then(|m| prior_range(m, template, &item, &p));
        }
        ItemKind::Command { name, .. } => {
            if let Some(m) = prior {
                stream_prior = prior_stream(m, name);
            }
        }
    }
    let budget = ctx.pipeline.chunking.range_buffer;
    let mut header = Bytes::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let mut digest = RowsetDigest::default();
    let mut whole = Sha256::new();
    let done = loop {
        if ctx.cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        match rx.blocking_recv() {
            None => {
                return Err(Error::transient(
                    ErrorKind::Source,
                    format!("{}: the reader stopped without finishing", item.base),
                ))
            }
            Some(Err(e)) => return Err(e.context(format!("reading {}", item.base))),
            Some(Ok(Chunk::Header(h))) => {
                header = h;
                buf.extend_from_slice(&header);
            }
            Some(Ok(Chunk::Rows(rs))) => {
                for r in rs {
                    digest.add_row(&r);
                    rows += 1;
                    bytes += r.len() as u64;
                    buf.extend_from_slice(&r);
                    if buf.len() >= chunk_size {
                        out.table_chunk(&mut p, std::mem::take(&mut buf), budget)?;
                        buf.extend_from_slice(&header);
                    }
                }
            }
            Some(Ok(Chunk::Data(d))) => {
                whole.update(&d);
                bytes += d.len() as u64;
                buf.extend_from_slice(&d);
                while buf.len() >= chunk_size {
                    out.stream_chunk(&mut p, &buf[..chunk_size], &stream_prior)?;
                    buf.drain(..chunk_size);
                }
            }
            Some(Ok(Chunk::Done(d))) => break d,
        }
    };
    // The last chunk; an empty table or output still gets one entry.
    let only_header = buf.len() == header.len();
    if p.n + out.held.len() == 0 || !only_header {
        match &item.kind {
            ItemKind::Table { .. } => out.table_chunk(&mut p, buf, budget)?,
            ItemKind::Command { .. } => out.stream_chunk(&mut p, &buf, &stream_prior)?,
        }
    } else {
        drop(buf);
    }
    let checksum = digest.to_checksum();
    out.settle(&mut p, rows, &checksum)?;
    p.finish()?;
    let parent_packs: BTreeSet<String> = p
        .entries
        .iter()
        .filter_map(|e| e.pack.clone())
        .filter(|pk| !p.records.iter().any(|r| &r.id == pk))
        .collect();
    let mut result = PartResult {
        packs: std::mem::take(&mut p.records),
        entries: std::mem::take(&mut p.entries),
        parent_packs: parent_packs.into_iter().collect(),
        ..PartResult::default()
    };
    match &item.kind {
        ItemKind::Table { template } => result.tables.push(TableRecord {
            rows,
            checksum: checksum.clone(),
            bytes,
            chunks: p.chunks.clone(),
            range: item.range,
            ranges: vec![RangeRecord {
                bounds: item.bounds,
                rows,
                checksum,
                bytes,
                chunks: p.chunks.len(),
            }],
            ..(**template).clone()
        }),
        ItemKind::Command { name, program } => result.streams.push(StreamRecord {
            name: name.clone(),
            program: program.clone(),
            exit_code: done.exit_code,
            bytes,
            sha256: hex::encode(whole.finalize()),
            chunks: p.chunks.clone(),
            stderr: done.stderr,
        }),
    }
    // Durable partition result, under a name of this attempt's own.
    let name = ctx
        .layout
        .streamed_part(&ctx.run_id, &crate::support::ids::random_hex(4), idx);
    commit::write_part_record(ctx, idx, &name, &result, vec![])?;
    Ok(result)
}

/// The parent's record of a table range this item reads again: its counts and its chunk
/// entries, when the table has the same columns and key and the range the same bounds,
/// and its chunks sit under the paths this item's entries get.
struct PriorRange {
    rows: u64,
    checksum: String,
    entries: Vec<Entry>,
}

/// Where a partition's chunks go: stored through the packer, or held back while a table
/// range may turn out to be the parent's.
struct Out<'a> {
    stats: &'a Stats,
    /// The item's entry path prefix (for messages).
    base: &'a str,
    /// Chunks held back (at most the range buffer).
    held: Vec<Vec<u8>>,
    held_bytes: usize,
    /// The parent's range, while its chunks may still stand for this one.
    holding: Option<PriorRange>,
}

impl Out<'_> {
    /// A complete table chunk: held back while the range may be reused, else stored.
    fn table_chunk<F: SinkFactory>(
        &mut self,
        p: &mut StreamPacker<'_, F>,
        chunk: Vec<u8>,
        budget: usize,
    ) -> Result<()> {
        if self.holding.is_some() {
            self.held_bytes += chunk.len();
            self.held.push(chunk);
            if self.held_bytes <= budget {
                return Ok(());
            }
            // Too large to hold: store what is held and go on storing.
            self.holding = None;
            tracing::info!(
                range = self.base,
                range_buffer = budget,
                "key range larger than [chunking] range_buffer: stored without comparing \
                 it with the parent's (a smaller source.split_rows makes it reusable)"
            );
            return self.release(p);
        }
        self.store(p, &chunk)
    }

    /// A command-output chunk: the parent's chunk at the same offset when its content is
    /// the same, else stored.
    fn stream_chunk<F: SinkFactory>(
        &mut self,
        p: &mut StreamPacker<'_, F>,
        chunk: &[u8],
        prior: &[&Entry],
    ) -> Result<()> {
        if let Some(e) = prior.get(p.n) {
            if e.size == chunk.len() as u64
                && e.sha256.as_deref() == Some(hex::encode(Sha256::digest(chunk)).as_str())
                && p.reuse_entry(e)
            {
                self.reused(e.size);
                return Ok(());
            }
        }
        self.store(p, chunk)
    }

    /// At the end of the range: point at the parent's chunks when the rows are the same
    /// (count and row-set digest), else store the chunks held back.
    fn settle<F: SinkFactory>(
        &mut self,
        p: &mut StreamPacker<'_, F>,
        rows: u64,
        checksum: &str,
    ) -> Result<()> {
        if let Some(prior) = self.holding.take() {
            if prior.rows == rows && prior.checksum == checksum && p.n == 0 {
                if prior.entries.iter().all(|e| p.reuse_entry(e)) {
                    for e in &prior.entries {
                        self.reused(e.size);
                    }
                    self.held.clear();
                    return Ok(());
                }
                return Err(Error::internal(
                    "a reused range's chunks do not follow each other",
                ));
            }
        }
        self.release(p)
    }

    fn release<F: SinkFactory>(&mut self, p: &mut StreamPacker<'_, F>) -> Result<()> {
        for c in std::mem::take(&mut self.held) {
            self.store(p, &c)?;
        }
        self.held_bytes = 0;
        Ok(())
    }

    fn store<F: SinkFactory>(&mut self, p: &mut StreamPacker<'_, F>, chunk: &[u8]) -> Result<()> {
        p.write_entry(chunk)?;
        self.stats.chunks_new.fetch_add(1, Ordering::Relaxed);
        self.stats
            .chunk_bytes_new
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn reused(&self, size: u64) {
        self.stats.chunks_reused.fetch_add(1, Ordering::Relaxed);
        self.stats
            .chunk_bytes_reused
            .fetch_add(size, Ordering::Relaxed);
    }
}

/// The parent's range of the table `template` with `item`'s bounds, if it can stand for
/// this range's chunks (see [`PriorRange`]).
fn prior_range<F: SinkFactory>(
    m: &Manifest,
    template: &TableRecord,
    item: &extract::Item,
    p: &StreamPacker<'_, F>,
) -> Option<PriorRange> {
    let t = m.tables.iter().find(|t| {
        t.source == template.source
            && t.schema == template.schema
            && t.name == template.name
            && t.columns == template.columns
            && t.primary_key == template.primary_key
    })?;
    let mut first = 0usize;
    for r in &t.ranges {
        let chunks = t.chunks.get(first..first + r.chunks)?;
        let in_place = chunks
            .iter()
            .enumerate()
            .all(|(i, c)| c.0 == format!("{}-{:06}.{}", item.base, i + 1, item.ext).as_bytes());
        if r.bounds == item.bounds && in_place && p.n == 0 {
            let entries = chunks
                .iter()
                .map(|c| parent_entry(m, c).cloned())
                .collect::<Option<Vec<_>>>()?;
            return Some(PriorRange {
                rows: r.rows,
                checksum: r.checksum.clone(),
                entries,
            });
        }
        first += r.chunks;
    }
    None
}

/// The parent's chunk entries of command stream `name`, in output order (empty when it
/// has none, or one is missing).
fn prior_stream<'m>(m: &'m Manifest, name: &str) -> Vec<&'m Entry> {
    m.streams
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| {
            s.chunks
                .iter()
                .map(|c| parent_entry(m, c))
                .collect::<Option<Vec<_>>>()
        })
        .unwrap_or_default()
}

/// Entry `path` of a parent manifest with inline entries (sorted by path).
fn parent_entry<'m>(m: &'m Manifest, path: &PathBytes) -> Option<&'m Entry> {
    m.entries
        .binary_search_by(|e| e.path.cmp(path))
        .ok()
        .map(|i| &m.entries[i])
        .filter(|e| e.kind == EntryKind::File && e.pack.is_some())
}
