//! The run lock: one run of a pipeline at a time.
//!
//! A lease on `<prefix>/lock` (an Azure blob lease, or the local store's lease file),
//! renewed in the background while the run lives. A second run fails fast naming the
//! holder, or waits with `--wait-lock`. A killed holder stops renewing, and its lease
//! expires by itself: no stale lock ever needs a manual unlock.
//!
//! It lives with the layout, not in `pipeline`: the lock is one more stored name under a
//! pipeline's prefix, and `retention` (below `pipeline`) takes it as a backup does.

use std::time::Duration;

use crate::error::{ErrorKind, Result};
use crate::manifest::layout::Layout;
use crate::store::{Lease, Store};
use crate::support::cancel::Cancel;

/// A held run lock; renews itself until released.
pub struct RunLock {
    store: Store,
    lease: Lease,
    renewer: tokio::task::JoinHandle<()>,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RunLock {
    /// Take the pipeline's lock for `run_id`.
    ///
    /// # Errors
    /// `Locked` naming the holder when another run holds it (unless `wait`), `Cancelled`
    /// if cancelled while waiting, or a store error.
    pub async fn acquire(
        store: Store,
        layout: &Layout,
        run_id: &str,
        ttl: Duration,
        wait: bool,
        cancel: &Cancel,
    ) -> Result<RunLock> {
        let holder = format!(
            "run {run_id} on {} (pid {}) since {}",
            hostname(),
            std::process::id(),
            chrono::Utc::now().to_rfc3339()
        );
        let blob = layout.lock();
        let lease = loop {
            match store.acquire_lease(&blob, ttl, &holder).await {
                Ok(l) => break l,
                Err(e) if e.kind() == ErrorKind::Locked && wait => {
                    tracing::info!("waiting for the run lock: {e}");
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(crate::Error::cancelled()),
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
                Err(e) if e.kind() == ErrorKind::Locked => {
                    return Err(e.context(
                        "another run of this pipeline is in progress (use --wait-lock to wait)",
                    ))
                }
                Err(e) => return Err(e.context("taking the run lock")),
            }
        };
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, l, c, lo) = (store.clone(), lease.clone(), cancel.clone(), lost.clone());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if let Err(e) = s.renew_lease(&l).await {
                    tracing::error!("lost the run lock, stopping the run: {e}");
                    lo.store(true, std::sync::atomic::Ordering::SeqCst);
                    c.cancel();
                    return;
                }
            }
        });
        Ok(RunLock {
            store,
            lease,
            renewer,
            lost,
        })
    }

    /// Whether renewing failed (the run was stopped because another may take over).
    pub fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stop renewing and release.
    pub async fn release(self) {
        self.renewer.abort();
        if let Err(e) = self.store.release_lease(&self.lease).await {
            tracing::warn!("could not release the run lock (it expires by itself): {e}");
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into())
}
