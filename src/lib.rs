//! blobpipe: backup pipelines into Azure Blob Storage, and the way back.
//!
//! The modules follow one backup run down the flow, one folder per stage; each owns its
//! config types and errors, and imports only point down (see `docs/architecture.md`,
//! held by `tests/layering.rs`):
//!
//! ```text
//! support ─ store ─ manifest ─ db ─ pack ─ extract ─ verify ─ restore ─ retention ─ alert
//!   ─ pipeline (spec → plan → run → upload → commit → runner) ─ schedule ─ serve ─ cli
//! ```
//!
//! [`pipeline::backup`] runs a backup; [`restore::restore`] gets files back;
//! [`cli`] is the command line on top.

pub mod alert;
pub mod cli;
pub mod db;
pub mod error;
pub mod extract;
pub mod manifest;
pub mod pack;
pub mod pipeline;
pub mod report;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod serve;
pub mod store;
pub mod support;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
