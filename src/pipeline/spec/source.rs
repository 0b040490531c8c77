//! `[source]` and `[partitions]`: checked into the extract stage's own config types.
//!
//! Keys that belong to another source type are errors (a `root` on a database source is
//! a mistake, not something to ignore); patterns and URLs are checked here so the readers
//! never see a bad one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::check::{size_in, Checker};
use super::interpolate;
use super::raw::{AutoWord, ChunkingSpec, CountOrAuto, PartitionsSpec, SourceSpec};
use crate::extract::config::{
    BlobSourceConfig, ChunkingConfig, CommandSourceConfig, DbSourceConfig, FsSourceConfig,
    PartitionsConfig, Rehydrate, SourceConfig,
};
use crate::support::secret::{redact_url, Secret};
use crate::support::units::parse_duration;

/// `[partitions]`: `count` and `max_parallel` (1–4096 or `"auto"`, from the core count).
pub(super) fn check_partitions(c: &mut Checker<'_>, s: &PartitionsSpec) -> PartitionsConfig {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let count_of =
        |c: &mut Checker<'_>, v: &Option<Spanned<CountOrAuto>>, key: &str, auto: usize| match v {
            None => auto,
            Some(sp) => match *sp.get_ref() {
                CountOrAuto::Word(AutoWord::Auto) => auto,
                CountOrAuto::Count(n) if (1..=4096).contains(&n) => n as usize,
                CountOrAuto::Count(n) => {
                    c.at(
                        sp.span(),
                        key,
                        format!("must be 1–4096 or \"auto\", got {n}"),
                        "",
                    );
                    auto
                }
            },
        };
    if let Some(sp) = &s.count {
        // Partitions are cut by size since format 2 (a count needs the whole tree
        // listed first); an old pipeline file still loads.
        let (line, col) = super::check::line_col(c.text, sp.span().start);
        tracing::warn!(
            "{}:{line}:{col}: partitions.count is no longer used: filesystem partitions are \
             cut by partitions.size (default 64MiB) and partitions.max_entries; remove the key",
            c.file.display()
        );
    }
    let max_entries = match &s.max_entries {
        None => PartitionsConfig::DEFAULT_MAX_ENTRIES,
        Some(sp) => match *sp.get_ref() {
            CountOrAuto::Word(AutoWord::Auto) => PartitionsConfig::DEFAULT_MAX_ENTRIES,
            CountOrAuto::Count(n) if (16..=1_000_000).contains(&n) => n as usize,
            CountOrAuto::Count(n) => {
                c.at(
                    sp.span(),
                    "partitions.max_entries",
                    format!("must be 16–1000000 or \"auto\", got {n}"),
                    "the default is 8192; more entries per partition means more memory per worker",
                );
                PartitionsConfig::DEFAULT_MAX_ENTRIES
            }
        },
    };
    PartitionsConfig {
        size: size_in(
            c,
            &s.size,
            "partitions.size",
            PartitionsConfig::DEFAULT_SIZE as usize,
            64 << 10,
            1 << 40,
        ) as u64,
        max_entries,
        max_parallel: count_of(c, &s.max_parallel, "partitions.max_parallel", cores),
    }
}

/// A MySQL source opens `max_parallel` connections inside its one snapshot: more than
/// [`crate::extract::mysql::MAX_READERS`] is refused here rather than capped in silence
/// (`"auto"`, the core count, is capped by the session).
pub(super) fn check_readers(c: &mut Checker<'_>, s: &PartitionsSpec, source: &SourceConfig) {
    let max = crate::extract::mysql::MAX_READERS;
    if let (SourceConfig::Mysql(_), Some(sp)) = (source, &s.max_parallel) {
        if let CountOrAuto::Count(n) = *sp.get_ref() {
            if n > max as i64 {
                c.at(
                    sp.span(),
                    "partitions.max_parallel",
                    format!("a MySQL/MariaDB source reads with at most {max} connections, got {n}"),
                    &format!(
                        "each reader holds a server connection inside the backup's snapshot; \
                         use 1–{max} (the server's max_connections must leave room for them)"
                    ),
                );
            }
        }
    }
}

