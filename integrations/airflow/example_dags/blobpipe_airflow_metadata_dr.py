"""Disaster recovery for Airflow itself: its metadata database, backed up hourly, and a
restore DAG for the fresh environment that replaces a lost one.

* ``blobpipe_airflow_metadata_backup`` (hourly) runs blobpipe's shipped
  ``pipelines/airflow-metadata.toml`` (variables, connections, pools, DAG runs, task
  instances, triggers, jobs, the audit log; verified in full), then drills the newest
  snapshot into a scratch schema (``BLOBPIPE_DRILL_DB``, e.g. a scratch database on the
  same server): the measured restore time is the RTO, recorded with the drill.
* ``blobpipe_airflow_metadata_restore`` (manual, in the NEW environment after ``airflow db
  migrate``) waits until the backup store holds a verified snapshot young enough, then
  restores it into the new metadata database with the pipeline's strategies
  (``skip-existing`` for the rows ``db migrate`` creates itself). Trigger it with
  ``{"snapshot": "<id>"}`` to restore an older snapshot than the newest. Restart the
  scheduler afterwards. The Fernet key must be the old environment's (back it up
  separately, e.g. in Key Vault), or restored connections cannot be decrypted.

Settings: ``BLOBPIPE_REPO`` (a blobpipe checkout or install holding ``pipelines/``),
``AIRFLOW_DB_URL`` / ``AIRFLOW_DB_PASSWORD`` (read by the pipeline file),
``BLOBPIPE_TARGET_URL``, ``AIRFLOW_RESTORE_DB_URL`` (the new environment's database).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow import DAG

from blobpipe_airflow.operators.blobpipe import (
    BlobpipeBackupOperator,
    BlobpipeDrillOperator,
    BlobpipeRestoreOperator,
)
from blobpipe_airflow.sensors.blobpipe import BlobpipeRunSensor

REPO = Path(os.environ.get("BLOBPIPE_REPO", "/opt/blobpipe"))
PIPELINE = str(REPO / "pipelines" / "airflow-metadata.toml")

with DAG(
    dag_id="blobpipe_airflow_metadata_backup",
    description="Hourly backup + restore drill of the Airflow metadata database",
    schedule="0 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
    },
    tags=["blobpipe", "airflow-dr"],
) as backup_dag:
    backup = BlobpipeBackupOperator(task_id="backup_metadata", pipeline=PIPELINE, wait_lock=True)
    drill = BlobpipeDrillOperator(
        task_id="drill_metadata",
        pipeline=PIPELINE,
        snapshot="{{ ti.xcom_pull(task_ids='backup_metadata', key='report')['snapshot'] }}",
        scratch_db=os.environ.get("BLOBPIPE_DRILL_DB"),
        retries=0,
    )
    backup >> drill

with DAG(
    dag_id="blobpipe_airflow_metadata_restore",
    description="Restore the Airflow metadata database into this (fresh) environment",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"snapshot": "latest", "max_age": "2h"},
    tags=["blobpipe", "airflow-dr"],
) as restore_dag:
    newest_verified = BlobpipeRunSensor(
        task_id="newest_verified_snapshot",
        pipeline=PIPELINE,
        max_age="{{ params.max_age }}",
        mode="reschedule",
        poke_interval=60,
        timeout=3600,
    )
    restore = BlobpipeRestoreOperator(
        task_id="restore_metadata",
        pipeline=PIPELINE,
        snapshot="{{ params.snapshot }}",
        to_db=os.environ.get("AIRFLOW_RESTORE_DB_URL", "postgres://airflow@localhost:5432/airflow"),
        # Connections loading at once, and `bulk` to check foreign keys once per key
        # before commit (needs the right to set session_replication_role).
        jobs=int(os.environ.get("BLOBPIPE_RESTORE_JOBS", "4")),
        fk_check=os.environ.get("BLOBPIPE_RESTORE_FK_CHECK", "immediate"),
        retries=0,
    )
    newest_verified >> restore
