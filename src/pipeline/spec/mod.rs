//! Pipeline files: TOML in, a checked [`Pipeline`] out.
//!
//! Parsing happens once, here, at the edge. The raw `*Spec` structs (`raw`) mirror the
//! file (`deny_unknown_fields`, so a typo is an error, not a silently ignored key); then
//! [`Pipeline::load`] checks every value and cross-field rule and turns it into the
//! checked types the engine trusts. Every error names the file, line, column and key
//! and says how to fix it. `${VAR}` (and `${VAR:-default}`) in string values is replaced
//! from the environment, so secrets stay out of pipeline files.
//!
//! The checked types belong to the stages that use them (`extract::config`,
//! `pack::codec`, `store::config`, `verify::config`, `retention::config`,
//! `restore::config`, `alert::config`); this module only composes them into a
//! [`Pipeline`]. One file per area checks its tables: `source`, `target` (compression,
//! target, upload, retry), `run` (verify, lock, incremental), `schedule`, `alerts`,
//! `retention`, `restore`, `serve`; `check` holds the shared checker.

mod alerts;
mod check;
mod encryption;
mod locate;
mod raw;
mod restore;
mod retention;
mod run;
mod schedule;
mod serve;
mod source;
mod target;

use std::path::{Path, PathBuf};
use std::time::Duration;

use self::check::Checker;
use self::raw::PipelineSpec;
use crate::alert::config::WebhookConfig;
use crate::error::{Error, Result};
use crate::extract::config::{ChunkingConfig, PartitionsConfig, SourceConfig};
use crate::pack::codec::CompressionConfig;
use crate::restore::config::RestoreConfig;
use crate::retention::config::{ImmutabilityConfig, LifecycleConfig, RetentionConfig};
use crate::store::azure::queue_url::QueueUrl;
use crate::store::config::{RetryConfig, TargetConfig, UploadConfig};
use crate::verify::config::VerifyConfig;

/// A checked pipeline: every value valid, every default applied.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Pipeline name (`[a-z0-9_-]`), also the default store prefix.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The file it came from.
    pub file: PathBuf,
    /// What to back up.
    pub source: SourceConfig,
    /// How to split the source.
    pub partitions: PartitionsConfig,
    /// Content-defined chunks of large files (`[chunking]`).
    pub chunking: ChunkingConfig,
    /// Pack compression.
    pub compression: CompressionConfig,
    /// Where to store.
    pub target: TargetConfig,
    /// Upload shape.
    pub upload: UploadConfig,
    /// Verification policy.
    pub verify: VerifyConfig,
    /// Retry policy for store operations.
    pub retry: RetryConfig,
    /// Incremental backups.
    pub incremental: IncrementalConfig,
    /// Run-lock lease length (15–60 s, Azure's lease range); renewed every third of it.
    /// A killed run's lock expires after this long.
    pub lock_ttl: Duration,
    /// Cron schedule (UTC, 5 fields), stored for the scheduler.
    pub schedule: Option<String>,
    /// Alert webhooks, stored for the alerting stage.
    pub alerts: Vec<WebhookConfig>,
    /// Recovery point objective (`[freshness] rpo`): the newest verified snapshot may be
    /// at most this old; overrides `blobpipe check --max-age`.
    pub rpo: Option<Duration>,
    /// `[schedule] catch_up` (default true): after downtime, run a missed schedule once.
    pub catch_up: bool,
    /// Which snapshots to keep (`[retention]`); `None`: forget/prune refuse to run.
    pub retention: Option<RetentionConfig>,
    /// Tiering of packs by age (`[lifecycle]`), printed as an Azure management policy.
    pub lifecycle: Option<LifecycleConfig>,
    /// Write-once snapshots (`[immutability]`): policies set after each commit.
    pub immutability: Option<ImmutabilityConfig>,
    /// Client-side encryption (`[encryption]`): where the key-encryption key comes from.
    pub encryption: Option<crate::manifest::crypt::EncryptionConfig>,
    /// `[serve] handoff = "queue"`: `blobpipe serve` enqueues runs of this pipeline for a
    /// queue-triggered job (`blobpipe run-queued`) instead of running them itself.
    pub handoff: Option<HandoffConfig>,
    /// Defaults for `restore --to-db` (database sources).
    pub restore: RestoreConfig,
    /// Problems in the parts the loading command said it does not use ([`Needs`]), such
    /// as an unset variable in a source URL when printing a lifecycle policy. Always
    /// empty after [`Pipeline::load`]; [`Pipeline::complete`] turns them into an error
    /// for code that needs the whole pipeline after all.
    pub unchecked: Vec<String>,
}

