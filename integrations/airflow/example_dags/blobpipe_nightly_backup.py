"""Nightly backup of an application: its PostgreSQL database and its files, with blobpipe.

The hand-written backup DAG (dump → compress → upload → verify, retries, alerts) becomes
two tasks: blobpipe does the engine work — consistent extraction, compressed packs,
MD5-checked uploads, a manifest committed last, verification — and Airflow the
orchestration:

* ``backup_database`` and ``backup_files`` each run one blobpipe pipeline (the files in
  ``pipelines/`` beside this DAG, or ``$BLOBPIPE_PIPELINES``). A retry resumes the same
  blobpipe run (the run id comes from the task instance), with exponential backoff, and
  waits for the pipeline's lock instead of failing while a crashed try's lease expires.
* ``rpo_check`` waits (in the triggerer) until both pipelines have a *verified* snapshot
  younger than their ``[freshness] rpo``: the run is not green until the data is.
* ``notify_failure`` alerts when a task fails for good: it logs the blobpipe report and,
  when ``$BACKUP_ALERT_WEBHOOK`` is set, POSTs it as JSON (Slack/Teams incoming webhooks
  accept ``{"text": …}``). blobpipe's own ``[[alerts.webhook]]`` fire from inside the runs.

Settings (environment of the workers): ``BLOBPIPE_TARGET_URL`` (``file:///backups`` or
``https://<account>.blob.core.windows.net/``), ``APP_DB_URL``
(``postgres://user@host:5432/db``, password in ``PGPASSWORD``), ``APP_FILES_ROOT``.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow import DAG

from blobpipe_airflow.operators.blobpipe import REPORT_KEY, BlobpipeBackupOperator
from blobpipe_airflow.sensors.blobpipe import BlobpipeRunSensor

PIPELINES = os.environ.get("BLOBPIPE_PIPELINES", str(Path(__file__).parent / "pipelines"))
RETRY_DELAY = timedelta(seconds=float(os.environ.get("BLOBPIPE_EXAMPLE_RETRY_DELAY", "300")))

log = logging.getLogger(__name__)


def notify_failure(context: dict[str, Any]) -> None:
    """Failure alert: the task, the error and blobpipe's report (run id, snapshot, exit)."""
    ti = context["ti"]
    report = ti.xcom_pull(task_ids=ti.task_id, key=REPORT_KEY)
    r = report if isinstance(report, dict) else {}
    reason = context.get("exception") or r.get("error") or "see the task log"
    text = (
        f"backup task {ti.dag_id}.{ti.task_id} failed for good (try {ti.try_number}): "
        f"{reason} [blobpipe exit {r.get('exit_code')}: {r.get('outcome')}]"
    )
    log.error("%s; blobpipe report: %s", text, report)
    url = os.environ.get("BACKUP_ALERT_WEBHOOK")
    if not url or not url.startswith(("https://", "http://")):
        return
    body = json.dumps({"text": text, "report": report}, default=str).encode()
    req = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310 - scheme checked above
            pass
    except OSError as e:  # an alert never fails the callback
        log.warning("failure alert not delivered: %s", e)


with DAG(
    dag_id="blobpipe_nightly_backup",
    description="Nightly database + files backup with blobpipe",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "backup",
        "retries": 3,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(hours=1),
        "on_failure_callback": notify_failure,
    },
    tags=["blobpipe", "backup"],
) as dag:
    backup_database = BlobpipeBackupOperator(
        task_id="backup_database",
        pipeline=f"{PIPELINES}/app-db.toml",
        wait_lock=True,
        execution_timeout=timedelta(hours=4),
    )
    backup_files = BlobpipeBackupOperator(
        task_id="backup_files",
        pipeline=f"{PIPELINES}/app-files.toml",
        wait_lock=True,
        execution_timeout=timedelta(hours=4),
    )
    rpo_check = BlobpipeRunSensor(
        task_id="rpo_check",
        pipeline=PIPELINES,
        max_age="26h",
        deferrable=True,
        poke_interval=60,
        timeout=2 * 3600,
        retries=0,
    )
    [backup_database, backup_files] >> rpo_check
