//! Checked source settings: what to read and how to split it.
//!
//! `pipeline::spec` builds these from the `[source]` and `[partitions]` tables; the
//! readers in this folder trust them (paths resolved, patterns valid, sizes in range).

use std::path::PathBuf;
use std::time::Duration;

use crate::support::secret::Secret;

/// A checked source.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A directory tree.
    Fs(FsSourceConfig),
    /// PostgreSQL tables (one exported snapshot shared by all workers).
    Postgres(DbSourceConfig),
    /// MySQL / MariaDB tables.
    Mysql(DbSourceConfig),
    /// The standard output of a command.
    Command(CommandSourceConfig),
    /// The blobs of an Azure container (or a prefix of one).
    Blob(BlobSourceConfig),
}

impl SourceConfig {
    /// Whether this source is a database or a command: its runs re-plan on resume and
    /// never reuse part records (a new attempt sees a new snapshot of the data).
    pub fn is_streamed(&self) -> bool {
        !matches!(self, SourceConfig::Fs(_) | SourceConfig::Blob(_))
    }
}

/// A PostgreSQL or MySQL/MariaDB source.
#[derive(Debug, Clone)]
pub struct DbSourceConfig {
    /// Connection URL (`postgres://user@host:5432/db`, `mysql://user@host:3306/db`);
    /// may carry a password, so it is a secret.
    pub url: Secret,
    /// Password given separately (overrides one in the URL).
    pub password: Option<Secret>,
    /// Schemas (PostgreSQL) or databases (MySQL) to read. Default: `public` / the URL's
    /// database.
    pub schemas: Vec<String>,
    /// Table patterns (`*` and `?`), matched against `table` and `schema.table`; empty:
    /// every table.
    pub include: Vec<String>,
    /// Table patterns to leave out.
    pub exclude: Vec<String>,
    /// Tables with more (estimated) rows than this are split into primary-key ranges.
    pub split_rows: u64,
    /// When `split_rows` was not set: also split tables whose on-disk size exceeds this,
    /// into ranges of about this many bytes (half of `[chunking] range_buffer`, so a range
    /// fits the buffer and an unchanged one is reused). 0: by rows only.
    pub split_bytes: u64,
    /// Bytes of CSV buffered per tar entry (each chunk becomes one entry).
    pub chunk_size: usize,
}

/// A command source.
#[derive(Debug, Clone)]
pub struct CommandSourceConfig {
    /// Program and arguments (with `shell`, one string run by `sh -c`).
    pub argv: Vec<String>,
    /// Run through `/bin/sh -c`.
    pub shell: bool,
    /// The run fails when the command has not exited after this long.
    pub timeout: Duration,
    /// Name of the stored stream (`command/<name>/…`).
    pub name: String,
    /// Bytes of output buffered per tar entry.
    pub chunk_size: usize,
}

/// A directory tree source.
#[derive(Debug, Clone)]
pub struct FsSourceConfig {
    /// Root directory (absolute, or resolved against the pipeline file's directory).
    pub root: PathBuf,
    /// Gitignore-style include patterns (empty: everything).
    pub include: Vec<String>,
    /// Gitignore-style exclude patterns.
    pub exclude: Vec<String>,
}

/// Partitioning.
#[derive(Debug, Clone, Copy)]
pub struct PartitionsConfig {
    /// Filesystem partitions: about this many bytes each (file sizes plus 4 KiB per
    /// entry), cut at content-defined points so unchanged regions keep their partitions.
    pub size: u64,
    /// Filesystem partitions: at most this many entries each (bounds the memory of one
    /// partition and of one manifest segment).
    pub max_entries: usize,
    /// How many partitions are extracted and compressed at once.
    pub max_parallel: usize,
}

