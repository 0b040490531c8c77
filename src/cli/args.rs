//! Every flag, argument and subcommand of the command line (clap types), and the few
//! conversions from raw flags to checked options ([`SnapshotSel::resolve`],
//! [`RehydrateArg`] → priority). Command bodies live in [`super::commands`].

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{Error, Result};
use crate::manifest::catalog;
use crate::manifest::layout::Repo;
use crate::store;
use crate::support::units::{parse_duration, parse_fraction};
use crate::verify::config::VerifyMode;

/// blobpipe: backup pipelines into Azure Blob Storage, verified, restorable with standard tools.
#[derive(Debug, Parser)]
#[command(
    name = "blobpipe",
    version,
    about,
    after_help = "Logs go to stderr: INFO and above by default, warnings and errors with -q, \
more with -v/-vv/-vvv. RUST_LOG (e.g. RUST_LOG=blobpipe=debug,azure_core=info) replaces \
the level flags. Colour only when stderr is a terminal and NO_COLOR is not set. \
Progress is drawn only on a terminal; elsewhere -v logs a progress line every 10 s."
)]
pub struct Cli {
    /// Print one JSON document instead of a human summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Quiet: log only warnings and errors, draw no progress.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More log detail: `-v` debug lines of blobpipe (and the Azure SDK's failed
    /// requests), `-vv` debug of everything, `-vvv` trace.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines (containers, Log Analytics).
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a pipeline file; point at the line and key of every problem.
    Validate {
        /// Pipeline file.
        pipeline: PathBuf,
    },
    /// Run a pipeline: extract → compress → upload → commit → verify.
    #[command(alias = "run")]
    Backup(BackupArgs),
    /// Copy snapshots (packs, segments, manifests) to another pipeline's store, e.g. in a
    /// second region: resumable, every block MD5-checked, the manifest written last.
    Copy {
        /// Pipeline file whose snapshots are copied.
        from: PathBuf,
        /// Pipeline file of the destination (its target is where the copies go).
        to: PathBuf,
        /// Snapshots to copy (ids, prefixes or `latest`); all when none.
        snapshots: Vec<String>,
    },
    /// List snapshots.
    Snapshots {
        /// Pipeline file.
        pipeline: PathBuf,
    },
    /// List the entries of a snapshot.
    Ls {
        /// Pipeline file.
        pipeline: PathBuf,
        /// Which snapshot.
        #[command(flatten)]
        sel: SnapshotSel,
        /// Gitignore-style globs selecting paths (repeatable).
        #[arg(long = "path")]
        globs: Vec<String>,
    },
    /// Paths added, changed and removed between two snapshots.
    Diff {
        /// Pipeline file.
        pipeline: PathBuf,
        /// The older snapshot (id, prefix or `latest`).
        from: String,
        /// The newer snapshot (id, prefix or `latest`).
        to: String,
    },
    /// Check that the store still holds a snapshot exactly.
    Verify(VerifyArgs),
    /// Write a pack's tar stream to stdout, decrypted and decompressed
    /// (`blobpipe cat p.toml <pack-id> | tar x`).
    Cat {
        /// Pipeline file (its store, and its `[encryption]` key if it has one).
        pipeline: PathBuf,
        /// Pack id (32 hex digits) or blob name (`packs/ab/<id>.tar.zst`).
        pack: String,
    },
    /// Encryption keys (`[encryption]`).
    Key {
        /// The key command.
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Restore a snapshot (or some paths) into a directory.
    Restore(RestoreArgs),
    /// Credentials: which one the chain picks for a pipeline's target, and what it can do.
    Auth {
        /// The auth command.
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Freshness (RPO) check: exit 9 and send `stale` alerts when a pipeline's newest
    /// verified snapshot is older than its `[freshness] rpo` (else `--max-age`).
    Check(CheckArgs),
    /// Per pipeline: last run, newest verified snapshot and its age, stored bytes by
    /// tier, last verify, last restore drill and its measured restore time.
    Status {
        /// A pipeline file or a directory of them.
        pipelines: PathBuf,
    },
    /// HTML dashboard of every pipeline's history (static site, inline SVG charts, no
    /// script): write it to a directory (`--html OUT/`) and/or upload it to the
    /// account's `$web` static website (`--publish`).
    Report(ReportArgs),
    /// Restore drill: restore the newest snapshot into a scratch directory, check every
    /// hash, record the measured restore time (RTO), alert on failure.
    Drill(DrillArgs),
    /// Run every pipeline on its `[schedule] cron` (UTC) until SIGTERM/Ctrl-C.
    Schedule(ScheduleArgs),
    /// Print the next scheduled run times.
    Next {
        /// A pipeline file or a directory of them.
        pipelines: PathBuf,
        /// How many times per pipeline.
        #[arg(long, default_value_t = 3)]
        count: usize,
    },
    /// Azure Functions custom handler: timer/HTTP invocations and Prometheus metrics.
    Serve(ServeArgs),
    /// Scale-out coordinator: take the run lease, plan the partitions and put one message
    /// per partition on the work queue, then exit (workers do the rest).
    Plan(PlanArgs),
    /// Scale-out worker: receive partitions from the work queue, pack them, record them;
    /// finalize the run (create-only manifest, verify, run record) when it is complete.
    Work(WorkArgs),
    /// Commit a scale-out run whose partitions are all recorded (a no-op, exit 0, when
    /// another finalizer already committed it).
    Finalize(FinalizeArgs),
    /// Run ONE handed-off run from the hand-off queue (what the queue-triggered Container
    /// Apps job runs): receive a message, run its pipeline with its run id, delete the
    /// message on success. Exit 0 when the queue is empty.
    RunQueued(RunQueuedArgs),
    /// Azure Functions app files.
    Functions {
        /// The functions command.
        #[command(subcommand)]
        command: FunctionsCommand,
    },
    /// Delete the snapshots `[retention]` does not keep (their manifests only; `prune`
    /// frees the packs). Prints which go and which rule keeps each survivor.
    Forget(RetentionArgs),
    /// Delete packs no remaining snapshot references (older than the grace period),
    /// finished runs' part records and forgotten snapshots' verify reports.
    Prune(RetentionArgs),
    /// Print the Azure Storage lifecycle management policy JSON for the pipelines'
    /// `[lifecycle]` tables (one rule each, packs only, never a delete action).
    Lifecycle {
        /// Pipeline files (one policy holds every pipeline of a storage account).
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
    },
}

/// `forget` / `prune` arguments.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Decide and print, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for a running backup to finish instead of failing.
    #[arg(long)]
    pub wait_lock: bool,
    /// Prune: keep unreferenced packs whose tier's early-deletion minimum (cool 30,
    /// cold 90, archive 180 days) has not passed, instead of deleting them early.
    #[arg(long)]
    pub defer_early_deletion: bool,
    /// Prune: grace period overriding `[retention] prune_grace` (e.g. "2d").
    #[arg(long)]
    pub grace: Option<String>,
    /// Prune: repack partly used packs until at most this share of the stored bytes is
    /// unused (e.g. "10%"; "0%" repacks every partly used pack). Overrides
    /// `[retention] max_unused`. With `--dry-run`, shows what it would repack.
    #[arg(long, value_name = "PCT")]
    pub max_unused: Option<String>,
}

/// `auth` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print the credential chosen for the pipeline's Azure target and whether it can
    /// list and write the container (a probe blob is written and deleted). Never prints
    /// a secret.
    Check {
        /// Pipeline file.
        pipeline: PathBuf,
    },
}

