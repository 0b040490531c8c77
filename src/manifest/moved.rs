//! Moved records: where `prune --max-unused` put the live entries of a pack it repacked.
//!
//! Manifests and segments are create-only (and may be under an immutability policy), so
//! a repack never rewrites them. It copies the tar records still referenced out of a
//! partly used pack into new packs, then stores one **moved record** per old pack,
//! `moved/<old-pack-id>.json`: the new packs' records (frames, blocks, MD5s) and, for
//! every copied tar record, its old offset, length, new pack and new offset. The old
//! pack's blob goes in a later prune, once the record is older than the grace period.
//!
//! Every reader of a snapshot loads it through [`overlay`] (`catalog::read` does), which
//! replaces a moved pack in the manifest's pack table by the packs its record names and
//! rewrites each entry's location ([`Moved::relocate`]; segments are rewritten as
//! [`super::segment::EntryReader`] reads them). Readers therefore never see an old pack:
//! restore, verify, copy, incrementals (whose new manifests point at the new packs
//! directly) and the next repack all work on the new locations. A record may point at a
//! pack that was itself repacked later; resolution follows the chain (at most
//! [`MAX_CHAIN`] links).
//!
//! Crash safety comes from the order of writes: new packs (create-only, committed), then
//! the moved record (create-only), then, a grace period later, the old blob. A crash
//! before the record leaves unreferenced new packs (pruned after the grace); after it,
//! old and new copies both exist and readers use the new one.
//!
//! For an `[encryption]` pipeline the offsets are sealed (they tell file sizes); the new
//! packs' records stay in clear, like a manifest's pack table, so `verify --without-key`
//! can check their blocks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::check;
use super::layout::Layout;
use super::{Entry, Manifest, PackRecord};
use crate::error::{Error, Result, ResultExt};
use crate::store::{list_all, BlobStore, ListItem};

/// Format of a moved record.
pub const FORMAT: u32 = 1;

/// Longest chain of repacks a location is followed through.
pub const MAX_CHAIN: usize = 64;

/// A run of tar records copied out of an old pack, contiguous in both packs (records
/// that followed each other and were copied one after the other share one move).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// Uncompressed offset of the run (its first record's first header) in the old pack.
    pub from: u64,
    /// Bytes of the run (headers, data, padding of each record).
    pub len: u64,
    /// Index of the new pack in [`MovedRecord::into`].
    pub pack: u32,
    /// Uncompressed offset of the record in the new pack.
    pub to: u64,
}

/// Where the live entries of one repacked pack went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedRecord {
    /// The old pack's id.
    pub pack: String,
    /// When the repack stored this record.
    pub moved_at: chrono::DateTime<chrono::Utc>,
    /// The packs its records went to.
    pub into: Vec<PackRecord>,
    /// The copied records, by old offset (empty when read without the data key).
    pub moves: Vec<Move>,
}

/// A moved record as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    format: u32,
    pack: String,
    moved_at: chrono::DateTime<chrono::Utc>,
    into: Vec<PackRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moves: Option<Vec<Move>>,
    /// `[encryption]`: base64 of the sealed JSON of `moves`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

impl MovedRecord {
    /// The bytes to store as `layout.moved(&self.pack)`.
    ///
    /// # Errors
    /// `Internal` on encoding or sealing failures.
    pub fn to_stored(&self, layout: &Layout) -> Result<Vec<u8>> {
        let name = layout.moved(&self.pack);
        let (moves, sealed) = match layout.key() {
            None => (Some(self.moves.clone()), None),
            Some(_) => {
                let plain = serde_json::to_vec(&self.moves)
                    .map_err(|e| Error::internal(format!("encoding {name}: {e}")))?;
                (None, Some(crate::store::b64(&layout.seal(&name, plain)?)))
            }
        };
        serde_json::to_vec(&Stored {
            format: FORMAT,
            pack: self.pack.clone(),
            moved_at: self.moved_at,
            into: self.into.clone(),
            moves,
            sealed,
        })
        .map_err(|e| Error::internal(format!("encoding {name}: {e}")))
    }