/// `[chunking]`: `threshold` (4 KiB–1 TiB) and the chunk sizes, within FastCDC 2020's
/// limits (`min_size` 64 B–1 MiB, `avg_size` 256 B–4 MiB, `max_size` 1 KiB–16 MiB), even,
/// with `min_size ≤ avg_size ≤ max_size`; `range_buffer` 0–4 GiB (0: no table range
/// reuse); `index` 0–4 GiB (0: no reuse across paths).
pub(super) fn check_chunking(c: &mut Checker<'_>, s: &ChunkingSpec) -> ChunkingConfig {
    use fastcdc::v2020 as cdc;
    let d = ChunkingConfig::default();
    let threshold = size_in(
        c,
        &s.threshold,
        "chunking.threshold",
        d.threshold as usize,
        4 << 10,
        1 << 40,
    ) as u64;
    let sized = |c: &mut Checker<'_>, v, key: &str, def: usize, lo: usize, hi: usize| {
        let n = size_in(c, v, key, def, lo, hi);
        if n % 2 == 1 {
            if let Some(sp) = v {
                c.at(
                    sp.span(),
                    key,
                    format!("{n} bytes is odd"),
                    "the chunker needs an even size, e.g. 1MiB",
                );
            }
            return def;
        }
        n
    };
    let min = sized(
        c,
        &s.min_size,
        "chunking.min_size",
        d.min,
        cdc::MINIMUM_MIN,
        cdc::MINIMUM_MAX,
    );
    let avg = sized(
        c,
        &s.avg_size,
        "chunking.avg_size",
        d.avg,
        cdc::AVERAGE_MIN,
        cdc::AVERAGE_MAX,
    );
    let max = sized(
        c,
        &s.max_size,
        "chunking.max_size",
        d.max,
        cdc::MAXIMUM_MIN,
        cdc::MAXIMUM_MAX,
    );
    let range_buffer = size_in(
        c,
        &s.range_buffer,
        "chunking.range_buffer",
        d.range_buffer,
        0,
        4 << 30,
    );
    let index = size_in(c, &s.index, "chunking.index", d.index, 0, 4 << 30);
    if !(min <= avg && avg <= max) {
        let span = s
            .avg_size
            .as_ref()
            .or(s.min_size.as_ref())
            .or(s.max_size.as_ref())
            .map(|v| v.span())
            .unwrap_or(0..0);
        c.at(
            span,
            "chunking.avg_size",
            format!("min_size {min} ≤ avg_size {avg} ≤ max_size {max} does not hold"),
            "give sizes in that order (the defaults are 512KiB, 1MiB and 8MiB)",
        );
        return d;
    }
    ChunkingConfig {
        threshold,
        min,
        avg,
        max,
        range_buffer,
        index,
    }
}