/// Which parts of a pipeline file a command uses. Problems in the other parts (most
/// often an environment variable of the source that only the backup host sets) do not
/// stop a command that never reads them; they are kept in [`Pipeline::unchecked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Everything: backup, restore, validate and every single-file command.
    All,
    /// The store and the policies kept in it, not the source: `status`, `check`,
    /// `lifecycle`.
    Store,
    /// Only the name and the schedule settings: `next`, `functions scaffold`.
    Schedule,
}

impl Needs {
    fn deferred(self) -> &'static [&'static str] {
        match self {
            Needs::All => &[],
            Needs::Store => &["source", "restore"],
            Needs::Schedule => &["source", "restore", "target", "alerts"],
        }
    }
}

/// Checked `[serve]` hand-off.
///
/// Read by `serve` and `run-queued`, but kept here: `serve` sits above `pipeline`, and
/// the pipeline does not import the layers above it.
#[derive(Debug, Clone)]
pub struct HandoffConfig {
    /// The queue (its URL may carry a SAS: never print it, use `display()`).
    pub queue: QueueUrl,
}

/// When a backup reads everything again instead of only what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullEvery {
    /// Never forced (only `--full`, or when there is no parent).
    Never,
    /// After this many incrementals in a row.
    Count(u32),
    /// When the chain's full backup is at least this old.
    Age(Duration),
}

/// Checked incremental settings.
#[derive(Debug, Clone, Copy)]
pub struct IncrementalConfig {
    /// Reuse unchanged entries of the newest snapshot (default true).
    pub enabled: bool,
    /// Force a full backup on this schedule (bounds how old referenced packs get).
    pub full_every: FullEvery,
}

