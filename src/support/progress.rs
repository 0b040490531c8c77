//! Progress of long work: one bar on a terminal, nothing elsewhere unless asked.
//!
//! Workers only bump atomic counters; one reporter task turns them into a single progress
//! display when stderr is a terminal. Elsewhere (containers, cron, CI) it logs a DEBUG
//! line every 10 seconds, shown with `-v`, so cron mail and Log Analytics stay quiet.
//!
//! The display names the **phase** of the work ([`Phase`]: planning, uploading,
//! committing, verifying, restoring) and counts in the phase's unit (files, chunks of a
//! database dump, packs). While the totals are unknown (planning, streamed sources) it
//! shows what is done and the rate, never a `0 B/0 B` bar. The ETA comes from the rate
//! over the last [`RATE_WINDOW`], not the average since the start. Log lines are printed
//! above the bar ([`suspend`]), so they never break into it.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::units::human;

/// How far back the rate (and so the ETA) looks.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// What the work is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Listing the source, finding the parent snapshot.
    Planning = 0,
    /// Reading, packing and uploading (counts entries: files, dirs, symlinks).
    Uploading = 1,
    /// Writing part records and the manifest.
    Committing = 2,
    /// Re-reading stored packs.
    Verifying = 3,
    /// Writing restored data.
    Restoring = 4,
}

impl Phase {
    /// The label shown for the phase.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Planning => "planning",
            Phase::Uploading => "uploading",
            Phase::Committing => "committing",
            Phase::Verifying => "verifying",
            Phase::Restoring => "restoring",
        }
    }
    /// The unit the phase counts in, unless a caller says otherwise.
    pub fn default_unit(self) -> &'static str {
        match self {
            Phase::Planning | Phase::Committing => "",
            Phase::Uploading => "entries",
            Phase::Verifying => "packs",
            Phase::Restoring => "entries",
        }
    }
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Uploading,
            2 => Phase::Committing,
            3 => Phase::Verifying,
            4 => Phase::Restoring,
            _ => Phase::Planning,
        }
    }
}

/// Shared counters.
#[derive(Debug)]
pub struct Counters {
    /// Items (files, chunks, packs) expected; 0 = unknown.
    pub entries_total: AtomicU64,
    /// Bytes expected; 0 = unknown.
    pub bytes_total: AtomicU64,
    /// Items done.
    pub entries_done: AtomicU64,
    /// Bytes done (read, restored or verified).
    pub bytes_done: AtomicU64,
    /// Compressed bytes transferred.
    pub bytes_transferred: AtomicU64,
    /// Whether the totals may still grow (a backup's walk runs only a few partitions
    /// ahead of the workers): shown as `≥total`, with no ETA.
    partial_totals: AtomicBool,
    phase: AtomicU8,
    unit: Mutex<&'static str>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new(Phase::Planning)
    }
}

impl Counters {
    /// Counters starting in `phase`.
    pub fn new(phase: Phase) -> Counters {
        Counters {
            entries_total: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            entries_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            bytes_transferred: AtomicU64::new(0),
            partial_totals: AtomicBool::new(false),
            phase: AtomicU8::new(phase as u8),
            unit: Mutex::new(phase.default_unit()),
        }
    }
    /// Add finished work.
    pub fn add(&self, entries: u64, bytes: u64) {
        self.entries_done.fetch_add(entries, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }
    /// Set the expected totals (0 = unknown) of the current phase.
    pub fn set_total(&self, entries: u64, bytes: u64) {
        self.entries_total.store(entries, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
    }
    /// Mark the totals as still growing (`true`: what the walk has found so far) or
    /// final.
    pub fn set_partial_totals(&self, partial: bool) {
        self.partial_totals.store(partial, Ordering::Relaxed);
    }
    /// Start `phase`, counting `unit` (its default when `None`): done counts restart
    /// from zero, totals become `entries`/`bytes` (0 = unknown), final.
    pub fn begin(&self, phase: Phase, unit: Option<&'static str>, entries: u64, bytes: u64) {
        self.entries_done.store(0, Ordering::Relaxed);
        self.bytes_done.store(0, Ordering::Relaxed);
        self.set_total(entries, bytes);
        self.set_partial_totals(false);
        if let Ok(mut u) = self.unit.lock() {
            *u = unit.unwrap_or(phase.default_unit());
        }
        self.phase.store(phase as u8, Ordering::Relaxed);
    }
    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            phase: self.phase(),
            unit: self.unit.lock().map(|u| *u).unwrap_or(""),
            items: self.entries_done.load(Ordering::Relaxed),
            items_total: self.entries_total.load(Ordering::Relaxed),
            bytes: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            partial: self.partial_totals.load(Ordering::Relaxed),
        }
    }
}

