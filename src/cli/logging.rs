//! Logging set-up for the binary: tracing to stderr, so stdout carries only the report.
//!
//! Levels: by default blobpipe logs at INFO and every dependency (the Azure SDK, reqwest,
//! hyper, database drivers) only warnings — the SDK logs each failed request attempt at
//! INFO, retried or not, which is noise in cron mail and Log Analytics. `-q` keeps only
//! warnings and errors, `-v` adds blobpipe's debug lines and the SDK's INFO, `-vv` is
//! debug of everything, `-vvv` trace. `RUST_LOG`, when set, replaces all of that.
//! Colour only when stderr is a terminal and `NO_COLOR` is unset or empty.

use std::io::IsTerminal;

use super::args::LogFormat;
use crate::support::out::StderrWriter;

/// The default filter for `-q` (`quiet`) and a `-v` count.
pub fn default_filter(quiet: bool, verbose: u8) -> &'static str {
    match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "warn,blobpipe=info",
        (false, 1) => "info,blobpipe=debug",
        (false, 2) => "debug",
        (false, _) => "trace",
    }
}

/// Whether to colour log lines: a terminal, and no `NO_COLOR` (<https://no-color.org>).
pub fn use_colour(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Install the tracing subscriber for `format` on stderr.
pub fn init_logging(format: LogFormat, quiet: bool, verbose: u8) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default_filter(quiet, verbose)));
    let ansi = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .with_writer(StderrWriter);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_is_warnings_and_sdk_noise_is_not_info() {
        assert_eq!(default_filter(true, 0), "warn");
        let d = default_filter(false, 0);
        assert!(
            d.starts_with("warn,"),
            "dependencies at warn by default: {d}"
        );
        assert!(d.contains("blobpipe=info"));
        assert!(default_filter(false, 1).contains("blobpipe=debug"));
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