/// Replace `${VAR}` and `${VAR:-default}` from the environment.
///
/// # Errors
/// The name of the first unset variable without a default.
pub fn interpolate(s: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let Some(end) = r.find('}') else {
                out.push_str(after);
                rest = "";
                break;
            };
            let expr = &r[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            // Set-but-empty counts as unset: an empty store URL or root must never
            // silently become "somewhere else".
            match (std::env::var(name), default) {
                (Ok(v), _) if !v.is_empty() => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (_, None) => return Err(name.to_string()),
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Key-range size database tables are split into when `split_rows` is not set (unless
/// half of `[chunking] range_buffer` is smaller): small enough that a change touching 1%
/// of a table stores little more than the ranges it touched, large enough that a
/// 100 GB table stays within 4,096 ranges of ~25 MB.
const DEFAULT_SPLIT_BYTES: u64 = 4 << 20;

/// The pieces of a pipeline the retention stage takes (it sits below `pipeline` and
/// does not know the whole spec).
impl Pipeline {
    /// What `retention::forget`, `prune` and `after_backup` need of this pipeline.
    pub fn retention_scope(&self) -> crate::retention::Scope<'_> {
        crate::retention::Scope {
            file: &self.file,
            prefix: &self.target.prefix,
            policy: self.retention.as_ref(),
            lock_ttl: self.lock_ttl,
            encryption: self.encryption.as_ref(),
        }
    }

    /// Open the pipeline's store and, with `[encryption]`, its data key: a wrong or
    /// missing key fails here, before anything is read with it.
    ///
    /// # Errors
    /// As [`crate::manifest::layout::Repo::open`] and
    /// [`crate::manifest::layout::unlock`] (`WrongKey`, `Config`, `NotFound`).
    pub async fn open_repo(&self) -> crate::error::Result<crate::manifest::layout::Repo> {
        let mut r = crate::manifest::layout::Repo::open(&self.target, &self.retry).await?;
        r.unlock(self.encryption.as_ref(), false).await?;
        Ok(r)
    }

    /// What `retention::lifecycle` needs of this pipeline.
    pub fn lifecycle_scope(&self) -> crate::retention::lifecycle::Scope<'_> {
        crate::retention::lifecycle::Scope {
            name: &self.name,
            file: &self.file,
            target: &self.target,
            lifecycle: self.lifecycle.as_ref(),
        }
    }
}

impl Pipeline {
    /// Read, parse and check a pipeline file.
    ///
    /// # Errors
    /// `Config` with every problem found, each located by file, line and key.
    pub fn load(path: &Path) -> Result<Pipeline> {
        Self::load_for(path, Needs::All)
    }

    /// Read, parse and check a pipeline file for a command that uses only `needs`.
    ///
    /// # Errors
    /// `Config` with every problem found in the parts `needs` names.
    pub fn load_for(path: &Path, needs: Needs) -> Result<Pipeline> {
        let text = Self::read(path)?;
        Self::parse_with(path, &text, &[], needs)
    }

    /// This pipeline, if it was checked whole (no [`Pipeline::unchecked`] problems).
    ///
    /// # Errors
    /// `Config` listing the problems a partial load set aside.
    pub fn complete(&self) -> Result<&Pipeline> {
        if self.unchecked.is_empty() {
            Ok(self)
        } else {
            Err(Error::config(self.unchecked.join("\n")))
        }
    }

    /// Read and check a pipeline file for a command that only reads what is stored
    /// (`snapshots`, `ls`, `diff`, `verify`, `restore`): the source is never contacted, so
    /// a `${VAR}` in `[source]` may be unset — in a disaster the source and its URL are
    /// what is gone. The source's values are then empty; everything else is checked as by
    /// [`Pipeline::load`].
    ///
    /// # Errors
    /// As [`Pipeline::load`], without the source's unset variables.
    pub fn load_for_reading(path: &Path) -> Result<Pipeline> {
        let text = Self::read(path)?;
        Self::parse_with(path, &text, &["source."], Needs::All)
    }

    fn read(path: &Path) -> Result<String> {
        std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read pipeline file {}: {e}", path.display()))
        })
    }

    /// Parse and check pipeline text as if read from `path` (relative paths in it resolve
    /// against `path`'s directory).
    ///
    /// # Errors
    /// `Config` with every problem found.
    pub fn parse(path: &Path, text: &str) -> Result<Pipeline> {
        Self::parse_with(path, text, &[], Needs::All)
    }

    fn parse_with(path: &Path, text: &str, unused: &[&str], needs: Needs) -> Result<Pipeline> {
        let read = locate::read(path, text);
        let Some(spec) = read.spec else {
            return Err(Error::config(read.errors.join("\n")));
        };
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let mut c = Checker {
            file: path,
            text,
            errors: Vec::new(),
            unused,
            defer: needs.deferred(),
            deferred: Vec::new(),
        };
        let mut p = check(&mut c, spec, &base);
        // Keys removed after a structural error are not reported a second time (as
        // missing or empty) by the checks.
        let mut errors = read.errors;
        errors.extend(c.errors.into_iter().filter(|e| {
            !read
                .removed
                .iter()
                .any(|k| e.contains(&format!(" {k}:")) || e.contains(&format!(" {k}\n")))
        }));
        // In file order (messages without a position, such as a missing key, first).
        let prefix = format!("{}:", path.display());
        errors.sort_by_key(|e| {
            e.strip_prefix(&prefix)
                .and_then(|r| {
                    let mut it = r.splitn(3, ':');
                    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
                })
                .unwrap_or((0usize, 0usize))
        });
        if errors.is_empty() {
            p.unchecked = c.deferred;
            Ok(p)
        } else {
            Err(Error::config(errors.join("\n")))
        }
    }
}