/// Content-defined chunking of large files (`[chunking]`): a file of at least
/// `threshold` bytes is cut by FastCDC (2020) into chunks of `min..=max` bytes, about
/// `avg` on average, each stored once and reused by later snapshots while unchanged.
/// Checked at the edge against the chunker's own limits (even sizes, min ≤ avg ≤ max).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkingConfig {
    /// Files of at least this many bytes are chunked (others are stored whole).
    pub threshold: u64,
    /// Smallest chunk (except a file's last).
    pub min: usize,
    /// Average chunk the cut points aim at.
    pub avg: usize,
    /// Largest chunk.
    pub max: usize,
    /// Database sources: the most CSV bytes of one key range held in memory while it is
    /// read, to compare its row-set digest with the parent's range before anything is
    /// compressed or stored. A range that stays within it and whose rows are the parent's
    /// points at the parent's chunks; a larger range is stored as it is read (no reuse).
    /// Each running partition holds up to this much (`partitions.max_parallel` × it).
    pub range_buffer: usize,
    /// Filesystem sources: memory for the index of the parent snapshot's chunks (about
    /// [`ChunkingConfig::INDEX_BYTES_PER_CHUNK`] bytes each), which lets a renamed, copied
    /// or newly named big file (a dated dump) point at chunks the parent already stores.
    /// 0 turns it off (only the parent's file of the same path is reused from).
    pub index: usize,
}

impl ChunkingConfig {
    /// Default threshold: 64 MiB.
    pub const DEFAULT_THRESHOLD: u64 = 64 << 20;
    /// Default smallest chunk: 512 KiB.
    pub const DEFAULT_MIN: usize = 512 << 10;
    /// Default average chunk: 1 MiB (restic's average).
    pub const DEFAULT_AVG: usize = 1 << 20;
    /// Default largest chunk: 8 MiB.
    pub const DEFAULT_MAX: usize = 8 << 20;
    /// Default range buffer: 64 MiB.
    pub const DEFAULT_RANGE_BUFFER: usize = 64 << 20;
    /// Default chunk index: 32 MiB (about 500,000 chunks: 500 GiB at 1 MiB chunks).
    pub const DEFAULT_INDEX: usize = 32 << 20;
    /// What one chunk costs in the index, counted against `index`.
    pub const INDEX_BYTES_PER_CHUNK: usize = 64;
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        Self {
            threshold: Self::DEFAULT_THRESHOLD,
            min: Self::DEFAULT_MIN,
            avg: Self::DEFAULT_AVG,
            max: Self::DEFAULT_MAX,
            range_buffer: Self::DEFAULT_RANGE_BUFFER,
            index: Self::DEFAULT_INDEX,
        }
    }
}

impl PartitionsConfig {
    /// The default partition size.
    pub const DEFAULT_SIZE: u64 = 64 << 20;
    /// The default entry bound of a partition.
    pub const DEFAULT_MAX_ENTRIES: usize = 8192;
}

/// A blob-container source.
#[derive(Debug, Clone)]
pub struct BlobSourceConfig {
    /// The container as an Azure target string (`azure://account/container[/prefix]`,
    /// an https URL with a SAS, a connection string…): the store's credential chain
    /// applies. May hold a key or SAS, so it is a secret.
    pub location: Secret,
    /// Container, when the location names none.
    pub container: String,
    /// Printable form (no secret): `azure://account/container[/prefix]`.
    pub display: String,
    /// Gitignore-style include patterns on blob names (empty: every blob).
    pub include: Vec<String>,
    /// Gitignore-style exclude patterns.
    pub exclude: Vec<String>,
    /// `rehydrate`: ask for Archive-tier blobs to be rehydrated (in place, to Hot) at this
    /// priority, to be backed up by a later run; `None`: only report them.
    pub rehydrate: Option<Rehydrate>,
    /// `server_side_min_size`: a blob of at least this many bytes is copied into a stored
    /// (uncompressed) pack by the target's service, when the pipeline allows it
    /// (`pipeline::blobs::may_stage_server_side`); `None`: every blob is streamed.
    pub server_side_min_size: Option<u64>,
}

/// Priority of rehydrating an archived source blob (`source.rehydrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rehydrate {
    /// Up to 15 hours.
    Standard,
    /// Usually under an hour for blobs under 10 GB; costs more.
    High,
}