    /// Decode and check stored record `name`. Without the data key, the sealed offsets of
    /// an encrypted record are left out (`moves` empty) when `keyless` is set.
    ///
    /// # Errors
    /// `Integrity` naming the record and what is wrong; `Config`/`WrongKey` for keys.
    pub fn from_stored(layout: &Layout, name: &str, bytes: &[u8], keyless: bool) -> Result<Self> {
        let bad = |why: String| Error::integrity(format!("moved record {name}: {why}"));
        let s: Stored = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if s.format != FORMAT {
            return Err(bad(format!(
                "format {} (this build reads {FORMAT}); upgrade blobpipe",
                s.format
            )));
        }
        if Layout::moved_id_of(name) != Some(s.pack.as_str()) {
            return Err(bad(format!(
                "names pack {:?}, not the one it is stored as",
                s.pack
            )));
        }
        let moves = match (s.moves, s.sealed) {
            (Some(m), None) if layout.key().is_none() => m,
            (Some(_), None) => {
                return Err(bad(
                    "not sealed, but the pipeline is encrypted (altered or replaced)".into(),
                ))
            }
            (None, Some(b)) => match layout.key() {
                None if keyless => Vec::new(),
                None => {
                    return Err(Error::config(format!(
                        "{name} is encrypted, but the pipeline has no [encryption] table"
                    )))
                }
                Some(_) => {
                    let sealed = crate::store::b64_decode(&b)
                        .ok_or_else(|| bad("sealed: not base64".into()))?;
                    let plain = layout.open(name, bytes::Bytes::from(sealed))?;
                    serde_json::from_slice(&plain).map_err(|e| bad(format!("moves: {e}")))?
                }
            },
            _ => return Err(bad("needs exactly one of moves and sealed".into())),
        };
        let r = MovedRecord {
            pack: s.pack,
            moved_at: s.moved_at,
            into: s.into,
            moves,
        };
        r.check().map_err(bad)?;
        Ok(r)
    }

    /// What a reader relies on: valid new pack records (not the old pack), moves in
    /// offset order, not overlapping, each inside its new pack.
    fn check(&self) -> std::result::Result<(), String> {
        if self.into.is_empty() && !self.moves.is_empty() {
            return Err("moves records but names no new pack".into());
        }
        for (k, p) in self.into.iter().enumerate() {
            if p.id == self.pack {
                return Err(format!("into {k}: the old pack itself"));
            }
            check::check_pack(p).map_err(|(f, w)| format!("into {k} ({}): {f}: {w}", p.id))?;
        }
        let mut end = 0u64;
        for (k, m) in self.moves.iter().enumerate() {
            if k > 0 && m.from < end {
                return Err(format!(
                    "move {k}: offset {} is not after the last move",
                    m.from
                ));
            }
            end = m.from.saturating_add(m.len);
            let Some(p) = self.into.get(m.pack as usize) else {
                return Err(format!(
                    "move {k}: names new pack {}, of {}",
                    m.pack,
                    self.into.len()
                ));
            };
            if m.len == 0 || m.to.saturating_add(m.len) > p.raw_size {
                return Err(format!(
                    "move {k}: {} bytes at {} do not fit in pack {} ({} bytes)",
                    m.len, m.to, p.id, p.raw_size
                ));
            }
        }
        Ok(())
    }
}

/// Moved records by old pack id (one listing of `moved/`).
///
/// # Errors
/// Store errors.
pub async fn list(store: &dyn BlobStore, layout: &Layout) -> Result<BTreeMap<String, ListItem>> {
    Ok(list_all(store, &layout.moved_all())
        .await?
        .into_iter()
        .filter_map(|i| Some((Layout::moved_id_of(&i.name)?.to_string(), i)))
        .collect())
}

/// Read pack `id`'s moved record.
///
/// # Errors
/// Store errors (`NotFound` when there is none); `Integrity` when it is damaged.
pub async fn load(
    store: &dyn BlobStore,
    layout: &Layout,
    id: &str,
    keyless: bool,
) -> Result<MovedRecord> {
    let name = layout.moved(id);
    let b = store.get(&name, None).await?;
    MovedRecord::from_stored(layout, &name, &b, keyless)
}

/// Store `r`, create-only.
///
/// # Errors
/// Store errors (a record already there is `AlreadyExists`).
pub async fn store(store: &dyn BlobStore, layout: &Layout, r: &MovedRecord) -> Result<()> {
    let name = layout.moved(&r.pack);
    store
        .put(&name, bytes::Bytes::from(r.to_stored(layout)?), true)
        .await
        .ctx(format!("storing the moved record {name}"))?;
    Ok(())
}

/// The moved records a loaded manifest was read through.
#[derive(Debug, Default)]
pub struct Moved {
    records: HashMap<String, MovedRecord>,
    /// The manifest's own records of the packs that moved (its segments still name them).
    old: Vec<PackRecord>,
}