/// One reading of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    phase: Phase,
    unit: &'static str,
    items: u64,
    items_total: u64,
    bytes: u64,
    bytes_total: u64,
    partial: bool,
}

/// The byte rate over the last `window`: samples older than it are dropped, so a slow
/// start (or a stall long ago) does not skew the ETA the way an average would.
#[derive(Debug)]
pub struct RateMeter {
    window: Duration,
    samples: VecDeque<(Duration, u64)>,
}

impl RateMeter {
    /// A meter looking back `window`.
    pub fn new(window: Duration) -> RateMeter {
        RateMeter {
            window,
            samples: VecDeque::new(),
        }
    }
    /// Forget all samples (a new phase starts counting from zero).
    pub fn reset(&mut self) {
        self.samples.clear();
    }
    /// Record `bytes` done at `at` (time since some fixed start).
    pub fn sample(&mut self, at: Duration, bytes: u64) {
        if self.samples.back().is_some_and(|&(_, b)| b > bytes) {
            self.samples.clear();
        }
        self.samples.push_back((at, bytes));
        // Keep one sample at or beyond the window's start, so the span covers it.
        while self.samples.len() > 2 && at.saturating_sub(self.samples[1].0) >= self.window {
            self.samples.pop_front();
        }
    }
    /// Bytes per second over the window; `None` before two samples.
    pub fn rate(&self) -> Option<f64> {
        let (&(t0, b0), &(t1, b1)) = (self.samples.front()?, self.samples.back()?);
        let dt = t1.checked_sub(t0)?.as_secs_f64();
        (dt > 0.0).then(|| (b1.saturating_sub(b0)) as f64 / dt)
    }
    /// Time left for `remaining` bytes at the recent rate; `None` when unknown or stalled.
    pub fn eta(&self, remaining: u64) -> Option<Duration> {
        let r = self.rate()?;
        (r > 0.0).then(|| Duration::from_secs_f64(remaining as f64 / r))
    }
}

/// `1h02m`, `4m05s`, `12s`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The text of one progress reading (the bar draws `[bar]` before it on a terminal).
fn describe(s: &Snapshot, rate: Option<f64>, eta: Option<Duration>) -> String {
    let mut parts = Vec::new();
    if s.phase == Phase::Planning {
        return "listing the source and the parent snapshot".to_string();
    }
    if s.phase == Phase::Committing {
        return "writing the manifest".to_string();
    }
    // Totals the walk is still adding to are a lower bound: `≥`.
    let at_least = if s.partial { "≥" } else { "" };
    if s.bytes_total > 0 {
        parts.push(format!(
            "{}/{at_least}{}",
            human(s.bytes),
            human(s.bytes_total)
        ));
    } else {
        parts.push(human(s.bytes));
    }
    if !s.unit.is_empty() {
        if s.items_total > 0 && s.items <= s.items_total {
            parts.push(format!(
                "{}/{at_least}{} {}",
                s.items, s.items_total, s.unit
            ));
        } else {
            parts.push(format!("{} {}", s.items, s.unit));
        }
    }
    if let Some(r) = rate {
        parts.push(format!("{}/s", human(r as u64)));
    }
    // No ETA against a total that is only what has been found so far.
    if s.bytes_total > s.bytes && !s.partial {
        if let Some(e) = eta {
            parts.push(format!("ETA {}", short_duration(e)));
        }
    }
    parts.join(", ")
}

