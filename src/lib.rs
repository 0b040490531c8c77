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
//! [`pipeline::backup`] orchestrates a run; [`cli`] is the command line on top.

pub mod error;
pub mod ids;
pub mod pipeline;
pub mod secret;
pub mod store;

pub use error::{Error, ErrorKind, Result};