/// `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Re-wrap the pipeline's data key under the key its `[encryption]` names now, taking
    /// the old key from exactly one `--from-*` option. Packs, segments and manifests are
    /// not touched; only the key record `keys/<id>.json` is rewritten.
    Rotate(RotateArgs),
}

/// `key rotate` arguments: the old key-encryption key.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Pipeline file; its `[encryption]` names the new key.
    pub pipeline: PathBuf,
    /// The old key, in a file (64 hex digits or base64 of 32 bytes).
    #[arg(long)]
    pub from_key_file: Option<PathBuf>,
    /// The old key, in this environment variable.
    #[arg(long)]
    pub from_key_env: Option<String>,
    /// The old passphrase, in this environment variable.
    #[arg(long)]
    pub from_passphrase_env: Option<String>,
    /// The old passphrase, in a file.
    #[arg(long)]
    pub from_passphrase_file: Option<PathBuf>,
    /// The old key in Azure Key Vault: https://<vault>.vault.azure.net/keys/<name>[/<version>]
    /// (the record's own version unwraps).
    #[arg(long)]
    pub from_key_vault_key: Option<String>,
}

/// `backup` arguments.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Run id; pass an interrupted run's id to resume it. Defaults to
    /// `$CONTAINER_APP_JOB_EXECUTION_NAME` when set, else a fresh id.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Skip verification after commit.
    #[arg(long)]
    pub no_verify: bool,
    /// Wait for another run of the pipeline to finish instead of failing.
    #[arg(long)]
    pub wait_lock: bool,
    /// Read everything (a full backup), even if an incremental is possible.
    #[arg(long)]
    pub full: bool,
    /// Run the partitions in N worker processes over a work queue (the scale-out
    /// protocol of `plan`/`work`, on one machine). Directory sources only.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// The work queue of `--workers` (`file:///dir` or an Azure queue URL); default: a
    /// file queue in a fresh temporary directory.
    #[arg(long, requires = "workers")]
    pub queue: Option<String>,
}

