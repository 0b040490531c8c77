"""The operators and the sensor in a real Airflow run (``dag.test()``: tasks run in this
process, deferred tasks' triggers run inline by Airflow's own test runner)."""

from __future__ import annotations

import filecmp
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow import DAG
from airflow.utils.session import create_session

from blobpipe_airflow.hooks.blobpipe import BlobpipeHook, blobpipe_run_id
from blobpipe_airflow.operators.blobpipe import (
    BlobpipeBackupOperator,
    BlobpipeDrillOperator,
    BlobpipeRestoreOperator,
)
from blobpipe_airflow.sensors.blobpipe import BlobpipeRunSensor

from .conftest import make_files, register_dag, write_fs_pipeline, xcom_value


def new_dag() -> DAG:
    return DAG(
        dag_id=f"t_{uuid.uuid4().hex[:10]}",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
    )


def results(dr: Any) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """Task states, return values and `report` XComs of a finished DAG run."""
    with create_session() as session:
        tis = dr.get_task_instances(session=session)
        states = {ti.task_id: ti.state for ti in tis}

        def get(key: str) -> dict[str, Any]:
            return {
                ti.task_id: xcom_value(session, dr.dag_id, dr.run_id, ti.task_id, key) for ti in tis
            }

        return states, get("return_value"), get("report")


def test_deferrable_local_backup_then_restore_and_drill(blobpipe_bin: str, tmp_path: Path) -> None:
    make_files(tmp_path / "src", n=6)
    p = str(write_fs_pipeline(tmp_path, "op1", tmp_path / "src", tmp_path / "store"))
    kw: dict[str, Any] = {"blobpipe_conn_id": None, "binary": blobpipe_bin}
    with new_dag() as dag:
        backup = BlobpipeBackupOperator(task_id="backup", pipeline=p, deferrable=True, **kw)
        restore = BlobpipeRestoreOperator(
            task_id="restore", pipeline=p, to=str(tmp_path / "out"), **kw
        )
        drill = BlobpipeDrillOperator(task_id="drill", pipeline=p, scratch_dir=str(tmp_path), **kw)
        backup >> restore >> drill
    register_dag(dag)
    dr = dag.test()
    states, ret, _ = results(dr)
    assert states == {"backup": "success", "restore": "success", "drill": "success"}
    b = ret["backup"]
    assert b["run_id"] == blobpipe_run_id(dag.dag_id, "backup", dr.run_id)
    assert b["status"] == "ok"
    assert b["files"] == 6
    assert b["verify"]["ok"]
    cmp = filecmp.dircmp(tmp_path / "src", tmp_path / "out")
    assert cmp.left_only == cmp.right_only == cmp.diff_files == []
    assert ret["drill"]["ok"] is True
    assert ret["drill"]["snapshot"] == b["snapshot"]


def test_a_mismatch_fails_the_drill_without_retries(blobpipe_bin: str, tmp_path: Path) -> None:
    make_files(tmp_path / "src", n=3, size=64 << 10)
    p = str(write_fs_pipeline(tmp_path, "op2", tmp_path / "src", tmp_path / "store"))
    hook = BlobpipeHook(None, blobpipe_bin)
    assert hook.backup(p, "op2-run").ok
    # Flip bytes in the middle of every stored pack.
    packs = list((tmp_path / "store").rglob("packs/*/*.tar.*"))
    assert packs
    for pack in packs:
        data = bytearray(pack.read_bytes())
        mid = len(data) // 2
        data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
        pack.write_bytes(bytes(data))
    with new_dag() as dag:
        BlobpipeDrillOperator(
            task_id="drill",
            pipeline=p,
            scratch_dir=str(tmp_path),
            retries=3,
            blobpipe_conn_id=None,
            binary=blobpipe_bin,
        )
    register_dag(dag)
    dr = dag.test()
    states, _, reports = results(dr)
    # failed, not up_for_retry: a mismatch is not retried
    assert states == {"drill": "failed"}
    assert reports["drill"]["ok"] is False
    assert str(reports["drill"]["error_kind"]).lower() == "integrity", reports["drill"]


def test_remote_deferrable_backup_and_run_sensor(serve: str) -> None:
    kw: dict[str, Any] = {"blobpipe_conn_id": "blobpipe_serve"}
    with new_dag() as dag:
        backup = BlobpipeBackupOperator(
            task_id="backup", pipeline="srv", deferrable=True, poll_interval=0.1, **kw
        )
        wait = BlobpipeRunSensor(
            task_id="wait",
            pipeline="srv",
            run_id="{{ ti.xcom_pull(task_ids='backup')['run_id'] }}",
            deferrable=True,
            poke_interval=0.1,
            timeout=600,
            **kw,
        )
        backup >> wait
    register_dag(dag)
    dr = dag.test()
    states, ret, _ = results(dr)
    assert states == {"backup": "success", "wait": "success"}
    b = ret["backup"]
    assert b["run_id"] == blobpipe_run_id(dag.dag_id, "backup", dr.run_id)
    assert b["status"] == "ok"
    assert b["snapshot"]
    assert ret["wait"]["run_id"] == b["run_id"]
    assert ret["wait"]["snapshot"] == b["snapshot"]


def test_local_run_sensor_and_freshness_sensor(blobpipe_bin: str, tmp_path: Path) -> None:
    make_files(tmp_path / "src", n=2)
    p = str(write_fs_pipeline(tmp_path, "op3", tmp_path / "src", tmp_path / "store"))
    kw: dict[str, Any] = {"blobpipe_conn_id": None, "binary": blobpipe_bin}
    with new_dag() as dag:
        backup = BlobpipeBackupOperator(task_id="backup", pipeline=p, **kw)
        run_done = BlobpipeRunSensor(
            task_id="run_done",
            pipeline=p,
            run_id="{{ ti.xcom_pull(task_ids='backup')['run_id'] }}",
            poke_interval=0.1,
            timeout=600,
            **kw,
        )
        fresh = BlobpipeRunSensor(
            task_id="fresh", pipeline=p, max_age="1h", poke_interval=0.1, timeout=600, **kw
        )
        backup >> [run_done, fresh]
    register_dag(dag)
    dr = dag.test()
    states, ret, _ = results(dr)
    assert states == {"backup": "success", "run_done": "success", "fresh": "success"}
    assert ret["run_done"]["run_id"] == ret["backup"]["run_id"]
    assert ret["run_done"]["state"] == "ok"
    assert ret["fresh"]["stale"] == 0
