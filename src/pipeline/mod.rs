//! Pipelines: the checked configuration ([`spec`]), the run lock ([`lock`]) and the
//! orchestration of a backup run ([`backup`]).

pub mod backup;
pub mod lock;
pub mod spec;
mod streamed;

pub use backup::{backup, BackupOptions, BackupReport};
pub use spec::Pipeline;
