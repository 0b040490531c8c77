//! Frames: the unit of compression and of random access inside a pack.
//!
//! Each frame is an independent gzip member or zstd frame, so concatenated frames are one
//! valid `.gz`/`.zst` stream and any run of whole frames decompresses on its own. The
//! compressor is reused per worker thread (a zstd context is costly to build).

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::manifest::codec::Codec;

/// A reusable per-thread frame compressor.
pub enum FrameCompressor {
    /// gzip members via flate2 (zlib-rs backend).
    Gzip(flate2::Compression),
    /// zstd frames via a reused context.
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl FrameCompressor {
    /// A compressor for `codec` at `level`.
    ///
    /// # Errors
    /// `Internal` if the codec library refuses the level.
    pub fn new(codec: Codec, level: i32) -> Result<Self> {
        Ok(match codec {
            Codec::Gzip => {
                FrameCompressor::Gzip(flate2::Compression::new(level.clamp(0, 9) as u32))
            }
            Codec::Zstd => {
                let mut c = zstd::bulk::Compressor::new(level)
                    .map_err(|e| Error::internal(format!("zstd level {level}: {e}")))?;
                c.include_checksum(true)
                    .map_err(|e| Error::internal(format!("zstd checksum flag: {e}")))?;
                FrameCompressor::Zstd(Box::new(c))
            }
            Codec::Stored => {
                return Err(Error::internal(
                    "stored packs are staged server-side, not written by a frame compressor",
                ))
            }
        })
    }

    /// Compress one independent frame and append it to `out`.
    ///
    /// # Errors
    /// `Internal` on codec failure.
    pub fn compress_into(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<()> {
        match self {
            FrameCompressor::Gzip(level) => {
                let mut enc = flate2::write::GzEncoder::new(std::mem::take(out), *level);
                enc.write_all(raw)
                    .map_err(|e| Error::internal(format!("gzip: {e}")))?;
                *out = enc
                    .finish()
                    .map_err(|e| Error::internal(format!("gzip: {e}")))?;
            }
            FrameCompressor::Zstd(c) => {
                let frame = c
                    .compress(raw)
                    .map_err(|e| Error::internal(format!("zstd: {e}")))?;
                out.extend_from_slice(&frame);
            }
        }
        Ok(())
    }
}

/// Decompress a run of whole frames (any number of gzip members or zstd frames). With
/// `expected_len`, at most one byte more than that is produced (the caller compares
/// lengths), so a frame that inflates far past its frame table costs no more memory.
///
/// # Errors
/// `Integrity` when the bytes are not valid frames.
pub fn decompress(codec: Codec, comp: &[u8], expected_len: Option<usize>) -> Result<Vec<u8>> {
    let cap = expected_len.unwrap_or(comp.len().saturating_mul(4));
    let mut out = Vec::with_capacity(cap.min(256 << 20));
    let limit = expected_len.map_or(u64::MAX, |n| (n as u64).saturating_add(1));
    let res = match codec {
        Codec::Gzip => flate2::read::MultiGzDecoder::new(comp)
            .take(limit)
            .read_to_end(&mut out),
        Codec::Zstd => zstd::stream::read::Decoder::with_buffer(comp)
            .and_then(|d| d.take(limit).read_to_end(&mut out)),
        // Identity: a stored pack's frames are its bytes.
        Codec::Stored => comp.take(limit).read_to_end(&mut out),
    };
    res.map_err(|e| Error::integrity(format!("{} frames do not decompress: {e}", codec.as_str())))?;
    Ok(out)
}
