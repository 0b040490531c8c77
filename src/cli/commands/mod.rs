//! Command bodies, one file per group. Each takes its checked arguments, opens what it
//! needs (a [`crate::manifest::layout::Repo`] for a pipeline's store), calls the library
//! and hands the report to [`super::render`]; each returns the exit code.

pub mod auth;
pub mod backup;
pub mod db;
pub mod keys;
pub mod ops;
pub mod report;
pub mod restore;
pub mod retention;
pub mod scale;
pub mod snapshots;
pub mod validate;
pub mod verify;
