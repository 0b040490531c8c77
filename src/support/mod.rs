//! Support: the small pieces every stage uses and none owns — ids and names, secrets,
//! cancellation, progress display.
//!
//! Nothing here imports any stage of the engine.

pub mod cancel;
pub mod ids;
pub mod progress;
pub mod secret;
pub mod units;
