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
//! - [`scale`] runs the same partitions as queue work for many worker processes (job
//!   replicas, or `backup --workers N`) and commits them exactly once.
//! - [`report`] is what a run reports and stores as its run record.
//! - [`drill`] and [`drill_db`] are restore drills: runs of their own that restore the
//!   newest snapshot into scratch space (a directory, a scratch database), check it,
//!   store a drill record and alert — orchestration like the backup runner, on top of
//!   the `restore` stage.
//!
//! Reading files lives in `extract::fs`, frames, blocks and packs in `pack`; this module
//! wires them to the store and the upload pool.

mod alerts;
mod blobs;
mod commit;
pub mod copy;
pub mod drill;
pub mod drill_db;
mod files;
mod plan;
pub mod repack;
pub mod report;
mod run;
pub mod runner;
pub mod scale;
pub mod spec;
mod streamed;
mod upload;

pub use report::BackupReport;
pub use runner::{backup, BackupOptions};
pub use spec::{Needs, Pipeline};