impl Moved {
    /// The manifest's records of its packs that were repacked.
    pub fn old_packs(&self) -> &[PackRecord] {
        &self.old
    }

    /// Ids of the repacked packs (their records' names: [`Layout::moved`]).
    pub fn packs(&self) -> impl Iterator<Item = &str> {
        self.records.keys().map(String::as_str)
    }

    /// Where the `len` bytes at `offset` of `pack` are now (themselves when they never
    /// moved): the move whose span holds them, shifted by the same amount.
    fn resolve(
        &self,
        pack: &str,
        offset: u64,
        len: u64,
    ) -> std::result::Result<(String, u64), String> {
        let (mut pack, mut offset) = (pack.to_string(), offset);
        for _ in 0..=MAX_CHAIN {
            let Some(r) = self.records.get(&pack) else {
                return Ok((pack, offset));
            };
            // The last move starting at or before `offset`.
            let i = r.moves.partition_point(|m| m.from <= offset);
            let m = i
                .checked_sub(1)
                .map(|i| r.moves[i])
                .filter(|m| offset < m.from + m.len)
                .ok_or_else(|| {
                    format!("pack {pack} was repacked, but its moved record has nothing at offset {offset}")
                })?;
            if offset + len > m.from + m.len {
                return Err(format!(
                    "pack {pack} was repacked, but its moved record copied {} bytes from offset {}, the entry needs {len} from {offset}",
                    m.len, m.from
                ));
            }
            offset = m.to + (offset - m.from);
            pack = r.into[m.pack as usize].id.clone();
        }
        Err(format!("a location moved more than {MAX_CHAIN} times"))
    }

    /// Point `e` (and its chunks) at where their tar records are now.
    ///
    /// # Errors
    /// Why the records do not cover the entry.
    pub fn relocate(&self, e: &mut Entry) -> std::result::Result<(), String> {
        let data_len = |size: u64, file: bool| if file { size.div_ceil(512) * 512 } else { 0 };
        if let Some(p) = e.pack.clone() {
            let head = e.data_offset.saturating_sub(e.offset);
            let len = head + data_len(e.size, e.kind == super::EntryKind::File);
            let (np, no) = self.resolve(&p, e.offset, len)?;
            e.pack = Some(np);
            e.offset = no;
            e.data_offset = no + head;
        }
        for c in &mut e.chunks {
            let head = c.data_offset.saturating_sub(c.offset);
            let (np, no) = self.resolve(&c.pack, c.offset, head + data_len(c.size, true))?;
            c.pack = np;
            c.offset = no;
            c.data_offset = no + head;
        }
        Ok(())
    }
}

