//! The checker every area check shares: it collects located messages instead of
//! stopping at the first, so one run of `blobpipe validate` shows every problem.
//!
//! A message reads `file:line:col: key: what is wrong` and, when there is one, a second
//! line `  fix: how to fix it`; tests and users rely on that shape.

use std::path::Path;

use toml::Spanned;

use super::interpolate;
use super::raw::SizeValue;
use crate::support::units::human;

/// Collects located errors while checking one file.
pub(super) struct Checker<'a> {
    /// The pipeline file, as given (printed in every message).
    pub(super) file: &'a Path,
    /// Its text (to turn byte offsets into line and column).
    pub(super) text: &'a str,
    /// Messages so far, in the order the checks ran.
    pub(super) errors: Vec<String>,
    /// Key prefixes the command will not use (`"source."` for commands that only read
    /// the store): a `${VAR}` left unset in them is not an error, the value stays empty.
    pub(super) unused: &'a [&'a str],
    /// Areas (`source`, `target`, …) the loading command does not use: their messages
    /// go to `deferred` instead of failing the load.
    pub(super) defer: &'static [&'static str],
    /// Messages about deferred areas.
    pub(super) deferred: Vec<String>,
}

impl Checker<'_> {
    /// Record `msg` about `key` at `span`, with a fix line unless `fix` is empty.
    pub(super) fn at(
        &mut self,
        span: std::ops::Range<usize>,
        key: &str,
        msg: impl std::fmt::Display,
        fix: &str,
    ) {
        let (line, col) = line_col(self.text, span.start);
        let mut s = format!("{}:{line}:{col}: {key}: {msg}", self.file.display());
        if !fix.is_empty() {
            s.push_str(&format!("\n  fix: {fix}"));
        }
        self.push(key, s);
    }

    fn push(&mut self, key: &str, msg: String) {
        let area = key
            .trim_start_matches('[')
            .split(['.', '[', ']'])
            .next()
            .unwrap_or("");
        if self.defer.contains(&area) {
            self.deferred.push(msg);
        } else {
            self.errors.push(msg);
        }
    }

    /// Record a required key that is absent (no position to point at).
    pub(super) fn missing(&mut self, key: &str, fix: &str) {
        let msg = format!("{}: missing key {key}\n  fix: {fix}", self.file.display());
        self.push(key, msg);
    }

    /// Whether the command leaves `key` unused (see [`Checker::unused`]).
    pub(super) fn is_unused(&self, key: &str) -> bool {
        self.unused.iter().any(|p| key.starts_with(p))
    }

    /// `${VAR}` / `${VAR:-default}` interpolation; `$${` escapes a literal `${`.
    pub(super) fn interp(&mut self, v: &Spanned<String>, key: &str) -> String {
        match interpolate(v.get_ref()) {
            Ok(s) => s,
            Err(_) if self.is_unused(key) => String::new(),
            Err(var) => {
                self.at(
                    v.span(),
                    key,
                    format!("environment variable {var} is not set (or empty)"),
                    &format!("export {var}=… before running, or write ${{{var}:-default}}"),
                );
                String::new()
            }
        }
    }
}

/// 1-based line and column of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, col)
}

/// A count in `1..=max`, `default` when absent.
pub(super) fn pos_count(
    c: &mut Checker<'_>,
    v: &Option<Spanned<i64>>,
    key: &str,
    default: usize,
    max: i64,
) -> usize {
    match v {
        None => default,
        Some(s) if *s.get_ref() >= 1 && *s.get_ref() <= max => *s.get_ref() as usize,
        Some(s) => {
            c.at(
                s.span(),
                key,
                format!("must be between 1 and {max}, got {}", s.get_ref()),
                "",
            );
            default
        }
    }
}

/// A size in `min..=max` bytes, `default` when absent.
pub(super) fn size_in(
    c: &mut Checker<'_>,
    v: &Option<Spanned<SizeValue>>,
    key: &str,
    default: usize,
    min: usize,
    max: usize,
) -> usize {
    match v {
        None => default,
        Some(s) if (min as u64..=max as u64).contains(&s.get_ref().0) => s.get_ref().0 as usize,
        Some(s) => {
            c.at(
                s.span(),
                key,
                format!("{} bytes is out of range", s.get_ref().0),
                &format!(
                    "use a size between {} and {}",
                    human(min as u64),
                    human(max as u64)
                ),
            );
            default
        }
    }
}
