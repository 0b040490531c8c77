//! Support: the small pieces every stage uses and none owns — ids and names, secrets,
//! cancellation, progress display, the one retry policy and the one HTTP/TLS set-up.
//!
//! Nothing here imports any stage of the engine.

pub mod cancel;
pub mod http;
pub mod ids;
pub mod out;
pub mod progress;
pub mod retry;
pub mod secret;
pub mod units;
