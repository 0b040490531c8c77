//! Cooperative cancellation (Ctrl-C, SIGTERM, a failed partition).
//!
//! Workers check [`Cancel::is_cancelled`] between units of work (entries, frames, blocks)
//! and async tasks can await [`Cancel::cancelled`]. Cancelling never commits a snapshot:
//! finished partitions keep their part records, so a rerun with the same run id resumes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A cloneable cancellation flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Cancel {
    /// A fresh, uncancelled token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Cancel everything holding a clone.
    pub fn cancel(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }
    /// Whether cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }
    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        loop {
            let n = self.0.notify.notified();
            if self.is_cancelled() {
                return;
            }
            n.await;
        }
    }
    /// Cancel on Ctrl-C or SIGTERM (spawns a listener task).
    pub fn on_signals(&self) {
        let c = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = match signal(SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            tracing::warn!("signal received: stopping; nothing will be committed, rerun with the same --run-id to resume");
            c.cancel();
        });
    }
}
