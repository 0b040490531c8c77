//! Progress of long work: a bar on a terminal, periodic log lines elsewhere.
//!
//! Workers only bump atomic counters; one reporter task turns them into a progress bar
//! (files, bytes, rate, ETA) when stderr is a terminal, or into a `tracing` line every
//! 10 seconds otherwise (containers, cron, CI), so logs stay readable and cheap.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::units::human;

/// Shared counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Entries expected.
    pub entries_total: AtomicU64,
    /// Bytes expected.
    pub bytes_total: AtomicU64,
    /// Entries done.
    pub entries_done: AtomicU64,
    /// Bytes done (read, restored or verified).
    pub bytes_done: AtomicU64,
    /// Compressed bytes transferred.
    pub bytes_transferred: AtomicU64,
}

impl Counters {
    /// Add finished work.
    pub fn add(&self, entries: u64, bytes: u64) {
        self.entries_done.fetch_add(entries, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }
    /// Set the expected totals.
    pub fn set_total(&self, entries: u64, bytes: u64) {
        self.entries_total.store(entries, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
    }
}

/// A running reporter; dropping it (or calling [`Reporter::finish`]) stops it.
pub struct Reporter {
    /// The counters workers update.
    pub counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Reporter {
    /// Start reporting `what` ("backup", "restore", "verify"); `quiet` reports nothing.
    pub fn start(what: &'static str, quiet: bool) -> Reporter {
        let counters = Arc::new(Counters::default());
        if quiet {
            return Reporter {
                counters,
                stop: None,
                task: None,
            };
        }
        let (stop, mut rx) = tokio::sync::oneshot::channel::<()>();
        let c = counters.clone();
        let tty = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let bar = tty.then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_prefix(what);
                b
            });
            let period = if tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(10)
            };
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(period) => {}
                }
                let (done, total) = (
                    c.bytes_done.load(Ordering::Relaxed),
                    c.bytes_total.load(Ordering::Relaxed),
                );
                let (ed, et) = (
                    c.entries_done.load(Ordering::Relaxed),
                    c.entries_total.load(Ordering::Relaxed),
                );
                if let Some(b) = &bar {
                    b.set_length(total);
                    b.set_position(done);
                    b.set_message(format!("{ed}/{et} entries"));
                } else {
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    let rate = done as f64 / secs;
                    let eta = if rate > 0.0 && total > done {
                        (total - done) as f64 / rate
                    } else {
                        0.0
                    };
                    tracing::info!(
                        target: "blobpipe::support::progress",
                        "{what}: {ed}/{et} entries, {}/{} ({}/s), ETA {:.0}s",
                        human(done),
                        human(total),
                        human(rate as u64),
                        eta
                    );
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        Reporter {
            counters,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stop and wait for the reporter to clear its line.
    pub async fn finish(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
