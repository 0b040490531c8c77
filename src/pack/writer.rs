//! The pack writer: raw tar bytes → frames → MD5-checked blocks handed to a sink.
//!
//! The compressed stream is cut into blocks (default 8 MiB). Each sealed block gets its
//! MD5 and an id that encodes its index and MD5, and is handed to a [`BlockSink`] (the
//! bounded channel to the uploaders, or a test buffer). The whole-blob MD5 is computed on
//! the way. The writer is synchronous: it runs on a blocking thread so compression uses
//! real cores, and it holds at most one frame and one block.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use md5::{Digest, Md5};

use super::frame::FrameCompressor;
use crate::error::{Error, Result};
use crate::manifest::crypt::DataKey;
use crate::manifest::BlockRecord;
use crate::store::b64;

/// Azure's limit on blocks per blob (the manifest check enforces it on reading).
pub const MAX_BLOCKS: usize = crate::manifest::check::MAX_BLOCKS;
/// Azure's limit on one block.
pub const MAX_BLOCK_SIZE: usize = crate::manifest::check::MAX_BLOCK_SIZE as usize;

/// A block ready to stage.
#[derive(Debug, Clone)]
pub struct SealedBlock {
    /// Index in the pack.
    pub index: usize,
    /// Block id (base64 of `"<index:06>-<md5 hex>"`: equal length for every block).
    pub id: String,
    /// Compressed bytes.
    pub data: Bytes,
    /// MD5 of `data`.
    pub md5: [u8; 16],
}

/// Where sealed blocks go (the bounded upload channel, or a test buffer).
pub trait BlockSink {
    /// Accept one block; may block (backpressure).
    ///
    /// # Errors
    /// When the run is failing or cancelled.
    fn send(&mut self, block: SealedBlock) -> Result<()>;

    /// Wait until every block sent so far is stored (called when a pack closes, before
    /// its block list is committed). A sink that stores synchronously has nothing to wait
    /// for.
    ///
    /// # Errors
    /// The first failed block, or `Cancelled`.
    fn drain(&mut self) -> Result<()> {
        Ok(())
    }
}

impl BlockSink for Vec<SealedBlock> {
    fn send(&mut self, block: SealedBlock) -> Result<()> {
        self.push(block);
        Ok(())
    }
}

/// The block id for block `index` with MD5 `md5`.
pub fn block_id(index: usize, md5: &[u8; 16]) -> String {
    b64(format!("{index:06}-{}", hex::encode(md5)).as_bytes())
}

/// Chooses block sizes: the configured size, grown so a blob never needs more than
/// [`MAX_BLOCKS`] blocks — up front when the pack's size is known, by doubling every
/// 10,000 blocks when it is not.
#[derive(Debug, Clone)]
pub struct BlockSizer {
    size: usize,
    known: bool,
}

impl BlockSizer {
    /// `base` bytes per block; `size_hint` = expected uncompressed pack size, if known.
    pub fn new(base: usize, size_hint: Option<u64>) -> Self {
        match size_hint {
            Some(n) => {
                // Plan for incompressible data: compressed ≤ raw (+ small frame overhead).
                let need = (n + n / 64).div_ceil((MAX_BLOCKS * 4 / 5) as u64) as usize;
                let size = if need <= base {
                    base
                } else {
                    need.div_ceil(1 << 20) << 20
                };
                Self {
                    size: size.min(MAX_BLOCK_SIZE),
                    known: true,
                }
            }
            None => Self {
                size: base,
                known: false,
            },
        }
    }

    /// Size for block number `index`.
    pub fn size_for(&self, index: usize) -> usize {
        if self.known {
            self.size
        } else {
            let doublings = (index / 10_000).min(10) as u32;
            self.size
                .saturating_mul(1usize << doublings)
                .min(MAX_BLOCK_SIZE)
        }
    }
}

/// What a finished pack writer reports.
#[derive(Debug, Clone)]
pub struct PackSummary {
    /// Compressed size.
    pub size: u64,
    /// Uncompressed size.
    pub raw_size: u64,
    /// Frame table `(raw offset, compressed offset)`.
    pub frames: Vec<(u64, u64)>,
    /// Blocks in order.
    pub blocks: Vec<BlockRecord>,
    /// Whole-blob MD5.
    pub md5: [u8; 16],
}

/// Streams raw tar bytes into frames and blocks. Implements [`Write`] so a
/// `tar::Builder` can write straight into it.
pub struct PackWriter<S: BlockSink> {
    compressor: FrameCompressor,
    frame_size: usize,
    sizer: BlockSizer,
    sink: S,
    raw_offset: u64,
    frame: Vec<u8>,
    frame_start: u64,
    comp_offset: u64,
    frames: Vec<(u64, u64)>,
    pending: Vec<u8>,
    blocks: Vec<BlockRecord>,
    whole: Md5,
    failed: Option<Error>,
    /// `[encryption]`: the data key and the pack id every frame is sealed with.
    seal: Option<(Arc<DataKey>, String)>,
    /// Sealing: the last compressed frame (its raw start and bytes), held back until
    /// the next one or `finish` says whether it is the pack's last.
    held: Option<(u64, Vec<u8>)>,
}