/// Read `m` through the moved records of its packs: each repacked pack in the pack table
/// is replaced by the packs its record names (following chains), and, unless `keyless`,
/// every inline entry is relocated and `m.moved` set so segment readers relocate theirs.
/// A manifest none of whose packs moved is left as it is (one listing of `moved/`).
///
/// # Errors
/// Store errors; `Integrity` naming the record (or entry) when a record is damaged or
/// does not cover an entry.
pub async fn overlay(
    store: &dyn BlobStore,
    layout: &Layout,
    m: &mut Manifest,
    keyless: bool,
) -> Result<()> {
    let listed = list(store, layout).await?;
    if !m.packs.iter().any(|p| listed.contains_key(&p.id)) {
        return Ok(());
    }
    let mut moved = Moved::default();
    for _ in 0..=MAX_CHAIN {
        let (hit, keep): (Vec<PackRecord>, Vec<PackRecord>) = std::mem::take(&mut m.packs)
            .into_iter()
            .partition(|p| listed.contains_key(&p.id));
        m.packs = keep;
        if hit.is_empty() {
            break;
        }
        for p in hit {
            let r = load(store, layout, &p.id, keyless)
                .await
                .ctx(format!("reading the moved record of pack {}", p.id))?;
            for q in &r.into {
                if !m.packs.iter().any(|x| x.id == q.id) {
                    m.packs.push(q.clone());
                }
            }
            if !moved.records.contains_key(&p.id) {
                moved.old.push(p.clone());
                moved.records.insert(p.id.clone(), r);
            }
        }
    }
    if m.packs.iter().any(|p| listed.contains_key(&p.id)) {
        return Err(Error::integrity(format!(
            "snapshot {}: its packs moved more than {MAX_CHAIN} times",
            m.header.snapshot
        )));
    }
    if !keyless {
        for e in &mut m.entries {
            moved.relocate(e).map_err(|w| {
                Error::integrity(format!(
                    "snapshot {}, entry {:?}: {w}",
                    m.header.snapshot,
                    e.path.display()
                ))
            })?;
        }
    }
    m.moved = Some(Arc::new(moved));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::manifest::codec::Codec;
    use crate::manifest::{BlockRecord, EntryKind, PathBytes};
    use crate::store::Tier;

    fn pack(id: char, raw: u64) -> PackRecord {
        let id: String = std::iter::repeat_n(id, 32).collect();
        PackRecord {
            blob: Layout::pack_rel(&id, Codec::Zstd),
            id,
            codec: Codec::Zstd,
            size: 100,
            raw_size: raw,
            md5: crate::store::b64(&[0u8; 16]),
            tier: Tier::Hot,
            frames: vec![(0, 0)],
            blocks: vec![BlockRecord {
                id: crate::store::b64(&[1u8; 8]),
                size: 100,
                md5: crate::store::b64(&[0u8; 16]),
            }],
        }
    }

    fn file(pack: &str, offset: u64, size: u64) -> Entry {
        Entry {
            path: PathBytes(b"f".to_vec()),
            kind: EntryKind::File,
            size,
            mode: 0o644,
            mtime: 0,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            sha256: Some("0".repeat(64)),
            target: None,
            pack: Some(pack.to_string()),
            offset,
            data_offset: offset + 512,
            inconsistent: false,
            ino: None,
            ctime: None,
            chunks: Vec::new(),
            blob: None,
        }
    }

    fn record(old: &PackRecord, into: Vec<PackRecord>, moves: Vec<Move>) -> MovedRecord {
        MovedRecord {
            pack: old.id.clone(),
            moved_at: chrono::Utc::now(),
            into,
            moves,
        }
    }

    #[test]
    fn relocation_follows_a_chain_and_keeps_the_header_span() {
        let (a, b, c) = (pack('a', 1 << 20), pack('b', 1 << 20), pack('c', 1 << 20));
        let mut mv = Moved::default();
        mv.records.insert(
            a.id.clone(),
            record(
                &a,
                vec![b.clone()],
                vec![Move {
                    from: 4096,
                    len: 1536,
                    pack: 0,
                    to: 0,
                }],
            ),
        );
        mv.records.insert(
            b.id.clone(),
            record(
                &b,
                vec![c.clone()],
                vec![Move {
                    from: 0,
                    len: 1536,
                    pack: 0,
                    to: 7168,
                }],
            ),
        );
        let mut e = file(&a.id, 4096, 1000);
        mv.relocate(&mut e).unwrap();
        assert_eq!(e.pack.as_deref(), Some(c.id.as_str()));
        assert_eq!((e.offset, e.data_offset), (7168, 7680));
        // An entry the record does not cover, or covers too short, is an error.
        let mut e = file(&a.id, 512, 10);
        assert!(mv
            .relocate(&mut e)
            .unwrap_err()
            .contains("nothing at offset 512"));
        let mut e = file(&a.id, 4096, 5000);
        assert!(mv.relocate(&mut e).unwrap_err().contains("the entry needs"));
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let layout = Layout::new("p");
        let (a, b) = (pack('a', 4096), pack('b', 4096));
        let r = record(
            &a,
            vec![b.clone()],
            vec![Move {
                from: 0,
                len: 1024,
                pack: 0,
                to: 512,
            }],
        );
        let name = layout.moved(&a.id);
        let bytes = r.to_stored(&layout).unwrap();
        assert_eq!(
            MovedRecord::from_stored(&layout, &name, &bytes, false).unwrap(),
            r
        );
        // Stored under another pack's name.
        let other = layout.moved(&b.id);
        assert!(MovedRecord::from_stored(&layout, &other, &bytes, false).is_err());
        // A move past the new pack's end, overlapping moves, a missing pack index.
        for moves in [
            vec![Move {
                from: 0,
                len: 4096,
                pack: 0,
                to: 512,
            }],
            vec![
                Move {
                    from: 0,
                    len: 1024,
                    pack: 0,
                    to: 0,
                },
                Move {
                    from: 512,
                    len: 512,
                    pack: 0,
                    to: 2048,
                },
            ],
            vec![Move {
                from: 0,
                len: 512,
                pack: 1,
                to: 0,
            }],
        ] {
            let bad = record(&a, vec![b.clone()], moves)
                .to_stored(&layout)
                .unwrap();
            let e = MovedRecord::from_stored(&layout, &name, &bad, false).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        }
    }
}