/// `plan` arguments (the scale-out coordinator).
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// The work queue: `https://<account>.queue.core.windows.net/<queue>`, the emulator's
    /// `http://127.0.0.1:<port>/devstoreaccount1/<queue>`, or `file:///dir`.
    #[arg(long, env = "BLOBPIPE_WORK_QUEUE")]
    pub queue: String,
    /// Run id; default `$CONTAINER_APP_JOB_EXECUTION_NAME` when set, else a fresh id.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Read everything (a full backup), even if an incremental is possible.
    #[arg(long)]
    pub full: bool,
    /// Wait for another run of the pipeline to finish instead of failing.
    #[arg(long)]
    pub wait_lock: bool,
}

/// `work` arguments (a scale-out worker: what each job replica runs).
#[derive(Debug, Args)]
pub struct WorkArgs {
    /// A pipeline file or a directory of them (messages name their pipeline).
    #[arg(default_value = "pipelines", env = "BLOBPIPE_PIPELINES")]
    pub pipelines: PathBuf,
    /// The work queue (as for `plan`).
    #[arg(long, env = "BLOBPIPE_WORK_QUEUE")]
    pub queue: String,
    /// Work only on this run (others' messages stay on the queue) and stop when it
    /// ends; default `$CONTAINER_APP_JOB_EXECUTION_NAME` when set. Without one, serve
    /// any run and stop when the queue is empty.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Serve any run even when `$CONTAINER_APP_JOB_EXECUTION_NAME` is set (an
    /// event-triggered job, whose executions are not the coordinator's).
    #[arg(long, conflicts_with = "run_id")]
    pub any_run: bool,
    /// How long a received message stays invisible (renewed every third of it).
    #[arg(long, default_value = "2m", env = "BLOBPIPE_WORK_VISIBILITY")]
    pub visibility: String,
    /// After a failed attempt the partition's message reappears after this long.
    #[arg(long, default_value = "30s", env = "BLOBPIPE_WORK_RETRY_DELAY")]
    pub retry_delay: String,
    /// A partition tried this often without success is dead-lettered (the run fails).
    /// Attempts are counted by markers in the store, not by the queue's dequeue count,
    /// which receipts by workers of other runs raise too.
    #[arg(long, default_value_t = 5, env = "BLOBPIPE_WORK_MAX_DEQUEUE")]
    pub max_dequeue: u32,
    /// Wait between receives while the queue is empty and the run is not over.
    #[arg(long, default_value = "2s", env = "BLOBPIPE_WORK_POLL")]
    pub poll: String,
    /// With a run id: how long to wait for its coordinator to store the plan (or, with
    /// the queue empty and nothing received meanwhile, to finish enqueueing) before giving
    /// up (exit 6).
    #[arg(long, default_value = "10m")]
    pub plan_wait: String,
    /// Partitions worked on at once (default: the pipeline's `partitions.max_parallel`).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Leave a complete run to another finalizer (`backup --workers` finalizes itself).
    #[arg(long)]
    pub no_finalize: bool,
    /// Be the coordinator first if no other replica is (one pipeline file, a run id):
    /// take the run lease without waiting, plan and enqueue (a no-op when an earlier
    /// replica did), then work. What every replica of a parallel job runs.
    #[arg(long)]
    pub coordinate: bool,
}

/// `finalize` arguments.
#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// The run to commit.
    #[arg(long)]
    pub run_id: String,
}

