//! Reading spans of a pack back, frame by frame: the data path of `sample` and `full`.
//!
//! A *span* is a run of whole frames (and the blocks inside it). Its compressed bytes are
//! fetched in ranged reads of at most [`CHUNK`] bytes; every block that lies entirely
//! inside the fetched range is MD5-checked, every frame is decompressed on its own (frames
//! are independent), and every file whose data lies inside the span's frames is
//! SHA-256-checked. A frame that does not decompress costs only the files whose data
//! overlaps it: they are named in its `decompress` finding, and the frames after it are
//! still checked.
//!
//! `full` reads the whole pack as one span; `sample` reads the spans around the sampled
//! blocks (a sampled block plus the parts of the frames it cuts), so the bytes read follow
//! the sampled fraction.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::{Mismatch, PackResult};
use crate::error::Result;
use crate::manifest::crypt::DataKey;
use crate::manifest::{Entry, PackRecord};
use crate::pack::read::decoder;
use crate::store::{md5_from_b64, BlobStore};

/// Largest single ranged read.
pub(super) const CHUNK: u64 = 8 << 20;

/// Paths a finding names at most (`paths_total` counts them all).
pub(super) const MAX_PATHS: usize = 100;

/// One pack being read back: its record, its files (sorted by data offset) and the block
/// offsets (computed once: `PackRecord::block_range` is linear).
pub(super) struct PackScan<'a> {
    pub(super) store: &'a dyn BlobStore,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) blob: &'a str,
    pub(super) p: &'a PackRecord,
    /// File entries of the pack, sorted by `data_offset`.
    pub(super) files: Vec<&'a Entry>,
    /// Compressed start offset of each block, plus the end of the last.
    block_starts: Vec<u64>,
    /// Whether the frame table can be used to find frames (else blocks are only MD5'd).
    pub(super) frames_ok: bool,
    /// `[encryption]`: the data key the frames are sealed with.
    key: Option<Arc<DataKey>>,
}

/// Why a frame table cannot be used, if it cannot.
pub(super) fn frame_table_problem(p: &PackRecord) -> Option<String> {
    let Some(first) = p.frames.first() else {
        return Some("the frame table is empty".into());
    };
    if *first != (0, 0) {
        return Some(format!(
            "the frame table starts at {first:?}, not at (0, 0)"
        ));
    }
    if let Some(w) = p
        .frames
        .windows(2)
        .find(|w| w[1].0 <= w[0].0 || w[1].1 <= w[0].1)
    {
        return Some(format!(
            "the frame table is not strictly increasing ({:?} then {:?})",
            w[0], w[1]
        ));
    }
    let last = p.frames[p.frames.len() - 1];
    if last.0 >= p.raw_size || last.1 >= p.size {
        return Some(format!(
            "the frame table's last frame {last:?} starts past the pack's end ({} raw, {} compressed bytes)",
            p.raw_size, p.size
        ));
    }
    None
}

impl<'a> PackScan<'a> {
    pub(super) fn new(
        store: &'a dyn BlobStore,
        rt: tokio::runtime::Handle,
        blob: &'a str,
        p: &'a PackRecord,
        files: Vec<&'a Entry>,
    ) -> Self {
        let mut block_starts = Vec::with_capacity(p.blocks.len() + 1);
        let mut off = 0u64;
        block_starts.push(0);
        for b in &p.blocks {
            off = off.saturating_add(b.size);
            block_starts.push(off);
        }
        Self {
            store,
            rt,
            blob,
            p,
            files,
            block_starts,
            frames_ok: frame_table_problem(p).is_none(),
            key: None,
        }
    }

    /// The pack's frames are sealed (`[encryption]`): open them with `key`, or, without
    /// it, check blocks only (their MD5s are of the stored ciphertext).
    pub(super) fn sealed(mut self, key: Option<Arc<DataKey>>) -> Self {
        if key.is_none() {
            self.frames_ok = false;
        }
        self.key = key;
        self
    }

    /// Compressed range of block `i`.
    pub(super) fn block_range(&self, i: usize) -> Range<u64> {
        self.block_starts[i]..self.block_starts[i + 1]
    }

