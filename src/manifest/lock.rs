//! The run lock: one run of a pipeline at a time.
//!
//! A lease on `<prefix>/lock` (an Azure blob lease, or the local store's lease file),
//! renewed in the background while the run lives. A second run fails fast naming the
//! holder, or waits with `--wait-lock`. A killed holder stops renewing, and its lease
//! expires by itself: no stale lock ever needs a manual unlock. A holder that is a dead
//! process on this same host (the holder text names host and pid) is released at once
//! rather than waited for; a live pid, or a holder on another host, is respected.
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
        // Breaks of dead holders' leases (bounded: each is followed by a fresh acquire).
        let mut breaks = 0;
        let lease = loop {
            let res = store.acquire_lease(&blob, ttl, &holder).await;
            if res.as_ref().is_err_and(|e| e.kind() == ErrorKind::Locked)
                && breaks < 3
                && broke_dead_holder(&store, &blob).await
            {
                breaks += 1;
                continue;
            }
            match res {
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

/// Break the lock when its recorded holder is a process of this host that no longer
/// runs (killed with `kill -9`, out of memory, a crashed container on the same machine):
/// it can never renew nor release, and waiting for its lease to expire helps no one.
/// A holder on another host, a live pid or an unreadable holder is left alone.
async fn broke_dead_holder(store: &Store, blob: &str) -> bool {
    let Ok(text) = store.get(blob, None).await else {
        return false;
    };
    let holder = String::from_utf8_lossy(&text).into_owned();
    let Some((host, pid)) = parse_holder(&holder) else {
        return false;
    };
    if host != hostname() || pid == std::process::id() || pid_alive(pid) != Some(false) {
        return false;
    }
    match store.break_lease_of(blob, &holder).await {
        Ok(true) => {
            tracing::warn!(
                "released the run lock of a process that is no longer running on this host ({holder})"
            );
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!("could not release the run lock of dead process {pid}: {e}");
            false
        }
    }
}

/// Host and pid of a holder text `run RUN on HOST (pid N) since TIME`.
fn parse_holder(holder: &str) -> Option<(&str, u32)> {
    let (head, tail) = holder.rsplit_once(" (pid ")?;
    let (pid, _) = tail.split_once(") since ")?;
    let (_, host) = head.rsplit_once(" on ")?;
    let pid = pid.parse().ok()?;
    (!host.is_empty() && !host.contains(' ')).then_some((host, pid))
}

/// Whether `pid` runs on this machine: `Some(false)` only when `/proc` says so for sure
/// (no such process, or a zombie that has exited); `None` where there is no `/proc`.
fn pid_alive(pid: u32) -> Option<bool> {
    if !std::path::Path::new("/proc/self/stat").exists() {
        return None;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: `pid (comm) S ...`.
        Ok(stat) => Some(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| state != "Z" && state != "X"),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_text_names_host_and_pid() {
        assert_eq!(
            parse_holder("run 20260101-x on web-1 (pid 4242) since 2026-01-01T00:00:00+00:00"),
            Some(("web-1", 4242))
        );
        assert_eq!(
            parse_holder("run a on b (pid 7) since c on d (pid 9) since e"),
            Some(("d", 9))
        );
        assert_eq!(parse_holder("released"), None);
        assert_eq!(parse_holder("run x on h (pid nope) since t"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        if pid_alive(std::process::id()).is_none() {
            return; // no /proc here
        }
        assert_eq!(pid_alive(std::process::id()), Some(true));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert_eq!(pid_alive(pid), Some(false));
    }
}
