//! Opening and closing packs, and packing a stream of records into entries.
//!
//! A pack is opened with a deterministic id (pipeline, run, partition, sequence): a rerun
//! of the same run writes the same pack names and block ids, so blocks an earlier attempt
//! staged are found and not uploaded again. A pack that an earlier attempt already
//! committed (it died before its part record) is orphaned and a fresh id is taken.
//!
//! A pack closes by draining: the tar stream is finished, the writer seals its last frame
//! and block, the sink waits until every block is stored, and only then is the block
//! list committed, create-only. Where blocks go is the caller's business: it passes a
//! [`SinkFactory`] (the engine's bounded upload channel).
//!
//! [`StreamPacker`] packs the records of a streamed source (a table range, a command's
//! output) as numbered entries, one tar entry per chunk, opening and closing packs as
//! they fill.

use std::collections::HashSet;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::frame::FrameCompressor;
use super::tarball::{self, HeaderMeta};
use super::writer::{BlockSink, BlockSizer, PackWriter};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::manifest::codec::Codec;
use crate::manifest::crypt::DataKey;
use crate::manifest::layout::Layout;
use crate::manifest::{self, Entry, EntryKind, PackRecord, PathBytes};
use crate::store::{self, CommitOptions, Store, Tier};
use crate::support::progress::Counters;

/// Makes the sink a new pack's blocks go to.
pub trait SinkFactory {
    /// The sink type.
    type Sink: BlockSink;
    /// A sink for pack blob `blob`; `already` holds the ids of blocks the store has staged
    /// (uncommitted) for it, which need not be sent again.
    fn sink(&self, blob: &str, already: HashSet<String>) -> Self::Sink;
}

/// How and where the packs of one run are written.
#[derive(Clone)]
pub struct Packs {
    /// Pipeline name (seeds pack ids; pack metadata and tags).
    pub pipeline: String,
    /// Run id (seeds pack ids; pack metadata).
    pub run_id: String,
    /// Frame codec.
    pub codec: Codec,
    /// Codec level.
    pub level: i32,
    /// Raw bytes per frame.
    pub frame_size: usize,
    /// Configured block size (grown for very large packs, see [`BlockSizer`]).
    pub block_size: usize,
    /// Access tier of committed packs.
    pub tier: Tier,
    /// The store.
    pub store: Store,
    /// Blob names of the pipeline.
    pub layout: Layout,
    /// Runtime to block on for store calls (packing runs on blocking threads).
    pub rt: tokio::runtime::Handle,
    /// `[encryption]`: the data key every frame is sealed with (`None`: plain packs).
    pub key: Option<Arc<DataKey>>,
}

/// A pack being written: a tar builder over a [`PackWriter`].
pub struct OpenPack<S: BlockSink> {
    /// Pack id.
    pub id: String,
    rel: String,
    /// Full blob name.
    pub blob: String,
    /// The tar stream.
    pub builder: tar::Builder<PackWriter<S>>,
}

impl Packs {
    /// Open pack number `seq` of `partition`, expecting about `size_hint` raw bytes.
    ///
    /// # Errors
    /// `Store` when the store cannot be asked what exists; `Internal` for a codec level
    /// the library refuses.
    pub fn open<F: SinkFactory>(
        &self,
        sinks: &F,
        partition: usize,
        seq: usize,
        size_hint: u64,
    ) -> Result<OpenPack<F::Sink>> {
        let mut salt = 0u32;
        let (id, rel, blob, already) = loop {
            let seed = format!("{}/{}/{partition}/{seq}/{salt}", self.pipeline, self.run_id);
            let id = hex::encode(&Sha256::digest(seed.as_bytes())[..16]);
            let rel = Layout::pack_rel(&id, self.codec);
            let blob = self.layout.full(&rel);
            let head = self.rt.block_on(self.store.head(&blob))?;
            if head.is_some() {
                // Committed by an earlier attempt that died before its part record: that
                // pack is orphaned (prune removes it); write a fresh one.
                salt += 1;
                continue;
            }
            let bl = self.rt.block_on(self.store.block_list(&blob))?;
            let already: HashSet<String> = bl.uncommitted.into_iter().map(|b| b.id).collect();
            break (id, rel, blob, already);
        };
        let sink = sinks.sink(&blob, already);
        let mut writer = PackWriter::new(
            FrameCompressor::new(self.codec, self.level)?,
            self.frame_size,
            BlockSizer::new(self.block_size, Some(size_hint)),
            sink,
        );
        if let Some(k) = &self.key {
            writer = writer.sealed(k.clone(), &id);
        }
        let mut builder = tar::Builder::new(writer);
        builder.mode(tar::HeaderMode::Complete);
        builder.follow_symlinks(false);
        Ok(OpenPack {
            id,
            rel,
            blob,
            builder,
        })
    }

