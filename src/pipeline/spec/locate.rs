//! Reading the raw spec so that every problem of the file is reported, each against the
//! table it is in.
//!
//! serde stops at the first error. To report them all, the file is parsed once into
//! toml's spanned document tree; after each error the offending key is found in that
//! tree by the error's position, reported under its full dotted path (`compression`, not
//! the `[partitions]` table written above it; `source.extra`, not `target`), removed,
//! and the tree is read again. A required key that had to be removed ends the loop (the
//! rest cannot be read without it); every other error is collected.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::check::line_col;
use super::raw::PipelineSpec;

/// At most this many structural errors are collected from one file.
const MAX_ERRORS: usize = 50;

/// The result of reading a pipeline file's raw spec.
pub(super) struct Read {
    /// The spec, when one could be read (possibly with offending keys removed).
    pub(super) spec: Option<PipelineSpec>,
    /// Located messages, in the order found.
    pub(super) errors: Vec<String>,
    /// Dotted paths of keys removed after an error: checks of the spec must not report
    /// them again (as missing, say).
    pub(super) removed: Vec<String>,
}

/// Parse `text` and read it into a [`PipelineSpec`], collecting every error.
pub(super) fn read(path: &Path, text: &str) -> Read {
    let mut doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            // A syntax error: nothing after it can be trusted.
            let span = e.span().unwrap_or(0..0);
            let (line, col) = line_col(text, span.start);
            let msg = format!(
                "{}:{line}:{col}: {}\n  fix: check the TOML syntax at that line \
                 (quotes, brackets, `key = value`)",
                path.display(),
                first_line(e.message())
            );
            return Read {
                spec: None,
                errors: vec![msg],
                removed: vec![],
            };
        }
    };
    let mut errors = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    loop {
        let de = toml::de::Deserializer::from(doc.clone());
        let e = match PipelineSpec::deserialize(de) {
            Ok(spec) => {
                return Read {
                    spec: Some(spec),
                    errors,
                    removed,
                }
            }
            Err(e) => e,
        };
        let msg = e.message().trim().to_string();
        let span = e.span().unwrap_or(0..0);
        if let Some(field) = between_backticks(&msg, "missing field ") {
            let table = table_at(doc.get_ref(), &span);
            let full = join(&table, &field);
            if !removed.contains(&full) {
                errors.push(missing(path, text, &table, &field, &span));
            }
            // The key cannot be made up: stop here with what was found.
            return Read {
                spec: None,
                errors,
                removed,
            };
        }
        let Some(key_path) = key_at(doc.get_ref(), span.start) else {
            errors.push(located(path, text, &span, "", &msg, fix_for(&msg)));
            return Read {
                spec: None,
                errors,
                removed,
            };
        };
        errors.push(describe(path, text, &span, &key_path, &msg));
        let full = key_path.join(".");
        if !remove(doc.get_mut(), &key_path) || errors.len() >= MAX_ERRORS {
            return Read {
                spec: None,
                errors,
                removed,
            };
        }
        removed.push(full);
    }
}

fn first_line(s: &str) -> &str {
    s.trim().lines().next().unwrap_or("")
}

/// `x` in "... `x` ..." right after `prefix`.
fn between_backticks(msg: &str, prefix: &str) -> Option<String> {
    let rest = &msg[msg.find(prefix)? + prefix.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_string())
}

