"""Test set-up: Airflow in a throw-away AIRFLOW_HOME (sqlite), the real blobpipe binary,
and the local PostgreSQL.

The environment is set before anything imports Airflow, so the tests and the `airflow`
commands they start share one temp metadata database, removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
PKG = HERE.parent
REPO = PKG.parent.parent
EXAMPLE_DAGS = PKG / "example_dags"

_home = Path(tempfile.mkdtemp(prefix="blobpipe-airflow-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_home}/airflow.db",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_home / "logs"),
        "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
    }
)

REQUIRE = os.environ.get("BLOBPIPE_REQUIRE_SERVICES") == "1"
PG_URL = os.environ.get("BLOBPIPE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")


def airflow_bin() -> str:
    """The `airflow` command of this venv."""
    return str(Path(sys.executable).with_name("airflow"))


def pytest_sessionstart(session: pytest.Session) -> None:
    """One `airflow db migrate` for the session's sqlite database."""
    subprocess.run(
        [airflow_bin(), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the temp AIRFLOW_HOME."""
    shutil.rmtree(_home, ignore_errors=True)


def _missing(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"{what} (BLOBPIPE_REQUIRE_SERVICES=1)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def blobpipe_bin() -> str:
    """The blobpipe binary under test ($BLOBPIPE_BIN; scripts/test-airflow builds it)."""
    b = os.environ.get("BLOBPIPE_BIN")
    if not b or not os.access(b, os.X_OK):
        _missing(
            f"no blobpipe binary: set BLOBPIPE_BIN (got {b!r}); scripts/test-airflow builds it"
        )
    assert b is not None
    return b


def psql(sql: str, url: str = PG_URL) -> str:
    """Run SQL in the test database; stdout."""
    r = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"psql failed: {r.stderr}")
    return r.stdout


@pytest.fixture(scope="session")
def postgres() -> str:
    """The test PostgreSQL URL (trust auth, database `test`)."""
    if shutil.which("psql") is None:
        _missing("psql is not installed")
    try:
        psql("SELECT 1")
    except RuntimeError as e:
        _missing(f"PostgreSQL at {PG_URL} is not reachable: {e}")
    return PG_URL


@pytest.fixture
def pg_schema(postgres: str) -> Iterator[str]:
    """A fresh schema, dropped afterwards."""
    name = f"bp_af_{uuid.uuid4().hex[:10]}"
    psql(f"CREATE SCHEMA {name}")
    yield name
    psql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def write_fs_pipeline(dir: Path, name: str, root: Path, store: Path, extra: str = "") -> Path:
    """A files pipeline backing up `root` into a local store at `store`."""
    p = dir / f"{name}.toml"
    p.write_text(
        f"""
name = "{name}"
[source]
type = "fs"
root = "{root}"
[target]
url = "file://{store}"
container = "backups"
[verify]
mode = "full"
{extra}
"""
    )
    return p


def make_files(root: Path, n: int = 20, size: int = 4096) -> None:
    """`n` files of `size` pseudo-random bytes under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"f{i:03}.bin").write_bytes(os.urandom(size))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve(blobpipe_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`blobpipe serve` on a free loopback port for a pipelines dir holding `srv`; the
    Airflow connection `blobpipe_serve` points at it (custom-handler transport)."""
    make_files(tmp_path / "src", n=5)
    pdir = tmp_path / "pipelines"
    pdir.mkdir()
    write_fs_pipeline(pdir, "srv", tmp_path / "src", tmp_path / "store")
    port = free_port()
    proc = subprocess.Popen(
        [blobpipe_bin, "serve", str(pdir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("blobpipe serve did not come up")
        conn = {"conn_type": "blobpipe", "host": url, "extra": {"transport": "handler"}}
        monkeypatch.setenv("AIRFLOW_CONN_BLOBPIPE_SERVE", json.dumps(conn))
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def xcom_value(session: Any, dag_id: str, run_id: str, task_id: str, key: str) -> Any:
    """One XCom value, on Airflow 2.10 (`XCom.get_one`) and 3.x (the `XComModel` table)."""
    try:
        from airflow.models.xcom import XComModel  # Airflow 3
    except ImportError:
        from airflow.models import XCom

        return XCom.get_one(key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, session=session)
    row = (
        session.query(XComModel)
        .filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key, map_index=-1)
        .one_or_none()
    )
    return None if row is None else XComModel.deserialize_value(row)


def register_dag(dag: Any) -> None:
    """Airflow 3 runs `dag.test()` only for DAGs stored in the database (from a bundle):
    store this ad-hoc one under the dags-folder bundle. Nothing to do on 2.10."""
    try:
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.models.dagbag import DagBag, sync_bag_to_db
    except ImportError:
        return
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    bag = DagBag(dag_folder=os.devnull, include_examples=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
