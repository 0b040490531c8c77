"""The small, stable report a task pushes to XCom, built from blobpipe's JSON documents.

blobpipe's own documents (``backup --json``, a run record, ``serve``'s run state) are
larger and may grow; DAGs get one flat shape with the fields they branch on. The full
document is in the task log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional


def _seconds(started: Any, finished: Any) -> Optional[float]:
    if not isinstance(started, str) or not isinstance(finished, str):
        return None
    try:
        a = datetime.fromisoformat(started.replace("Z", "+00:00"))
        b = datetime.fromisoformat(finished.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((b - a).total_seconds(), 3)


def verify_summary(v: Any) -> Optional[dict[str, Any]]:
    """``{"ok", "mode", "mismatches", "bytes_read", …}`` of a verify report, or ``None``."""
    if not isinstance(v, dict):
        return None
    mismatches = v.get("mismatches")
    n = len(mismatches) if isinstance(mismatches, list) else 0
    return {
        "ok": n == 0,
        "mode": v.get("mode"),
        "mismatches": n,
        "blocks_checked": v.get("blocks_checked"),
        "entries_checked": v.get("entries_checked"),
        "bytes_read": v.get("bytes_read"),
    }


def backup_report(doc: Any, *, exit_code: int, outcome: str, pipeline: str) -> dict[str, Any]:
    """The XCom report of a backup, from ``backup --json`` or a run state / record.

    Keys: ``pipeline``, ``run_id``, ``status``, ``snapshot``, ``kind``, ``files``,
    ``bytes``, ``stored_bytes``, ``packs``, ``started_at``, ``finished_at``,
    ``duration_seconds``, ``verify`` (``None`` when not verified), ``error``,
    ``exit_code``, ``outcome``.
    """
    d: dict[str, Any] = doc if isinstance(doc, dict) else {}
    t = d.get("totals")
    totals: dict[str, Any] = t if isinstance(t, dict) else {}
    status = d.get("status") or d.get("state") or outcome
    return {
        "pipeline": d.get("pipeline") or pipeline,
        "run_id": d.get("run_id"),
        "status": status,
        "snapshot": d.get("snapshot"),
        "kind": d.get("kind"),
        "files": totals.get("files"),
        "bytes": totals.get("bytes"),
        "stored_bytes": totals.get("stored_bytes"),
        "packs": totals.get("packs"),
        "started_at": d.get("started_at"),
        "finished_at": d.get("finished_at"),
        "duration_seconds": _seconds(d.get("started_at"), d.get("finished_at")),
        "partitions": d.get("partitions"),
        "partitions_resumed": d.get("partitions_resumed"),
        "verify": verify_summary(d.get("verify")),
        "error": d.get("error"),
        "exit_code": exit_code,
        "outcome": outcome,
    }