impl<S: BlockSink> PackWriter<S> {
    /// A writer producing frames of `frame_size` raw bytes and blocks sized by `sizer`.
    pub fn new(compressor: FrameCompressor, frame_size: usize, sizer: BlockSizer, sink: S) -> Self {
        Self {
            compressor,
            frame_size,
            sizer,
            sink,
            raw_offset: 0,
            frame: Vec::with_capacity(frame_size),
            frame_start: 0,
            comp_offset: 0,
            frames: Vec::new(),
            pending: Vec::new(),
            blocks: Vec::new(),
            whole: Md5::new(),
            failed: None,
            seal: None,
            held: None,
        }
    }

    /// Seal every frame with `key` as frame `i` of pack `pack_id` (the encrypted frame
    /// format, [`DataKey::seal_frame`]): the frame table and blocks then describe the
    /// sealed bytes.
    pub fn sealed(mut self, key: Arc<DataKey>, pack_id: &str) -> Self {
        self.seal = Some((key, pack_id.to_string()));
        self
    }

    /// Uncompressed bytes written so far.
    pub fn raw_offset(&self) -> u64 {
        self.raw_offset
    }

    /// Close the current frame now (the next byte starts a new one).
    ///
    /// # Errors
    /// Codec or sink failure.
    pub fn cut_frame(&mut self) -> Result<()> {
        if self.frame.is_empty() {
            return Ok(());
        }
        if self.seal.is_some() {
            let mut comp = Vec::with_capacity(self.frame.len() / 2);
            self.compressor.compress_into(&self.frame, &mut comp)?;
            let start = self.frame_start;
            self.frame_start = self.raw_offset;
            self.frame.clear();
            return match self.held.replace((start, comp)) {
                Some(prev) => self.seal_held(prev, false),
                None => Ok(()),
            };
        }
        let before = self.pending.len();
        self.compressor
            .compress_into(&self.frame, &mut self.pending)?;
        self.frames.push((self.frame_start, self.comp_offset));
        self.comp_offset += (self.pending.len() - before) as u64;
        self.frame_start = self.raw_offset;
        self.frame.clear();
        self.seal_full_blocks(false)
    }

    /// Seal a held frame as the next frame of the pack.
    fn seal_held(&mut self, (raw_start, comp): (u64, Vec<u8>), last: bool) -> Result<()> {
        let Some((key, id)) = self.seal.clone() else {
            return Err(Error::internal("sealing a frame without a key"));
        };
        let before = self.pending.len();
        key.seal_frame(
            &id,
            self.frames.len() as u64,
            last,
            &comp,
            &mut self.pending,
        )?;
        self.frames.push((raw_start, self.comp_offset));
        self.comp_offset += (self.pending.len() - before) as u64;
        self.seal_full_blocks(false)
    }

    fn seal_full_blocks(&mut self, last: bool) -> Result<()> {
        loop {
            let size = self.sizer.size_for(self.blocks.len());
            let flush_rest = last && !self.pending.is_empty();
            if self.pending.len() < size && !flush_rest {
                return Ok(());
            }
            let take = size.min(self.pending.len());
            let rest = self.pending.split_off(take);
            let data = std::mem::replace(&mut self.pending, rest);
            let md5: [u8; 16] = Md5::digest(&data).into();
            self.whole.update(&data);
            let index = self.blocks.len();
            if index >= MAX_BLOCKS {
                return Err(Error::internal(format!(
                    "pack would exceed {MAX_BLOCKS} blocks"
                )));
            }
            let id = block_id(index, &md5);
            self.blocks.push(BlockRecord {
                id: id.clone(),
                size: data.len() as u64,
                md5: b64(&md5),
            });
            self.sink.send(SealedBlock {
                index,
                id,
                data: Bytes::from(data),
                md5,
            })?;
        }
    }

    /// Flush the last frame and block; return the tables and the sink.
    ///
    /// # Errors
    /// Codec or sink failure, or an earlier write failure.
    pub fn finish(mut self) -> Result<(PackSummary, S)> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.cut_frame()?;
        if let Some(h) = self.held.take() {
            self.seal_held(h, true)?;
        }
        self.seal_full_blocks(true)?;
        Ok((
            PackSummary {
                size: self.comp_offset,
                raw_size: self.raw_offset,
                frames: self.frames,
                blocks: self.blocks,
                md5: self.whole.finalize().into(),
            },
            self.sink,
        ))
    }
}