fn check(c: &mut Checker<'_>, s: PipelineSpec, base: &Path) -> Pipeline {
    let name = s.name.get_ref().clone();
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        c.at(
            s.name.span(),
            "name",
            format!("invalid pipeline name {name:?}"),
            "use 1–63 characters of a–z, 0–9, '-' and '_'",
        );
    }

    let mut source = source::check_source(c, &s.source, base);
    let partitions = source::check_partitions(c, &s.partitions);
    source::check_readers(c, &s.partitions, &source);
    let chunking = source::check_chunking(c, &s.chunking);
    // Without an explicit `split_rows`, database tables are also split by size, so a
    // key range fits `range_buffer` and an unchanged range is reused.
    if let SourceConfig::Postgres(db) | SourceConfig::Mysql(db) = &mut source {
        if s.source.split_rows.is_none() {
            db.split_bytes = (chunking.range_buffer as u64 / 2).min(DEFAULT_SPLIT_BYTES);
        }
    }
    let compression = target::check_compression(c, &s.compression);
    let target = target::check_target(c, &s.target, &name, base);
    let upload = target::check_upload(c, &s.upload);
    let verify = run::check_verify(c, &s.verify);
    let retry = target::check_retry(c, &s.retry);
    let lock_ttl = run::check_lock_ttl(c, &s.lock);
    let incremental = run::check_incremental(c, &s.incremental);
    let (schedule, catch_up) = schedule::check_schedule(c, s.schedule.as_ref());
    let rpo = schedule::check_freshness(c, s.freshness.as_ref());
    let alerts = alerts::check_alerts(c, s.alerts);
    let restore = restore::check_restore(c, &s.restore, &source);
    let immutability = retention::check_immutability(c, s.immutability.as_ref(), &target);
    let encryption = encryption::check_encryption(c, s.encryption.as_ref(), base);
    Pipeline {
        name,
        description: s.description,
        file: c.file.to_path_buf(),
        source,
        partitions,
        chunking,
        compression,
        target,
        upload,
        verify,
        retry,
        incremental,
        lock_ttl,
        schedule,
        alerts,
        rpo,
        catch_up,
        retention: retention::check_retention(c, s.retention.as_ref()),
        lifecycle: retention::check_lifecycle(c, s.lifecycle.as_ref(), &incremental),
        immutability,
        encryption,
        handoff: serve::check_serve(c, s.serve.as_ref()),
        restore,
        unchecked: Vec::new(),
    }
}

#[cfg(test)]
mod fixtures {
    use std::path::Path;

    use super::Pipeline;
    use crate::error::Result;

    pub(super) const GOOD: &str = r#"
name = "demo"
[source]
type = "fs"
root = "data"
exclude = ["*.tmp", "target/"]
[target]
url = "file://store"
"#;

    pub(super) const PG: &str = r#"
name = "db"
[source]
type = "postgres"
url = "postgres://app:${BP_TEST_PGPW:-pw}@db:5432/app"
schemas = ["public", "audit"]
include = ["task_*", "public.variable"]
exclude = ["task_fail"]
split_rows = 5000
chunk_size = "8MiB"
[target]
url = "memory://x"
[restore]
strategy = "truncate"
[restore.tables]
variable = "skip-existing"
"#;