    /// Finish `pack`, wait for its blocks and commit it (create-only).
    ///
    /// # Errors
    /// `Store` when a block or the commit fails; `Cancelled` when the run stops.
    pub fn close<S: BlockSink>(&self, pack: OpenPack<S>) -> Result<PackRecord> {
        let w = tarball::finish(pack.builder).map_err(|e| io_to_err(e, &pack.blob))?;
        let (sum, mut sink) = w.finish()?;
        sink.drain()?;
        let ids: Vec<String> = sum.blocks.iter().map(|b| b.id.clone()).collect();
        let mut opts = CommitOptions {
            tier: self.tier,
            content_md5: Some(sum.md5),
            create_only: true,
            ..Default::default()
        };
        opts.metadata
            .insert("pipeline".into(), self.pipeline.clone());
        opts.metadata.insert("run_id".into(), self.run_id.clone());
        opts.metadata
            .insert("format".into(), manifest::FORMAT_SEGMENTS.to_string());
        opts.metadata
            .insert("codec".into(), self.codec.as_str().into());
        if let Some(k) = &self.key {
            opts.metadata
                .insert("encryption".into(), crate::manifest::crypt::ALG.into());
            opts.metadata.insert("key".into(), k.id().into());
        }
        opts.tags.insert("blobpipe-kind".into(), "pack".into());
        opts.tags.insert("pipeline".into(), self.pipeline.clone());
        self.rt
            .block_on(self.store.commit_blocks(&pack.blob, &ids, &opts))
            .ctx(format!("committing pack {}", pack.blob))?;
        Ok(PackRecord {
            id: pack.id,
            blob: pack.rel,
            codec: self.codec,
            size: sum.size,
            raw_size: sum.raw_size,
            md5: store::b64(&sum.md5),
            tier: self.tier,
            frames: sum.frames,
            blocks: sum.blocks,
        })
    }
}

/// The error for a failed write into pack `what`.
pub fn io_to_err(e: std::io::Error, what: &str) -> Error {
    // Errors from the sink are carried as io::Error text; a cancelled sink reads so.
    if e.to_string().contains("cancelled") {
        Error::cancelled()
    } else {
        Error::caused(ErrorKind::Store, format!("writing {what}"), e).retryable()
    }
}

/// Packs the chunks of one streamed item as entries `<base>-<n:06>.<ext>`.
pub struct StreamPacker<'a, F: SinkFactory> {
    packs: &'a Packs,
    sinks: &'a F,
    counters: &'a Counters,
    partition: usize,
    pack_size: u64,
    seq: usize,
    cur: Option<OpenPack<F::Sink>>,
    base: String,
    ext: &'static str,
    mtime: i64,
    /// Entries written so far.
    pub n: usize,
    /// Committed packs.
    pub records: Vec<PackRecord>,
    /// The entries, in order.
    pub entries: Vec<Entry>,
    /// Entry paths, in order.
    pub chunks: Vec<PathBytes>,
}

impl<'a, F: SinkFactory> StreamPacker<'a, F> {
    /// A packer for `partition`, closing packs past `pack_size` raw bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        packs: &'a Packs,
        sinks: &'a F,
        counters: &'a Counters,
        partition: usize,
        pack_size: u64,
        base: String,
        ext: &'static str,
        mtime: i64,
    ) -> Self {
        Self {
            packs,
            sinks,
            counters,
            partition,
            pack_size,
            seq: 0,
            cur: None,
            base,
            ext,
            mtime,
            n: 0,
            records: Vec::new(),
            entries: Vec::new(),
            chunks: Vec::new(),
        }
    }

    /// Write `data` as the next entry.
    ///
    /// # Errors
    /// Pack or store failure, `Cancelled`.
    pub fn write_entry(&mut self, data: &[u8]) -> Result<()> {
        if self.cur.is_none() {
            let hint = (data.len() as u64 + 4096).max(self.packs.block_size as u64);
            self.cur = Some(
                self.packs
                    .open(self.sinks, self.partition, self.seq, hint)?,
            );
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
        self.entries.push(Entry {
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
            chunks: Vec::new(),
            blob: None,
        });
        self.chunks.push(path);
        self.counters.add(1, data.len() as u64);
        if pk.builder.get_ref().raw_offset() >= self.pack_size {
            if let Some(pk) = self.cur.take() {
                self.records.push(self.packs.close(pk)?);
            }
        }
        Ok(())
    }

    /// Close the open pack, if any.
    ///
    /// # Errors
    /// Pack or store failure, `Cancelled`.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(pk) = self.cur.take() {
            self.records.push(self.packs.close(pk)?);
        }
        Ok(())
    }
}
