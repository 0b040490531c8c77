//! All printing of the command line: one JSON document with `--json` ([`emit`]), else
//! the human summary of each command. Command bodies compute a report and hand it here,
//! so what a command prints can be read (and changed) in one file.

use crate::support::out::{errln, outln};
use std::path::Path;

use serde::Serialize;

use crate::manifest::catalog::SnapshotInfo;
use crate::manifest::records::RunStatus;
use crate::manifest::{Diff, Entry, EntryKind};
use crate::pipeline::BackupReport;
use crate::restore::archive::RestorePlan;
use crate::restore::db::DbRestoreReport;
use crate::retention::{self, ForgetReport, PruneReport};
use crate::schedule::status::Freshness;
use crate::serve::handoff::{QueueOutcome, QueuedOutcome};
use crate::serve::scaffold::Scaffold;
use crate::store::azure::queue_url::QueueUrl;
use crate::store::azure::AuthReport;
use crate::support::units::human;
use crate::{restore, schedule, verify};

/// Print `value` as one pretty JSON document when `json`, else run `human`.
pub fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce()) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(s) => outln!("{s}"),
            Err(e) => errln!("error: encoding JSON output: {e}"),
        }
    } else {
        human();
    }
}

/// `validate`: one line naming what the pipeline file says.
pub fn validate(file: &Path, p: &crate::pipeline::Pipeline) {
    outln!(
        "{}: ok — pipeline {:?} → {} container {} prefix {} ({} level {}, partitions of {}, {} at once)",
        file.display(),
        p.name,
        p.target.display_url,
        p.target.container,
        p.target.prefix,
        p.compression.codec.as_str(),
        p.compression.level,
        crate::support::units::human(p.partitions.size),
        p.partitions.max_parallel
    )
}

/// `backup`: totals, run counters, changes, problems, verify, status.
pub fn backup(r: &BackupReport) {
    let t = &r.totals;
    outln!(
        "{} snapshot {} committed: {} files, {} dirs, {} symlinks, {} → {} stored in {} packs",
        r.kind,
        r.snapshot.as_deref().unwrap_or("-"),
        t.files,
        t.dirs,
        t.symlinks,
        human(t.bytes),
        human(t.stored_bytes),
        t.packs
    );
    outln!(
        "added to the store: {} in {} new packs ({} read from the source); {} in {} packs reused from the parent",
        human(r.new_stored_bytes),
        r.new_packs,
        human(r.bytes_read),
        human(r.reused_stored_bytes),
        r.reused_packs
    );
    outln!(
        "run {}: {} partitions ({} resumed), {} blocks uploaded, {} already staged by an earlier attempt, {} retries",
        r.run_id, r.partitions, r.partitions_resumed, r.blocks_staged, r.blocks_reused, r.retries
    );
    let c = &r.chunks;
    if c.files > 0 {
        outln!(
            "large files: {} read as chunks: {} chunks new ({}), {} reused ({}, not stored again{})",
            c.files,
            c.new,
            human(c.new_bytes),
            c.reused,
            human(c.reused_bytes),
            if c.reused_elsewhere > 0 {
                format!("; {} of them held by another path of the parent", c.reused_elsewhere)
            } else {
                String::new()
            }
        );
        if c.index_left_out > 0 {
            outln!(
                "chunk index full: {} of the parent's chunks indexed, {} left out (raise [chunking] index to reuse them from renamed or copied files)",
                c.indexed,
                c.index_left_out
            );
        }
    } else if c.source != "files" && c.new + c.reused > 0 {
        outln!(
            "{} chunks: {} new ({}), {} reused from the parent ({}, {:.1}% of the bytes read, not compressed or stored again)",
            if c.source == "tables" { "table" } else { "command output" },
            c.new,
            human(c.new_bytes),
            c.reused,
            human(c.reused_bytes),
            100.0 * c.reused_bytes as f64 / (c.new_bytes + c.reused_bytes).max(1) as f64
        );
    }
    if let Some(s) = &r.server_side {
        let why: Vec<String> = s
            .streamed
            .iter()
            .map(|(why, t)| format!("{} ({}) {why}", t.blobs, human(t.bytes)))
            .collect();
        outln!(
            "server-side: {} blobs ({}) staged by the target's service; streamed: {}",
            s.staged.blobs,
            human(s.staged.bytes),
            if why.is_empty() {
                "none".to_string()
            } else {
                why.join("; ")
            }
        );
    }
    if let Some(c) = &r.changes {
        outln!(
            "changes: {} new ({}), {} changed ({}), {} unchanged ({}), {} deleted ({}); {} files read",
            c.new,
            human(c.new_bytes),
            c.changed,
            human(c.changed_bytes),
            c.unchanged,
            human(c.unchanged_bytes),
            c.deleted,
            human(c.deleted_bytes),
            r.files_read
        );
    }
    if !r.skipped_damaged.is_empty() {
        outln!(
            "skipped damaged snapshot(s) {} (manifest unreadable); {}",
            r.skipped_damaged.join(", "),
            match (&r.parent, r.changes.is_some()) {
                (Some(p), _) => format!("incremental against {p}, the newest readable"),
                (None, true) => "full backup, compared against the newest readable".to_string(),
                (None, false) => "no readable snapshot: full backup".to_string(),
            }
        );
    }
    for p in r.problems.iter().take(20) {
        outln!("unreadable: {}: {}", p.path.display(), p.error);
    }
    for p in r.inconsistent.iter().take(20) {
        outln!("changed while read (stored as last read): {}", p.display());
    }
    if let Some(p) = &r.protection {
        outln!(
            "{}: {} blobs, {} set or extended by this run",
            protection(p),
            p.blobs,
            p.blobs_set
        );
    }
    if let Some(v) = &r.verify {
        verify_report(v);
    }
    if r.status == RunStatus::CommittedUnverified {
        if let Some(e) = &r.error {
            outln!("verify: could not complete: {e}");
        }
        outln!(
            "the snapshot is committed but unverified: rerun `backup --run-id {}` to verify it",
            r.run_id
        );
    }
    outln!("status: {:?}", r.status);
}