/// The names in serde's "expected one of `a`, `b`" (or "expected `a`").
fn expected_names(msg: &str) -> Vec<String> {
    let Some(i) = msg.find("expected") else {
        return vec![];
    };
    msg[i..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn join(table: &[String], key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{}.{key}", table.join("."))
    }
}

/// The dotted key path (tables and array-of-table elements flattened to their keys)
/// whose key or value holds `offset`; the deepest such key.
fn key_at(t: &DeTable<'_>, offset: usize) -> Option<Vec<String>> {
    for (k, v) in t.iter() {
        let inner = match v.get_ref() {
            DeValue::Table(sub) => key_at(sub, offset),
            DeValue::Array(a) => a.iter().find_map(|el| match el.get_ref() {
                DeValue::Table(sub) => key_at(sub, offset),
                _ => None,
            }),
            _ => None,
        };
        if let Some(mut rest) = inner {
            rest.insert(0, k.get_ref().to_string());
            return Some(rest);
        }
        if k.span().contains(&offset) || v.span().contains(&offset) {
            return Some(vec![k.get_ref().to_string()]);
        }
    }
    None
}

/// The table path whose value span is exactly `span` (serde's "missing field" points at
/// the table it is missing from); the top level when none is.
fn table_at(t: &DeTable<'_>, span: &Range<usize>) -> Vec<String> {
    fn go(t: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
        for (k, v) in t.iter() {
            path.push(k.get_ref().to_string());
            let hit = match v.get_ref() {
                DeValue::Table(sub) => v.span() == *span || go(sub, span, path),
                DeValue::Array(a) => a.iter().any(|el| match el.get_ref() {
                    DeValue::Table(sub) => el.span() == *span || go(sub, span, path),
                    _ => false,
                }),
                _ => false,
            };
            if hit {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = Vec::new();
    go(t, span, &mut path);
    path
}

/// Remove the key at `path` (descending into tables and array-of-table elements).
fn remove(t: &mut DeTable<'_>, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => t.remove(last.as_str()).is_some(),
        [first, rest @ ..] => match t.get_mut(first.as_str()).map(Spanned::get_mut) {
            Some(DeValue::Table(sub)) => remove(sub, rest),
            Some(DeValue::Array(a)) => a.iter_mut().any(|el| match el.get_mut() {
                DeValue::Table(sub) => remove(sub, rest),
                _ => false,
            }),
            _ => false,
        },
    }
}

fn located(
    path: &Path,
    text: &str,
    span: &Range<usize>,
    key: &str,
    msg: &str,
    fix: String,
) -> String {
    let (line, col) = line_col(text, span.start);
    let key = if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    };
    let mut s = format!("{}:{line}:{col}: {key}{msg}", path.display());
    if !fix.is_empty() {
        s.push_str(&format!("\n  fix: {fix}"));
    }
    s
}

fn fix_for(_msg: &str) -> String {
    "see docs/pipeline-reference.md for the expected type and format".into()
}

/// One message for an error about the key at `key_path`.
fn describe(
    path: &Path,
    text: &str,
    span: &Range<usize>,
    key_path: &[String],
    msg: &str,
) -> String {
    let full = key_path.join(".");
    let Some(field) = between_backticks(msg, "unknown field ") else {
        // A value error: the custom messages already say what is wrong and what to write.
        let msg = plain_types(msg);
        return located(path, text, span, &full, &msg, fix_for(&msg));
    };
    let expected = expected_names(msg);
    let parent = &key_path[..key_path.len().saturating_sub(1)];
    let is_table = text
        .get(span.start.saturating_sub(1)..span.start)
        .is_some_and(|c| c == "[" || c == ".")
        && line_of(text, span.start).trim_start().starts_with('[');
    let where_ = if parent.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{}]", parent.join("."))
    };
    let what = if is_table {
        format!("unknown table [{full}]")
    } else {
        format!("unknown key {field:?} {where_}")
    };
    let suggestion = did_you_mean(&field, &expected).map(|s| {
        if is_table {
            format!("[{}]", join(parent, &s))
        } else {
            join(parent, &s)
        }
    });
    let msg = match &suggestion {
        Some(s) => format!("{what} (did you mean {s}?)"),
        None => what,
    };
    let list = expected.join(", ");
    let fix = match (suggestion, parent.is_empty()) {
        (Some(s), _) => format!("rename it to {s}; see docs/pipeline-reference.md"),
        (None, true) => {
            format!("remove it; the top level takes: {list} (docs/pipeline-reference.md)")
        }
        (None, false) => format!(
            "remove it; [{}] takes: {list} (docs/pipeline-reference.md)",
            parent.join(".")
        ),
    };
    located(path, text, span, &full, &msg, fix)
}

/// serde's Rust type names in words.
fn plain_types(msg: &str) -> String {
    [
        ("expected i64", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list [\"…\", \"…\"]"),
    ]
    .iter()
    .fold(msg.to_string(), |m, (a, b)| m.replace(a, b))
}

fn line_of(text: &str, offset: usize) -> &str {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    text[start..].lines().next().unwrap_or("")
}

/// A "missing field" message: the top-level `name` gets the words a user needs.
fn missing(path: &Path, text: &str, table: &[String], field: &str, span: &Range<usize>) -> String {
    if table.is_empty() {
        let fix = match field {
            "name" => "add name = \"my-pipeline\" at the top of the file, before the first \
                       [table] (1–63 characters of a–z, 0–9, '-' and '_'; it is also the \
                       default store prefix)"
                .to_string(),
            "source" => {
                "add a [source] table, e.g. [source] type = \"fs\" root = \"/srv/data\"".into()
            }
            "target" => "add a [target] table, e.g. [target] url = \"file:///var/backups\"".into(),
            _ => format!("add {field} = … at the top of the file; see docs/pipeline-reference.md"),
        };
        return format!(
            "{}: missing key {field:?} at the top level\n  fix: {fix}",
            path.display()
        );
    }
    let t = table.join(".");
    located(
        path,
        text,
        span,
        &format!("[{t}]"),
        &format!("missing key {field:?}"),
        format!("add {field} = … to [{t}]; see docs/pipeline-reference.md"),
    )
}

/// The closest of `candidates` to `word` (edit distance at most 2, or a prefix of 3+).
fn did_you_mean(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2 || (word.len() >= 3 && c.starts_with(word)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_names_are_suggested() {
        let c: Vec<String> = ["compression", "partitions", "target"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            did_you_mean("compresion", &c).as_deref(),
            Some("compression")
        );
        assert_eq!(did_you_mean("zzz", &c), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
