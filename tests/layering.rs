//! The import rules of docs/architecture.md, held by a test.
//!
//! Each top-level module of `src/` is a stage; a stage may name only the stages listed
//! for it below (imports point down the flow). The test reads every `.rs` file under
//! `src/`, collects each `crate::<module>` it names (in `use` lines, grouped
//! `use crate::{a, b::c}` imports and inline paths; comments and doc links are
//! ignored) and fails listing every file that names a stage it may not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The stages, lowest first, each with the stages it may import besides `error` and
/// `support`. `ALL_BELOW` means every stage listed before it. Keep in step with
/// docs/architecture.md.
const ALL_BELOW: &[&str] = &["*"];
const LAYERS: &[(&str, &[&str])] = &[
    ("error", &["support"]),
    ("support", &["error"]),
    ("store", &[]),
    ("manifest", &["store"]),
    ("db", &["manifest"]),
    ("pack", &["store", "manifest"]),
    ("extract", &["manifest", "db"]),
    ("verify", &["store", "manifest", "pack"]),
    ("restore", &["store", "manifest", "pack", "db", "verify"]),
    ("retention", &["store", "manifest"]),
    ("alert", &["store", "manifest"]),
    ("pipeline", ALL_BELOW),
    ("schedule", ALL_BELOW),
    ("report", ALL_BELOW),
    ("serve", ALL_BELOW),
    ("cli", ALL_BELOW),
];

/// Stage → every stage it may import.
fn allowed() -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut out = BTreeMap::new();
    for (k, (stage, may)) in LAYERS.iter().enumerate() {
        let mut v: Vec<&'static str> = if *may == ALL_BELOW {
            LAYERS[..k].iter().map(|(s, _)| *s).collect()
        } else {
            may.to_vec()
        };
        if !matches!(*stage, "error" | "support") {
            v.extend(["error", "support"]);
        }
        out.insert(*stage, v);
    }
    out
}

#[test]
fn the_layers_form_no_cycle() {
    // Every stage may only name stages listed before it (error and support excepted),
    // so the rules themselves cannot hide a cycle.
    for (k, (stage, may)) in LAYERS.iter().enumerate().skip(2) {
        for m in may.iter().filter(|m| **m != "*") {
            let pos = LAYERS.iter().position(|(s, _)| s == m);
            assert!(
                pos.is_some_and(|p| p < k),
                "`{stage}` may import `{m}`, which is not below it"
            );
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The stage a file belongs to: its first folder under src/, or its stem at the top.
fn stage_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Source text with `//` comments (incl. doc comments) and string literals blanked.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            }
            kept.push(if in_str { ' ' } else { c });
            prev = c;
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// Every top-level module named through `crate::`.
fn named_stages(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let before_ok = i == 0
            || !rest[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        if before_ok {
            if let Some(group) = after.strip_prefix('{') {
                // use crate::{a, b::c, d::{e, f}}: the first segment of each top-level item.
                let mut depth = 0;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            push_first(&item, &mut found);
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        item.push(c);
                    }
                }
                push_first(&item, &mut found);
            } else {
                push_first(after, &mut found);
            }
        }
        rest = after;
    }
    found
}

fn push_first(item: &str, found: &mut BTreeSet<String>) {
    let name: String = item
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    // The crate root re-exports the error type.
    let name = match name.as_str() {
        "Error" | "ErrorKind" | "Result" => "error".to_string(),
        _ => name,
    };
    if !name.is_empty() && name != "self" {
        found.insert(name);
    }
}

#[test]
fn imports_point_down_the_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let rules = allowed();
    let mut violations = Vec::new();
    let mut checked = 0;
    for f in &files {
        let stage = stage_of(&src, f);
        if matches!(stage.as_str(), "lib" | "main") {
            continue;
        }
        let Some(ok) = rules.get(stage.as_str()) else {
            violations.push(format!(
                "{}: stage `{stage}` has no import rule (add it here and to docs/architecture.md)",
                f.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests may reach anywhere: cut at the test module.
        let body = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        for used in named_stages(&code_only(body)) {
            if used != stage && !ok.contains(&used.as_str()) {
                violations.push(format!(
                    "{}: `{stage}` imports `crate::{used}`",
                    f.strip_prefix(&src).unwrap().display()
                ));
            }
        }
        checked += 1;
    }
    assert!(checked > 40, "only {checked} files checked: is src/ there?");
    assert!(
        violations.is_empty(),
        "imports that point up the flow:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn the_scanner_sees_grouped_and_inline_paths() {
    let code = code_only(
        "use crate::{store::Store, manifest::{a, b}};\n\
         // crate::cli in a comment\n\
         let s = \"crate::serve in a string\";\n\
         let x = crate::pipeline::spec::load(p);\n",
    );
    let got: Vec<String> = named_stages(&code).into_iter().collect();
    assert_eq!(got, ["manifest", "pipeline", "store"]);
}
