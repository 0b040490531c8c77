//! `blobpipe functions scaffold`: the Functions app layout that points the host at `serve`.
//!
//! It writes `host.json` (custom handler running `blobpipe serve <dir>`), one timer function
//! per scheduled pipeline (its 5-field cron as the 6-field NCRONTAB the host needs) and the
//! `runs` HTTP function. Function names are pipeline names, which is why a pipeline name
//! must be a valid function name; [`super::functions`] relies on that mapping.

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use super::functions::HTTP_FUNCTION;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Pipeline;

/// Turn a 5-field cron (UTC) into the 6-field NCRONTAB a timer trigger needs (`0 ` in
/// front: second zero).
///
/// # Errors
/// `Config` when `cron` does not have 5 fields.
pub fn ncrontab(cron: &str) -> Result<String> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(Error::config(format!(
            "{cron:?} is not a 5-field cron expression"
        )));
    }
    Ok(format!("0 {}", fields.join(" ")))
}

/// What [`scaffold`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Scaffold {
    /// Files written, relative to the output directory.
    pub files: Vec<String>,
    /// Timer functions: (function name, NCRONTAB schedule).
    pub timers: Vec<(String, String)>,
    /// Pipelines without a `[schedule]` (HTTP only).
    pub unscheduled: Vec<String>,
}

fn valid_function_name(n: &str) -> bool {
    n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && n.len() <= 127
}

/// Write a Functions app layout for `pipelines` into `out`: `host.json` (custom handler
/// running `blobpipe serve <pipeline_dir>`), one timer function per scheduled pipeline,
/// and the `runs` HTTP function.
///
/// # Errors
/// `Config` for a pipeline name that cannot be a function name (or clashes with `runs`),
/// `Internal` for write errors.
pub fn scaffold(pipelines: &[Pipeline], pipeline_dir: &str, out: &Path) -> Result<Scaffold> {
    let mut s = Scaffold {
        files: vec![],
        timers: vec![],
        unscheduled: vec![],
    };
    for p in pipelines {
        if !valid_function_name(&p.name) || p.name == HTTP_FUNCTION {
            return Err(Error::config(format!(
                "pipeline name {:?} cannot be a function name (it must start with a letter and not be {HTTP_FUNCTION:?}); rename the pipeline",
                p.name
            )));
        }
    }
    let write = |rel: &str, v: &Value| -> Result<()> {
        let path = out.join(rel);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| {
                Error::io(ErrorKind::Internal, format!("creating {}", d.display()), e)
            })?;
        }
        let text = serde_json::to_string_pretty(v).map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(|e| {
            Error::io(
                ErrorKind::Internal,
                format!("writing {}", path.display()),
                e,
            )
        })
    };
    let host = json!({
        "version": "2.0",
        "logging": {"logLevel": {"default": "Information"}},
        "extensionBundle": {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"},
        "functionTimeout": "-1",
        "customHandler": {
            "description": {
                "defaultExecutablePath": "blobpipe",
                "workingDirectory": "",
                "arguments": ["--log-format", "json", "serve", pipeline_dir]
            },
            "enableForwardingHttpRequest": false
        }
    });
    write("host.json", &host)?;
    s.files.push("host.json".into());
    for p in pipelines {
        match &p.schedule {
            Some(cron) => {
                let nc = ncrontab(cron)?;
                let f = json!({
                    "bindings": [{
                        "type": "timerTrigger",
                        "direction": "in",
                        "name": "timer",
                        "schedule": nc,
                        "runOnStartup": false,
                        "useMonitor": true
                    }]
                });
                let rel = format!("{}/function.json", p.name);
                write(&rel, &f)?;
                s.files.push(rel);
                s.timers.push((p.name.clone(), nc));
            }
            None => s.unscheduled.push(p.name.clone()),
        }
    }
    let http = json!({
        "bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function",
             "methods": ["get", "post"], "route": format!("{HTTP_FUNCTION}/{{pipeline?}}")},
            {"type": "http", "direction": "out", "name": "res"}
        ]
    });
    let rel = format!("{HTTP_FUNCTION}/function.json");
    write(&rel, &http)?;
    s.files.push(rel);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_become_ncrontab() {
        assert_eq!(ncrontab("30 2 * * *").unwrap(), "0 30 2 * * *");
        assert_eq!(ncrontab(" */15  * * * 1-5 ").unwrap(), "0 */15 * * * 1-5");
        assert!(ncrontab("0 30 2 * * *").is_err());
    }

    #[test]
    fn function_names() {
        assert!(valid_function_name("home-db_1"));
        assert!(!valid_function_name("1home"));
        assert!(!valid_function_name(""));
    }
}
