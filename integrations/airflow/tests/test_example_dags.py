"""The example DAGs in a real Airflow: they import cleanly, and `airflow dags test` of the
nightly backup DAG backs up the local PostgreSQL and a directory into a local store,
pushes its report to XCom, and a retry of a failed try resumes the same blobpipe run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from blobpipe_airflow.hooks.blobpipe import blobpipe_run_id

from .conftest import EXAMPLE_DAGS, HERE, PG_URL, airflow_bin, make_files, psql, xcom_value

NIGHTLY = "blobpipe_nightly_backup"


def test_example_dags_import_cleanly() -> None:
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(EXAMPLE_DAGS), include_examples=False)
    assert bag.import_errors == {}
    assert {
        NIGHTLY,
        "blobpipe_airflow_metadata_backup",
        "blobpipe_airflow_metadata_restore",
    } <= set(bag.dag_ids)
    nightly = bag.get_dag(NIGHTLY)
    db = nightly.get_task("backup_database")
    assert db.retries == 3
    assert db.retry_exponential_backoff
    assert db.on_failure_callback is not None
    assert nightly.get_task("rpo_check").deferrable
    restore = bag.get_dag("blobpipe_airflow_metadata_restore").get_task("restore_metadata")
    assert restore.to_db


def _wrapper(tmp: Path) -> Path:
    """An executable that runs tests/flaky_blobpipe.py with this venv's Python."""
    w = tmp / "blobpipe-flaky"
    w.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "flaky_blobpipe.py"}" "$@"\n')
    w.chmod(0o755)
    return w


def test_nightly_dag_backs_up_reports_and_resumes_on_retry(
    blobpipe_bin: str, pg_schema: str, tmp_path: Path
) -> None:
    s = pg_schema
    role = f"bp_af_role_{uuid.uuid4().hex[:8]}"
    psql(
        f"""
        CREATE TABLE {s}.orders (id serial PRIMARY KEY, item text NOT NULL, qty int NOT NULL);
        INSERT INTO {s}.orders (item, qty)
          SELECT 'item ' || g, g % 7 FROM generate_series(1, 2000) g;
        CREATE TABLE {s}.payments (id serial PRIMARY KEY, name text NOT NULL);
        INSERT INTO {s}.payments (name) SELECT 'payment ' || g FROM generate_series(1, 300) g;
        CREATE ROLE {role} LOGIN;
        GRANT USAGE ON SCHEMA {s} TO {role};
        GRANT SELECT ON {s}.orders TO {role};
        -- enough to plan (count, key range), not to copy: the partition fails, not the plan
        GRANT SELECT (id) ON {s}.payments TO {role};
        """
    )
    try:
        files = tmp_path / "files"
        # Several partitions of about 8 MiB (the pipeline's size), 2 at a time: the first
        # part record is written long before the last partition is done, so the
        # interruption lands mid-run.
        make_files(files, n=16, size=2 << 20)
        store = tmp_path / "store"
        state = tmp_path / "flaky"
        state.mkdir()
        env = os.environ.copy()
        env.update(
            {
                "FLAKY_REAL": blobpipe_bin,
                "FLAKY_STATE": str(state),
                "FLAKY_STORE": str(store),
                "FLAKY_PG_URL": PG_URL,
                "FLAKY_HEAL_SQL": f"GRANT SELECT ON {s}.payments TO {role}",
                "BLOBPIPE_TARGET_URL": f"file://{store}",
                "APP_DB_URL": f"postgres://{role}@127.0.0.1:5432/test",
                "APP_DB_SCHEMA": s,
                "APP_FILES_ROOT": str(files),
                "BLOBPIPE_EXAMPLE_RETRY_DELAY": "1",
                "AIRFLOW_CONN_BLOBPIPE_DEFAULT": json.dumps(
                    {"conn_type": "blobpipe", "extra": {"binary": str(_wrapper(tmp_path))}}
                ),
            }
        )
        before = nightly_run_ids()
        r = subprocess.run(
            [airflow_bin(), "dags", "test", NIGHTLY, "2026-12-01"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        log = r.stdout + r.stderr
        assert r.returncode == 0, log[-5000:]
        assert (state / "db-healed").exists(), "the first db try did not fail:\n" + log[-5000:]
        check_results(store, log, before)
    finally:
        psql(f"DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}")


def nightly_run_ids() -> set[int]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return {r.id for r in session.query(DagRun).filter(DagRun.dag_id == NIGHTLY)}


def check_results(store: Path, log: str, before: set[int]) -> None:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        (dr,) = [
            r for r in session.query(DagRun).filter(DagRun.dag_id == NIGHTLY) if r.id not in before
        ]
        assert dr.state == "success", log[-5000:]
        tis = {ti.task_id: ti for ti in dr.get_task_instances(session=session)}
        assert {t: ti.state for t, ti in tis.items()} == {
            "backup_database": "success",
            "backup_files": "success",
            "rpo_check": "success",
        }
        # Each backup task's first try failed (a table the role could not read; SIGTERM
        # mid-run) and the second try finished the run.
        assert tis["backup_database"].try_number == 2
        assert tis["backup_files"].try_number == 2

        def xcom(task: str, key: str = "return_value") -> dict:
            v = xcom_value(session, NIGHTLY, dr.run_id, task, key)
            assert isinstance(v, dict), (task, v)
            return v

        db = xcom("backup_database")
        want = blobpipe_run_id(NIGHTLY, "backup_database", dr.run_id)
        assert db["run_id"] == want
        assert xcom("backup_database", "report") == db
        assert db["status"] == "ok"
        assert db["exit_code"] == 0
        assert db["snapshot"]
        assert db["bytes"] > 0
        assert db["duration_seconds"] >= 0
        assert db["verify"]["ok"]
        assert db["verify"]["mode"] == "full"
        # (A database run re-reads on resume: one consistent snapshot, docs/databases.md.)

        fs = xcom("backup_files")
        fs_run = blobpipe_run_id(NIGHTLY, "backup_files", dr.run_id)
        assert fs["run_id"] == fs_run
        assert fs["files"] == 16
        assert fs["verify"]["ok"]
        # The retry resumed the interrupted run: partitions finished before SIGTERM were kept.
        assert 1 <= fs["partitions_resumed"] < fs["partitions"], fs

        fresh = xcom("rpo_check")
        assert fresh["stale"] == 0
        assert {p["pipeline"] for p in fresh["pipelines"]} == {"app-db", "app-files"}

    # Both tries of each task wrote their run record under the same run id.
    assert run_statuses(store, "app-db", want) == ["failed", "ok"]
    assert run_statuses(store, "app-files", fs_run) == ["cancelled", "ok"]


def run_statuses(store: Path, pipeline: str, run_id: str) -> list[str]:
    records = sorted((store / "backups" / pipeline / "runs" / run_id).glob("*.json"))
    return [json.loads(p.read_text())["status"] for p in records]