    pub(super) fn parse(text: &str) -> Result<Pipeline> {
        Pipeline::parse(Path::new("/etc/bp/demo.toml"), text)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::fixtures::{parse, GOOD};
    use super::*;
    use crate::extract::config::SourceConfig;
    use crate::manifest::codec::Codec;
    use crate::store::config::StoreLocation;
    use crate::verify::config::VerifyMode;

    #[test]
    fn good_file_gets_defaults_and_resolved_paths() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.name, "demo");
        assert_eq!(p.target.prefix, "demo");
        assert_eq!(p.target.container, "backups");
        assert_eq!(
            p.target.location,
            StoreLocation::Local(PathBuf::from("/etc/bp/store"))
        );
        let SourceConfig::Fs(fs) = &p.source else {
            panic!("fs source expected")
        };
        assert_eq!(fs.root, PathBuf::from("/etc/bp/data"));
        assert_eq!(p.upload.block_size, 8 << 20);
        assert_eq!(p.compression.codec, Codec::Zstd);
        assert_eq!(p.verify.mode, VerifyMode::Sample(0.1));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = GOOD.replace("[target]\n", "[target]\nbogus = 1\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("demo.toml:8:1"), "{e}");
        assert!(e.contains("target.bogus"), "{e}");
        assert!(e.contains("unknown key"), "{e}");
        assert!(e.contains("fix:"), "{e}");
    }

