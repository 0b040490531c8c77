//! Space accounting for `prune`: how much of each pack the remaining snapshots still use,
//! and which partly used packs `--max-unused` repacks.
//!
//! Incrementals share packs: an unchanged file keeps its old location, a chunked file
//! reuses its parent's chunks, a table range its parent's CSV chunks. So the same tar
//! record is listed by many snapshots, and summing per snapshot would count it many
//! times. The accounting therefore collects every referenced record as an extent
//! `(pack, start, end)`, sorts and deduplicates them, and sums per pack. The extents are
//! sorted in memory up to a configured number ([`ExtentSorter`]), beyond that in sorted
//! runs spilled to a temporary directory and merged: memory stays bounded whatever the
//! number of files, chunks or snapshots (the per-pack table grows with packs, as prune's
//! reference set always has). A segment shared by several manifests is read once.
//!
//! "Used" and "unused" stored bytes are estimates: a pack's compressed size split in
//! proportion to the uncompressed bytes its live records cover (frames compress mixed
//! records together, so no exact per-record compressed size exists).

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::catalog;
use crate::manifest::codec::Codec;
use crate::manifest::layout::Layout;
use crate::manifest::segment::EntryReader;
use crate::manifest::{Entry, EntryKind, Manifest, PackRecord};
use crate::store::{BlobStore, Tier};

/// Extents sorted in memory before a run is spilled (20 bytes each: 20 MiB).
pub const DEFAULT_SORT_BUFFER: usize = 1 << 20;

/// The two zero blocks that end every pack's tar stream: never "unused".
const TAR_END: u64 = 1024;

/// One referenced tar record: pack index, uncompressed start and end.
pub type Extent = (u32, u64, u64);

const EXTENT_BYTES: usize = 20;

fn put(w: &mut impl Write, e: Extent) -> std::io::Result<()> {
    w.write_all(&e.0.to_le_bytes())?;
    w.write_all(&e.1.to_le_bytes())?;
    w.write_all(&e.2.to_le_bytes())
}

fn get(r: &mut impl Read) -> std::io::Result<Option<Extent>> {
    let mut b = [0u8; EXTENT_BYTES];
    match r.read_exact(&mut b) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
    Ok(Some((u32_at(0), u64_at(4), u64_at(12))))
}

/// A temporary directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("blobpipe-prune-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sorts and deduplicates extents in bounded memory: at most `cap` in memory, the rest
/// in sorted runs on disk, merged by [`ExtentSorter::finish`].
#[derive(Debug)]
pub struct ExtentSorter {
    cap: usize,
    buf: Vec<Extent>,
    dir: Option<TempDir>,
    runs: Vec<PathBuf>,
}

/// The sorted, deduplicated extents, readable any number of times.
#[derive(Debug)]
pub enum Sorted {
    /// Everything fitted in memory.
    Memory(Vec<Extent>),
    /// Merged into one file.
    File {
        /// Keeps the file's directory alive (removed on drop).
        _dir: TempDir,
        /// The file.
        path: PathBuf,
    },
}

fn io_err(e: std::io::Error) -> Error {
    Error::internal(format!("prune's temporary sort files: {e}"))
}

impl ExtentSorter {
    /// A sorter holding at most `cap` extents in memory (at least 2).
    pub fn new(cap: usize) -> Self {
        ExtentSorter {
            cap: cap.max(2),
            buf: Vec::new(),
            dir: None,
            runs: Vec::new(),
        }
    }

    /// Runs spilled to disk so far.
    pub fn spilled_runs(&self) -> usize {
        self.runs.len()
    }

