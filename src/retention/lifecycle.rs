//! Lifecycle: the Azure Storage management policy that moves a pipeline's packs to
//! colder tiers as they age.
//!
//! The policy is one JSON document per storage account (`blobpipe lifecycle` takes one or
//! more pipelines and prints one rule per pipeline); the Bicep module
//! `bicep/modules/lifecycle.bicep` deploys the same rules, and
//! `scripts/check-bicep --lifecycle-json FILE` compares the two.
//!
//! Invariants: a rule's `prefixMatch` is exactly `<container>/<prefix>/packs/`, so
//! manifests, part and run records, verify reports and the lock never leave Hot (they
//! are small and read by every restore and listing); and there is never a `delete`
//! action — only `prune` knows whether a pack is still referenced.

use std::path::Path;

use serde_json::{json, Value};

use super::config::LifecycleConfig;
use crate::error::{Error, Result};
use crate::store::azure::builder::AzureTarget;
use crate::store::config::{StoreLocation, TargetConfig};

/// What a lifecycle rule needs of one pipeline: its name, target and `[lifecycle]`, and
/// the file it came from (for messages). `pipeline` builds it from a whole `Pipeline`
/// (`Pipeline::lifecycle_scope`).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The pipeline name (the rule name is made from it).
    pub name: &'a str,
    /// The pipeline file, named in errors.
    pub file: &'a Path,
    /// Where the pipeline stores (container, Azure URL, prefix).
    pub target: &'a TargetConfig,
    /// `[lifecycle]`; `None`: no rule can be made.
    pub lifecycle: Option<&'a LifecycleConfig>,
}

/// The rule name Azure accepts for a pipeline: `packs` + the name without `-`, `_`, `.`
/// (rule names must be alphanumeric), as the Bicep module builds it.
pub fn rule_name(pipeline: &str) -> String {
    let mut s = String::from("packs");
    s.extend(pipeline.chars().filter(|c| c.is_ascii_alphanumeric()));
    s
}

/// The `prefixMatch` of a pipeline's packs: `<container>/[<root>/]<prefix>/packs/`, with
/// the container (and root) an Azure URL names taking precedence over
/// `target.container`, as the store itself does.
///
/// # Errors
/// `Config` for an Azure location that does not parse.
pub fn packs_prefix(p: &Scope<'_>) -> Result<String> {
    let (container, root) = match &p.target.location {
        StoreLocation::Azure(loc) => {
            let t = AzureTarget::parse(loc, &p.target.container)?;
            (t.container, t.root)
        }
        _ => (p.target.container.clone(), String::new()),
    };
    let mut s = container;
    for part in [root.trim_matches('/'), p.target.prefix.trim_matches('/')] {
        if !part.is_empty() {
            s.push('/');
            s.push_str(part);
        }
    }
    s.push_str("/packs/");
    Ok(s)
}

/// One lifecycle rule for `p`.
///
/// # Errors
/// `Config` when `p` has no `[lifecycle]` table.
pub fn rule(p: &Scope<'_>) -> Result<Value> {
    let l = p.lifecycle.ok_or_else(|| {
        Error::config(format!(
            "{}: the pipeline has no [lifecycle] table (add e.g. cool_after_days = 30; see docs/retention.md)",
            p.file.display()
        ))
    })?;
    let mut base = serde_json::Map::new();
    for (action, days) in [
        ("tierToCool", l.cool_after_days),
        ("tierToCold", l.cold_after_days),
        ("tierToArchive", l.archive_after_days),
    ] {
        if let Some(d) = days {
            base.insert(
                action.into(),
                json!({ "daysAfterModificationGreaterThan": d }),
            );
        }
    }
    Ok(json!({
        "enabled": true,
        "name": rule_name(p.name),
        "type": "Lifecycle",
        "definition": {
            "filters": {
                "blobTypes": ["blockBlob"],
                "prefixMatch": [packs_prefix(p)?],
            },
            "actions": { "baseBlob": Value::Object(base) },
        },
    }))
}

/// The management policy for `pipelines` (one rule each).
///
/// # Errors
/// `Config` when a pipeline has no `[lifecycle]`, or two pipelines would get the same
/// rule name or packs prefix.
pub fn policy(pipelines: &[Scope<'_>]) -> Result<Value> {
    let mut rules = Vec::new();
    let mut names = std::collections::BTreeMap::new();
    let mut prefixes = std::collections::BTreeMap::new();
    for p in pipelines {
        let name = rule_name(p.name);
        if let Some(other) = names.insert(name.clone(), p.file.display().to_string()) {
            return Err(Error::config(format!(
                "{} and {other} both give the lifecycle rule name {name:?} (rule names drop '-', '_' and '.'); rename one pipeline",
                p.file.display()
            )));
        }
        let pre = packs_prefix(p)?;
        if let Some(other) = prefixes.insert(pre.clone(), p.file.display().to_string()) {
            return Err(Error::config(format!(
                "{} and {other} both store packs under {pre}; give each pipeline its own target.prefix",
                p.file.display()
            )));
        }
        rules.push(rule(p)?);
    }
    Ok(json!({ "policy": { "rules": rules } }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_are_alphanumeric() {
        assert_eq!(rule_name("postgres-main"), "packspostgresmain");
        assert_eq!(rule_name("a_b.c"), "packsabc");
    }
}
