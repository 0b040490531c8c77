"""The Airflow metadata DR example pair on real Airflow metadata databases: an "old"
environment's PostgreSQL database (``airflow db migrate`` + a variable and a connection)
is backed up and drilled by ``blobpipe_airflow_metadata_backup``; a "new" environment's
freshly migrated database is filled by ``blobpipe_airflow_metadata_restore``. Both DAGs
run with ``airflow dags test`` (the test Airflow itself keeps its sqlite database)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from .conftest import PG_URL, REPO, airflow_bin, psql, xcom_value

BACKUP = "blobpipe_airflow_metadata_backup"
RESTORE = "blobpipe_airflow_metadata_restore"


def db_url(name: str) -> str:
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def airflow(args: list[str], env: dict[str, str], sql_conn: str | None = None) -> str:
    e = dict(env)
    if sql_conn:
        e["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = sql_conn
    r = subprocess.run([airflow_bin(), *args], env=e, capture_output=True, text=True, check=False)
    assert r.returncode == 0, (args, (r.stdout + r.stderr)[-5000:])
    return r.stdout + r.stderr


@pytest.fixture
def databases(postgres: str) -> list[str]:
    pytest.importorskip("psycopg2", reason="airflow db migrate on PostgreSQL needs psycopg2")
    names = [f"bp_af_{role}_{uuid.uuid4().hex[:8]}" for role in ("old", "new")]
    for n in names:
        psql(f"CREATE DATABASE {n}")
    yield names
    for n in names:
        psql(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)")


def test_metadata_backup_drill_and_restore_into_a_fresh_environment(
    blobpipe_bin: str, databases: list[str], tmp_path: Path
) -> None:
    old, new = databases
    base = os.environ.copy()
    base["AIRFLOW_CONN_BLOBPIPE_DEFAULT"] = json.dumps(
        {"conn_type": "blobpipe", "extra": {"binary": blobpipe_bin}}
    )
    pg = "postgresql+psycopg2://" + db_url(old).split("://", 1)[1]
    # The old environment: migrated, with a variable and a connection of its own.
    airflow(["db", "migrate"], base, pg)
    airflow(["variables", "set", "dr_probe", "from-the-old-env"], base, pg)
    airflow(["connections", "add", "dr_wh", "--conn-uri", "postgres://etl@wh:5432/x"], base, pg)
    # The new environment: freshly migrated, empty.
    airflow(["db", "migrate"], base, "postgresql+psycopg2://" + db_url(new).split("://", 1)[1])

    env = dict(base)
    env.update(
        {
            "BLOBPIPE_REPO": str(REPO),
            "AIRFLOW_DB_URL": db_url(old),
            "BLOBPIPE_TARGET_URL": f"file://{tmp_path / 'store'}",
            "BLOBPIPE_DRILL_DB": PG_URL,
            "AIRFLOW_RESTORE_DB_URL": db_url(new),
            "BLOBPIPE_RESTORE_JOBS": "2",
            "BLOBPIPE_RESTORE_FK_CHECK": "bulk",
        }
    )
    airflow(["dags", "test", BACKUP, "2026-12-01"], env)
    airflow(["dags", "test", RESTORE, "2026-12-01"], env)

    # Byte for byte as stored (encrypted when the environment has a Fernet key, as on
    # Airflow 3: the new environment needs the old one's key to read it).
    probe = "SELECT val, is_encrypted FROM variable WHERE key = 'dr_probe'"
    assert psql(probe, db_url(new)) == psql(probe, db_url(old))
    assert psql(probe, db_url(new)).strip()
    wh = "SELECT conn_type, host, login FROM connection WHERE conn_id = 'dr_wh'"
    assert psql(wh, db_url(new)).strip() == "postgres|wh|etl"

    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = {
            d: session.query(DagRun).filter(DagRun.dag_id == d).one() for d in (BACKUP, RESTORE)
        }
        assert {d: r.state for d, r in runs.items()} == {BACKUP: "success", RESTORE: "success"}
        b = runs[BACKUP]
        backup = xcom_value(session, BACKUP, b.run_id, "backup_metadata", "return_value")
        drill = xcom_value(session, BACKUP, b.run_id, "drill_metadata", "return_value")
        r = runs[RESTORE]
        restore = xcom_value(session, RESTORE, r.run_id, "restore_metadata", "return_value")
    assert backup["status"] == "ok"
    assert backup["verify"]["ok"]
    assert drill["ok"] is True
    assert drill["snapshot"] == backup["snapshot"]
    # The operator passed --jobs 2 --fk-check bulk through to the restore.
    assert restore["fk_check"] == "bulk"
    assert 1 <= restore["connections"] <= 2
    tables = {t["table"].rsplit(".", 1)[-1]: t for t in restore["tables"]}
    # Airflow 3 has no task_fail table: the shipped pipeline's include list allows for it.
    assert drill["tables"] == len(tables) >= 9
    assert {"variable", "connection", "dag_run", "task_instance", "log_template"} <= set(tables)
