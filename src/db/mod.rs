//! Database plumbing shared by the extractors (backup), the loaders (restore) and the
//! drills: connections (URL resolution with libpq semantics, TLS, session set-up), SQL
//! quoting, and the CSV encoding both sides agree on. Nothing here knows a pipeline,
//! a pack or a store; `extract` and `restore` both import it, never each other.

pub mod csv;
pub mod mysql;
pub mod postgres;
pub mod sql;
