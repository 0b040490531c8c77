//! Checked verification policy: how much of a snapshot is re-read after a backup and by
//! `blobpipe verify`.

use serde::Serialize;

/// How much to verify.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "fraction")]
pub enum VerifyMode {
    /// Existence, sizes, block lists, Content-MD5.
    Metadata,
    /// Metadata plus this fraction of blocks re-read.
    Sample(f64),
    /// Every block re-read, every entry hashed.
    Full,
}

/// Checked verify policy.
#[derive(Debug, Clone, Copy)]
pub struct VerifyConfig {
    /// Mode used after a backup and by default for `verify`.
    pub mode: VerifyMode,
    /// Sampling seed (random per run when unset; the report records it).
    pub seed: Option<u64>,
    /// Run verification right after every backup.
    pub after_backup: bool,
    /// Scale-out: stored bytes of packs one verify message covers at most (a pack larger
    /// than this is a message of its own).
    pub batch: u64,
}

impl VerifyMode {
    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            VerifyMode::Metadata => "metadata",
            VerifyMode::Sample(_) => "sample",
            VerifyMode::Full => "full",
        }
    }
}
