//! Lifecycle: `blobpipe lifecycle` prints an Azure management policy of the required
//! shape (packs only, never a delete), contradictions are rejected with located errors,
//! and the shipped example agrees with the Bicep example parameters.

use std::path::{Path, PathBuf};
use std::process::Command;

use blobpipe::pipeline::Pipeline;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blobpipe"))
}

fn write(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let f = dir.join(format!("{name}.toml"));
    std::fs::write(
        &f,
        format!(
            "name = \"{name}\"\n[source]\ntype = \"fs\"\nroot = \"/tmp\"\n[target]\nurl = \"file:///tmp/store\"\ncontainer = \"bkp\"\nprefix = \"team/{name}\"\n{extra}"
        ),
    )
    .unwrap();
    f
}

fn lifecycle(files: &[&Path]) -> (i32, Value, String) {
    let o = bin().arg("lifecycle").args(files).output().unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (
        o.status.code().unwrap(),
        v,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn policy_json_has_the_azure_schema_shape() {
    let t = tempfile::tempdir().unwrap();
    let a = write(
        t.path(),
        "web-data",
        "[lifecycle]\ncool_after_days = 0\ncold_after_days = 30\narchive_after_days = 90\n[incremental]\nfull_every = \"30d\"\n",
    );
    let b = write(t.path(), "db", "[lifecycle]\ncool_after_days = 14\n");
    let (code, v, err) = lifecycle(&[&a, &b]);
    assert_eq!(code, 0, "{err}");
    let top = v.as_object().unwrap();
    assert_eq!(top.keys().collect::<Vec<_>>(), ["policy"]);
    let rules = v["policy"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    for r in rules {
        // Every field Azure requires of a rule, and nothing else.
        let mut keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["definition", "enabled", "name", "type"]);
        assert_eq!(r["enabled"], Value::Bool(true));
        assert_eq!(r["type"], "Lifecycle");
        let name = r["name"].as_str().unwrap();
        assert!(
            name.len() <= 256 && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "{name}"
        );
        let def = &r["definition"];
        assert_eq!(
            def["filters"]["blobTypes"],
            serde_json::json!(["blockBlob"])
        );
        let prefixes = def["filters"]["prefixMatch"].as_array().unwrap();
        assert_eq!(prefixes.len(), 1);
        assert!(prefixes[0].as_str().unwrap().ends_with("/packs/"));
        let actions = def["actions"].as_object().unwrap();
        assert_eq!(actions.keys().collect::<Vec<_>>(), ["baseBlob"]);
        let base = actions["baseBlob"].as_object().unwrap();
        assert!(!base.contains_key("delete"), "never a delete action");
        for (action, cond) in base {
            assert!(
                ["tierToCool", "tierToCold", "tierToArchive"].contains(&action.as_str()),
                "{action}"
            );
            let c = cond.as_object().unwrap();
            assert_eq!(
                c.keys().collect::<Vec<_>>(),
                ["daysAfterModificationGreaterThan"]
            );
            assert!(c["daysAfterModificationGreaterThan"].is_u64());
        }
    }
    assert_eq!(rules[0]["name"], "packswebdata");
    assert_eq!(
        rules[0]["definition"]["filters"]["prefixMatch"][0],
        "bkp/team/web-data/packs/"
    );
    let base = &rules[0]["definition"]["actions"]["baseBlob"];
    assert_eq!(base["tierToCool"]["daysAfterModificationGreaterThan"], 0);
    assert_eq!(base["tierToCold"]["daysAfterModificationGreaterThan"], 30);
    assert_eq!(
        base["tierToArchive"]["daysAfterModificationGreaterThan"],
        90
    );
    let base = rules[1]["definition"]["actions"]["baseBlob"]
        .as_object()
        .unwrap();
    assert_eq!(base.keys().collect::<Vec<_>>(), ["tierToCool"]);
}

#[test]
fn azure_url_container_and_root_are_in_the_prefix() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("az.toml");
    std::fs::write(
        &f,
        "name = \"az\"\n[source]\ntype = \"fs\"\nroot = \"/tmp\"\n[target]\nurl = \"azure://myacct/data/org\"\n[lifecycle]\ncool_after_days = 10\n",
    )
    .unwrap();
    let (code, v, err) = lifecycle(&[&f]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        v["policy"]["rules"][0]["definition"]["filters"]["prefixMatch"][0],
        "data/org/az/packs/"
    );
}

#[test]
fn contradictions_are_rejected_with_located_errors() {
    let t = tempfile::tempdir().unwrap();
    let load = |extra: &str| {
        let f = write(t.path(), "c", extra);
        Pipeline::load(&f).map(|_| ()).map_err(|e| e.to_string())
    };
    // Tiers must get colder with age.
    let e = load("[lifecycle]\ncool_after_days = 30\ncold_after_days = 10\n").unwrap_err();
    assert!(
        e.contains("lifecycle.cold_after_days") && e.contains("colder"),
        "{e}"
    );
    assert!(e.contains("c.toml:11:"), "located: {e}");
    let e = load("[lifecycle]\ncold_after_days = 90\narchive_after_days = 90\n").unwrap_err();
    assert!(e.contains("lifecycle.archive_after_days"), "{e}");
    // Archiving sooner than full_every while incrementals reuse old packs.
    let e = load("[incremental]\nfull_every = \"30d\"\n[lifecycle]\narchive_after_days = 7\n")
        .unwrap_err();
    assert!(e.contains("incremental") && e.contains("archived"), "{e}");
    let e = load("[incremental]\nfull_every = \"never\"\n[lifecycle]\narchive_after_days = 365\n")
        .unwrap_err();
    assert!(e.contains("never"), "{e}");
    // …unless explicitly allowed, or incrementals are off.
    load("[incremental]\nfull_every = \"30d\"\n[lifecycle]\narchive_after_days = 7\nallow_archive_before_full = true\n").unwrap();
    load("[incremental]\nenabled = false\n[lifecycle]\narchive_after_days = 7\n").unwrap();
    load("[lifecycle]\ncool_after_days = 1\narchive_after_days = 8\n").unwrap();
    // Negative days, unknown keys, an empty table.
    let e = load("[lifecycle]\ncool_after_days = -1\n").unwrap_err();
    assert!(e.contains("lifecycle.cool_after_days"), "{e}");
    let e = load("[lifecycle]\ndelete_after_days = 10\n").unwrap_err();
    assert!(e.contains("unknown key"), "{e}");
    let e = load("[lifecycle]\n").unwrap_err();
    assert!(e.contains("no tier rule"), "{e}");
    // Without [lifecycle], the command explains.
    let f = write(t.path(), "none", "");
    let (code, _, err) = lifecycle(&[&f]);
    assert_eq!(code, 2);
    assert!(err.contains("[lifecycle]"), "{err}");
}

#[test]
fn the_shipped_example_agrees_with_the_bicep_example_parameters() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, v, err) = lifecycle(&[&root.join("pipelines/home.toml")]);
    assert_eq!(code, 0, "{err}");
    let rule = &v["policy"]["rules"][0];
    for params in ["containerapps", "functionapp"] {
        let p: Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(format!("bicep/examples/{params}.parameters.json")))
                .unwrap(),
        )
        .unwrap();
        let container = p["parameters"]["containerName"]["value"].as_str().unwrap();
        let bicep = p["parameters"]["lifecycleRules"]["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "home")
            .unwrap();
        assert_eq!(
            rule["definition"]["filters"]["prefixMatch"][0],
            format!("{container}/{}/packs/", bicep["prefix"].as_str().unwrap())
        );
        let base = &rule["definition"]["actions"]["baseBlob"];
        for (key, action) in [
            ("coolAfterDays", "tierToCool"),
            ("coldAfterDays", "tierToCold"),
            ("archiveAfterDays", "tierToArchive"),
        ] {
            let days = bicep[key].as_u64().unwrap();
            if days == 0 {
                assert!(base.get(action).is_none(), "{params}: {action}");
            } else {
                assert_eq!(
                    base[action]["daysAfterModificationGreaterThan"], days,
                    "{params}: {action}"
                );
            }
        }
        assert_eq!(
            rule["name"],
            format!("packs{}", bicep["name"].as_str().unwrap().replace('-', ""))
        );
    }
}