    /// Add one extent.
    ///
    /// # Errors
    /// `Internal` when a run cannot be written.
    pub fn push(&mut self, e: Extent) -> Result<()> {
        self.buf.push(e);
        if self.buf.len() >= self.cap {
            self.buf.sort_unstable();
            self.buf.dedup();
            // Deduplication often frees most of the buffer (shared records): spill only
            // when it stays more than half full.
            if self.buf.len() * 2 > self.cap {
                self.spill()?;
            }
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        if self.dir.is_none() {
            self.dir = Some(TempDir::new().map_err(io_err)?);
        }
        let dir = self.dir.as_ref().map(|d| d.0.clone()).unwrap_or_default();
        let path = dir.join(format!("run-{}", self.runs.len()));
        let mut w = BufWriter::new(std::fs::File::create(&path).map_err(io_err)?);
        for e in self.buf.drain(..) {
            put(&mut w, e).map_err(io_err)?;
        }
        w.flush().map_err(io_err)?;
        self.runs.push(path);
        Ok(())
    }

    /// Sort what is left and merge it with the spilled runs.
    ///
    /// # Errors
    /// `Internal` when the runs cannot be read or the result written.
    pub fn finish(mut self) -> Result<Sorted> {
        self.buf.sort_unstable();
        self.buf.dedup();
        if self.runs.is_empty() {
            return Ok(Sorted::Memory(self.buf));
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        let Some(dir) = self.dir.take() else {
            return Err(Error::internal("spilled runs without a directory"));
        };
        let mut readers = Vec::new();
        let mut heap = BinaryHeap::new();
        for (i, p) in self.runs.iter().enumerate() {
            let mut r = BufReader::new(std::fs::File::open(p).map_err(io_err)?);
            if let Some(e) = get(&mut r).map_err(io_err)? {
                heap.push(std::cmp::Reverse((e, i)));
            }
            readers.push(r);
        }
        let path = dir.0.join("merged");
        let mut w = BufWriter::new(std::fs::File::create(&path).map_err(io_err)?);
        let mut last: Option<Extent> = None;
        while let Some(std::cmp::Reverse((e, i))) = heap.pop() {
            if last != Some(e) {
                put(&mut w, e).map_err(io_err)?;
                last = Some(e);
            }
            if let Some(n) = get(&mut readers[i]).map_err(io_err)? {
                heap.push(std::cmp::Reverse((n, i)));
            }
        }
        w.flush().map_err(io_err)?;
        for p in &self.runs {
            let _ = std::fs::remove_file(p);
        }
        Ok(Sorted::File { _dir: dir, path })
    }
}

impl Sorted {
    /// Every extent in order, once.
    ///
    /// # Errors
    /// `Internal` when the merged file cannot be opened (or, per item, read).
    pub fn iter(&self) -> Result<Box<dyn Iterator<Item = Result<Extent>> + Send + '_>> {
        match self {
            Sorted::Memory(v) => Ok(Box::new(v.iter().map(|e| Ok(*e)))),
            Sorted::File { path, .. } => {
                let mut r = BufReader::new(std::fs::File::open(path).map_err(io_err)?);
                Ok(Box::new(std::iter::from_fn(move || {
                    get(&mut r).map_err(io_err).transpose()
                })))
            }
        }
    }

    /// Call `f` with every extent in order, once.
    ///
    /// # Errors
    /// What [`Sorted::iter`] or `f` return.
    pub fn for_each(&self, mut f: impl FnMut(Extent) -> Result<()>) -> Result<()> {
        for e in self.iter()? {
            f(e?)?;
        }
        Ok(())
    }
}

/// What the accounting keeps of a referenced pack.
#[derive(Debug, Clone)]
pub struct PackUse {
    /// Pack id.
    pub id: String,
    /// Codec.
    pub codec: Codec,
    /// Tier at commit.
    pub tier: Tier,
    /// Stored (compressed) bytes.
    pub size: u64,
    /// Uncompressed tar bytes.
    pub raw_size: u64,
    /// Uncompressed bytes of the records some remaining snapshot references.
    pub live_raw: u64,
    /// Referenced by a snapshot under an immutability policy or legal hold.
    pub protected: bool,
}

impl PackUse {
    /// Uncompressed bytes no remaining snapshot references.
    pub fn unused_raw(&self) -> u64 {
        self.raw_size
            .saturating_sub(TAR_END)
            .saturating_sub(self.live_raw)
    }

