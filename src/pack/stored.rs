//! Stored packs: one large file whose bytes the storage service copies into the pack
//! itself (Put Block From URL), so they never pass through this process.
//!
//! A stored pack is an uncompressed tar stream (`.tar`, codec `stored`) holding exactly
//! one regular file, cut into blocks on purpose:
//!
//! - block 0: the file's tar header (with its GNU long-name record), staged from here;
//! - blocks 1..=n: the file's data, each a range of the source blob that the service reads
//!   through `source` (a URL with a read SAS) and stages; the service answers with the
//!   MD5 of what it staged, which becomes the block's recorded MD5;
//! - block n+1: the zero padding of the last data record and the two zero records that end
//!   a tar archive, staged from here.
//!
//! Its frames are identity frames, one per block, so ranged restore reads it like any
//! pack. Nothing here reads the data, so there is no SHA-256 of it: the entry's hash is the
//! MD5 of its data blocks' MD5s ([`crate::manifest::Entry::hasher`]), and the pack's
//! recorded `md5` is the MD5 of all its blocks' MD5s (the blob gets no Content-MD5, which
//! would have to be the MD5 of its bytes).

use bytes::Bytes;
use md5::{Digest, Md5};

use super::packer::Packs;
use super::tarball::{self, HeaderMeta, Placed};
use super::writer::{block_id, BlockSizer};
use crate::error::{Result, ResultExt};
use crate::manifest::check::MAX_FRAME;
use crate::manifest::codec::Codec;
use crate::manifest::{BlockRecord, PackRecord, PathBytes};
use crate::store::{self, FromUrl};
use crate::support::secret::Secret;

/// A file staged server-side into a stored pack of its own.
#[derive(Debug, Clone)]
pub struct StagedFile {
    /// The committed pack.
    pub record: PackRecord,
    /// Where the file's header and data are in it.
    pub placed: Placed,
    /// MD5 (base64) of the data blocks' MD5s: the entry's hash.
    pub blocks_md5: String,
}

/// What [`Packs::stage_from_url`] did.
#[derive(Debug, Clone)]
pub enum Staging {
    /// Staged and committed.
    Done(StagedFile),
    /// Nothing committed: the store or service cannot stage from the URL (the reason,
    /// without any secret). The caller streams the file instead.
    Refused(String),
    /// Nothing committed: the source blob is no longer the version `etag` (the caller
    /// streams it, which handles a blob that changes while read).
    SourceChanged,
}

impl Packs {
    /// Stage `size` bytes of the blob at `source` (version `etag`, and only that) as the file `path`
    /// into stored pack number `seq` of `partition`, and commit the pack (create-only).
    ///
    /// # Errors
    /// Store errors once a data block went server-side (before that a failure of the
    /// operation is [`Staging::Refused`]); `Integrity` when the service's MD5 answer is
    /// malformed.
    #[allow(clippy::too_many_arguments)]
    pub fn stage_from_url(
        &self,
        partition: usize,
        seq: usize,
        path: &PathBytes,
        size: u64,
        meta: &HeaderMeta,
        source: &Secret,
        etag: &str,
    ) -> Result<Staging> {
        let block = BlockSizer::new(self.block_size, Some(size)).size_for(0) as u64;
        if block > MAX_FRAME || size == 0 {
            return Ok(Staging::Refused(format!(
                "{size} bytes need blocks of {block} bytes, more than a stored frame holds"
            )));
        }
        let (id, rel, blob, _) = self.fresh(partition, seq, Codec::Stored)?;
        let (mut blocks, mut frames) = (Vec::new(), Vec::new());
        let mut all = Md5::new();
        let mut at = 0u64;
        let mut push = |blocks: &mut Vec<BlockRecord>, id: String, len: u64, md5: [u8; 16]| {
            frames.push((at, at));
            at += len;
            all.update(md5);
            blocks.push(BlockRecord {
                id,
                size: len,
                md5: store::b64(&md5),
            });
        };
        // Block 0: the header, from here.
        let head = tarball::file_header(path, size, meta)
            .map_err(|e| super::packer::io_to_err(e, &blob))?;
        let data_offset = head.len() as u64;
        let hm = store::md5(&head);
        let hid = block_id(0, &hm);
        self.rt
            .block_on(self.store.stage_block(&blob, &hid, Bytes::from(head), hm))
            .ctx(format!("staging the header of {blob}"))?;
        push(&mut blocks, hid, data_offset, hm);
        // The data, by range, read by the service. A block id names its index and the MD5
        // of "<etag> <range>" (the data's MD5 is not known before the service answers).
        let mut data = Md5::new();
        let mut off = 0u64;
        while off < size {
            let end = (off + block).min(size);
            let k = blocks.len();
            let bid = block_id(k, &store::md5(format!("{etag} {off}-{end}").as_bytes()));
            let r = self.rt.block_on(self.store.stage_block_from_url(
                &blob,
                &bid,
                source,
                off..end,
                None,
                Some(etag),
            ));
            let md5 = match r {
                Ok(FromUrl::Staged(m)) => m,
                Ok(FromUrl::Refused(why)) if off == 0 => return Ok(Staging::Refused(why)),
                // Nothing committed; the caller reads the blob as it reads a changed one.
                Ok(FromUrl::SourceChanged) => return Ok(Staging::SourceChanged),
                // The operation itself failing before any data went server-side (Azurite
                // 3.37 answers 500 under an account SAS) is a reason to stream.
                Err(e) if off == 0 && e.kind() != crate::error::ErrorKind::Integrity => {
                    return Ok(Staging::Refused(e.to_string()))
                }
                Ok(FromUrl::Refused(why)) => {
                    return Err(crate::error::Error::new(
                        crate::error::ErrorKind::Store,
                        format!("staging {blob} from the source: {why}"),
                    )
                    .retryable())
                }
                Err(e) => return Err(e),
            };
            data.update(md5);
            push(&mut blocks, bid, end - off, md5);
            off = end;
        }
        // The padding of the last data record and the end-of-archive records, from here.
        let tail = vec![0u8; (size.next_multiple_of(512) - size) as usize + 1024];
        let tm = store::md5(&tail);
        let tid = block_id(blocks.len(), &tm);
        let tail_len = tail.len() as u64;
        self.rt
            .block_on(self.store.stage_block(&blob, &tid, Bytes::from(tail), tm))
            .ctx(format!("staging the end of {blob}"))?;
        push(&mut blocks, tid, tail_len, tm);
        let pack_md5: [u8; 16] = all.finalize().into();
        let ids: Vec<String> = blocks.iter().map(|b| b.id.clone()).collect();
        self.rt
            .block_on(self.store.commit_blocks(
                &blob,
                &ids,
                &self.commit_options(Codec::Stored, None),
            ))
            .ctx(format!("committing pack {blob}"))?;
        Ok(Staging::Done(StagedFile {
            record: PackRecord {
                id,
                blob: rel,
                codec: Codec::Stored,
                size: at,
                raw_size: at,
                md5: store::b64(&pack_md5),
                tier: self.tier,
                frames,
                blocks,
            },
            placed: Placed {
                offset: 0,
                data_offset,
            },
            blocks_md5: store::b64(&<[u8; 16]>::from(data.finalize())),
        }))
    }
}