/// A note on stderr that `latest` skipped damaged snapshots (nothing when none was).
pub fn skipped_damaged(skipped: &[crate::manifest::catalog::Damaged], chosen: Option<&str>) {
    for d in skipped {
        errln!("warning: skipped damaged snapshot {}: {}", d.id, d.error);
    }
    if let (false, Some(c)) = (skipped.is_empty(), chosen) {
        errln!("warning: using {c}, the newest snapshot whose manifest reads");
    }
}

/// How a protection record reads: `immutable until 2027-01-06 (locked)`, `+ legal hold`.
pub fn protection(r: &crate::manifest::records::ProtectionRecord) -> String {
    let mut s = match r.until {
        Some(u) if u > chrono::Utc::now() => {
            format!(
                "immutable until {} ({})",
                u.format("%Y-%m-%d %H:%M"),
                r.mode
            )
        }
        Some(u) => format!("immutable until {} (ended)", u.format("%Y-%m-%d %H:%M")),
        None => String::new(),
    };
    if r.legal_hold {
        s.push_str(if s.is_empty() {
            "legal hold"
        } else {
            " + legal hold"
        });
    }
    s
}

/// `snapshots`: one line per snapshot.
pub fn snapshots(list: &[SnapshotInfo]) {
    outln!(
        "{:<28} {:<20} {:>8} {:>11} {:>11} verify",
        "id",
        "time",
        "files",
        "bytes",
        "stored"
    );
    for s in list {
        let Some(h) = &s.header else {
            outln!(
                "{:<28} DAMAGED: {}",
                s.id,
                s.damaged.as_deref().unwrap_or("manifest unreadable")
            );
            continue;
        };
        outln!(
            "{:<28} {:<20} {:>8} {:>11} {:>11} {}{}{}",
            s.id,
            h.committed_at.format("%Y-%m-%d %H:%M:%S"),
            h.totals.files,
            human(h.totals.bytes),
            human(h.totals.stored_bytes),
            s.verify_status,
            s.verify_mode
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            s.protection
                .as_ref()
                .map(|r| format!("  {}", protection(r)))
                .unwrap_or_default()
        );
    }
    if list.is_empty() {
        outln!("(no snapshots)");
    }
}

/// `diff`: `+`/`~`/`-` lines and a count line.
pub fn diff(d: &Diff, from: &str, to: &str) {
    for (sign, list) in [("+", &d.added), ("~", &d.changed), ("-", &d.removed)] {
        for p in list {
            outln!("{sign} {p}");
        }
    }
    outln!(
        "{} added, {} changed, {} removed ({} → {})",
        d.added.len(),
        d.changed.len(),
        d.removed.len(),
        from,
        to
    );
}