    /// Estimated stored bytes no remaining snapshot references.
    pub fn unused_bytes(&self) -> u64 {
        let content = self.raw_size.saturating_sub(TAR_END);
        if content == 0 {
            return 0;
        }
        ((u128::from(self.size) * u128::from(self.unused_raw())) / u128::from(content)) as u64
    }
}

/// The space accounting of a pipeline's remaining snapshots.
#[derive(Debug)]
pub struct Usage {
    /// Referenced packs, by index.
    pub packs: Vec<PackUse>,
    /// Every referenced record, sorted by pack index and offset.
    pub extents: Sorted,
    /// Distinct records referenced.
    pub records: u64,
    /// Runs the sort spilled to disk.
    pub spilled_runs: u64,
    /// Segments read (each shared segment once).
    pub segments_read: u64,
}

/// The space accounting as reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpaceUsage {
    /// Packs some remaining snapshot references.
    pub packs: u64,
    /// Of those, packs with records nothing references.
    pub packs_partly_used: u64,
    /// Their stored bytes.
    pub stored_bytes: u64,
    /// Stored bytes of referenced records (estimated, see the module docs).
    pub used_bytes: u64,
    /// Stored bytes of records nothing references, inside referenced packs (estimated).
    pub unused_bytes: u64,
    /// `unused_bytes / stored_bytes`.
    pub unused_share: f64,
    /// Distinct tar records referenced.
    pub records: u64,
    /// Segments read.
    pub segments_read: u64,
    /// Sorted runs spilled to disk while counting.
    pub spilled_runs: u64,
}

impl Usage {
    /// Totals for the report.
    pub fn summary(&self) -> SpaceUsage {
        let mut s = SpaceUsage {
            packs: self.packs.len() as u64,
            records: self.records,
            segments_read: self.segments_read,
            spilled_runs: self.spilled_runs,
            ..Default::default()
        };
        for p in &self.packs {
            s.stored_bytes += p.size;
            let u = p.unused_bytes();
            s.unused_bytes += u;
            if p.unused_raw() > 0 {
                s.packs_partly_used += 1;
            }
        }
        s.used_bytes = s.stored_bytes - s.unused_bytes;
        s.unused_share = share(s.unused_bytes, s.stored_bytes);
        s
    }
}

/// `part / whole`, 0 for an empty whole.
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The uncompressed spans of `e`'s tar record(s) in their packs: `(pack, start, end)`.
fn extents_of(e: &Entry) -> impl Iterator<Item = (&str, u64, u64)> {
    let padded = |size: u64| size.div_ceil(512) * 512;
    let data = if e.kind == EntryKind::File {
        padded(e.size)
    } else {
        0
    };
    e.pack
        .as_deref()
        .map(|p| (p, e.offset, e.data_offset + data))
        .into_iter()
        .chain(
            e.chunks
                .iter()
                .map(move |c| (c.pack.as_str(), c.offset, c.data_offset + padded(c.size))),
        )
}

struct Counter {
    index: HashMap<String, u32>,
    packs: Vec<PackUse>,
    sorter: ExtentSorter,
    seen_segments: HashSet<String>,
    segments_read: u64,
}

impl Counter {
    fn add_packs(&mut self, m: &Manifest, protected: bool) {
        for p in &m.packs {
            let i = *self.index.entry(p.id.clone()).or_insert_with(|| {
                self.packs.push(PackUse {
                    id: p.id.clone(),
                    codec: p.codec,
                    tier: p.tier,
                    size: p.size,
                    raw_size: p.raw_size,
                    live_raw: 0,
                    protected: false,
                });
                (self.packs.len() - 1) as u32
            });
            self.packs[i as usize].protected |= protected;
        }
    }

    fn add_entries(&mut self, entries: &[Entry]) -> Result<()> {
        for (p, a, b) in entries.iter().flat_map(extents_of) {
            // Validation put every location inside a listed pack.
            let Some(&i) = self.index.get(p) else {
                return Err(Error::integrity(format!(
                    "an entry refers to pack {p}, which its manifest does not list"
                )));
            };
            self.sorter.push((i, a, b))?;
        }
        Ok(())
    }
}

