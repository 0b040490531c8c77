//! Pipelines: the checked configuration ([`spec`]) and the orchestration of a run.
//!
//! A run, in the order the files follow it:
//!
//! - [`runner`] owns a whole run: the run lock ([`crate::manifest::lock`]), the engine,
//!   verification, the run record, automatic retention and alerts. [`backup`] is its
//!   entry point.
//! - [`plan`] loads the run's stored plan or makes one (full or incremental, decided
//!   once per run) and finds partitions an earlier attempt finished.
//! - [`run`] is the engine: partition workers → bounded channel → [`upload`] pool, with
//!   partition retries. A partition is packed by [`files`] (filesystem) or [`streamed`]
//!   (databases, commands) and ends with its part record.
//! - [`commit`] merges the part records into the manifest, create-only.
//! - [`report`] is what a run reports and stores as its run record.
//!
//! Reading files lives in `extract::fs`, frames, blocks and packs in `pack`; this module
//! wires them to the store and the upload pool.

mod commit;
mod files;
mod plan;
pub mod report;
mod run;
pub mod runner;
pub mod spec;
mod streamed;
mod upload;

pub use report::{BackupReport, Stats};
pub use runner::{backup, BackupOptions};
pub use spec::Pipeline;
