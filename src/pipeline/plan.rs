//! The plan of a run: what is decided once per run.
//!
//! A filesystem plan is stored with the run (`parts/<run-id>/plan.json.gz`): its start
//! time (which names the snapshot), the parent, full vs incremental — so every attempt
//! of a run agrees on them. It holds no entries: the partitions come from the walk
//! itself, cut at content-defined points ([`crate::extract::Splitter`]), so an attempt
//! that walks an unchanged region again cuts the same partitions and finds their part
//! records by name ([`finished_parts`]); a region that changed between attempts is
//! simply backed up again. A streamed source is planned afresh by every attempt (a new
//! attempt reads a new snapshot), with the parent chosen the same way: its tables' key
//! ranges are kept so that unchanged ranges can point at the parent's chunks.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use std::collections::HashMap;

use super::spec::{FullEvery, Pipeline};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::extract::config::SourceConfig;
use crate::extract::{self, Plan};
use crate::manifest::layout::Layout;
use crate::manifest::Header;
use crate::store::{self, Store};

/// A plan, whether it was stored by an earlier attempt, and the open session of a
/// streamed source.
pub(super) type Planned = (Plan, bool, Option<Arc<extract::Session>>);

/// The stored plan of `run_id`, or a new one (stored before any partition starts).
///
/// # Errors
/// `Source`/`Config` when the source cannot be planned, `Store` when the plan cannot be
/// read or stored, `Integrity` for a stored plan that does not decode.
pub(super) async fn load_or_make_plan(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    run_id: &str,
    started_at: DateTime<Utc>,
    full: bool,
) -> Result<Planned> {
    if p.source.is_streamed() {
        // A database or command source is planned afresh by every attempt: a new
        // attempt reads a new snapshot, so nothing of an earlier one may be reused. The
        // parent is chosen as for a directory: an incremental reads tables in the
        // parent's key ranges and points at the parent's chunks where they are the same.
        let parent = choose_parent(p, store, layout, started_at, full).await?;
        let prior = match &parent.manifest {
            Some(m) if parent.reuse => m.tables.as_slice(),
            _ => &[],
        };
        let (mut plan, session) =
            extract::Session::open(&p.source, p.partitions.max_parallel, prior).await?;
        parent.fill(&mut plan, started_at);
        return Ok((plan, false, Some(Arc::new(session))));
    }
    let name = layout.plan(run_id);
    if let Some(plan) = load_plan(store, layout, run_id).await? {
        return Ok((plan, true, None));
    }
    let parent = choose_parent(p, store, layout, started_at, full).await?;
    let mut plan = match p.source.clone() {
        SourceConfig::Fs(fs) => {
            let root = fs.root.clone();
            tokio::task::spawn_blocking(move || -> Result<Plan> {
                extract::fs::walk::check_root(&root)?;
                Ok(Plan {
                    source: extract::fs::walk::describe(&root),
                    ..Plan::default()
                })
            })
            .await
            .map_err(|e| Error::internal(format!("planning task: {e}")))??
        }
        // The engine opened the container (and checked it) before planning.
        SourceConfig::Blob(b) => Plan {
            source: format!("blob:{}", b.display),
            ..Plan::default()
        },
        _ => {
            return Err(Error::internal(
                "path-partitioned plan for a streamed source",
            ))
        }
    };
    parent.fill(&mut plan, started_at);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    serde_json::to_writer(&mut gz, &plan).map_err(|e| Error::encode("encoding plan", e))?;
    let body = gz
        .finish()
        .map_err(|e| Error::internal(format!("encoding plan: {e}")))?;
    let body = layout.seal(&name, body)?;
    store
        .put(&name, Bytes::from(body), true)
        .await
        .ctx("storing the run plan")?;
    Ok((plan, false, None))
}

/// The newest readable snapshot and whether this run is an incremental of it.
struct Parent {
    /// Its manifest head.
    manifest: Option<crate::manifest::Manifest>,
    /// Damaged newer snapshots skipped, newest first.
    skipped: Vec<String>,
    reuse: bool,
    chain: u32,
    full_at: DateTime<Utc>,
}

