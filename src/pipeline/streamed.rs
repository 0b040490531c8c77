//! Packing one partition of a streamed source (database table range, command output).
//!
//! Runs on a blocking worker thread like the filesystem partitions and shares their pack
//! machinery ([`open_pack`], [`close_pack`], `tarball::append_file`). The producer (an
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

use super::backup::{close_pack, io_to_err, open_pack, Ctx, OpenPack, PartResult};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::extract::{self, Chunk, ItemKind};
use crate::manifest::{
    self, Entry, EntryKind, Line, PartHeader, PathBytes, RowsetDigest, StreamRecord, TableRecord,
};
use crate::pack::tarball::{self, HeaderMeta};

struct Packer<'a> {
    ctx: &'a Ctx,
    idx: usize,
    attempt: u32,
    seq: usize,
    cur: Option<OpenPack>,
    result: PartResult,
    base: String,
    ext: &'static str,
    n: usize,
    chunks: Vec<PathBytes>,
    mtime: i64,
}

impl Packer<'_> {
    fn write_entry(&mut self, data: &[u8]) -> Result<()> {
        let ctx = self.ctx;
        if self.cur.is_none() {
            let hint = (data.len() as u64 + 4096).max(ctx.pipeline.upload.block_size as u64);
            self.cur = Some(open_pack(ctx, self.idx, self.seq, self.attempt, hint)?);
            self.seq += 1;
        }
        let pk = self
            .cur
            .as_mut()
            .ok_or_else(|| Error::internal("no open pack"))?;
        self.n += 1;
        let path = PathBytes(format!("{}-{:06}.{}", self.base, self.n, self.ext).into_bytes());
        let meta = HeaderMeta {
            mode: 0o644,
            mtime: self.mtime,
            uid: 0,
            gid: 0,
        };
        let (placed, read) =
            tarball::append_file(&mut pk.builder, &path, data.len() as u64, &meta, data)
                .map_err(|e| io_to_err(e, &pk.blob))?;
        self.result.entries.push(Entry {
            path: path.clone(),
            kind: EntryKind::File,
            size: data.len() as u64,
            mode: 0o644,
            mtime: self.mtime,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            sha256: Some(hex::encode(read.sha256)),
            target: None,
            pack: Some(pk.id.clone()),
            offset: placed.offset,
            data_offset: placed.data_offset,
            inconsistent: false,
            ino: None,
            ctime: None,
        });
        self.chunks.push(path);
        ctx.counters.add(1, data.len() as u64);
        if pk.builder.get_ref().raw_offset() >= ctx.pipeline.upload.pack_size {
            if let Some(pk) = self.cur.take() {
                self.result.packs.push(close_pack(ctx, pk)?);
            }
        }
        Ok(())
    }
}

/// Read work item `idx` of `session` into packs and write its part record.
pub(super) fn run_partition(
    ctx: &Ctx,
    session: &Arc<extract::Session>,
    idx: usize,
    attempt: u32,
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
    let mut p = Packer {
        ctx,
        idx,
        attempt,
        seq: 0,
        cur: None,
        result: PartResult::default(),
        base: item.base.clone(),
        ext: item.ext,
        n: 0,
        chunks: vec![],
        mtime: Utc::now().timestamp(),
    };
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
    if let Some(pk) = p.cur.take() {
        p.result.packs.push(close_pack(ctx, pk)?);
    }
    let mut result = std::mem::take(&mut p.result);
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
    // Durable partition result. Streamed part records are never reused (a new attempt
    // reads a new snapshot), so each attempt writes its own name.
    let mut lines = vec![Line::Part(PartHeader {
        format: manifest::FORMAT_VERSION,
        run_id: ctx.run_id.clone(),
        partition: idx,
        unreadable: vec![],
        finished_at: Utc::now(),
    })];
    lines.extend(result.packs.iter().cloned().map(Line::Pack));
    lines.extend(result.entries.iter().cloned().map(Line::Entry));
    lines.extend(result.tables.iter().cloned().map(Line::Table));
    lines.extend(result.streams.iter().cloned().map(Line::Stream));
    let body = manifest::encode(&lines)?;
    let name = format!(
        "{}s{}-p-{idx:05}.jsonl.gz",
        ctx.layout.parts(&ctx.run_id),
        crate::support::ids::random_hex(4)
    );
    ctx.rt
        .block_on(ctx.store.put(&name, Bytes::from(body), true))
        .ctx(format!("writing part record {name}"))?;
    Ok(result)
}
