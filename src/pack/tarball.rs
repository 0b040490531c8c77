//! Writing entries into a pack's tar stream, recording where each one lands.
//!
//! GNU tar format via the `tar` crate (long names and link targets as GNU extensions,
//! large sizes in base-256), so GNU tar reads every pack. Each append returns the
//! uncompressed offsets of the entry's header and data; the manifest keeps them so a
//! restore can find the entry without scanning.
//!
//! A file is read through [`ExactReader`], which emits exactly the size written in the
//! header whatever the file does meanwhile (pads with zeros if it shrank, stops if it
//! grew) and hashes what it emits: the archive stays valid and the recorded SHA-256 always
//! matches the stored bytes. The caller compares metadata before and after to decide
//! whether the file changed while being read.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use super::writer::{BlockSink, PackWriter};
use crate::manifest::PathBytes;

/// Where an appended entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Uncompressed offset of the (first) header.
    pub offset: u64,
    /// Uncompressed offset of the data.
    pub data_offset: u64,
}

/// Metadata for a tar header.
#[derive(Debug, Clone, Copy)]
pub struct HeaderMeta {
    /// Permission bits.
    pub mode: u32,
    /// Seconds since the epoch (negative clamps to 0 in tar; the manifest keeps the truth).
    pub mtime: i64,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

fn header(kind: tar::EntryType, size: u64, m: &HeaderMeta) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(m.mode & 0o7777);
    h.set_mtime(m.mtime.max(0) as u64);
    h.set_uid(u64::from(m.uid));
    h.set_gid(u64::from(m.gid));
    h
}

type Builder<S> = tar::Builder<PackWriter<S>>;

/// Append a header whose name (and link name) are written as raw bytes, with GNU
/// `L`/`K` extension records when longer than the 100-byte fields. The `tar` crate's own
/// path setters validate paths as `Path`s and reject legal oddities (a symlink to `.`),
/// so names are written here exactly as stored.
fn append_raw<W: Write, R: Read>(
    b: &mut tar::Builder<W>,
    mut h: tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: R,
) -> io::Result<()> {
    /// Write `value` into the 100-byte header `field`, cut to fit, preceded by a GNU
    /// `kind` extension record holding all of it when it is longer.
    fn put<W: Write>(
        b: &mut tar::Builder<W>,
        kind: tar::EntryType,
        value: &[u8],
        field: &mut [u8; 100],
    ) -> io::Result<()> {
        if value.len() > 100 {
            let mut k = tar::Header::new_gnu();
            k.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            k.set_mode(0o644);
            k.set_mtime(0);
            k.set_entry_type(kind);
            let mut v = value.to_vec();
            v.push(0);
            k.set_size(v.len() as u64);
            k.set_cksum();
            b.append(&k, &v[..])?;
        }
        let n = value.len().min(100);
        *field = [0; 100];
        field[..n].copy_from_slice(&value[..n]);
        Ok(())
    }
    put(
        b,
        tar::EntryType::GNULongName,
        name,
        &mut h.as_old_mut().name,
    )?;
    if let Some(link) = link {
        put(
            b,
            tar::EntryType::GNULongLink,
            link,
            &mut h.as_old_mut().linkname,
        )?;
    }
    h.set_cksum();
    b.append(&h, data)
}

/// Append a directory entry.
///
/// # Errors
/// I/O errors from the pack writer.
pub fn append_dir<S: BlockSink>(
    b: &mut Builder<S>,
    path: &PathBytes,
    m: &HeaderMeta,
) -> io::Result<Placed> {
    let start = b.get_ref().raw_offset();
    let mut name = path.0.clone();
    name.push(b'/');
    append_raw(
        b,
        header(tar::EntryType::Directory, 0, m),
        &name,
        None,
        io::empty(),
    )?;
    let end = b.get_ref().raw_offset();
    Ok(Placed {
        offset: start,
        data_offset: end,
    })
}

/// Append a symlink entry (the link itself, never its target's content).
///
/// # Errors
/// I/O errors from the pack writer.
pub fn append_symlink<S: BlockSink>(
    b: &mut Builder<S>,
    path: &PathBytes,
    target: &PathBytes,
    m: &HeaderMeta,
) -> io::Result<Placed> {
    let start = b.get_ref().raw_offset();
    let h = header(tar::EntryType::Symlink, 0, m);
    append_raw(b, h, &path.0, Some(&target.0), io::empty())?;
    let end = b.get_ref().raw_offset();
    Ok(Placed {
        offset: start,
        data_offset: end,
    })
}

/// What reading a file produced.
#[derive(Debug, Clone)]
pub struct FileRead {
    /// SHA-256 of the stored bytes.
    pub sha256: [u8; 32],
    /// The file ended before `size` bytes (zeros were stored in its place).
    pub shrank: bool,
    /// The file had more than `size` bytes (the rest was not stored).
    pub grew: bool,
}

/// Append a regular file of `size` bytes read from `src`.
///
/// # Errors
/// I/O errors from reading the source or writing the pack.
pub fn append_file<S: BlockSink, R: Read>(
    b: &mut Builder<S>,
    path: &PathBytes,
    size: u64,
    m: &HeaderMeta,
    src: R,
) -> io::Result<(Placed, FileRead)> {
    let start = b.get_ref().raw_offset();
    let h = header(tar::EntryType::Regular, size, m);
    let mut r = ExactReader::new(src, size);
    append_raw(b, h, &path.0, None, &mut r)?;
    let end = b.get_ref().raw_offset();
    let padded = size.div_ceil(512) * 512;
    let read = r.finish()?;
    Ok((
        Placed {
            offset: start,
            data_offset: end - padded,
        },
        read,
    ))
}