/// Which snapshot: an id, a unique id prefix, `latest`, or `--at TIME`.
#[derive(Debug, Args)]
pub struct SnapshotSel {
    /// Snapshot id, unique id prefix, or `latest` (default).
    pub snapshot: Option<String>,
    /// The newest snapshot taken at or before this time (RFC 3339, or 2026-11-20T00:00Z, UTC).
    #[arg(long, conflicts_with = "snapshot")]
    pub at: Option<String>,
}

impl SnapshotSel {
    /// Whether this selection is `latest` (given or by default), not a named snapshot.
    pub fn is_latest(&self) -> bool {
        self.at.is_none() && self.snapshot.as_deref().is_none_or(|s| s == "latest")
    }

    /// The snapshot id this selection names.
    ///
    /// # Errors
    /// `NotFound` when no snapshot matches, `Config` for an unparsable `--at`.
    pub async fn resolve(&self, repo: &Repo) -> Result<String> {
        let (store, layout) = (&*repo.store, &repo.layout);
        match (&self.snapshot, &self.at) {
            (_, Some(at)) => catalog::resolve_at(store, layout, catalog::parse_time(at)?).await,
            (Some(s), None) => catalog::resolve(store, layout, s).await,
            (None, None) => catalog::resolve(store, layout, "latest").await,
        }
    }

    /// The head of the snapshot this selection names, for a command that reads its
    /// contents (restore, `ls`): `latest` and `--at` skip damaged snapshots, saying so on
    /// stderr; a snapshot named by id is taken as named (its damage is an error). The
    /// manifest is read once: the head the search read is the one returned.
    ///
    /// # Errors
    /// `NotFound` when no snapshot matches, `Integrity` when every candidate (or the named
    /// one) is damaged, `Config` for an unparsable `--at`.
    pub async fn load_readable(&self, repo: &Repo) -> Result<crate::manifest::Manifest> {
        let (store, layout) = (&*repo.store, &repo.layout);
        let at = match &self.at {
            Some(at) => Some(catalog::parse_time(at)?),
            None if !self.is_latest() => {
                return catalog::load_head(store, layout, &self.resolve(repo).await?).await
            }
            None => None,
        };
        let (m, skipped) = catalog::resolve_readable(store, layout, at).await?;
        crate::cli::render::skipped_damaged(&skipped, Some(&m.header.snapshot));
        Ok(m)
    }
}

/// `verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Which snapshot.
    #[command(flatten)]
    pub sel: SnapshotSel,
    /// Re-read this fraction of blocks and files ("10%" or 0.1).
    #[arg(long, conflicts_with_all = ["full", "metadata"])]
    pub sample: Option<String>,
    /// Re-read everything.
    #[arg(long, conflicts_with = "metadata")]
    pub full: bool,
    /// Check existence, sizes, block lists and Content-MD5 only.
    #[arg(long)]
    pub metadata: bool,
    /// Sampling seed (a report names the seed it used).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Encrypted pipelines: verify without the key, at block level only (block MD5s of
    /// the ciphertext, block lists, Content-MD5); frames and files are not checked.
    #[arg(long)]
    pub without_key: bool,
}