impl Parent {
    /// Record the choice in `plan`.
    fn fill(self, plan: &mut Plan, started_at: DateTime<Utc>) {
        plan.started_at = Some(started_at);
        plan.parent = self.manifest.map(|m| m.header.snapshot);
        plan.reuse = self.reuse;
        plan.chain = self.chain;
        plan.full_at = Some(self.full_at);
        plan.skipped_damaged = self.skipped;
    }
}

/// Incremental or full, decided once per run: the parent is the newest snapshot whose
/// manifest reads (a damaged newer one is skipped and reported, never a reason not to
/// back up); a full backup is due by `[incremental] full_every` or `--full`.
///
/// # Errors
/// `Store` when the snapshots cannot be listed or read.
async fn choose_parent(
    p: &Pipeline,
    store: &Store,
    layout: &Layout,
    started_at: DateTime<Utc>,
    full: bool,
) -> Result<Parent> {
    let (newest, skipped) = crate::manifest::catalog::newest_readable(&**store, layout).await?;
    if !skipped.is_empty() {
        let ids: Vec<&str> = skipped.iter().map(|d| d.id.as_str()).collect();
        tracing::warn!(
            skipped = ?ids,
            parent = newest.as_ref().map(|m| m.header.snapshot.as_str()),
            "damaged snapshot(s) skipped when choosing the parent; {}",
            match &newest {
                Some(m) => format!("comparing against {}", m.header.snapshot),
                None => "no readable snapshot: this run is a full backup".to_string(),
            }
        );
    }
    let (reuse, chain, full_at) = match newest.as_ref().map(|m| &m.header) {
        Some(h) if p.incremental.enabled && !full => {
            let chain_full = h.full_at.unwrap_or(h.started_at);
            let due = match p.incremental.full_every {
                FullEvery::Never => false,
                FullEvery::Count(n) => h.chain + 1 > n,
                FullEvery::Age(d) => {
                    started_at
                        .signed_duration_since(chain_full)
                        .to_std()
                        .unwrap_or_default()
                        >= d
                }
            };
            if due {
                (false, 0, started_at)
            } else {
                (true, h.chain + 1, chain_full)
            }
        }
        _ => (false, 0, started_at),
    };
    Ok(Parent {
        manifest: newest,
        skipped: skipped.into_iter().map(|d| d.id).collect(),
        reuse,
        chain,
        full_at,
    })
}

/// The stored plan of `run_id`, if an attempt stored one.
///
/// # Errors
/// `Store` when it cannot be read, `Integrity` when it does not decode.
pub(super) async fn load_plan(
    store: &Store,
    layout: &Layout,
    run_id: &str,
) -> Result<Option<Plan>> {
    let name = layout.plan(run_id);
    match store.get(&name, None).await {
        Ok(bytes) => {
            let bytes = layout.open(&name, bytes)?;
            let mut s = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut s)
                .map_err(|e| Error::integrity(format!("plan {name}: {e}")))?;
            Ok(Some(serde_json::from_slice(&s)?))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.context(format!("reading plan {name}"))),
    }
}

/// The header of `snapshot` if it is already committed (a rerun of a finished run).
///
/// # Errors
/// `Store` when the store cannot be asked, `Integrity` for a bad manifest.
pub(super) async fn already_committed(
    store: &Store,
    layout: &Layout,
    snapshot: &str,
) -> Result<Option<Header>> {
    if store.head(&layout.snapshot(snapshot)).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(
        crate::manifest::catalog::load_head(&**store, layout, snapshot)
            .await?
            .header,
    ))
}

/// Part records left by earlier attempts of `run_id`, by the walk digest of their
/// partition (filesystem sources; streamed sources never reuse part records).
///
/// # Errors
/// `Store` when the part records cannot be listed.
pub(super) async fn finished_parts(
    store: &Store,
    layout: &Layout,
    run_id: &str,
    streamed: bool,
) -> Result<HashMap<String, String>> {
    if streamed {
        return Ok(HashMap::new());
    }
    Ok(store::list_all(&**store, &layout.parts(run_id))
        .await?
        .into_iter()
        .filter_map(|item| {
            Layout::part_digest_of(&item.name).map(|d| (d.to_string(), item.name.clone()))
        })
        .collect())
}