/// The tar header (with its GNU long-name record, if any) of a regular file of `size`
/// bytes, as [`append_file`] writes it: for a pack whose data blocks the store stages
/// from elsewhere (`pack::stored`).
///
/// # Errors
/// I/O errors (none expected: it writes into memory).
pub fn file_header(path: &PathBytes, size: u64, m: &HeaderMeta) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let h = header(tar::EntryType::Regular, size, m);
    // No data: the builder writes the header records only.
    append_raw(&mut b, h, &path.0, None, io::empty())?;
    let out = b.get_ref().clone();
    Ok(out)
}

/// Append a regular file whose bytes are already in memory and already hashed by the
/// caller (a content-defined chunk): no second hash, no size check.
///
/// # Errors
/// I/O errors writing the pack.
pub fn append_bytes<S: BlockSink>(
    b: &mut Builder<S>,
    path: &PathBytes,
    data: &[u8],
    m: &HeaderMeta,
) -> io::Result<Placed> {
    let start = b.get_ref().raw_offset();
    let size = data.len() as u64;
    let h = header(tar::EntryType::Regular, size, m);
    append_raw(b, h, &path.0, None, data)?;
    let end = b.get_ref().raw_offset();
    Ok(Placed {
        offset: start,
        data_offset: end - size.div_ceil(512) * 512,
    })
}

/// Reads exactly `size` bytes from a source that may change underneath, hashing them.
pub struct ExactReader<R> {
    inner: R,
    left: u64,
    hasher: Sha256,
    shrank: bool,
    eof: bool,
}

impl<R: Read> ExactReader<R> {
    /// Wrap `inner`, emitting exactly `size` bytes.
    pub fn new(inner: R, size: u64) -> Self {
        Self {
            inner,
            left: size,
            hasher: Sha256::new(),
            shrank: false,
            eof: false,
        }
    }

    /// Drain any remainder (zero-padding) and report.
    ///
    /// # Errors
    /// Read errors while probing for growth.
    pub fn finish(mut self) -> io::Result<FileRead> {
        let mut sink = [0u8; 8192];
        while self.left > 0 {
            let n = self.read(&mut sink)?;
            if n == 0 {
                break;
            }
        }
        let grew = if self.eof {
            false
        } else {
            let mut one = [0u8; 1];
            loop {
                match self.inner.read(&mut one) {
                    Ok(n) => break n > 0,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(FileRead {
            sha256: self.hasher.finalize().into(),
            shrank: self.shrank,
            grew,
        })
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = if self.eof {
            0
        } else {
            loop {
                match self.inner.read(&mut buf[..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        let n = if n == 0 {
            self.eof = true;
            self.shrank = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Write the two zero blocks that end a tar archive and return the pack writer.
///
/// # Errors
/// I/O errors from the pack writer.
pub fn finish<S: BlockSink>(b: Builder<S>) -> io::Result<PackWriter<S>> {
    let mut w = b.into_inner()?;
    w.flush()?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::codec::Codec;
    use crate::pack::frame::{decompress, FrameCompressor};
    use crate::pack::writer::BlockSizer;

    #[test]
    fn exact_reader_pads_and_detects_growth() {
        let mut r = ExactReader::new(&b"abc"[..], 5);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        assert!(r.finish().unwrap().shrank);
        let mut r = ExactReader::new(&b"abcdef"[..], 3);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
        let f = r.finish().unwrap();
        assert!(f.grew && !f.shrank);
    }

    #[test]
    fn offsets_point_at_data_and_tar_reads_it() {
        let w = PackWriter::new(
            FrameCompressor::new(Codec::Gzip, 1).unwrap(),
            4096,
            BlockSizer::new(64 << 10, None),
            Vec::new(),
        );
        let mut b = tar::Builder::new(w);
        let m = HeaderMeta {
            mode: 0o640,
            mtime: 1_700_000_000,
            uid: 1,
            gid: 1,
        };
        let long = PathBytes(format!("{}/f.txt", "d".repeat(150)).into_bytes());
        let body = vec![7u8; 10_000];
        let (p, r) = append_file(&mut b, &long, body.len() as u64, &m, &body[..]).unwrap();
        assert!(!r.shrank && !r.grew);
        // A chunk entry with a long name: placed right after the file.
        let chunk_name =
            PathBytes(format!("{}.chunks/{}", long.display(), "a".repeat(64)).into_bytes());
        let chunk = vec![9u8; 1000];
        let c = append_bytes(&mut b, &chunk_name, &chunk, &m).unwrap();
        append_symlink(
            &mut b,
            &PathBytes(b"l".to_vec()),
            &PathBytes(b"x/y".to_vec()),
            &m,
        )
        .unwrap();
        let w = finish(b).unwrap();
        let (_, blocks) = w.finish().unwrap();
        let comp: Vec<u8> = blocks.iter().flat_map(|b| b.data.to_vec()).collect();
        let raw = decompress(Codec::Gzip, &comp, None).unwrap();
        assert_eq!(
            &raw[p.data_offset as usize..p.data_offset as usize + body.len()],
            &body[..]
        );
        assert_eq!(
            &raw[c.data_offset as usize..c.data_offset as usize + chunk.len()],
            &chunk[..]
        );
        assert!(c.offset < c.data_offset);
        let mut a = tar::Archive::new(&raw[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            vec![long.display(), chunk_name.display(), "l".to_string()]
        );
    }
}
