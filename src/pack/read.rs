//! Reading packs back: ranged reads of just the frames needed, and a streaming decoder.
//!
//! [`PackCursor`] serves uncompressed byte ranges of one pack by fetching the frames
//! that hold them (one ranged GET per window) and keeping the last decompressed window,
//! so entries read in offset order cost one fetch per window, not per entry. When a
//! window does not decompress, its frames are decompressed one by one: a damaged frame
//! fails only the reads that touch it, and the other frames of the window still serve.
//! [`decoder`] decompresses a run of frames as a stream (the verifier decodes one frame
//! at a time with it, bounded to the frame's recorded size).
//!
//! [`read_chunks`] feeds a chunked file's chunks in order, hash-checked, through one
//! cursor per pack (restore writes them, verify hashes the file).
//!
//! All are synchronous (they run on blocking threads next to the codec work) and reach
//! the async store through a runtime handle.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result, ResultExt};
use crate::manifest::codec::Codec;
use crate::manifest::crypt::DataKey;
use crate::manifest::layout::Layout;
use crate::manifest::{Entry, PackRecord};
use crate::pack::frame::decompress;
use crate::store::BlobStore;

/// Uncompressed bytes fetched per window at most (unless one frame is larger).
pub const WINDOW: u64 = 8 << 20;

/// Random access to a pack's uncompressed bytes.
pub struct PackCursor<'a> {
    store: &'a dyn BlobStore,
    rt: tokio::runtime::Handle,
    blob: String,
    pack: &'a PackRecord,
    /// The last fetched window, as runs of frames: uncompressed start, and the bytes or
    /// why they could not be had (the run's uncompressed end is kept with an error).
    window: Vec<Segment>,
    /// Compressed bytes fetched so far.
    pub fetched: u64,
    /// `[encryption]`: the data key the pack's frames are sealed with.
    key: Option<Arc<DataKey>>,
}

/// Part of a window: frames that decompressed (their bytes) or one frame that did not.
struct Segment {
    start: u64,
    end: u64,
    data: std::result::Result<Vec<u8>, String>,
}

impl<'a> PackCursor<'a> {
    /// A cursor over `pack`, stored as `blob`.
    pub fn new(
        store: &'a dyn BlobStore,
        rt: tokio::runtime::Handle,
        blob: String,
        pack: &'a PackRecord,
    ) -> Self {
        Self {
            store,
            rt,
            blob,
            pack,
            window: Vec::new(),
            fetched: 0,
            key: None,
        }
    }

    /// Open sealed frames with `key` (`None`: the pack is plain).
    pub fn with_key(mut self, key: Option<Arc<DataKey>>) -> Self {
        self.key = key;
        self
    }

    /// Id of the pack this cursor reads.
    pub fn pack_id(&self) -> &str {
        &self.pack.id
    }

    /// Feed uncompressed bytes `range` to `sink` in order. `hint_end` is how far the
    /// caller will read soon (the end of the last wanted entry nearby): windows extend up
    /// to it, at most [`WINDOW`] bytes, so small neighbouring entries share one fetch.
    ///
    /// # Errors
    /// Store errors, `Integrity` if a frame holding part of `range` does not decompress
    /// to its recorded size (frames of the window that do are kept), or whatever `sink`
    /// returns.
    pub fn read(
        &mut self,
        range: Range<u64>,
        hint_end: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        if range.end > self.pack.raw_size {
            return Err(Error::integrity(format!(
                "{}: range {}..{} is past the pack's end ({})",
                self.blob, range.start, range.end, self.pack.raw_size
            )));
        }
        let mut pos = range.start;
        while pos < range.end {
            if let Some(seg) = self.window.iter().find(|s| s.start <= pos && pos < s.end) {
                let end = range.end.min(seg.end);
                match &seg.data {
                    Ok(data) => {
                        sink(&data[(pos - seg.start) as usize..(end - seg.start) as usize])?;
                    }
                    Err(why) => return Err(Error::integrity(why.clone())),
                }
                pos = end;
                continue;
            }
            let want_end = hint_end
                .max(range.end)
                .min(pos.saturating_add(WINDOW))
                .max(pos + 1)
                .min(self.pack.raw_size);
            let fa = self.pack.frame_at(pos);
            let fb = self.pack.frame_at(want_end - 1).max(fa);
            let comp = self.pack.frames_comp_range(fa, fb);
            let raw = self.pack.frames_raw_range(fa, fb);
            if !raw.contains(&pos) {
                // Only a frame table that failed validation gets here; never loop on it.
                return Err(Error::integrity(format!(
                    "{}: the frame table does not cover offset {pos}",
                    self.blob
                )));
            }
            let bytes = self
                .rt
                .block_on(self.store.get(&self.blob, Some(comp.clone())))
                .ctx(format!("reading frames {fa}..={fb} of {}", self.blob))?;
            self.fetched += bytes.len() as u64;
            self.window = match self.frames(fa, fb, &bytes) {
                Ok(data) => vec![Segment {
                    start: raw.start,
                    end: raw.end,
                    data: Ok(data),
                }],
                // Some frame is damaged: find which, keep the others.
                Err(_) => (fa..=fb)
                    .map(|k| {
                        let c = self.pack.frames_comp_range(k, k);
                        let r = self.pack.frames_raw_range(k, k);
                        let slice = (c.start.saturating_sub(comp.start) as usize)
                            ..(c.end.saturating_sub(comp.start) as usize).min(bytes.len());
                        Segment {
                            start: r.start,
                            end: r.end,
                            data: bytes
                                .get(slice)
                                .ok_or_else(|| {
                                    Error::integrity(format!(
                                        "{} frame {k}: out of range",
                                        self.blob
                                    ))
                                })
                                .and_then(|b| self.frames(k, k, b))
                                .map_err(|e| e.to_string()),
                        }
                    })
                    .collect(),
            };
        }
        Ok(())
    }