/// A 30-column `[====>   ]` of bytes done, or `[...]` while the total is unknown.
fn gauge(s: &Snapshot) -> String {
    const W: u64 = 30;
    if s.bytes_total == 0 {
        return "[...]".to_string();
    }
    let filled = (s.bytes.min(s.bytes_total) * W / s.bytes_total) as usize;
    let w = W as usize;
    match filled {
        f if f >= w => format!("[{}]", "=".repeat(w)),
        f => format!("[{}>{}]", "=".repeat(f), " ".repeat(w - f - 1)),
    }
}

/// The one progress bar being drawn, if any: log lines are printed around it.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Run `f` (which writes to stderr) with the progress bar hidden, then redraw it.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = BAR.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
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
    /// Start reporting `what` ("backup", "restore", "verify") from `phase`; `quiet`
    /// reports nothing.
    pub fn start(what: &'static str, phase: Phase, quiet: bool) -> Reporter {
        let counters = Arc::new(Counters::new(phase));
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
            let mut meter = RateMeter::new(RATE_WINDOW);
            let mut last_phase = None;
            let bar = tty.then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(5));
                if let Ok(mut g) = BAR.lock() {
                    *g = Some(b.clone());
                }
                b
            });
            if let Some(b) = &bar {
                b.set_style(
                    indicatif::ProgressStyle::with_template("{msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
            }
            let period = if tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(10)
            };
            loop {
                let s = c.snapshot();
                if last_phase != Some(s.phase) {
                    meter.reset();
                    last_phase = Some(s.phase);
                }
                meter.sample(started.elapsed(), s.bytes);
                let text = describe(
                    &s,
                    meter.rate(),
                    meter.eta(s.bytes_total.saturating_sub(s.bytes)),
                );
                if let Some(b) = &bar {
                    // One message per tick: phase, bar and counts change together.
                    b.set_message(format!("{:>10} {} {text}", s.phase.label(), gauge(&s)));
                } else if started.elapsed() >= period {
                    tracing::debug!(
                        target: "blobpipe::support::progress",
                        "{what} {}: {text}",
                        s.phase.label()
                    );
                }
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(period) => {}
                }
            }
            if let Some(b) = bar {
                if let Ok(mut g) = BAR.lock() {
                    *g = None;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn rate_is_recent_not_average() {
        let mut m = RateMeter::new(secs(10));
        // 100 s at 1 MB/s, then 20 s at 10 MB/s: the average would be 2.5 MB/s.
        let mut b = 0u64;
        for t in 0..=100 {
            b = t * 1_000_000;
            m.sample(secs(t), b);
        }
        for t in 101..=120 {
            b += 10_000_000;
            m.sample(secs(t), b);
        }
        let r = m.rate().unwrap();
        assert!((r - 10_000_000.0).abs() < 1.0, "rate {r}");
        // 100 MB left at 10 MB/s.
        assert_eq!(m.eta(100_000_000), Some(secs(10)));
    }

    #[test]
    fn no_rate_or_eta_until_two_samples_or_when_stalled() {
        let mut m = RateMeter::new(secs(10));
        assert_eq!(m.rate(), None);
        m.sample(secs(1), 5);
        assert_eq!(m.rate(), None);
        assert_eq!(m.eta(10), None);
        m.sample(secs(2), 5);
        assert_eq!(m.rate(), Some(0.0));
        assert_eq!(m.eta(10), None, "a stall has no ETA");
    }

    #[test]
    fn a_new_phase_counting_from_zero_restarts_the_rate() {
        let mut m = RateMeter::new(secs(10));
        m.sample(secs(0), 0);
        m.sample(secs(1), 1000);
        m.sample(secs(2), 0);
        m.sample(secs(4), 200);
        assert_eq!(m.rate(), Some(100.0));
    }

    fn snap(phase: Phase, unit: &'static str, i: u64, it: u64, b: u64, bt: u64) -> Snapshot {
        Snapshot {
            phase,
            unit,
            items: i,
            items_total: it,
            bytes: b,
            bytes_total: bt,
            partial: false,
        }
    }

    /// Issue 14, "entries lag far behind bytes": the counts were right, the totals were
    /// not totals. A backup's walk runs at most 2 × max_parallel + 1 partitions ahead of
    /// the workers, so `entries_total`/`bytes_total` are what it has found so far; when
    /// the partitions found ahead hold many small files (8,192 entries each, few bytes),
    /// the entry total runs far ahead of the byte total and `done/total` of entries
    /// trails that of bytes (measured on /usr/share: 363 MiB/511 MiB next to
    /// 19,953/46,054 entries). Such totals are shown as lower bounds, without an ETA.
    #[test]
    fn totals_still_growing_are_lower_bounds_without_an_eta() {
        let c = Counters::new(Phase::Planning);
        c.begin(Phase::Uploading, None, 0, 0);
        c.set_partial_totals(true);
        c.set_total(46_054, 510_700_000);
        c.add(19_953, 363_000_000);
        let s = c.snapshot();
        assert!(s.partial);
        assert_eq!(
            describe(&s, Some(1_000_000.0), Some(secs(147))),
            "346.2 MiB/≥487.0 MiB, 19953/≥46054 entries, 976.6 KiB/s"
        );
        // The walk ends: the totals are final, the ETA comes back.
        c.set_partial_totals(false);
        let s = c.snapshot();
        assert_eq!(
            describe(&s, Some(1_000_000.0), Some(secs(147))),
            "346.2 MiB/487.0 MiB, 19953/46054 entries, 976.6 KiB/s, ETA 2m27s"
        );
        // A new phase starts with final totals.
        c.set_partial_totals(true);
        c.begin(Phase::Verifying, None, 4, 4096);
        assert!(!c.snapshot().partial);
    }

    #[test]
    fn labels_name_the_phase_and_its_unit() {
        let c = Counters::new(Phase::Planning);
        assert_eq!(c.snapshot().phase.label(), "planning");
        assert_eq!(
            describe(&c.snapshot(), None, None),
            "listing the source and the parent snapshot",
            "no 0 B/0 B before planning is done"
        );
        c.begin(Phase::Verifying, None, 4, 4096);
        c.add(1, 1024);
        let s = c.snapshot();
        assert_eq!(s.phase.label(), "verifying");
        assert_eq!(
            describe(&s, Some(1024.0), Some(secs(3))),
            "1 KiB/4 KiB, 1/4 packs, 1 KiB/s, ETA 3s"
        );
        // A streamed source: totals unknown, so no `22/10` and no `/0 B`.
        c.begin(Phase::Uploading, Some("chunks"), 0, 0);
        c.add(22, 235_000_000);
        let text = describe(&c.snapshot(), None, None);
        assert_eq!(text, "224.1 MiB, 22 chunks");
        assert!(!text.contains("0 B"), "{text}");
        // More items than planned (a file grew a second chunk): no `n/m` with n > m.
        let s = snap(Phase::Uploading, "files", 12, 10, 5, 10);
        assert_eq!(describe(&s, None, None), "5 B/10 B, 12 files");
        let s = snap(Phase::Committing, "", 0, 0, 0, 0);
        assert_eq!(describe(&s, None, None), "writing the manifest");
    }

    #[test]
    fn the_gauge_fills_with_bytes_and_waits_without_a_total() {
        let s = snap(Phase::Uploading, "files", 0, 0, 5, 0);
        assert_eq!(gauge(&s), "[...]");
        let s = snap(Phase::Uploading, "files", 0, 0, 0, 100);
        assert_eq!(gauge(&s), format!("[>{}]", " ".repeat(29)));
        let s = snap(Phase::Uploading, "files", 0, 0, 50, 100);
        assert_eq!(
            gauge(&s),
            format!("[{}>{}]", "=".repeat(15), " ".repeat(14))
        );
        let s = snap(Phase::Uploading, "files", 0, 0, 120, 100);
        assert_eq!(gauge(&s), format!("[{}]", "=".repeat(30)));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(secs(12)), "12s");
        assert_eq!(short_duration(secs(245)), "4m05s");
        assert_eq!(short_duration(secs(3720)), "1h02m");
    }
}