    /// Frames `fa..=fb` holding the compressed bytes `comp` (frame table must be usable).
    pub(super) fn frames_holding(&self, comp: &Range<u64>) -> (usize, usize) {
        let frames = &self.p.frames;
        let fa = frames
            .partition_point(|f| f.1 <= comp.start)
            .saturating_sub(1);
        let fb = frames
            .partition_point(|f| f.1 < comp.end.max(comp.start + 1))
            .saturating_sub(1)
            .max(fa);
        (fa, fb)
    }

    /// The files whose data overlaps uncompressed `raw` (the first [`MAX_PATHS`], and
    /// how many in all). Empty files hold no bytes and are never affected.
    pub(super) fn paths_overlapping(&self, raw: &Range<u64>) -> (Vec<String>, usize) {
        let end = self.files.partition_point(|e| e.data_offset < raw.end);
        let hit = self.files[..end]
            .iter()
            .filter(|e| e.size > 0 && e.data_offset.saturating_add(e.size) > raw.start);
        let mut paths = Vec::new();
        let mut total = 0;
        for e in hit {
            if paths.len() < MAX_PATHS {
                paths.push(e.path.display());
            }
            total += 1;
        }
        (paths, total)
    }

    /// Files affected by compressed bytes `comp` (through the frames holding them).
    pub(super) fn paths_of_comp(&self, comp: &Range<u64>) -> (Vec<String>, usize) {
        if !self.frames_ok {
            return self.all_paths();
        }
        let (fa, fb) = self.frames_holding(comp);
        self.paths_overlapping(&self.p.frames_raw_range(fa, fb))
    }

    /// Every file of the pack (capped).
    pub(super) fn all_paths(&self) -> (Vec<String>, usize) {
        self.paths_overlapping(&(0..u64::MAX))
    }

    fn finding(&self, check: &str, detail: String, paths: (Vec<String>, usize)) -> Mismatch {
        let mut m = super::mismatch(self.p, self.blob, check, detail);
        m.paths = paths.0;
        m.paths_total = paths.1;
        m
    }

    /// Read span `frames` (`fa..=fb`, or none when the frame table is unusable) whose
    /// bytes, with any blocks to check, are the compressed range `fetch`. `whole`: the
    /// span is the entire pack (every file is checked, and a file reaching past the
    /// pack's end is a finding); otherwise only the files entirely inside the span are.
    ///
    /// # Errors
    /// Store errors (a failed read is not a finding).
    pub(super) fn span(
        &self,
        frames: Option<(usize, usize)>,
        fetch: Range<u64>,
        whole: bool,
        r: &mut PackResult,
    ) -> Result<()> {
        let p = self.p;
        // Blocks entirely inside the fetched range are MD5-checked.
        let mut bi = self.block_starts[..p.blocks.len()].partition_point(|&s| s < fetch.start);
        let mut bmd5 = Md5::new();
        // Frames, decoded one at a time.
        let mut fk = frames.map(|f| f.0);
        let mut fbuf: Vec<u8> = Vec::new();
        let raw_span = frames.map(|(fa, fb)| p.frames_raw_range(fa, fb));
        let mut hashing = Hashing::new(self, raw_span.clone(), whole);

        let mut pos = fetch.start;
        while pos < fetch.end {
            let end = fetch.end.min(pos.saturating_add(CHUNK));
            let data = self
                .rt
                .block_on(self.store.get(self.blob, Some(pos..end)))?;
            r.bytes += data.len() as u64;
            if data.len() as u64 != end - pos {
                return Err(crate::error::Error::integrity(format!(
                    "{}: read of {pos}..{end} returned {} bytes",
                    self.blob,
                    data.len()
                )));
            }
            // Block MD5s.
            let mut off = pos;
            while bi < p.blocks.len() && off < end {
                let br = self.block_range(bi);
                if br.end > fetch.end {
                    break;
                }
                let s = off.max(br.start);
                let t = end.min(br.end);
                if s < t {
                    bmd5.update(&data[(s - pos) as usize..(t - pos) as usize]);
                }
                off = t;
                if t == br.end {
                    let got: [u8; 16] = std::mem::replace(&mut bmd5, Md5::new()).finalize().into();
                    r.blocks += 1;
                    if md5_from_b64(&p.blocks[bi].md5) != Some(got) {
                        r.mismatches.push(self.block_finding(bi, &got));
                    }
                    bi += 1;
                } else {
                    break;
                }
            }
            // Frames.
            let mut off = pos;
            while let (Some(k), Some((_, fb))) = (fk, frames) {
                if k > fb || off >= end {
                    break;
                }
                let cr = p.frames_comp_range(k, k);
                let s = off.max(cr.start);
                let t = end.min(cr.end);
                if s < t {
                    fbuf.extend_from_slice(&data[(s - pos) as usize..(t - pos) as usize]);
                }
                off = t;
                if t < cr.end {
                    break;
                }
                self.frame(k, &fbuf, &mut hashing, r);
                fbuf.clear();
                fk = Some(k + 1);
            }
            pos = end;
        }
        hashing.finish(r);
        Ok(())
    }

