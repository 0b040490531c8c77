//! Pipelines: the checked configuration ([`spec`]) and the orchestration of a run.

pub mod spec;

pub use spec::Pipeline;