impl<S: BlockSink> Write for PackWriter<S> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let room = self.frame_size - self.frame.len();
            let take = room.min(buf.len());
            self.frame.extend_from_slice(&buf[..take]);
            self.raw_offset += take as u64;
            buf = &buf[take..];
            if self.frame.len() >= self.frame_size {
                if let Err(e) = self.cut_frame() {
                    let msg = e.to_string();
                    self.failed = Some(e);
                    return Err(io::Error::other(msg));
                }
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::codec::Codec;
    use crate::pack::frame::decompress;

    fn roundtrip(codec: Codec) {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7000) as u8)
            .collect();
        let mut w = PackWriter::new(
            FrameCompressor::new(codec, 3).unwrap(),
            256 << 10,
            BlockSizer::new(64 << 10, None),
            Vec::new(),
        );
        w.write_all(&data).unwrap();
        let (sum, blocks) = w.finish().unwrap();
        assert_eq!(sum.raw_size, data.len() as u64);
        assert_eq!(sum.frames.len(), 12);
        let joined: Vec<u8> = blocks.iter().flat_map(|b| b.data.iter().copied()).collect();
        assert_eq!(joined.len() as u64, sum.size);
        let md5: [u8; 16] = Md5::digest(&joined).into();
        assert_eq!(md5, sum.md5);
        assert_eq!(decompress(codec, &joined, None).unwrap(), data);
        // Any single frame decompresses on its own to its raw range.
        let rec = crate::manifest::PackRecord {
            id: "t".into(),
            blob: "t".into(),
            codec,
            size: sum.size,
            raw_size: sum.raw_size,
            md5: String::new(),
            tier: crate::store::Tier::Hot,
            frames: sum.frames.clone(),
            blocks: sum.blocks.clone(),
        };
        for i in [0, 5, 11] {
            let c = rec.frames_comp_range(i, i);
            let r = rec.frames_raw_range(i, i);
            let out = decompress(codec, &joined[c.start as usize..c.end as usize], None).unwrap();
            assert_eq!(out, data[r.start as usize..r.end as usize]);
        }
        // Block ids are all the same length (Azure requires it).
        assert!(blocks.windows(2).all(|w| w[0].id.len() == w[1].id.len()));
    }

    #[test]
    fn gzip_frames_roundtrip() {
        roundtrip(Codec::Gzip);
    }

    #[test]
    fn zstd_frames_roundtrip() {
        roundtrip(Codec::Zstd);
    }

    #[test]
    fn sealed_frames_open_in_place_and_read_as_a_stream() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 97) as u8).collect();
        let key = Arc::new(DataKey::generate().unwrap());
        let mut w = PackWriter::new(
            FrameCompressor::new(Codec::Zstd, 3).unwrap(),
            256 << 10,
            BlockSizer::new(64 << 10, None),
            Vec::new(),
        )
        .sealed(key.clone(), "pk");
        w.write_all(&data).unwrap();
        let (sum, blocks) = w.finish().unwrap();
        let joined: Vec<u8> = blocks.iter().flat_map(|b| b.data.iter().copied()).collect();
        assert_eq!(sum.frames.len(), 4);
        assert_eq!(joined.len() as u64, sum.size);
        // Not zstd any more: the plain decoder refuses it.
        assert!(decompress(Codec::Zstd, &joined, None).is_err());
        let mut raw = Vec::new();
        key.open_frames("pk", &joined[..], &mut |f| {
            raw.extend(decompress(Codec::Zstd, f, None)?);
            Ok(())
        })
        .unwrap();
        assert_eq!(raw, data);
        // Each frame opens where the frame table puts it; the last carries the flag.
        let ends: Vec<u64> = sum
            .frames
            .iter()
            .skip(1)
            .map(|f| f.1)
            .chain([sum.size])
            .collect();
        for (k, (f, end)) in sum.frames.iter().zip(ends).enumerate() {
            let frame = &joined[f.1 as usize..end as usize];
            let last = k == 3;
            assert!(key.open_frame("pk", k as u64, last, frame).is_ok());
            assert!(key.open_frame("pk", k as u64, !last, frame).is_err());
        }
    }

    #[test]
    fn block_sizer_respects_block_limit() {
        let s = BlockSizer::new(8 << 20, Some(1 << 40));
        assert!((1u64 << 40) / s.size_for(0) as u64 <= MAX_BLOCKS as u64);
        let u = BlockSizer::new(8 << 20, None);
        assert_eq!(u.size_for(9_999), 8 << 20);
        assert_eq!(u.size_for(10_000), 16 << 20);
        let total: u64 = (0..MAX_BLOCKS).map(|i| u.size_for(i) as u64).sum();
        assert!(
            total > 1 << 40,
            "unknown-length streams reach at least 1 TiB"
        );
    }
}
