//! Database connections shared by the extractors (backup) and the loaders (restore):
//! URL resolution with libpq semantics, TLS, and session set-up.

pub mod postgres;