/// `restore` arguments.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Which snapshot.
    #[command(flatten)]
    pub sel: SnapshotSel,
    /// Target directory.
    #[arg(
        long,
        required_unless_present_any = ["to_db", "to_container"],
        conflicts_with_all = ["to_db", "to_container"]
    )]
    pub to: Option<PathBuf>,
    /// Restore the files as blobs into this container instead: an Azure target string
    /// (`azure://account/container[/prefix]`, an https URL with a SAS, a connection
    /// string; keys and SAS are best given through the environment, e.g.
    /// `AZURE_STORAGE_KEY`). Blobs keep their content type, metadata and tags.
    #[arg(long, value_name = "TARGET", conflicts_with = "to_db")]
    pub to_container: Option<String>,
    /// Load the snapshot's tables into this database instead (`postgres://…`,
    /// `mysql://…`). The password may come from `${ENV}` in the URL, or from
    /// `PGPASSWORD` / `MYSQL_PWD` when the URL has none.
    #[arg(long, value_name = "URL")]
    pub to_db: Option<String>,
    /// With --to-db: restore only this table (`table` or `schema.table`; repeatable).
    #[arg(long = "table", value_name = "T", requires = "to_db")]
    pub tables: Vec<String>,
    /// With --to-db: `fail-if-not-empty` (default), `truncate`, `append` or
    /// `skip-existing`, for all tables, or `table=strategy` for one (repeatable).
    /// Overrides the pipeline's `[restore]` section.
    #[arg(long = "strategy", value_name = "[TABLE=]STRATEGY", requires = "to_db")]
    pub strategies: Vec<String>,
    /// With --to-db: load table by table without one enclosing transaction.
    #[arg(long, requires = "to_db")]
    pub no_transaction: bool,
    /// With --to-db: load on up to N connections at once (tables not linked by foreign
    /// keys load in parallel; all commit together after every table is checked).
    /// Overrides `[restore] jobs` (default 4); 1 loads on one connection.
    #[arg(long, value_name = "N", requires = "to_db", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
    /// With --to-db: `immediate` (default: the target's foreign-key triggers check every
    /// row as it arrives) or `bulk` (PostgreSQL: triggers off for the restore's sessions,
    /// then one anti-join per foreign key before commit; needs the right to set
    /// `session_replication_role`). Overrides `[restore] fk_check`.
    #[arg(long, value_name = "MODE", requires = "to_db")]
    pub fk_check: Option<String>,
    /// With --to-db: load every table into this schema (PostgreSQL) or database (MySQL).
    #[arg(long, value_name = "NAME", requires = "to_db")]
    pub schema: Option<String>,
    /// Restore only paths matching these gitignore-style globs (repeatable).
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// Replace existing files in the target.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the packs the restore needs, their tiers, and what must be rehydrated from
    /// Archive (packs, bytes, expected wait), without restoring anything.
    #[arg(long)]
    pub plan: bool,
    /// Rehydrate archived packs first (copies to Hot staging blobs), wait for them with
    /// progress, restore, then delete the copies. Rerun to resume an interrupted wait.
    #[arg(long, value_enum)]
    pub rehydrate: Option<RehydrateArg>,
    /// With --rehydrate: seconds between polls of pending rehydrations.
    #[arg(long, default_value_t = 60)]
    pub rehydrate_poll_secs: u64,
}

/// `--rehydrate` priorities.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RehydrateArg {
    /// Up to 15 hours, cheaper.
    Standard,
    /// Usually under 1 hour for packs under 10 GB, costs more.
    High,
}

/// `check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A pipeline file or a directory of them.
    pub pipelines: PathBuf,
    /// Largest allowed age of the newest verified snapshot (e.g. 26h) for pipelines
    /// without `[freshness] rpo`.
    #[arg(long)]
    pub max_age: Option<String>,
}

/// `drill` arguments.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Snapshot id, prefix or `latest` (default).
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Make the scratch directory in this directory (default: the system temp dir).
    #[arg(long)]
    pub scratch_dir: Option<PathBuf>,
    /// Database pipelines: the server to restore into (`postgres://…` / `mysql://…`,
    /// password via PGPASSWORD / MYSQL_PWD); a uniquely named scratch schema (PostgreSQL)
    /// or database (MySQL) is made there and dropped afterwards. Default:
    /// `[restore] scratch_url`.
    #[arg(long, value_name = "URL")]
    pub scratch_db: Option<String>,
}

/// `schedule` arguments.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// A pipeline file or a directory of them (those with `[schedule]` run).
    pub pipelines: PathBuf,
    /// Do not catch up missed runs at start, whatever the pipelines say.
    #[arg(long)]
    pub no_catch_up: bool,
}

/// `serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A pipeline file or a directory of them (function names are pipeline names).
    #[arg(default_value = "pipelines", env = "BLOBPIPE_PIPELINES")]
    pub pipelines: PathBuf,
    /// Port; default `$FUNCTIONS_CUSTOMHANDLER_PORT`, else 8080.
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (the Functions host connects over loopback).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Serve the read-only HTML dashboard at `/dashboard/`, and to whom (docs/dashboard.md).
    #[arg(long, value_enum, default_value_t = DashboardArg::Off, env = "BLOBPIPE_DASHBOARD")]
    pub dashboard: DashboardArg,
}

