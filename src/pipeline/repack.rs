//! The engine's side of `prune --max-unused`: copying live tar records out of partly used
//! packs into new ones ([`retention::repack::Repacker`]).
//!
//! Records are copied byte for byte (headers, data, padding) from the old pack's frames,
//! read through a [`PackCursor`] (frames decompressed, and opened with the data key for
//! an `[encryption]` pipeline), into a pack writer configured like the pipeline's own
//! backups: codec, level, frame size, block size, tier, and sealed with the same data key
//! under the *new* pack's id and frame indexes. Each new pack is a valid tar stream (the
//! copied records, then the end-of-archive blocks), so `tar` still reads every pack.
//!
//! The new packs are committed before this returns; the moved records that point at them
//! are stored by the caller afterwards (`retention::repack::run`).

use std::collections::HashSet;
use std::io::Write;

use crate::error::{Error, Result, ResultExt};
use crate::manifest::layout::Layout;
use crate::manifest::moved::Move;
use crate::pack::packer::{io_to_err, OpenPack, Packs, SinkFactory};
use crate::pack::read::PackCursor;
use crate::pack::writer::{BlockSink, SealedBlock};
use crate::retention::repack::{RepackInput, RepackOutput, Repacker};
use crate::store::Store;

use super::Pipeline;

/// Copies records with the pipeline's pack settings.
#[derive(Debug, Clone)]
pub struct PackRepacker {
    pipeline: String,
    codec: crate::manifest::codec::Codec,
    level: i32,
    frame_size: usize,
    block_size: usize,
    pack_size: u64,
    tier: crate::store::Tier,
}

impl PackRepacker {
    /// A repacker writing packs the way `p`'s backups do.
    pub fn new(p: &Pipeline) -> Self {
        PackRepacker {
            pipeline: p.name.clone(),
            codec: p.compression.codec,
            level: p.compression.level,
            frame_size: p.compression.frame_size,
            block_size: p.upload.block_size,
            pack_size: p.upload.pack_size,
            tier: p.target.tier,
        }
    }

    /// As a value `prune` takes.
    pub fn handle(p: &Pipeline) -> crate::retention::repack::RepackWith {
        crate::retention::repack::RepackWith(std::sync::Arc::new(Self::new(p)))
    }

    fn copy(
        &self,
        rt: &tokio::runtime::Handle,
        store: &Store,
        layout: &Layout,
        batch: &[RepackInput],
    ) -> Result<RepackOutput> {
        let packs = Packs {
            pipeline: self.pipeline.clone(),
            run_id: format!(
                "repack-{}-{}",
                crate::support::ids::stamp(chrono::Utc::now()),
                batch.first().map_or("", |b| b.pack.id.as_str())
            ),
            codec: self.codec,
            level: self.level,
            frame_size: self.frame_size,
            block_size: self.block_size,
            tier: self.tier,
            store: store.clone(),
            layout: layout.clone(),
            rt: rt.clone(),
            key: layout.key().cloned(),
        };
        let sinks = Direct {
            store: store.clone(),
            rt: rt.clone(),
        };
        let mut out = RepackOutput {
            into: Vec::new(),
            moves: Vec::with_capacity(batch.len()),
        };
        let mut cur: Option<OpenPack<DirectSink>> = None;
        let mut seq = 0usize;
        for input in batch {
            let old = &input.pack;
            let mut cursor = PackCursor::new(&**store, rt.clone(), layout.full(&old.blob), old)
                .with_key(layout.key().cloned());
            let mut moves: Vec<Move> = Vec::new();
            for &(a, b) in &input.extents {
                let pk = match cur.as_mut() {
                    Some(pk) => pk,
                    None => {
                        seq += 1;
                        cur.insert(packs.open(&sinks, 0, seq, self.pack_size)?)
                    }
                };
                let to = pk.builder.get_ref().raw_offset();
                // Read ahead over the pack's next records (the cursor stops at one window).
                let hint = input.extents.last().map_or(b, |e| e.1);
                let blob = pk.blob.clone();
                let w = pk.builder.get_mut();
                cursor
                    .read(a..b, hint, &mut |bytes| {
                        w.write_all(bytes).map_err(|e| io_to_err(e, &blob))
                    })
                    .map_err(|e| {
                        e.context(format!(
                            "repacking pack {}: reading its record at {a} (nothing of this \
                             pack was moved; check it with `blobpipe verify`)",
                            old.id
                        ))
                    })?;
                let pack = out.into.len() as u32;
                match moves.last_mut() {
                    // Follows the last record in both packs: one move for the run.
                    Some(m) if m.pack == pack && m.from + m.len == a && m.to + m.len == to => {
                        m.len += b - a;
                    }
                    _ => moves.push(Move {
                        from: a,
                        len: b - a,
                        pack,
                        to,
                    }),
                }
                if pk.builder.get_ref().raw_offset() >= self.pack_size {
                    if let Some(pk) = cur.take() {
                        out.into.push(packs.close(pk)?);
                    }
                }
            }
            out.moves.push(moves);
        }
        if let Some(pk) = cur.take() {
            out.into.push(packs.close(pk)?);
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Repacker for PackRepacker {
    fn pack_size(&self) -> u64 {
        self.pack_size
    }

    async fn repack(
        &self,
        store: &Store,
        layout: &Layout,
        batch: Vec<RepackInput>,
    ) -> Result<RepackOutput> {
        let this = self.clone();
        let (store, layout) = (store.clone(), layout.clone());
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || this.copy(&rt, &store, &layout, &batch))
            .await
            .map_err(|e| Error::internal(format!("the repack task failed: {e}")))?
    }
}

/// Stages each block of a new pack directly (a repack is one writer; no upload pool).
struct Direct {
    store: Store,
    rt: tokio::runtime::Handle,
}

struct DirectSink {
    store: Store,
    rt: tokio::runtime::Handle,
    blob: String,
    already: HashSet<String>,
}

impl SinkFactory for Direct {
    type Sink = DirectSink;

    fn sink(&self, blob: &str, already: HashSet<String>) -> DirectSink {
        DirectSink {
            store: self.store.clone(),
            rt: self.rt.clone(),
            blob: blob.to_string(),
            already,
        }
    }
}

impl BlockSink for DirectSink {
    fn send(&mut self, block: SealedBlock) -> Result<()> {
        if self.already.contains(&block.id) {
            return Ok(());
        }
        self.rt
            .block_on(
                self.store
                    .stage_block(&self.blob, &block.id, block.data, block.md5),
            )
            .ctx(format!("staging block {} of {}", block.index, self.blob))
    }

    fn drain(&mut self) -> Result<()> {
        Ok(())
    }
}