    #[test]
    fn env_interpolation_and_missing_var() {
        std::env::set_var("BP_TEST_ROOT", "/srv/data");
        let p = parse(&GOOD.replace("root = \"data\"", "root = \"${BP_TEST_ROOT}\"")).unwrap();
        let SourceConfig::Fs(fs) = &p.source else {
            panic!("fs source expected")
        };
        assert_eq!(fs.root, PathBuf::from("/srv/data"));
        let e = parse(&GOOD.replace("root = \"data\"", "root = \"${BP_TEST_NOPE_42}\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("BP_TEST_NOPE_42 is not set"), "{e}");
        assert_eq!(
            interpolate("a$${b}c${BP_TEST_NOPE_42:-d}").unwrap(),
            "a${b}cd"
        );
    }

    #[test]
    fn several_errors_reported_together() {
        let text = r#"
name = "Bad Name"
[source]
type = "ftp"
root = "x"
[target]
url = "file://s"
tier = "lukewarm"
"#;
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("invalid pipeline name"), "{e}");
        assert!(e.contains("unknown source type"), "{e}");
        assert!(e.contains("unknown access tier"), "{e}");
    }

    /// issue 14: a misspelt top-level table was reported against the table above it
    /// (`[partitions]: unknown field compresion`).
    #[test]
    fn misspelt_table_is_reported_as_itself_with_a_suggestion() {
        let text = GOOD.replace(
            "[target]\n",
            "[partitions]\ncount = 2\n[compresion]\ncodec = \"zstd\"\n[target]\n",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("demo.toml:9:2: compresion: unknown table [compresion]"),
            "{e}"
        );
        assert!(e.contains("did you mean [compression]?"), "{e}");
        assert!(!e.contains("[partitions]"), "{e}");
    }

    /// issue 14: `[source.extra]` after `[target]` was reported as `[target]`.
    #[test]
    fn sub_table_is_reported_under_its_parent() {
        let text = format!("{GOOD}[source.extra]\nx = 1\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("demo.toml:9:9: source.extra: unknown table [source.extra]"),
            "{e}"
        );
        assert!(e.contains("[source] takes: type, root"), "{e}");
        assert!(!e.contains("target"), "{e}");
    }

    /// issue 14: a missing `name` read `[source]: missing field 'name'`.
    #[test]
    fn missing_name_is_a_top_level_key() {
        let e = parse(&GOOD.replace("name = \"demo\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing key \"name\" at the top level"), "{e}");
        assert!(
            e.contains("add name = \"my-pipeline\" at the top of the file"),
            "{e}"
        );
        assert!(!e.contains("[source]"), "{e}");
        let e = parse(&GOOD.replace("url = \"file://store\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("demo.toml:7:1: [target]: missing key \"url\""),
            "{e}"
        );
    }

    /// issue 14: `block_size = 8.5` said "data did not match any variant of untagged enum
    /// Raw", `"-8MiB"` "unknown unit".
    #[test]
    fn size_values_get_clear_messages() {
        let e = parse(&format!("{GOOD}[upload]\nblock_size = 8.5\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("demo.toml:10:14: upload.block_size: a size is a whole number"),
            "{e}"
        );
        assert!(!e.contains("untagged"), "{e}");
        let e = parse(&format!("{GOOD}[upload]\nblock_size = \"-8MiB\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("negative sizes are not allowed"), "{e}");
        let e = parse(&format!("{GOOD}[partitions]\ncount = 2.5\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("partitions.count: expected a whole number or \"auto\""),
            "{e}"
        );
        assert!(!e.contains("untagged"), "{e}");
    }

    /// issue 13: `[verify] batch` is checked at the edge (one block at least) and
    /// defaults to 1 GiB.
    #[test]
    fn verify_batch_is_a_checked_size() {
        let e = parse(&format!("{GOOD}[verify]\nbatch = \"1KiB\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("verify.batch") && e.contains("out of range"),
            "{e}"
        );
        let p = parse(&format!("{GOOD}[verify]\nbatch = \"8MiB\"\n")).expect("valid");
        assert_eq!(p.verify.batch, 8 << 20);
        assert_eq!(parse(GOOD).expect("valid").verify.batch, 1 << 30);
    }

    /// issue 14: with two value errors only the first was reported.
    #[test]
    fn every_structural_and_value_error_is_collected() {
        let text = format!(
            "{GOOD}[upload]\nblock_size = \"8XB\"\nconcurrency = \"four\"\n[verify]\nsample = \"200%\"\n[compression]\nlevl = 3\n[target.x]\n"
        )
        .replace("[target]\n", "[target]\ntier = \"lukewarm\"\n");
        let e = parse(&text).unwrap_err().to_string();
        for want in [
            "upload.block_size: invalid size \"8XB\"",
            "upload.concurrency: invalid type: string \"four\", expected a whole number",
            "verify.sample: sample must be in (0, 1]",
            "compression.levl: unknown key \"levl\" in [compression] (did you mean compression.level?)",
            "target.x: unknown table [target.x]",
            "target.tier: unknown access tier",
        ] {
            assert!(e.contains(want), "{want:?} missing in:\n{e}");
        }
        // A removed key is not reported again by the checks.
        assert_eq!(e.matches("upload.block_size").count(), 1, "{e}");
    }
}

#[cfg(test)]
mod mysql_readers {
    use super::fixtures::parse;

    #[test]
    fn mysql_max_parallel_beyond_the_reader_cap_is_refused_at_its_line() {
        let text = |n: &str| {
            format!(
                "name = \"my\"\n[source]\ntype = \"mysql\"\nurl = \"mysql://u@h/app\"\n\
                 [partitions]\nmax_parallel = {n}\n[target]\nurl = \"memory://x\"\n"
            )
        };
        let e = parse(&text("65")).unwrap_err().to_string();
        assert!(e.contains("demo.toml:6:16"), "{e}");
        assert!(e.contains("partitions.max_parallel"), "{e}");
        assert!(e.contains("at most 64 connections, got 65"), "{e}");
        let p = parse(&text("64")).unwrap();
        assert_eq!(p.partitions.max_parallel, 64);
        assert!(parse(&text("\"auto\"")).is_ok());
        // Other sources keep the general 1–4096.
        let fs = text("65").replace(
            "type = \"mysql\"\nurl = \"mysql://u@h/app\"",
            "type = \"fs\"\nroot = \"/data\"",
        );
        assert_eq!(parse(&fs).unwrap().partitions.max_parallel, 65);
    }
}