    /// Decompress frames `fa..=fb` (compressed bytes `comp`) to exactly their recorded
    /// size.
    fn frames(&self, fa: usize, fb: usize, comp: &[u8]) -> Result<Vec<u8>> {
        let raw = self.pack.frames_raw_range(fa, fb);
        let want = raw.end - raw.start;
        let opened;
        let comp = match &self.key {
            Some(k) => {
                opened = open_frame_run(k, self.pack, fa, fb, comp)?;
                &opened[..]
            }
            None => comp,
        };
        let data = decompress(self.pack.codec, comp, Some(want.min(64 << 20) as usize))
            .ctx(format!("{} frames {fa}..={fb}", self.blob))?;
        if data.len() as u64 != want {
            return Err(Error::integrity(format!(
                "{} frames {fa}..={fb} decompress to {} bytes, the frame table says {want}",
                self.blob,
                data.len(),
            )));
        }
        Ok(data)
    }
}

/// Open sealed frames `fa..=fb` of `pack` (their stored bytes `comp`, cut as the frame
/// table says) into the compressed frames they hold, concatenated.
///
/// # Errors
/// `Integrity` naming the pack and frame whose tag does not match.
pub fn open_frame_run(
    key: &DataKey,
    pack: &PackRecord,
    fa: usize,
    fb: usize,
    comp: &[u8],
) -> Result<Vec<u8>> {
    let base = pack.frames_comp_range(fa, fa).start;
    let mut out = Vec::with_capacity(comp.len());
    for k in fa..=fb {
        let c = pack.frames_comp_range(k, k);
        let slice = comp
            .get((c.start - base) as usize..(c.end - base) as usize)
            .ok_or_else(|| Error::integrity(format!("pack {} frame {k}: out of range", pack.id)))?;
        let last = k + 1 == pack.frames.len();
        out.extend_from_slice(&key.open_frame(&pack.id, k as u64, last, slice)?);
    }
    Ok(out)
}

/// A whole blob read front to back in ranged GETs of at most [`WINDOW`] bytes, as a
/// [`Read`] (for `cat`: memory is one window, whatever the blob's size). A store error
/// reads as an I/O error carrying its text.
pub struct BlobRead<'a> {
    store: &'a dyn BlobStore,
    rt: tokio::runtime::Handle,
    blob: String,
    pos: u64,
    size: u64,
    buf: bytes::Bytes,
}

impl<'a> BlobRead<'a> {
    /// Read `blob` (`size` bytes) from `store`.
    pub fn new(
        store: &'a dyn BlobStore,
        rt: tokio::runtime::Handle,
        blob: String,
        size: u64,
    ) -> Self {
        Self {
            store,
            rt,
            blob,
            pos: 0,
            size,
            buf: bytes::Bytes::new(),
        }
    }
}

impl Read for BlobRead<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            if self.pos >= self.size {
                return Ok(0);
            }
            let end = (self.pos + WINDOW).min(self.size);
            self.buf = self
                .rt
                .block_on(self.store.get(&self.blob, Some(self.pos..end)))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if self.buf.is_empty() {
                return Ok(0);
            }
            self.pos += self.buf.len() as u64;
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// A streaming decoder over a compressed reader (all frames, in order).
///
/// # Errors
/// `Internal` if the zstd decoder cannot be created.
pub fn decoder<'r, R: Read + 'r>(codec: Codec, r: R) -> Result<Box<dyn Read + 'r>> {
    Ok(match codec {
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Codec::Zstd => Box::new(
            zstd::stream::read::Decoder::new(r)
                .map_err(|e| Error::internal(format!("zstd decoder: {e}")))?,
        ),
    })
}

/// A pack's uncompressed bytes, read frame by frame as its frame table says: each frame
/// is decompressed on its own and must give exactly its recorded length. That is what a
/// ranged restore relies on, so the full verifier reads packs through this rather than
/// one streaming decoder (which would pass a frame table that restore cannot use).
/// Memory: one frame, compressed and raw (bounded by the manifest's validation).
pub struct FrameReader<'p, R: Read> {
    inner: R,
    pack: &'p PackRecord,
    next: usize,
    comp: Vec<u8>,
    buf: Vec<u8>,
    pos: usize,
    key: Option<Arc<DataKey>>,
}