/// `ls`: one `ls -l`-like line per entry.
pub fn ls(entries: &[&Entry]) {
    for e in entries {
        let kind = match e.kind {
            EntryKind::File => '-',
            EntryKind::Dir => 'd',
            EntryKind::Symlink => 'l',
        };
        let t = chrono::DateTime::from_timestamp(e.mtime, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        let link = e
            .target
            .as_ref()
            .map(|t| format!(" -> {}", t.display()))
            .unwrap_or_default();
        outln!(
            "{kind}{:04o} {:>12} {t} {}{link}",
            e.mode,
            e.size,
            e.path.display()
        );
    }
}

/// `ls --json`, a batch at a time: one JSON array over all batches, each entry as
/// `serde_json` writes an [`Entry`] (`first`: the first batch opens the array).
pub fn ls_json_part(entries: &[&Entry], first: bool) {
    for (i, e) in entries.iter().enumerate() {
        let sep = if first && i == 0 { "[\n" } else { ",\n" };
        match serde_json::to_string_pretty(e) {
            Ok(s) => crate::support::out::out_str(format_args!("{sep}{s}")),
            Err(err) => errln!("error: encoding JSON output: {err}"),
        }
    }
}

/// Close the array [`ls_json_part`] opened (`empty`: nothing was printed).
pub fn ls_json_end(empty: bool) {
    outln!("{}", if empty { "[]" } else { "\n]" });
}

/// `auth check`: the credential and what it can do.
pub fn auth(r: &AuthReport) {
    outln!("target:     {}", r.target);
    outln!("credential: {} (from {})", r.credential, r.source);
    for t in &r.tried {
        outln!("  skipped:  {t}");
    }
    let yes_no = |ok: bool, err: &Option<String>| {
        if ok {
            "yes".to_string()
        } else {
            format!("NO — {}", err.as_deref().unwrap_or("unknown error"))
        }
    };
    outln!("can list:   {}", yes_no(r.can_list, &r.list_error));
    outln!("can write:  {}", yes_no(r.can_write, &r.write_error));
}

/// `restore --to-db`: one line per table.
pub fn restore_db(r: &DbRestoreReport) {
    outln!(
        "restored snapshot {} into {}{}:",
        r.snapshot,
        r.target,
        match (r.transaction, r.connections) {
            (true, 0 | 1) => " (one transaction)".to_string(),
            (true, n) => format!(" ({n} connections, committed together)"),
            (false, 0 | 1) => String::new(),
            (false, n) => format!(" ({n} connections)"),
        }
    );
    if r.fk_check == crate::restore::config::FkCheck::Bulk {
        outln!("  foreign keys checked in bulk before commit (--fk-check bulk)");
    }
    for t in &r.tables {
        outln!(
            "  {:<40} {:<18} {:>10} stored {:>10} added {:>10} now{}",
            t.table,
            t.strategy.as_str(),
            t.rows_stored,
            t.rows_added,
            t.rows_after,
            if t.checksum_checked {
                "  checksum ok"
            } else {
                ""
            }
        );
    }
    if !r.cycles.is_empty() {
        outln!("note: foreign-key cycle among {}", r.cycles.join(", "));
    }
}

/// `restore --to`: the summary line, then the paths that changed while backed up.
pub fn restore_files(r: &restore::RestoreReport) {
    restore_report(r, "");
    for p in r.inconsistent.iter().take(20) {
        outln!("note: {p} was changing while it was backed up");
    }
}

/// The summary line of a file restore; `note` follows the pack count.
pub fn restore_report(r: &restore::RestoreReport, note: &str) {
    outln!(
        "restored snapshot {} into {}: {} files ({}), {} dirs, {} symlinks; {} downloaded from {} packs{note}; every file's SHA-256 checked",
        r.snapshot,
        r.to.display(),
        r.files,
        human(r.bytes),
        r.dirs,
        r.symlinks,
        human(r.bytes_fetched),
        r.packs_read
    );
    damaged(r);
}

/// The files a restore could not write because their stored data is damaged.
fn damaged(r: &restore::RestoreReport) {
    const SHOWN: usize = 100;
    if r.ok() {
        return;
    }
    for d in r.damaged.iter().take(SHOWN) {
        outln!("DAMAGED {} (pack {}): {}", d.path, d.pack, d.error);
    }
    let shown = r.damaged.len().min(SHOWN) as u64;
    if r.damaged_total > shown {
        outln!(
            "… and {} more damaged files ({} listed with --json)",
            r.damaged_total - shown,
            r.damaged.len()
        );
    }
    outln!(
        "restore: PARTIAL — {} damaged files were not restored; everything else was (run `blobpipe verify --full` to see the damage)",
        r.damaged_total
    );
}

/// `restore --plan`: packs read, what must be rehydrated and the expected wait.
pub fn restore_plan(pl: &RestorePlan) {
    outln!(
        "restore of {} ({} entries) reads {} packs ({})",
        pl.snapshot,
        pl.entries,
        pl.packs.len(),
        human(pl.packs.iter().map(|x| x.size).sum())
    );
    for x in &pl.archived {
        outln!(
            "rehydrate {} ({}){}",
            x.blob,
            human(x.size),
            x.staging
                .as_deref()
                .map(|s| format!(" — staging copy {s}"))
                .unwrap_or_default()
        );
    }
    if pl.archived.is_empty() {
        outln!("nothing to rehydrate: every needed pack is online");
    } else {
        outln!(
            "{} archived packs, {} to rehydrate; expected wait: standard {}, high {}",
            pl.archived.len(),
            human(pl.archived_bytes),
            pl.wait_standard,
            pl.wait_high
        );
        outln!("start with: blobpipe restore … --rehydrate standard|high");
    }
}

/// A verify report: counts, every mismatch, the verdict.
pub fn verify_report(v: &verify::VerifyReport) {
    outln!(
        "verify {} of {}: {} packs, {} blocks and {} files re-read ({} of {} stored, {:.1}%), seed {}{}",
        v.mode,
        v.snapshot,
        v.packs,
        v.blocks_checked,
        v.entries_checked,
        human(v.bytes_read),
        human(v.bytes_stored),
        if v.bytes_stored == 0 {
            0.0
        } else {
            v.bytes_read as f64 * 100.0 / v.bytes_stored as f64
        },
        v.seed,
        if v.archived_packs_skipped > 0 {
            format!(
                ", {} archived packs checked by metadata only",
                v.archived_packs_skipped
            )
        } else {
            String::new()
        }
    );
    for m in &v.mismatches {
        outln!(
            "MISMATCH {} in {}{}: {}{}",
            m.check,
            m.blob,
            m.block.map(|b| format!(" block {b}")).unwrap_or_default(),
            m.detail,
            if m.paths.is_empty() {
                String::new()
            } else if m.paths_total > m.paths.len() {
                format!(
                    " — affects {} and {} more files",
                    m.paths.join(", "),
                    m.paths_total - m.paths.len()
                )
            } else {
                format!(" — affects {}", m.paths.join(", "))
            }
        );
        for u in &m.shared_with {
            outln!(
                "  also used by snapshot {}: {}{}",
                u.snapshot,
                u.paths.join(", "),
                if u.paths_total > u.paths.len() {
                    format!(" and {} more files", u.paths_total - u.paths.len())
                } else {
                    String::new()
                }
            );
        }
    }
    outln!("verify: {}", if v.ok() { "ok" } else { "MISMATCH" });
}

/// `forget`: keep/forget per snapshot with the rules that keep survivors.
pub fn forget(r: &ForgetReport, dry_run: bool) {
    for d in &r.decisions {
        if d.keep {
            let why: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
            outln!("keep   {}  ({})", d.id, why.join(", "));
        } else {
            outln!("forget {}", d.id);
        }
    }
    outln!(
        "{} snapshots kept, {} {}forgotten{}",
        r.kept,
        r.forgotten.len(),
        if dry_run { "to be " } else { "" },
        if r.forgotten.is_empty() || dry_run {
            ""
        } else {
            " (run `blobpipe prune` to free their packs)"
        }
    );
}

/// `prune`: packs and records deleted (or that would be, with `dry_run`).
pub fn prune(r: &PruneReport, dry_run: bool) {
    let (deleted, freed) = if dry_run {
        ("would be deleted", "would be freed")
    } else {
        ("deleted", "freed")
    };
    let repacked = if r.packs_moved_deleted > 0 {
        format!(" and {} repacked packs {deleted}", r.packs_moved_deleted)
    } else {
        String::new()
    };
    outln!(
        "{} snapshots, {} packs: {} referenced, {} younger than the grace period, {} unreferenced {deleted}{repacked} ({} {freed})",
        r.snapshots,
        r.packs_total,
        r.packs_referenced,
        r.packs_young,
        r.packs_deleted,
        human(r.bytes_freed)
    );
    for (tier, e) in &r.early_deletion {
        outln!(
            "{tier}: {} unreferenced packs ({}) inside the {}-day early-deletion minimum: {}{}",
            e.packs,
            human(e.bytes),
            retention::early_deletion_days(crate::store::Tier::parse(tier).unwrap_or_default()),
            if e.deferred {
                "kept (deferred)"
            } else {
                "deleted early (Azure charges the remaining days)"
            },
            e.free_after
                .map(|t| format!(", free to delete after {}", t.format("%Y-%m-%d")))
                .unwrap_or_default()
        );
    }
    outln!(
        "{} runs' part records ({} blobs), {} manifest segments and {} verify reports of forgotten snapshots {deleted} ({})",
        r.runs_cleaned.len(),
        r.part_blobs_deleted,
        r.segments_deleted,
        r.verify_reports_deleted,
        human(r.record_bytes_freed)
    );
    if let Some(u) = &r.usage {
        outln!(
            "space: {} referenced packs hold {}: {} used, {} unused ({:.1}%) in {} partly used packs ({} distinct records, {} segments read)",
            u.packs,
            human(u.stored_bytes),
            human(u.used_bytes),
            human(u.unused_bytes),
            u.unused_share * 100.0,
            u.packs_partly_used,
            u.records,
            u.segments_read
        );
    }
    if let Some(x) = &r.repack {
        let verb = if dry_run { "would repack" } else { "repacked" };
        outln!(
            "repack (--max-unused {}%): {verb} {} of {} partly used packs ({} read, {} of live records copied{}), freeing ~{}; unused after: ~{} ({:.1}%)",
            format!("{:.2}", x.max_unused * 100.0)
                .trim_end_matches('0')
                .trim_end_matches('.'),
            x.packs,
            x.candidates,
            human(x.bytes),
            human(x.live_raw_bytes),
            if dry_run {
                String::new()
            } else {
                format!(" into {} new packs of {}", x.new_packs, human(x.new_bytes))
            },
            human(x.frees_bytes),
            human(x.unused_bytes_after),
            x.unused_share_after * 100.0
        );
        for (why, s) in &x.skipped {
            outln!(
                "  left alone ({why}): {} packs, ~{} unused",
                s.packs,
                human(s.unused_bytes)
            );
        }
    }
    if r.packs_moved_waiting > 0 {
        outln!(
            "{} repacked packs kept until their moved record is older than the grace period (a later prune deletes them)",
            r.packs_moved_waiting
        );
    }
    if r.moved_records_deleted > 0 {
        outln!(
            "{} moved records no remaining snapshot needs {deleted}",
            r.moved_records_deleted
        );
    }
    if r.immutable_kept > 0 {
        outln!(
            "{} unreferenced blobs ({}) kept: the store refused to delete them, they are still under an immutability policy or legal hold (a later prune frees them)",
            r.immutable_kept,
            human(r.immutable_bytes)
        );
        for n in r.immutable_examples.iter().take(10) {
            outln!("  immutable: {n}");
        }
    }
}

/// `check`: one line per pipeline, undelivered alerts, config errors.
pub fn check(results: &[Freshness]) {
    for f in results {
        outln!(
            "{:<5} {}: {}",
            if f.stale { "STALE" } else { "ok" },
            f.pipeline,
            f.reason
        );
        for o in f.alerts.iter().filter(|o| !o.delivered) {
            outln!(
                "      alert to {} NOT delivered: {}",
                o.target,
                o.error.as_deref().unwrap_or("")
            );
        }
    }
}

/// `status`: each pipeline's status block (files that did not load go to stderr, once).
pub fn status(out: &[crate::schedule::status::PipelineStatus]) {
    for s in out {
        crate::schedule::status::print_status(s);
    }
}

/// `schedule`: per pipeline, the runs started, caught up, skipped and failed.
pub fn schedule(summary: &schedule::Summary) {
    for (p, n) in &summary.started {
        outln!(
            "{p}: {n} runs started ({} catch-up), {} ticks skipped (previous run still going), {} errors",
            summary.caught_up.get(p).unwrap_or(&0),
            summary.skipped_overlap.get(p).unwrap_or(&0),
            summary.errors.get(p).unwrap_or(&0)
        );
    }
}

/// `next`: each pipeline's cron and next times (from the JSON `next` builds).
pub fn next(out: &[serde_json::Value]) {
    for o in out {
        match o["cron"].as_str() {
            None => outln!("{}: no [schedule]", o["pipeline"].as_str().unwrap_or("")),
            Some(c) => {
                let times: Vec<&str> = o["next"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
                    .unwrap_or_default();
                outln!(
                    "{} ({c}, UTC): {}",
                    o["pipeline"].as_str().unwrap_or(""),
                    times.join(", ")
                );
            }
        }
    }
}

/// `run-queued`: what happened to the one message.
pub fn run_queued(out: &QueuedOutcome, queue: &QueueUrl, retry_delay: &str) {
    match out.outcome {
        QueueOutcome::Empty => outln!("{}: no message, nothing to run", queue.display()),
        QueueOutcome::Poison => outln!(
            "poison message {} deleted from {}",
            out.message_id.as_deref().unwrap_or("-"),
            queue.display()
        ),
        o => {
            let m = out.message.as_ref();
            outln!(
                "run {} of {}: {o}{}; message {}",
                m.map(|m| m.run_id.as_str()).unwrap_or("-"),
                m.map(|m| m.pipeline.as_str()).unwrap_or("-"),
                out.snapshot
                    .as_deref()
                    .map(|s| format!(", snapshot {s}"))
                    .unwrap_or_default(),
                if out.deleted {
                    "deleted".to_string()
                } else {
                    format!("reappears in {retry_delay}")
                }
            );
        }
    }
}

/// `functions scaffold`: files written, timers, unscheduled pipelines.
pub fn scaffold(s: &Scaffold, out: &Path) {
    for f in &s.files {
        outln!("wrote {}", out.join(f).display());
    }
    for (n, c) in &s.timers {
        outln!("timer {n}: {c} (NCRONTAB, UTC)");
    }
    for n in &s.unscheduled {
        outln!("note: {n} has no [schedule]: start it over HTTP (POST /api/runs/{n})");
    }
}

/// `plan`: what the coordinator enqueued.
pub fn planned(c: &crate::pipeline::scale::Coordinated) {
    if let Some(s) = &c.committed {
        outln!(
            "run {} already committed snapshot {s}: nothing to enqueue",
            c.run_id
        );
    } else if c.resumed {
        outln!(
            "run {}: {} partitions were enqueued by an earlier attempt",
            c.run_id,
            c.partitions
        );
    } else {
        outln!(
            "run {}: {} partitions, {} enqueued ({} described in blobs), {} already done",
            c.run_id,
            c.partitions,
            c.enqueued,
            c.described_in_blobs,
            c.already_done
        );
    }
}

/// `work`: what the worker did and how its runs ended.
pub fn worked(s: &crate::pipeline::scale::WorkSummary) {
    outln!(
        "{} partitions packed, {} already done, {} failed attempts, {} dead-lettered, {} foreign released; {} blocks staged, {} reused",
        s.processed,
        s.skipped_done,
        s.failed_attempts,
        s.dead_lettered,
        s.released_foreign,
        s.blocks_staged,
        s.blocks_reused
    );
    for r in &s.runs {
        match (&r.report, &r.error) {
            (Some(rep), _) => backup(rep),
            (None, Some(e)) => outln!("run {} ({}): {}: {e}", r.run_id, r.pipeline, r.outcome),
            (None, None) => outln!("run {} ({}): {}", r.run_id, r.pipeline, r.outcome),
        }
    }
}

/// `finalize`: committed, already committed, or not ready.
pub fn finalized(o: &crate::pipeline::scale::FinalizeOutcome) {
    use crate::pipeline::scale::FinalizeOutcome;
    match o {
        FinalizeOutcome::Committed { report } => backup(report),
        FinalizeOutcome::AlreadyCommitted { snapshot } => {
            outln!("already committed as snapshot {snapshot} (by another finalizer): nothing to do")
        }
        FinalizeOutcome::NotReady { why } => outln!("not ready to commit: {why}"),
        FinalizeOutcome::Verifying { snapshot, batches } => {
            outln!("committed snapshot {snapshot}; {batches} verify batch(es) enqueued")
        }
    }
}