    fn block_finding(&self, i: usize, got: &[u8; 16]) -> Mismatch {
        let mut m = self.finding(
            "block-md5",
            format!(
                "block {i} MD5 is {}, manifest says {}",
                crate::store::b64(got),
                self.p.blocks[i].md5
            ),
            self.paths_of_comp(&self.block_range(i)),
        );
        m.block = Some(i);
        m.block_id = Some(self.p.blocks[i].id.clone());
        m
    }

    /// Decode frame `k` (compressed bytes `comp`) and feed it to the hashes.
    fn frame(&self, k: usize, comp: &[u8], hashing: &mut Hashing<'_>, r: &mut PackResult) {
        let raw = self.p.frames_raw_range(k, k);
        let want = raw.end - raw.start;
        let opened;
        let comp = match &self.key {
            None => comp,
            Some(key) => {
                let last = k + 1 == self.p.frames.len();
                match key.open_frame(&self.p.id, k as u64, last, comp) {
                    Ok(c) => {
                        opened = c;
                        &opened[..]
                    }
                    Err(e) => {
                        r.mismatches.push(self.finding(
                            "frame-tag",
                            format!(
                                "frame {k} (uncompressed bytes {}..{}, compressed {}..{}): {}",
                                raw.start,
                                raw.end,
                                self.p.frames_comp_range(k, k).start,
                                self.p.frames_comp_range(k, k).end,
                                e.message()
                            ),
                            self.paths_overlapping(&raw),
                        ));
                        hashing.frame(&raw, None, r);
                        return;
                    }
                }
            }
        };
        match decode_frame(self.p, comp, want) {
            Ok(data) => hashing.frame(&raw, Some(&data), r),
            Err(why) => {
                r.mismatches.push(self.finding(
                    "decompress",
                    format!(
                        "frame {k} (uncompressed bytes {}..{}, compressed {}..{}) does not decompress: {why}",
                        raw.start,
                        raw.end,
                        self.p.frames_comp_range(k, k).start,
                        self.p.frames_comp_range(k, k).end
                    ),
                    self.paths_overlapping(&raw),
                ));
                hashing.frame(&raw, None, r);
            }
        }
    }
}

/// Decompress one frame that must yield exactly `want` bytes (reading at most one byte
/// more, so a corrupt frame cannot inflate without bound).
fn decode_frame(p: &PackRecord, comp: &[u8], want: u64) -> std::result::Result<Vec<u8>, String> {
    let dec = decoder(p.codec, comp).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(want.min(64 << 20) as usize);
    dec.take(want.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 != want {
        return Err(format!(
            "it decompresses to {}{} bytes, the frame table says {want}",
            out.len(),
            if out.len() as u64 > want { "+" } else { "" }
        ));
    }
    Ok(out)
}

struct Active {
    /// Index into `Hashing::cands`.
    i: usize,
    h: Sha256,
    /// Some of its bytes were in a frame that did not decompress.
    damaged: bool,
}

/// SHA-256s of the files a span holds, fed frame by frame.
struct Hashing<'a> {
    scan: &'a PackScan<'a>,
    cands: Vec<&'a Entry>,
    next: usize,
    active: Vec<Active>,
    whole: bool,
}