/// `[source]`: dispatch on `type`, refusing keys that belong to another source type.
pub(super) fn check_source(c: &mut Checker<'_>, s: &SourceSpec, base: &Path) -> SourceConfig {
    let kind = s.kind.get_ref().as_str();
    // Keys that belong to other source types are errors, not silently ignored.
    let foreign = |c: &mut Checker<'_>, allowed: &[&str]| {
        let present: [(&str, Option<std::ops::Range<usize>>); 14] = [
            ("root", s.root.as_ref().map(|v| v.span())),
            ("url", s.url.as_ref().map(|v| v.span())),
            ("password", s.password.as_ref().map(|v| v.span())),
            ("schemas", s.schemas.first().map(|v| v.span())),
            ("split_rows", s.split_rows.as_ref().map(|v| v.span())),
            ("chunk_size", s.chunk_size.as_ref().map(|v| v.span())),
            ("command", s.command.as_ref().map(|v| v.span())),
            ("shell", s.shell.map(|_| s.kind.span())),
            ("timeout", s.timeout.as_ref().map(|v| v.span())),
            ("name", s.name.as_ref().map(|v| v.span())),
            ("container", s.container.as_ref().map(|v| v.span())),
            ("rehydrate", s.rehydrate.as_ref().map(|v| v.span())),
            (
                "server_side_min_size",
                s.server_side_min_size.as_ref().map(|v| v.span()),
            ),
            (
                "include/exclude",
                s.include.first().or(s.exclude.first()).map(|v| v.span()),
            ),
        ];
        for (key, span) in present {
            if let Some(span) = span {
                if !allowed.contains(&key) {
                    c.at(
                        span,
                        &format!("source.{key}"),
                        format!("is not a key of a {kind:?} source"),
                        &format!(
                            "remove it; a {kind:?} source takes: type, {}",
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }
    };
    match kind {
        "fs" => {
            foreign(c, &["root", "include/exclude"]);
            SourceConfig::Fs(check_fs_source(c, s, base))
        }
        "postgres" | "postgresql" | "mysql" | "mariadb" => {
            foreign(
                c,
                &[
                    "url",
                    "password",
                    "schemas",
                    "include/exclude",
                    "split_rows",
                    "chunk_size",
                ],
            );
            let pg = kind.starts_with("postgres");
            let db = check_db_source(c, s, pg);
            if pg {
                SourceConfig::Postgres(db)
            } else {
                SourceConfig::Mysql(db)
            }
        }
        "command" => {
            foreign(c, &["command", "shell", "timeout", "name", "chunk_size"]);
            SourceConfig::Command(check_command_source(c, s))
        }
        "blob" => {
            foreign(
                c,
                &[
                    "url",
                    "container",
                    "include/exclude",
                    "rehydrate",
                    "server_side_min_size",
                ],
            );
            SourceConfig::Blob(check_blob_source(c, s))
        }
        _ => {
            c.at(
                s.kind.span(),
                "source.type",
                format!("unknown source type {kind:?}"),
                "use \"fs\" (directory tree), \"blob\" (an Azure container), \"postgres\", \"mysql\" or \"command\"",
            );
            SourceConfig::Fs(FsSourceConfig {
                root: PathBuf::new(),
                include: vec![],
                exclude: vec![],
            })
        }
    }
}

fn chunk_size_of(c: &mut Checker<'_>, s: &SourceSpec) -> usize {
    size_in(
        c,
        &s.chunk_size,
        "source.chunk_size",
        16 << 20,
        64 << 10,
        256 << 20,
    )
}

/// Table patterns: `*` and `?` wildcards over `[A-Za-z0-9_.$-]`.
fn table_patterns(c: &mut Checker<'_>, list: &[Spanned<String>], key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in list {
        let v = p.get_ref().trim();
        let ok = !v.is_empty()
            && v.chars()
                .all(|ch| ch.is_alphanumeric() || matches!(ch, '_' | '.' | '$' | '-' | '*' | '?'));
        if !ok {
            c.at(
                p.span(),
                key,
                format!("invalid table pattern {:?}", p.get_ref()),
                "use a table name or `schema.table`, with * and ? as wildcards, e.g. \"task_*\"",
            );
        }
        out.push(v.to_string());
    }
    out
}

fn check_db_source(c: &mut Checker<'_>, s: &SourceSpec, pg: bool) -> DbSourceConfig {
    let scheme_ok = |u: &str| {
        if pg {
            u.starts_with("postgres://") || u.starts_with("postgresql://")
        } else {
            u.starts_with("mysql://") || u.starts_with("mariadb://")
        }
    };
    let url = match &s.url {
        Some(v) => {
            let u = c.interp(v, "source.url");
            if !u.is_empty() && !scheme_ok(&u) {
                c.at(
                    v.span(),
                    "source.url",
                    format!("not a {} URL: {:?}", if pg { "PostgreSQL" } else { "MySQL" }, redact_url(&u)),
                    if pg {
                        "write postgres://user@host:5432/dbname (password via `password` or ${PGPASSWORD})"
                    } else {
                        "write mysql://user@host:3306/dbname (password via `password`)"
                    },
                );
            } else if !u.is_empty() && url::Url::parse(&u).is_err() {
                c.at(
                    v.span(),
                    "source.url",
                    format!("malformed URL {:?}", redact_url(&u)),
                    "percent-encode special characters in user and password",
                );
            } else if !pg && !u.is_empty() {
                // sslmode and the other options, checked now rather than at connect time.
                if let Err(e) =
                    crate::db::mysql::resolve_with(&Secret::new(u.clone()), None, &|_| None)
                {
                    c.at(
                        v.span(),
                        "source.url",
                        e.message().to_string(),
                        "sslmode is disable, prefer, require, verify-ca or verify-full; \
                         sslrootcert the CA's PEM file",
                    );
                }
            }
            u
        }
        None if pg => match libpq_env_url() {
            Some(u) => u,
            None => {
                c.missing(
                    "source.url",
                    "add url = \"postgres://user@host:5432/db\" or set PGHOST/PGDATABASE",
                );
                String::new()
            }
        },
        None => {
            c.missing("source.url", "add url = \"mysql://user@host:3306/db\"");
            String::new()
        }
    };
    let password = match &s.password {
        Some(v) => {
            let p = c.interp(v, "source.password");
            (!p.is_empty()).then(|| Secret::new(p))
        }
        // PostgreSQL: the connection falls back to the URL's password, then PGPASSWORD.
        None => None,
    };
    let mut schemas = Vec::new();
    for sc in &s.schemas {
        let v = c.interp(sc, "source.schemas");
        if (v.is_empty() && !c.is_unused("source.schemas")) || v.contains(['"', '`', '\0']) {
            c.at(
                sc.span(),
                "source.schemas",
                format!("invalid schema name {v:?}"),
                "",
            );
        }
        schemas.push(v);
    }
    if schemas.is_empty() {
        if pg {
            schemas.push("public".into());
        } else if let Some(db) = url::Url::parse(&url)
            .ok()
            .map(|u| u.path().trim_matches('/').to_string())
            .filter(|d| !d.is_empty())
        {
            schemas.push(db);
        } else if !url.is_empty() {
            let span = s.url.as_ref().map(|v| v.span()).unwrap_or(0..0);
            c.at(
                span,
                "source.url",
                "names no database",
                "add the database to the URL (mysql://user@host/db) or list schemas = [\"db\"]",
            );
        }
    }
    let split_rows = match &s.split_rows {
        None => 1_000_000,
        Some(v) if *v.get_ref() >= 1000 => *v.get_ref() as u64,
        Some(v) => {
            c.at(
                v.span(),
                "source.split_rows",
                format!("must be at least 1000, got {}", v.get_ref()),
                "tables above this many rows are split by primary-key range; e.g. 1000000",
            );
            1_000_000
        }
    };
    DbSourceConfig {
        url: Secret::new(url),
        password,
        schemas,
        include: table_patterns(c, &s.include, "source.include"),
        exclude: table_patterns(c, &s.exclude, "source.exclude"),
        split_rows,
        // Set by the pipeline check from `[chunking] range_buffer` when `split_rows` is
        // not given (see `spec::check_pipeline`).
        split_bytes: 0,
        chunk_size: chunk_size_of(c, s),
    }
}

/// A `postgres://` URL standing for libpq's environment variables, when `PGHOST` or
/// `PGDATABASE` is set: the connection fills host, port, user, database, password and
/// `sslmode` from `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, `PGSSLMODE`.
fn libpq_env_url() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    (var("PGHOST").is_some() || var("PGDATABASE").is_some()).then(|| "postgres://".to_string())
}

fn check_command_source(c: &mut Checker<'_>, s: &SourceSpec) -> CommandSourceConfig {
    let shell = s.shell.unwrap_or(false);
    let argv = match &s.command {
        None => {
            c.missing(
                "source.command",
                "add command = [\"pg_dump\", \"-Fc\", \"mydb\"] (an argument list; no shell unless shell = true)",
            );
            vec![]
        }
        Some(v) => {
            let mut out = Vec::new();
            for a in v.get_ref() {
                match interpolate(a) {
                    Ok(x) => out.push(x),
                    Err(_) if c.is_unused("source.command") => out.push(String::new()),
                    Err(var) => c.at(
                        v.span(),
                        "source.command",
                        format!("environment variable {var} is not set"),
                        &format!("export {var}=… before running"),
                    ),
                }
            }
            if c.is_unused("source.command") {
                // Not run by this command: its arguments may stay unresolved.
            } else if out.is_empty() || out[0].is_empty() {
                c.at(
                    v.span(),
                    "source.command",
                    "is empty",
                    "name the program first",
                );
            } else if shell && out.len() != 1 {
                c.at(
                    v.span(),
                    "source.command",
                    "with shell = true, give one string (the script for sh -c)",
                    "e.g. command = [\"pg_dump mydb | gzip -1\"]",
                );
            }
            out
        }
    };
    let timeout = match &s.timeout {
        None => Duration::from_secs(3600),
        Some(v) => match parse_duration(v.get_ref()) {
            Ok(d) if d >= Duration::from_millis(100) => d,
            Ok(_) => {
                c.at(v.span(), "source.timeout", "must be at least 100ms", "");
                Duration::from_secs(3600)
            }
            Err(e) => {
                c.at(v.span(), "source.timeout", e, "");
                Duration::from_secs(3600)
            }
        },
    };
    let name = match &s.name {
        None => "stdout".to_string(),
        Some(v) => {
            let n = v.get_ref().clone();
            if !crate::support::ids::is_safe_segment(&n) {
                c.at(
                    v.span(),
                    "source.name",
                    format!("invalid stream name {n:?}"),
                    "use letters, digits, '-', '_' and '.'",
                );
            }
            n
        }
    };
    CommandSourceConfig {
        argv,
        shell,
        timeout,
        name,
        chunk_size: chunk_size_of(c, s),
    }
}

fn check_fs_source(c: &mut Checker<'_>, s: &SourceSpec, base: &Path) -> FsSourceConfig {
    let root = match &s.root {
        Some(r) => {
            let v = c.interp(r, "source.root");
            if v.trim().is_empty()
                && !c.is_unused("source.root")
                && !c.errors.iter().any(|e| e.contains("source.root"))
            {
                c.at(
                    r.span(),
                    "source.root",
                    "is empty",
                    "give the directory to back up",
                );
            }
            let p = PathBuf::from(&v);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        }
        None => {
            c.missing("source.root", "add root = \"/path/to/dir\" to [source]");
            PathBuf::new()
        }
    };
    let mut globs = |list: &[Spanned<String>], key: &str| -> Vec<String> {
        let mut out = Vec::new();
        for g in list {
            if let Err(e) = crate::extract::fs::walk::check_glob(g.get_ref()) {
                c.at(
                    g.span(),
                    key,
                    format!("invalid glob {:?}: {e}", g.get_ref()),
                    "use gitignore syntax, e.g. \"*.log\", \"target/\", \"docs/**/*.md\"",
                );
            }
            out.push(g.get_ref().clone());
        }
        out
    };
    let include = globs(&s.include, "source.include");
    let exclude = globs(&s.exclude, "source.exclude");
    FsSourceConfig {
        root,
        include,
        exclude,
    }
}

/// `type = "blob"`: `url` is an Azure target string (any form the store accepts, any
/// credential the chain supports; the path after the container is the prefix backed
/// up), `container` names the container when the URL does not, `include`/`exclude` are
/// gitignore-style globs on blob names.
fn check_blob_source(c: &mut Checker<'_>, s: &SourceSpec) -> BlobSourceConfig {
    let container = match &s.container {
        Some(v) => {
            let name = c.interp(v, "source.container");
            let ok = (3..=63).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-')
                && !name.contains("--");
            if !ok {
                c.at(
                    v.span(),
                    "source.container",
                    format!("invalid container name {name:?}"),
                    "use 3–63 characters of a–z, 0–9 and single '-' (Azure container rules)",
                );
            }
            Some(name)
        }
        None => None,
    };
    let (location, display) = match &s.url {
        Some(v) => {
            let u = c.interp(v, "source.url");
            let secret = Secret::new(u);
            // A placeholder default tells "the URL names no container" apart.
            const NONE: &str = "no-container-named";
            match crate::store::azure::builder::AzureTarget::parse(
                &secret,
                container.as_deref().unwrap_or(NONE),
            ) {
                Ok(t) if container.is_none() && t.container == NONE => {
                    c.at(
                        v.span(),
                        "source.url",
                        "names no container",
                        "add the container to the URL (azure://account/container) or set \
                         source.container",
                    );
                    (secret, String::new())
                }
                Ok(t) => (secret, t.summary()),
                Err(e) => {
                    // The parser's messages are redacted (they never quote the string).
                    c.at(
                        v.span(),
                        "source.url",
                        e.message(),
                        "see docs/blob-source.md for the accepted forms",
                    );
                    (secret, String::new())
                }
            }
        }
        None => {
            c.missing(
                "source.url",
                "add url = \"azure://account/container[/prefix]\" (or an https URL with a SAS, \
                 or a connection string through ${VAR})",
            );
            (Secret::new(String::new()), String::new())
        }
    };
    let mut globs = |list: &[Spanned<String>], key: &str| -> Vec<String> {
        let mut out = Vec::new();
        for g in list {
            if let Err(e) = crate::extract::fs::walk::check_glob(g.get_ref()) {
                c.at(
                    g.span(),
                    key,
                    format!("invalid glob {:?}: {e}", g.get_ref()),
                    "gitignore syntax on blob names, e.g. \"raw/**/*.parquet\" or \"tmp/\"",
                );
            }
            out.push(g.get_ref().clone());
        }
        out
    };
    let include = globs(&s.include, "source.include");
    let exclude = globs(&s.exclude, "source.exclude");
    let rehydrate = s
        .rehydrate
        .as_ref()
        .and_then(|v| match v.get_ref().as_str() {
            "standard" => Some(Rehydrate::Standard),
            "high" => Some(Rehydrate::High),
            other => {
                c.at(
                    v.span(),
                    "source.rehydrate",
                    format!("unknown rehydrate priority {other:?}"),
                    "use \"standard\" (up to 15 hours) or \"high\" (usually under an hour, \
                     costs more); leave it out to only report archived blobs",
                );
                None
            }
        });
    let server_side_min_size = s.server_side_min_size.is_some().then(|| {
        super::check::size_in(
            c,
            &s.server_side_min_size,
            "source.server_side_min_size",
            64 << 20,
            1 << 20,
            // Above Azure's largest block blob (about 190.7 TiB): no blob would qualify.
            200 << 40,
        ) as u64
    });
    BlobSourceConfig {
        location,
        container: container.unwrap_or_default(),
        display,
        include,
        exclude,
        rehydrate,
        server_side_min_size,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixtures::{parse, GOOD, PG};
    use super::*;
    use crate::restore::config::Strategy;

    /// Regression: `range_buffer = 0` (documented: turns table range reuse off) was
    /// refused as "size must be positive"; 0 now parses and each key's range decides.
    #[test]
    fn zero_sizes_turn_features_off_where_the_range_allows_it() {
        let p = parse(&format!(
            "{GOOD}\n[chunking]\nrange_buffer = 0\nindex = \"0B\"\n"
        ))
        .unwrap();
        assert_eq!((p.chunking.range_buffer, p.chunking.index), (0, 0));
        let p = parse(&format!("{GOOD}\n[chunking]\nindex = \"0MiB\"\n")).unwrap();
        assert_eq!(p.chunking.index, 0);
        for bad in [
            "threshold = 0",
            "min_size = \"0KiB\"",
            "index = \"0parsecs\"",
        ] {
            let e = parse(&format!("{GOOD}\n[chunking]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("chunking."), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_glob_is_located() {
        let text = GOOD.replace("\"*.tmp\"", "\"a/{b,c\"");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("source.exclude") && e.contains("invalid glob"),
            "{e}"
        );
        assert!(e.contains(":6:"), "{e}");
    }

    /// issue 14: an unclosed character class was accepted (and matched nothing).
    #[test]
    fn unclosed_character_class_is_refused() {
        let e = parse(&GOOD.replace("\"*.tmp\"", "\"[abc\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "demo.toml:6:12: source.exclude: invalid glob \"[abc\": unclosed character class"
            ),
            "{e}"
        );
        for ok in ["[abc]", "[!a]*", "[]]x", "\\[abc", "*.[ch]"] {
            let text = GOOD.replace("\"*.tmp\"", &format!("{ok:?}"));
            assert!(parse(&text).is_ok(), "{ok}");
        }
    }

    #[test]
    fn postgres_source_is_checked() {
        let p = parse(PG).unwrap();
        let SourceConfig::Postgres(db) = &p.source else {
            panic!("postgres expected")
        };
        assert_eq!(db.url.expose(), "postgres://app:pw@db:5432/app");
        assert!(
            !format!("{:?}", p.source).contains(":pw@"),
            "URL is a secret"
        );
        assert_eq!(db.schemas, vec!["public", "audit"]);
        assert_eq!(db.include, vec!["task_*", "public.variable"]);
        assert_eq!(db.split_rows, 5000);
        assert_eq!(db.chunk_size, 8 << 20);
        assert_eq!(p.restore.strategy, Strategy::Truncate);
        assert_eq!(p.restore.tables["variable"], Strategy::SkipExisting);
        assert!(p.source.is_streamed());
    }

    #[test]
    fn database_source_errors_are_located() {
        let e = parse(&PG.replace("postgres://app", "mysql://app"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("source.url") && e.contains("not a PostgreSQL URL"),
            "{e}"
        );
        assert!(!e.contains(":pw@"), "{e}");
        let e = parse(&PG.replace("split_rows = 5000", "split_rows = 5"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(":9:") && e.contains("source.split_rows"), "{e}");
        let e = parse(&PG.replace("\"task_*\"", "\"task/*\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid table pattern"), "{e}");
        let e = parse(&PG.replace("schemas = [", "root = \"/x\"\nschemas = ["))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("source.root") && e.contains("not a key of a \"postgres\" source"),
            "{e}"
        );
        let e = parse(&PG.replace("\"skip-existing\"", "\"merge\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("restore.tables.variable") && e.contains("unknown strategy"),
            "{e}"
        );
    }

    #[test]
    fn mysql_tls_options_are_checked_at_load() {
        let text = PG
            .replace("type = \"postgres\"", "type = \"mysql\"")
            .replace(
                "postgres://app:${BP_TEST_PGPW:-pw}@db:5432/app",
                "mysql://root@db:3306/shop?sslmode=always",
            );
        let e = parse(&text)
            .expect_err("unknown sslmode refused")
            .to_string();
        assert!(e.contains("source.url") && e.contains("sslmode"), "{e}");
    }

    #[test]
    fn mysql_database_comes_from_the_url() {
        let text = PG
            .replace("type = \"postgres\"", "type = \"mysql\"")
            .replace(
                "postgres://app:${BP_TEST_PGPW:-pw}@db:5432/app",
                "mysql://root@db:3306/shop",
            )
            .replace("schemas = [\"public\", \"audit\"]\n", "");
        let p = parse(&text).unwrap();
        let SourceConfig::Mysql(db) = &p.source else {
            panic!("mysql expected")
        };
        assert_eq!(db.schemas, vec!["shop"]);
        let e = parse(&text.replace("/shop", "")).unwrap_err().to_string();
        assert!(e.contains("names no database"), "{e}");
    }

    #[test]
    fn command_source_is_checked() {
        let text = r#"
name = "cmd"
[source]
type = "command"
command = ["pg_dump", "-Fc", "app"]
timeout = "30m"
name = "pg_dump"
[target]
url = "memory://x"
"#;
        let p = parse(text).unwrap();
        let SourceConfig::Command(c) = &p.source else {
            panic!("command expected")
        };
        assert_eq!(c.argv, vec!["pg_dump", "-Fc", "app"]);
        assert_eq!(c.timeout, Duration::from_secs(1800));
        assert!(!c.shell);
        let e = parse(&text.replace("\"30m\"", "\"soon\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.timeout"), "{e}");
        let e = parse(&text.replace("timeout = \"30m\"", "shell = true"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("with shell = true, give one string"), "{e}");
        let e = parse(&text.replace("command = [\"pg_dump\", \"-Fc\", \"app\"]\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing key source.command"), "{e}");
        let e = parse(&text.replace("name = \"pg_dump\"", "name = \"../x\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid stream name"), "{e}");
    }
}
