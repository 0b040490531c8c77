//! Packs: a tar stream → independent compressed frames → MD5-checked blocks.
//!
//! A pack is one block blob. Its content is a tar stream (GNU format, written by
//! [`tarball`]) compressed as a sequence of independent frames ([`frame`]): gzip members
//! or zstd frames. Concatenated members are one valid `.gz` (and frames one valid
//! `.zst`), so `tar xzf pack.tar.gz` / `tar --zstd -xf pack.tar.zst` extracts any pack
//! without blobpipe. A frame ends every `frame_size` uncompressed bytes, so a restore
//! reads and decompresses only the frames that hold the entries it wants ([`read`]).
//!
//! [`writer`] cuts the compressed stream into blocks and hands them to a sink;
//! [`packer`] opens a pack under a deterministic id and closes it by draining its blocks
//! and committing the block list.

pub mod codec;
pub mod frame;
pub mod packer;
pub mod read;
pub mod stored;
pub mod tarball;
pub mod writer;