impl<'p, R: Read> FrameReader<'p, R> {
    /// Frames of `pack`, read from `inner` (its compressed bytes from the start).
    pub fn new(pack: &'p PackRecord, inner: R) -> Self {
        Self {
            inner,
            pack,
            next: 0,
            comp: Vec::new(),
            buf: Vec::new(),
            pos: 0,
            key: None,
        }
    }

    /// Open sealed frames with `key` (`None`: the pack is plain).
    pub fn with_key(mut self, key: Option<Arc<DataKey>>) -> Self {
        self.key = key;
        self
    }

    fn next_frame(&mut self) -> std::io::Result<bool> {
        let k = self.next;
        if k >= self.pack.frames.len() {
            return Ok(false);
        }
        self.next += 1;
        let c = self.pack.frames_comp_range(k, k);
        let r = self.pack.frames_raw_range(k, k);
        let bad = |why: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "frame {k} (raw {}..{}, compressed {}..{}): {why}",
                    r.start, r.end, c.start, c.end
                ),
            )
        };
        self.comp.clear();
        let clen = c.end - c.start;
        (&mut self.inner).take(clen).read_to_end(&mut self.comp)?;
        if self.comp.len() as u64 != clen {
            return Err(bad(format!(
                "the pack ends after {} of its {clen} compressed bytes",
                self.comp.len()
            )));
        }
        let rlen = usize::try_from(r.end - r.start).map_err(|e| bad(e.to_string()))?;
        if let Some(key) = &self.key {
            let last = k + 1 == self.pack.frames.len();
            self.comp = key
                .open_frame(&self.pack.id, k as u64, last, &self.comp)
                .map_err(|e| bad(e.to_string()))?;
        }
        let data =
            decompress(self.pack.codec, &self.comp, Some(rlen)).map_err(|e| bad(e.to_string()))?;
        if data.len() != rlen {
            let got = if data.len() > rlen {
                "more".to_string()
            } else {
                data.len().to_string()
            };
            return Err(bad(format!(
                "decompresses on its own to {got} bytes, the frame table says {rlen}"
            )));
        }
        self.buf = data;
        self.pos = 0;
        Ok(true)
    }
}

impl<R: Read> Read for FrameReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if !self.next_frame()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Feed the data of chunked file `e` to `sink` in order, reading only the frames that
/// hold its chunks (one cursor per pack while consecutive chunks stay in it) and
/// checking every chunk's SHA-256 before its bytes go on.
///
/// # Errors
/// `Integrity` naming the chunk (its index, pack and hash) when a chunk's data is
/// damaged or its pack is unknown; `NotFound` for a missing pack; whatever `sink` returns.
pub fn read_chunks(
    store: &dyn BlobStore,
    rt: &tokio::runtime::Handle,
    layout: &Layout,
    packs: &[PackRecord],
    e: &Entry,
    fetched: &mut u64,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut cursor: Option<PackCursor<'_>> = None;
    let mut buf = Vec::new();
    for (k, c) in e.chunks.iter().enumerate() {
        if cursor.as_ref().is_none_or(|cur| cur.pack_id() != c.pack) {
            if let Some(old) = cursor.take() {
                *fetched += old.fetched;
            }
            let p = packs.iter().find(|p| p.id == c.pack).ok_or_else(|| {
                Error::integrity(format!(
                    "{}: chunk {k} refers to pack {:?}, which the manifest does not list",
                    e.path.display(),
                    c.pack
                ))
            })?;
            cursor = Some(
                PackCursor::new(store, rt.clone(), layout.full(&p.blob), p)
                    .with_key(layout.key().cloned()),
            );
        }
        let cur = cursor
            .as_mut()
            .ok_or_else(|| Error::internal("no pack cursor"))?;
        // Read ahead to the end of the next chunk when it follows in the same pack.
        let hint = e
            .chunks
            .get(k + 1)
            .filter(|n| n.pack == c.pack && n.data_offset >= c.data_offset)
            .map_or(0, |n| n.data_offset + n.size);
        buf.clear();
        cur.read(c.data_offset..c.data_offset + c.size, hint, &mut |b| {
            buf.extend_from_slice(b);
            Ok(())
        })
        .map_err(|err| {
            err.context(format!(
                "chunk {k} of {} (pack {})",
                e.path.display(),
                c.pack
            ))
        })?;
        let got = hex::encode(Sha256::digest(&buf));
        if got != c.sha256 {
            return Err(Error::integrity(format!(
                "{}: chunk {k} (pack {}, offset {}) has SHA-256 {got}, the manifest says {}; the file was not written",
                e.path.display(),
                c.pack,
                c.data_offset,
                c.sha256
            )));
        }
        sink(&buf)?;
    }
    if let Some(old) = cursor {
        *fetched += old.fetched;
    }
    Ok(())
}
