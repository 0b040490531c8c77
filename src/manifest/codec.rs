//! The compression codec of a pack, as the stored format knows it.
//!
//! Manifests record each pack's codec and pack blob names carry its extension, so the
//! codec belongs to the format (here), not to the pack writer that uses it; the writer's
//! level and frame size are [`crate::pack::codec::CompressionConfig`].

use serde::{Deserialize, Serialize};

/// Compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Independent gzip members (`.tar.gz`).
    Gzip,
    /// Independent zstd frames (`.tar.zst`).
    Zstd,
    /// Uncompressed (`.tar`): a pack whose payload blocks the service staged from a
    /// source blob by URL (blob source, `server_side_min_size`). Not a `[compression]`
    /// choice; its frames are identity (raw offset = stored offset).
    Stored,
}

impl Codec {
    /// Pack file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Gzip => "tar.gz",
            Codec::Zstd => "tar.zst",
            Codec::Stored => "tar",
        }
    }
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::Stored => "stored",
        }
    }
}