/// `report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A pipeline file or a directory of them.
    pub pipelines: PathBuf,
    /// Write the site into this directory (index.html + one page per pipeline).
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
    /// Upload the site to the static-website container `$web` of the first pipeline's
    /// storage account (or the container given by `--container`).
    #[arg(long)]
    pub publish: bool,
    /// Container to publish into (default `$web`, the static website).
    #[arg(long, default_value = "$web", requires = "publish")]
    pub container: String,
    /// Prefix (folder) inside the container to publish under.
    #[arg(long, default_value = "", requires = "publish")]
    pub prefix: String,
    /// Newest run records, snapshots, verify reports and drills read per pipeline.
    #[arg(long, default_value_t = 1000)]
    pub history: usize,
    /// Most points per chart (runs beyond are grouped).
    #[arg(long, default_value_t = 120)]
    pub points: usize,
    /// Rows per table.
    #[arg(long, default_value_t = 30)]
    pub rows: usize,
}

/// Who may see `serve`'s `/dashboard/`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum DashboardArg {
    /// Not served (404): the default.
    #[default]
    Off,
    /// Only requests that App Service / Container Apps authentication (Easy Auth, Entra
    /// ID) let through: they carry `X-MS-CLIENT-PRINCIPAL-ID`; others get 401.
    EasyAuth,
    /// Anyone who can reach the port (loopback, a private network, your own proxy).
    Anonymous,
}

/// `run-queued` arguments.
#[derive(Debug, Args)]
pub struct RunQueuedArgs {
    /// A pipeline file or a directory of them (the message names the pipeline).
    #[arg(default_value = "pipelines", env = "BLOBPIPE_PIPELINES")]
    pub pipelines: PathBuf,
    /// The hand-off queue URL (`https://<account>.queue.core.windows.net/<queue>`); default:
    /// the one `[serve] queue_url` all hand-off pipelines share.
    #[arg(long, env = "BLOBPIPE_HANDOFF_QUEUE")]
    pub queue: Option<String>,
    /// How long the received message stays invisible (renewed every third of it while
    /// the run goes).
    #[arg(long, default_value = "2h")]
    pub visibility: String,
    /// After a failed run the message reappears after this long.
    #[arg(long, default_value = "5m")]
    pub retry_delay: String,
    /// A message received more often than this is poison (deleted, exit 1).
    #[arg(long, default_value_t = 5)]
    pub max_dequeue: u32,
}

/// `functions` subcommands.
#[derive(Debug, Subcommand)]
pub enum FunctionsCommand {
    /// Write host.json and one function.json per pipeline (timer on its cron as 6-field
    /// NCRONTAB) plus the `runs` HTTP function.
    Scaffold {
        /// A pipeline file or a directory of them.
        pipelines: PathBuf,
        /// Output directory (the Function App's root).
        #[arg(long)]
        out: PathBuf,
        /// The pipelines directory as the handler will see it, relative to the app root.
        #[arg(long, default_value = "pipelines")]
        pipeline_dir: String,
    },
}

impl RehydrateArg {
    /// The store's rehydration priority for this flag value.
    pub fn priority(self) -> store::RehydratePriority {
        match self {
            RehydrateArg::Standard => store::RehydratePriority::Standard,
            RehydrateArg::High => store::RehydratePriority::High,
        }
    }
}

impl VerifyArgs {
    /// The verify mode the flags ask for, else `default` (the pipeline's).
    ///
    /// # Errors
    /// `Config` for a `--sample` that is not a fraction in (0, 100%].
    pub fn mode(&self, default: VerifyMode) -> Result<VerifyMode> {
        Ok(if self.full {
            VerifyMode::Full
        } else if self.metadata {
            VerifyMode::Metadata
        } else if let Some(s) = &self.sample {
            let f = parse_fraction(s).map_err(Error::config)?;
            if !(f > 0.0 && f <= 1.0) {
                return Err(Error::config(format!(
                    "--sample must be in (0, 100%], got {s}"
                )));
            }
            VerifyMode::Sample(f)
        } else {
            default
        })
    }
}

impl RetentionArgs {
    /// `--grace` as a duration, `None` when not given.
    ///
    /// # Errors
    /// `Config` for an unparsable duration.
    pub fn grace(&self) -> Result<Option<std::time::Duration>> {
        self.grace
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| Error::config(format!("--grace: {e}")))
    }

    /// The `--max-unused` limit.
    ///
    /// # Errors
    /// `Config` for a value that is not a percentage.
    pub fn max_unused(&self) -> Result<Option<crate::retention::config::MaxUnused>> {
        self.max_unused
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| Error::config(format!("--max-unused: {e}")))
    }
}