impl<'a> Hashing<'a> {
    fn new(scan: &'a PackScan<'a>, raw: Option<Range<u64>>, whole: bool) -> Self {
        let cands = match raw {
            None => vec![],
            Some(_) if whole => scan.files.clone(),
            Some(raw) => {
                let from = scan.files.partition_point(|e| e.data_offset < raw.start);
                scan.files[from..]
                    .iter()
                    .take_while(|e| e.data_offset < raw.end)
                    .filter(|e| e.data_offset.saturating_add(e.size) <= raw.end)
                    .copied()
                    .collect()
            }
        };
        Self {
            scan,
            cands,
            next: 0,
            active: Vec::new(),
            whole,
        }
    }

    /// The frame holding uncompressed `raw` decoded to `data` (`None`: it did not).
    fn frame(&mut self, raw: &Range<u64>, data: Option<&[u8]>, r: &mut PackResult) {
        while self.next < self.cands.len() && self.cands[self.next].data_offset < raw.end {
            self.active.push(Active {
                i: self.next,
                h: Sha256::new(),
                damaged: false,
            });
            self.next += 1;
        }
        let cands = &self.cands;
        let scan = self.scan;
        self.active.retain_mut(|a| {
            let e = cands[a.i];
            let end = e.data_offset.saturating_add(e.size);
            let s = e.data_offset.max(raw.start);
            let t = end.min(raw.end);
            if s < t {
                match data {
                    Some(d) => {
                        a.h.update(&d[(s - raw.start) as usize..(t - raw.start) as usize])
                    }
                    None => a.damaged = true,
                }
            }
            if end > raw.end {
                return true;
            }
            if !a.damaged {
                r.entries += 1;
                let got = hex::encode(std::mem::take(&mut a.h).finalize());
                if Some(got.as_str()) != e.sha256.as_deref() {
                    r.mismatches
                        .push(super::sha_mismatch(scan.p, scan.blob, e, &got));
                }
            }
            false
        });
    }

    /// End of the span: in a whole-pack read, files still open reach past the pack's end.
    fn finish(self, r: &mut PackResult) {
        if !self.whole {
            return;
        }
        let left: Vec<&Entry> = self
            .active
            .iter()
            .filter(|a| !a.damaged)
            .map(|a| self.cands[a.i])
            .chain(self.cands[self.next..].iter().copied())
            .collect();
        if left.is_empty() {
            return;
        }
        r.mismatches.push(
            self.scan.finding(
                "decompress",
                format!(
                    "the pack ends ({} uncompressed bytes) inside the data of {} file(s)",
                    self.scan.p.raw_size,
                    left.len()
                ),
                (
                    left.iter()
                        .take(MAX_PATHS)
                        .map(|e| e.path.display())
                        .collect(),
                    left.len(),
                ),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::codec::Codec;
    use crate::store::Tier;

    fn pack(frames: Vec<(u64, u64)>) -> PackRecord {
        PackRecord {
            id: "p".into(),
            blob: "packs/p.tar.zst".into(),
            codec: Codec::Zstd,
            size: 300,
            raw_size: 3000,
            md5: String::new(),
            tier: Tier::Hot,
            frames,
            blocks: vec![],
        }
    }

    #[test]
    fn unusable_frame_tables_are_named_not_indexed() {
        assert!(frame_table_problem(&pack(vec![(0, 0), (1000, 100), (2000, 200)])).is_none());
        for bad in [
            vec![],
            vec![(5, 0)],
            vec![(0, 0), (1000, 100), (1000, 200)],
            vec![(0, 0), (1000, 100), (900, 200)],
            vec![(0, 0), (3000, 100)],
            vec![(0, 0), (1000, 300)],
        ] {
            assert!(frame_table_problem(&pack(bad.clone())).is_some(), "{bad:?}");
        }
    }
}