/// Count what every snapshot in `ids` references (manifests read through their moved
/// records, each distinct segment once), sorting at most `sort_buffer` extents in
/// memory. Packs of snapshots in `protected` are marked.
///
/// # Errors
/// `Integrity` for a damaged manifest or segment (nothing can be decided then), store
/// errors.
pub async fn measure(
    store: &dyn BlobStore,
    layout: &Layout,
    ids: &[String],
    protected: &HashSet<String>,
    sort_buffer: usize,
) -> Result<Usage> {
    let mut c = Counter {
        index: HashMap::new(),
        packs: Vec::new(),
        sorter: ExtentSorter::new(sort_buffer),
        seen_segments: HashSet::new(),
        segments_read: 0,
    };
    for id in ids {
        let m = match catalog::read(store, layout, id).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(e),
            // Forgotten meanwhile (prune holds the lock; a dry run does not).
            Err(e) if e.kind() == crate::error::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        c.add_packs(&m, protected.contains(id));
        c.add_entries(&m.entries)?;
        let mut reader = EntryReader::new(store, layout, &m);
        for (i, s) in m.segments.iter().enumerate() {
            if !c.seen_segments.insert(s.sha256.clone()) {
                continue;
            }
            let entries = reader.read_segment(i, false).await?;
            c.segments_read += 1;
            c.add_entries(&entries)?;
        }
    }
    let spilled_runs = c.sorter.spilled_runs() as u64;
    let extents = c.sorter.finish()?;
    let mut records = 0u64;
    let mut cur: Option<(u32, u64)> = None;
    let packs = &mut c.packs;
    extents.for_each(|(i, a, b)| {
        records += 1;
        // Union of intervals per pack (records never overlap but a damaged list could).
        let from = match cur {
            Some((ci, end)) if ci == i => a.max(end),
            _ => a,
        };
        if b > from {
            if let Some(p) = packs.get_mut(i as usize) {
                p.live_raw += b - from;
            }
        }
        let end = match cur {
            Some((ci, end)) if ci == i => end.max(b),
            _ => b,
        };
        cur = Some((i, end));
        Ok(())
    })?;
    Ok(Usage {
        packs: c.packs,
        extents,
        records,
        spilled_runs,
        segments_read: c.segments_read,
    })
}

/// Full records of the packs `want` names, from the snapshots' pack tables (manifest
/// heads only, read through their moved records), stopping once all are found.
///
/// # Errors
/// As [`measure`].
pub async fn pack_records(
    store: &dyn BlobStore,
    layout: &Layout,
    ids: &[String],
    want: &HashSet<String>,
) -> Result<HashMap<String, PackRecord>> {
    let mut out = HashMap::new();
    for id in ids.iter().rev() {
        if out.len() == want.len() {
            break;
        }
        let m = match catalog::read(store, layout, id).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(e),
            Err(e) if e.kind() == crate::error::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for p in m.packs {
            if want.contains(&p.id) && !out.contains_key(&p.id) {
                out.insert(p.id.clone(), p);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_sort_equals_an_in_memory_sort() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut all = Vec::new();
        let mut s = ExtentSorter::new(7);
        for _ in 0..500 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let e = ((x % 5) as u32, x % 97 * 512, x % 97 * 512 + 512);
            all.push(e);
            s.push(e).unwrap();
        }
        assert!(s.spilled_runs() > 1, "the test must exercise spilling");
        all.sort_unstable();
        all.dedup();
        let sorted = s.finish().unwrap();
        let dir = match &sorted {
            Sorted::File { path, .. } => path.parent().unwrap().to_path_buf(),
            Sorted::Memory(_) => panic!("expected a spilled sort"),
        };
        let mut got = Vec::new();
        sorted
            .for_each(|e| {
                got.push(e);
                Ok(())
            })
            .unwrap();
        assert_eq!(got, all);
        drop(sorted);
        assert!(!dir.exists(), "the temporary directory is removed");
    }

    #[test]
    fn unused_share_is_proportional_and_ignores_the_tar_end() {
        let p = PackUse {
            id: "a".into(),
            codec: Codec::Zstd,
            tier: Tier::Hot,
            size: 1000,
            raw_size: 4096 + TAR_END,
            live_raw: 1024,
            protected: false,
        };
        assert_eq!(p.unused_raw(), 3072);
        assert_eq!(p.unused_bytes(), 750);
        let full = PackUse {
            live_raw: 4096,
            ..p
        };
        assert_eq!(full.unused_bytes(), 0);
    }
}
