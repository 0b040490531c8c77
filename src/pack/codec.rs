//! Compression settings of packs: the codec and its checked level and frame size.
//!
//! The codec is part of the format: manifests record it and pack names carry its
//! extension, so `manifest`, `pack` and the restore path all read it from here.

use serde::{Deserialize, Serialize};

/// Compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Independent gzip members (`.tar.gz`).
    Gzip,
    /// Independent zstd frames (`.tar.zst`).
    Zstd,
}

impl Codec {
    /// Pack file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Gzip => "tar.gz",
            Codec::Zstd => "tar.zst",
        }
    }
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }
}

/// Checked compression settings.
#[derive(Debug, Clone, Copy)]
pub struct CompressionConfig {
    /// Codec.
    pub codec: Codec,
    /// Level (gzip 0–9, zstd 1–22).
    pub level: i32,
    /// Uncompressed bytes per independent frame.
    pub frame_size: usize,
}
