//! Writing to stdout and stderr the way Unix tools do: a closed pipe is not a crash.
//!
//! `println!` panics when the reader has gone (`blobpipe ls … | head`), which turns a
//! finished command into exit 101 and, in a backup, can leave work undone. Everything the
//! command line prints goes through `outln!` and `errln!` instead: a write to a closed stdout marks it closed and every
//! later write is skipped (a listing stops early, a backup finishes and releases its lock);
//! a failed write to stderr is dropped. [`StderrWriter`] does the same for log lines, and
//! prints them above a progress bar when one is drawn.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Print one line on stdout; a broken pipe marks stdout closed (see [`stdout_closed`]).
pub fn out_line(args: fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = io::stdout().lock();
    if let Err(e) = writeln!(o, "{args}").and_then(|()| o.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
    }
}

/// Print text without a newline on stdout (pieces of one long document); a broken
/// pipe marks stdout closed.
pub fn out_str(args: fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
    }
}

/// Write raw bytes to stdout (`cat`); returns false once the pipe is closed.
pub fn out_bytes(data: &[u8]) -> bool {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return false;
    }
    if let Err(e) = io::stdout().lock().write_all(data) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
        return false;
    }
    true
}

/// Print one line on stderr (above the progress bar, if one is drawn); errors are dropped.
pub fn err_line(args: fmt::Arguments<'_>) {
    let line = format!("{args}\n");
    crate::support::progress::suspend(|| {
        let _ = io::stderr().lock().write_all(line.as_bytes());
    });
}

/// Whether a write to stdout found the pipe closed: long listings stop there.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// `println!` that survives a closed stdout.
macro_rules! outln {
    () => { $crate::support::out::out_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::support::out::out_line(format_args!($($arg)*)) };
}

/// `eprintln!` that survives a closed stderr and keeps the progress bar intact.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::support::out::err_line(format_args!($($arg)*)) };
}

pub(crate) use {errln, outln};

/// The log writer: stderr, above the progress bar, never failing the caller.
///
/// `tracing-subscriber` reports a failed write by printing to stderr itself (which panics
/// when stderr is closed); this writer swallows the error instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrWriter;

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::support::progress::suspend(|| {
            let _ = io::stderr().lock().write_all(buf);
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrWriter {
    type Writer = StderrWriter;
    fn make_writer(&'a self) -> Self::Writer {
        StderrWriter
    }
}
