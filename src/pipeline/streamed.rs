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

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use sha2::{Digest, Sha256};

use super::commit::{self, PartResult};
use super::run::Ctx;
use crate::error::{Error, ErrorKind, Result};
use crate::extract::{self, Chunk, ItemKind};
use crate::manifest::{RowsetDigest, StreamRecord, TableRecord};
use crate::pack::packer::StreamPacker;

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
                        p.write_entry(&buf)?;
                        buf.clear();
                        buf.extend_from_slice(&header);
                    }
                }
            }
            Some(Ok(Chunk::Data(d))) => {
                whole.update(&d);
                bytes += d.len() as u64;
                buf.extend_from_slice(&d);
                while buf.len() >= chunk_size {
                    p.write_entry(&buf[..chunk_size])?;
                    buf.drain(..chunk_size);
                }
            }
            Some(Ok(Chunk::Done(d))) => break d,
        }
    };
    // The last chunk; an empty table or output still gets one entry.
    let only_header = buf.len() == header.len();
    if p.n == 0 || !only_header {
        p.write_entry(&buf)?;
    }
    drop(buf);
    p.finish()?;
    let mut result = PartResult {
        packs: std::mem::take(&mut p.records),
        entries: std::mem::take(&mut p.entries),
        ..PartResult::default()
    };
    match &item.kind {
        ItemKind::Table { template } => result.tables.push(TableRecord {
            rows,
            checksum: digest.to_checksum(),
            bytes,
            chunks: p.chunks.clone(),
            range: item.range,
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
