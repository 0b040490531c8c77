//! Checked store settings: where the store lives, the shape of uploads and the retry
//! policy of store calls.
//!
//! `pipeline::spec` builds these from `[target]`, `[upload]` and `[retry]`; the store
//! backends take them as they are (no engine types), so this file depends on nothing
//! above `store`.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::Tier;
use crate::support::secret::Secret;

/// Where a store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A local directory.
    Local(PathBuf),
    /// The process-wide in-memory store of that name (tests).
    Memory(String),
    /// An Azure (or emulator) URL or connection-string form, interpreted by the Azure backend.
    Azure(Secret),
}

/// Checked target.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Store location.
    pub location: StoreLocation,
    /// The one printable rendering of the target, used wherever a target is shown
    /// (validate, status, alerts, drills): a local URL as written, an Azure target as
    /// `azure://account/container[/root] [at endpoint] (credential kind)`. Never holds a
    /// key, a SAS or a connection string.
    pub display_url: String,
    /// Container (a directory for local stores).
    pub container: String,
    /// Prefix inside the container (default: the pipeline name).
    pub prefix: String,
    /// Access tier for packs.
    pub tier: Tier,
}

/// Checked upload settings.
#[derive(Debug, Clone, Copy)]
pub struct UploadConfig {
    /// Block size for packs of known size.
    pub block_size: usize,
    /// Uncompressed bytes after which a pack is closed.
    pub pack_size: u64,
    /// Concurrent block uploads.
    pub concurrency: usize,
    /// Sealed blocks waiting for an uploader (the bounded channel).
    pub channel_capacity: usize,
}

/// Checked retry policy (one policy for every store call).
#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    /// Attempts per operation, including the first.
    pub attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Total time budget for retries of one operation.
    pub budget: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            budget: Duration::from_secs(300),
        }
    }
}
