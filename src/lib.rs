//! blobpipe: backup pipelines into Azure Blob Storage, and the way back.
//!
//! The modules follow one backup run from left to right:
//!
//! ```text
//! pipeline::spec ─> extract ─> pack ─> store ─> manifest ─> verify      restore
//!  (checked config)  (walk,     (tar → frames   (local,    (committed   (re-read   (ranged reads of
//!                    partition)  → blocks, MD5)  memory,    last)        samples)   the frames needed)
//!                                                azure)
//! ```
//!
//! [`pipeline::backup`] orchestrates a run; [`catalog`] finds snapshots; [`cli`] is the
//! command line on top.

pub mod alert;
pub mod cli;
pub mod db;
pub mod error;
pub mod extract;
pub mod manifest;
pub mod pack;
pub mod pipeline;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod serve;
pub mod store;
pub mod support;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
