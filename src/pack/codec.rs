//! Compression settings of packs: the codec and its checked level and frame size.
//!
//! The [`Codec`] itself is part of the stored format (manifests record it, pack names
//! carry its extension), so it lives in [`crate::manifest::codec`]; this is the stage's
//! checked configuration around it.

use crate::manifest::codec::Codec;

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
